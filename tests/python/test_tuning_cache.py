"""The tuning cache is safe to share the way ccache's and pip's caches are
(issue 18): each test is a defect found from Python, and failed before its
fix. Entries are keyed by the model's whole content, the folder must be this
user's alone, entries are checked before what they hold is loaded, and a
full disk is a choice not remembered, never a dead host."""
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

import perfopt
import perfopt.export

from test_packages import PACKAGES

FIXTURES = Path(os.environ.get("PERFOPT_FIXTURES", Path(__file__).resolve().parents[2] / "build" / "fixtures"))


def tune(path, cache, *inputs, budget=2000):
    """Loads `path`, compiles max-autotune with `cache`, runs once: (tuning report, outputs).
    The default budget, so that a busy machine still measures two candidates
    (a choice made without comparing them is not remembered)."""
    with perfopt.Optimizer("cpu", read_environment=False) as opt, opt.load(str(path)) as model:
        model.set_options(tuning_cache_dir=str(cache), tuning_budget_ms=budget)
        model.compile("max-autotune", list(inputs))
        outputs = model.run(*inputs)
        return model.report()["compile"]["tuning"], outputs


def two_inputs():
    return np.full((2, 16), 0.5, np.float32), np.full((2, 4), -0.25, np.float32)


def entries(cache):
    return sorted(p.name for p in Path(cache).iterdir())


def test_a_choice_is_remembered_and_used(tmp_path):
    cache = tmp_path / "cache"
    first, _ = tune(FIXTURES / "two_inputs.pt", cache, *two_inputs())
    assert first["cache_result"] == "measured and remembered", first
    assert oct(cache.stat().st_mode & 0o777) == "0o700"
    again, _ = tune(FIXTURES / "two_inputs.pt", cache, *two_inputs())
    assert again["cache_result"] == "remembered choice used: nothing measured", again
    assert not [name for name in entries(cache) if name.endswith(".tmp")]


@pytest.mark.parametrize("mode", [0o777, 0o770])
def test_a_folder_others_can_write_is_refused(tmp_path, mode):
    cache = tmp_path / "shared"
    cache.mkdir()
    cache.chmod(mode)
    tuning, _ = tune(FIXTURES / "two_inputs.pt", cache, *two_inputs())
    # Before: entries were written and read there, so anyone who could write
    # the folder chose what ran.
    assert tuning["cache_result"].startswith("measured; not remembered"), tuning
    assert "writable by" in tuning["cache_result"] and "chmod go-w" in tuning["cache_result"]
    assert entries(cache) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="making a folder another user owns needs root")
def test_a_folder_another_user_owns_is_refused(tmp_path):
    cache = tmp_path / "theirs"
    cache.mkdir(mode=0o755)
    os.chown(cache, 65534, 65534)
    tuning, _ = tune(FIXTURES / "two_inputs.pt", cache, *two_inputs())
    assert "owned by uid 65534" in tuning["cache_result"], tuning
    assert entries(cache) == []


def test_a_planted_or_damaged_module_is_not_loaded(tmp_path):
    cache = tmp_path / "cache"
    x, y = two_inputs()
    _, expected = tune(FIXTURES / "two_inputs.pt", cache, x, y)
    (choice,) = [p for p in cache.iterdir() if p.suffix == ".json"]
    entry = json.loads(choice.read_text())
    # An entry that names a frozen form and a saved module whose bytes are not
    # the ones it recorded (a damaged write, or a module put there by hand).
    planted = f"{choice.stem}-{'0' * 16}.pt"
    entry.update(label="frozen", chosen="frozen", module_blake3="0" * 64, module_file=planted)
    choice.write_text(json.dumps(entry))
    shutil.copy(FIXTURES / "encoder.pt", cache / planted)
    tuning, outputs = tune(FIXTURES / "two_inputs.pt", cache, x, y)
    # Before: the module under the entry's name ran instead of the model.
    assert "not the module its entry recorded" in (tuning.get("cache_unreadable") or ""), tuning
    for got, want in zip(outputs, expected):
        np.testing.assert_allclose(got, want, rtol=1e-5)
    # An entry that names another file than its key and hash give is refused.
    entry = json.loads(choice.read_text())
    if entry.get("module_blake3"):
        entry["module_file"] = "../../elsewhere.pt"
        choice.write_text(json.dumps(entry))
        tuning, _ = tune(FIXTURES / "two_inputs.pt", cache, x, y)
        assert "names its saved module" in (tuning.get("cache_unreadable") or ""), tuning


