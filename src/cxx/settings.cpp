// Versions, devices and process-wide settings: nothing here needs CUDA
// headers, so it builds on every machine libtorch runs on. Rust twin:
// src/torch/settings.rs.
#include <ATen/Context.h>
#include <ATen/DeviceAccelerator.h>
#include <ATen/Parallel.h>
#include <ATen/detail/CUDAHooksInterface.h>
#include <ATen/detail/MPSHooksInterface.h>
#include <c10/core/InferenceMode.h>
#include <torch/headeronly/version.h>

#include <cstdio>

#include "common.h"

namespace perfopt_shim {

std::string json_string(const std::string &text) {
  std::string out = "\"";
  for (unsigned char c : text) {
    switch (c) {
      case '"': out += "\\\""; break;
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      case '\r': out += "\\r"; break;
      case '\t': out += "\\t"; break;
      default:
        if (c < 0x20) {
          char escaped[8];
          std::snprintf(escaped, sizeof escaped, "\\u%04x", c);
          out += escaped;
        } else {
          out += static_cast<char>(c);
        }
    }
  }
  return out + "\"";
}

}  // namespace perfopt_shim

using perfopt_shim::guarded;

extern "C" {

const char *pshim_last_error(void) {
  return perfopt_shim::last_error_text();
}

const char *pshim_torch_version(void) {
#define PERFOPT_STR2(x) #x
#define PERFOPT_STR(x) PERFOPT_STR2(x)
  return PERFOPT_STR(TORCH_VERSION_MAJOR) "." PERFOPT_STR(TORCH_VERSION_MINOR) "." PERFOPT_STR(
      TORCH_VERSION_PATCH);
#undef PERFOPT_STR
#undef PERFOPT_STR2
}

int pshim_cuda_runtime_version(int64_t *out) {
  return guarded([&] {
    TORCH_CHECK(at::detail::getCUDAHooks().hasCUDART(), "libtorch was loaded without its CUDA library");
    *out = at::detail::getCUDAHooks().versionCUDART();
  });
}

int pshim_cudnn_version(int64_t *out) {
  return guarded([&] {
    TORCH_CHECK(at::detail::getCUDAHooks().compiledWithCuDNN(), "libtorch was built without cuDNN");
    *out = at::detail::getCUDAHooks().versionCuDNN();
  });
}

int pshim_cuda_device_count(int64_t *out) {
  return guarded([&] {
    *out = at::detail::getCUDAHooks().hasCUDA() ? static_cast<int64_t>(at::detail::getCUDAHooks().deviceCount())
                                                : 0;
  });
}

int pshim_mps_available(int *out) {
  return guarded([&] { *out = at::detail::getMPSHooks().hasMPS() ? 1 : 0; });
}

int pshim_set_cudnn_benchmark(int enabled) {
  return guarded([&] { at::globalContext().setBenchmarkCuDNN(enabled != 0); });
}

int pshim_get_cudnn_benchmark(int *out) {
  return guarded([&] { *out = at::globalContext().benchmarkCuDNN() ? 1 : 0; });
}

int pshim_set_fp32_precision(const char *backend, const char *op, const char *precision) {
  return guarded([&] {
    at::globalContext().setFloat32Precision(at::str2backend(backend), at::str2op(op),
                                            at::str2precision(precision));
  });
}

int pshim_get_fp32_precision(const char *backend, const char *op, char *buf, size_t len) {
  return guarded([&] {
    auto precision = at::globalContext().float32Precision(at::str2backend(backend), at::str2op(op));
    perfopt_shim::copy_string(at::precision2str(precision), buf, len);
  });
}

int pshim_set_num_threads(int32_t n) {
  return guarded([&] { at::set_num_threads(n); });
}

int pshim_get_num_threads(int32_t *out) {
  return guarded([&] { *out = at::get_num_threads(); });
}

int pshim_set_num_interop_threads(int32_t n) {
  return guarded([&] { at::set_num_interop_threads(n); });
}

int pshim_get_num_interop_threads(int32_t *out) {
  return guarded([&] { *out = static_cast<int32_t>(at::get_num_interop_threads()); });
}

int pshim_inference_mode_enter(void **guard) {
  return guarded([&] { *guard = new c10::InferenceMode(true); });
}

int pshim_inference_mode_exit(void *guard) {
  return guarded([&] { delete static_cast<c10::InferenceMode *>(guard); });
}

void pshim_inference_mode_abandon(void *guard) {
  // The guard's members are plain data (the previous modes): ending its
  // lifetime without the destructor releases the memory and touches no
  // thread's state.
  ::operator delete(guard);
}

int pshim_inference_mode_is_enabled(int *out) {
  return guarded([&] { *out = c10::InferenceMode::is_enabled() ? 1 : 0; });
}

int pshim_accelerator_memory_info(int32_t device_index, uint64_t *free_bytes, uint64_t *total_bytes) {
  return guarded([&] {
    auto info = at::accelerator::getMemoryInfo(static_cast<c10::DeviceIndex>(device_index));
    *free_bytes = info.first;
    *total_bytes = info.second;
  });
}

}  // extern "C"
