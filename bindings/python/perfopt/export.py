"""Export a PyTorch module in a form perfopt loads, chosen by the file's
suffix, verified against eager on the example, with failures explained in the
user's terms:

- `.pt2`: an AOTInductor package (torch.export +
  torch._inductor.aoti_compile_and_package);
- `.onnx`: an ONNX model (torch.onnx.export with the dynamo exporter, one
  file with its weights inside; checked with onnxruntime);
- `.pt`: a TorchScript file (torch.jit.trace, or torch.jit.script);
- `.pte`: an ExecuTorch program (XNNPACK; see perfopt._executorch);
- `.perfopt`: a bundle, a folder holding the model in each of those forms
  that exports here (`formats=[...]` narrows it), which perfopt loads like a
  file and whose forms max-autotune measures against each other.

    import perfopt.export
    report = perfopt.export.export(vocoder, [mel], "vocoder.pt2", dynamic_batch=True)
    report = perfopt.export.export(vocoder, [mel], "vocoder.onnx", dynamic_batch=True)
    report = perfopt.export.export(vocoder, [mel], "vocoder.perfopt")
    print(report["relative_error"], report["export_s"])

    python -m perfopt.export mypkg.models:make_vocoder vocoder.onnx --input 2x80x100

A batch of 1 in the example: torch.export specialises a dimension of size 1
(it cannot tell it from a broadcast), so a dynamic batch is traced on the
example repeated to a batch of 2 and verified on the example itself; the
report says so.

Running models needs no torch in Python; exporting does (torch 2.11.0, the
version perfopt runs on). The package records its example inputs' shapes and
dtypes in its metadata (key "perfopt_inputs"), and which dimensions share one
size (a symbol, such as the batch every input carries), so perfopt checks every
input before the compiled kernels see it: they index by the shared size.
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import re
import sys
import time
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

__all__ = ["export", "export_onnx", "ExportError", "main"]


class ExportError(RuntimeError):
    """An export that failed, explained: `reason` says what to change."""

    def __init__(self, reason: str, detail: str = ""):
        self.reason = reason
        self.detail = detail
        super().__init__(reason + (f"\n\n{detail}" if detail else ""))


def _torch() -> Any:
    try:
        import torch
    except ImportError as err:
        raise ExportError(
            "perfopt.export needs torch (pip install torch==2.11.0); running models with perfopt does not"
        ) from err
    return torch


def _dtype_name(dtype: Any) -> str:
    return str(dtype).replace("torch.", "")


def _argument_names(module: Any, count: int) -> List[str]:
    try:
        names = [p for p in inspect.signature(module.forward).parameters if p != "self"]
    except (TypeError, ValueError):
        names = []
    return [names[i] if i < len(names) else f"input{i}" for i in range(count)]


def _explain(err: BaseException, dynamic_batch: bool) -> ExportError:
    """torch.export's failure in the user's terms."""
    text = str(err)
    lines = [line.strip() for line in text.splitlines() if re.search(r'File ".*", line \d+', line)]
    where = f" (at {lines[-1]})" if lines else ""
    constant = re.search(r"specialized it to be a constant \((\d+)\)", text)
    if constant and dynamic_batch:
        return ExportError(
            f"dimension 0 (the batch) was specialised to {constant.group(1)} by the model's code{where}: "
            f"the batch cannot be dynamic. Export with dynamic_batch=False (--static-batch) for a package "
            f"of batch {constant.group(1)}, or change the code that fixes it (a reshape to a literal size, "
            f"a constant tensor with that batch, data-dependent control flow).",
            text,
        )
    if "Constraints violated" in text:
        return ExportError(f"a dynamic dimension cannot stay dynamic{where}", text)
    if "data-dependent" in text.lower() or "GuardOnDataDependentSymNode" in text:
        return ExportError(
            f"the model branches on tensor values{where}: torch.export needs control flow that does not "
            f"depend on data (torch.cond, or compute both branches)",
            text,
        )
    return ExportError(f"torch.export failed{where}: {text.splitlines()[0] if text else type(err).__name__}", text)


def _relative_error(got: Sequence[Any], want: Sequence[Any]) -> float:
    worst = 0.0
    for a, b in zip(got, want):
        a = a.detach().double().cpu()
        b = b.detach().double().cpu()
        scale = float(b.abs().max()) if b.numel() else 0.0
        diff = float((a - b).abs().max()) if a.numel() else 0.0
        worst = max(worst, diff / max(scale, 1e-30))
    return worst if len(got) == len(want) else float("inf")


def _symbols(program: Any) -> List[List[Optional[str]]]:
    """Per tensor input, per dimension, the symbol its size is ("s17"; None
    for a static size), from the exported program's placeholders."""
    _torch()  # explains a missing or wrong torch
    from torch.export.graph_signature import InputKind, TensorArgument

    values = {node.name: node.meta.get("val") for node in program.graph.nodes if node.op == "placeholder"}
    symbols: List[List[Optional[str]]] = []
    for spec in program.graph_signature.input_specs:
        if spec.kind != InputKind.USER_INPUT or not isinstance(spec.arg, TensorArgument):
            continue
        value = values.get(spec.arg.name)
        shape = getattr(value, "shape", ())
        symbols.append([None if isinstance(d, int) else str(d) for d in shape])
    return symbols


