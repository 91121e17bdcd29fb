// Value trees between Rust and libtorch (see pshim_node in shim.h).
#pragma once

#include <ATen/core/ivalue.h>
#include <ATen/core/jit_type.h>

#include <string>
#include <vector>

#include "shim.h"

namespace perfopt_shim {

// Where a value sits in a call's arguments, for messages; built into text
// only when a value does not fit (the hot path allocates nothing).
struct Where {
  const Where *parent = nullptr;
  size_t index = 0;           // the argument, or the item within the parent
  const char *method = nullptr;  // set on the argument's own Where
  const std::string *name = nullptr;
  std::string text() const;
};

// Reads one argument tree starting at nodes[*cursor] and converts it to
// `expected` (the schema's type): ints widen to floats, lists and tuples
// convert into each other, None fits an Optional. Throws ArgumentError naming
// `where` when the value does not fit.
c10::IValue to_ivalue(const pshim_node *nodes, size_t n_nodes, size_t *cursor, const c10::TypePtr &expected,
                      const Where &where);

// The tree as it is (no schema): tensors, numbers, strings, None, tuples and
// lists (lists typed by their first element). For engines without schemas.
c10::IValue to_ivalue_untyped(const pshim_node *nodes, size_t n_nodes, size_t *cursor);

// Sends a result to `sink` in prefix order. Dicts, objects and other kinds
// throw, naming what the model returned.
void send_value(const c10::IValue &value, pshim_node_sink sink, void *ctx);

// The tensors of a tensor-only node list (each node PSHIM_TENSOR).
// Inline: the separately loaded CUDA part (cuda.cpp) uses it too.
inline std::vector<at::Tensor> tensors_of_ptrs(void *const *inputs, size_t n) {
  std::vector<at::Tensor> tensors;
  tensors.reserve(n);
  for (size_t i = 0; i < n; ++i) tensors.push_back(*static_cast<const at::Tensor *>(inputs[i]));
  return tensors;
}

}  // namespace perfopt_shim
