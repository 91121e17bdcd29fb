"""Bundles and TorchScript files for perfopt.export.

A bundle is a folder (`NAME.perfopt`) holding one model in every form that
exports on this machine, each verified against eager on the example:
`model.onnx`, `model.pt2` (an AOTInductor package for the export's device),
`model.pt` (TorchScript), and when asked for `model.pte` (an ExecuTorch
program, the form phones run), with `manifest.json` naming them (the first is
the form perfopt loads first; max-autotune measures them all) and saying what
failed and why, and `inputs.json` (the example inputs' names, dtypes and
shapes, as NAME.inputs.json beside a single file). perfopt loads the folder
like a model file."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from . import _precision

# The order the forms are tried and listed in: ONNX Runtime starts a model
# fastest (the form perfopt loads first), then the package, then TorchScript,
# then ExecuTorch. ExecuTorch is in a bundle when asked for (formats=[...]):
# its lowering of a recurrent model ran for over 13 minutes and 6 GB here (an
# LSTM over 160 frames) where the other forms took a minute, and its batch
# is bounded, so beside an unbounded first form max-autotune leaves it out.
FORMATS = ("onnx", "aotinductor", "torchscript", "executorch")
DEFAULT_FORMATS = ("onnx", "aotinductor", "torchscript")
_FILES = {"onnx": "model.onnx", "aotinductor": "model.pt2", "torchscript": "model.pt", "executorch": "model.pte"}
_MADE_BY = {
    "onnx": "torch.onnx.export (dynamo), checked with onnxruntime",
    "aotinductor": "torch.export + torch._inductor.aoti_compile_and_package",
}


def _progress(line: str) -> None:
    """A line a person reads while a long export runs; quiet when stderr is
    not a terminal (logs, CI)."""
    if sys.stderr.isatty():
        print(f"perfopt.export: {line}", file=sys.stderr, flush=True)


def export_torchscript(module: Any, example_inputs: Sequence[Any], path: str, *,
                       dynamic_batch: bool = True) -> Dict[str, Any]:
    """Exports `module` as TorchScript at `path` (torch.jit.trace on the
    example, torch.jit.script where tracing fails), loads it back and
    compares it with eager; with `dynamic_batch`, also at another batch
    (a traced module may have fixed the example's). Raises ExportError."""
    from .export import ExportError, _argument_names, _batch_specs, _flat, _relative_error, _torch

    torch = _torch()
    inputs = [x.cpu() if isinstance(x, torch.Tensor) else x for x in example_inputs]
    module = module.eval().cpu()
    started = time.perf_counter()
    made_by = "torch.jit.trace"
    with torch.no_grad():
        expected = _flat(module(*inputs))
        try:
            scripted = torch.jit.trace(module, tuple(inputs), check_trace=False)
        except Exception as trace_error:  # tracing refuses several kinds of code
            try:
                scripted, made_by = torch.jit.script(module), "torch.jit.script"
            except Exception as err:
                raise ExportError(
                    f"TorchScript could neither trace the module ({str(trace_error).splitlines()[0]}) nor "
                    f"script it ({str(err).splitlines()[0]})", repr(err)) from err
        torch.jit.save(scripted, str(path))
        loaded = torch.jit.load(str(path))
        error = _relative_error(_flat(loaded(*inputs)), expected)
        notes = []
        tensors = [x for x in inputs if isinstance(x, torch.Tensor) and x.dim() > 0]
        if dynamic_batch and tensors and made_by == "torch.jit.trace":
            # Another batch: the example's rows repeated, checked against eager.
            other = [torch.cat([x, x[:1]]) if isinstance(x, torch.Tensor) and x.dim() > 0 else x for x in inputs]
            try:
                other_error = _relative_error(_flat(loaded(*other)), _flat(module(*other)))
            except Exception as err:  # the traced graph refused the batch
                other_error, notes = float("inf"), [f"at another batch the traced module failed: {err}"]
            if other_error > 1e-4:
                notes = notes or [f"at another batch the traced module differs from eager by {other_error:.1e}"]
                raise ExportError("tracing fixed the example's batch in the TorchScript module: export with "
                                  "dynamic_batch=False, or use a package or ONNX", "; ".join(notes))
    names = _argument_names(module, len(inputs))
    return {
        "path": str(path),
        "format": "torchscript",
        "made_by": made_by,
        "inputs": _batch_specs([(n, x) for n, x in zip(names, inputs) if isinstance(x, torch.Tensor)],
                               dynamic_batch),
        "outputs": len(expected),
        "relative_error": error,
        "export_s": round(time.perf_counter() - started, 2),
        "notes": notes,
    }


def _write(path: Path, text: str) -> None:
    """Written under a temporary name, then renamed into place; created as
    any file is (readable as the user's umask allows, as the model files)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "x") as file:
        file.write(text)
    os.replace(temporary, path)


def _umask() -> int:
    """The process's umask, read without changing it (os.umask would, for
    every thread, for a moment)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return 0o022


