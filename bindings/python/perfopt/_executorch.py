"""ExecuTorch programs (.pte) for perfopt.export: torch.export, lowered with
ExecuTorch's XNNPACK partitioner (the CPU backend; on Apple targets the
CoreML and MPS partitioners are the ones to name, not run here), verified
against eager by running the program with perfopt itself (ExecuTorch 1.5's
own Python runtime does not work beside torch 2.11; its export and C++
runtime do).

An ExecuTorch program plans its memory for the largest shapes it takes, so
a dynamic batch has an upper bound: `max_batch`, or DEFAULT_MAX_BATCH."""
from __future__ import annotations

import importlib
import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

# The batch bound of a program exported with a dynamic batch and no bound
# given: its planned memory holds activations for this many samples.
DEFAULT_MAX_BATCH = 64


def export_executorch(module: Any, example_inputs: Sequence[Any], path: str, *, dynamic_batch: bool = True,
                      max_batch: Optional[int] = None, batch_range: Optional[Tuple[int, int]] = None
                      ) -> Dict[str, Any]:
    """Exports `module` called with `example_inputs` into the ExecuTorch
    program `path` (.pte), dimension 0 of every tensor input dynamic up to
    `max_batch` (default DEFAULT_MAX_BATCH) when `dynamic_batch`; loads it
    with perfopt and compares it with eager. Raises ExportError, explained."""
    from .export import (ExportError, _argument_names, _batch_dim, _batch_specs, _explain, _flat,
                         _relative_error, _torch, _traced_example)

    torch = _torch()
    try:
        partitioner: Any = importlib.import_module("executorch.backends.xnnpack.partition.xnnpack_partitioner")
        exir: Any = importlib.import_module("executorch.exir")
    except ImportError as err:
        raise ExportError("exporting an ExecuTorch program needs the executorch package: pip install --no-deps "
                          "executorch==1.5.1 torchao==0.18.0, then pip install ruamel.yaml flatbuffers tabulate "
                          "pyyaml", str(err)) from err
    inputs = [x.cpu() if isinstance(x, torch.Tensor) else x for x in example_inputs]
    if any(not isinstance(x, torch.Tensor) for x in inputs):
        raise ExportError("an ExecuTorch program takes tensors only (as perfopt runs it): pass the other "
                          "arguments as tensors, or fix them inside the module")
    module = module.eval().cpu()
    names = _argument_names(module, len(inputs))
    notes = []
    batched = [x.dim() > 0 for x in inputs]
    dynamic_shapes = None
    bound = None
    if dynamic_batch and any(batched):
        if not max_batch and not batch_range:
            max_batch = max([DEFAULT_MAX_BATCH, *(x.shape[0] for x in inputs if x.dim() > 0)])
            notes.append(f"the program takes a batch of at most {max_batch} (its memory is planned for it); "
                         f"export with max_batch=N for another bound")
        batch = _batch_dim(torch, max_batch, batch_range)
        dynamic_shapes = tuple({0: batch} if b else None for b in batched)
        bound = batch_range[1] if batch_range else max_batch
    traced, note = _traced_example(torch, inputs, dynamic_batch)
    notes += [note] if note else []
    started = time.perf_counter()
    with torch.no_grad():
        expected = _flat(module(*inputs))
        try:
            program = torch.export.export(module, tuple(traced), dynamic_shapes=dynamic_shapes)
        except Exception as err:  # torch raises several kinds; each is explained
            raise _explain(err, dynamic_batch) from err
        try:
            edge = exir.to_edge_transform_and_lower(program, partitioner=[partitioner.XnnpackPartitioner()])
        except Exception as err:  # the lowering raises several kinds
            raise _lowering_failed(err) from err
        fixed = _batch_fixed_by_lowering(edge.exported_program(), dynamic_shapes)
        if fixed is not None:
            raise ExportError(f"ExecuTorch's lowering fixed the batch at {fixed} (its decomposition of one of the "
                              f"model's operators needs it): export with dynamic_batch=False for a program of the "
                              f"example's batch")
        try:
            lowered = edge.to_executorch()
        except Exception as err:  # as above
            raise _lowering_failed(err) from err
    exported_s = time.perf_counter() - started
    specs = _batch_specs(zip(names, inputs), bool(dynamic_shapes))
    # Written beside and checked there, then moved over `path`: a program
    # that fails its check never replaces one that was there.
    target = Path(str(path))
    staged = target.with_name(f".{target.name}.{os.getpid()}.partial")
    staged.write_bytes(lowered.buffer)
    try:
        got = _run_with_perfopt(str(staged), inputs)
        _check(got, expected, inputs[0].shape[0] if batched[0] else None)
        other = _other_batch(torch, inputs, batched, batch_range, bound) if dynamic_shapes else None
        if other is not None:  # a plan made for the example's batch alone would fail another
            with torch.no_grad():
                _check(_run_with_perfopt(str(staged), other), _flat(module(*other)),
                       next(x.shape[0] for x, b in zip(other, batched) if b))
        os.replace(staged, target)
    finally:
        staged.unlink(missing_ok=True)
    target.with_suffix(".inputs.json").write_text(json.dumps(specs))
    return {
        "path": str(path),
        "format": "executorch",
        "made_by": "torch.export + executorch to_edge_transform_and_lower (XNNPACK), checked with perfopt",
        "device": "cpu",
        "dynamic_batch": dynamic_batch,
        "max_batch": bound,
        "inputs": specs,
        "outputs": len(expected),
        "relative_error": _relative_error(got, expected),
        "export_s": round(exported_s, 2),
        "notes": notes,
    }


