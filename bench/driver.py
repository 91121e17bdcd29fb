"""perfopt against PyTorch eager, the service's flags and torch.compile, side
by side, each configuration in its own process.

    python bench/driver.py --perfopt build/bin/perfopt --overhead build/bench/overhead \
        [--iterations 30] [--models vocoder,encoder] [--batches 1,4] [--out docs/benchmarks]

Writes OUT/<device>.json, OUT/<device>.md and OUT/<device>.png.
"""
import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "bindings" / "python"))
import models  # noqa: E402

PERFOPT_MODES = ["none", "default", "reduce-overhead", "max-autotune"]


def export(workdir: Path, names, batches, device):
    """TorchScript files, inputs and fp32 eager reference outputs."""
    workdir.mkdir(parents=True, exist_ok=True)
    for name in names + ["tiny"]:
        for batch in batches if name != "tiny" else [1]:
            module, inputs = models.build(name, batch)
            with torch.no_grad():
                traced = torch.jit.trace(module, tuple(inputs), check_trace=False)
                traced.save(str(workdir / f"{name}-b{batch}.pt"))
                module = module.to(device)
                if device == "cuda":
                    torch.backends.cuda.matmul.fp32_precision = "ieee"
                    torch.backends.cudnn.conv.fp32_precision = "ieee"
                    torch.backends.cudnn.rnn.fp32_precision = "ieee"
                outputs = module(*[x.to(device) for x in inputs])
            outputs = list(outputs) if isinstance(outputs, (tuple, list)) else [outputs]
            if name != "tiny" and not (workdir / f"{name}-b{batch}.pt2").exists():
                from perfopt.export import ExportError, export as to_package

                try:  # the same weights as an AOTInductor package (tens of seconds per model)
                    to_package(module.cpu(), inputs, str(workdir / f"{name}-b{batch}.pt2"), dynamic_batch=False,
                               device=device)
                except ExportError as err:
                    print(f"{name} b{batch}: no package: {err.reason}", flush=True)
            for i, x in enumerate(inputs):
                np.save(workdir / f"{name}-b{batch}.input{i}.npy", x.numpy())
            for i, y in enumerate(outputs):
                np.save(workdir / f"{name}-b{batch}.output{i}.npy", y.float().cpu().numpy())


def run_worker(config, name, batch, workdir, iterations, timeout):
    env = dict(os.environ, PERFOPT_BENCH_T0=repr(time.time()))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT / "bindings" / "python"), env.get("PYTHONPATH")]))
    cmd = [sys.executable, str(HERE / "worker.py"), config, name, str(batch), str(workdir), str(iterations)]
    return finish(subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env))


def run_perfopt_c(binary, mode, name, batch, workdir, iterations, timeout):
    stem = workdir / f"{name}-b{batch}"
    n_in = len(list(workdir.glob(f"{name}-b{batch}.input*.npy")))
    n_out = len(list(workdir.glob(f"{name}-b{batch}.output*.npy")))
    # "package": the AOTInductor package of the same weights, run as compiled.
    model, mode = (f"{stem}.pt2", "default") if mode == "package" else (f"{stem}.pt", mode)
    if not Path(model).exists():
        return {"error": f"{model}: not exported (see the export step's output)"}
    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        cmd = [binary, "bench", model, "--mode", mode, "--iterations", str(iterations), "--json", out.name, "--no-env"]
        for i in range(n_in):
            cmd += ["--input-file", f"{stem}.input{i}.npy"]
        for i in range(n_out):
            cmd += ["--reference", f"{stem}.output{i}.npy"]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            return {"error": (proc.stderr or proc.stdout).strip()[-400:]}
        row = json.loads(Path(out.name).read_text())["rows"][0]
    return {
        "cold_start_process_ms": (row["first_result_unix_s"] - t0) * 1e3,
        "cold_start_ms": row["cold_start_ms"],
        "compile_and_first_ms": row["compile_ms"] + row["first_run_ms"],
        "p50_ms": row["latency"]["p50_ms"],
        "p99_ms": row["latency"]["p99_ms"],
        # Saved arrays give the CLI no batch: samples/s from calls/s here.
        "throughput": row["throughput_samples_per_s"] or batch * row["throughput_calls_per_s"],
        "peak_memory_bytes": row["peak_memory_bytes"],
        "relative_error": row["relative_error"],
        "calls": row["latency"]["samples"],
        "chosen": row["chosen"],
    }


