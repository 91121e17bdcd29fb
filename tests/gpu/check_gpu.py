"""GPU checks for a CUDA machine, in one script that builds nothing: it uses
the library and CLI built elsewhere (PERFOPT_LIBRARY, PERFOPT_CLI) and prints
one table. Run by tests/gpu/run.sh on the device machine.

Checks: CUDA found; TF32 and cuDNN benchmark read back as set; the service's
batch rule (4 on a card over 16 GiB); every fixture in every compile mode
matches PyTorch; reduce-overhead really captures and replays CUDA graphs; a
model whose capture fails falls back with the reason reported; a stateful
model is not captured (its state would freeze) and streams as PyTorch; 4
threads running two models while new shapes arrive mid-run (captures during
other threads' runs) give a serial run's outputs; AOTInductor packages
exported for CUDA run in every mode with graphs; the bench table at batch 4;
recommend_batch against the true largest batch found by bisection;
run_batched with 4x the true largest batch completes. Every section records
its failure and the next one runs.
"""
import json
import os
import subprocess
import sys
import tempfile
import threading
import traceback
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bindings" / "python"))
sys.path.insert(0, str(ROOT / "tests" / "fixtures"))
import make_fixtures  # noqa: E402
import perfopt  # noqa: E402

ROWS = []


def check(name, ok, detail=""):
    ROWS.append((name, "ok" if ok else "FAIL", detail))


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


class CaptureBreaker(torch.nn.Module):
    """Data-dependent control flow on the host: a CUDA graph cannot hold it."""

    def forward(self, x):
        if x.sum().item() > 0:
            return x * 2
        return x - 1


def main():
    out = Path(tempfile.mkdtemp(prefix="perfopt-gpu-"))
    subprocess.run([sys.executable, str(ROOT / "tests/fixtures/make_fixtures.py"), str(out), "--batch", "4"], check=True)
    manifest = json.loads((out / "manifest.json").read_text())
    opt = perfopt.Optimizer("cuda", read_environment=False)
    report = opt.report()
    settings = report["settings"]
    check("CUDA found", report["device"]["kind"] == "cuda", report["device"]["name"])
    check("TF32 matmul reads back tf32", settings["tf32_matmul"]["value"] == "tf32", str(settings["tf32_matmul"]["value"]))
    check("TF32 cuDNN conv reads back tf32", settings["tf32_cudnn_conv"]["value"] == "tf32", "")
    check("cuDNN benchmark reads back true", settings["cudnn_benchmark"]["value"] is True, "")
    gib = (report["device"]["total_memory_bytes"] or 0) / 2**30
    expected = 4 if gib > 16 else 2 if gib > 8 else 1
    check("service batch rule", opt.optimal_batch_size() == expected, f"{gib:.0f} GiB -> {opt.optimal_batch_size()}")

    section(check_fixtures, opt, out, manifest)
    section(check_capture_failure, opt, out)
    section(check_stateful, opt, out, manifest["scripted"]["stateful"])
    section(check_threads_and_new_shapes, opt, out)
    section(check_packages, opt, out)
    section(check_bench, out)
    section(check_batches, opt, out)

    width = max(len(r[0]) for r in ROWS)
    print(f"\n{'check':<{width}}  result  detail")
    for name, result, detail in ROWS:
        print(f"{name:<{width}}  {result:<6}  {detail}")
    failed = sum(r[1] != "ok" for r in ROWS)
    print(f"{len(ROWS) - failed} passed, {failed} failed")
    return 1 if failed else 0


def section(body, *args):
    """Runs one section; an exception is a failed check, and the next section runs."""
    try:
        body(*args)
    except Exception as err:  # noqa: BLE001 - every failure goes in the table
        traceback.print_exc()
        check(f"{body.__name__} finished", False, f"{type(err).__name__}: {str(err)[:120]}")


