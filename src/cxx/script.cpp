// TorchScript modules: load, freeze, list and call methods with arguments of
// any TorchScript kind. Their state: script_state.cpp.
// Rust twin: src/torch/script.rs.
#include <torch/csrc/jit/api/module.h>
#include <torch/csrc/jit/serialization/import.h>
#include <torch/script.h>

#include <algorithm>
#include <map>
#include <set>
#include <sstream>

#include "common.h"
#include "script.h"
#include "values.h"

using perfopt_shim::guarded;

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

// The methods a compiled copy must keep beside forward: all the others.
std::vector<std::string> other_methods(const torch::jit::Module &module) {
  std::vector<std::string> names;
  for (const auto &method : module.get_methods()) {
    if (method.name() != "forward") names.push_back(method.name());
  }
  return names;
}

// A frozen form that folded an attribute the methods write into a constant
// would keep its state where nothing can save or carry it: refused (the model
// then runs as loaded). When the writes' targets are not all known, every
// attribute that is not a parameter must have stayed.
void check_state_kept(const torch::jit::Module &original, const torch::jit::Module &frozen,
                      const perfopt_shim::Writes &writes) {
  std::vector<std::string> needed(writes.paths.begin(), writes.paths.end());
  if (writes.unknown) {
    for (const auto &attribute : original.named_attributes(/*recurse=*/true)) {
      if (!attribute.value.isModule()) needed.push_back(attribute.name);
    }
    for (const auto &parameter : original.named_parameters(/*recurse=*/true)) {
      needed.erase(std::remove(needed.begin(), needed.end(), parameter.name), needed.end());
    }
  }
  // A frozen form is a copy: tensors of the state that share memory (views
  // of one buffer) would each get their own.
  if (writes.any()) {
    std::set<std::string> parameters;
    for (const auto &parameter : original.named_parameters(/*recurse=*/true)) parameters.insert(parameter.name);
    std::map<const void *, const at::TensorImpl *> owners;
    for (const auto &attribute : original.named_attributes(/*recurse=*/true)) {
      if (!attribute.value.isTensor() || !attribute.value.toTensor().defined()) continue;
      if (parameters.count(attribute.name) && !writes.paths.count(attribute.name)) continue;  // tied weights
      const at::Tensor &tensor = attribute.value.toTensor();
      if (!tensor.has_storage()) continue;
      const void *storage = tensor.storage().unsafeGetStorageImpl();
      const auto [at, inserted] = owners.emplace(storage, tensor.unsafeGetTensorImpl());
      if (!inserted && at->second != tensor.unsafeGetTensorImpl()) {
        throw std::runtime_error("attributes of the model's state share memory (views of one buffer, such as `" +
                                 attribute.name + "`), which a frozen copy would not keep");
      }
    }
  }
  for (const std::string &path : needed) {
    c10::intrusive_ptr<c10::ivalue::Object> owner;
    size_t index = 0;
    if (!perfopt_shim::find_slot(frozen._ivalue(), path, &owner, &index)) {
      throw std::runtime_error("freezing folds the attribute `" + path +
                               "`, which the model's methods change, into a constant: its state could not be "
                               "kept");
    }
  }
}

std::string schema_json(const torch::jit::Method &method) {
  using perfopt_shim::json_string;
  const c10::FunctionSchema &schema = method.function().getSchema();
  std::ostringstream out;
  std::ostringstream text;
  text << schema;
  out << "{\"name\":" << json_string(method.name()) << ",\"schema\":" << json_string(text.str())
      << ",\"arguments\":[";
  const auto &args = schema.arguments();
  bool first = true;
  for (size_t i = 1; i < args.size(); ++i) {  // arguments[0] is self
    if (!first) out << ",";
    first = false;
    out << "{\"name\":" << json_string(args[i].name()) << ",\"type\":" << json_string(args[i].type()->annotation_str())
        << ",\"default\":";
    if (args[i].default_value().has_value()) {
      std::ostringstream value;
      value << *args[i].default_value();
      out << json_string(value.str());
    } else {
      out << "null";
    }
    out << "}";
  }
  out << "],\"returns\":[";
  first = true;
  for (const auto &ret : schema.returns()) {
    if (!first) out << ",";
    first = false;
    out << json_string(ret.type()->annotation_str());
  }
  out << "],\"vararg\":" << (schema.is_vararg() ? "true" : "false") << "}";
  return out.str();
}

}  // namespace

