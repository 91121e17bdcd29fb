#!/usr/bin/env bash
# On the device machine: point the loader at that machine's torch 2.11 and
# CUDA libraries and run the checks with the library and CLI built here and
# carried in .device/ (see the README's GPU section). Builds nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
site=$(python3 -c 'import torch, os; print(os.path.dirname(os.path.dirname(torch.__file__)))')
export LD_LIBRARY_PATH="$site/torch/lib:$site/nvidia/cu13/lib:${LD_LIBRARY_PATH:-}"
export PERFOPT_LIBRARY="$PWD/.device/lib/libperfopt.so"
export PERFOPT_CLI="$PWD/.device/bin/perfopt"
"$PERFOPT_CLI" info
PYTHONUNBUFFERED=1 python3 tests/gpu/check_gpu.py
