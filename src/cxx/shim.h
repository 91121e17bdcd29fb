/* The C++ shim between perfopt's Rust core and libtorch.
 *
 * tch 0.24 does not expose TF32 precision, InferenceMode, the thread-pool
 * read-backs or accelerator memory, so these few functions reach libtorch's
 * C++ API directly. Every function catches every exception: a C++ exception
 * must never unwind into Rust. The status says what kind of failure it was and
 * pshim_last_error() holds the message until the next shim call on the same
 * thread. Rust (src/shim.rs) is the only caller. */
#ifndef PERFOPT_SHIM_H
#define PERFOPT_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum pshim_status {
  PSHIM_OK = 0,
  PSHIM_TORCH_ERROR = 1,   /* c10::Error and other std::exception */
  PSHIM_OUT_OF_MEMORY = 2, /* c10::OutOfMemoryError, std::bad_alloc */
  PSHIM_UNKNOWN = 3,       /* anything thrown that is not a std::exception */
  PSHIM_UNSUPPORTED = 4,   /* this build has no such support (no CUDA translation unit) */
};

const char *pshim_last_error(void);

/* Versions. */
const char *pshim_torch_version(void);
int pshim_cuda_runtime_version(int64_t *out); /* e.g. 13000; fails without the CUDA library */
int pshim_cudnn_version(int64_t *out);

/* cuDNN benchmark mode (process-global). */
int pshim_set_cudnn_benchmark(int enabled);
int pshim_get_cudnn_benchmark(int *out);

/* libtorch 2.11's float32 precision knobs: backend "generic"/"cuda"/"mkldnn",
 * op "all"/"conv"/"rnn"/"matmul", precision "none"/"ieee"/"tf32"/"bf16". The
 * legacy allow_tf32 setters are never used: mixing them with these makes
 * libtorch's reads throw. */
int pshim_set_fp32_precision(const char *backend, const char *op, const char *precision);
int pshim_get_fp32_precision(const char *backend, const char *op, char *buf, size_t len);

/* Thread pools. Inter-op threads can be set once per process. */
int pshim_set_num_threads(int32_t n);
int pshim_get_num_threads(int32_t *out);
int pshim_set_num_interop_threads(int32_t n);
int pshim_get_num_interop_threads(int32_t *out);

/* c10::InferenceMode guard, thread-local in libtorch: enter and exit on the
 * same thread, last in first out (Rust enforces both). */
int pshim_inference_mode_enter(void **guard);
int pshim_inference_mode_exit(void *guard);
int pshim_inference_mode_is_enabled(int *out);

/* Memory of the current accelerator's device (CUDA here), from its caching allocator. */
int pshim_accelerator_memory_info(int32_t device_index, uint64_t *free_bytes, uint64_t *total_bytes);

/* CUDA device properties; PSHIM_UNSUPPORTED where the CUDA translation unit was not built. */
int pshim_cuda_device_properties(int32_t device_index, char *name, size_t name_len, int32_t *major,
                                 int32_t *minor, uint64_t *total_bytes, int32_t *multiprocessors);

#ifdef __cplusplus
}
#endif
#endif
