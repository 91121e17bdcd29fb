"""Runs one benchmark configuration in its own process (libtorch's settings
are process-global) and prints one JSON line.

    python bench/worker.py CONFIG MODEL BATCH WORKDIR ITERATIONS

CONFIG: torch-eager, torch-flags, torchscript-frozen, torch-compile-default,
torch-compile-reduce-overhead, perfopt-py-<mode>, overhead. The driver passes
PERFOPT_BENCH_T0 (its clock when it started this process) for cold starts.
"""
import json
import os
import resource
import sys
import time
from pathlib import Path

T0 = float(os.environ.get("PERFOPT_BENCH_T0", time.time()))

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import models  # noqa: E402

CUDA = torch.cuda.is_available()
DEVICE = "cuda" if CUDA else "cpu"


def sync():
    if CUDA:
        torch.cuda.synchronize()


def peak_memory():
    if CUDA:
        return torch.cuda.max_memory_allocated()
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def rel_error(outputs, references):
    worst = 0.0
    for got, want in zip(outputs, references):
        got = np.asarray(got, dtype=np.float64)
        want = np.asarray(want, dtype=np.float64)
        if got.shape != want.shape:
            return float("inf")
        worst = max(worst, float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30)))
    return worst


def as_list(y):
    return list(y) if isinstance(y, (tuple, list)) else [y]


def time_calls(call, iterations):
    for _ in range(min(10, max(2, iterations // 10))):
        call()
    sync()
    times = []
    for _ in range(iterations):
        t = time.perf_counter()
        call()
        sync()
        times.append((time.perf_counter() - t) * 1e3)
    return times


def torch_config(config, name, batch, workdir, iterations):
    started = time.time()
    module, inputs = models.build(name, batch)
    inputs = [x.to(DEVICE) for x in inputs]
    module = module.to(DEVICE)
    context = torch.no_grad
    if config == "torch-flags":
        # The service's PerformanceOptimizer: TF32, cudnn.benchmark,
        # inference_mode, every core.
        torch.backends.cuda.matmul.fp32_precision = "tf32"
        torch.backends.cudnn.conv.fp32_precision = "tf32"
        torch.backends.cudnn.rnn.fp32_precision = "tf32"
        torch.backends.cudnn.benchmark = True
        torch.set_num_threads(os.cpu_count() or 1)
        context = torch.inference_mode
    elif config == "torchscript-frozen":
        with torch.no_grad():
            module = torch.jit.freeze(torch.jit.trace(module, tuple(inputs), check_trace=False))
        context = torch.inference_mode
    elif config.startswith("torch-compile"):
        mode = config[len("torch-compile-"):]
        module = torch.compile(module, mode=mode)
        context = torch.inference_mode
    with context():
        compile_started = time.time()
        first = as_list(module(*inputs))
        sync()
        first_at = time.time()
        outputs = [o.float().cpu().numpy() for o in first]
        times = time_calls(lambda: module(*inputs), iterations)
    return {
        "cold_start_process_ms": (first_at - T0) * 1e3,
        "cold_start_ms": (first_at - started) * 1e3,
        "compile_and_first_ms": (first_at - compile_started) * 1e3,
        "outputs": outputs,
        "times": times,
    }


def perfopt_config(mode, name, batch, workdir, iterations):
    import perfopt

    started = time.time()
    _, inputs = models.build(name, batch)
    inputs = [x.to(DEVICE) for x in inputs]  # DLPack views: no copy on the device
    optimizer = perfopt.Optimizer(read_environment=False)
    model = optimizer.load(str(Path(workdir) / f"{name}-b{batch}.pt"))
    model.compile(mode, inputs)
    first = model.run(*inputs)
    first_at = time.time()
    times = time_calls(lambda: model.run(*inputs, output="dlpack"), iterations)
    chosen = model.report()["compile"]["chosen"]
    model.close()
    optimizer.close()
    return {
        "cold_start_process_ms": (first_at - T0) * 1e3,
        "cold_start_ms": (first_at - started) * 1e3,
        "outputs": first,
        "times": times,
        "chosen": chosen,
    }


def overhead(workdir, iterations):
    """perfopt's cost per call above the model's own time, from Python, and
    the same TorchScript model's forward in PyTorch for comparison."""
    import perfopt

    path = str(Path(workdir) / "tiny-b1.pt")
    x = np.ones((1, 4), np.float32)
    with perfopt.Optimizer(read_environment=False) as optimizer, optimizer.load(path) as model:
        model.compile("none")
        walls = time_calls(lambda: model.run(x), iterations)
        inside = model.report()["latency"]["mean_ms"]
    scripted = torch.jit.load(path)
    tx = torch.ones(1, 4)
    with torch.inference_mode():
        torch_times = time_calls(lambda: scripted(tx), iterations)
    return {
        "python_call_us": float(np.mean(walls)) * 1e3,
        "model_us": inside * 1e3,
        "python_overhead_us": (float(np.mean(walls)) - inside) * 1e3,
        "torch_forward_us": float(np.mean(torch_times)) * 1e3,
    }


def main():
    config, name, batch, workdir, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5])
    if config == "overhead":
        print(json.dumps(overhead(workdir, iterations)))
        return
    if config.startswith("perfopt-py-"):
        result = perfopt_config(config[len("perfopt-py-"):], name, batch, workdir, iterations)
    else:
        result = torch_config(config, name, batch, workdir, iterations)
    references = [np.load(Path(workdir) / f"{name}-b{batch}.output{i}.npy") for i in range(len(result["outputs"]))]
    times = sorted(result.pop("times"))
    result["relative_error"] = rel_error(result.pop("outputs"), references)
    result["p50_ms"] = times[len(times) // 2]
    result["p99_ms"] = times[min(len(times) - 1, int(len(times) * 0.99))]
    result["throughput"] = batch * 1e3 / float(np.mean(times))
    result["calls"] = len(times)
    result["peak_memory_bytes"] = peak_memory()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
