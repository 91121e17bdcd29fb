// The CUDA half of the shim, in its own translation unit: build.rs compiles it
// only when the CUDA headers are present (the venv's nvidia packages), so a
// build for a machine without them still works. Nothing here needs a GPU at
// build time.
#include <cuda_runtime_api.h>

#include "shim_common.h"

extern "C" int pshim_cuda_device_properties(int32_t device_index, char *name, size_t name_len,
                                            int32_t *major, int32_t *minor, uint64_t *total_bytes,
                                            int32_t *multiprocessors) {
  return perfopt_shim::guarded([&] {
    cudaDeviceProp prop{};
    cudaError_t err = cudaGetDeviceProperties(&prop, device_index);
    TORCH_CHECK(err == cudaSuccess, "cudaGetDeviceProperties(", device_index,
                ") failed: ", cudaGetErrorString(err));
    perfopt_shim::copy_string(prop.name, name, name_len);
    *major = prop.major;
    *minor = prop.minor;
    *total_bytes = prop.totalGlobalMem;
    *multiprocessors = prop.multiProcessorCount;
  });
}
