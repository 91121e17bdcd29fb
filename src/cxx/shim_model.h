// What the model and CUDA-graph translation units share.
#pragma once

#include <torch/script.h>

#include <vector>

struct pshim_module {
  torch::jit::Module module;
  c10::Device device;
};

namespace perfopt_shim {

// The tensors of a forward() result, flattened in order: a tensor, or
// tuples/lists of tensors, nested. Anything else is an error.
void flatten_outputs(const c10::IValue &value, std::vector<at::Tensor> &out);

std::vector<c10::IValue> to_ivalues(void *const *inputs, size_t n);

}  // namespace perfopt_shim
