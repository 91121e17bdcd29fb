// A TorchScript module's state: the attributes its methods change (a
// stream's buffers, a counter). Saved, restored and compared around runs that
// must not advance it (warm-up, tuning) and carried from one compiled form to
// the next; which attributes are written is found at load
// (script_writes.cpp): a module that writes attributes runs one call at a
// time. Rust twin: src/torch/script_state.rs.
#include <torch/script.h>

#include "common.h"
#include "script.h"

// Every attribute of the module and its submodules that is not a parameter
// and not a submodule: the state a method may change between calls.
struct pshim_state {
  struct Slot {
    c10::intrusive_ptr<c10::ivalue::Object> object;
    size_t index;
    std::string name;
    c10::IValue saved;
  };
  std::vector<Slot> slots;
};

using perfopt_shim::guarded;

namespace {

// Every attribute that is not a submodule, and the parameters the methods
// write; copied with one memo, so that attributes that were one object stay
// one object in the copy.
void collect_state(const c10::intrusive_ptr<c10::ivalue::Object> &object, const std::string &prefix,
                   const perfopt_shim::Writes &writes, c10::IValue::HashIdentityIValueMap &memo,
                   std::vector<pshim_state::Slot> &slots) {
  const auto &type = object->type();
  for (size_t i = 0; i < type->numAttributes(); ++i) {
    const std::string name = prefix + type->getAttributeName(i);
    const c10::IValue &value = object->getSlot(i);
    if (type->is_module() && type->is_parameter(i) && writes.paths.count(name) == 0) continue;
    if (value.isObject()) {
      auto child = value.toObject();
      if (child->type()->is_module()) {
        collect_state(child, name + ".", writes, memo, slots);
        continue;
      }
    }
    slots.push_back({object, i, name, value.deepcopy(memo)});
  }
}

// Writes a saved value into a slot: a tensor of the same shape in place (so
// that the tensors sharing its memory, views of one buffer, still share it),
// anything else as a copy.
void write_slot(const c10::intrusive_ptr<c10::ivalue::Object> &object, size_t index, const c10::IValue &saved,
                c10::IValue::HashIdentityIValueMap &memo) {
  const c10::IValue current = object->getSlot(index);
  if (current.isTensor() && saved.isTensor()) {
    at::Tensor target = current.toTensor();
    const at::Tensor &source = saved.toTensor();
    if (target.defined() && source.defined() && target.sizes() == source.sizes() &&
        target.scalar_type() == source.scalar_type() && target.device() == source.device()) {
      target.copy_(source);
      return;
    }
  }
  object->setSlot(index, saved.deepcopy(memo));
}

bool same_value(const c10::IValue &a, const c10::IValue &b) {
  if (a.isTensor() && b.isTensor()) {
    const at::Tensor &x = a.toTensor();
    const at::Tensor &y = b.toTensor();
    if (!x.defined() || !y.defined()) return x.defined() == y.defined();
    return x.sizes() == y.sizes() && x.scalar_type() == y.scalar_type() && x.device() == y.device() &&
           at::equal(x, y);
  }
  if (a.isTuple() && b.isTuple()) {
    const auto &xs = a.toTupleRef().elements();
    const auto &ys = b.toTupleRef().elements();
    if (xs.size() != ys.size()) return false;
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!same_value(xs[i], ys[i])) return false;
    }
    return true;
  }
  if (a.isList() && b.isList()) {
    auto xs = a.toListRef();
    auto ys = b.toListRef();
    if (xs.size() != ys.size()) return false;
    for (size_t i = 0; i < xs.size(); ++i) {
      if (!same_value(xs[i], ys[i])) return false;
    }
    return true;
  }
  if (a.isNone() || b.isNone()) return a.isNone() && b.isNone();
  if (a.isInt() && b.isInt()) return a.toInt() == b.toInt();
  if (a.isDouble() && b.isDouble()) return a.toDouble() == b.toDouble();
  if (a.isBool() && b.isBool()) return a.toBool() == b.toBool();
  if (a.isString() && b.isString()) return a.toStringRef() == b.toStringRef();
  return a.isSameIdentity(b);
}

}  // namespace

extern "C" {

int pshim_script_state_save(const pshim_script *module, pshim_state **out, size_t *attributes) {
  return guarded([&] {
    auto state = std::make_unique<pshim_state>();
    c10::IValue::HashIdentityIValueMap memo;
    collect_state(module->module._ivalue(), "", module->writes, memo, state->slots);
    *attributes = state->slots.size();
    *out = state.release();
  });
}

int pshim_script_state_restore(const pshim_script *, const pshim_state *state) {
  return guarded([&] {
    // In-place writes to tensors made under inference mode need it.
    c10::InferenceMode inference;
    c10::IValue::HashIdentityIValueMap memo;
    for (const auto &slot : state->slots) write_slot(slot.object, slot.index, slot.saved, memo);
  });
}

int pshim_script_state_equal(const pshim_script *, const pshim_state *state, int *equal) {
  return guarded([&] {
    *equal = 1;
    for (const auto &slot : state->slots) {
      if (!same_value(slot.object->getSlot(slot.index), slot.saved)) {
        *equal = 0;
        return;
      }
    }
  });
}

void pshim_state_free(pshim_state *state) { delete state; }

int pshim_script_state_apply(const pshim_script *module, const pshim_state *state, size_t *applied) {
  return guarded([&] {
    *applied = 0;
    c10::InferenceMode inference;
    c10::IValue::HashIdentityIValueMap memo;
    for (const auto &slot : state->slots) {
      c10::intrusive_ptr<c10::ivalue::Object> owner;
      size_t index = 0;
      if (!perfopt_shim::find_slot(module->module._ivalue(), slot.name, &owner, &index)) continue;
      const c10::TypePtr wanted = owner->type()->getAttribute(index);
      if (!slot.saved.type()->isSubtypeOf(*wanted)) continue;
      write_slot(owner, index, slot.saved, memo);
      ++*applied;
    }
  });
}

int pshim_script_writes_state(const pshim_script *module, int *writes) {
  return guarded([&] { *writes = module->writes.any() ? 1 : 0; });
}

int pshim_script_writes_inputs(const pshim_script *module, const char *method, int *writes) {
  return guarded([&] { *writes = module->writes.writes_inputs(method) ? 1 : 0; });
}

}  // extern "C"