def test_a_model_file_replaced_after_its_load_is_not_remembered(tmp_path):
    # Before: the entry was stored under the new file's hash with the loaded
    # model's choice and frozen weights, and a fresh load of the new file
    # ran the old weights; a file deleted after the load failed the compile.
    path = tmp_path / "model.pt"
    shutil.copy(FIXTURES / "two_inputs.pt", path)
    cache = tmp_path / "cache"
    with perfopt.Optimizer("cpu", read_environment=False) as opt, opt.load(str(path)) as model:
        model.set_options(tuning_cache_dir=str(cache), tuning_budget_ms=300)
        shutil.copy(FIXTURES / "aliasing.pt", tmp_path / "other.pt")
        os.replace(tmp_path / "other.pt", path)  # a redeploy under a running service
        model.compile("max-autotune", list(two_inputs()))
        result = model.report()["compile"]["tuning"]["cache_result"]
        assert result.startswith("measured; not remembered") and "changed since" in result, result
        path.unlink()
        model.compile("max-autotune", list(two_inputs()))
        assert "is gone since" in model.report()["compile"]["tuning"]["cache_result"]
    assert not cache.exists() or entries(cache) == []


def test_a_retrained_model_with_the_same_size_and_mtime_is_a_new_key(tmp_path):
    torch = pytest.importorskip("torch")
    # 4 MiB of weights: the old key sampled only the first and last MiB.
    layer = torch.jit.script(torch.nn.Linear(1024, 1024).eval())
    path = tmp_path / "model.pt"
    layer.save(str(path))
    stat = path.stat()
    with torch.no_grad():
        layer.weight[512].fill_(3.0)  # retrained: the middle of the file changes
    retrained = tmp_path / "v2" / "model.pt"  # the same name: the archive's folder is named by it
    retrained.parent.mkdir()
    layer.save(str(retrained))
    assert retrained.stat().st_size == stat.st_size
    x = np.ones((2, 1024), np.float32)
    cache = tmp_path / "cache"
    tune(path, cache, x)
    shutil.copyfile(retrained, path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # cp -p, rsync -t
    tuning, (out,) = tune(path, cache, x)
    # Before: the old key matched and the old frozen weights could run.
    assert tuning["cache_result"] == "measured and remembered", tuning
    np.testing.assert_allclose(out, layer(torch.from_numpy(x)).detach().numpy(), rtol=1e-4, atol=1e-4)


def test_a_full_disk_is_not_remembered_and_leaves_nothing(tmp_path):
    cache = tmp_path / "cache"
    script = textwrap.dedent(f"""
        import resource, signal
        import numpy as np
        import perfopt
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        # Every file write fails as on a full disk (EFBIG); the library and
        # the model are read before.
        opt = perfopt.Optimizer("cpu", read_environment=False)
        model = opt.load({str(FIXTURES / "two_inputs.pt")!r})
        model.set_options(tuning_cache_dir={str(cache)!r}, tuning_budget_ms=2000)
        resource.setrlimit(resource.RLIMIT_FSIZE, (0, resource.RLIM_INFINITY))
        x, y = np.full((2, 16), 0.5, np.float32), np.full((2, 4), -0.25, np.float32)
        model.compile("max-autotune", [x, y])
        print(model.report()["compile"]["tuning"]["cache_result"])
    """)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          env=os.environ)
    # Before: libtorch's zip writer threw from its destructor: std::terminate (exit 134).
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().startswith("measured; not remembered"), done.stdout
    assert entries(cache) == []


