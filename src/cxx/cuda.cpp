// CUDA: device properties, stream synchronisation and CUDA graphs, built as a
// library of its own, libperfopt_cuda.so.0, only where the CUDA headers are
// present (the venv's nvidia packages); nothing here needs a GPU at build
// time. libperfopt loads it the first time CUDA is used, so that libperfopt
// itself needs no CUDA library and loads beside a CPU-only torch. Its errors
// are its own (pshim_cuda_last_error). Only the extern "C" functions are
// exported (build.rs's version script). Rust twin: src/torch/cuda.rs.
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <cuda_runtime_api.h>

#include <memory>
#include <optional>
#include <vector>

#include "common.h"
#include "values.h"

using perfopt_shim::guarded;

struct pshim_capture {
  c10::DeviceIndex device;
  c10::cuda::CUDAStream side;
  std::optional<c10::cuda::CUDAStreamGuard> on_side;
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  bool capturing = false;
};

struct pshim_graph {
  std::unique_ptr<at::cuda::CUDAGraph> graph;
  std::vector<at::Tensor> static_inputs;
  std::vector<at::Tensor> static_outputs;
};

extern "C" {

const char *pshim_cuda_last_error(void) { return perfopt_shim::last_error_text(); }

int pshim_cuda_device_properties(int32_t device_index, char *name, size_t name_len, int32_t *major,
                                 int32_t *minor, uint64_t *total_bytes, int32_t *multiprocessors) {
  return guarded([&] {
    cudaDeviceProp prop{};
    cudaError_t err = cudaGetDeviceProperties(&prop, device_index);
    TORCH_CHECK(err == cudaSuccess, "cudaGetDeviceProperties(", device_index, ") failed: ", cudaGetErrorString(err));
    perfopt_shim::copy_string(prop.name, name, name_len);
    *major = prop.major;
    *minor = prop.minor;
    *total_bytes = prop.totalGlobalMem;
    *multiprocessors = prop.multiProcessorCount;
  });
}

int pshim_cuda_stream_synchronize(int32_t device_index) {
  return guarded([&] { c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device_index)).synchronize(); });
}

int pshim_capture_start(int32_t device_index, pshim_capture **out) {
  return guarded([&] {
    auto index = static_cast<c10::DeviceIndex>(device_index);
    // As torch.cuda.graphs does: warm-up and capture on a side stream, after
    // the current stream's work (the static inputs' copies) is done.
    c10::cuda::getCurrentCUDAStream(index).synchronize();
    auto capture = std::unique_ptr<pshim_capture>(
        new pshim_capture{index, c10::cuda::getStreamFromPool(false, index), std::nullopt, nullptr, false});
    capture->on_side.emplace(capture->side);
    capture->graph = std::make_unique<at::cuda::CUDAGraph>();
    *out = capture.release();
  });
}

int pshim_capture_begin(pshim_capture *capture) {
  return guarded([&] {
    capture->side.synchronize();  // the warm-up runs finish outside the graph
    // Thread-local mode: other threads' allocations and syncs neither fail
    // nor break this capture.
    capture->graph->capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    capture->capturing = true;
  });
}

int pshim_capture_end(pshim_capture *capture, void *const *static_inputs, size_t n_inputs,
                      void *const *static_outputs, size_t n_outputs, pshim_graph **out) {
  int status = guarded([&] {
    capture->capturing = false;
    capture->graph->capture_end();
    capture->side.synchronize();
    auto graph = std::make_unique<pshim_graph>();
    graph->graph = std::move(capture->graph);
    graph->static_inputs = perfopt_shim::tensors_of_ptrs(static_inputs, n_inputs);
    graph->static_outputs = perfopt_shim::tensors_of_ptrs(static_outputs, n_outputs);
    *out = graph.release();
  });
  pshim_capture_abort(capture);
  return status;
}

void pshim_capture_abort(pshim_capture *capture) {
  if (capture == nullptr) return;
  if (capture->capturing) {
    // torch.cuda.graph's __exit__ ends the capture whatever happened inside:
    // a stream left capturing fails every later launch on it.
    try {
      capture->graph->capture_end();
    } catch (...) {
    }
    capture->capturing = false;
  }
  (void)cudaGetLastError();  // a failed capture leaves a sticky error on the thread
  try {
    delete capture;  // the guard restores this thread's current stream
  } catch (...) {
  }
}

int pshim_graph_replay(pshim_graph *graph, void *const *inputs, size_t n_inputs, pshim_node_sink sink, void *ctx) {
  return guarded([&] {
    TORCH_CHECK(n_inputs == graph->static_inputs.size(), "the graph was captured with ", graph->static_inputs.size(),
                " tensor inputs, got ", n_inputs);
    for (size_t i = 0; i < n_inputs; ++i) {
      graph->static_inputs[i].copy_(*static_cast<const at::Tensor *>(inputs[i]), /*non_blocking=*/true);
    }
    graph->graph->replay();
    for (const at::Tensor &output : graph->static_outputs) {
      pshim_node node{};
      node.kind = PSHIM_TENSOR;
      node.tensor = new at::Tensor(output.clone());
      sink(ctx, &node);
    }
  });
}

void pshim_graph_free(pshim_graph *graph) {
  try {
    delete graph;
  } catch (...) {
  }
}

}  // extern "C"