def _traced_example(torch: Any, inputs: List[Any], dynamic_batch: bool) -> "tuple[List[Any], Optional[str]]":
    """The example torch.export traces: a batch of 1 repeated to 2 when the
    batch is dynamic (a size-1 dimension is specialised), with a note."""
    tensors = [x for x in inputs if isinstance(x, torch.Tensor) and x.dim() > 0]
    if not (dynamic_batch and tensors and all(x.shape[0] == 1 for x in tensors)):
        return inputs, None
    traced = [torch.cat([x, x]) if isinstance(x, torch.Tensor) and x.dim() > 0 else x for x in inputs]
    return traced, ("the example's batch is 1, which torch.export specialises (a size-1 dimension looks "
                    "like a broadcast): traced on the example repeated to a batch of 2, verified on the "
                    "example itself")


@contextlib.contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The ONNX exporter's warnings and log lines (torchvision's operators
    skipped when torchvision is absent, a deprecation per call) say nothing
    about the user's model: hidden while it runs; errors still raise."""
    import logging
    import warnings

    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript")]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def _rename_outputs_named_like_inputs(path: str) -> None:
    """A module that returns an input as it is (`return y, state`) is
    exported with an Identity node whose output has the input's name, which
    ONNX Runtime refuses ("Duplicate definition of name"): the output is
    renamed `NAME_out`."""
    onnx: Any = importlib.import_module("onnx")
    model = onnx.load(str(path))
    graph = model.graph
    inputs = {i.name for i in graph.input}
    taken = inputs | {o for node in graph.node for o in node.output} | {i.name for i in graph.initializer}
    renamed: Dict[str, str] = {}
    for node in graph.node:  # in topological order: later readers see the new name
        for k, name in enumerate(node.input):
            if name in renamed:
                node.input[k] = renamed[name]
        for k, name in enumerate(node.output):
            if name in inputs:
                new = f"{name}_out"
                while new in taken:
                    new += "_"
                taken.add(new)
                renamed[name] = new
                node.output[k] = new
    if not renamed:
        return
    for output in graph.output:
        if output.name in renamed:
            output.name = renamed[output.name]
    onnx.save(model, str(path))


def _batch_dim(torch: Any, max_batch: Optional[int], batch_range: Optional[Tuple[int, int]]) -> Any:
    """torch.export's Dim for dimension 0: `batch_range=(min, max)`, else 1
    to `max_batch` (or unbounded)."""
    max_batch = max_batch or None  # 0: no bound, as before
    if batch_range is None:
        low, high = 1, max_batch
    else:
        try:
            low, high = (int(b) for b in batch_range)
        except (TypeError, ValueError) as err:
            raise ExportError(f"batch_range must be (min, max), got {batch_range!r}") from err
        if max_batch is not None and max_batch != high:
            raise ExportError(f"max_batch={max_batch} and batch_range={batch_range!r} disagree: give one")
    if low < 1 or (high is not None and high < low):
        raise ExportError(f"the batch range {low} to {high} is empty or starts below 1")
    limit = {"max": high} if high else {}
    return torch.export.Dim("batch", min=low, **limit)


def _dimension_ranges(program: Any) -> Dict[str, List[Optional[int]]]:
    """Each dynamic dimension's symbol and the sizes the exported program
    accepts for it ([min, max]; max None: unbounded), as torch.export
    recorded them (it narrows a range the model's code constrains)."""
    out: Dict[str, List[Optional[int]]] = {}
    for symbol, bounds in getattr(program, "range_constraints", {}).items():
        def plain(value: Any) -> Optional[int]:
            # A sympy Integer, or torch's int_oo (unbounded), which is not.
            if not getattr(value, "is_Integer", False):
                return None
            number = int(value)
            return number if abs(number) < 2**62 else None

        out[str(symbol)] = [plain(bounds.lower), plain(bounds.upper)]
    return out


