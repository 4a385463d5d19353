# Sanitizer and fuzzing builds (docs/hardening.md). Both instrument the host C++ code only:
# nvcc-compiled device code and the Debian libraries (gRPC, protobuf, Abseil) stay as they are.
#
#   -DCONVSERVE_SANITIZE=address   ASan + UBSan (any recover disabled: the first report fails)
#   -DCONVSERVE_SANITIZE=thread    TSan
#   -DCONVSERVE_FUZZ=ON            libFuzzer harnesses in tests/fuzz (clang only), ASan + UBSan
set(CONVSERVE_SANITIZE "" CACHE STRING "Instrument host C++ code: '', 'address' or 'thread'")
set_property(CACHE CONVSERVE_SANITIZE PROPERTY STRINGS "" address thread)
option(CONVSERVE_FUZZ "Build the libFuzzer harnesses in tests/fuzz (needs clang++)" OFF)

set(_convserve_sanitize_flags "")
if(CONVSERVE_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "CONVSERVE_FUZZ needs -DCMAKE_CXX_COMPILER=clang++ (libFuzzer)")
  endif()
  if(CONVSERVE_SANITIZE AND NOT CONVSERVE_SANITIZE STREQUAL "address")
    message(FATAL_ERROR "CONVSERVE_FUZZ runs with ASan+UBSan; drop CONVSERVE_SANITIZE")
  endif()
  # Coverage instrumentation everywhere; the harnesses alone link libFuzzer's main.
  set(_convserve_sanitize_flags -fsanitize=fuzzer-no-link,address,undefined)
elseif(CONVSERVE_SANITIZE STREQUAL "address")
  set(_convserve_sanitize_flags -fsanitize=address,undefined)
elseif(CONVSERVE_SANITIZE STREQUAL "thread")
  set(_convserve_sanitize_flags -fsanitize=thread)
elseif(CONVSERVE_SANITIZE)
  message(FATAL_ERROR "CONVSERVE_SANITIZE must be 'address' or 'thread', not '${CONVSERVE_SANITIZE}'")
endif()

if(_convserve_sanitize_flags)
  list(APPEND _convserve_sanitize_flags -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_compile_options("$<$<COMPILE_LANGUAGE:CXX>:${_convserve_sanitize_flags}>")
  # Targets linked by nvcc (a .cu main) are not instrumented builds' business: build the
  # CPU-path targets only (scripts/sanitize.sh, scripts/fuzz.sh).
  string(REPLACE "fuzzer-no-link," "" _convserve_link_flags "${_convserve_sanitize_flags}")
  add_link_options("$<$<LINK_LANGUAGE:CXX>:${_convserve_link_flags}>")
endif()

# TSan against Debian's uninstrumented Abseil: every target links cmake/tsan_absl_sync.cc, and
# our calls into absl::Mutex / CondVar / Notification go through its wrappers (see that file).
if(CONVSERVE_SANITIZE STREQUAL "thread")
  file(STRINGS ${CMAKE_CURRENT_LIST_DIR}/tsan_absl_sync.cc _convserve_wrap_lines
       REGEX "^[a-z ]+WRAP\\(")
  set(_convserve_wraps "")
  foreach(line IN LISTS _convserve_wrap_lines)
    string(REGEX REPLACE ".*WRAP\\(([A-Za-z0-9_]+)\\).*" "\\1" symbol "${line}")
    list(APPEND _convserve_wraps "-Wl,--wrap=${symbol}")
  endforeach()
  # Before the library, whose own __real_ references need the flags too.
  add_link_options("$<$<LINK_LANGUAGE:CXX>:${_convserve_wraps}>")
  # Shared, so that the wrappers resolve whichever static library the calls come from.
  add_library(convserve_tsan_absl_sync SHARED ${CMAKE_CURRENT_LIST_DIR}/tsan_absl_sync.cc)
  target_link_libraries(convserve_tsan_absl_sync PUBLIC absl::synchronization)
  link_libraries(convserve_tsan_absl_sync)
endif()
