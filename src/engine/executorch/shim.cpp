// perfopt's ExecuTorch part: programs loaded through ExecuTorch's Module
// (the program's structure verified, read from its file, each method's
// memory planned by the program), their methods described, and run on
// contiguous CPU tensors. See shim.h.
#include "shim.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <exception>
#include <memory>
#include <string>
#include <vector>

#include <executorch/extension/module/module.h>
#include <executorch/extension/tensor/tensor_ptr.h>
#include <executorch/extension/tensor/tensor_ptr_maker.h>
#include <executorch/runtime/platform/platform.h>

using executorch::extension::Module;
using executorch::runtime::Error;
using executorch::runtime::EValue;
using executorch::runtime::Tag;

struct pet_program {
  std::unique_ptr<Module> module;
};

namespace {

thread_local std::string last_error;
thread_local int32_t last_code = 0;
// What ExecuTorch logged as an error during this thread's current call
// ("Attempted to resize a bounded tensor with a maximum capacity of 256
// elements to 260 elements"): the detail its Error codes lack, added to the
// message of a call that fails.
thread_local std::string runtime_errors;
constexpr size_t MAX_RUNTIME_ERRORS = 2048;

// ExecuTorch's log, taken over from its default (which prints every
// informational line to stderr): errors are kept for the call's message, the
// rest dropped.
void keep_errors(et_timestamp_t, et_pal_log_level_t level, const char *, const char *, size_t,
                 const char *message, size_t length) {
  if (level == kFatal) {
    // ExecuTorch aborts next: the line is the only trace left.
    std::fprintf(stderr, "ExecuTorch (fatal): %.*s\n", static_cast<int>(length), message);
    return;
  }
  if (level != kError || runtime_errors.size() + 2 >= MAX_RUNTIME_ERRORS) {
    return;
  }
  while (length > 0 && (message[length - 1] == '\n' || message[length - 1] == '.')) {
    --length;
  }
  runtime_errors += runtime_errors.empty() ? "" : "; ";
  runtime_errors.append(message, std::min(length, MAX_RUNTIME_ERRORS - runtime_errors.size()));
}

// When this library is loaded (after ExecuTorch's, whose initialisers ran
// already), before any program is.
__attribute__((constructor)) void take_over_the_log() {
  executorch::runtime::register_pal(
      executorch::runtime::PalImpl::create(keep_errors, __FILE__));
}

int fail(std::string message, int32_t code = 0) {
  last_code = code;
  last_error = std::move(message);
  if (!runtime_errors.empty()) {
    last_error += ": " + runtime_errors;
  }
  return PET_FAILED;
}

// The failure of an ExecuTorch call, with its code kept for the Rust side.
int fail(const std::string &what, Error error) {
  return fail(what + ": " + std::string(executorch::runtime::to_string(error)) + " (ExecuTorch error " +
                  std::to_string(static_cast<int>(error)) + ")",
              static_cast<int32_t>(error));
}


// Runs `body`, turning anything thrown into a failed status.
template <typename Body>
int guarded(Body body) {
  last_error.clear();
  last_code = 0;
  runtime_errors.clear();
  try {
    return body();
  } catch (const std::bad_alloc &) {
    return fail("out of memory", static_cast<int32_t>(Error::MemoryAllocationFailed));
  } catch (const std::exception &err) {
    return fail(err.what(), -1);
  } catch (...) {
    return fail("an unknown C++ exception", -1);
  }
}

int load_method(pet_program *program, const std::string &name) {
  Error error = program->module->load_method(name);
  if (error != Error::Ok) {
    return fail("loading method " + name, error);
  }
  return PET_OK;
}

}  // namespace

