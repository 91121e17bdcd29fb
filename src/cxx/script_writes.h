// Which attributes a TorchScript module's methods change, found from their
// graphs before anything runs (used by script.cpp and script_state.cpp; no
// C ABI of its own).
#pragma once

#include <torch/csrc/jit/api/module.h>

#include <set>
#include <string>

namespace perfopt_shim {

struct Writes {
  // Dotted attribute paths a method writes ("encoder.state"), parameters
  // included.
  std::set<std::string> paths;
  // A write whose target could not be named, or code that could not be
  // analysed (a fork, an interface call): every attribute counts as state.
  bool unknown = false;
  // Methods that may write the memory of one of their arguments (a tensor
  // the caller passed, or an element of a list it passed): their callers'
  // inputs are borrowed read-only, so such a method is given copies.
  // `unknown` counts for every method.
  std::set<std::string> input_writers;

  bool any() const { return unknown || !paths.empty(); }
  bool writes_inputs(const std::string &method) const { return unknown || input_writers.count(method) > 0; }
};

// The writes of every method of `module`, with the calls to its submodules
// inlined, leaving out what runs only in training mode (models run in eval
// mode). Conservative: an unsure answer is a write.
Writes find_writes(const torch::jit::Module &module);

}  // namespace perfopt_shim
