// Models: TorchScript loading, freezing and forward(), DLPack conversion and
// device memory statistics. Builds without CUDA headers.
#include <ATen/DLConvertor.h>
#include <ATen/DeviceAccelerator.h>
#include <torch/csrc/jit/api/module.h>
#include <torch/script.h>

#include "shim.h"
#include "shim_common.h"
#include "shim_model.h"

using perfopt_shim::guarded;

namespace perfopt_shim {

void flatten_outputs(const c10::IValue &value, std::vector<at::Tensor> &out) {
  if (value.isTensor()) {
    out.push_back(value.toTensor());
  } else if (value.isTuple()) {
    for (const auto &element : value.toTupleRef().elements()) flatten_outputs(element, out);
  } else if (value.isTensorList()) {
    for (const at::Tensor &t : value.toTensorVector()) out.push_back(t);
  } else if (value.isList()) {
    for (const c10::IValue &element : value.toListRef()) flatten_outputs(element, out);
  } else {
    TORCH_CHECK(false, "the model returned a ", value.tagKind(),
                "; perfopt passes on tensors and tuples or lists of tensors");
  }
}

std::vector<c10::IValue> to_ivalues(void *const *inputs, size_t n) {
  std::vector<c10::IValue> values;
  values.reserve(n);
  for (size_t i = 0; i < n; ++i) values.emplace_back(*static_cast<const at::Tensor *>(inputs[i]));
  return values;
}

}  // namespace perfopt_shim

namespace {

c10::Device device_of(int device_type, int device_index) {
  switch (device_type) {
    case 1:
      return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device_index));
    case 2:
      return c10::Device(c10::DeviceType::MPS);
    default:
      return c10::Device(c10::DeviceType::CPU);
  }
}

}  // namespace

extern "C" {

int pshim_module_load(const char *path, int device_type, int device_index, pshim_module **out) {
  return guarded([&] {
    c10::Device device = device_of(device_type, device_index);
    torch::jit::Module module = torch::jit::load(path, device);
    module.eval();
    *out = new pshim_module{std::move(module), device};
  });
}

void pshim_module_free(pshim_module *module) { delete module; }

int pshim_module_freeze(const pshim_module *module, int optimize, pshim_module **out) {
  return guarded([&] {
    torch::jit::Module copy = module->module.clone();
    copy.eval();
    torch::jit::Module frozen = torch::jit::freeze(copy);
    if (optimize) frozen = torch::jit::optimize_for_inference(frozen);
    *out = new pshim_module{std::move(frozen), module->device};
  });
}

int pshim_module_arity(const pshim_module *module, int64_t *required, int64_t *total) {
  return guarded([&] {
    const auto &schema = module->module.get_method("forward").function().getSchema();
    const auto &args = schema.arguments();
    int64_t all = 0, without_default = 0;
    // The first argument is `self`.
    for (size_t i = 1; i < args.size(); ++i) {
      ++all;
      if (!args[i].default_value().has_value()) ++without_default;
    }
    *required = without_default;
    *total = schema.is_vararg() ? -1 : all;
  });
}

int pshim_module_forward(const pshim_module *module, void *const *inputs, size_t n_inputs,
                         pshim_tensor_sink sink, void *ctx) {
  return guarded([&] {
    // Module::forward is not const, but running a method does not change the
    // module: TorchScript modules may be run from several threads at once.
    auto &jit_module = const_cast<torch::jit::Module &>(module->module);
    c10::IValue result = jit_module.forward(perfopt_shim::to_ivalues(inputs, n_inputs));
    std::vector<at::Tensor> outputs;
    perfopt_shim::flatten_outputs(result, outputs);
    for (at::Tensor &t : outputs) sink(ctx, new at::Tensor(std::move(t)));
  });
}

int pshim_tensor_from_dlpack(const void *dl_tensor, void **out) {
  return guarded([&] {
    const DLTensor &dl = *static_cast<const DLTensor *>(dl_tensor);
    auto options = at::TensorOptions()
                       .dtype(at::toScalarType(dl.dtype))
                       .device(at::dlDeviceToTorchDevice(dl.device.device_type,
                                                         static_cast<c10::DeviceIndex>(dl.device.device_id)));
    at::IntArrayRef sizes(dl.shape, dl.ndim);
    void *data = static_cast<char *>(dl.data) + dl.byte_offset;
    at::Tensor view = dl.strides ? at::from_blob(data, sizes, at::IntArrayRef(dl.strides, dl.ndim), options)
                                 : at::from_blob(data, sizes, options);
    *out = new at::Tensor(std::move(view));
  });
}

int pshim_tensor_to_dlpack(const void *tensor, void **out_managed) {
  return guarded([&] { *out_managed = at::toDLPack(*static_cast<const at::Tensor *>(tensor)); });
}

int pshim_device_memory_stats(int32_t device_index, uint64_t *allocated, uint64_t *peak_allocated,
                              uint64_t *reserved) {
  return guarded([&] {
    auto stats = at::accelerator::getDeviceStats(static_cast<c10::DeviceIndex>(device_index));
    constexpr size_t aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    *allocated = static_cast<uint64_t>(stats.allocated_bytes[aggregate].current);
    *peak_allocated = static_cast<uint64_t>(stats.allocated_bytes[aggregate].peak);
    *reserved = static_cast<uint64_t>(stats.reserved_bytes[aggregate].current);
  });
}

int pshim_device_reset_peak(int32_t device_index) {
  return guarded([&] { at::accelerator::resetPeakStats(static_cast<c10::DeviceIndex>(device_index)); });
}

int pshim_device_empty_cache(void) {
  return guarded([&] { at::accelerator::emptyCache(); });
}

#ifndef PERFOPT_WITH_CUDA
int pshim_graph_capture(const pshim_module *, void *const *, size_t, int, pshim_graph **) {
  perfopt_shim::set_last_error("perfopt was built without CUDA headers: no CUDA graphs");
  return PSHIM_UNSUPPORTED;
}
int pshim_graph_replay(pshim_graph *, void *const *, size_t, pshim_tensor_sink, void *) {
  perfopt_shim::set_last_error("perfopt was built without CUDA headers: no CUDA graphs");
  return PSHIM_UNSUPPORTED;
}
void pshim_graph_free(pshim_graph *) {}
#endif

}  // extern "C"
