"""Reduced-precision forms of a bundle, written when asked for
(`precisions=[...]`): the model in bf16 or fp16 as TorchScript, and its ONNX
form with int8 dynamic quantisation. Each takes and returns what the fp32
model does (floating inputs are cast on the way in and outputs back to fp32
inside the form), so perfopt measures it as one more candidate; it does so
only when the caller allows reduced precision, and keeps it only within the
caller's tolerance. The manifest records each form's error against fp32
eager on the example (relative, and the cosine similarity embeddings are
judged by), and why a precision was not written."""
from __future__ import annotations

import importlib
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

PRECISIONS = ("bf16", "fp16", "int8")
_FILES = {"bf16": "model.bf16.pt", "fp16": "model.fp16.pt", "int8": "model.int8.onnx"}


def checked(precisions: Optional[Sequence[str]]) -> List[str]:
    """The precisions asked for, in order, once each; "auto" is those this
    machine runs natively (see `offered`)."""
    from .export import ExportError

    if not precisions:
        return []
    if isinstance(precisions, str):
        raise ExportError(f"precisions is a list of {', '.join(PRECISIONS)} or auto, got {precisions!r}")
    wanted: List[str] = []
    if any(not isinstance(p, str) for p in precisions):
        raise ExportError(f"precisions is a list of {', '.join(PRECISIONS)} or auto, got {precisions!r}")
    for p in (p.strip() for p in precisions):
        if p not in PRECISIONS and p != "auto":
            raise ExportError(f"unknown precision {p!r}: a bundle's reduced forms are {', '.join(PRECISIONS)} "
                              f"(or auto)")
        wanted.append(p)
    return list(dict.fromkeys(wanted))


