"""Models through the Python binding: NumPy and torch inputs, every compile
mode against PyTorch's own outputs, bad inputs, reports."""
import json
import os
from pathlib import Path

import numpy as np
import pytest

import perfopt
from perfopt import PerfoptError, Status

FIXTURES = Path(os.environ.get("PERFOPT_FIXTURES", Path(__file__).resolve().parents[2] / "build" / "fixtures"))
MANIFEST = json.loads((FIXTURES / "manifest.json").read_text())


def load_fixture(name):
    entry = MANIFEST[name]
    inputs = [np.load(FIXTURES / i["file"]) for i in entry["inputs"]]
    outputs = [np.load(FIXTURES / o["file"]) for o in entry["outputs"]]
    return str(FIXTURES / entry["file"]), inputs, outputs


def rel_error(a, b):
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-30))


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


@pytest.mark.parametrize("name", sorted(k for k in MANIFEST if k != "scripted"))
@pytest.mark.parametrize("mode", ["none", "default", "reduce-overhead", "max-autotune"])
def test_numpy_inputs_match_pytorch(opt, name, mode):
    path, inputs, expected = load_fixture(name)
    with opt.load(path, name) as model:
        model.compile(mode, inputs)
        outputs = model.run(*inputs)
        assert len(outputs) == len(expected)
        for got, want in zip(outputs, expected):
            assert isinstance(got, np.ndarray)
            assert got.shape == want.shape
            assert rel_error(got, want) <= 1e-3
        assert model.report()["compile"]["requested_mode"] == mode


def test_torch_tensors_in_and_out(opt):
    torch = pytest.importorskip("torch")
    path, inputs, expected = load_fixture("two_inputs")
    with opt.load(path) as model:
        outputs = model.run(*[torch.from_numpy(i) for i in inputs], output="torch")
        assert all(isinstance(o, torch.Tensor) for o in outputs)
        for got, want in zip(outputs, expected):
            assert rel_error(got.numpy(), want) <= 1e-3
        # A non-contiguous torch view is read through its strides.
        transposed = torch.from_numpy(inputs[0]).t().contiguous().t()
        again = model.run(transposed, torch.from_numpy(inputs[1]), output="numpy")
        assert rel_error(again[0], expected[0]) <= 1e-5


def test_array_layouts_in(opt):
    """Read-only, Fortran-order and strided arrays give the same outputs as
    contiguous ones (NumPy's DLPack export where it applies, a described
    DLTensor where it refuses)."""
    path, inputs, expected = load_fixture("two_inputs")
    with opt.load(path) as model:
        x, y = inputs
        read_only = x.copy()
        read_only.flags.writeable = False
        strided = np.ascontiguousarray(np.repeat(x, 2, axis=1))[:, ::2]
        assert not strided.flags.c_contiguous
        for variant in (read_only, np.asfortranarray(x), strided):
            outputs = model.run(variant, y)
            assert rel_error(outputs[0], expected[0]) <= 1e-5
        # A single input is passed where its DLPack export put it.
        single_path, single_inputs, single_expected = load_fixture("encoder")
        with opt.load(single_path) as encoder:
            assert rel_error(encoder.run(single_inputs[0])[0], single_expected[0]) <= 1e-3


def test_dlpack_outputs_are_owned_until_taken(opt):
    path, inputs, expected = load_fixture("two_inputs")
    with opt.load(path) as model:
        first, second = model.run(*inputs, output="dlpack")
        assert first.shape == expected[0].shape
        taken = np.from_dlpack(first)
        assert rel_error(taken, expected[0]) <= 1e-3
        with pytest.raises(BufferError):
            first.numpy()
        with pytest.raises(BufferError):
            first.shape
        second.close()  # freed now; closing again, or dropping it, is a no-op
        second.close()
        del second
        # Outputs dropped untaken are freed by their owners: no growth.
        import resource

        for _ in range(200):
            model.run(*inputs, output="dlpack")
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        for _ in range(2000):
            model.run(*inputs, output="dlpack")
        assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 4096  # KiB


def test_warmup_and_report(opt):
    path, inputs, _ = load_fixture("speaker")
    with opt.load(path) as model:
        model.compile("default")
        report = model.warmup(inputs, iterations=4)
        assert report["success"] is True and report["steady"]["samples"] == 3
        model.run(*inputs)
        full = model.report()
        assert full["calls"] == 1 and full["latency"]["samples"] == 1
        assert full["compile"]["chosen"].startswith("frozen")


def test_bad_inputs_and_files(opt, tmp_path):
    path, inputs, expected = load_fixture("two_inputs")
    with opt.load(path) as model:
        with pytest.raises(PerfoptError) as info:
            model.run(inputs[0])
        assert info.value.status == Status.INVALID_ARGUMENT and "takes 2 input(s)" in info.value.message
        with pytest.raises(PerfoptError) as info:
            model.run(np.zeros((2, 5), np.float32), inputs[1])
        assert info.value.status == Status.TORCH
        with pytest.raises(TypeError):
            model.run(np.zeros((2, 16), np.complex64), inputs[1])
        with pytest.raises(PerfoptError) as info:
            model.compile("fastest")
        assert info.value.status == Status.INVALID_ARGUMENT
        assert rel_error(model.run(*inputs)[0], expected[0]) <= 1e-3
    with pytest.raises(PerfoptError) as info:
        opt.load(str(tmp_path / "missing.pt"))
    assert info.value.status == Status.FILE_NOT_FOUND
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"hello")
    with pytest.raises(PerfoptError) as info:
        opt.load(str(junk))
    assert info.value.status == Status.LOAD_FAILED and "junk.pt" in info.value.message
    cut = tmp_path / "cut.pt"
    cut.write_bytes(Path(path).read_bytes()[:500])
    with pytest.raises(PerfoptError) as info:
        opt.load(str(cut))
    assert info.value.status == Status.MODEL_CORRUPT


def test_closed_model_raises(opt):
    path, inputs, _ = load_fixture("tokens")
    model = opt.load(path)
    model.close()
    with pytest.raises(PerfoptError) as info:
        model.run(*inputs)
    assert info.value.status == Status.INVALID_HANDLE


def test_recommend_batch_and_run_batched(opt):
    path, inputs, expected = load_fixture("encoder")
    with opt.load(path) as model:
        report = model.recommend_batch(inputs[0][:1])
        assert report["recommended_batch"] >= 1
        assert report["throughput_points"] and report["reason"]
        big = np.concatenate([inputs[0]] * 5)
        whole = model.run(big)[0]
        chunked = model.run_batched(big, max_batch=3)[0]
        assert chunked.shape == whole.shape
        assert rel_error(chunked, whole) <= 1e-5
        assert model.report()["batching"]["batched_calls"] == 1
        with pytest.raises(PerfoptError) as info:
            model.recommend_batch(inputs[0])
        assert info.value.status == Status.INVALID_ARGUMENT
        with pytest.raises(PerfoptError) as info:
            model.run_batched(big, max_batch=-2)
        assert info.value.status == Status.INVALID_ARGUMENT
