"""Every format side by side, in one process: each reference model exported
as a TorchScript file, an AOTInductor package, an ONNX model and an
ExecuTorch program (exported in a process of its own, within a time limit:
its lowering of a recurrent model can run for many minutes), each loaded
by perfopt and compiled with max-autotune (which measures its forms and the
thread count), next to PyTorch eager and onnxruntime's own Python API at the
thread count perfopt chose for the ONNX model. Timed in interleaved rounds
(every contender once per round, in turn), so that a machine's drifting speed
does not rank them.

Also: the streaming VAD step at 1 and 2 threads while other processes keep
the cores busy (perfopt's thread count per model), and the per-call cost of
perfopt's Python binding over onnxruntime's on a tiny ONNX model.

    python bench/formats.py [--models vad,speaker,...] [--batches 1,4] [--seconds 6]

Writes docs/benchmarks/formats.json and docs/benchmarks/formats.md.
"""
import argparse
import json
import multiprocessing
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
import perfopt  # noqa: E402
import perfopt._bundle  # noqa: E402
import perfopt.export  # noqa: E402

MODELS = ["vad", "speaker", "text_encoder", "small_encoder", "vocoder"]


# The bench's names for perfopt.export's bundle forms.
FORMS = {"torchscript": "torchscript", "package": "aotinductor", "onnx": "onnx"}
# The longest an ExecuTorch export may take here.
EXECUTORCH_EXPORT_LIMIT_S = 300


def export_executorch(workdir: Path, name: str):
    """`name` as an ExecuTorch program (the same weights: models.build is
    seeded), exported in a fresh process killed after
    EXECUTORCH_EXPORT_LIMIT_S; its path, or the reason it failed."""
    path = workdir / f"{name}.pte"
    code = (f"import sys; sys.path[:0] = [{str(HERE)!r}, {str(ROOT / 'bindings' / 'python')!r}]; "
            f"import models, perfopt.export; module, inputs = models.build({name!r}, 2); "
            f"perfopt.export.export(module, inputs, {str(path)!r})")
    started = time.perf_counter()
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             timeout=EXECUTORCH_EXPORT_LIMIT_S)
    except subprocess.TimeoutExpired:
        return f"export failed: ExecuTorch's lowering took over {EXECUTORCH_EXPORT_LIMIT_S} s"
    if run.returncode != 0:
        errors = [line for line in run.stderr.splitlines() if "Error:" in line]
        return f"export failed: {errors[-1].split('Error: ', 1)[-1] if errors else run.returncode}"
    print(f"  {name}: ExecuTorch program exported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return path


def export_all(workdir: Path, name: str, formats):
    """`name` exported once as a bundle (perfopt.export: dynamic batch, from
    a batch-2 example) holding each of `formats`; {format: its file, or the
    reason it failed; "bundle": the folder}."""
    module, inputs = models.build(name, 2)
    folder = workdir / f"{name}.perfopt"
    started = time.perf_counter()
    if not [f for f in formats if f in FORMS]:  # ExecuTorch alone
        return {"executorch": export_executorch(workdir, name)}
    try:
        # In the order perfopt.export lists them by default (ONNX first, the
        # model as loaded): the order given decides which form loads first,
        # and a form narrower than the first (ONNX, its non-batch sizes fixed
        # by torch.export, after a traced TorchScript that takes any) is
        # never measured in its stead.
        wanted = [FORMS[f] for f in formats if f in FORMS]
        in_order = [f for f in perfopt._bundle.DEFAULT_FORMATS if f in wanted]
        report = perfopt.export.export(module, inputs, str(folder), formats=in_order)
    except perfopt.export.ExportError as err:
        return {fmt: f"export failed: {err.reason}" for fmt in formats if fmt in FORMS}
    print(f"  {name}: exported in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    made = {form["format"]: folder / form["file"] for form in report["forms"]}
    failed = {form["format"]: form["reason"] for form in report["failed"]}
    out = {fmt: made.get(FORMS[fmt], f"export failed: {failed.get(FORMS[fmt], '?')}") for fmt in formats
           if fmt in FORMS}
    if "executorch" in formats:
        out["executorch"] = export_executorch(workdir, name)
    if len(made) > 1:
        out["bundle"] = folder
    return out


def as_numpy(inputs):
    return [x.numpy() for x in inputs]


def machine_line():
    """The date, processor, cores and versions a table was measured with."""
    return (f"{time.strftime('%Y-%m-%d')}; {platform.processor() or platform.machine()} ({os.cpu_count()} cores); "
            f"torch {torch.__version__}; {perfopt.version()}")


def interleaved(contenders, seconds, min_rounds=15, max_rounds=2000):
    """p50 and spread (q25-q75 as a share of p50) per contender, timed in
    rounds (the order rotating), each call's first runs being warm-up, each
    timed call after an untimed one of the same contender."""
    for call in contenders.values():
        for _ in range(3):
            call()
    times = {name: [] for name in contenders}
    started = time.perf_counter()
    rounds = 0
    order = list(contenders.items())
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - started < seconds):
        # Each contender runs once untimed before its timed call: the engine
        # that ran before it may still have threads spinning (GNU OpenMP's,
        # libtorch's, for milliseconds after a call; onnxruntime's own API by
        # default after a run), which made the next call on another engine's
        # threads up to 2x slower here. Timed after itself, each contender
        # is timed as a model called again and again is.
        shift = rounds % len(order)
        for name, call in order[shift:] + order[:shift]:
            call()
            t = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - t)
        rounds += 1
    out = {}
    for name, ts in times.items():
        q25, p50, q75 = np.percentile(ts, [25, 50, 75])
        out[name] = {"p50_ms": p50 * 1e3, "noise": (q75 - q25) / p50, "rounds": rounds}
    return out