def _batch_specs(named: Iterable[Tuple[str, Any]], dynamic_batch: bool) -> List[Dict[str, Any]]:
    """The recorded specs of (name, tensor) inputs whose one dynamic size,
    if any, is dimension 0, the batch (ONNX's and TorchScript's exports)."""
    return [{"name": name, "dtype": _dtype_name(x.dtype),
             "shape": [-1 if dynamic_batch and d == 0 else int(n) for d, n in enumerate(x.shape)],
             "symbols": ["batch" if dynamic_batch and d == 0 else None for d in range(x.dim())]}
            for name, x in named]


def _flat(value: Any) -> List[Any]:
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _flat(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _flat(v)]
    return [value]


def export(
    module: Any,
    example_inputs: Sequence[Any],
    path: str,
    *,
    dynamic_batch: bool = True,
    device: Optional[str] = None,
    max_batch: Optional[int] = None,
    batch_range: Optional[Tuple[int, int]] = None,
    inductor_configs: Optional[Dict[str, Any]] = None,
    formats: Optional[Sequence[str]] = None,
    precisions: Optional[Sequence[str]] = None,
) -> Dict[str, Any]:
    """Exports `module` (an nn.Module) called with `example_inputs` into an
    AOTInductor package at `path` (must end in .pt2) for `device` (default:
    the inputs' device), with dimension 0 of every tensor input dynamic when
    `dynamic_batch`, over `batch_range=(min, max)` (default: 1 to
    `max_batch`, or unbounded). Runs the package on the example and compares
    it with eager. Returns a report: path, device, dynamic_batch, inputs,
    the range each dynamic dimension accepts (`dimension_ranges`: torch.export
    may narrow it from what the model's code does), relative error, export and
    compile seconds. Raises ExportError, explained.
    A path ending in .onnx exports an ONNX model instead (see
    `export_onnx`), .pt a TorchScript file, .perfopt a bundle of the
    `formats` given (default: every one; see perfopt._bundle), with the
    reduced-precision forms of `precisions` (bf16, fp16, int8, or auto: what
    this machine runs natively; see perfopt._precision), which perfopt
    measures only when a model's `precision` option allows it."""
    torch = _torch()
    if batch_range is not None and not dynamic_batch:
        raise ExportError("batch_range needs a dynamic batch: drop dynamic_batch=False, or the range")
    if Path(str(path)).suffix == ".perfopt":  # "x.perfopt/" too
        from ._bundle import export_bundle

        return export_bundle(module, example_inputs, path, formats=formats, precisions=precisions,
                             dynamic_batch=dynamic_batch,
                             device=device, max_batch=max_batch, batch_range=batch_range,
                             inductor_configs=inductor_configs)
    if precisions:
        raise ExportError("precisions are forms of a bundle: export to NAME.perfopt")
    if Path(str(path)).suffix == ".pt":
        from ._bundle import export_torchscript

        return export_torchscript(module, example_inputs, path, dynamic_batch=dynamic_batch)
    if Path(str(path)).suffix == ".pte":
        from ._executorch import export_executorch

        return export_executorch(module, example_inputs, path, dynamic_batch=dynamic_batch, max_batch=max_batch,
                                 batch_range=batch_range)
    if str(path).endswith(".onnx"):
        return export_onnx(module, example_inputs, path, dynamic_batch=dynamic_batch, max_batch=max_batch,
                           batch_range=batch_range)
    if not str(path).endswith(".pt2"):
        raise ExportError(f"{path}: perfopt exports AOTInductor packages (.pt2), ONNX models (.onnx), TorchScript "
                          f"(.pt), ExecuTorch programs (.pte) and bundles of them (.perfopt)")
    inputs = list(example_inputs)
    tensors = [x for x in inputs if isinstance(x, torch.Tensor)]
    if device is None:
        device = str(tensors[0].device) if tensors else "cpu"
    module = module.eval().to(device)
    inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    names = _argument_names(module, len(inputs))
    if any(not isinstance(x, torch.Tensor) for x in inputs):
        fixed = [n for n, x in zip(names, inputs) if not isinstance(x, torch.Tensor)]
        print(f"perfopt.export: {', '.join(fixed)} are not tensors: their example values are compiled "
              f"into the package (a package takes tensors only)", file=sys.stderr)

    dynamic_shapes = None
    if dynamic_batch and tensors:
        batch = _batch_dim(torch, max_batch, batch_range)
        dynamic_shapes = tuple({0: batch} if isinstance(x, torch.Tensor) and x.dim() > 0 else None for x in inputs)

    traced, note = _traced_example(torch, inputs, dynamic_batch)
    started = time.perf_counter()
    with torch.no_grad():
        expected = _flat(module(*inputs))
        try:
            program = torch.export.export(module, tuple(traced), dynamic_shapes=dynamic_shapes)
        except Exception as err:  # torch raises several kinds; each is explained
            raise _explain(err, dynamic_batch) from err
    exported_s = time.perf_counter() - started

    symbols = _symbols(program)
    tensor_inputs = [(name, x) for name, x in zip(names, inputs) if isinstance(x, torch.Tensor)]
    if len(symbols) != len(tensor_inputs):
        symbols = [[None] * x.dim() for _, x in tensor_inputs]
    ranges = _dimension_ranges(program)
    notes = [note] if note else []
    batch_symbol = symbols[0][0] if symbols and symbols[0] else None
    if dynamic_shapes is not None and batch_symbol in ranges:
        low, high = ranges[batch_symbol]
        asked = (batch_range[1] if batch_range else None) or max_batch
        if high is not None and (asked is None or high < asked):
            notes.append(f"the package accepts a batch of {low} to {high} only: torch.export narrowed the "
                         f"range from the model's code and the example; export with batch_range=(1, N) for "
                         f"more, or from a larger example")
    specs = [
        {
            "name": name,
            "dtype": _dtype_name(x.dtype),
            "shape": [-1 if symbol else int(n) for n, symbol in zip(x.shape, dims)],
            # Dimensions with one symbol must have one size at run time.
            "symbols": dims,
        }
        for (name, x), dims in zip(tensor_inputs, symbols)
    ]
    configs = {
        "aot_inductor.metadata": {"perfopt_inputs": json.dumps(specs)},
        # Batch 1 must pass the package's own input checks for Dim(min=1).
        "aot_inductor.check_lowerbound": False,
    }
    configs.update(inductor_configs or {})
    started = time.perf_counter()
    try:
        package = torch._inductor.aoti_compile_and_package(program, package_path=str(path), inductor_configs=configs)
    except Exception as err:
        raise ExportError(f"AOTInductor could not compile the exported program: {err}", repr(err)) from err
    compile_s = time.perf_counter() - started

    # The same specs beside the package, for tools that read files only.
    Path(str(path)).with_suffix(".inputs.json").write_text(json.dumps(specs))
    loaded = torch._inductor.aoti_load_package(package)
    with torch.no_grad():
        got = _flat(loaded(*[x for x in inputs if isinstance(x, torch.Tensor)]))
    error = _relative_error(got, expected)
    return {
        "path": str(package),
        "device": device,
        "dynamic_batch": dynamic_batch,
        "inputs": specs,
        "outputs": len(expected),
        "relative_error": error,
        "export_s": round(exported_s, 2),
        "compile_s": round(compile_s, 2),
        # Each dynamic dimension's symbol (in `inputs[i]["symbols"]`) and the
        # sizes the package accepts for it, [min, max] (max None: any).
        "dimension_ranges": ranges,
        "notes": notes,
    }