def finish(proc):
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip()[-400:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def configs(device):
    torch_configs = ["torch-eager", "torch-flags", "torchscript-frozen", "torch-compile-default"]
    if device == "cuda":
        torch_configs.append("torch-compile-reduce-overhead")
    return (torch_configs + [f"perfopt-c-{m}" for m in PERFOPT_MODES] + ["perfopt-c-package"]
            + [f"perfopt-py-{m}" for m in PERFOPT_MODES])


def fmt(v, digits=2):
    return "-" if v is None else f"{v:.{digits}f}"


def markdown(results, meta):
    lines = [
        f"# perfopt benchmark: {meta['device_name']}",
        "",
        f"{meta['date']}; {meta['device_name']} ({meta['cores']} cores); torch {meta['torch']}; "
        f"{meta['perfopt']}; {meta['iterations']} timed calls per configuration, one synchronisation per call; "
        f"every configuration in its own process, {meta.get('repeats', 1)} process(es) each, the fastest kept "
        "(orders alternate between repeats).",
        "",
        "p50 latency in ms, and in brackets the ratio to eager fp32 (lower is better). **Bold**: the best "
        "perfopt configuration when it beats the best PyTorch one. perfopt's *chosen* mode is max-autotune "
        "(measured per model). Errors are max|y - y_ref| / max|y_ref| against fp32 eager.",
        "",
    ]
    cfgs = meta["configs"]
    torch_cfgs = [c for c in cfgs if not c.startswith("perfopt")]
    perfopt_cfgs = [c for c in cfgs if c.startswith("perfopt")]
    for batch in meta["batches"]:
        lines += [f"## Batch {batch}", "", "| model | " + " | ".join(cfgs) + " |", "|---" * (len(cfgs) + 1) + "|"]
        for name in meta["models"]:
            rows = results[name][str(batch)]
            eager = rows.get("torch-eager", {}).get("p50_ms")
            best_torch = min((rows[c]["p50_ms"] for c in torch_cfgs if "p50_ms" in rows.get(c, {})), default=None)
            best_perfopt = min((rows[c]["p50_ms"] for c in perfopt_cfgs if "p50_ms" in rows.get(c, {})), default=None)
            cells = []
            for c in cfgs:
                r = rows.get(c, {})
                if "p50_ms" not in r:
                    cells.append("failed" if "error" in r else "-")
                    continue
                text = f"{r['p50_ms']:.3f} ({r['p50_ms'] / eager:.2f})" if eager else f"{r['p50_ms']:.3f}"
                if c in perfopt_cfgs and r["p50_ms"] == best_perfopt and best_torch and best_perfopt <= best_torch:
                    text = f"**{text}**"
                cells.append(text)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines += ["", f"### Batch {batch}: cold start, error, memory", "",
                  "| model | configuration | process start to first result (ms) | load + compile + first (ms) | "
                  "p99 (ms) | throughput (samples/s) | peak memory (MiB) | rel. error | perfopt chose |",
                  "|---|---|---|---|---|---|---|---|---|"]
        for name in meta["models"]:
            for c in cfgs:
                r = results[name][str(batch)].get(c, {})
                if "p50_ms" not in r:
                    lines.append(f"| {name} | {c} | {r.get('error', '-')[:80]!r} | | | | | | |")
                    continue
                lines.append(
                    f"| {name} | {c} | {fmt(r.get('cold_start_process_ms'), 0)} | {fmt(r.get('cold_start_ms'), 0)} | "
                    f"{r['p99_ms']:.3f} | {r['throughput']:.1f} | {r['peak_memory_bytes'] / 2**20:.0f} | "
                    f"{r['relative_error']:.1e} | {r.get('chosen', '')} |"
                )
        lines.append("")
    lines += ["## Targets", ""]
    for batch in meta["batches"]:
        for name in meta["models"]:
            rows = results[name][str(batch)]
            chosen = rows.get("perfopt-c-max-autotune", {}).get("p50_ms")
            eager = rows.get("torch-eager", {}).get("p50_ms")
            best_torch = min((rows[c]["p50_ms"] for c in torch_cfgs if "p50_ms" in rows.get(c, {})), default=None)
            if chosen is None or best_torch is None:
                lines.append(f"- {name}, batch {batch}: not measured")
                continue
            vs_best = (chosen / best_torch - 1) * 100
            vs_eager = (chosen / eager - 1) * 100 if eager else 0
            verdict = "met" if chosen <= best_torch else f"missed by {vs_best:.1f}%"
            lines.append(f"- {name}, batch {batch}: chosen mode {chosen:.3f} ms vs best PyTorch {best_torch:.3f} ms "
                         f"({verdict}); vs eager {vs_eager:+.1f}%")
    if meta["device"] == "cpu":
        lines += ["", "On this CPU machine (a shared 2-core virtual machine) the same configuration varies by up to "
                  "about 25% from one process to the next: each configuration keeps the fastest of its processes, and "
                  "differences smaller than that are noise. perfopt's max-autotune ranks its candidates inside one "
                  "process, in interleaved rounds. perfopt's CPU optimization raises glibc malloc's mmap and trim "
                  "thresholds (src/allocator.rs); the PyTorch configurations run with glibc's defaults, as a PyTorch "
                  "process does. Before that setting, the vocoder ran 20-30% slower in perfopt than TorchScript "
                  "traced + frozen in a PyTorch process although, timed in one process with interleaved calls, the "
                  "two modules ran at the same speed: the difference was the pages malloc handed back to the kernel "
                  "and faulted in again on every call, which depends on a process's allocation history."]
    o = meta.get("overhead", {})
    lines += ["", "## Call overhead (tiny model, 1x4 input)", "",
              f"- from C: {fmt(o.get('c_overhead_us'))} us per call above the model's own "
              f"{fmt(o.get('model_us'))} us (target: under 5 us)",
              f"- from Python (ctypes + DLPack): {fmt(o.get('python_overhead_us'))} us per call above the model's "
              f"own time (target: under 20 us)",
              f"- the same TorchScript forward called from PyTorch in Python: {fmt(o.get('torch_forward_us'))} us", ""]
    return "\n".join(lines)


def chart(results, meta, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = meta["configs"]
    fig, axes = plt.subplots(len(meta["batches"]), len(meta["models"]), figsize=(4 * len(meta["models"]), 4 * len(meta["batches"])), squeeze=False)
    for i, batch in enumerate(meta["batches"]):
        for j, name in enumerate(meta["models"]):
            rows = results[name][str(batch)]
            values = [rows.get(c, {}).get("p50_ms", 0) for c in cfgs]
            colors = ["tab:orange" if c.startswith("perfopt") else "tab:blue" for c in cfgs]
            ax = axes[i][j]
            ax.barh(range(len(cfgs)), values, color=colors)
            ax.set_yticks(range(len(cfgs)))
            ax.set_yticklabels(cfgs if j == 0 else [""] * len(cfgs), fontsize=7)
            ax.invert_yaxis()
            ax.set_title(f"{name}, batch {batch}", fontsize=9)
            ax.set_xlabel("p50 ms", fontsize=8)
    fig.suptitle(f"perfopt vs PyTorch on {meta['device_name']} ({meta['date']})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--perfopt", required=True)
    parser.add_argument("--overhead", required=True)
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--models", default=",".join(models.MODELS))
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks"))
    parser.add_argument("--workdir", default=str(ROOT / "build" / "bench"))
    parser.add_argument("--timeout", type=int, default=900)
    parser.add_argument("--repeats", type=int, default=1,
                        help="processes per configuration; the fastest is kept (drift and neighbours' load)")
    parser.add_argument("--render-only", action="store_true", help="rewrite the .md and .png from the .json")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.render_only:
        saved = json.loads((Path(args.out) / f"{device}.json").read_text())
        (Path(args.out) / f"{device}.md").write_text(markdown(saved["results"], saved["meta"]))
        chart(saved["results"], saved["meta"], Path(args.out) / f"{device}.png")
        return
    names = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    workdir = Path(args.workdir)
    export(workdir, names, batches, device)
    cfgs = configs(device)
    results = {}
    for name in names:
        results[name] = {}
        for batch in batches:
            rows = results[name][str(batch)] = {}
            runs = {c: [] for c in cfgs}
            # Every configuration runs once per repeat, the order reversed on
            # every other repeat so that a machine's drift over minutes favours
            # no configuration; each keeps its fastest process (the same rule
            # for all), and the JSON keeps every run's p50.
            for repeat in range(args.repeats):
                for c in cfgs if repeat % 2 == 0 else reversed(cfgs):
                    started = time.time()
                    try:
                        if c.startswith("perfopt-c-"):
                            r = run_perfopt_c(args.perfopt, c[len("perfopt-c-"):], name, batch, workdir, args.iterations,
                                              args.timeout)
                        else:
                            r = run_worker(c, name, batch, workdir, args.iterations, args.timeout)
                    except subprocess.TimeoutExpired:
                        r = {"error": f"timed out after {args.timeout} s"}
                    runs[c].append(r)
                    print(f"{name:>12} b{batch} {c:<32} "
                          + (f"p50 {r['p50_ms']:9.3f} ms  err {r['relative_error']:.1e}" if "p50_ms" in r
                             else f"FAILED {r['error'][:120]}")
                          + f"  ({time.time() - started:.0f} s)", flush=True)
            for c in cfgs:
                timed = [r for r in runs[c] if "p50_ms" in r]
                rows[c] = dict(min(timed, key=lambda r: r["p50_ms"])) if timed else runs[c][-1]
                rows[c]["p50_ms_runs"] = [r["p50_ms"] for r in timed]
    overhead = {}
    proc = subprocess.run([args.overhead, str(workdir / "tiny-b1.pt"), "20000"], capture_output=True, text=True)
    if proc.returncode == 0:
        overhead.update(json.loads(proc.stdout))
    overhead.update(run_worker("overhead", "tiny", 1, workdir, 5000, args.timeout))
    device_name = torch.cuda.get_device_name(0) if device == "cuda" else (platform.processor() or platform.machine())
    if device == "cpu":
        try:
            device_name = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
        except (OSError, StopIteration):
            pass
    meta = {
        "date": datetime.date.today().isoformat(),
        "device": device,
        "device_name": device_name,
        "cores": os.cpu_count(),
        "torch": torch.__version__,
        "perfopt": subprocess.run([args.perfopt, "version"], capture_output=True, text=True).stdout.strip(),
        "iterations": args.iterations,
        "repeats": args.repeats,
        "models": names,
        "batches": batches,
        "configs": cfgs,
        "overhead": overhead,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{device}.json").write_text(json.dumps({"meta": meta, "results": results}, indent=1))
    (out / f"{device}.md").write_text(markdown(results, meta))
    try:
        chart(results, meta, out / f"{device}.png")
    except ImportError:
        print("matplotlib is missing: no chart", file=sys.stderr)
    print(f"wrote {out}/{device}.json, .md, .png")


if __name__ == "__main__":
    main()