def _lowering_failed(err: BaseException) -> Any:
    from .export import ExportError

    text = str(err)
    return ExportError(f"ExecuTorch could not lower the exported program: "
                       f"{text.splitlines()[0] if text else type(err).__name__}", text)


def _check(got: Sequence[Any], want: Sequence[Any], batch: Optional[int]) -> None:
    """The program's outputs against eager's, within 1e-3 (relative)."""
    from .export import ExportError, _relative_error

    error = _relative_error(got, want)
    if error > 1e-3:
        raise ExportError(f"the program's outputs{f' at batch {batch}' if batch else ''} differ from eager "
                          f"(relative error {error:.1e})")


def _other_batch(torch: Any, inputs: Sequence[Any], batched: Sequence[bool], batch_range: Any,
                 bound: Optional[int]) -> Optional[List[Any]]:
    """The inputs at another batch the program takes (the batched inputs cut
    to, or repeated up to, it), or None where it takes one batch only."""
    example = next(x.shape[0] for x, b in zip(inputs, batched) if b)
    low = batch_range[0] if batch_range else 1
    high = bound or example * 2
    other = low if example != low else min(example + 1, high)
    if other == example:
        return None
    return [torch.cat([x] * -(-other // example))[:other] if b else x for x, b in zip(inputs, batched)]


def _batch_fixed_by_lowering(program: Any, dynamic_shapes: Any) -> Optional[int]:
    """The batch a user input of the lowered program has when the export
    asked for a dynamic one and the lowering made it a number; None when
    every such input kept its symbol."""
    if not dynamic_shapes:
        return None
    user = [n for n in program.graph.nodes if n.op == "placeholder" and n.name in program.graph_signature.user_inputs]
    for node, wanted in zip(user, dynamic_shapes):
        value = node.meta.get("val")
        if wanted and value is not None and value.dim() > 0:
            first = str(value.shape[0])  # a SymInt the lowering specialised prints as its number
            if first.isdigit():
                return int(first)
    return None


def _run_with_perfopt(path: str, inputs: Sequence[Any]) -> Any:
    """The program's outputs on `inputs`, run by perfopt (as a service will)."""
    import torch

    from . import Optimizer, PerfoptError
    from .export import ExportError

    try:
        # Nothing of this process's settings changes: no thread tuning, no
        # environment read.
        optimizer = Optimizer("cpu", cpu_optimization=False, read_environment=False)
        outputs = optimizer.load(path).run(*[_array(x) for x in inputs])
    except PerfoptError as err:
        raise ExportError(f"perfopt could not run the exported program to check it: {err}", str(err)) from err
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    return [torch.from_numpy(__import__("numpy").asarray(o)) for o in outputs]


def _array(tensor: Any) -> Any:
    """A tensor as the NumPy array perfopt is given (bfloat16 has none)."""
    from .export import ExportError

    try:
        return tensor.detach().contiguous().numpy()
    except TypeError as err:
        raise ExportError(f"an input of dtype {tensor.dtype} cannot be checked through NumPy: export with "
                          f"float32 inputs", str(err)) from err
