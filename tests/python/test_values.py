"""Real models as they are, through Python: arguments of every kind mapped
by the schema, non-tensor results, named methods, a stateful streaming model
in every compile mode, batch dimensions other than 0, outputs that own their
memory, kept reports, and the binding checked against the header."""
import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

import perfopt
from perfopt import PerfoptError, Status

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = Path(os.environ.get("PERFOPT_FIXTURES", ROOT / "build" / "fixtures"))
SCRIPTED = json.loads((FIXTURES / "manifest.json").read_text())["scripted"]


@pytest.fixture(scope="module")
def opt():
    with perfopt.Optimizer("cpu", read_environment=False) as optimizer:
        yield optimizer


def chunk(i):
    return np.load(FIXTURES / f"stateful.chunk{i}.npy")


def expected(i):
    return np.load(FIXTURES / f"stateful.expected{i}.npy")


@pytest.mark.parametrize("mode", ["none", "default", "reduce-overhead", "max-autotune"])
def test_stateful_stream_matches_pytorch(opt, mode):
    with opt.load(str(FIXTURES / "stateful.pt")) as model:
        assert model.compile(mode, [chunk(0), 16000]) is None
        for _ in range(2):
            for i in range(SCRIPTED["stateful"]["chunks"]):
                (out,) = model.run(chunk(i), 16000)
                np.testing.assert_allclose(out, expected(i), rtol=1e-5, atol=1e-6)
            assert model.call("reset_states") is None


def test_methods_and_mixed_results(opt):
    with opt.load(str(FIXTURES / "stateful.pt")) as model:
        names = {m["name"]: m for m in model.methods()}
        assert {"forward", "reset_states", "encode"} <= set(names)
        assert [a["type"] for a in names["forward"]["arguments"]] == ["Tensor", "int"]
        model.run(chunk(0), 16000)
        projected, calls = model.call("encode", chunk(0))
        assert isinstance(projected, np.ndarray) and calls == 1
        with pytest.raises(PerfoptError) as err:
            model.run(chunk(0), "sixteen thousand")
        assert err.value.status == Status.INVALID_ARGUMENT
        assert "`sr`" in err.value.message and "int" in err.value.message
        with pytest.raises(PerfoptError, match="reset_states"):
            model.call("no_such_method")


def test_every_argument_kind(opt):
    with opt.load(str(FIXTURES / "kinds.pt")) as model:
        x = np.load(FIXTURES / "kinds.x.npy")
        ones = np.ones((2, 3), np.float32)
        # 3 (an int) where the schema wants a float, a list where it wants a tuple.
        y, n, flag, name, dims = model.call(
            "forward", x, 3, 0.5, True, "vad", np.full((2, 3), 2.0, np.float32), [ones, ones], [1, 2], [2, 0.25]
        )
        np.testing.assert_allclose(y, np.load(FIXTURES / "kinds.y.npy"), rtol=1e-6)
        assert (n, flag, name, dims) == (5, False, "vad!", [2, 4])
        out = model.call("forward", x, 3, 1, False, "", None, [], [], (0, 0.0), output="torch")
        assert out[0].shape == (2, 3)


def test_a_dict_result_is_named(opt):
    with opt.load(str(FIXTURES / "returns_dict.pt")) as model:
        with pytest.raises(PerfoptError, match=r"Dict\[str, Tensor\]"):
            model.run(np.ones((2, 3), np.float32))


@pytest.mark.parametrize("which", [0, 1, 2])
def test_outputs_own_their_memory(opt, which):
    with opt.load(str(FIXTURES / "aliasing.pt")) as model:
        x = np.ones((2, 3), np.float32)
        # torch tensors from DLPack are writable (NumPy marks its views read-only).
        (out,) = model.run(x, which, output="torch")
        kept = out.clone()
        x[...] = 7.0  # the caller reuses its input
        out.fill_(-1.0)  # and writes into its output: the model is untouched
        (again,) = model.run(np.ones((2, 3), np.float32), which, output="torch")
        assert bool((again == kept).all()) and bool((out == -1.0).all())


@pytest.mark.parametrize("which", [0, 1, 2])
def test_numpy_outputs_are_writable_and_the_callers(opt, which):
    """NumPy marks arrays from a DLPack 0.x capsule read-only; perfopt's
    outputs belong to the caller, so they are writable, without a copy."""
    with opt.load(str(FIXTURES / "aliasing.pt")) as model:
        x = np.ones((2, 3), np.float32)
        (out,) = model.run(x, which)
        kept = out.copy()
        assert out.flags.writeable
        out += 1.0  # before: "assignment destination is read-only"
        np.testing.assert_array_equal(out, kept + 1.0)
        (again,) = model.run(np.ones((2, 3), np.float32), which)
        np.testing.assert_array_equal(again, kept)
        del again
        np.testing.assert_array_equal(out, kept + 1.0)