def _swap_into_place(staging: Path, folder: Path) -> None:
    """The finished bundle at `folder`; an earlier one there is moved aside
    first and put back if the move fails, then removed."""
    if not folder.exists():
        staging.rename(folder)
        return
    previous = Path(tempfile.mkdtemp(dir=str(folder.parent), prefix=f".{folder.name}.previous-"))
    previous.rmdir()  # a free name, which the rename takes
    folder.rename(previous)
    try:
        staging.rename(folder)
    except BaseException:
        previous.rename(folder)
        raise
    if previous.is_symlink():  # a link to a bundle elsewhere: the link goes, not its target
        previous.unlink()
    else:
        shutil.rmtree(previous, ignore_errors=True)


def _is_bundle(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("format") == "perfopt-bundle"
    except (OSError, ValueError, AttributeError):
        return False


def _checked_formats(formats: Optional[Sequence[str]]) -> List[str]:
    from .export import ExportError

    if formats is None:
        return list(DEFAULT_FORMATS)
    if isinstance(formats, str) or not formats:
        raise ExportError(f"formats is a list of {', '.join(FORMATS)}, got {formats!r}")
    wanted = list(dict.fromkeys(f.strip() for f in formats))  # in order, once each
    unknown = [f for f in wanted if f not in _FILES]
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(unknown)}: a bundle holds {', '.join(FORMATS)}")
    return wanted


def _export_form(fmt: str, file: Path, module: Any, example_inputs: Sequence[Any], options: Dict[str, Any]) -> Any:
    from .export import export, export_onnx

    if fmt == "torchscript":
        return export_torchscript(module, example_inputs, str(file), dynamic_batch=options["dynamic_batch"])
    if fmt == "executorch":
        from ._executorch import export_executorch

        return export_executorch(module, example_inputs, str(file), dynamic_batch=options["dynamic_batch"],
                                 max_batch=options["max_batch"], batch_range=options["batch_range"])
    if fmt == "onnx":
        return export_onnx(module, example_inputs, str(file), dynamic_batch=options["dynamic_batch"],
                           max_batch=options["max_batch"], batch_range=options["batch_range"])
    return export(module, example_inputs, str(file), **options)


