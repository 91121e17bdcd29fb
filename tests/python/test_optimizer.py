"""The Python binding against the built library (make test-python)."""
import logging
import re
import sys
import threading
from pathlib import Path

import pytest

import perfopt
from perfopt import PerfoptError, Status, _native

ROOT = Path(__file__).resolve().parents[2]


def test_versions():
    assert perfopt.abi_version() == _native.ABI_VERSION
    assert perfopt.version().startswith("perfopt 0.1.0 (libtorch 2.11.0, cuda ")


def test_status_codes_match_the_header():
    header = (ROOT / "include" / "perfopt.h").read_text()
    for name, value in re.findall(r"PERFOPT_(?:ERR_)?([A-Z_0-9]+) = (\d+)", header):
        assert Status[name] == int(value)


def test_cpu_optimizer_report():
    with perfopt.Optimizer("cpu", read_environment=False, intra_op_threads=1) as opt:
        report = opt.report()
        assert report["device"]["kind"] == "cpu"
        assert report["settings"]["intra_op_threads"]["value"] == 1
        assert report["settings"]["intra_op_threads"]["source"] == "config"
        assert {s["setting"] for s in report["skipped"]} >= {"cudnn_benchmark", "tf32_matmul"}
        assert opt.optimal_batch_size() == 1
        assert report["settings"]["malloc_thresholds"]["applied"] is sys.platform.startswith("linux")
    with perfopt.Optimizer("cpu", read_environment=False, malloc_tuning=False) as opt:
        entry = opt.report()["settings"]["malloc_thresholds"]
        assert entry["applied"] is False and entry["source"] == "config"


def test_environment_variables(monkeypatch):
    monkeypatch.setenv("TRANSLATOR_COMPILE_MODE", "default")
    with perfopt.Optimizer("cpu") as opt:
        compile_ = opt.report()["compile"]
        assert compile_["mode"] == "default" and compile_["mode_source"] == "environment"
    monkeypatch.setenv("TRANSLATOR_TORCH_COMPILE", "nope")
    with pytest.raises(PerfoptError) as info:
        perfopt.Optimizer("cpu")
    assert info.value.status == Status.ENVIRONMENT
    assert "TRANSLATOR_TORCH_COMPILE" in str(info.value)


@pytest.mark.parametrize(
    "kwargs, status, needle",
    [
        ({"device": "tpu"}, Status.INVALID_ARGUMENT, "tpu"),
        ({"device": ""}, Status.INVALID_ARGUMENT, "accepted"),
        ({"device": "cuda:7"}, None, "cuda"),
        ({"device": "cpu", "compile_mode": "warp"}, Status.INVALID_ARGUMENT, "warp"),
        ({"device": "cpu", "intra_op_threads": -3}, Status.INVALID_ARGUMENT, "intra_op_threads"),
    ],
)
def test_bad_arguments(kwargs, status, needle):
    with pytest.raises(PerfoptError) as info:
        perfopt.Optimizer(read_environment=False, **kwargs)
    if status is not None:
        assert info.value.status == status
    else:
        assert info.value.status in (Status.UNSUPPORTED_DEVICE, Status.DEVICE_NOT_FOUND)
    assert needle in info.value.message


def test_closed_optimizer_raises():
    opt = perfopt.Optimizer("cpu", read_environment=False)
    opt.close()
    opt.close()  # idempotent
    with pytest.raises(PerfoptError) as info:
        opt.report()
    assert info.value.status == Status.INVALID_HANDLE


def test_inference_scopes_nest_and_stay_on_their_thread():
    with perfopt.Optimizer("cpu", read_environment=False) as opt:
        outer = opt.inference()
        inner = opt.inference()
        outer.__enter__()
        inner.__enter__()
        with pytest.raises(PerfoptError) as info:
            outer.__exit__(None, None, None)
        assert info.value.status == Status.SCOPE_ORDER
        errors = []
        thread = threading.Thread(target=lambda: errors.append(_exit_elsewhere(inner)))
        thread.start()
        thread.join()
        assert errors == [Status.WRONG_THREAD]
        inner.__exit__(None, None, None)
        outer.__exit__(None, None, None)


def _exit_elsewhere(scope):
    try:
        scope.__exit__(None, None, None)
    except PerfoptError as err:
        return err.status
    return Status.OK


def test_log_records_reach_python_logging(caplog):
    perfopt.set_log_level(3)
    try:
        with caplog.at_level(logging.INFO, logger="perfopt"):
            perfopt.Optimizer("cpu", read_environment=False).close()
    finally:
        perfopt.set_log_level(None)
    assert any("optimizer ready on cpu" in r.getMessage() for r in caplog.records)
