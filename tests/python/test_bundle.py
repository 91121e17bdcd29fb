"""Bundles (NAME.perfopt: one model in several forms, written by
perfopt.export) through the Python binding: loaded like a file, equal to
eager in every compile mode, max-autotune measuring form against form and
remembering the winning form, exports that record what failed, and broken
bundles refused by status."""
import json
import shutil
import time

import numpy as np
import pytest

import perfopt
import perfopt.export
from perfopt import PerfoptError, Status

from test_packages import PACKAGES

pytest.importorskip("onnxruntime")
BUNDLE = PACKAGES / "two_inputs.perfopt"


def example():
    inputs = [np.load(p) for p in sorted(PACKAGES.glob("two_inputs.input*.npy"))]
    outputs = [np.load(p) for p in sorted(PACKAGES.glob("two_inputs.output*.npy"))]
    return inputs, outputs


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


@pytest.mark.parametrize("mode", ["none", "default", "reduce-overhead", "max-autotune"])
def test_a_bundle_runs_like_eager_in_every_mode(opt, mode):
    inputs, expected = example()
    with opt.load(str(BUNDLE)) as model:
        model.compile(mode, inputs)
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        for got, want in zip(model.run_batched(*inputs, max_batch=1), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        report = model.report()
        assert report["name"] == "two_inputs"
        assert report["bundle"]["forms"] == ["onnx", "torchscript"]
        assert report["bundle"]["loaded"] == "onnx"


def test_max_autotune_measures_every_form_and_the_cache_remembers_which(opt, tmp_path):
    inputs, expected = example()
    cache = tmp_path / "tuning"
    with opt.load(str(BUNDLE)) as model:
        model.set_options(tuning_cache_dir=str(cache))
        model.compile("max-autotune", inputs)
        compiled = model.report()["compile"]
        names = [c["name"] for c in compiled["candidates"]]
        assert any(n.startswith("onnx: ") for n in names), names
        assert any(n.startswith("torchscript: ") for n in names), names
        measured = [c for c in compiled["candidates"] if c["runs"] > 0]
        assert {c["name"].split(":")[0] for c in measured} == {"onnx", "torchscript"}, compiled
        chosen = compiled["chosen"]
        assert chosen.split(":")[0] in ("onnx", "torchscript")
    # The next start: the remembered form, nothing measured.
    with opt.load(str(BUNDLE)) as model:
        model.set_options(tuning_cache_dir=str(cache))
        model.compile("max-autotune", inputs)
        report = model.report()
        assert report["compile"]["chosen"] == chosen
        assert "nothing measured" in report["compile"]["tuning"]["cache_result"]
        assert report["format"] == chosen.split(":")[0]
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # A planted choice naming a form the bundle does not have: measured again.
    entry = next(cache.glob("*.json"))
    planted = json.loads(entry.read_text())
    planted["label"] = "pytorch: frozen"
    entry.write_text(json.dumps(planted))
    with opt.load(str(BUNDLE)) as model:
        model.set_options(tuning_cache_dir=str(cache))
        model.compile("max-autotune", inputs)
        tuning = model.report()["compile"]["tuning"]
        assert "names no form of this bundle" in tuning["cache_unreadable"], tuning


def test_export_records_the_forms_that_failed(tmp_path):
    torch = pytest.importorskip("torch")

    class Scaled(torch.nn.Module):
        def forward(self, x, factor: float):
            return x * factor

    with pytest.raises(perfopt.export.ExportError) as failed:
        perfopt.export.export(Scaled(), [torch.ones(2, 3), 2.0], str(tmp_path / "scaled.perfopt"),
                              formats=["onnx"])
    assert "no form exported" in str(failed.value) and "onnx" in str(failed.value)
    with pytest.raises(perfopt.export.ExportError, match="unknown format"):
        perfopt.export.export(Scaled(), [torch.ones(2, 3), 2.0], str(tmp_path / "x.perfopt"), formats=["tflite"])
    taken = tmp_path / "taken.perfopt"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(perfopt.export.ExportError, match="not a perfopt bundle"):
        perfopt.export.export(torch.nn.Linear(3, 2), [torch.ones(2, 3)], str(taken), formats=["torchscript"])
    # A TorchScript-only bundle: one form, loaded and run.
    linear = torch.nn.Linear(3, 2).eval()
    report = perfopt.export.export(linear, [torch.ones(2, 3)], str(tmp_path / "linear.perfopt"),
                                   formats=["torchscript"])
    assert [f["format"] for f in report["forms"]] == ["torchscript"] and not report["failed"]
    assert json.loads((tmp_path / "linear.perfopt" / "inputs.json").read_text())[0]["shape"] == [-1, 3]
    with perfopt.Optimizer("cpu", read_environment=False) as opt, opt.load(str(tmp_path / "linear.perfopt")) as m:
        x = np.ones((4, 3), np.float32)
        np.testing.assert_allclose(m.run(x)[0], linear(torch.from_numpy(x)).detach().numpy(), rtol=1e-6)


def test_broken_bundles_are_refused_by_status(opt, tmp_path):
    def copy(name):
        target = tmp_path / name
        shutil.copytree(BUNDLE, target)
        return target

    escaping = copy("escaping.perfopt")
    manifest = json.loads((escaping / "manifest.json").read_text())
    manifest["forms"][0]["file"] = "../two_inputs.onnx"
    (escaping / "manifest.json").write_text(json.dumps(manifest))
    missing = copy("missing.perfopt")
    for form in ("model.onnx", "model.pt"):
        (missing / form).unlink()
    lying = copy("lying.perfopt")
    manifest = json.loads((lying / "manifest.json").read_text())
    manifest["forms"] = [{"format": "torchscript", "file": "model.onnx"}]
    (lying / "manifest.json").write_text(json.dumps(manifest))
    plain = tmp_path / "plain"
    plain.mkdir()
    for path, status, words in [
        (escaping, Status.LOAD_FAILED, "plain name"),
        (missing, Status.FILE_NOT_FOUND, "no form of the bundle"),  # every form failed so
        (lying, Status.LOAD_FAILED, "of the onnx format"),
        (plain, Status.NOT_A_FILE, "directory"),
    ]:
        with pytest.raises(PerfoptError) as refused:
            opt.load(str(path))
        assert refused.value.status == status and words in str(refused.value), (path, refused.value)


def test_a_form_that_is_not_the_same_model_to_a_caller_is_not_measured(opt, tmp_path):
    """A form whose methods or state differ from the first form's (a bundle
    put together by hand) is left out of max-autotune, with a note: the
    model's checks, methods and state follow the first form."""
    from test_models import FIXTURES

    folder = tmp_path / "mixed.perfopt"
    shutil.copytree(BUNDLE, folder)
    shutil.copy(FIXTURES / "stateful.pt", folder / "model.pt")
    inputs, expected = example()
    with opt.load(str(folder)) as model:
        model.compile("max-autotune", inputs)
        compiled = model.report()["compile"]
        assert all(c["name"].startswith("onnx: ") for c in compiled["candidates"]), compiled
        assert any("the torchscript form was not measured" in n for n in compiled["notes"]), compiled["notes"]
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_bundle_takes_the_inputs_its_first_form_took_whichever_form_runs(opt, tmp_path):
    """An ONNX graph fixes the sizes its export did not make dynamic; a traced
    module takes any (and may answer wrongly where the trace baked sizes
    in). The model takes what its first form took, whichever form runs."""
    inputs, expected = example()
    other_size = [inputs[0][:, :8].copy(), inputs[1]]
    # ONNX first: a traced module chosen later is held to ONNX's sizes.
    with opt.load(str(BUNDLE)) as model:
        for mode in ["none", "max-autotune"]:
            model.compile(mode, inputs)
            with pytest.raises(PerfoptError) as refused:
                model.run(*other_size)
            assert refused.value.status == Status.INVALID_ARGUMENT, refused.value
            assert "float32[?,16]" in str(refused.value) and "as its onnx form was exported" in str(refused.value)
    # TorchScript first: the ONNX graph would refuse sizes the model took,
    # so max-autotune does not measure it.
    folder = tmp_path / "torchscript_first.perfopt"
    shutil.copytree(BUNDLE, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["forms"].reverse()
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with opt.load(str(folder)) as model:
        model.compile("max-autotune", inputs)
        compiled = model.report()["compile"]
        assert all(c["name"].startswith("torchscript: ") for c in compiled["candidates"]), compiled
        assert any("the onnx form was not measured: it takes fewer input sizes" in n
                   for n in compiled["notes"]), compiled["notes"]
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_a_failed_re_export_keeps_the_bundle_that_was_there(tmp_path):
    torch = pytest.importorskip("torch")
    linear = torch.nn.Linear(3, 2).eval()
    folder = tmp_path / "linear.perfopt"
    perfopt.export.export(linear, [torch.ones(2, 3)], str(folder), formats=["torchscript"])
    before = sorted(p.name for p in folder.iterdir())

    class Scaled(torch.nn.Module):
        def forward(self, x, factor: float):
            return x * factor

    with pytest.raises(perfopt.export.ExportError, match="no form exported"):
        perfopt.export.export(Scaled(), [torch.ones(2, 3), 2.0], str(folder), formats=["onnx"])
    assert sorted(p.name for p in folder.iterdir()) == before
    assert [p.name for p in tmp_path.iterdir()] == ["linear.perfopt"]  # no staging folder left
    with pytest.raises(perfopt.export.ExportError, match="formats is a list"):
        perfopt.export.export(linear, [torch.ones(2, 3)], str(folder), formats="onnx")
    # Exported again with other forms: the folder holds those only.
    perfopt.export.export(linear, [torch.ones(2, 3)], str(folder), formats=[" onnx", "onnx"])
    assert sorted(p.name for p in folder.iterdir()) == ["inputs.json", "manifest.json", "model.onnx"]


def test_a_bundle_builds_its_form_as_its_tuning_last_chose(tmp_path):
    bundle = tmp_path / "two_inputs.perfopt"
    shutil.copytree(BUNDLE, bundle)
    if (bundle / "manifest.json").stat().st_ctime_ns % 1_000_000_000 == 0:
        pytest.skip("this file system keeps no change times finer than a second: no hash is remembered")
    time.sleep(1.1)  # settled: the cache remembers its content hash (load_hint.rs)
    cache = tmp_path / "cache"
    inputs, expected = example()

    def start():
        # One intra-op thread: a choice at 2 is more than a load may build.
        with perfopt.Optimizer("cpu", read_environment=False, intra_op_threads=1,
                               tuning_cache_dir=str(cache)) as opt:
            with opt.load(str(bundle)) as model:
                report = model.report()
                for got, want in zip(model.run(*inputs), expected):
                    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
                model.compile("max-autotune", inputs)
                return report, model.report()["compile"]

    _, first = start()
    (last,) = cache.glob("*.last-choice")
    record = json.loads(last.read_text())
    assert record["label"] == first["chosen"].split(" at ")[0], (record, first)
    # The chosen form's contract (the calls and batches it takes, their
    # kinds) was the ONNX form's: remembered, so a TorchScript form chosen
    # may load alone in its stead, held to the inputs ONNX took.
    stand_in = record["stand_in"]
    assert "forward" in stand_in["contract"] and stand_in["stands_in_for"] == "onnx", record
    assert stand_in["held_inputs"] == "float32[?,16]; float32[?,4]", record
    alone = ("loaded its torchscript form alone, as the tuning cache last chose: it takes the calls "
             "and batches of the onnx form, whose output stays the reference")
    renamed = dict(stand_in, contract=stand_in["contract"].replace("forward", "encode"))
    for label, threads, remembered, loaded, note in [
        ("onnx: graph optimisation basic", 1, stand_in, "onnx",
         "built as the tuning cache last chose: onnx: graph optimisation basic at 1 thread"),
        ("torchscript: as loaded", 1, stand_in, "torchscript", alone),
        # No stand-in remembered (a form that takes other calls), or one the
        # form no longer matches once loaded: the bundle's order stays.
        ("torchscript: as loaded", 1, None, "onnx", None),
        ("torchscript: as loaded", 1, renamed, "onnx", None),
        # A reduced form never loads alone; a form the bundle lacks; more
        # threads than the optimizer's.
        ("onnx (int8): as loaded (graph optimisation all)", 1, stand_in, "onnx", None),
        ("package: as compiled", 1, stand_in, "onnx", None),
        ("onnx: graph optimisation basic", 2, stand_in, "onnx", None),
    ]:
        last.write_text(json.dumps(dict(record, label=label, threads=threads, stand_in=remembered)))
        report, compiled = start()
        assert report["bundle"]["loaded"] == loaded, (label, report["bundle"])
        assert report["bundle"]["stands_in_for"] == (None if loaded == "onnx" else "onnx"), report["bundle"]
        assert report["load_note"] == note, (label, report["load_note"])
        if note and loaded == "onnx":
            assert (report["engine"]["form"], report["engine"]["threads"]) == ("graph optimisation basic", 1)
        if remembered is renamed:
            # Refused once, then forgotten: no start loads it for nothing again.
            assert any("other calls, batches or inputs" in n for n in report["bundle"]["notes"])
            assert json.loads(last.read_text()).get("stand_in") is None
        # The remembered entry still decides the compile.
        assert compiled["chosen"] == first["chosen"], compiled


def test_a_chosen_form_loaded_alone_is_tuned_against_the_form_it_stands_in_for(tmp_path):
    bundle = tmp_path / "two_inputs.perfopt"
    shutil.copytree(BUNDLE, bundle)
    if (bundle / "manifest.json").stat().st_ctime_ns % 1_000_000_000 == 0:
        pytest.skip("this file system keeps no change times finer than a second: no hash is remembered")
    time.sleep(1.1)
    cache = tmp_path / "cache"
    inputs, expected = example()
    optimizer = dict(read_environment=False, intra_op_threads=1, tuning_cache_dir=str(cache))
    with perfopt.Optimizer("cpu", **optimizer) as opt, opt.load(str(bundle)) as model:
        model.compile("max-autotune", inputs)
    (last,) = cache.glob("*.last-choice")
    record = json.loads(last.read_text())
    last.write_text(json.dumps(dict(record, label="torchscript: as loaded", threads=1)))
    assert record["stand_in"]["held_inputs"], record
    for entry in cache.glob("*.json"):
        entry.unlink()  # no entry: the next compile measures
    with perfopt.Optimizer("cpu", **optimizer) as opt, opt.load(str(bundle)) as model, \
            opt.load(str(bundle / "model.onnx")) as onnx_file:
        assert model.report()["bundle"]["loaded"] == "torchscript"
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # To a caller it is the model the ONNX form was: its methods and
        # output count (the schema's spelling aside).
        names = lambda m: [(x["name"], len(x["arguments"])) for x in m.methods()]  # noqa: E731
        assert names(model) == names(onnx_file) == [("forward", 2)]
        assert model.output_count() == onnx_file.output_count()
        # Held to what the ONNX form took: other sizes or dtypes are refused
        # as ONNX refused them (a trace could answer them wrongly), at any batch.
        for bad in ([inputs[0].astype(np.float64), inputs[1]], [inputs[0][:, :8].copy(), inputs[1]]):
            with pytest.raises(PerfoptError) as refused:
                model.run(*bad)
            assert refused.value.status == Status.INVALID_ARGUMENT and "as its onnx form" in str(refused.value)
            with pytest.raises(PerfoptError):
                onnx_file.run(*bad)
        wider = [np.concatenate([x, x, x]) for x in inputs]
        for got, want in zip(model.run(*wider), onnx_file.run(*wider)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        model.compile("max-autotune", inputs)
        compiled = model.report()["compile"]
        # The ONNX form is measured and is the reference: its own output (the
        # same session's) is off by nothing.
        onnx = [c for c in compiled["candidates"] if c["name"].startswith("onnx: ") and c["runs"] > 0]
        assert onnx and min(c["relative_error"] for c in onnx) == 0.0, compiled["candidates"]
        assert not any("errors are measured against" in n for n in compiled["notes"]), compiled["notes"]
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        # With nothing compared (a budget too short for two), what runs is
        # the ONNX form as loaded, the reference, not the form loaded alone.
        for entry in cache.glob("*.json"):
            entry.unlink()
        model.set_options(tuning_budget_ms=1)
        model.compile("max-autotune", inputs)
        compiled = model.report()["compile"]
        assert compiled["chosen"].startswith("onnx: as loaded"), compiled
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    # What it chose is remembered standing in for the same form.
    final = json.loads(last.read_text())
    assert final["stand_in"] == record["stand_in"], final
