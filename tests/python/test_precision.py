"""Reduced precision as an opt-in candidate: perfopt.export writes a
bundle's bf16 (TorchScript) and int8 (ONNX Runtime's dynamic quantisation)
forms with their error against eager; max-autotune measures them only when
the model's `precision` option allows it, keeps one only within the reduced
tolerance (relative error, or cosine similarity), and says so in the report."""
import json

import numpy as np
import pytest

import perfopt
import perfopt.export
from perfopt import PerfoptError, Status

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")


def mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 128), torch.nn.GELU(), torch.nn.Linear(128, 16)).eval()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    folder = tmp_path_factory.mktemp("precision") / "mlp.perfopt"
    report = perfopt.export.export(mlp(), [torch.randn(2, 32)], str(folder), formats=["onnx", "torchscript"],
                                   precisions=["bf16", "int8", "fp16"])
    return folder, report


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


def x():
    return np.random.default_rng(1).standard_normal((4, 32)).astype(np.float32)


def eager(inputs):
    with torch.no_grad():
        return mlp()(torch.from_numpy(inputs)).numpy()


def reduced(candidates):
    """The reduced-precision candidates that ran (on a busy machine the
    budget may leave some unmeasured)."""
    return [c for c in candidates if c["precision"] != "fp32" and c["relative_error"] is not None]


def test_export_writes_the_reduced_forms_with_their_error(bundle, opt):
    folder, report = bundle
    manifest = json.loads((folder / "manifest.json").read_text())
    # Apart from "forms", which a perfopt from before them reads alone.
    assert all("precision" not in f for f in manifest["forms"])
    forms = {(f["format"], f.get("precision", "fp32")): f for f in manifest["forms"] + manifest["reduced_forms"]}
    assert set(forms) == {("onnx", "fp32"), ("torchscript", "fp32"), ("torchscript", "bf16"), ("onnx", "int8")}
    for key in [("torchscript", "bf16"), ("onnx", "int8")]:
        assert 0 < forms[key]["relative_error"] < 0.5 and 0.5 < forms[key]["cosine"] <= 1.0, forms[key]
    # fp16 is a GPU precision: recorded as failed, with why.
    assert [(f["precision"], "GPU precision" in f["reason"]) for f in manifest["failed"]] == [("fp16", True)]
    with opt.load(str(folder)) as model:
        assert model.report()["bundle"]["forms"] == ["onnx", "torchscript", "torchscript (bf16)", "onnx (int8)"]
        assert model.report()["bundle"]["loaded"] == "onnx"  # a reduced form never loads first
    with pytest.raises(perfopt.export.ExportError, match="unknown precision"):
        perfopt.export.export(mlp(), [torch.randn(2, 32)], str(folder.parent / "x.perfopt"), precisions=["int4"])
    with pytest.raises(perfopt.export.ExportError, match="forms of a bundle"):
        perfopt.export.export(mlp(), [torch.randn(2, 32)], str(folder.parent / "x.onnx"), precisions=["int8"])


def test_reduced_forms_are_measured_only_when_allowed(bundle, opt):
    folder, _ = bundle
    with opt.load(str(folder)) as model:
        model.set_options(tuning_budget_ms=4000)
        model.compile("max-autotune", [x()])
        compiled = model.report()["compile"]
        assert not reduced(compiled["candidates"]), compiled["candidates"]
        notes = " ".join(compiled["notes"])
        assert "the torchscript (bf16) form was not measured" in notes and "allow-reduced" in notes, notes
        model.set_options(tuning_budget_ms=4000, precision="allow-reduced")
        model.compile("max-autotune", [x()])
        compiled = model.report()["compile"]
        measured = reduced(compiled["candidates"])
        assert {c["precision"] for c in measured} == {"bf16", "int8"}, compiled["candidates"]
        for c in measured:
            assert c["cosine"] is not None and c["relative_error"] is not None, c
            assert c["within_tolerance"] == (c["relative_error"] <= 1e-2), c
        # Whatever won, it answers within the tolerance it was chosen under.
        np.testing.assert_allclose(model.run(x())[0], eager(x()), atol=2e-2 * np.abs(eager(x())).max())
        # Back to fp32: a reduced form chosen stops running at once.
        model.set_options(precision="allow-reduced", reduced_tolerance=1.0)
        model.compile("max-autotune", [x()])
        chosen = model.report()["compile"]["chosen"]
        model.set_options(precision="fp32")
        compiled = model.report()["compile"]
        if "(bf16)" in chosen or "(int8)" in chosen:
            assert "became fp32" in compiled["why"], compiled
        assert "(bf16)" not in compiled["chosen"] and "(int8)" not in compiled["chosen"]
        np.testing.assert_allclose(model.run(x())[0], eager(x()), rtol=1e-4, atol=1e-5)


