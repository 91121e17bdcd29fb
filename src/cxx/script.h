// The TorchScript module handle and attribute lookup by path, shared by
// script.cpp (load, call, freeze) and script_state.cpp (the state methods
// change).
#pragma once

#include <torch/script.h>

#include "script_writes.h"
#include "shim.h"

struct pshim_script {
  torch::jit::Module module;
  c10::Device device;
  // What its methods write, found once when the form is made.
  perfopt_shim::Writes writes;
};

namespace perfopt_shim {

// The attribute at a dotted path ("encoder.state"), found through submodule
// objects; false when this form has no such attribute.
inline bool find_slot(c10::intrusive_ptr<c10::ivalue::Object> object, const std::string &path,
                      c10::intrusive_ptr<c10::ivalue::Object> *owner, size_t *index) {
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const auto &type = object->type();
    const auto slot = type->findAttributeSlot(part);
    if (!slot) return false;
    if (dot == std::string::npos) {
      *owner = object;
      *index = *slot;
      return true;
    }
    const c10::IValue &child = object->getSlot(*slot);
    if (!child.isObject()) return false;
    object = child.toObject();
    start = dot + 1;
  }
}

}  // namespace perfopt_shim
