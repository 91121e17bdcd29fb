/* The C++ shim between perfopt's Rust core and libtorch: the few libtorch
 * features tch 0.24 does not expose. One section per C++ file, and each C++
 * file has a Rust twin of the same name under src/torch/ (settings.cpp ->
 * settings.rs, ...), so one name finds both halves.
 *
 * Every function catches every exception: a C++ exception never unwinds into
 * Rust. The status says what kind of failure it was and pshim_last_error()
 * holds the message until the next shim call on the same thread. */
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
  PSHIM_OUT_OF_MEMORY = 2, /* c10::OutOfMemoryError, a host allocation that failed, std::bad_alloc */
  PSHIM_UNKNOWN = 3,       /* anything thrown that is not a std::exception */
  PSHIM_UNSUPPORTED = 4,   /* this build has no such support (no CUDA translation unit) */
  PSHIM_ARGUMENT = 5,      /* an argument does not fit the method's schema */
  PSHIM_UNSUPPORTED_RESULT = 6, /* the model returned a kind perfopt cannot pass on (a dict) */
};

const char *pshim_last_error(void);

/* ---- settings.cpp: versions, device and process-wide settings ----------- */
const char *pshim_torch_version(void);
int pshim_cuda_runtime_version(int64_t *out); /* e.g. 13000; fails without the CUDA library */
int pshim_cudnn_version(int64_t *out);
int pshim_cuda_device_count(int64_t *out);    /* 0 without CUDA; never throws through */
int pshim_mps_available(int *out);
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
 * same thread, last in first out (Rust enforces both). `abandon` releases a
 * guard without running its destructor: for a guard whose thread is gone,
 * where restoring thread-local state would touch the wrong thread. */
int pshim_inference_mode_enter(void **guard);
int pshim_inference_mode_exit(void *guard);
void pshim_inference_mode_abandon(void *guard);
int pshim_inference_mode_is_enabled(int *out);
/* Memory of an accelerator device (CUDA here), from its caching allocator. */
int pshim_accelerator_memory_info(int32_t device_index, uint64_t *free_bytes, uint64_t *total_bytes);

/* ---- threads.cpp: a thread count per call ---------------------------------
 * OpenMP's thread count is a setting of the calling thread: set around one
 * call, it holds for that call's parallel regions only. */
/* Sets the calling thread's OpenMP and MKL counts to `threads`; `previous`
 * and `previous_mkl` get the counts to restore. */
int pshim_call_threads_enter(int32_t threads, int32_t *previous, int32_t *previous_mkl);
/* Puts the calling thread's counts back. */
int pshim_call_threads_exit(int32_t previous, int32_t previous_mkl);

/* ---- tensor.cpp: DLPack and storage ----------------------------------------
 * Tensors cross between Rust and C++ as `at::Tensor *` on the heap, the same
 * representation tch uses (tch::Tensor::from_ptr / as_ptr). */
/* A view of caller memory described by a DLPack tensor (no copy); the caller
 * keeps the memory alive while the view is used. perfopt checks the fields first. */
int pshim_tensor_from_dlpack(const void *dl_tensor, void **out);
/* A DLPack tensor sharing the tensor's storage; the caller owns it and calls its deleter. */
int pshim_tensor_to_dlpack(const void *tensor, void **out_managed);
/* A host tensor over memory another runtime owns: `release(owner)` runs once,
 * when the tensor's storage goes (or at once, when it cannot be made). */
int pshim_tensor_from_owned(void *data, const int64_t *sizes, size_t ndim, int scalar_type, void *owner,
                            void (*release)(void *), void **out);
/* Who holds the tensor's memory: its storage (an identity, and how many
 * tensors hold it) and the tensor itself (an identity, and how many handles
 * hold it: a module's parameter returned as it is has two). */
int pshim_tensor_holders(const void *tensor, const void **storage, size_t *storage_holders, const void **impl,
                         size_t *impl_holders);

