// Which attributes a TorchScript module's methods change. libtorch lets
// threads run one module at once, and a write to an attribute then races
// (lost updates, a tensor freed under a reader): such a module runs one call
// at a time, its state is saved around warm-up runs and carried between
// compiled forms. The analysis follows every write in place (an argument the
// op's schema marks written) and every SetAttr back to the attributes whose
// memory it may touch: through views, containers and their elements, copies
// of containers (whose elements are shared), branches and loops. What it
// cannot follow counts as a write of unknown target. A write that reaches one
// of a method's own arguments (`x.mul_(2)` on an input) is recorded too: the
// caller's memory is borrowed read-only, so such a method is given copies.
#include "script_writes.h"

#include <torch/csrc/jit/ir/constants.h>
#include <torch/csrc/jit/passes/inliner.h>

#include <optional>
#include <unordered_set>

namespace perfopt_shim {
namespace {

using torch::jit::Block;
using torch::jit::Node;
using torch::jit::Value;

bool is_module(const c10::TypePtr &type) {
  const auto object = type->cast<c10::ClassType>();
  return object && object->is_module();
}

// Types whose values hold other values (their elements may be shared).
bool is_container(const c10::TypePtr &type) {
  switch (type->kind()) {
    case c10::TypeKind::ListType:
    case c10::TypeKind::DictType:
    case c10::TypeKind::TupleType:
      return true;
    case c10::TypeKind::OptionalType:
      return is_container(type->expectRef<c10::OptionalType>().getElementType());
    case c10::TypeKind::ClassType:
      return !is_module(type);
    default:
      return false;
  }
}

// The norm ops that update running statistics (arguments 3 and 4) unless
// argument 5 (training, use_input_stats) is false.
bool is_norm_with_statistics(c10::Symbol kind) {
  static const std::unordered_set<std::string> names = {
      "aten::batch_norm",      "aten::native_batch_norm", "aten::_batch_norm_impl_index",
      "aten::instance_norm",   "aten::cudnn_batch_norm",  "aten::miopen_batch_norm",
      "aten::_native_batch_norm_legit"};
  return names.count(kind.toQualString()) > 0;
}

// A bool known without running, models being in eval mode: constants, a
// module's `training` flag (false), and not/and/or/if over those.
std::optional<bool> known_bool(const Value *value, int depth = 0) {
  if (depth > 32) return std::nullopt;
  if (const auto constant = torch::jit::toIValue(value); constant && constant->isBool()) return constant->toBool();
  const Node *node = value->node();
  const auto kind = node->kind();
  if (kind == c10::prim::GetAttr && node->s(c10::attr::name) == "training" && is_module(node->input(0)->type())) {
    return false;
  }
  if (kind == c10::aten::__not__) {
    const auto inner = known_bool(node->input(0), depth + 1);
    return inner ? std::optional<bool>(!*inner) : std::nullopt;
  }
  if (kind == c10::aten::__and__ || kind == c10::aten::__or__) {
    const auto a = known_bool(node->input(0), depth + 1);
    const auto b = known_bool(node->input(1), depth + 1);
    const bool is_and = kind == c10::aten::__and__;
    if (a && b) return is_and ? (*a && *b) : (*a || *b);
    if ((a && *a == !is_and) || (b && *b == !is_and)) return !is_and;  // false and _, true or _
    return std::nullopt;
  }
  if (kind == c10::prim::If) {
    const size_t i = value->offset();
    if (const auto condition = known_bool(node->input(0), depth + 1)) {
      return known_bool(node->blocks()[*condition ? 0 : 1]->outputs()[i], depth + 1);
    }
    const auto then_value = known_bool(node->blocks()[0]->outputs()[i], depth + 1);
    const auto else_value = known_bool(node->blocks()[1]->outputs()[i], depth + 1);
    if (then_value && else_value && *then_value == *else_value) return then_value;
  }
  return std::nullopt;
}

class Analysis {
 public:
  explicit Analysis(Value *self) : self_(self) {}

  Writes writes;
  // Whether a write reaches one of the method's own arguments (not self).
  bool writes_arguments = false;

