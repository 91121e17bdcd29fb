"""The misuse suite through Python: the binding's high-level API and the raw
ctypes declarations. Every bad call raises (or returns) its own status with a
message, and the next correct call on the same objects succeeds."""
import ctypes
import json
import os
import threading
from pathlib import Path

import numpy as np
import pytest

import perfopt
from perfopt import PerfoptError, Status, _native

FIXTURES = Path(os.environ.get("PERFOPT_FIXTURES", Path(__file__).resolve().parents[2] / "build" / "fixtures"))
LIB = _native.lib()


@pytest.fixture(scope="module")
def env():
    opt = perfopt.Optimizer("cpu", read_environment=False)
    model = opt.load(str(FIXTURES / "two_inputs.pt"))
    x = np.full((2, 16), 0.5, np.float32)
    y = np.full((2, 4), -0.25, np.float32)
    yield opt, model, x, y
    model.close()
    opt.close()


def last_error():
    raw = LIB.perfopt_last_error()
    return raw.decode() if raw else ""


def dl(array, **changes):
    """A DLTensor for `array`, with fields changed; kept alive by the caller."""
    shape = (ctypes.c_int64 * max(array.ndim, 1))(*array.shape)
    t = _native.DLTensor()
    t.data = array.ctypes.data
    t.device = _native.DLDevice(1, 0)
    t.ndim = array.ndim
    t.dtype = _native.DLDataType(2, 32, 1)
    t.shape = ctypes.cast(shape, ctypes.POINTER(ctypes.c_int64))
    for key, value in changes.items():
        setattr(t, key, value)
    return t, shape


def raw_run(model, tensors, capacity=4):
    arr = (_native.DLTensor * max(len(tensors), 1))(*tensors)
    outs = (ctypes.POINTER(_native.DLManagedTensor) * max(capacity, 1))()
    n = ctypes.c_size_t(0)
    status = LIB.perfopt_model_run(model._ptr, arr, len(tensors), outs, capacity, ctypes.byref(n))
    if status == 0:
        for i in range(n.value):
            outs[i].contents.deleter(outs[i])
    return status


def new_config(**fields):
    config = _native.perfopt_config()
    LIB.perfopt_config_default(ctypes.byref(config))
    config.device = b"cpu"
    config.read_environment = 0
    for key, value in fields.items():
        setattr(config, key, value)
    out = ctypes.c_void_p()
    status = LIB.perfopt_optimizer_new(ctypes.byref(config), ctypes.byref(out))
    if status == 0:
        LIB.perfopt_optimizer_free(out)
    return status


def high(call):
    """Runs a high-level call; returns the status it raised."""
    try:
        call()
    except PerfoptError as err:
        return err.status
    except (TypeError, ValueError):
        return "python"
    return Status.OK


