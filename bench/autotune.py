"""max-autotune against its promises, and AOTInductor packages beside
TorchScript, on this machine's CPU (or CUDA):

1. compile time within the tuning budget (the first start, measuring);
2. its choice never slower than `none` beyond the noise (interleaved rounds
   in one process: `perfopt bench --mode none --mode max-autotune`);
3. the second start, with the tuning cache, within 1.2x of `none`'s cold
   start (whole processes: from spawning `perfopt bench` to its first result);
4. with --packages: each model as a TorchScript file and as a package of the
   same weights, side by side in one process (`perfopt bench M.pt M.pt2`).

    python bench/autotune.py --perfopt build/bin/perfopt [--models vocoder,...] [--packages]

Writes docs/benchmarks/autotune.json and the tables into docs/benchmarks/autotune.md.
"""
import argparse
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

MODELS = ["vocoder", "encoder", "decoder_step", "speaker", "text_encoder", "small_encoder"]


def export(workdir: Path, name: str, batch: int, package: bool) -> Path:
    stem = workdir / f"{name}-b{batch}"
    module, inputs = models.build(name, batch)
    if not Path(f"{stem}.pt").exists():
        with torch.no_grad():
            torch.jit.trace(module, tuple(inputs), check_trace=False).save(f"{stem}.pt")
        for i, x in enumerate(inputs):
            np.save(f"{stem}.input{i}.npy", x.numpy())
    if package and not Path(f"{stem}.pt2").exists():
        from perfopt.export import ExportError, export as to_package

        try:
            report = to_package(module, inputs, f"{stem}.pt2", dynamic_batch=False)
            print(f"  exported {stem}.pt2: compile {report['compile_s']} s, error {report['relative_error']:.1e}",
                  flush=True)
        except ExportError as err:
            print(f"  {name}: no package: {err.reason}", flush=True)
    return stem


def bench(perfopt: str, models_: list, stem: Path, extra: list, timeout: int = 1800) -> dict:
    inputs = sorted(stem.parent.glob(f"{stem.name}.input*.npy"))
    with tempfile.NamedTemporaryFile(suffix=".json", delete=False) as out:
        pass
    cmd = [perfopt, "bench", *models_] + [a for p in inputs for a in ("--input-file", str(p))] + extra
    cmd += ["--json", out.name, "--no-env"]
    started = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}\n{proc.stderr}")
    result = json.loads(Path(out.name).read_text())
    result["process_started_unix_s"] = started
    os.unlink(out.name)
    return result


def cold_start(perfopt: str, stem: Path, mode: str, cache: Path) -> float:
    """Whole process, from spawn to the first result, in ms."""
    result = bench(perfopt, [f"{stem}.pt"], stem, ["--mode", mode, "--iterations", "1", "--tuning-cache", str(cache)])
    row = result["rows"][0]
    return (row["first_result_unix_s"] - result["process_started_unix_s"]) * 1e3


def promises(perfopt: str, workdir: Path, names: list, batches: list, repeats: int) -> list:
    rows = []
    for name in names:
        for batch in batches:
            stem = export(workdir, name, batch, package=False)
            cache = workdir / f"cache-{name}-b{batch}"
            if cache.exists():
                for f in cache.iterdir():
                    f.unlink()
            first = bench(perfopt, [f"{stem}.pt"], stem,
                          ["--mode", "none", "--mode", "max-autotune", "--tuning-cache", str(cache),
                           "--iterations", "40", "--seconds", "20"])
            none, tuned = first["rows"]
            budget = next((c for c in [tuned] if c), {})
            colds = {"none": [], "cached": []}
            for _ in range(repeats):
                colds["none"].append(cold_start(perfopt, stem, "none", cache))
                colds["cached"].append(cold_start(perfopt, stem, "max-autotune", cache))
            row = {
                "model": name,
                "batch": batch,
                "none_p50_ms": none["latency"]["p50_ms"],
                "tuned_p50_ms": tuned["latency"]["p50_ms"],
                "noise": max(none.get("noise") or 0, tuned.get("noise") or 0),
                "verdict": tuned["verdict"],
                "speedup": tuned["speedup_vs_first_row"],
                "chosen": tuned["chosen"],
                "compile_ms": tuned["compile_ms"],
                "budget_ms": 2000 if first["device"].startswith("cpu") else 1000,
                "cold_none_ms": min(colds["none"]),
                "cold_cached_ms": min(colds["cached"]),
                "cold_all": colds,
                "candidates": budget.get("candidates", []),
            }
            rows.append(row)
            print(f"  {name} b{batch}: compile {row['compile_ms']:.0f} ms, {row['verdict']} ({row['chosen']}), "
                  f"cold start none {row['cold_none_ms']:.0f} ms, cached {row['cold_cached_ms']:.0f} ms", flush=True)
    return rows


