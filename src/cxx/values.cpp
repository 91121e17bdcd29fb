// Value trees: perfopt's argument kinds to TorchScript IValues, guided by
// the method's schema, and results back. Rust twin: src/torch/values.rs.
#include "values.h"

#include <sstream>

#include <ATen/core/List.h>

#include "common.h"

namespace perfopt_shim {

namespace {

const char *kind_name(int32_t kind) {
  switch (kind) {
    case PSHIM_NONE: return "None";
    case PSHIM_TENSOR: return "a tensor";
    case PSHIM_INT: return "an int";
    case PSHIM_DOUBLE: return "a float";
    case PSHIM_BOOL: return "a bool";
    case PSHIM_STRING: return "a string";
    case PSHIM_LIST: return "a list";
    case PSHIM_TUPLE: return "a tuple";
    default: return "an unknown kind";
  }
}

const pshim_node &take(const pshim_node *nodes, size_t n_nodes, size_t *cursor) {
  if (*cursor >= n_nodes) throw ArgumentError("a list or tuple says it has more items than were passed");
  return nodes[(*cursor)++];
}

// Skips a subtree (after a mismatch, so that the error names the right argument).
void skip(const pshim_node *nodes, size_t n_nodes, size_t *cursor) {
  const pshim_node &node = take(nodes, n_nodes, cursor);
  if (node.kind == PSHIM_LIST || node.kind == PSHIM_TUPLE) {
    for (size_t i = 0; i < node.length; ++i) skip(nodes, n_nodes, cursor);
  }
}

[[noreturn]] void mismatch(const Where &where, const c10::TypePtr &expected, const pshim_node &node) {
  throw ArgumentError(where.text() + ": expected " + expected->annotation_str() + ", got " + kind_name(node.kind));
}

std::string string_of(const pshim_node &node) { return std::string(node.string, node.length); }

}  // namespace

std::string Where::text() const {
  if (parent != nullptr) return parent->text() + "[" + std::to_string(index) + "]";
  return "argument " + std::to_string(index) + " `" + (name ? *name : std::string("?")) + "` of " +
         (method ? method : "the method") + "()";
}

c10::IValue to_ivalue(const pshim_node *nodes, size_t n_nodes, size_t *cursor, const c10::TypePtr &expected,
                      const Where &where) {
  const size_t start = *cursor;
  const pshim_node &node = take(nodes, n_nodes, cursor);
  using c10::TypeKind;
  const c10::TypePtr &type = expected;
  switch (type->kind()) {
    case TypeKind::AnyType:
      *cursor = start;
      return to_ivalue_untyped(nodes, n_nodes, cursor);
    case TypeKind::OptionalType: {
      if (node.kind == PSHIM_NONE) return c10::IValue();
      *cursor = start;
      return to_ivalue(nodes, n_nodes, cursor, type->expectRef<c10::OptionalType>().getElementType(), where);
    }
    case TypeKind::UnionType: {
      // The first member the value fits.
      for (const auto &member : type->expectRef<c10::UnionType>().containedTypes()) {
        size_t attempt = start;
        try {
          c10::IValue value = to_ivalue(nodes, n_nodes, &attempt, member, where);
          *cursor = attempt;
          return value;
        } catch (const ArgumentError &) {
        }
      }
      *cursor = start;
      skip(nodes, n_nodes, cursor);
      mismatch(where, expected, node);
    }
    case TypeKind::NoneType:
      if (node.kind == PSHIM_NONE) return c10::IValue();
      break;
    case TypeKind::TensorType:
      if (node.kind == PSHIM_TENSOR) return *static_cast<const at::Tensor *>(node.tensor);
      break;
    case TypeKind::IntType:
      if (node.kind == PSHIM_INT) return node.int_value;
      break;
    case TypeKind::FloatType:
      if (node.kind == PSHIM_DOUBLE) return node.double_value;
      if (node.kind == PSHIM_INT) return static_cast<double>(node.int_value);
      break;
    case TypeKind::NumberType:
      if (node.kind == PSHIM_DOUBLE) return node.double_value;
      if (node.kind == PSHIM_INT) return node.int_value;
      break;
    case TypeKind::BoolType:
      if (node.kind == PSHIM_BOOL) return node.int_value != 0;
      break;
    case TypeKind::StringType:
      if (node.kind == PSHIM_STRING) return string_of(node);
      break;
    case TypeKind::ListType: {
      if (node.kind != PSHIM_LIST && node.kind != PSHIM_TUPLE) break;
      const c10::TypePtr &element = type->expectRef<c10::ListType>().getElementType();
      c10::impl::GenericList list(element);
      list.reserve(node.length);
      for (size_t i = 0; i < node.length; ++i) {
        Where item{&where, i};
        list.push_back(to_ivalue(nodes, n_nodes, cursor, element, item));
      }
      return list;
    }
    case TypeKind::TupleType: {
      if (node.kind != PSHIM_LIST && node.kind != PSHIM_TUPLE) break;
      const auto &elements = type->expectRef<c10::TupleType>().elements();
      if (node.length != elements.size()) {
        *cursor = start;
        skip(nodes, n_nodes, cursor);
        throw ArgumentError(where.text() + ": expected " + expected->annotation_str() + " with " +
                            std::to_string(elements.size()) + " items, got " + std::to_string(node.length));
      }
      std::vector<c10::IValue> items;
      items.reserve(node.length);
      for (size_t i = 0; i < node.length; ++i) {
        Where item{&where, i};
        items.push_back(to_ivalue(nodes, n_nodes, cursor, elements[i], item));
      }
      return c10::ivalue::Tuple::create(std::move(items));
    }
    default:
      *cursor = start;
      skip(nodes, n_nodes, cursor);
      throw ArgumentError(where.text() + ": the schema wants " + expected->annotation_str() +
                          ", which perfopt cannot pass (it passes tensors, int, float, bool, str, None, "
                          "and lists and tuples of them)");
  }
  *cursor = start;
  skip(nodes, n_nodes, cursor);
  mismatch(where, expected, node);
}

c10::IValue to_ivalue_untyped(const pshim_node *nodes, size_t n_nodes, size_t *cursor) {
  const pshim_node &node = take(nodes, n_nodes, cursor);
  switch (node.kind) {
    case PSHIM_NONE: return c10::IValue();
    case PSHIM_TENSOR: return *static_cast<const at::Tensor *>(node.tensor);
    case PSHIM_INT: return node.int_value;
    case PSHIM_DOUBLE: return node.double_value;
    case PSHIM_BOOL: return node.int_value != 0;
    case PSHIM_STRING: return string_of(node);
    case PSHIM_TUPLE: {
      std::vector<c10::IValue> items;
      for (size_t i = 0; i < node.length; ++i) items.push_back(to_ivalue_untyped(nodes, n_nodes, cursor));
      return c10::ivalue::Tuple::create(std::move(items));
    }
    case PSHIM_LIST: {
      std::vector<c10::IValue> items;
      for (size_t i = 0; i < node.length; ++i) items.push_back(to_ivalue_untyped(nodes, n_nodes, cursor));
      c10::TypePtr element = items.empty() ? c10::TensorType::get() : items.front().type();
      c10::impl::GenericList list(element);
      for (auto &item : items) list.push_back(std::move(item));
      return list;
    }
    default:
      throw ArgumentError(std::string("unknown value kind ") + std::to_string(node.kind));
  }
}

void send_value(const c10::IValue &value, pshim_node_sink sink, void *ctx) {
  pshim_node node{};
  if (value.isNone()) {
    node.kind = PSHIM_NONE;
    sink(ctx, &node);
  } else if (value.isTensor()) {
    const at::Tensor &tensor = value.toTensor();
    // DLPack describes strided memory only; a sparse, MKL-DNN or quantized
    // result would fail later inside libtorch with its own words.
    if (tensor.defined() && (tensor.layout() != at::kStrided || tensor.is_quantized())) {
      std::ostringstream layout;
      layout << (tensor.is_quantized() ? "a quantized" : "a non-strided") << " tensor (layout "
             << tensor.layout() << ", " << tensor.scalar_type() << ")";
      throw UnsupportedResult("the model returned " + layout.str() +
                              ", which perfopt cannot pass on: DLPack carries strided tensors only (return "
                              "x.to_dense(), or x.dequantize(), from the model)");
    }
    node.kind = PSHIM_TENSOR;
    node.tensor = new at::Tensor(tensor);
    sink(ctx, &node);
  } else if (value.isInt()) {
    node.kind = PSHIM_INT;
    node.int_value = value.toInt();
    sink(ctx, &node);
  } else if (value.isDouble()) {
    node.kind = PSHIM_DOUBLE;
    node.double_value = value.toDouble();
    sink(ctx, &node);
  } else if (value.isBool()) {
    node.kind = PSHIM_BOOL;
    node.int_value = value.toBool() ? 1 : 0;
    sink(ctx, &node);
  } else if (value.isString()) {
    const std::string &text = value.toStringRef();
    node.kind = PSHIM_STRING;
    node.string = text.data();
    node.length = text.size();
    sink(ctx, &node);
  } else if (value.isTuple()) {
    const auto &elements = value.toTupleRef().elements();
    node.kind = PSHIM_TUPLE;
    node.length = elements.size();
    sink(ctx, &node);
    for (const auto &element : elements) send_value(element, sink, ctx);
  } else if (value.isList()) {
    auto list = value.toListRef();
    node.kind = PSHIM_LIST;
    node.length = list.size();
    sink(ctx, &node);
    for (const c10::IValue &element : list) send_value(element, sink, ctx);
  } else {
    throw UnsupportedResult("the model returned " + value.type()->annotation_str() +
                            ", which perfopt cannot pass on: it passes tensors, int, float, bool, str, None, "
                            "and lists and tuples of them (return a tuple instead)");
  }
}

}  // namespace perfopt_shim