def cases(opt, model, x, y):
    tmp = FIXTURES / "misuse-py"
    tmp.mkdir(exist_ok=True)
    (tmp / "text.pt").write_text("not a model")
    (tmp / "cut.pt").write_bytes((FIXTURES / "two_inputs.pt").read_bytes()[:700])
    keep = []

    def bad_input(**changes):
        t, shape = dl(x, **changes)
        keep.append(shape)
        good_y, shape_y = dl(y)
        keep.append(shape_y)
        return raw_run(model, [t, good_y])

    return [
        ("config struct_size 0", lambda: new_config(struct_size=0), Status.STRUCT_SIZE, "struct_size"),
        ("config struct_size 9999", lambda: new_config(struct_size=9999), Status.STRUCT_SIZE, "struct_size"),
        ("device empty", lambda: new_config(device=b""), Status.INVALID_ARGUMENT, "unknown device"),
        ("device tpu", lambda: new_config(device=b"tpu"), Status.INVALID_ARGUMENT, "tpu"),
        ("device cuda:x", lambda: new_config(device=b"cuda:x"), Status.INVALID_ARGUMENT, "cuda:x"),
        ("device bad UTF-8", lambda: new_config(device=b"\xff\xfe"), Status.INVALID_UTF8, "UTF-8"),
        ("compile mode bad UTF-8", lambda: new_config(compile_mode=b"\xc3"), Status.INVALID_UTF8, "UTF-8"),
        ("compile mode unknown", lambda: new_config(compile_mode=b"ludicrous"), Status.INVALID_ARGUMENT, "ludicrous"),
        ("tf32 7", lambda: new_config(tf32=7), Status.INVALID_ARGUMENT, "tf32"),
        ("cudnn_benchmark -3", lambda: new_config(cudnn_benchmark=-3), Status.INVALID_ARGUMENT, "cudnn_benchmark"),
        ("torch_compile 2", lambda: new_config(torch_compile=2), Status.INVALID_ARGUMENT, "torch_compile"),
        ("cpu_optimization 5", lambda: new_config(cpu_optimization=5), Status.INVALID_ARGUMENT, "cpu_optimization"),
        ("read_environment 9", lambda: new_config(read_environment=9), Status.INVALID_ARGUMENT, "read_environment"),
        ("threads -1", lambda: new_config(intra_op_threads=-1), Status.INVALID_ARGUMENT, "intra_op_threads"),
        ("config NULL out", lambda: LIB.perfopt_optimizer_new(None, None), Status.NULL_ARGUMENT, "out"),
        ("config_default NULL", lambda: LIB.perfopt_config_default(None), Status.NULL_ARGUMENT, "config"),
        ("log level 42", lambda: LIB.perfopt_set_log_callback(_native.LOG_CALLBACK(), None, 42),
         Status.INVALID_ARGUMENT, "max_level"),
        ("report NULL handle", lambda: LIB.perfopt_optimizer_report(None, None, 0, None), Status.NULL_ARGUMENT,
         "optimizer"),
        ("report too small", lambda: LIB.perfopt_optimizer_report(opt._ptr, ctypes.create_string_buffer(4), 4, None),
         Status.BUFFER_TOO_SMALL, "needed"),
        ("batch size NULL out", lambda: LIB.perfopt_optimal_batch_size(opt._ptr, None), Status.NULL_ARGUMENT, "out"),
        ("model handle as optimizer", lambda: LIB.perfopt_optimal_batch_size(model._ptr, ctypes.byref(ctypes.c_int32())),
         Status.INVALID_HANDLE, "perfopt_model"),
        ("scope exit NULL", lambda: LIB.perfopt_inference_exit(None), Status.NULL_ARGUMENT, "scope"),
        ("scope enter NULL out", lambda: LIB.perfopt_inference_enter(opt._ptr, None), Status.NULL_ARGUMENT, "out"),
        ("scope exit twice", lambda: scope_twice(opt), Status.INVALID_HANDLE, "not a live"),
        ("scope out of order", lambda: scope_out_of_order(opt), Status.SCOPE_ORDER, "innermost"),
        ("scope on another thread", lambda: scope_other_thread(opt), Status.WRONG_THREAD, "thread"),
        ("load missing", lambda: high(lambda: opt.load(str(tmp / "nope.pt"))), Status.FILE_NOT_FOUND, "nope.pt"),
        ("load text", lambda: high(lambda: opt.load(str(tmp / "text.pt"))), Status.LOAD_FAILED, "text.pt"),
        ("load truncated", lambda: high(lambda: opt.load(str(tmp / "cut.pt"))), Status.MODEL_CORRUPT, "cut.pt"),
        ("load directory", lambda: high(lambda: opt.load(str(tmp))), Status.NOT_A_FILE, "directory"),
        ("load empty path", lambda: high(lambda: opt.load("")), Status.FILE_NOT_FOUND, "empty"),
        ("load NULL path", lambda: LIB.perfopt_model_load(opt._ptr, None, None, ctypes.byref(ctypes.c_void_p())),
         Status.NULL_ARGUMENT, "path"),
        ("compile unknown mode", lambda: high(lambda: model.compile("hyper")), Status.INVALID_ARGUMENT, "hyper"),
        ("compile empty mode", lambda: high(lambda: model.compile("")), Status.INVALID_ARGUMENT, "compile mode"),
        ("compile warm-up NULL n 1", lambda: LIB.perfopt_model_compile(model._ptr, b"default", None, 1),
         Status.NULL_ARGUMENT, "warmup_inputs"),
        ("options tolerance -1", lambda: high(lambda: model.set_options(error_tolerance=-1.0)),
         Status.INVALID_ARGUMENT, "error_tolerance"),
        ("options cache 0", lambda: high(lambda: model.set_options(graph_cache_size=0)), Status.INVALID_ARGUMENT,
         "graph_cache_size"),
        ("options margin 2", lambda: high(lambda: model.set_options(memory_margin=2.0)), Status.INVALID_ARGUMENT,
         "memory_margin"),
        ("run one input", lambda: high(lambda: model.run(x)), Status.INVALID_ARGUMENT, "takes 2 input(s)"),
        ("run three inputs", lambda: high(lambda: model.run(x, y, y)), Status.INVALID_ARGUMENT, "takes 2 input(s)"),
        ("run wrong features", lambda: high(lambda: model.run(np.zeros((2, 3), np.float32), y)), Status.TORCH,
         "mat1 and mat2"),
        ("run float64 input", lambda: high(lambda: model.run(x.astype(np.float64), y)), Status.TORCH, "two_inputs"),
        ("run int64 input", lambda: high(lambda: model.run(x.astype(np.int64), y)), Status.TORCH, "two_inputs"),
        ("run complex input", lambda: "python" if high(lambda: model.run(x.astype(np.complex64), y)) == "python"
         else Status.OK, "python", None),
        ("run dtype lanes 4", lambda: bad_input(dtype=_native.DLDataType(2, 32, 4)), Status.INVALID_ARGUMENT, "lanes"),
        ("run dtype bits 24", lambda: bad_input(dtype=_native.DLDataType(2, 24, 1)), Status.INVALID_ARGUMENT, "dtype"),
        ("run ndim 100", lambda: bad_input(ndim=100), Status.INVALID_ARGUMENT, "ndim"),
        ("run shape NULL", lambda: bad_input(shape=None), Status.INVALID_ARGUMENT, "shape is NULL"),
        ("run data NULL", lambda: bad_input(data=None), Status.INVALID_ARGUMENT, "data is NULL"),
        ("run device type 99", lambda: bad_input(device=_native.DLDevice(99, 0)), Status.INVALID_ARGUMENT,
         "device type"),
        ("run CUDA pointer without CUDA", lambda: bad_input(device=_native.DLDevice(2, 3)), Status.INVALID_ARGUMENT,
         "CUDA"),
        ("run capacity 1", lambda: raw_run(model, [dl(x)[0], dl(y)[0]], capacity=1), Status.BUFFER_TOO_SMALL,
         "outputs_capacity"),
        ("warmup 0 iterations", lambda: high(lambda: model.warmup([x, y], iterations=0)), Status.INVALID_ARGUMENT,
         "iterations"),
        ("recommend on batch 2", lambda: high(lambda: model.recommend_batch(x, y)), Status.INVALID_ARGUMENT,
         "dimension 0 of size 1"),
        ("run_batched -3", lambda: high(lambda: model.run_batched(x, y, max_batch=-3)), Status.INVALID_ARGUMENT,
         "max_batch"),
        ("run_batched mismatched", lambda: high(lambda: model.run_batched(x, y[:1])), Status.INVALID_ARGUMENT,
         "dimension 0 of size 2"),
        ("model report NULL buf", lambda: LIB.perfopt_model_report(model._ptr, None, 16, None), Status.NULL_ARGUMENT,
         "buf"),
    ]