def formats(perfopt: str, workdir: Path, names: list, batch: int) -> list:
    rows = []
    for name in names:
        stem = export(workdir, name, batch, package=True)
        if not Path(f"{stem}.pt2").exists():
            rows.append({"model": name, "batch": batch, "package": None})
            continue
        result = bench(perfopt, [f"{stem}.pt", f"{stem}.pt2"], stem,
                       ["--mode", "default", "--iterations", "40", "--seconds", "30"])
        script, package = result["rows"]
        rows.append({
            "model": name,
            "batch": batch,
            "torchscript_p50_ms": script["latency"]["p50_ms"],
            "package_p50_ms": package["latency"]["p50_ms"],
            "package_verdict": package["verdict"],
            "package_error": package["relative_error"],
            "load_ms": {"torchscript": script["load_ms"], "package": package["load_ms"]},
        })
        print(f"  {name} b{batch}: TorchScript {script['latency']['p50_ms']:.3f} ms, package "
              f"{package['latency']['p50_ms']:.3f} ms ({package['verdict']})", flush=True)
    return rows


def render(meta: dict, tuned: list, packaged: list) -> str:
    lines = [
        f"# max-autotune's promises and the two formats: {meta['device']}",
        "",
        f"{meta['date']}; {meta['perfopt']}; {meta['cpu']}, {meta['cores']} cores. "
        "Each row's latencies come from one process, `none` and `max-autotune` timed in interleaved rounds "
        "(verdict: faster or slower only when three quarters of the paired rounds agree); cold starts are whole "
        f"processes from spawn to the first result, the best of {meta['repeats']}; the second start reads the "
        "tuning cache that the first filled.",
        "",
        "| model | batch | none p50 (ms) | max-autotune p50 (ms) | verdict | chosen | compile, first start (ms) "
        "| budget (ms) | cold start none (ms) | cold start, second (ms) | ratio |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in tuned:
        ratio = r["cold_cached_ms"] / max(r["cold_none_ms"], 1e-9)
        lines.append(
            f"| {r['model']} | {r['batch']} | {r['none_p50_ms']:.3f} | {r['tuned_p50_ms']:.3f} | {r['verdict']} "
            f"| {r['chosen']} | {r['compile_ms']:.0f} | {r['budget_ms']} | {r['cold_none_ms']:.0f} "
            f"| {r['cold_cached_ms']:.0f} | {ratio:.2f} |"
        )
    if packaged:
        lines += ["", "## AOTInductor packages beside TorchScript", "",
                  "The same weights as a TorchScript file (compiled `default`: frozen + optimize_for_inference) and "
                  "as an AOTInductor package (static batch), timed in interleaved rounds in one process.", "",
                  "| model | batch | TorchScript p50 (ms) | package p50 (ms) | package vs TorchScript | package rel. error "
                  "| load TorchScript / package (ms) |",
                  "|---|---|---|---|---|---|---|"]
        for r in packaged:
            if r.get("package") is None and "package_p50_ms" not in r:
                lines.append(f"| {r['model']} | {r['batch']} | | | export failed | | |")
                continue
            lines.append(
                f"| {r['model']} | {r['batch']} | {r['torchscript_p50_ms']:.3f} | {r['package_p50_ms']:.3f} "
                f"| {r['package_verdict']} | {r['package_error']:.1e} | {r['load_ms']['torchscript']:.0f} / "
                f"{r['load_ms']['package']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--perfopt", default=str(ROOT / "build/bin/perfopt"))
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--batches", default="1,4")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--packages", action="store_true")
    parser.add_argument("--workdir", default=str(ROOT / "build/bench-autotune"))
    parser.add_argument("--out", default=str(ROOT / "docs/benchmarks"))
    args = parser.parse_args()
    workdir = Path(args.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    names = args.models.split(",")
    batches = [int(b) for b in args.batches.split(",")]
    version = subprocess.run([args.perfopt, "version"], capture_output=True, text=True).stdout.strip()
    info = json.loads(subprocess.run([args.perfopt, "info", "--json", "--no-env"], capture_output=True,
                                     text=True).stdout)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "perfopt": version,
        "device": info["device"]["kind"],
        "cpu": info["device"]["name"] or platform.processor(),
        "cores": info["threads"]["cores"],
        "repeats": args.repeats,
    }
    print("max-autotune's promises:", flush=True)
    tuned = promises(args.perfopt, workdir, names, batches, args.repeats)
    packaged = []
    if args.packages:
        print("TorchScript and packages:", flush=True)
        packaged = formats(args.perfopt, workdir, names, max(batches))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "autotune.json").write_text(json.dumps({"meta": meta, "autotune": tuned, "formats": packaged}, indent=1))
    (out / "autotune.md").write_text(render(meta, tuned, packaged))
    print(render(meta, tuned, packaged))
    return 0


if __name__ == "__main__":
    sys.exit(main())