def test_large_numpy_outputs_are_writable_views_that_outlive_everything_else(opt, tmp_path):
    """Above 64 KiB an output is a writable view of perfopt's buffer, not a
    copy: it stays valid after the model and every other reference are gone,
    and a model that returns one tensor twice gets two independent arrays."""
    torch = pytest.importorskip("torch")
    import gc

    class Twice(torch.nn.Module):
        def forward(self, x):
            y = x * 2.0
            return y, y

    path = tmp_path / "twice.pt"
    torch.jit.script(Twice()).save(str(path))
    x = np.arange(256 * 128, dtype=np.float32).reshape(256, 128)  # 128 KiB
    with opt.load(str(path)) as model:
        first, second = model.run(x)
    assert first.flags.writeable and second.flags.writeable
    first[0, 0] = -1.0
    assert second[0, 0] == 0.0, "the two outputs are not views of one buffer"
    del second, model
    gc.collect()
    np.testing.assert_array_equal(first[1:], x[1:] * 2)
    first += 1.0
    np.testing.assert_array_equal(first[1:], x[1:] * 2 + 1)


def test_torch_outputs_made_inside_an_inference_scope_are_ordinary_tensors(opt):
    """The service runs its models inside `with opt.inference():`; the
    outputs it keeps are changed in place afterwards."""
    torch = pytest.importorskip("torch")
    with opt.load(str(FIXTURES / "aliasing.pt")) as model:
        with opt.inference():
            (out,) = model.run(torch.ones(2, 3), 0, output="torch")
            assert torch.is_inference_mode_enabled()
        assert not out.is_inference()
        out.add_(1.0)  # before: "Inplace update to inference tensor outside InferenceMode"


def test_batch_dims(opt):
    case = SCRIPTED["lstm_state"]
    inputs = [np.load(FIXTURES / f"lstm_state.input{i}.npy") for i in range(4)]
    reference = [np.load(FIXTURES / f"lstm_state.output{i}.npy") for i in range(3)]
    with opt.load(str(FIXTURES / "lstm_state.pt")) as model:
        dims = [None if d < 0 else d for d in case["input_batch_dims"]]
        model.set_batch_dims(dims, case["output_batch_dims"])
        for max_batch in (1, 2, 0):
            outputs = model.run_batched(*inputs, max_batch=max_batch)
            for got, want in zip(outputs, reference):
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        sample = [inputs[0][:1], inputs[1][:, :1], inputs[2][:, :1], inputs[3]]
        report = model.recommend_batch(*sample)
        assert report["recommended_batch"] >= 1 and report["trials_stopped"]
        assert model.last_report(perfopt.REPORT_RECOMMEND_BATCH) == report


def test_warmup_report_is_kept_and_iterations_bounded(opt):
    with opt.load(str(FIXTURES / "speaker.pt")) as model:
        x = np.load(FIXTURES / "speaker.input0.npy")
        report = model.warmup([x], 3)
        assert model.last_report(perfopt.REPORT_WARMUP) == report
        with pytest.raises(PerfoptError) as err:
            model.warmup([x], 2**32 - 1)
        assert err.value.status == Status.INVALID_ARGUMENT
        assert model.output_count() == 1


def runs(model):
    """How many times the model ran, failed runs included."""
    report = model.report()
    return report["calls"] + report["failed_calls"]


def kinds_args(x, n=3, dims=(1, 2), pair=(2, 0.25)):
    """kinds.pt's forward() arguments: x, n, scale, flag, name, maybe, xs, dims, pair."""
    return [x, n, 0.5, True, "vad", None, [], list(dims), pair]


def test_ints_outside_int64_are_refused_not_wrapped(opt):
    # ctypes would wrap them: 2**64 + 3 arrived as 3, 2**63 as -2**63.
    with opt.load(str(FIXTURES / "kinds.pt")) as model:
        x = np.ones((2, 3), np.float32)
        for n in (2**63, -(2**63) - 1, 2**64 + 3):
            with pytest.raises(OverflowError, match=rf"argument 1 is {n}, outside int64"):
                model.call("forward", *kinds_args(x, n=n))
        with pytest.raises(OverflowError, match="argument 7"):
            model.call("forward", *kinds_args(x, dims=[1, 2**64]))
        with pytest.raises(OverflowError, match="argument 8"):
            model.call("forward", *kinds_args(x, pair=(2**64 + 2, 0.25)))
        assert runs(model) == 0  # refused before anything reached C
        for n in (2**63 - 1, -(2**63)):  # the edges of int64 pass unchanged
            assert model.call("forward", *kinds_args(x, n=n))[1] == n