def cpu_has_bf16() -> bool:
    """Whether this CPU has bf16 instructions oneDNN uses (AVX512-BF16 or
    AMX); without them bf16 is emulated, slower than fp32."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def offered(device: str) -> List[str]:
    """What "auto" writes for `device`: bf16 where the CPU has it, fp16 on a
    GPU, int8 (ONNX Runtime's dynamic quantisation, a CPU form) always."""
    if device.startswith("cuda"):
        return ["fp16", "int8"]
    return (["bf16"] if cpu_has_bf16() else []) + ["int8"]


def _cast_module(torch: Any, module: Any, dtype: Any) -> Any:
    """`module` in `dtype`, taking and returning what the fp32 one does."""

    def cast_tree(value: Any, to: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.to(to) if value.is_floating_point() else value
        if isinstance(value, (list, tuple)):
            return type(value)(cast_tree(v, to) for v in value)
        if isinstance(value, dict):
            return {k: cast_tree(v, to) for k, v in value.items()}
        return value

    def cast_back(value: Any) -> Any:
        if isinstance(value, torch.Tensor):
            return value.float() if value.dtype == dtype else value
        if isinstance(value, (list, tuple)):
            return type(value)(cast_back(v) for v in value)
        if isinstance(value, dict):
            return {k: cast_back(v) for k, v in value.items()}
        return value

    class Cast(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.inner = module.to(dtype)

        def forward(self, *inputs: Any) -> Any:
            # Outputs in the reduced dtype go back to fp32; any other dtype
            # (indices, a double the model computes) is left as it is.
            return cast_back(self.inner(*cast_tree(list(inputs), dtype)))

    return Cast().eval()


def cosine(got: Sequence[Any], want: Sequence[Any]) -> float:
    """The lowest cosine similarity between an output and eager's, row by
    row (each index of the first dimension), over the floating outputs, as
    perfopt's max-autotune judges it (0 for a missing output or a NaN)."""
    import math

    if len(got) != len(want):
        return 0.0
    worst = 1.0
    for a, b in zip(got, want):
        if not b.is_floating_point() or b.numel() == 0:
            continue
        a, b = a.detach().double().cpu(), b.detach().double().cpu()
        rows = zip(a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)) if b.dim() >= 2 else [(a, b)]
        for x, y in rows:
            norms = float(x.norm() * y.norm())
            if norms > 0:
                value = float(x @ y) / norms
            else:
                value = 1.0 if float(x.norm()) == float(y.norm()) == 0 else 0.0
            worst = min(worst, 0.0 if math.isnan(value) else value)
    return worst


def export_reduced(precision: str, staging: Path, module: Any, example_inputs: Sequence[Any],
                   options: Dict[str, Any], forms: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Writes the `precision` form into `staging` beside the fp32 `forms`
    already there; returns its manifest entry. Raises ExportError."""
    import copy

    import torch

    from ._bundle import export_torchscript
    from .export import ExportError, _flat, _relative_error

    inputs = [x.cpu() if isinstance(x, torch.Tensor) else x for x in example_inputs]
    device = options.get("device") or "cpu"
    file = staging / _FILES[precision]
    started = time.perf_counter()
    notes: List[str] = []
    with torch.no_grad():
        expected = _flat(module.eval().cpu()(*inputs))
        if precision == "int8":
            got, made_by = _quantised_onnx(staging, file, inputs, forms)
        else:
            if precision == "fp16" and not str(device).startswith("cuda"):
                raise ExportError("fp16 is a GPU precision (on the CPU it is emulated): export with device='cuda'")
            if precision == "bf16" and not cpu_has_bf16():
                notes.append("this CPU has no bf16 instructions (AVX512-BF16 or AMX): bf16 is emulated here, and "
                             "max-autotune is expected to measure it slower than fp32")
            dtype = torch.bfloat16 if precision == "bf16" else torch.float16
            # A copy: .to(dtype) converts a module in place.
            cast = _cast_module(torch, copy.deepcopy(module).eval().cpu(), dtype)
            export_torchscript(cast, inputs, str(file), dynamic_batch=options.get("dynamic_batch", True))
            got = _flat(torch.jit.load(str(file))(*inputs))
            made_by = f"the module in {precision} (floating inputs cast in, outputs back to fp32), torch.jit.trace"
    return {"format": "onnx" if precision == "int8" else "torchscript", "precision": precision, "file": file.name,
            "made_by": made_by, "relative_error": _relative_error(got, expected), "cosine": cosine(got, expected),
            "seconds": round(time.perf_counter() - started, 2), "notes": notes}


def _quantised_onnx(staging: Path, file: Path, inputs: List[Any], forms: List[Dict[str, Any]]) -> Any:
    """The bundle's ONNX form with int8 dynamic quantisation (weights int8,
    activations quantised per call), run on the example."""
    import torch

    from .export import ExportError

    source = next((staging / f["file"] for f in forms if f["format"] == "onnx" and "precision" not in f), None)
    if source is None:
        raise ExportError("int8 quantises the bundle's ONNX form, which did not export (add onnx to formats)")
    try:
        onnxruntime: Any = importlib.import_module("onnxruntime")
        quantization: Any = importlib.import_module("onnxruntime.quantization")
    except ImportError as err:
        raise ExportError("int8 needs onnxruntime's quantisation tools (pip install onnxruntime onnx)") from err
    import logging

    import onnx

    # The exporter's recorded intermediate shapes can disagree with the
    # quantiser's own inference (a transposed weight): it infers them anew.
    plain = file.with_name(f".{file.name}.source")
    quiet = logging.getLogger().level
    logging.getLogger().setLevel(logging.ERROR)  # its advice to pre-process, on every call
    try:
        model = onnx.load(str(source))
        del model.graph.value_info[:]
        onnx.save(model, str(plain))
        quantization.quantize_dynamic(str(plain), str(file), weight_type=quantization.QuantType.QInt8)
    except Exception as err:  # the quantiser raises several kinds
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ExportError(f"onnxruntime could not quantise the ONNX form: {first}") from err
    finally:
        logging.getLogger().setLevel(quiet)
        plain.unlink(missing_ok=True)
    session = onnxruntime.InferenceSession(str(file), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    got = [torch.from_numpy(a) for a in session.run(None, feed)]
    return got, "onnxruntime.quantization.quantize_dynamic (int8 weights) of the ONNX form"
