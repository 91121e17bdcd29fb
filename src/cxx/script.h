// The TorchScript module handle, shared by script.cpp (load, call) and
// script_state.cpp (the state methods change).
#pragma once

#include <torch/script.h>

#include "shim.h"

struct pshim_script {
  torch::jit::Module module;
  c10::Device device;
};