  void walk(Block *block) {
    for (Node *node : block->nodes()) {
      if (node->kind() == c10::prim::If) {
        if (const auto condition = known_bool(node->input(0))) {
          walk(node->blocks()[*condition ? 0 : 1]);
          continue;
        }
      }
      visit(node);
      for (Block *inner : node->blocks()) walk(inner);
    }
  }

 private:
  enum class Reach { kValue, kElements };
  static constexpr int kMaxDepth = 96;

  Value *self_;
  std::set<std::pair<const Value *, Reach>> visited_;

  void visit(Node *node) {
    const auto kind = node->kind();
    if (kind == c10::prim::SetAttr) {
      const std::optional<std::string> owner = path_of(node->input(0));
      if (owner) {
        writes.paths.insert(join(*owner, node->s(c10::attr::name)));
      } else {
        sources(node->input(0), Reach::kValue, 0);  // an object reached otherwise
      }
      return;
    }
    // Code the inliner left as a call (an interface, a fork): not analysed.
    if (kind == c10::prim::CallMethod || kind == c10::prim::CallFunction || kind == c10::prim::fork ||
        kind == c10::prim::forkClosure || kind == c10::prim::awaitable || kind == c10::prim::PythonOp) {
      writes.unknown = true;
      return;
    }
    if (is_norm_with_statistics(kind) && node->inputs().size() > 5) {
      if (known_bool(node->input(5)) != std::optional<bool>(false)) {
        sources(node->input(3), Reach::kValue, 0);
        sources(node->input(4), Reach::kValue, 0);
      }
    }
    const c10::FunctionSchema *schema = node->maybeSchema();
    if (!schema) return;
    const auto &args = schema->arguments();
    for (size_t i = 0; i < args.size() && i < node->inputs().size(); ++i) {
      const auto *alias = args[i].alias_info();
      if (alias && alias->isWrite()) sources(node->input(i), Reach::kValue, 0);
    }
  }

  static std::string join(const std::string &owner, const std::string &name) {
    return owner.empty() ? name : owner + "." + name;
  }

  // The dotted path of a module or object reached from self by attribute
  // reads ("" for self); nullopt otherwise.
  std::optional<std::string> path_of(const Value *value, int depth = 0) const {
    if (value == self_) return std::string();
    const Node *node = value->node();
    if (depth > 32 || node->kind() != c10::prim::GetAttr) return std::nullopt;
    const auto owner = path_of(node->input(0), depth + 1);
    if (!owner) return std::nullopt;
    return join(*owner, node->s(c10::attr::name));
  }