/* ---- values.cpp: arguments and results of any TorchScript kind -------------
 * A value tree travels as its nodes in prefix order: a list or tuple node
 * says how many of the following subtrees are its items. */
enum pshim_kind {
  PSHIM_NONE = 0,
  PSHIM_TENSOR = 1,
  PSHIM_INT = 2,
  PSHIM_DOUBLE = 3,
  PSHIM_BOOL = 4,
  PSHIM_STRING = 5,
  PSHIM_LIST = 6,
  PSHIM_TUPLE = 7,
};
typedef struct pshim_node {
  int32_t kind;
  int64_t int_value;   /* INT, BOOL */
  double double_value; /* DOUBLE */
  const char *string;  /* STRING: bytes, valid during the call */
  size_t length;       /* STRING: bytes; LIST/TUPLE: items */
  void *tensor;        /* TENSOR: at::Tensor * (inputs borrowed; results owned by the receiver) */
} pshim_node;
/* Receives one node of a result, in prefix order. */
typedef void (*pshim_node_sink)(void *ctx, const pshim_node *node);

/* ---- script.cpp: TorchScript modules ---------------------------------------- */
typedef struct pshim_script pshim_script;
/* device_type: 0 CPU, 1 CUDA, 2 MPS. Loads onto the device in eval mode. */
int pshim_script_load(const char *path, int device_type, int device_index, pshim_script **out);
void pshim_script_free(pshim_script *module);
/* A frozen copy (torch::jit::freeze, keeping every method and the attributes
 * they use); with `optimize`, also torch::jit::optimize_for_inference. The
 * original is left as it was. */
int pshim_script_freeze(const pshim_script *module, int optimize, pshim_script **out);
/* The methods as JSON: [{"name", "schema", "arguments": [{"name", "type", "default"}], "returns": [..]}]. */
int pshim_script_methods(const pshim_script *module, char *buf, size_t len, size_t *needed);
/* Calls a method with `n_args` argument trees (in `nodes`), each converted to
 * the type the method's schema wants (an int where a float is wanted, a list
 * where a tuple is...); a value that does not fit is PSHIM_ARGUMENT naming the
 * argument. The result goes to `sink` node by node. */
int pshim_script_call(const pshim_script *module, const char *method, const pshim_node *nodes, size_t n_nodes,
                      size_t n_args, pshim_node_sink sink, void *ctx);
/* The module's state: every attribute that is not a parameter or a
 * submodule, deep-copied (tensors cloned). Restore writes copies back; equal
 * compares (tensors by value). */
typedef struct pshim_state pshim_state;
int pshim_script_state_save(const pshim_script *module, pshim_state **out, size_t *attributes);
int pshim_script_state_restore(const pshim_script *module, const pshim_state *state);
int pshim_script_state_equal(const pshim_script *module, const pshim_state *state, int *equal);
void pshim_state_free(pshim_state *state);
/* Writes a state saved from another form of the same model (the module as
 * loaded, a frozen copy) into this one, attribute by attribute path;
 * attributes this form lacks (folded by freezing, so never written) are
 * skipped. `applied`: attributes written. */
int pshim_script_state_apply(const pshim_script *module, const pshim_state *state, size_t *applied);
/* Whether a method of the module or of a submodule writes an attribute: sets
 * one, or changes one in place (alias analysis), outside the branches taken
 * only in training mode. Such a module runs one call at a time. */
int pshim_script_writes_state(const pshim_script *module, int *writes);
/* Whether `method` may write the memory of an argument it is given (a write
 * in place reaching one of its parameters, or code the analysis cannot
 * follow). The caller's inputs are borrowed read-only: such a method is
 * called on copies. */
int pshim_script_writes_inputs(const pshim_script *module, const char *method, int *writes);
/* Saves the module (torch::jit::save) into memory for the tuning cache and
 * hands the bytes to `sink` once. Into memory, never to a file: libtorch's
 * zip writer throws from its destructor when a file write fails (a full
 * disk), which is std::terminate; Rust writes the bytes and handles failure. */
