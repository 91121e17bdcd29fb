// A TorchScript module's state: the attributes its methods change (a
// stream's buffers, a counter). Saved, restored and compared around runs that
// must not advance it (warm-up, tuning), carried from one compiled form to
// the next, and looked for ahead of any run: a module that writes attributes
// runs one call at a time. Rust twin: src/torch/script_state.rs.
#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/inliner.h>
#include <torch/script.h>

#include <unordered_set>

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

void collect_state(const c10::intrusive_ptr<c10::ivalue::Object> &object, const std::string &prefix,
                   std::vector<pshim_state::Slot> &slots) {
  const auto &type = object->type();
  for (size_t i = 0; i < type->numAttributes(); ++i) {
    const std::string name = prefix + type->getAttributeName(i);
    const c10::IValue &value = object->getSlot(i);
    if (type->is_module() && type->is_parameter(i)) continue;
    if (value.isObject()) {
      auto child = value.toObject();
      if (child->type()->is_module()) {
        collect_state(child, name + ".", slots);
        continue;
      }
    }
    slots.push_back({object, i, name, value.deepcopy()});
  }
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

// The attribute at a dotted path ("encoder.state"), found through submodule
// objects; false when this form has no such attribute or it is a parameter.
bool find_slot(c10::intrusive_ptr<c10::ivalue::Object> object, const std::string &path,
               c10::intrusive_ptr<c10::ivalue::Object> *owner, size_t *index) {
  size_t start = 0;
  while (true) {
    const size_t dot = path.find('.', start);
    const std::string part = path.substr(start, dot == std::string::npos ? std::string::npos : dot - start);
    const auto &type = object->type();
    const auto slot = type->findAttributeSlot(part);
    if (!slot) return false;
    if (dot == std::string::npos) {
      if (type->is_module() && type->is_parameter(*slot)) return false;
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

// Whether `value` is a module's `training` flag (a GetAttr named so): models
// run in eval mode, so it is false.
bool is_training_flag(const torch::jit::Value *value) {
  const torch::jit::Node *node = value->node();
  return node->kind() == c10::prim::GetAttr && node->s(c10::attr::name) == "training";
}

bool is_false(const torch::jit::Value *value) {
  if (is_training_flag(value)) return true;
  const auto constant = torch::jit::toIValue(value);
  return constant && constant->isBool() && !constant->toBool();
}

// Follows where a value's memory may come from, back to an attribute read:
// through views (an output whose schema aliases an input), containers and
// their elements, branches and loops. Depth-bounded; past the bound it
// answers yes (one call at a time is slower, never wrong).
class AttributeTracer {
 public:
  bool may_be_attribute(torch::jit::Value *value, int depth = 0) {
    if (depth > kMaxDepth) return true;
    if (!visited_.insert(value).second) return false;
    torch::jit::Node *node = value->node();
    const auto kind = node->kind();
    if (kind == c10::prim::GetAttr) {
      const auto object = value->type()->cast<c10::ClassType>();
      return !(object && object->is_module());
    }
    if (kind == c10::prim::Param) return block_param(value, depth);
    if (kind == c10::prim::ListConstruct || kind == c10::prim::TupleConstruct || kind == c10::prim::DictConstruct) {
      return false;  // a new container: changing it changes no attribute
    }
    if (kind == c10::aten::__getitem__ || kind == c10::prim::ListUnpack || kind == c10::prim::TupleUnpack ||
        kind == c10::prim::TupleIndex || kind == c10::prim::unchecked_cast) {
      return element_may_be_attribute(node->input(0), depth + 1);
    }
    if (kind == c10::prim::If || kind == c10::prim::Loop) {
      const size_t i = value->offset();
      for (torch::jit::Block *block : node->blocks()) {
        // A Loop's block outputs start with the condition.
        const size_t at = kind == c10::prim::Loop ? i + 1 : i;
        if (at < block->outputs().size() && may_be_attribute(block->outputs()[at], depth + 1)) return true;
      }
      return kind == c10::prim::Loop && may_be_attribute(node->input(i + 2), depth + 1);
    }
    const c10::FunctionSchema *schema = node->maybeSchema();
    if (!schema) return false;
    const auto &returns = schema->returns();
    if (value->offset() >= returns.size() || !returns[value->offset()].alias_info()) return false;
    // A view or an in-place result: its memory is an aliased input's.
    const auto &args = schema->arguments();
    for (size_t i = 0; i < args.size() && i < node->inputs().size(); ++i) {
      if (args[i].alias_info() && may_be_attribute(node->input(i), depth + 1)) return true;
    }
    return false;
  }

 private:
  static constexpr int kMaxDepth = 64;
  std::unordered_set<const torch::jit::Value *> visited_;

  // An element of a container: of a new one, one of the values put in it;
  // else of wherever the container comes from.
  bool element_may_be_attribute(torch::jit::Value *container, int depth) {
    torch::jit::Node *node = container->node();
    const auto kind = node->kind();
    if (kind == c10::prim::ListConstruct || kind == c10::prim::TupleConstruct || kind == c10::prim::DictConstruct) {
      for (torch::jit::Value *item : node->inputs()) {
        if (may_be_attribute(item, depth + 1)) return true;
      }
      return false;
    }
    return may_be_attribute(container, depth + 1);
  }

  // A loop-carried value: its first value or the one the body hands on. The
  // graph's own inputs (self, the caller's arguments) are not attributes.
  bool block_param(torch::jit::Value *value, int depth) {
    torch::jit::Node *owner = value->node()->owningBlock()->owningNode();
    if (!owner || owner->kind() != c10::prim::Loop || value->offset() == 0) return false;
    const size_t k = value->offset();  // 0 is the trip count
    torch::jit::Block *body = owner->blocks()[0];
    return may_be_attribute(owner->input(k + 1), depth + 1) ||
           (k < body->outputs().size() && may_be_attribute(body->outputs()[k], depth + 1));
  }
};

// Whether a node changes an attribute: sets one, or writes one in place.
bool node_writes(torch::jit::Node *node, AttributeTracer &tracer) {
  if (node->kind() == c10::prim::SetAttr) return true;
  // batch_norm updates its running statistics only when training.
  if (node->kind() == c10::aten::batch_norm && node->inputs().size() > 5 && is_false(node->input(5))) return false;
  const c10::FunctionSchema *schema = node->maybeSchema();
  if (!schema) return false;
  const auto &args = schema->arguments();
  for (size_t i = 0; i < args.size() && i < node->inputs().size(); ++i) {
    const auto *alias = args[i].alias_info();
    if (alias && alias->isWrite() && tracer.may_be_attribute(node->input(i))) return true;
  }
  if (node->kind() == c10::aten::batch_norm && node->inputs().size() > 4) {
    return tracer.may_be_attribute(node->input(3)) || tracer.may_be_attribute(node->input(4));
  }
  return false;
}

// Walks a block; the branch under `if self.training` never runs in eval mode.
bool block_writes(torch::jit::Block *block, AttributeTracer &tracer) {
  for (torch::jit::Node *node : block->nodes()) {
    if (node->kind() == c10::prim::If && is_training_flag(node->input(0))) {
      if (block_writes(node->blocks()[1], tracer)) return true;
      continue;
    }
    if (node_writes(node, tracer)) return true;
    for (torch::jit::Block *inner : node->blocks()) {
      if (block_writes(inner, tracer)) return true;
    }
  }
  return false;
}

// On a copy with every call inlined: a call's body is analysed as the ops
// it runs.
bool graph_writes(const std::shared_ptr<torch::jit::Graph> &graph) {
  std::shared_ptr<torch::jit::Graph> inlined = graph->copy();
  torch::jit::Inline(*inlined);
  AttributeTracer tracer;
  return block_writes(inlined->block(), tracer);
}

}  // namespace

extern "C" {

int pshim_script_state_save(const pshim_script *module, pshim_state **out, size_t *attributes) {
  return guarded([&] {
    auto state = std::make_unique<pshim_state>();
    collect_state(module->module._ivalue(), "", state->slots);
    *attributes = state->slots.size();
    *out = state.release();
  });
}

int pshim_script_state_restore(const pshim_script *, const pshim_state *state) {
  return guarded([&] {
    for (const auto &slot : state->slots) slot.object->setSlot(slot.index, slot.saved.deepcopy());
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
    for (const auto &slot : state->slots) {
      c10::intrusive_ptr<c10::ivalue::Object> owner;
      size_t index = 0;
      if (!find_slot(module->module._ivalue(), slot.name, &owner, &index)) continue;
      const c10::TypePtr wanted = owner->type()->getAttribute(index);
      if (!slot.saved.type()->isSubtypeOf(*wanted)) continue;
      owner->setSlot(index, slot.saved.deepcopy());
      ++*applied;
    }
  });
}

int pshim_script_writes_state(const pshim_script *module, int *writes) {
  return guarded([&] {
    *writes = 0;
    // The module's own methods, with the submodules' calls inlined: what a
    // caller can run.
    for (const torch::jit::Method &method : module->module.get_methods()) {
      if (graph_writes(method.graph())) {
        *writes = 1;
        return;
      }
    }
  });
}

}  // extern "C"
