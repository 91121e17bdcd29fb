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

// ---- CUDA graphs ------------------------------------------------------------
#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "shim_model.h"

struct pshim_graph {
  torch::jit::Module module;
  std::vector<at::Tensor> static_inputs;
  std::vector<at::Tensor> static_outputs;
  at::cuda::CUDAGraph graph;
};

extern "C" int pshim_graph_capture(const pshim_module *module, void *const *example_inputs, size_t n_inputs,
                                   int warmup_runs, pshim_graph **out) {
  auto graph = std::make_unique<pshim_graph>();
  int status = perfopt_shim::guarded([&] {
    TORCH_CHECK(module->device.is_cuda(), "CUDA graphs need a model on a CUDA device, not ",
                module->device.str());
    c10::InferenceMode inference;
    graph->module = module->module;
    for (size_t i = 0; i < n_inputs; ++i) {
      const auto &input = *static_cast<const at::Tensor *>(example_inputs[i]);
      graph->static_inputs.push_back(input.to(module->device).clone());
    }
    std::vector<c10::IValue> args(graph->static_inputs.begin(), graph->static_inputs.end());

    // As torch.cuda.graphs does: warm up on a side stream (lazy initialisation
    // and cuDNN autotuning must not land in the graph), then capture there.
    auto current = c10::cuda::getCurrentCUDAStream(module->device.index());
    auto side = c10::cuda::getStreamFromPool(false, module->device.index());
    current.synchronize();  // the static inputs were written on the current stream
    {
      c10::cuda::CUDAStreamGuard on_side(side);
      for (int i = 0; i < warmup_runs; ++i) graph->module.forward(args);
      side.synchronize();
      graph->graph.capture_begin();
      c10::IValue result = graph->module.forward(args);
      graph->graph.capture_end();
      perfopt_shim::flatten_outputs(result, graph->static_outputs);
    }
    side.synchronize();
  });
  if (status == PSHIM_OK) {
    *out = graph.release();
  } else {
    // A failed capture can leave a sticky error on the thread; clear it so
    // that plain execution, the fall-back, starts clean.
    (void)cudaGetLastError();
  }
  return status;
}

extern "C" int pshim_graph_replay(pshim_graph *graph, void *const *inputs, size_t n_inputs,
                                  pshim_tensor_sink sink, void *ctx) {
  return perfopt_shim::guarded([&] {
    TORCH_CHECK(n_inputs == graph->static_inputs.size(), "the graph was captured with ",
                graph->static_inputs.size(), " inputs, got ", n_inputs);
    c10::InferenceMode inference;
    for (size_t i = 0; i < n_inputs; ++i) {
      graph->static_inputs[i].copy_(*static_cast<const at::Tensor *>(inputs[i]), /*non_blocking=*/true);
    }
    graph->graph.replay();
    for (const at::Tensor &output : graph->static_outputs) sink(ctx, new at::Tensor(output.clone()));
  });
}

extern "C" void pshim_graph_free(pshim_graph *graph) { delete graph; }