def export_onnx(
    module: Any,
    example_inputs: Sequence[Any],
    path: str,
    *,
    dynamic_batch: bool = True,
    max_batch: Optional[int] = None,
    batch_range: Optional[Tuple[int, int]] = None,
) -> Dict[str, Any]:
    """Exports `module` called with `example_inputs` into one ONNX file at
    `path` (torch.onnx.export, dynamo exporter, weights inside), with
    dimension 0 of every tensor input dynamic when `dynamic_batch`. Runs it
    with onnxruntime on the example and compares it with eager. Returns a
    report: path, format, inputs, outputs, relative error, export seconds.
    Raises ExportError, explained."""
    torch = _torch()
    try:
        # Checks the export (perfopt runs the model with the same library).
        onnxruntime: Any = importlib.import_module("onnxruntime")
    except ImportError as err:
        raise ExportError("exporting ONNX needs onnxruntime to check the file (pip install onnxruntime "
                          "onnx onnxscript)") from err
    inputs = [x.cpu() if isinstance(x, torch.Tensor) else x for x in example_inputs]
    module = module.eval().cpu()
    if any(not isinstance(x, torch.Tensor) for x in inputs):
        raise ExportError("an ONNX model takes tensors only: pass the other arguments as tensors, or fix "
                          "them inside the module")
    names = _argument_names(module, len(inputs))
    dynamic_shapes = None
    if dynamic_batch and inputs:
        batch = _batch_dim(torch, max_batch, batch_range)
        dynamic_shapes = tuple({0: batch} if x.dim() > 0 else None for x in inputs)
    traced, note = _traced_example(torch, inputs, dynamic_batch)
    started = time.perf_counter()
    with torch.no_grad():
        expected = _flat(module(*inputs))
        try:
            with _exporter_quiet():
                torch.onnx.export(module, tuple(traced), str(path), dynamo=True, dynamic_shapes=dynamic_shapes,
                                  input_names=names, external_data=False, verbose=False)
        except Exception as err:  # the exporter raises several kinds; each is explained
            cause = err.__cause__ or err
            if isinstance(cause, ImportError) or "onnxscript" in str(err):
                raise ExportError("torch.onnx.export needs onnx and onnxscript (pip install onnx onnxscript)",
                                  str(err)) from err
            raise _explain(cause, dynamic_batch) from err
    exported_s = time.perf_counter() - started
    _rename_outputs_named_like_inputs(path)
    specs = _batch_specs(zip(names, inputs), bool(dynamic_shapes))
    Path(str(path)).with_suffix(".inputs.json").write_text(json.dumps(specs))
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feed = {i.name: x.numpy() for i, x in zip(session.get_inputs(), inputs)}
    got = [torch.from_numpy(a) for a in session.run(None, feed)]
    return {
        "path": str(path),
        "format": "onnx",
        "device": "cpu",
        "dynamic_batch": dynamic_batch,
        "inputs": specs,
        "outputs": len(expected),
        "relative_error": _relative_error(got, expected),
        "export_s": round(exported_s, 2),
        "notes": [note] if note else [],
    }


