"""AOTInductor packages (.pt2) through the Python binding: every call like
eager, the export helper's explanations, and broken packages by status."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import perfopt
from perfopt import PerfoptError, Status

ROOT = Path(__file__).resolve().parents[2]


def packages_dir() -> Path:
    found = os.environ.get("PERFOPT_PACKAGES")
    if found:
        return Path(found)
    out = subprocess.run(
        [sys.executable, str(ROOT / "tests/fixtures/make_packages.py"), str(ROOT / "build/packages")],
        check=True, capture_output=True, text=True,
    )
    return Path(out.stdout.strip())


PACKAGES = packages_dir()


def case(name):
    inputs = [np.load(p) for p in sorted(PACKAGES.glob(f"{name}.input*.npy"))]
    outputs = [np.load(p) for p in sorted(PACKAGES.glob(f"{name}.output*.npy"))]
    return str(PACKAGES / f"{name}.pt2"), inputs, outputs


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


@pytest.mark.parametrize("name", ["two_inputs", "vocoder"])
@pytest.mark.parametrize("mode", ["none", "default", "reduce-overhead", "max-autotune"])
def test_packages_match_eager(opt, name, mode):
    path, inputs, expected = case(name)
    with opt.load(path) as model:
        assert model.report()["format"] == "aotinductor"
        model.compile(mode, inputs)
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
        for got, want in zip(model.run_batched(*inputs, max_batch=1), expected):
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_package_inputs_are_checked(opt):
    path, inputs, _ = case("two_inputs")
    with opt.load(path) as model:
        with pytest.raises(PerfoptError) as err:
            model.run(inputs[0][:, :15], inputs[1])
        assert err.value.status == Status.INVALID_ARGUMENT and "[*, 16]" in err.value.message
        assert [m["name"] for m in model.methods()] == ["forward"]


@pytest.mark.parametrize(
    "name, status, words",
    [
        ("cpp_only.pt2", Status.UNSUPPORTED_MODEL, "no compiled library"),
        ("wrong_device.pt2", Status.UNSUPPORTED_DEVICE, "compiled for cuda"),
        ("bad_library.pt2", Status.MODEL_CORRUPT, "damaged or cut short"),
        ("foreign_library.pt2", Status.LOAD_FAILED, "dlopen"),
        ("truncated.pt2", Status.MODEL_CORRUPT, "truncated"),
        ("missing.pt2", Status.FILE_NOT_FOUND, "missing.pt2"),
    ],
)
def test_broken_packages(opt, name, status, words):
    with pytest.raises(PerfoptError) as err:
        opt.load(str(PACKAGES / name))
    assert err.value.status == status and words in err.value.message


def test_export_explains_a_specialised_batch(tmp_path):
    torch = pytest.importorskip("torch")
    from perfopt.export import ExportError, export

    class FixedBatch(torch.nn.Module):
        def forward(self, x):
            return x.reshape(4, -1) * 2

    with pytest.raises(ExportError) as err:
        export(FixedBatch(), [torch.randn(4, 6)], str(tmp_path / "fixed.pt2"))
    assert "specialised to 4" in err.value.reason and "dynamic_batch=False" in err.value.reason
    with pytest.raises(ExportError, match=r"\.onnx"):
        export(FixedBatch(), [torch.randn(4, 6)], str(tmp_path / "fixed.bin"))


def test_export_report_of_the_fixture():
    report = json.loads((PACKAGES / "manifest.json").read_text())
    for name in ("two_inputs", "vocoder"):
        assert report[name]["relative_error"] <= 1e-4
        assert report[name]["dynamic_batch"] is True
        # The batch's symbol and the sizes the package accepts for it: not
        # just -1 in the shape.
        batch = report[name]["inputs"][0]["symbols"][0]
        low, high = report[name]["dimension_ranges"][batch]
        assert low >= 0 and (high is None or high > 1)


def test_export_takes_a_batch_range_and_a_bound_hit_says_how_to_re_export(opt, tmp_path):
    torch = pytest.importorskip("torch")
    from perfopt.export import ExportError, export

    module = torch.nn.Linear(4, 2).eval()
    for bad in [(0, 4), (8, 4), ("a", 4)]:
        with pytest.raises(ExportError, match="batch"):
            export(module, [torch.randn(2, 4)], str(tmp_path / "bad.pt2"), batch_range=bad)
    with pytest.raises(ExportError, match="dynamic"):
        export(module, [torch.randn(2, 4)], str(tmp_path / "bad.pt2"), batch_range=(1, 4), dynamic_batch=False)
    path = tmp_path / "ranged.pt2"
    report = export(module, [torch.randn(2, 4)], str(path), batch_range=(1, 4))
    batch = report["inputs"][0]["symbols"][0]
    assert report["dimension_ranges"][batch] == [1, 4]
    with opt.load(str(path)) as model:
        assert model.run(np.ones((4, 4), np.float32))[0].shape == (4, 2)
        with pytest.raises(PerfoptError) as err:
            model.run(np.ones((5, 4), np.float32))
        assert "accepts 0 to 4" in err.value.message or "1 to 4" in err.value.message
        assert "batch_range" in err.value.message


def test_input_specs_come_from_the_model():
    specs = perfopt.input_specs(str(PACKAGES / "two_inputs.pt2"))
    assert [s["name"] for s in specs] == ["x", "y"] and specs[0]["shape"] == [-1, 16]
    (PACKAGES / "two_inputs.inputs.json").rename(PACKAGES / "two_inputs.inputs.json.away")
    try:
        assert perfopt.input_specs(str(PACKAGES / "two_inputs.pt2")) == specs  # from the package itself
    finally:
        (PACKAGES / "two_inputs.inputs.json.away").rename(PACKAGES / "two_inputs.inputs.json")
    arrays = perfopt.example_inputs(specs, batch=3)
    assert [a.shape for a in arrays] == [(3, 16), (3, 4)]