def measure(opt, name, batch, paths, seconds):
    import onnxruntime

    module, inputs = models.build(name, batch)
    arrays = as_numpy(inputs)
    row = {"model": name, "batch": batch, "contenders": {}, "chosen": {}, "errors": {}}
    calls = {}
    with torch.inference_mode():
        expected = module(*inputs)
    expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
    calls["pytorch eager"] = lambda: module(*inputs)
    loaded = []
    onnx_threads = None
    for fmt, path in paths.items():
        if not isinstance(path, Path):
            row["chosen"][f"perfopt {fmt}"] = path
            continue
        model = opt.load(str(path), f"{name}-{fmt}")
        loaded.append(model)
        # The bundle measures every form's candidates: the forms' budgets together.
        model.set_options(tuning_budget_ms=8000 * (len(FORMS) if fmt == "bundle" else 1))
        model.compile("max-autotune", arrays)
        report = model.report()
        threads = report["engine"].get("threads")
        row["chosen"][f"perfopt {fmt}"] = report["compile"]["chosen"]
        if fmt == "onnx":
            onnx_threads = threads
        got = model.run(*arrays)
        row["errors"][f"perfopt {fmt}"] = max(
            float(np.abs(g - w).max() / max(np.abs(w).max(), 1e-30)) for g, w in zip(got, expected))
        calls[f"perfopt {fmt}"] = (lambda m: lambda: m.run(*arrays))(model)
    if isinstance(paths.get("onnx"), Path):
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = onnx_threads or 0
        session = onnxruntime.InferenceSession(str(paths["onnx"]), options, providers=["CPUExecutionProvider"])
        feed = {i.name: a for i, a in zip(session.get_inputs(), arrays)}
        calls[f"onnxruntime API ({onnx_threads} threads)"] = lambda: session.run(None, feed)
    with torch.inference_mode():
        row["contenders"] = interleaved(calls, seconds)
    for model in loaded:
        model.close()
    return row


def busy(stop):
    while not stop.is_set():
        sum(i * i for i in range(10000))


def under_load(opt, paths, seconds):
    """The streaming VAD step at 1 and 2 threads while two other processes
    keep both cores busy."""
    _, inputs = models.build("vad", 1)
    arrays = as_numpy(inputs)
    calls, loaded = {}, []
    for fmt in ("torchscript", "onnx"):
        if not isinstance(paths.get(fmt), Path):
            continue
        for threads in (1, 2):
            model = opt.load(str(paths[fmt]), f"vad-{fmt}-{threads}")
            model.set_options(threads=threads)
            model.compile("default", arrays)
            loaded.append(model)
            calls[f"perfopt {fmt} at {threads} thread{'s' if threads > 1 else ''}"] = (
                lambda m: lambda: m.run(*arrays))(model)
    stop = multiprocessing.Event()
    hogs = [multiprocessing.Process(target=busy, args=(stop,)) for _ in range(2)]
    for h in hogs:
        h.start()
    try:
        time.sleep(0.5)
        result = interleaved(calls, seconds)
    finally:
        stop.set()
        for h in hogs:
            h.join()
    for model in loaded:
        model.close()
    return result


def call_cost(opt, workdir):
    """perfopt's Python binding against onnxruntime's, on a 4x4 Linear."""
    import onnxruntime

    module, inputs = models.build("tiny", 1)
    path = workdir / "tiny.onnx"
    perfopt.export.export(module, [torch.randn(2, 4)], str(path))
    x = inputs[0].numpy()
    model = opt.load(str(path))
    model.set_options(threads=1)
    model.compile("default", [x])
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    result = interleaved({"perfopt": lambda: model.run(x), "onnxruntime": lambda: session.run(None, {name: x})},
                         3, min_rounds=2000, max_rounds=20000)
    model.close()
    return {k: v["p50_ms"] * 1e3 for k, v in result.items()}