def _parse_input(spec: str) -> Any:
    """'4x80x100' (float32) or '4x12:int64', as in perfopt bench."""
    torch = _torch()
    dims, _, dtype = spec.partition(":")
    shape = [int(d) for d in dims.split("x")]
    kind = getattr(torch, dtype or "float32")
    if kind.is_floating_point:
        return torch.randn(*shape).to(kind)
    return torch.randint(0, 100, shape, dtype=kind)


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m perfopt.export",
        description="Export a PyTorch module for perfopt: an AOTInductor package (.pt2), an ONNX model (.onnx), "
                    "TorchScript (.pt), or a bundle of them all (.perfopt).",
    )
    parser.add_argument("factory", help="module:function returning an nn.Module, or (module, example_inputs)")
    parser.add_argument("output", help="what to write: .pt2 (AOTInductor package), .onnx, .pt, .pte (ExecuTorch), "
                        "or .perfopt (a bundle)")
    parser.add_argument("--formats", default=None,
                        help="a bundle's forms, e.g. onnx,torchscript (default: onnx,aotinductor,torchscript; "
                             "executorch when named)")
    parser.add_argument("--precisions", default=None,
                        help="a bundle's reduced-precision forms, e.g. bf16,int8 or auto (default: none)")
    parser.add_argument("--input", action="append", default=[], help="an example input: 4x80x100[:dtype]")
    parser.add_argument("--device", default=None, help="cpu or cuda (default: cpu)")
    parser.add_argument("--static-batch", action="store_true", help="keep the example's batch size fixed")
    parser.add_argument("--max-batch", type=int, default=None, help="the largest batch the package accepts")
    parser.add_argument("--batch-range", default=None, metavar="MIN:MAX",
                        help="the batch sizes the model must accept, e.g. 1:4096")
    args = parser.parse_args(argv)
    module_name, _, function = args.factory.partition(":")
    sys.path.insert(0, str(Path.cwd()))
    made = getattr(importlib.import_module(module_name), function or "model")()
    module, inputs = made if isinstance(made, tuple) else (made, [_parse_input(s) for s in args.input])
    if not inputs:
        parser.error("no example inputs: pass --input, or return (module, inputs) from the factory")
    try:
        batch_range = None
        if args.batch_range:
            low, _, high = args.batch_range.partition(":")
            try:
                batch_range = (int(low), int(high))
            except ValueError:
                parser.error(f"--batch-range takes MIN:MAX, got {args.batch_range!r}")
        report = export(module, inputs, args.output, dynamic_batch=not args.static_batch,
                        device=args.device or "cpu", max_batch=args.max_batch, batch_range=batch_range,
                        formats=args.formats.split(",") if args.formats else None,
                        precisions=args.precisions.split(",") if args.precisions else None)
    except ExportError as err:
        print(f"perfopt.export: {err.reason}", file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