def export_bundle(module: Any, example_inputs: Sequence[Any], path: str, *,
                  formats: Optional[Sequence[str]] = None, precisions: Optional[Sequence[str]] = None,
                  **options: Any) -> Dict[str, Any]:
    """Exports `module` into the bundle folder `path` in each of `formats`
    (default: DEFAULT_FORMATS; FORMATS adds ExecuTorch) that exports here,
    and in each reduced precision of `precisions` (bf16, fp16, int8, or auto:
    see perfopt._precision); a form that fails is
    recorded with its reason, and the export fails only when none worked.
    The folder is written beside `path` and moved into place whole, so an
    earlier bundle there stays as it was until the new one is complete.
    `options`: dynamic_batch, device, max_batch, batch_range and
    inductor_configs, as export() takes them. Returns a report: path, forms
    (format, file, how made, relative error, seconds, notes), failed
    (format, reason), inputs."""
    from .export import ExportError

    folder = Path(path)
    wanted = _checked_formats(formats)
    reduced = _precision.checked(precisions)
    if folder.exists() and not _is_bundle(folder) and (not folder.is_dir() or any(folder.iterdir())):
        raise ExportError(f"{folder} exists and is not a perfopt bundle: choose a new folder")
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=str(folder.parent), prefix=f".{folder.name}.partial-"))
    os.chmod(staging, 0o777 & ~_umask())
    try:
        forms, failed, specs, device = _export_forms(module, example_inputs, folder.name, staging, wanted, options)
        reduced_forms: List[Dict[str, Any]] = []
        if forms:
            _export_reduced(module, example_inputs, folder.name, staging, reduced, options, forms, reduced_forms,
                            failed)
        if not forms:
            raise ExportError("no form exported: " + "; ".join(f"{f['format']}: {f['reason']}" for f in failed))
        import torch

        # Reduced forms apart: a perfopt from before them reads "forms" only.
        manifest = {"format": "perfopt-bundle", "version": 1, "forms": forms, "reduced_forms": reduced_forms,
                    "failed": failed, "inputs": specs,
                    "torch": torch.__version__, "device": device,
                    "dynamic_batch": options.get("dynamic_batch", True)}
        _write(staging / "inputs.json", json.dumps(specs))
        _write(staging / "manifest.json", json.dumps(manifest, indent=2))
        _swap_into_place(staging, folder)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {"path": str(folder), "forms": forms, "reduced_forms": reduced_forms, "failed": failed, "inputs": specs}


def _export_forms(module: Any, example_inputs: Sequence[Any], name: str, staging: Path, wanted: List[str],
                  options: Dict[str, Any]) -> Any:
    """Each wanted form into `staging`: (forms, failed, input specs, device)."""
    options = {"dynamic_batch": True, "device": None, "max_batch": None, "batch_range": None, **options}
    forms: List[Dict[str, Any]] = []
    failed: List[Dict[str, str]] = []
    specs: Optional[List[Any]] = None
    device = options["device"] or "cpu"
    for number, fmt in enumerate(wanted, 1):
        file = staging / _FILES[fmt]
        _progress(f"{name}: exporting the {fmt} form ({number} of {len(wanted)})")
        started = time.perf_counter()
        try:
            report = _export_form(fmt, file, module, example_inputs, options)
        except Exception as err:  # every form's failure is recorded, whatever raised it
            file.unlink(missing_ok=True)  # nothing half-written stays
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            failed.append({"format": fmt, "reason": reason})
            _progress(f"{name}: the {fmt} form failed: {reason}")
            continue
        finally:
            file.with_suffix(".inputs.json").unlink(missing_ok=True)
        specs = specs or report.get("inputs")
        device = report.get("device", device) if fmt == "aotinductor" else device
        forms.append({"format": fmt, "file": file.name, "made_by": report.get("made_by", _MADE_BY.get(fmt, "")),
                      "relative_error": report["relative_error"], "seconds": round(time.perf_counter() - started, 2),
                      "notes": report.get("notes", [])})
    return forms, failed, specs, device


def _export_reduced(module: Any, example_inputs: Sequence[Any], name: str, staging: Path, precisions: List[str],
                    options: Dict[str, Any], forms: List[Dict[str, Any]], reduced_forms: List[Dict[str, Any]],
                    failed: List[Dict[str, str]]) -> None:
    """Each reduced precision asked for, after the fp32 `forms` (int8
    quantises the ONNX form), added to `reduced_forms` or, with its reason,
    to `failed`."""
    device = str(options.get("device") or "cpu")
    wanted = [q for p in precisions for q in (_precision.offered(device) if p == "auto" else [p])]
    for precision in dict.fromkeys(wanted):
        _progress(f"{name}: exporting the {precision} form")
        try:
            reduced_forms.append(_precision.export_reduced(precision, staging, module, example_inputs, options, forms))
        except Exception as err:  # recorded, as the fp32 forms' failures are
            for leftover in [*staging.glob(f"model.{precision}.*"), *staging.glob(f".model.{precision}.*")]:
                leftover.unlink(missing_ok=True)
            reason = getattr(err, "reason", None) or f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
            failed.append({"format": "onnx" if precision == "int8" else "torchscript", "precision": precision,
                           "reason": reason})
            _progress(f"{name}: the {precision} form failed: {reason}")