def onnx_copy(tmp_path):
    """The two-input ONNX model, copied and a second old: the tuning cache
    remembers the content hash of files that have settled (load_hint.rs)."""
    pytest.importorskip("onnxruntime")
    path = tmp_path / "model.onnx"
    shutil.copy(PACKAGES / "two_inputs.onnx", path)
    if path.stat().st_ctime_ns % 1_000_000_000 == 0:
        pytest.skip("this file system keeps no change times finer than a second: no hash is remembered")
    time.sleep(1.1)
    return path


def start(path, cache, *inputs):
    """A fresh start with the optimizer's tuning cache: (load note, compile report, outputs)."""
    with perfopt.Optimizer("cpu", read_environment=False, tuning_cache_dir=str(cache)) as opt:
        assert opt.report()["compile"]["tuning_cache_dir"] == str(cache)
        with opt.load(str(path)) as model:
            note = model.report()["load_note"]
            model.compile("max-autotune", list(inputs))
            return note, model.report()["compile"], model.run(*inputs)


def test_the_next_start_builds_only_what_its_tuning_chose(tmp_path):
    path, cache = onnx_copy(tmp_path), tmp_path / "cache"
    note, first, expected = start(path, cache, *two_inputs())
    assert note is None and first["tuning"]["cache_result"] == "measured and remembered", first
    # The next start builds ONNX Runtime's session as chosen (before: a
    # default session at load, then the chosen one at compile), and the
    # compile neither builds nor hashes anything.
    note, again, outputs = start(path, cache, *two_inputs())
    assert note == f"built as the tuning cache last chose: {first['chosen']}", (note, first)
    assert again["chosen"] == first["chosen"]
    assert again["tuning"]["cache_result"] == "remembered choice used: nothing measured", again
    for got, want in zip(outputs, expected):
        np.testing.assert_array_equal(got, want)
    # Another shape is another key: measured from the session as loaded,
    # whose settings are not measured twice.
    wide = (np.full((3, 16), 0.5, np.float32), np.full((3, 4), -0.25, np.float32))
    _, other, _ = start(path, cache, *wide)
    names = [c["name"] for c in other["candidates"]]
    assert len(names) == len(set(names)) and len(names) >= 4, names
    # A model rewritten in place is not the model whose choice was
    # remembered: it loads as usual.
    shutil.copy(PACKAGES / "two_inputs.onnx", path)
    note, _, _ = start(path, cache, *two_inputs())
    assert note is None


def test_a_damaged_last_choice_loads_as_usual(tmp_path):
    path, cache = onnx_copy(tmp_path), tmp_path / "cache"
    _, _, expected = start(path, cache, *two_inputs())
    (last,) = cache.glob("*.last-choice")
    record = json.loads(last.read_text())
    for label in ["graph optimisation sideways", "torchscript: frozen", "x" * 5000]:
        last.write_text(json.dumps(dict(record, label=label)))
        note, compiled, outputs = start(path, cache, *two_inputs())
        assert note is None, note
        assert compiled["tuning"]["cache_result"] == "remembered choice used: nothing measured"
        for got, want in zip(outputs, expected):
            np.testing.assert_array_equal(got, want)
    last.write_text("{not json")
    assert start(path, cache, *two_inputs())[0] is None
    # A folder others can write: nothing read from it at load either.
    last.write_text(json.dumps(record))
    cache.chmod(0o777)
    assert start(path, cache, *two_inputs())[0] is None


def folded(w, b, x):
    for _ in range(20):
        w = w.tanh() @ w
    return x @ w[:16, :16] + b


