"""The lite library (build/lite/lib: ONNX Runtime and ExecuTorch engines, no
libtorch), through the Python binding: it says what it is, refuses a
TorchScript file by status naming the build, and runs a model held out from
every other suite, exported here as .onnx and as .pte, within 1e-4 of eager
in every compile mode. Skipped against the full library (`make test-lite`
runs it with PERFOPT_LIBRARY on the lite one)."""
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import perfopt
import perfopt.export
from perfopt import PerfoptError, Status

FIXTURES = Path(os.environ.get("PERFOPT_FIXTURES", Path(__file__).resolve().parents[2] / "build" / "fixtures"))

LITE = "(lite: " in perfopt.version()
pytestmark = pytest.mark.skipif(not LITE, reason="PERFOPT_LIBRARY is the full library, not the lite one")

MODES = ["none", "default", "reduce-overhead", "max-autotune"]


class PitchHead(nn.Module):
    """A held-out model: a frame-wise conv stack and a norm over mel frames,
    shaped like the service's pitch estimator, used by no other suite."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(40, 48, 5, padding=2), nn.GELU(), nn.Conv1d(48, 48, 3, padding=1))
        self.norm = nn.LayerNorm(48)
        self.head = nn.Linear(48, 2)

    def forward(self, mel):
        frames = self.conv(mel).transpose(1, 2)
        pitch, voiced = self.head(self.norm(frames)).unbind(-1)
        return pitch, torch.sigmoid(voiced)


def mel_input():
    return torch.randn(3, 40, 30, generator=torch.Generator().manual_seed(11))


@pytest.fixture(scope="module")
def held_out(tmp_path_factory):
    """The model, exported as .onnx and .pte with its input and eager's
    outputs beside (into PERFOPT_HELD_OUT when set: the C harness's
    held_out_from_c runs the same files after this suite)."""
    torch.manual_seed(7)
    model = PitchHead().eval()
    example = (torch.randn(2, 40, 30),)
    named = os.environ.get("PERFOPT_HELD_OUT")
    folder = Path(named) if named else tmp_path_factory.mktemp("lite")
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for suffix in ("onnx", "pte"):
        path = folder / f"pitch.{suffix}"
        perfopt.export.export(model, example, str(path), dynamic_batch=True)
        paths[suffix] = path
    mel = mel_input()
    with torch.no_grad():
        outputs = model(mel)
    np.save(folder / "pitch.input0.npy", mel.numpy())
    for i, output in enumerate(outputs):
        np.save(folder / f"pitch.output{i}.npy", output.numpy())
    return model, paths


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


def test_the_library_says_it_is_the_lite_build(opt):
    assert perfopt.version().endswith("(lite: ONNX Runtime and ExecuTorch, no libtorch)")
    engines = {e["format"]: e for e in opt.report()["engines"]}
    assert engines["torchscript"]["available"] is False
    assert engines["aotinductor"]["available"] is False
    assert set(engines) == {"torchscript", "aotinductor", "onnx", "executorch"}


def test_a_torchscript_file_is_refused_naming_the_build(opt):
    with pytest.raises(PerfoptError) as err:
        opt.load(str(FIXTURES / "two_inputs.pt"))
    assert err.value.status == Status.UNSUPPORTED_MODEL
    assert "the build without libtorch" in str(err.value)


@pytest.mark.parametrize("suffix", ["onnx", "pte"])
@pytest.mark.parametrize("mode", MODES)
def test_a_held_out_model_runs_like_eager_in_every_mode(opt, held_out, suffix, mode):
    model, paths = held_out
    mel = mel_input()
    with torch.no_grad():
        expected = [t.numpy() for t in model(mel)]
    with opt.load(str(paths[suffix])) as loaded:
        loaded.compile(mode, [mel.numpy()])
        for _ in range(2):  # the second call runs what compile chose, warmed
            got = loaded.run(mel.numpy())
            assert len(got) == 2
            for g, want in zip(got, expected):
                scale = max(float(np.abs(want).max()), 1e-12)
                assert float(np.abs(g - want).max()) / scale <= 1e-4
        batched = loaded.run_batched(mel.numpy(), max_batch=2)
        for g, want in zip(batched, expected):
            np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-5)
        assert loaded.report()["format"] == {"onnx": "onnx", "pte": "executorch"}[suffix]
