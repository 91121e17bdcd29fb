"""ONNX models (.onnx) through the Python binding: every perfopt call within
1e-5 of onnxruntime's own Python API on the same file, a silero-shaped
recurrent state passed through inputs and outputs, broken files and wrong
inputs by status, and a missing ONNX Runtime explained."""
import json
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import perfopt
from perfopt import PerfoptError, Status

from test_packages import PACKAGES, ROOT

onnxruntime = pytest.importorskip("onnxruntime")


def case(name):
    inputs = [np.load(p) for p in sorted(PACKAGES.glob(f"{name}.input*.npy"))]
    return str(PACKAGES / f"{name}.onnx"), inputs


def reference(path, inputs):
    """onnxruntime's own answer on the same file."""
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    return session.run(None, {i.name: x for i, x in zip(session.get_inputs(), inputs)})


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


@pytest.mark.parametrize("name", ["two_inputs", "vocoder", "recurrent"])
@pytest.mark.parametrize("mode", ["none", "default", "reduce-overhead", "max-autotune"])
def test_onnx_matches_onnxruntime(opt, name, mode):
    path, inputs = case(name)
    expected = reference(path, inputs)
    with opt.load(path) as model:
        report = model.report()
        assert report["format"] == "onnx" and report["engine"]["providers"]
        model.compile(mode, inputs)
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for got, want in zip(model.run_batched(*inputs, max_batch=1), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        called = model.call("forward", *inputs)
        for got, want in zip(called if isinstance(called, (list, tuple)) else [called], expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert model.output_count() == len(expected)


def test_every_call_on_an_onnx_model(opt):
    path, inputs = case("two_inputs")
    with opt.load(path) as model:
        [method] = model.methods()
        assert method["name"] == "forward" and [a["name"] for a in method["arguments"]] == ["x", "y"]
        warm = model.warmup(inputs, iterations=3)
        assert warm["iterations"] == 3
        model.compile("max-autotune", inputs)
        compiled = model.report()["compile"]
        assert len(compiled["candidates"]) >= 2 and compiled["chosen"]
        assert any("thread" in c["name"] for c in compiled["candidates"])
        recommended = model.recommend_batch(*[x[:1] for x in inputs])
        assert recommended["recommended_batch"] >= 1 and recommended["memory_source"].startswith("not measured")
        with opt.inference():  # a no-op for ONNX Runtime, and allowed
            model.run(*inputs)
        torch = pytest.importorskip("torch")
        out = model.run(*[torch.from_numpy(x) for x in inputs], output="torch")
        assert isinstance(out[0], torch.Tensor)


def test_onnx_outputs_do_not_share_memory_between_calls(opt):
    path, inputs = case("two_inputs")
    with opt.load(path) as model:
        first = model.run(*inputs)
        kept = [a.copy() for a in first]
        model.run(*[x * 2 for x in inputs])
        for a, b in zip(first, kept):
            np.testing.assert_array_equal(a, b)


def test_recurrent_state_passes_through_inputs_and_outputs(opt):
    path, (chunk, state) = case("recurrent")
    session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(5)
    chunks = [rng.standard_normal(chunk.shape).astype(np.float32) for _ in range(8)]
    with opt.load(path) as model:
        model.compile("max-autotune", [chunks[0], state])
        ours, theirs = state, state
        for c in chunks:
            p_ours, ours = model.run(c, ours)
            p_theirs, theirs = session.run(None, {"chunk": c, "state": theirs})
            np.testing.assert_allclose(p_ours, p_theirs, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(ours, theirs, rtol=1e-5, atol=1e-6)
        assert model.report()["keeps_state"] is False


def test_an_output_that_is_an_input_is_the_callers_own_copy(opt):
    """ONNX Runtime returns a graph input that is also a graph output over
    the input's memory: perfopt copies it, so the output neither follows the
    caller's later writes nor dangles when the input was a temporary copy."""
    path, (chunk, state) = case("passthrough")
    for path in (path, str(PACKAGES / "input_as_output.onnx")):
        check_passthrough(opt, path, chunk.copy(), state.copy())


def check_passthrough(opt, path, chunk, state):
    with opt.load(path) as model:
        doubled, same = model.run(chunk, state)
        np.testing.assert_array_equal(same, state)
        np.testing.assert_allclose(doubled, chunk * 2)
        kept = state.copy()
        state[:] = 0
        np.testing.assert_array_equal(same, kept)
        torch = pytest.importorskip("torch")
        # Non-contiguous: perfopt hands ONNX Runtime a contiguous copy, freed
        # after the call.
        strided = torch.from_numpy(np.ascontiguousarray(kept.T)).t()
        assert not strided.is_contiguous()
        for _ in range(3):
            _, out = model.run(torch.from_numpy(chunk), strided, output="torch")
            np.testing.assert_array_equal(out.numpy(), kept)


def test_onnx_inputs_are_checked(opt):
    path, (x, y) = case("two_inputs")
    with opt.load(path) as model:
        bad = [
            ((x.astype(np.float64), y), "takes float32 of shape [batch, 16]"),
            ((x[:, :15], y), "[batch, 16]"),
            ((x[None], y), "[batch, 16]"),
            ((x, y[:1]), "`batch`"),
        ]
        for args, words in bad:
            with pytest.raises(PerfoptError) as err:
                model.run(*args)
            assert err.value.status == Status.INVALID_ARGUMENT and words in err.value.message, err.value.message
        with pytest.raises(PerfoptError) as err:
            model.run(x)
        assert err.value.status == Status.INVALID_ARGUMENT and "2 input(s)" in err.value.message
        with pytest.raises(PerfoptError) as err:
            model.call("encode", x, y)
        assert err.value.status == Status.INVALID_ARGUMENT and "no method `encode`" in err.value.message


@pytest.mark.parametrize(
    "name, status, words",
    [
        ("truncated.onnx", Status.MODEL_CORRUPT, "cut short"),
        ("not_a_model.onnx", Status.MODEL_CORRUPT, "cut short"),
    ],
)
def test_broken_onnx_files(opt, name, status, words):
    with pytest.raises(PerfoptError) as err:
        opt.load(str(PACKAGES / name))
    assert err.value.status == status and words in err.value.message, err.value.message


def test_a_file_of_no_known_format_names_them(opt, tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"GIF89a" + bytes(64))
    with pytest.raises(PerfoptError) as err:
        opt.load(str(path))
    assert err.value.status == Status.LOAD_FAILED
    assert "zip archives" in err.value.message and "protobuf" in err.value.message


def test_a_missing_onnxruntime_is_explained(tmp_path):
    # ONNX Runtime loads once per process: a fresh one is needed.
    script = f"""
import sys
sys.path.insert(0, {str(ROOT / 'bindings/python')!r})
import perfopt
opt = perfopt.Optimizer("cpu", onnxruntime_library="/nonexistent/libonnxruntime.so")
try:
    opt.load({case('two_inputs')[0]!r})
except perfopt.PerfoptError as err:
    print(err.status.name, err.message)
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "LOAD_FAILED" in out.stdout, out.stdout + out.stderr
    assert "/nonexistent/libonnxruntime.so" in out.stdout and "pip install onnxruntime" in out.stdout


def test_two_models_run_concurrently_each_at_its_own_threads(opt):
    path, inputs = case("vocoder")
    with opt.load(path, "one") as one, opt.load(path, "two") as two:
        one.set_options(threads=1)
        two.set_options(threads=2)
        one.compile("none")
        two.compile("default")
        assert one.report()["engine"]["threads"] == 1
        assert two.report()["engine"]["threads"] == 2
        errors = []

        def loop(model):
            try:
                for _ in range(20):
                    model.run(*inputs)
            except Exception as err:  # reported below
                errors.append(err)

        threads = [threading.Thread(target=loop, args=(m,)) for m in (one, two)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors


def test_export_writes_onnx_by_suffix(tmp_path):
    torch = pytest.importorskip("torch")
    from perfopt.export import export

    module = torch.nn.Sequential(torch.nn.Linear(6, 3), torch.nn.Tanh())
    report = export(module, [torch.randn(1, 6)], str(tmp_path / "small.onnx"))
    assert report["format"] == "onnx" and report["relative_error"] < 1e-5
    assert report["notes"] and "batch is 1" in report["notes"][0]
    specs = json.loads((tmp_path / "small.inputs.json").read_text())
    assert specs[0]["shape"] == [-1, 6]
    with perfopt.Optimizer("cpu", read_environment=False) as opt, opt.load(str(tmp_path / "small.onnx")) as model:
        x = np.random.default_rng(1).standard_normal((5, 6)).astype(np.float32)
        with torch.no_grad():
            want = module(torch.from_numpy(x)).numpy()
        np.testing.assert_allclose(model.run(x)[0], want, rtol=1e-5, atol=1e-6)
