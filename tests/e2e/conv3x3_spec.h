// The plain conv layer most serving tests use, as a LayerSpec.
#pragma once

#include <cstdint>
#include <string>

#include "convserve/v1/conv2d.pb.h"

namespace convserve {

// A 3x3, stride 1, pad 1 conv layer `name` of `channels` in and out, without bias or
// activation.
inline convserve::v1::LayerSpec Conv3x3Spec(const std::string& name, int64_t channels,
                                            convserve::v1::DataType dtype) {
  convserve::v1::LayerSpec spec;
  spec.set_name(name);
  spec.set_in_channels(channels);
  spec.set_out_channels(channels);
  spec.mutable_kernel()->set_h(3);
  spec.mutable_kernel()->set_w(3);
  spec.mutable_padding()->set_h(1);
  spec.mutable_padding()->set_w(1);
  spec.set_dtype(dtype);
  return spec;
}

}  // namespace convserve