def scope_twice(opt):
    s = ctypes.c_void_p()
    LIB.perfopt_inference_enter(opt._ptr, ctypes.byref(s))
    LIB.perfopt_inference_exit(s)
    return LIB.perfopt_inference_exit(s)


def scope_out_of_order(opt):
    a, b = ctypes.c_void_p(), ctypes.c_void_p()
    LIB.perfopt_inference_enter(opt._ptr, ctypes.byref(a))
    LIB.perfopt_inference_enter(opt._ptr, ctypes.byref(b))
    status = LIB.perfopt_inference_exit(a)
    message = last_error()
    LIB.perfopt_inference_exit(b)
    LIB.perfopt_inference_exit(a)
    scope_out_of_order.message = message
    return status


def scope_other_thread(opt):
    s = ctypes.c_void_p()
    LIB.perfopt_inference_enter(opt._ptr, ctypes.byref(s))
    result = {}

    def elsewhere():
        result["status"] = LIB.perfopt_inference_exit(s)
        result["message"] = last_error()

    t = threading.Thread(target=elsewhere)
    t.start()
    t.join()
    LIB.perfopt_inference_exit(s)
    scope_other_thread.message = result["message"]
    return result["status"]


def test_at_least_fifty_distinct_misuses(env):
    opt, model, x, y = env
    table = cases(opt, model, x, y)
    assert len(table) >= 50
    failures = []
    for name, call, expected, needle in table:
        status = call()
        message = getattr(scope_other_thread, "message", None) if name == "scope on another thread" else None
        if name == "scope out of order":
            message = scope_out_of_order.message
        if message is None:
            message = last_error()
        if status != expected or (needle and needle not in message):
            failures.append(f"{name}: {status!r} {message!r}, expected {expected!r} with {needle!r}")
        # The next correct calls succeed.
        out = model.run(x, y)
        assert len(out) == 2, name
        assert opt.optimal_batch_size() == 1, name
    assert not failures, "\n".join(failures)