extern "C" {

int pshim_script_load(const char *path, int device_type, int device_index, pshim_script **out) {
  return guarded([&] {
    c10::Device device = device_of(device_type, device_index);
    torch::jit::Module module = torch::jit::load(path, device);
    module.eval();
    perfopt_shim::Writes writes = perfopt_shim::find_writes(module);
    *out = new pshim_script{std::move(module), device, std::move(writes)};
  });
}

void pshim_script_free(pshim_script *module) { delete module; }

int pshim_script_freeze(const pshim_script *module, int optimize, pshim_script **out) {
  return guarded([&] {
    torch::jit::Module copy = module->module.clone();
    copy.eval();
    std::vector<std::string> others = other_methods(copy);
    // The attributes the methods write stay attributes (the model's state).
    std::vector<std::string> preserved = others;
    for (const std::string &path : module->writes.paths) {
      if (path.find('.') == std::string::npos) preserved.push_back(path);
    }
    torch::jit::Module frozen =
        torch::jit::freeze(copy, preserved.empty() ? std::nullopt : std::make_optional(preserved));
    if (optimize) frozen = torch::jit::optimize_for_inference(frozen, others);
    check_state_kept(module->module, frozen, module->writes);
    perfopt_shim::Writes writes = perfopt_shim::find_writes(frozen);
    *out = new pshim_script{std::move(frozen), module->device, std::move(writes)};
  });
}

int pshim_script_methods(const pshim_script *module, char *buf, size_t len, size_t *needed) {
  return guarded([&] {
    std::string json = "[";
    bool first = true;
    for (const auto &method : module->module.get_methods()) {
      if (!first) json += ",";
      first = false;
      json += schema_json(method);
    }
    json += "]";
    perfopt_shim::write_text(json, buf, len, needed);
  });
}

int pshim_script_call(const pshim_script *module, const char *method, const pshim_node *nodes, size_t n_nodes,
                      size_t n_args, pshim_node_sink sink, void *ctx) {
  return guarded([&] {
    auto found = module->module.find_method(method);
    if (!found) {
      std::string names;
      for (const auto &m : module->module.get_methods()) names += (names.empty() ? "" : ", ") + m.name();
      throw perfopt_shim::ArgumentError(std::string("the model has no method `") + method + "` (it has: " + names +
                                        ")");
    }
    const c10::FunctionSchema &schema = found->function().getSchema();
    const auto &args = schema.arguments();
    const size_t declared = args.empty() ? 0 : args.size() - 1;  // without self
    size_t required = 0;
    for (size_t i = 1; i < args.size(); ++i) {
      if (!args[i].default_value().has_value()) ++required;
    }
    if (n_args < required || (n_args > declared && !schema.is_vararg())) {
      std::ostringstream text;
      text << schema;
      throw perfopt_shim::ArgumentError(std::string(method) + "() takes " +
                                        (required == declared ? std::to_string(declared)
                                                              : std::to_string(required) + " to " +
                                                                    std::to_string(declared)) +
                                        " argument(s), got " + std::to_string(n_args) + " (" + text.str() + ")");
    }
    std::vector<c10::IValue> stack;
    stack.reserve(n_args);
    size_t cursor = 0;
    for (size_t i = 0; i < n_args; ++i) {
      if (i < declared) {
        const c10::Argument &arg = args[i + 1];
        perfopt_shim::Where where{nullptr, i, method, &arg.name()};
        stack.push_back(perfopt_shim::to_ivalue(nodes, n_nodes, &cursor, arg.type(), where));
      } else {
        stack.push_back(perfopt_shim::to_ivalue_untyped(nodes, n_nodes, &cursor));
      }
    }
    // Running a method does not change the module object itself: modules run
    // from several threads at once, except those whose methods change
    // attributes (script_state.cpp finds them; src/model/exclusive.rs runs
    // them one call at a time).
    c10::IValue result = (*found)(std::move(stack));
    perfopt_shim::send_value(result, sink, ctx);
  });
}

int pshim_script_save_to(const pshim_script *module, void (*sink)(void *ctx, const char *data, size_t len),
                         void *ctx) {
  return guarded([&] {
    std::ostringstream out;
    module->module.save(out);
    const std::string bytes = std::move(out).str();
    sink(ctx, bytes.data(), bytes.size());
  });
}

}  // extern "C"