def check_fixtures(opt, out, manifest):
    for name, entry in manifest.items():
        if name == "scripted":
            continue
        inputs = [np.load(out / i["file"]) for i in entry["inputs"]]
        expected_out = [np.load(out / o["file"]) for o in entry["outputs"]]
        for mode in ["none", "default", "reduce-overhead", "max-autotune"]:
            with opt.load(str(out / entry["file"]), name) as model:
                model.compile(mode, inputs)
                got = model.run(*inputs)
                model.run(*inputs)
                error = max(rel_error(g, e) for g, e in zip(got, expected_out))
                r = model.report()["compile"]
                detail = f"error {error:.1e}; {r['chosen']}"
                ok = error <= 2e-2  # TF32 is on in the optimizer
                if mode == "reduce-overhead":
                    graphs = r.get("cuda_graphs", {})
                    detail += f"; captured {graphs.get('captured')}, replays {graphs.get('replays')}"
                    ok = ok and (graphs.get("captured", 0) >= 1 or bool(graphs.get("fallbacks")))
                check(f"{name} {mode}", ok, detail)


def check_capture_failure(opt, out):
    breaker = torch.jit.script(CaptureBreaker())
    path = out / "breaker.pt"
    breaker.save(str(path))
    x = np.ones((4, 8), np.float32)
    with opt.load(str(path)) as model:
        model.compile("reduce-overhead", [x])
        y = model.run(x)[0]
        graphs = model.report()["compile"]["cuda_graphs"]
        check("capture failure falls back", np.allclose(y, 2 * x) and bool(graphs["fallbacks"]),
              (graphs["fallbacks"][0]["reason"][:80] if graphs["fallbacks"] else "no fallback recorded"))


def check_stateful(opt, out, case):
    """A model that changes its state is not captured, and streams as PyTorch."""
    chunks = [np.load(out / f"stateful.chunk{i}.npy") for i in range(case["chunks"])]
    expected = [np.load(out / f"stateful.expected{i}.npy") for i in range(case["chunks"])]
    with opt.load(str(out / case["file"])) as model:
        model.set_options(error_tolerance=2e-2)
        model.compile("reduce-overhead", [chunks[0], case["sr"]])
        worst = max(rel_error(model.run(c, case["sr"])[0], e) for c, e in zip(chunks, expected))
        graphs = model.report()["compile"]["cuda_graphs"]
        reasons = [f["reason"] for f in graphs["fallbacks"]]
        check("stateful model streams as PyTorch", worst <= 2e-2, f"worst error {worst:.1e}")
        check("stateful model is not captured", graphs["captured"] == 0 and any("state" in r for r in reasons),
              (reasons[0][:90] if reasons else "no reason recorded"))