def test_model_usable_after_its_file_changed(env, tmp_path):
    opt, _, x, y = env
    copy = tmp_path / "m.pt"
    copy.write_bytes((FIXTURES / "two_inputs.pt").read_bytes())
    with opt.load(str(copy)) as model:
        before = model.run(x, y)
        copy.write_bytes(b"overwritten")
        after = model.run(x, y)
        assert all(np.array_equal(a, b) for a, b in zip(before, after))
    assert json.loads(json.dumps(opt.report()))["device"]["kind"] == "cpu"


def runs(model):
    """How many times the model ran, failed runs included."""
    report = model.report()
    return report["calls"] + report["failed_calls"]


def test_strings_with_nul_are_refused(env, tmp_path):
    """A C string ends at its first NUL: "forward\\0anything" would call
    forward(), "m.pt\\0.bak" load m.pt. Each is refused, naming the argument."""
    opt, model, x, y = env
    path = str(FIXTURES / "two_inputs.pt")
    refusals = [
        ("method", lambda: model.call("forward\0anything", x, y)),
        ("method", lambda: model.call("\0", x, y)),
        ("path", lambda: opt.load(path + "\0.bak")),
        ("name", lambda: opt.load(path, "two\0inputs")),
        ("mode", lambda: model.compile("default\0max-autotune")),
        ("tuning_cache_dir", lambda: model.set_options(tuning_cache_dir=str(tmp_path) + "\0x")),
        ("device", lambda: perfopt.Optimizer("cpu\0cuda", read_environment=False)),
        ("compile_mode", lambda: perfopt.Optimizer("cpu", compile_mode="default\0x", read_environment=False)),
    ]
    ran = runs(model)
    for name, call in refusals:
        with pytest.raises(ValueError, match=f"^{name} contains a NUL character"):
            call()
    assert runs(model) == ran  # nothing ran
    with pytest.raises(TypeError, match="method must be a str"):
        model.call(b"forward", x, y)
    assert len(model.run(x, y)) == 2


def test_ints_that_ctypes_would_wrap_are_refused(env):
    """ctypes wraps an int to its C type's width (iterations 2**32 + 3 would
    run 3 times, batch dimension 2**32 + 1 would be 1): refused, named."""
    opt, model, x, y = env
    refusals = [
        ("iterations", lambda: model.warmup([x, y], iterations=2**32 + 3)),
        ("iterations", lambda: model.warmup([x, y], iterations=-1)),
        ("max_batch", lambda: model.run_batched(x, y, max_batch=2**32 + 1)),
        (r"inputs\[1\]", lambda: model.set_batch_dims([0, 2**32 + 1])),
        (r"outputs\[0\]", lambda: model.set_batch_dims([0, 0], [-(2**31) - 1])),
        ("graph_cache_size", lambda: model.set_options(graph_cache_size=2**32 + 1)),
        ("graph_warmup_runs", lambda: model.set_options(graph_warmup_runs=-1)),
        ("tuning_budget_ms", lambda: model.set_options(tuning_budget_ms=2**40)),
        ("kind", lambda: model.last_report(2**32 + perfopt.REPORT_WARMUP)),
        ("intra_op_threads", lambda: perfopt.Optimizer("cpu", intra_op_threads=2**32 + 2, read_environment=False)),
        ("inter_op_threads", lambda: perfopt.Optimizer("cpu", inter_op_threads=2**31, read_environment=False)),
        ("status", lambda: perfopt.status_message(2**32 + Status.TORCH)),
        ("level", lambda: perfopt.set_log_level(2**32 + 3)),
    ]
    ran = runs(model)
    for name, call in refusals:
        with pytest.raises(OverflowError, match=f"^{name} is -?[0-9]+, outside u?int(32|64)"):
            call()
    assert runs(model) == ran  # nothing ran
    with pytest.raises(TypeError, match=r"inputs\[0\] must be an int, not float"):
        model.set_batch_dims([1.5])
    # The edges of each range still reach perfopt, which judges them itself.
    with pytest.raises(PerfoptError) as err:
        model.warmup([x, y], iterations=2**32 - 1)
    assert err.value.status == Status.INVALID_ARGUMENT
    with pytest.raises(PerfoptError) as err:
        model.run_batched(x, y, max_batch=-(2**31))
    assert err.value.status == Status.INVALID_ARGUMENT
    assert len(model.run(x, y)) == 2