  // Records the attributes whose memory `value` may be (kValue), or whose
  // memory its elements may be (kElements).
  void sources(Value *value, Reach reach, int depth) {
    if (depth > kMaxDepth) {
      writes.unknown = true;
      return;
    }
    if (!visited_.insert({value, reach}).second) return;
    if (reach == Reach::kElements && is_container(value->type())) inserted(value, depth);
    Node *node = value->node();
    const auto kind = node->kind();
    if (kind == c10::prim::GetAttr) {
      if (is_module(value->type())) return;  // a module changes by SetAttr only
      const auto path = path_of(value);
      if (path) {
        writes.paths.insert(*path);
      } else {
        writes.unknown = true;
      }
      return;
    }
    if (kind == c10::prim::Param) return loop_carried(value, reach, depth);
    if (kind == c10::prim::ListConstruct || kind == c10::prim::TupleConstruct || kind == c10::prim::DictConstruct) {
      // A new container; its elements are what was put in.
      if (reach == Reach::kElements) {
        for (Value *item : node->inputs()) {
          sources(item, Reach::kValue, depth + 1);
          sources(item, Reach::kElements, depth + 1);
        }
      }
      return;
    }
    if (kind == c10::prim::If || kind == c10::prim::Loop) {
      const size_t i = value->offset();
      for (Block *block : node->blocks()) {
        const size_t at = kind == c10::prim::Loop ? i + 1 : i;  // a Loop's outputs start with the condition
        if (at < block->outputs().size()) sources(block->outputs()[at], reach, depth + 1);
      }
      if (kind == c10::prim::Loop && i + 2 < node->inputs().size()) sources(node->input(i + 2), reach, depth + 1);
      return;
    }
    if (kind == c10::prim::Constant) return;
    if (kind == c10::prim::unchecked_cast || kind == c10::prim::unchecked_unwrap_optional ||
        kind == c10::aten::data) {
      sources(node->input(0), reach, depth + 1);  // the same value, typed otherwise
      return;
    }
    const c10::FunctionSchema *schema = node->maybeSchema();
    if (!schema) {
      // Unpacking and casts (element of, same value); anything else is
      // followed every way.
      const bool element = kind == c10::prim::TupleUnpack || kind == c10::prim::ListUnpack ||
                           kind == c10::prim::TupleIndex;
      for (Value *input : node->inputs()) {
        if (element) {
          sources(input, Reach::kElements, depth + 1);
        } else {
          sources(input, reach, depth + 1);
          sources(input, Reach::kElements, depth + 1);
        }
      }
      return;
    }
    const auto &returns = schema->returns();
    const bool aliases = value->offset() < returns.size() && returns[value->offset()].alias_info();
    const bool returns_container = is_container(value->type());
    const auto &args = schema->arguments();
    for (size_t i = 0; i < node->inputs().size(); ++i) {
      Value *input = node->inputs()[i];
      const bool from_container = is_container(input->type());
      if (from_container && !returns_container) {
        sources(input, Reach::kElements, depth + 1);  // an element taken out
      } else if (aliases && i < args.size() && args[i].alias_info()) {
        sources(input, reach, depth + 1);  // a view, or the written argument itself
      } else if (from_container && returns_container && reach == Reach::kElements) {
        sources(input, Reach::kElements, depth + 1);  // a copy of a container shares its elements
      }
    }
  }

  // Values put into `container` after it was made (append, extend, insert,
  // setitem on a list or a dict: any op whose schema writes the container):
  // its elements may be those values too. Without this, `l.append(x);
  // l[0].add_(1)` wrote the caller's input unseen (and, on a read-only page,
  // crashed the host). Ops without a schema (unpacking, loops) only read.
  void inserted(Value *container, int depth) {
    for (const torch::jit::Use &use : container->uses()) {
      Node *user = use.user;
      const c10::FunctionSchema *schema = user->maybeSchema();
      if (!schema) continue;
      const auto &args = schema->arguments();
      const bool writes = use.offset < args.size() && args[use.offset].alias_info() &&
                          args[use.offset].alias_info()->isWrite();
      if (!writes) continue;
      for (Value *input : user->inputs()) {
        if (input == container) continue;
        sources(input, Reach::kValue, depth + 1);
        sources(input, Reach::kElements, depth + 1);
      }
    }
  }

  // A loop-carried value: its first value or the one the body hands on.
  void loop_carried(Value *value, Reach reach, int depth) {
    Node *owner = value->node()->owningBlock()->owningNode();
    if (!owner) {
      // The method's own parameters: 0 is self (its attributes are reached
      // through GetAttr), the others are the caller's arguments.
      if (value->offset() > 0) writes_arguments = true;
      return;
    }
    if (owner->kind() != c10::prim::Loop || value->offset() == 0) return;
    const size_t k = value->offset();  // 0 is the trip count
    Block *body = owner->blocks()[0];
    if (k + 1 < owner->inputs().size()) sources(owner->input(k + 1), reach, depth + 1);
    if (k < body->outputs().size()) sources(body->outputs()[k], reach, depth + 1);
  }
};

}  // namespace

Writes find_writes(const torch::jit::Module &module) {
  Writes all;
  for (const torch::jit::Method &method : module.get_methods()) {
    std::shared_ptr<torch::jit::Graph> graph = method.graph()->copy();
    torch::jit::Inline(*graph);
    Analysis analysis(graph->inputs()[0]);
    analysis.walk(graph->block());
    all.paths.insert(analysis.writes.paths.begin(), analysis.writes.paths.end());
    all.unknown |= analysis.writes.unknown;
    if (analysis.writes_arguments) all.input_writers.insert(method.name());
  }
  return all;
}

}  // namespace perfopt_shim
