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

/* ---- Models (shim_model.cpp) ----------------------------------------------
 * Tensors cross between Rust and C++ as `at::Tensor *` on the heap, the same
 * representation tch uses for its tensors (tch::Tensor::from_ptr / as_ptr). */

typedef struct pshim_module pshim_module;

/* Receives one output tensor; the receiver owns it (an `at::Tensor *`). */
typedef void (*pshim_tensor_sink)(void *ctx, void *tensor);

/* device_type: 0 CPU, 1 CUDA, 2 MPS. Loads onto the device in eval mode. */
int pshim_module_load(const char *path, int device_type, int device_index, pshim_module **out);
void pshim_module_free(pshim_module *module);
/* A frozen copy (torch::jit::freeze); with `optimize`, also
 * torch::jit::optimize_for_inference. The original is left as it was. */
int pshim_module_freeze(const pshim_module *module, int optimize, pshim_module **out);
/* forward()'s argument counts, self excluded: required (no default) and total. */
int pshim_module_arity(const pshim_module *module, int64_t *required, int64_t *total);
/* Runs forward(); each tensor of the result (a tensor, or tuples/lists of them,
 * nested) goes to `sink`, in order. Other result types are an error. */
int pshim_module_forward(const pshim_module *module, void *const *inputs, size_t n_inputs,
                         pshim_tensor_sink sink, void *ctx);

/* A view of caller memory described by a DLPack tensor (no copy); the caller
 * keeps the memory alive while the view is used. perfopt checks the fields first. */
int pshim_tensor_from_dlpack(const void *dl_tensor, void **out);
/* A DLPack tensor sharing the tensor's storage; the caller owns it and calls its deleter. */
int pshim_tensor_to_dlpack(const void *tensor, void **out_managed);

/* CUDA caching-allocator statistics of one device (bytes). */
int pshim_device_memory_stats(int32_t device_index, uint64_t *allocated, uint64_t *peak_allocated,
                              uint64_t *reserved);
int pshim_device_reset_peak(int32_t device_index);
int pshim_device_empty_cache(void);

/* ---- CUDA graphs (shim_cuda.cpp; PSHIM_UNSUPPORTED without it) ------------
 * A graph captured for one set of input shapes: static input and output
 * buffers, replays serialised by the caller (one replay at a time). */
typedef struct pshim_graph pshim_graph;

/* Warms up on a side stream, then captures forward() on it. */
int pshim_graph_capture(const pshim_module *module, void *const *example_inputs, size_t n_inputs,
                        int warmup_runs, pshim_graph **out);
/* Copies the inputs into the static buffers, replays, and hands out clones
 * of the static outputs (so they outlive the next replay). */
int pshim_graph_replay(pshim_graph *graph, void *const *inputs, size_t n_inputs, pshim_tensor_sink sink,
                       void *ctx);
void pshim_graph_free(pshim_graph *graph);

#ifdef __cplusplus
}
#endif
#endif
