"""ExecuTorch programs (.pte, written by perfopt.export) through the Python
binding: equal to eager in every compile mode, batches within the program's
bound (run_batched splitting larger ones), wrong inputs refused by status
with the program's bound named, calls from several threads at once, and the
export's own checks."""
import threading

import numpy as np
import pytest

import perfopt
import perfopt.export
from perfopt import PerfoptError, Status

from test_packages import PACKAGES

PROGRAM = PACKAGES / "two_inputs.pte"


def example():
    inputs = [np.load(p) for p in sorted(PACKAGES.glob("two_inputs.input*.npy"))]
    outputs = [np.load(p) for p in sorted(PACKAGES.glob("two_inputs.output*.npy"))]
    return inputs, outputs


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


@pytest.mark.parametrize("mode", ["none", "default", "reduce-overhead", "max-autotune"])
def test_a_program_runs_like_eager_in_every_mode(opt, mode):
    inputs, expected = example()
    with opt.load(str(PROGRAM)) as model:
        model.compile(mode, inputs)
        for got, want in zip(model.run(*inputs), expected):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        report = model.report()
        assert report["format"] == "executorch"
        assert report["engine"]["methods"][0]["inputs"][0]["shape"] == "[<=8, 16]"
        assert report["compile"]["chosen"] == "as compiled"


def test_methods_and_the_batch_bound(opt):
    inputs, expected = example()
    with opt.load(str(PROGRAM)) as model:
        [forward] = model.methods()
        assert forward["name"] == "forward" and len(forward["arguments"]) == 2
        big = [np.concatenate([x] * 5) for x in inputs]  # a batch of 10, over the bound of 8
        with pytest.raises(PerfoptError) as err:
            model.run(*big)
        assert err.value.status == Status.INVALID_ARGUMENT and "[<=8, 16]" in str(err.value)
        for got, want in zip(model.run_batched(*big), expected):
            np.testing.assert_allclose(got, np.concatenate([want] * 5), rtol=1e-5, atol=1e-6)
        with pytest.raises(PerfoptError) as err:
            model.run(inputs[0].astype(np.float64), inputs[1])
        assert err.value.status == Status.INVALID_ARGUMENT and "float32" in str(err.value)
        with pytest.raises(PerfoptError) as err:
            model.run(inputs[0])
        assert err.value.status == Status.INVALID_ARGUMENT
        # Still usable after every refusal.
        np.testing.assert_allclose(model.run(*inputs)[0], expected[0], rtol=1e-5, atol=1e-6)


def test_calls_from_several_threads(opt):
    """One program, four threads: calls queue on the program (its memory is
    planned once), each output its own copy."""
    inputs, expected = example()
    failures = []
    with opt.load(str(PROGRAM)) as model:
        def work(seed):
            rng = np.random.default_rng(seed)
            for _ in range(50):
                scale = np.float32(rng.uniform(0.5, 2))
                got = model.run(inputs[0] * scale, inputs[1])
                again = model.run(inputs[0] * scale, inputs[1])
                if not np.array_equal(got[0], again[0]):
                    failures.append(seed)
        threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert not failures


def test_broken_programs_are_refused(opt):
    with pytest.raises(PerfoptError) as err:
        opt.load(str(PACKAGES / "truncated.pte"))
    assert err.value.status == Status.MODEL_CORRUPT


def test_export_checks_the_program(tmp_path):
    torch = pytest.importorskip("torch")

    class Gain(torch.nn.Module):
        def forward(self, x, gain: float = 2.0):
            return x * gain

    report = perfopt.export.export(torch.nn.Linear(4, 3), [torch.randn(2, 4)], str(tmp_path / "linear.pte"),
                                   max_batch=16)
    assert report["format"] == "executorch" and report["relative_error"] < 1e-5
    assert report["max_batch"] == 16
    assert (tmp_path / "linear.inputs.json").exists()
    with pytest.raises(perfopt.export.ExportError, match="tensors only"):
        perfopt.export.export(Gain(), [torch.randn(2, 4), 3.0], str(tmp_path / "gain.pte"))


def test_the_optimizer_reports_its_engines(opt):
    engines = {e["format"]: e for e in opt.report()["engines"]}
    assert set(engines) == {"torchscript", "aotinductor", "onnx", "executorch"}
    assert engines["executorch"]["available"] is True
    assert engines["executorch"]["runtime"].endswith("libperfopt_executorch.so.0")


def test_export_says_when_the_lowering_fixed_the_batch(tmp_path):
    """ExecuTorch's decomposition of an LSTM cell fixes the batch at the
    example's: the export says so (a program that fails at any other batch
    is not written), and a static export works."""
    torch = pytest.importorskip("torch")

    class Step(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(8, 8)

        def forward(self, x, h, c):
            return self.cell(x, (h, c))

    args = [torch.randn(2, 8), torch.zeros(2, 8), torch.zeros(2, 8)]
    path = tmp_path / "step.pte"
    perfopt.export.export(torch.nn.Linear(8, 8), [torch.randn(2, 8)], str(path))
    with pytest.raises(perfopt.export.ExportError, match="fixed the batch at 2"):
        perfopt.export.export(Step(), args, str(path))
    # The program there before is as it was, and nothing half-made is left.
    with perfopt.Optimizer("cpu", read_environment=False) as opt, opt.load(str(path)) as earlier:
        assert len(earlier.methods()[0]["arguments"]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step.inputs.json", "step.pte"]
    report = perfopt.export.export(Step(), args, str(tmp_path / "step.pte"), dynamic_batch=False)
    assert report["relative_error"] < 1e-5


def test_a_thread_count_is_said_not_to_apply(opt):
    inputs, _ = example()
    with opt.load(str(PROGRAM)) as model:
        model.set_options(threads=1)
        model.compile("none")
        notes = model.report()["compile"]["notes"]
        assert any("threads option (1) does not apply" in n for n in notes), notes