int pshim_script_save_to(const pshim_script *module, void (*sink)(void *ctx, const char *data, size_t len),
                         void *ctx);

/* ---- aoti.cpp: AOTInductor packages (.pt2) ---------------------------------- */
typedef struct pshim_aoti pshim_aoti;
/* Loads model `model_name` of a package onto the device with `runners`
 * model containers (concurrent runs). */
int pshim_aoti_load(const char *path, const char *model_name, int device_type, int device_index, size_t runners,
                    pshim_aoti **out);
void pshim_aoti_free(pshim_aoti *package);
/* The package's metadata and call spec as JSON. */
int pshim_aoti_describe(const pshim_aoti *package, char *buf, size_t len, size_t *needed);
/* The folder the package was unpacked into. The loader no longer removes it
 * when freed: its owner does (src/engine/aoti.rs). */
int pshim_aoti_folder(const pshim_aoti *package, char *buf, size_t len, size_t *needed);
/* Runs the package: tensors in, tensors out (to `sink` as PSHIM_TENSOR nodes). */
int pshim_aoti_run(const pshim_aoti *package, void *const *inputs, size_t n_inputs, pshim_node_sink sink, void *ctx);

/* ---- memory.cpp: memory figures --------------------------------------------- */
/* CUDA caching-allocator statistics of one device (bytes). */
int pshim_device_memory_stats(int32_t device_index, uint64_t *allocated, uint64_t *peak_allocated,
                              uint64_t *reserved);
int pshim_device_reset_peak(int32_t device_index);
int pshim_device_empty_cache(void);
/* libtorch's CPU allocator, counted: while installed, every CPU tensor
 * allocation adds to a byte count whose peak can be read and reset. Tensors
 * allocated meanwhile keep working after it is uninstalled. */
int pshim_host_counting_install(int enable);
void pshim_host_counting_read(uint64_t *current, uint64_t *peak);
void pshim_host_counting_reset_peak(void);

/* ---- cuda.cpp: CUDA streams and graphs ------------------------------------
 * Built as its own library, libperfopt_cuda.so.0, and loaded by src/torch/cuda.rs
 * the first time CUDA is used (never linked: libperfopt needs no CUDA
 * library). Its messages come from pshim_cuda_last_error, not pshim_last_error. */
const char *pshim_cuda_last_error(void);
int pshim_cuda_device_properties(int32_t device_index, char *name, size_t name_len, int32_t *major,
                                 int32_t *minor, uint64_t *total_bytes, int32_t *multiprocessors);
/* Waits for the calling thread's current stream of one device (not the whole device). */
int pshim_cuda_stream_synchronize(int32_t device_index);
/* A capture in progress: start() makes a side stream current on this thread
 * (after the current stream's work, such as the static inputs' copies, is
 * done), begin() starts capturing in thread-local mode, end() finishes and
 * returns the graph with its static inputs and outputs; abort() ends a
 * capture that failed (capture_end runs whatever happened) and restores the
 * stream. Every start is followed by exactly one end or abort. */
typedef struct pshim_capture pshim_capture;
typedef struct pshim_graph pshim_graph;
int pshim_capture_start(int32_t device_index, pshim_capture **out);
int pshim_capture_begin(pshim_capture *capture);
int pshim_capture_end(pshim_capture *capture, void *const *static_inputs, size_t n_inputs,
                      void *const *static_outputs, size_t n_outputs, pshim_graph **out);
void pshim_capture_abort(pshim_capture *capture);
/* Copies the inputs into the static buffers, replays on the current stream,
 * and hands out clones of the static outputs (so they outlive the next replay). */
int pshim_graph_replay(pshim_graph *graph, void *const *inputs, size_t n_inputs, pshim_node_sink sink, void *ctx);
void pshim_graph_free(pshim_graph *graph);

#ifdef __cplusplus
}
#endif
#endif