def test_the_reduced_tolerance_guards_the_answer(bundle, opt):
    folder, _ = bundle
    with opt.load(str(folder)) as model:
        model.set_options(tuning_budget_ms=3000, precision="allow-reduced", reduced_tolerance=1e-7)
        model.compile("max-autotune", [x()])
        compiled = model.report()["compile"]
        assert all(not c["within_tolerance"] and "reduced-precision tolerance" in c["note"]
                   for c in reduced(compiled["candidates"])), compiled["candidates"]
        assert "(bf16)" not in compiled["chosen"] and "(int8)" not in compiled["chosen"]
        # Judged by cosine similarity instead (embeddings): a loose bound
        # admits both, an exact one neither.
        for min_cosine, admitted in [(0.9, True), (1.0, False)]:
            model.set_options(tuning_budget_ms=3000, precision="allow-reduced", min_cosine=min_cosine)
            model.compile("max-autotune", [x()])
            candidates = reduced(model.report()["compile"]["candidates"])
            # Cosine judges, with the relative bound ten times looser.
            assert candidates and all(
                c["within_tolerance"] == (c["cosine"] >= min_cosine and c["relative_error"] <= 0.1) for c in candidates)
            assert any(c["within_tolerance"] for c in candidates) == admitted, candidates


def test_a_remembered_reduced_choice_needs_the_option(bundle, opt, tmp_path):
    """A choice planted in the tuning cache that names a reduced form is not
    used where the caller asked for fp32."""
    folder, _ = bundle
    cache = tmp_path / "tuning"
    with opt.load(str(folder)) as model:
        model.set_options(tuning_cache_dir=str(cache), tuning_budget_ms=3000)
        model.compile("max-autotune", [x()])
    entry = next(cache.glob("*.json"))
    planted = json.loads(entry.read_text())
    planted["label"] = "onnx (int8): as loaded (graph optimisation all)"
    entry.write_text(json.dumps(planted))
    with opt.load(str(folder)) as model:
        model.set_options(tuning_cache_dir=str(cache), tuning_budget_ms=3000)
        model.compile("max-autotune", [x()])
        compiled = model.report()["compile"]
        assert "does not allow" in compiled["tuning"]["cache_unreadable"], compiled["tuning"]
        assert "(int8)" not in compiled["chosen"]
        np.testing.assert_allclose(model.run(x())[0], eager(x()), rtol=1e-4, atol=1e-5)


def test_bad_precision_options_are_refused(bundle, opt):
    folder, _ = bundle
    with opt.load(str(folder)) as model:
        with pytest.raises(ValueError, match="precision"):
            model.set_options(precision="bf16")
        for options, words in [({"min_cosine": 1.5}, "min_cosine"), ({"reduced_tolerance": -1.0}, "reduced_tolerance"),
                               ({"reduced_tolerance": float("nan")}, "reduced_tolerance")]:
            with pytest.raises(PerfoptError) as refused:
                model.set_options(**options)
            assert refused.value.status == Status.INVALID_ARGUMENT and words in str(refused.value)
