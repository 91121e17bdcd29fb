// The TorchScript module handle, shared by script.cpp (load, call) and
// script_state.cpp (the state methods change).
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