def check_threads_and_new_shapes(opt, out):
    """4 threads run two models in reduce-overhead while new batch sizes
    arrive (captures happen during other threads' runs): outputs equal a
    serial run of the same shapes."""
    rng = np.random.default_rng(1)
    cases = {"vocoder": (80, 32), "encoder": (16, 64)}
    models = {}
    serial = {}
    for name, tail in cases.items():
        serial_model = opt.load(str(out / f"{name}.pt"))
        serial_model.compile("default")
        inputs = {b: rng.standard_normal((b, *tail), dtype=np.float32) for b in (1, 2, 3, 4, 5, 6)}
        serial[name] = {b: (x, serial_model.run(x)[0]) for b, x in inputs.items()}
        serial_model.close()
        model = opt.load(str(out / f"{name}.pt"))
        model.compile("reduce-overhead", [inputs[4]])
        models[name] = model
    errors = []
    worst = [0.0]

    def worker(seed):
        local = np.random.default_rng(seed)
        for _ in range(60):
            name = ("vocoder", "encoder")[local.integers(2)]
            batch = int(local.integers(1, 7))
            x, want = serial[name][batch]
            try:
                got = models[name].run(x)[0]
                worst[0] = max(worst[0], rel_error(got, want))
            except Exception as err:  # noqa: BLE001
                errors.append(f"{name} batch {batch}: {err}")

    threads = [threading.Thread(target=worker, args=(seed,)) for seed in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    captured = {n: m.report()["compile"]["cuda_graphs"]["captured"] for n, m in models.items()}
    check("4 threads, new shapes mid-run", not errors and worst[0] <= 2e-2,
          f"worst error {worst[0]:.1e}, captured {captured}, errors {errors[:1]}")
    for m in models.values():
        m.close()


def check_packages(opt, out):
    """AOTInductor packages exported for CUDA, in every mode, against eager."""
    from perfopt.export import export

    g = torch.Generator().manual_seed(3)
    cases = {
        "two_inputs": (make_fixtures.TwoInputs(), [torch.randn(4, 16, generator=g), torch.randn(4, 4, generator=g)]),
        "vocoder": (make_fixtures.Vocoder(), [torch.randn(4, 80, 32, generator=g)]),
    }
    for name, (module, inputs) in cases.items():
        path = out / f"{name}.cuda.pt2"
        report = export(module, [x.cuda() for x in inputs], str(path), device="cuda")
        check(f"{name} exported for cuda", report["relative_error"] <= 1e-3,
              f"compile {report['compile_s']} s, error {report['relative_error']:.1e}")
        with torch.no_grad():
            expected = module.cpu()(*inputs)
        expected = [t.numpy() for t in (expected if isinstance(expected, tuple) else (expected,))]
        arrays = [x.numpy() for x in inputs]
        for mode in ["none", "default", "reduce-overhead", "max-autotune"]:
            with opt.load(str(path)) as model:
                model.compile(mode, arrays)
                got = model.run(*arrays)
                got = model.run(*arrays)
                error = max(rel_error(g_, e) for g_, e in zip(got, expected))
                r = model.report()["compile"]
                detail = f"error {error:.1e}; {r['chosen']}"
                ok = error <= 2e-2
                if mode == "reduce-overhead":
                    graphs = r.get("cuda_graphs", {})
                    detail += f"; captured {graphs.get('captured')}, replays {graphs.get('replays')}"
                    ok = ok and graphs.get("captured", 0) >= 1
                check(f"{name}.pt2 {mode}", ok, detail)


def check_bench(out):
    cli = os.environ.get("PERFOPT_CLI", str(ROOT / "build/bin/perfopt"))
    for name, shape in [("vocoder", "4x80x32"), ("encoder", "4x16x64")]:
        proc = subprocess.run([cli, "bench", str(out / f"{name}.pt"), "--input", shape, "--iterations", "100"],
                              capture_output=True, text=True)
        print(proc.stdout or proc.stderr)


def check_batches(opt, out):
    # recommend_batch against the true largest batch (bisection on OOM).
    for name, sample_shape in [("vocoder", (1, 80, 32)), ("encoder", (1, 16, 64))]:
        with opt.load(str(out / f"{name}.pt")) as model:
            model.compile("default")
            sample = np.random.default_rng(0).standard_normal(sample_shape, dtype=np.float32)
            rec = model.recommend_batch(sample)
            low, high = 1, 1
            while True:
                try:
                    model.run(np.repeat(sample, high, axis=0))
                    low, high = high, high * 2
                except perfopt.PerfoptError as err:
                    if err.status != perfopt.Status.OUT_OF_MEMORY:
                        raise
                    break
                if high > 1 << 22:
                    break
            while high - low > max(1, low // 64):
                mid = (low + high) // 2
                try:
                    model.run(np.repeat(sample, mid, axis=0))
                    low = mid
                except perfopt.PerfoptError:
                    high = mid
            batch = rec["recommended_batch"]
            check(f"{name} recommended batch runs", model.run(np.repeat(sample, batch, axis=0)) is not None,
                  f"recommended {batch} ({rec['reason']}); true largest about {low}; memory limit {rec['memory_limit_batch']}")
            big = np.repeat(sample, 4 * low, axis=0)
            outs = model.run_batched(big)
            check(f"{name} run_batched at 4x the largest", outs[0].shape[0] == 4 * low,
                  f"oom retries {model.report()['batching']['oom_retries']}")


if __name__ == "__main__":
    sys.exit(main())