def folds(torch, keeps_state=False):
    """A module that freezing folds the product of its weights into a
    constant for, so that a frozen form wins max-autotune every time (10x
    here); with `keeps_state`, it counts its calls in a buffer."""

    class Folds(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.randn(64, 64) / 8)
            self.b = torch.nn.Parameter(torch.randn(16))
            self.register_buffer("calls", torch.zeros(1))

        def forward(self, x):
            return folded(self.w, self.b, x)

    class Counts(Folds):
        def forward(self, x):
            self.calls += 1
            return folded(self.w, self.b, x) + self.calls

    return (Counts if keeps_state else Folds)().eval()


@pytest.mark.parametrize("as_bundle", [False, True])
def test_a_frozen_choice_loads_as_the_module_the_cache_saved(tmp_path, as_bundle):
    torch = pytest.importorskip("torch")
    x = np.random.default_rng(0).random((2, 16), np.float32)
    path = tmp_path / ("folds.perfopt" if as_bundle else "folds.pt")
    module = folds(torch)
    if as_bundle:
        perfopt.export.export(module, (torch.from_numpy(x),), str(path), formats=["torchscript"])
    else:
        torch.jit.script(module).save(str(path))
    changed = (path / "manifest.json" if as_bundle else path).stat().st_ctime_ns
    if changed % 1_000_000_000 == 0:
        pytest.skip("this file system keeps no change times finer than a second: no hash is remembered")
    time.sleep(1.1)  # settled: the cache remembers its content hash (load_hint.rs)
    cache = tmp_path / "cache"
    form = "torchscript: " if as_bundle else ""

    def start(tolerance=None):
        with perfopt.Optimizer("cpu", read_environment=False, intra_op_threads=1,
                               tuning_cache_dir=str(cache)) as opt, opt.load(str(path)) as model:
            report = model.report()
            (out,) = model.run(x)
            if tolerance:
                model.set_options(error_tolerance=tolerance)
            model.compile("max-autotune", [x])
            return report, model.report()["compile"], out, [m["name"] for m in model.methods()]

    _, first, expected, methods = start()
    assert first["chosen"].startswith(form + "frozen"), first
    label = first["chosen"].split(" at ")[0]
    (last,) = cache.glob("*.last-choice")
    saved = json.loads(last.read_text())["saved"]
    assert (cache / saved["file"]).is_file() and "forward" in saved["contract"], saved
    # Loaded once, as the frozen module the cache saved: before, the model's
    # file loaded, then the compile's hit loaded the frozen module too.
    report, compiled, out, again = start()
    assert report["engine"]["form"] == label.removeprefix(form), report["engine"]
    assert report["load_note"] == (f"built as the tuning cache last chose: {label} at 1 thread (the module "
                                   "it saved, loaded in the stead of the model's file)"), report["load_note"]
    assert compiled["tuning"]["cache_result"] == "remembered choice used: nothing measured", compiled
    assert compiled["chosen"] == first["chosen"] and again == methods == ["forward"]
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    # A max-autotune the cache does not answer (another tolerance: another
    # key) measures from the model's file, loaded for it: its forms as
    # loaded and frozen, against the file's output (the saved module alone,
    # against its own, could never drift back).
    report, compiled, out, _ = start(tolerance=1e-4)
    assert report["engine"]["form"] == label.removeprefix(form), report["engine"]
    ran = {c["name"].split(" at ")[0] for c in compiled["candidates"] if c["runs"] > 0}
    assert {form + "as loaded", label} <= ran, compiled["candidates"]
    assert compiled["tuning"]["cache_result"] == "measured and remembered", compiled["tuning"]
    # A module that no longer takes the calls the record says the model took
    # is let go once, the model loads as its file, and the record forgets it.
    record = json.loads(last.read_text())
    saved = record["saved"]
    last.write_text(json.dumps(dict(record, saved=dict(saved, contract="methods encode"))))
    report, _, out, _ = start()
    assert report["engine"]["form"] == "as loaded" and report["load_note"] is None, report
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)
    assert json.loads(last.read_text()).get("saved") is None
    last.write_text(json.dumps(record))
    # A saved module whose bytes changed is not loaded: the model loads as
    # its file, and the compile measures again.
    module_file = cache / saved["file"]
    module_file.write_bytes((FIXTURES / "encoder.pt").read_bytes())
    report, compiled, out, _ = start()
    assert report["engine"]["form"] == "as loaded" and report["load_note"] is None, report
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-6)