def markdown(results):
    lines = [
        "# Every format side by side (CPU)",
        "",
        results["machine"],
        "",
        "Each model is exported once from the same weights as a bundle (`perfopt.export` to `NAME.perfopt`) "
        "holding a TorchScript file (traced), an AOTInductor package, an ONNX model and an ExecuTorch program "
        "(XNNPACK, batch up to 64, exported on its own: not in the bundle); each form is loaded "
        "by perfopt's Python binding and compiled with max-autotune, which measures the engine's forms at "
        "each thread count (1 and 2 here) and keeps the fastest within its error tolerance, and so is the "
        "bundle itself (*perfopt bundle*: max-autotune across its forms, its choice in the `chose` "
        "column). "
        "ExecuTorch's thread pool is one per process (both cores), so its row has no thread count. PyTorch eager and onnxruntime's own Python API "
        "(at the thread count perfopt chose for the ONNX model) run beside them in the same process. p50 "
        "latency in ms over interleaved rounds (each contender once per round, in turn, timed on its second "
        "call: the first takes the spin of the engine before it), with in brackets "
        "the ratio to PyTorch eager (lower is faster); noise is the interquartile range over p50. `make "
        "bench` runs it (`python bench/formats.py`).",
        "",
    ]
    bundle_rows = [r for r in results["rows"] if "perfopt bundle" in r["contenders"]]
    if bundle_rows:
        lines += ["## perfopt's choice from the bundle against the fastest contender", "",
                  "| model | batch | fastest contender | its p50 ms | the bundle chose | its p50 ms | ratio |",
                  "|---|---|---|---|---|---|---|"]
        for row in bundle_rows:
            others = {n: c for n, c in row["contenders"].items() if n != "perfopt bundle"}
            best, fastest = min(others.items(), key=lambda kv: kv[1]["p50_ms"])
            mine = row["contenders"]["perfopt bundle"]["p50_ms"]
            lines.append(f"| {row['model']} | {row['batch']} | {best} | {fastest['p50_ms']:.3f} | "
                         f"{row['chosen'].get('perfopt bundle', '')} | {mine:.3f} | {mine / fastest['p50_ms']:.2f} |")
        lines.append("")
    for row in results["rows"]:
        lines += [f"## {row['model']}, batch {row['batch']}", "",
                  "| contender | p50 ms (vs eager) | noise | chose | rel. error vs eager |", "|---|---|---|---|---|"]
        base = row["contenders"]["pytorch eager"]["p50_ms"]
        for name, c in sorted(row["contenders"].items(), key=lambda kv: kv[1]["p50_ms"]):
            chose = row["chosen"].get(name, "")
            error = row["errors"].get(name)
            lines.append(f"| {name} | {c['p50_ms']:.3f} ({c['p50_ms'] / base:.2f}) | {c['noise']:.0%} | {chose} | "
                         f"{'' if error is None else f'{error:.1e}'} |")
        for name, reason in row["chosen"].items():
            if name not in row["contenders"]:
                lines.append(f"| {name} | - | - | {reason} | |")
        lines.append("")
    if results.get("under_load"):
        lines += ["## The streaming VAD step with the cores busy", "",
                  "Two other processes keep both cores busy; one 512-sample chunk per call, batch 1.", "",
                  "| contender | p50 ms | noise |", "|---|---|---|"]
        for name, c in results["under_load"].items():
            lines.append(f"| {name} | {c['p50_ms']:.3f} | {c['noise']:.0%} |")
        lines.append("")
    if results.get("call_cost_us"):
        cost = results["call_cost_us"]
        lines += ["## Per-call cost from Python (a 4x4 Linear as ONNX, 1 thread)", "",
                  f"- perfopt's binding: {cost['perfopt']:.1f} us per call",
                  f"- onnxruntime's own API: {cost['onnxruntime']:.1f} us per call", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--formats", default="torchscript,package,onnx,executorch")
    parser.add_argument("--seconds", type=float, default=6.0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "formats"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    formats = args.formats.split(",")
    results = {
        "machine": machine_line(),
        "rows": [],
    }
    with tempfile.TemporaryDirectory() as tmp, perfopt.Optimizer("cpu", read_environment=False) as opt:
        workdir = Path(tmp)
        exported = {}
        for name in args.models.split(","):
            exported[name] = export_all(workdir, name, formats)
            for batch in [int(b) for b in args.batches.split(",")]:
                print(f"measuring {name} at batch {batch}", file=sys.stderr)
                results["rows"].append(measure(opt, name, batch, exported[name], args.seconds))
        if "vad" in exported:
            results["under_load"] = under_load(opt, exported["vad"], args.seconds)
        if "onnx" in formats:
            results["call_cost_us"] = call_cost(opt, workdir)
    Path(args.out + ".json").write_text(json.dumps(results, indent=2, default=str))
    text = markdown(results)
    Path(args.out + ".md").write_text(text)
    into_cpu_md(text)
    print(text)


def into_cpu_md(text):
    """The tables, also in docs/benchmarks/cpu.md (between its markers)."""
    cpu = ROOT / "docs" / "benchmarks" / "cpu.md"
    begin, end = "<!-- formats:begin -->", "<!-- formats:end -->"
    body = text.split("\n", 1)[1].replace("\n## ", "\n### ")
    section = f"{begin}\n{body.strip()}\n{end}"
    current = cpu.read_text()
    if begin in current and end in current:
        current = current[: current.index(begin)] + section + current[current.index(end) + len(end):]
    else:
        current = current.rstrip() + "\n\n## Every format side by side (TorchScript, package, ONNX, ExecuTorch)\n\n" + section + "\n"
    cpu.write_text(current)


if __name__ == "__main__":
    main()
