"""Reduced precision as max-autotune measures it: each reference model
exported as a bundle with its fp32 forms (ONNX, TorchScript) and its bf16
(TorchScript) and int8 (ONNX Runtime's dynamic quantisation) forms, compiled
with max-autotune under `precision=fp32` and under `allow-reduced` (the
tolerance a caller of that model would state), then the two choices timed
against each other in interleaved rounds in this process.

    python bench/precision.py [--models text_encoder,...] [--batches 1,8] [--seconds 6]

Writes docs/benchmarks/precision.md.
"""
import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "bindings" / "python"))
import models  # noqa: E402
import perfopt  # noqa: E402
import perfopt.export  # noqa: E402
from formats import interleaved, machine_line  # noqa: E402

# The bound a caller would state: embeddings by cosine similarity, a
# sequence encoder's outputs by relative error.
TOLERANCES = {"text_encoder": {"min_cosine": 0.999}, "speaker": {"min_cosine": 0.999},
              "small_encoder": {"reduced_tolerance": 1e-2}}


def best_per_form(candidates):
    """{form: (fastest p50 ms, error, cosine, within)} over its measured candidates."""
    forms = {}
    for c in candidates:
        form = c["name"].split(": ", 1)[0]
        if c["p50_ms"] is None and form in forms:
            continue
        row = (c["p50_ms"], c["relative_error"], c["cosine"], c["within_tolerance"], c["note"])
        if form not in forms or (c["p50_ms"] is not None and (forms[form][0] is None or c["p50_ms"] < forms[form][0])):
            forms[form] = row
    return forms


def measure(opt, name, folder, batch, seconds):
    module, inputs = models.build(name, batch)
    arrays = [x.numpy() for x in inputs]
    tolerance = TOLERANCES[name]
    chosen, calls, loaded = {}, {}, []
    for precision in ["fp32", "allow-reduced"]:
        model = opt.load(str(folder), f"{name}-{precision}")
        loaded.append(model)
        model.set_options(tuning_budget_ms=20000, precision=precision, **tolerance)
        model.compile("max-autotune", arrays)
        chosen[precision] = model.report()["compile"]
        calls[f"perfopt, {precision}"] = (lambda m: lambda: m.run(*arrays))(model)
    times = interleaved(calls, seconds)
    for model in loaded:
        model.close()
    return {"model": name, "batch": batch, "tolerance": tolerance, "chosen": chosen, "times": times}


def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def markdown(machine, rows, bf16_native):
    lines = ["# Reduced precision, measured by max-autotune", "",
             f"Machine: {machine}. bf16 instructions: {'yes' if bf16_native else 'no (bf16 is emulated)'}.",
             "Each model is one bundle (ONNX and TorchScript in fp32, TorchScript in bf16, ONNX in int8);",
             "max-autotune measured every form under `precision=allow-reduced` with the tolerance shown.",
             "Per form: its fastest candidate, its error against the fp32 output and whether it was kept.", ""]
    for row in rows:
        compiled = row["chosen"]["allow-reduced"]
        tol = ", ".join(f"{k}={v}" for k, v in row["tolerance"].items())
        lines += [f"## {row['model']}, batch {row['batch']} ({tol})", "",
                  "| form | fastest candidate p50 ms | relative error | cosine | kept |", "|---|---|---|---|---|"]
        for form, (p50, error, cosine, within, note) in best_per_form(compiled["candidates"]).items():
            kept = "within tolerance" if within else (note or "over tolerance")
            lines.append(f"| {form} | {fmt(p50, '.3f')} | {fmt(error, '.1e')} | {fmt(cosine, '.6f')} | {kept} |")
        times = row["times"]
        fp32, reduced = times["perfopt, fp32"]["p50_ms"], times["perfopt, allow-reduced"]["p50_ms"]
        reduced_won = any(f"({p})" in compiled["chosen"] for p in ("bf16", "fp16", "int8"))
        verdict = "a reduced precision won" if reduced_won else \
            "both chose an fp32 form: the ratio is tuning noise between fp32 candidates"
        lines += ["", f"- `fp32` chose: {row['chosen']['fp32']['chosen']}",
                  f"- `allow-reduced` chose: {compiled['chosen']}",
                  f"- timed against each other (interleaved): fp32 choice {fp32:.3f} ms, allow-reduced choice "
                  f"{reduced:.3f} ms ({fp32 / reduced:.2f}x; {verdict})", ""]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", default="text_encoder,speaker,small_encoder")
    parser.add_argument("--batches", default="1,8")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--out", default=str(ROOT / "docs" / "benchmarks" / "precision.md"))
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    machine = machine_line()
    rows = []
    with tempfile.TemporaryDirectory() as tmp, perfopt.Optimizer("cpu", read_environment=False) as opt:
        for name in args.models.split(","):
            module, inputs = models.build(name, 2)
            folder = Path(tmp) / f"{name}.perfopt"
            perfopt.export.export(module, inputs, str(folder), formats=["onnx", "torchscript"],
                                  precisions=["bf16", "int8"])
            for batch in [int(b) for b in args.batches.split(",")]:
                print(f"measuring {name} at batch {batch}", file=sys.stderr)
                rows.append(measure(opt, name, folder, batch, args.seconds))
    from perfopt._precision import cpu_has_bf16

    text = markdown(machine, rows, cpu_has_bf16())
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    np.random.seed(0)
    main()