def test_numpy_scalars_are_numbers_not_tensors(opt):
    with opt.load(str(FIXTURES / "stateful.pt")) as model:
        (out,) = model.run(chunk(0), np.int64(16000))
        np.testing.assert_allclose(out, expected(0), rtol=1e-5, atol=1e-6)
        (out,) = model.run_batched(chunk(1), np.int32(16000))
        np.testing.assert_allclose(out, expected(1), rtol=1e-5, atol=1e-6)
    with opt.load(str(FIXTURES / "kinds.pt")) as model:
        x = np.load(FIXTURES / "kinds.x.npy")
        plain = model.call("forward", x, 3, 0.5, True, "vad", None, [], [1, 2], (2, 0.25))
        scalars = model.call(
            "forward", x, np.int64(3), np.float32(0.5), np.bool_(True), np.str_("vad"), None, [],
            [np.uint8(1), np.int16(2)], (np.int8(2), np.float16(0.25)),
        )
        np.testing.assert_array_equal(scalars[0], plain[0])
        assert scalars[1:] == plain[1:] and type(scalars[1]) is int
        with pytest.raises(OverflowError, match="argument 1"):
            model.call("forward", *kinds_args(x, n=np.uint64(2**64 - 1)))
        with pytest.raises(TypeError, match="complex64"):
            model.call("forward", *kinds_args(x, n=np.complex64(1)))


def test_reversed_arrays_are_copied_and_sent(opt):
    """Negative strides, which perfopt refuses, are copied to C order on the
    way (a reversed view, read-only or not, and a reversed dimension of size
    1, which NumPy still calls contiguous); the caller's array is untouched."""
    with opt.load(str(FIXTURES / "stateful.pt")) as model:
        x = chunk(0)
        want, _ = model.call("encode", x)
        twice_reversed = np.ascontiguousarray(x[:, ::-1])[:, ::-1]
        read_only = twice_reversed.copy()[:, ::-1][:, ::-1]
        read_only.flags.writeable = False
        size_one = x[::-1]
        assert size_one.flags.c_contiguous and size_one.strides[0] < 0
        for variant in (twice_reversed, read_only, size_one):
            got, _ = model.call("encode", variant)
            np.testing.assert_array_equal(got, want)
        (out,) = model.run(twice_reversed, 16000)
        np.testing.assert_allclose(out, expected(0), rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(twice_reversed, x)


def test_run_refuses_a_non_tensor_forward_before_running_it(opt):
    # kinds.pt's forward() returns a tuple with an int, a bool, a string and a
    # list of ints; returns_dict.pt's a dict: neither is run, then refused.
    with opt.load(str(FIXTURES / "kinds.pt")) as model:
        args = kinds_args(np.ones((2, 3), np.float32))
        for attempt in (lambda: model.run(*args), lambda: model.run_batched(*args)):
            with pytest.raises(PerfoptError, match=r"returns Tuple\[Tensor, int, bool, str, List\[int\]\]") as err:
                attempt()
            assert err.value.status == Status.INVALID_ARGUMENT and "call('forward'" in err.value.message
        assert runs(model) == 0
        assert model.call("forward", *args)[1] == 3
    with opt.load(str(FIXTURES / "returns_dict.pt")) as model:
        with pytest.raises(PerfoptError, match=r"Dict\[str, Tensor\]"):
            model.run(np.ones((2, 3), np.float32))
        assert runs(model) == 0


@pytest.mark.parametrize(
    "returns, refused",
    [
        ("Tensor", False),
        ("Tuple[Tensor, List[Tensor]]", False),
        ("Optional[Tensor]", False),  # a tensor or None: known when it runs
        ("__torch__.Outputs", False),  # a class or named tuple: known when it runs
        ("Tuple[Tensor, int]", True),
        ("List[int]", True),
        ("Tuple[Tensor, Tuple[Tensor, Dict[str, Tensor]]]", True),
        ("NoneType", True),
    ],
)
def test_which_forward_returns_run_refuses(returns, refused):
    methods = [{"name": "encode", "returns": ["int"]}, {"name": "forward", "returns": [returns]}]
    assert perfopt._model._non_tensor_return(methods) == (returns if refused else "")


def test_string_values_keep_their_nul(opt):
    # A str value goes with its length (not as a C string): a NUL is data.
    with opt.load(str(FIXTURES / "kinds.pt")) as model:
        args = kinds_args(np.ones((2, 3), np.float32))
        args[4] = "a\0b"
        assert model.call("forward", *args)[3] == "a\0b!"


def test_status_enum_matches_the_header():
    header = (ROOT / "include" / "perfopt.h").read_text()
    body = header.split("enum perfopt_status", 1)[1].split("};", 1)[0]
    codes = {name: int(value) for name, value in re.findall(r"(PERFOPT_\w+) = (\d+)", body)}
    ours = {("PERFOPT_" if s.name in ("OK", "COMPILE_SKIPPED") else "PERFOPT_ERR_") + s.name: int(s) for s in Status}
    assert ours == codes
    for status in Status:
        assert perfopt.status_message(status)


def test_binding_declares_every_exported_function():
    header = (ROOT / "include" / "perfopt.h").read_text()
    exported = set(re.findall(r"\b(perfopt_\w+)\(", header)) - {"perfopt_log_callback"}
    assert set(perfopt._native.DECLARED) == exported


def test_type_hints_resolve():
    import typing

    for owner in (perfopt.Model, perfopt.Optimizer):
        for name in dir(owner):
            member = getattr(owner, name)
            if callable(member) and not name.startswith("__"):
                typing.get_type_hints(member)