def test_a_model_that_keeps_state_never_loads_as_a_saved_module(tmp_path):
    # The module holds the state it was saved with (the calls counted while
    # it was tuned); a form built from the file takes the live state over.
    torch = pytest.importorskip("torch")
    path = tmp_path / "counts.pt"
    torch.jit.script(folds(torch, keeps_state=True)).save(str(path))
    if path.stat().st_ctime_ns % 1_000_000_000 == 0:
        pytest.skip("this file system keeps no change times finer than a second: no hash is remembered")
    time.sleep(1.1)
    cache = tmp_path / "cache"
    x = np.zeros((2, 16), np.float32)
    outputs = []
    for _ in range(2):
        with perfopt.Optimizer("cpu", read_environment=False, intra_op_threads=1,
                               tuning_cache_dir=str(cache)) as opt, opt.load(str(path)) as model:
            assert model.report()["engine"]["form"] == "as loaded"
            (first,) = model.run(x)
            outputs.append(first)
            model.compile("max-autotune", [x])
            assert model.report()["compile"]["chosen"].startswith("frozen"), model.report()["compile"]
    (last,) = cache.glob("*.last-choice")
    assert json.loads(last.read_text()).get("saved") is None
    # Each start's first call counts from the file's zero.
    np.testing.assert_allclose(outputs[0], outputs[1], rtol=1e-6)


def test_a_model_loaded_as_its_saved_module_answers_for_its_file(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "folds.pt"
    torch.jit.script(folds(torch)).save(str(path))
    if path.stat().st_ctime_ns % 1_000_000_000 == 0:
        pytest.skip("this file system keeps no change times finer than a second: no hash is remembered")
    time.sleep(1.1)
    cache = tmp_path / "cache"
    x = np.random.default_rng(1).random((2, 16), np.float32)
    optimizer = dict(read_environment=False, intra_op_threads=2, tuning_cache_dir=str(cache))
    with perfopt.Optimizer("cpu", **optimizer) as opt, opt.load(str(path)) as model:
        (expected,) = model.run(x)
        model.set_options(threads=1)  # a choice at 1 thread
        model.compile("max-autotune", [x])
    # The model's own thread count is not what a load may build: the record
    # is written from a choice at the optimizer's count.
    with perfopt.Optimizer("cpu", **optimizer) as opt, opt.load(str(path)) as model:
        model.compile("max-autotune", [x])
        chosen = model.report()["compile"]["chosen"]
    with perfopt.Optimizer("cpu", **optimizer) as opt, opt.load(str(path)) as model:
        loaded = model.report()["engine"]
        assert loaded["form"] in chosen and model.report()["load_note"], model.report()
        # At another thread count the module is loaded again at that count
        # (oneDNN fixes a prepacked primitive's count when it is made).
        model.set_options(threads=1 if loaded["threads"] == 2 else 2)
        model.compile("none")
        engine = model.report()["engine"]
        assert (engine["form"], engine["threads"]) == (loaded["form"], 1 if loaded["threads"] == 2 else 2), engine
        np.testing.assert_allclose(model.run(x)[0], expected, rtol=1e-5, atol=1e-6)
        # A max-autotune with another key loads the file, and refuses one
        # replaced since the model loaded (a redeploy under a running service).
        other = tmp_path / "other.pt"
        torch.jit.script(folds(torch)).save(str(other))
        os.replace(other, path)
        model.set_options(error_tolerance=1e-4, threads=0)
        model.compile("max-autotune", [x])
        compiled = model.report()["compile"]
        assert any("changed since the model was loaded" in n for n in compiled["notes"]), compiled["notes"]
        np.testing.assert_allclose(model.run(x)[0], expected, rtol=1e-5, atol=1e-6)
