// Host-side element conversion between storage types (fp32, IEEE fp16, bfloat16) and double,
// and the activation functions in double precision. Used by the CPU reference backend, tests,
// benchmarks and the tensor-format code; no CUDA needed.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "kernels/conv_problem.h"

namespace convserve {

// Round-to-nearest-even float -> fp16 bits, with overflow to inf and NaN kept NaN.
inline uint16_t FloatToHalfBits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t abs = x & 0x7fffffffu;
  if (abs >= 0x7f800000u) {
    return static_cast<uint16_t>(sign | (abs > 0x7f800000u ? 0x7e00u : 0x7c00u));
  }
  if (abs >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // rounds to >= 65520
  if (abs < 0x38800000u) {                                               // fp16 subnormal or 0
    if (abs < 0x33000000u) return static_cast<uint16_t>(sign);
    const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
    // value * 2^24 = mant * 2^(exp - 126): shift right by 126 - exp (14..24).
    const uint32_t total_shift = 126u - (abs >> 23);
    uint32_t half = mant >> total_shift;
    const uint32_t rem = mant & ((1u << total_shift) - 1u);
    const uint32_t halfway = 1u << (total_shift - 1u);
    if (rem > halfway || (rem == halfway && (half & 1u))) ++half;
    return static_cast<uint16_t>(sign | half);
  }
  uint32_t half = ((abs - 0x38000000u) >> 13);
  const uint32_t rem = abs & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (half & 1u))) ++half;
  return static_cast<uint16_t>(sign | half);
}

inline float HalfBitsToFloat(uint16_t h) {
  const uint32_t sign = (static_cast<uint32_t>(h) & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  uint32_t x;
  if (exp == 0) {
    if (mant == 0) {
      x = sign;
    } else {  // subnormal: value = mant * 2^-24
      float f = static_cast<float>(mant) * 5.9604644775390625e-8f;
      std::memcpy(&x, &f, 4);
      x |= sign;
    }
  } else if (exp == 31) {
    x = sign | 0x7f800000u | (mant << 13);
  } else {
    x = sign | ((exp + 112u) << 23) | (mant << 13);
  }
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

inline uint16_t FloatToBf16Bits(float value) {
  uint32_t x;
  std::memcpy(&x, &value, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((x >> 16) | 0x40u);  // NaN
  x += 0x7fffu + ((x >> 16) & 1u);
  return static_cast<uint16_t>(x >> 16);
}

inline float Bf16BitsToFloat(uint16_t b) {
  const uint32_t x = static_cast<uint32_t>(b) << 16;
  float f;
  std::memcpy(&f, &x, 4);
  return f;
}

// Reads element `index` of a raw buffer of `dtype` as double.
inline double LoadAsDouble(DataType dtype, const void* data, int64_t index) {
  switch (dtype) {
    case DataType::kFloat32: {
      float f;
      std::memcpy(&f, static_cast<const char*>(data) + index * 4, 4);
      return f;
    }
    case DataType::kFloat16: {
      uint16_t h;
      std::memcpy(&h, static_cast<const char*>(data) + index * 2, 2);
      return HalfBitsToFloat(h);
    }
    case DataType::kBFloat16: {
      uint16_t b;
      std::memcpy(&b, static_cast<const char*>(data) + index * 2, 2);
      return Bf16BitsToFloat(b);
    }
  }
  return 0.0;
}

// Rounds `value` to `dtype` and stores it as element `index` of a raw buffer.
inline void StoreFromDouble(DataType dtype, void* data, int64_t index, double value) {
  const float f = static_cast<float>(value);
  switch (dtype) {
    case DataType::kFloat32:
      std::memcpy(static_cast<char*>(data) + index * 4, &f, 4);
      return;
    case DataType::kFloat16: {
      const uint16_t h = FloatToHalfBits(f);
      std::memcpy(static_cast<char*>(data) + index * 2, &h, 2);
      return;
    }
    case DataType::kBFloat16: {
      const uint16_t b = FloatToBf16Bits(f);
      std::memcpy(static_cast<char*>(data) + index * 2, &b, 2);
      return;
    }
  }
}

inline double ApplyActivation(Activation activation, double x) {
  switch (activation) {
    case Activation::kNone:
      return x;
    case Activation::kRelu:
      return x > 0.0 ? x : 0.0;
    case Activation::kSilu:
      return x / (1.0 + std::exp(-x));
    case Activation::kGeluTanh: {
      constexpr double kSqrt2OverPi = 0.79788456080286535588;
      return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + 0.044715 * x * x * x)));
    }
    case Activation::kSigmoid:
      return 1.0 / (1.0 + std::exp(-x));
    case Activation::kTanh:
      return std::tanh(x);
  }
  return x;
}

}  // namespace convserve