extern "C" {

const char *pet_last_error(void) { return last_error.c_str(); }

int32_t pet_last_code(void) { return last_code; }

int pet_load(const char *path, pet_program **out) {
  return guarded([&]() -> int {
    auto module = std::make_unique<Module>(std::string(path), Module::LoadMode::File);
    Error error = module->load(executorch::runtime::Program::Verification::InternalConsistency);
    if (error != Error::Ok) {
      return fail("loading the program", error);
    }
    *out = new pet_program{std::move(module)};
    return PET_OK;
  });
}

void pet_free(pet_program *program) {
  try {
    delete program;
  } catch (...) {
  }
}

int pet_method_names(pet_program *program, char *buf, size_t len, size_t *needed) {
  return guarded([&]() -> int {
    auto names = program->module->method_names();
    if (!names.ok()) {
      return fail("reading the method names", names.error());
    }
    std::vector<std::string> sorted(names->begin(), names->end());
    std::sort(sorted.begin(), sorted.end());
    std::string joined;
    for (const auto &name : sorted) {
      joined += name;
      joined += '\n';
    }
    *needed = joined.size() + 1;
    if (len < joined.size() + 1) {
      return PET_FAILED;
    }
    std::memcpy(buf, joined.c_str(), joined.size() + 1);
    return PET_OK;
  });
}

int pet_method_io(pet_program *program, const char *method, size_t *inputs, size_t *outputs) {
  return guarded([&]() -> int {
    if (load_method(program, method) != PET_OK) {
      return PET_FAILED;
    }
    auto meta = program->module->method_meta(method);
    if (!meta.ok()) {
      return fail(std::string("describing method ") + method, meta.error());
    }
    *inputs = meta->num_inputs();
    *outputs = meta->num_outputs();
    return PET_OK;
  });
}

int pet_method_slot(pet_program *program, const char *method, int32_t output, size_t index, pet_slot *out) {
  return guarded([&]() -> int {
    auto meta = program->module->method_meta(method);
    if (!meta.ok()) {
      return fail(std::string("describing method ") + method, meta.error());
    }
    auto tag = output ? meta->output_tag(index) : meta->input_tag(index);
    if (!tag.ok()) {
      return fail("reading the kind of value " + std::to_string(index), tag.error());
    }
    *out = pet_slot{};
    out->tag = static_cast<int32_t>(*tag);
    if (*tag != Tag::Tensor) {
      return PET_OK;
    }
    auto info = output ? meta->output_tensor_meta(index) : meta->input_tensor_meta(index);
    if (!info.ok()) {
      return fail("reading tensor " + std::to_string(index), info.error());
    }
    auto sizes = info->sizes();
    if (sizes.size() > PET_MAX_DIMS) {
      return fail("tensor " + std::to_string(index) + " has " + std::to_string(sizes.size()) +
                  " dimensions; perfopt takes at most 16");
    }
    out->dtype = static_cast<int32_t>(info->scalar_type());
    out->ndim = static_cast<int32_t>(sizes.size());
    out->planned = info->is_memory_planned() ? 1 : 0;
    auto order = info->dim_order();
    out->row_major = 1;
    for (size_t i = 0; i < order.size(); ++i) {
      if (order[i] != i) {
        out->row_major = 0;
      }
    }
    for (size_t i = 0; i < sizes.size(); ++i) {
      out->sizes[i] = sizes[i];
    }
    // Whether the shape may change is the loaded method's tensor's, not in
    // the metadata.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
    auto loaded = program->module->method(method);
#pragma GCC diagnostic pop
    if (loaded.ok()) {
      const EValue &value = output ? (*loaded)->get_output(index) : (*loaded)->get_input(index);
      if (value.isTensor()) {
        out->dynamic = static_cast<int32_t>(value.toTensor().shape_dynamism());
      }
    }
    return PET_OK;
  });
}

int pet_execute(pet_program *program, const char *method, const pet_tensor *inputs, size_t n_inputs,
                pet_tensor *outputs, size_t capacity, size_t *n_outputs) {
  return guarded([&]() -> int {
    std::vector<executorch::extension::TensorPtr> tensors;
    std::vector<EValue> values;
    tensors.reserve(n_inputs);
    values.reserve(n_inputs);
    for (size_t i = 0; i < n_inputs; ++i) {
      const pet_tensor &in = inputs[i];
      if (in.ndim < 0 || in.ndim > PET_MAX_DIMS) {
        return fail("input " + std::to_string(i) + " has " + std::to_string(in.ndim) + " dimensions");
      }
      std::vector<executorch::aten::SizesType> sizes(in.sizes, in.sizes + in.ndim);
      tensors.push_back(executorch::extension::from_blob(
          in.data, std::move(sizes), static_cast<executorch::aten::ScalarType>(in.dtype)));
      values.emplace_back(*tensors.back());
    }
    auto result = program->module->execute(method, values);
    if (!result.ok()) {
      return fail(std::string("running ") + method, result.error());
    }
    *n_outputs = result->size();
    if (result->size() > capacity) {
      return fail(std::string(method) + " returned " + std::to_string(result->size()) +
                  " values; room for " + std::to_string(capacity));
    }
    for (size_t i = 0; i < result->size(); ++i) {
      const EValue &value = (*result)[i];
      if (!value.isTensor()) {
        return fail(std::string(method) + " returned a value that is not a tensor at position " +
                        std::to_string(i) + "; perfopt passes on tensors only from ExecuTorch programs",
                    static_cast<int32_t>(Error::NotSupported));
      }
      const auto &tensor = value.toTensor();
      if (tensor.dim() > PET_MAX_DIMS) {
        return fail("output " + std::to_string(i) + " has more than 16 dimensions");
      }
      pet_tensor &out = outputs[i];
      out.data = const_cast<void *>(tensor.const_data_ptr());
      out.dtype = static_cast<int32_t>(tensor.scalar_type());
      out.ndim = static_cast<int32_t>(tensor.dim());
      for (ssize_t d = 0; d < tensor.dim(); ++d) {
        out.sizes[d] = tensor.size(d);
      }
    }
    return PET_OK;
  });
}

}  // extern "C"
