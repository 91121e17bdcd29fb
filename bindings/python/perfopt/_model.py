"""Models: perfopt_model_* through ctypes."""
from __future__ import annotations

import ctypes
import json
import threading
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Literal, Optional, Sequence, Tuple, overload

from . import _native
from ._checks import INT32, UINT32, c_int, c_string
from ._owner import Owner
from ._status import PerfoptError, Status, check, last_error
from ._status import read_json as _read_json
from ._tensors import HOST, DLPackOutput, InputBatch, NotATensor
from ._values import ValueBatch, is_tensor, read_result

if TYPE_CHECKING:
    import numpy
    import torch

    from . import Optimizer

_OUTPUTS8 = ctypes.c_void_p * 8
_CONSUMERS = ("numpy", "torch", "dlpack")
_converters: Dict[str, Callable[[DLPackOutput], Any]] = {}


class _Slots(threading.local):
    """Output slots and a count per thread, made once: a run fills them and
    hands them on before returning (calls on other threads have their own)."""

    def __init__(self) -> None:
        self.outputs: Any = _OUTPUTS8()
        self.count = ctypes.c_size_t(0)
        self.count_ref = ctypes.byref(self.count)


_slots = _Slots()


def _consumer(output: str) -> Callable[[DLPackOutput], Any]:
    """The converter for `output`, made once (imports stay off the hot path)."""
    converter = _converters.get(output)
    if converter is not None:
        return converter
    if output not in _CONSUMERS:
        raise ValueError("output must be 'numpy', 'torch' or 'dlpack'")
    if output == "dlpack":
        converter = _as_dlpack
    elif output == "numpy":
        # Writable: the caller owns its outputs.
        converter = _writable_numpy
    else:
        import torch

        torch_from_dlpack = torch.from_dlpack
        inference_mode = torch.inference_mode
        is_inference_mode_enabled = torch.is_inference_mode_enabled

        def to_torch(wrapped: DLPackOutput) -> Any:
            # Inside `with opt.inference():` (libtorch's inference mode on this
            # thread) torch would make an inference tensor, which cannot be
            # changed in place once the scope is over: outputs are made as
            # ordinary tensors (the memory is perfopt's copy, not shared).
            if is_inference_mode_enabled():
                with inference_mode(False):
                    return wrapped.convert(torch_from_dlpack)
            return wrapped.convert(torch_from_dlpack)

        converter = to_torch
    _converters[output] = converter
    return converter


_writable_numpy = DLPackOutput.writable_numpy


def _per_call(convert: Callable[[DLPackOutput], Any],
              device: Optional[Tuple[int, int]] = None) -> Callable[[DLPackOutput], Any]:
    """The converter for one call's outputs: NumPy's remembers the memory
    it viewed, so that outputs sharing it are not views of one buffer, and
    takes `device` (where the outputs are, when known) rather than read it."""
    if convert is not _writable_numpy:
        return convert
    views: List[Tuple[int, int]] = []
    return lambda wrapped: wrapped.writable_numpy(views, device)


def _as_dlpack(wrapped: DLPackOutput) -> Any:
    return wrapped


def _all_tensors(values: Sequence[Any]) -> bool:
    return all(is_tensor(v) for v in values)


def _batch_dim(dim: Optional[int], name: str) -> int:
    return _native.PERFOPT_NOT_BATCHED if dim is None else c_int(dim, name, INT32)


def _int32_array(numbers: List[int]) -> Any:
    return (ctypes.c_int32 * max(len(numbers), 1))(*numbers)


# perfopt_model_options.precision's values, by index (PERFOPT_PRECISION_*).
PRECISIONS = ("fp32", "allow-reduced")


class Model(Owner):
    """A model (perfopt_model_*): a TorchScript file or an AOTInductor package.
    Tensor inputs are NumPy arrays or torch tensors (passed as DLPack views, no
    copies, but of arrays with negative strides); other arguments are Python
    ints, floats, bools (or NumPy scalars), strings, None, lists and tuples,
    converted to the types the method's schema wants.
    Outputs are NumPy arrays by default, torch tensors with `output="torch"`,
    or DLPackOutput objects; they never share memory with an input or the model."""

    _kind = "model"

    def __init__(self, optimizer: "Optimizer", path: str, name: Optional[str] = None):
        handle = ctypes.c_void_p()
        check(_native.lib().perfopt_model_load(
            optimizer._ptr, c_string(path, "path"), c_string(name, "name"), ctypes.byref(handle)
        ))
        self._optimizer = optimizer
        self._handle: Optional[ctypes.c_void_p] = handle
        # What forward() returns where that cannot be tensors only ("" when it
        # can, or is not known), read from its schema on the first run().
        self._forward_refusal: Optional[str] = None
        # Where outputs are, when known without reading each (on the host
        # unless outputs_on_device is set).
        self._outputs_device: Optional[Tuple[int, int]] = HOST

    @staticmethod
    def _free(handle: ctypes.c_void_p) -> None:
        _native.lib().perfopt_model_free(handle)

    def set_options(
        self,
        *,
        outputs_on_device: Optional[bool] = None,
        error_tolerance: Optional[float] = None,
        graph_cache_size: Optional[int] = None,
        graph_warmup_runs: Optional[int] = None,
        memory_margin: Optional[float] = None,
        tuning_budget_ms: Optional[int] = None,
        tuning_cache_dir: Optional[str] = None,
        threads: Optional[int] = None,
        batch_budget_ms: Optional[int] = None,
        precision: Optional[str] = None,
        reduced_tolerance: Optional[float] = None,
        min_cosine: Optional[float] = None,
    ) -> None:
        """Changes the options given; the others keep their defaults.
        threads: per call of this model, from its next compile on (0: the
        count it was loaded at, the optimizer's or, under the optimizer's
        tuning_cache_dir, the one its tuning last chose; max-autotune
        measures it on the CPU).
        batch_budget_ms: everything recommend_batch measures (0: 5000).
        tuning_cache_dir: where max-autotune remembers its choice (None: the
        optimizer's tuning_cache_dir, if any).
        precision: "fp32" (default) or "allow-reduced": max-autotune also
        measures a bundle's reduced-precision forms (export's `precisions`),
        keeping one only within reduced_tolerance (relative error, default
        1e-2) or, when min_cosine is above 0, at least that cosine similarity
        to the fp32 result (embeddings)."""
        options = _native.perfopt_model_options()
        check(_native.lib().perfopt_model_options_init(ctypes.byref(options), ctypes.sizeof(options)))
        if outputs_on_device is not None:
            options.outputs_on_device = int(bool(outputs_on_device))
            self._outputs_device = None if outputs_on_device else HOST
        if error_tolerance is not None:
            options.error_tolerance = error_tolerance
        if graph_cache_size is not None:
            options.graph_cache_size = c_int(graph_cache_size, "graph_cache_size", UINT32)
        if graph_warmup_runs is not None:
            options.graph_warmup_runs = c_int(graph_warmup_runs, "graph_warmup_runs", UINT32)
        if memory_margin is not None:
            options.memory_margin = memory_margin
        if tuning_budget_ms is not None:
            options.tuning_budget_ms = c_int(tuning_budget_ms, "tuning_budget_ms", UINT32)
        if tuning_cache_dir is not None:
            options.tuning_cache_dir = c_string(tuning_cache_dir, "tuning_cache_dir")
        if threads is not None:
            options.threads = c_int(threads, "threads", UINT32)
        if batch_budget_ms is not None:
            options.batch_budget_ms = c_int(batch_budget_ms, "batch_budget_ms", UINT32)
        if precision is not None:
            if precision not in PRECISIONS:
                raise ValueError(f"precision is {precision!r}; accepted: {', '.join(PRECISIONS)}")
            options.precision = PRECISIONS.index(precision)
        if reduced_tolerance is not None:
            options.reduced_tolerance = reduced_tolerance
        if min_cosine is not None:
            options.min_cosine = min_cosine
        check(_native.lib().perfopt_model_set_options(self._ptr, ctypes.byref(options)))

    def compile(self, mode: Optional[str] = None, warmup_inputs: Optional[Sequence[Any]] = None) -> Optional[str]:
        """mode: none, default, reduce-overhead, max-autotune, or None for the
        optimizer's. Returns None, or a note when compilation was skipped (on
        MPS, as the service does: the model runs as loaded; not an error)."""
        args = list(warmup_inputs or [])
        lib = _native.lib()
        encoded_mode = c_string(mode, "mode")
        if _all_tensors(args):
            batch = InputBatch(args)
            status = lib.perfopt_model_compile(self._ptr, encoded_mode, batch.pointer, batch.count)
        else:
            values = ValueBatch(args)
            status = lib.perfopt_model_compile_args(self._ptr, encoded_mode, values.pointer, values.count)
        if status == Status.COMPILE_SKIPPED:
            return last_error()
        check(status)
        return None

    def _kept_report(self, kind: int, call: Callable[[Any, int, Any], int]) -> Dict[str, Any]:
        """Runs a call that does work and writes a report; if the report does
        not fit, reads the kept one (never doing the work twice)."""
        size = 65536
        buf = ctypes.create_string_buffer(size)
        needed = ctypes.c_size_t(0)
        status = call(buf, size, ctypes.byref(needed))
        if status == Status.BUFFER_TOO_SMALL:
            return self.last_report(kind)
        check(status)
        return json.loads(buf.value.decode("utf-8"))

    def warmup(self, inputs: Sequence[Any], iterations: int = 3) -> Dict[str, Any]:
        """Runs `iterations` passes (1 to 100000); returns first-call and
        steady-state latency. A stateful model's state is left as found."""
        args = list(inputs)
        iterations = c_int(iterations, "iterations", UINT32)
        lib = _native.lib()
        ptr = self._ptr
        if _all_tensors(args):
            batch = InputBatch(args)
            return self._kept_report(
                _native.PERFOPT_REPORT_WARMUP,
                lambda b, n, need: lib.perfopt_model_warmup(ptr, batch.pointer, batch.count, iterations, b, n, need),
            )
        values = ValueBatch(args)
        return self._kept_report(
            _native.PERFOPT_REPORT_WARMUP,
            lambda b, n, need: lib.perfopt_model_warmup_args(ptr, values.pointer, values.count, iterations, b, n, need),
        )

    @overload
    def run(self, *inputs: Any, output: Literal["numpy"] = ...) -> List[numpy.ndarray]: ...
    @overload
    def run(self, *inputs: Any, output: Literal["torch"]) -> List[torch.Tensor]: ...
    @overload
    def run(self, *inputs: Any, output: Literal["dlpack"]) -> List[DLPackOutput]: ...
    @overload
    def run(self, *inputs: Any, output: str) -> List[Any]: ...

    def run(self, *inputs: Any, output: str = "numpy") -> List[Any]:
        """Runs forward; its tensors, flattened. Non-tensor arguments (an int
        sample rate, a flag) are passed as the schema wants them. A forward
        whose schema returns anything but tensors is refused without running
        (use call())."""
        # The usual call (arrays or tensors in, NumPy out) runs on every chunk
        # of a stream: each step here is counted (a ctypes call costs about
        # a microsecond), see docs/benchmarks/formats.md's per-call cost.
        convert = _converters.get(output) or _consumer(output)
        if self._forward_refusal != "":
            self._refuse_non_tensor_forward("run")
        try:
            batch = InputBatch(inputs)
        except NotATensor:
            return _flatten(self.call("forward", *inputs, output=output))
        ptr = self._ptr
        return self._outputs(
            lambda outs, cap, count: _native.lib().perfopt_model_run(ptr, batch.pointer, batch.count, outs, cap, count),
            convert,
        )

    def call(self, method: str, *args: Any, output: str = "numpy") -> Any:
        """Calls any method (`forward`, `reset_states`, `encode`...) and
        returns its result as it is: tensors as NumPy arrays (or torch tensors,
        or DLPackOutputs), numbers, strings, None, lists and tuples."""
        convert = _consumer(output)
        name = c_string(method, "method")
        values = ValueBatch(list(args))
        result = ctypes.POINTER(_native.perfopt_value)()
        lib = _native.lib()
        check(lib.perfopt_model_call(self._ptr, name, values.pointer, values.count, ctypes.byref(result)))
        try:
            return read_result(result.contents, _per_call(convert))
        finally:
            lib.perfopt_value_free(result)

    @overload
    def run_batched(self, *inputs: Any, max_batch: int = 0, output: Literal["numpy"] = ...) -> List[numpy.ndarray]: ...
    @overload
    def run_batched(self, *inputs: Any, max_batch: int = 0, output: Literal["torch"]) -> List[torch.Tensor]: ...
    @overload
    def run_batched(self, *inputs: Any, max_batch: int = 0, output: Literal["dlpack"]) -> List[DLPackOutput]: ...
    @overload
    def run_batched(self, *inputs: Any, max_batch: int = 0, output: str) -> List[Any]: ...

    def run_batched(self, *inputs: Any, max_batch: int = 0, output: str = "numpy") -> List[Any]:
        """Runs inputs of any batch size (see set_batch_dims) in chunks of at
        most `max_batch` (0: the recommended size), halving on out-of-memory."""
        args = list(inputs)
        convert = _consumer(output)
        max_batch = c_int(max_batch, "max_batch", INT32)
        self._refuse_non_tensor_forward("run_batched")
        ptr = self._ptr
        lib = _native.lib()
        if _all_tensors(args):
            batch = InputBatch(args)
            return self._outputs(
                lambda outs, cap, count: lib.perfopt_model_run_batched(
                    ptr, batch.pointer, batch.count, max_batch, outs, cap, count
                ),
                convert,
            )
        values = ValueBatch(args)
        return self._outputs(
            lambda outs, cap, count: lib.perfopt_model_run_batched_args(
                ptr, values.pointer, values.count, max_batch, outs, cap, count
            ),
            convert,
        )

    def recommend_batch(self, *sample: Any) -> Dict[str, Any]:
        """From one sample (size 1 along each batched input's batch
        dimension): the recommended batch, why the trials stopped, the memory
        limit, the throughput knee and every measured point."""
        args = list(sample)
        value = ctypes.c_int32(0)
        ptr = self._ptr
        lib = _native.lib()
        if _all_tensors(args):
            batch = InputBatch(args)
            report = self._kept_report(
                _native.PERFOPT_REPORT_RECOMMEND_BATCH,
                lambda b, n, need: lib.perfopt_model_recommend_batch(
                    ptr, batch.pointer, batch.count, ctypes.byref(value), b, n, need
                ),
            )
        else:
            values = ValueBatch(args)
            report = self._kept_report(
                _native.PERFOPT_REPORT_RECOMMEND_BATCH,
                lambda b, n, need: lib.perfopt_model_recommend_batch_args(
                    ptr, values.pointer, values.count, ctypes.byref(value), b, n, need
                ),
            )
        if report["recommended_batch"] != value.value:
            raise PerfoptError(Status.INTERNAL, "the report and the batch disagree")
        return report

    def set_batch_dims(self, inputs: Sequence[Optional[int]] = (), outputs: Sequence[int] = ()) -> None:
        """Where each input carries its batch (None: not batched, passed whole
        to every chunk) and each output; unlisted ones use dimension 0."""
        ins = _int32_array([_batch_dim(d, f"inputs[{i}]") for i, d in enumerate(inputs)])
        outs = _int32_array([c_int(d, f"outputs[{i}]", INT32) for i, d in enumerate(outputs)])
        check(_native.lib().perfopt_model_set_batch_dims(self._ptr, ins, len(inputs), outs, len(outputs)))

    def methods(self) -> List[Dict[str, Any]]:
        """Every method with its schema: name, schema, arguments (name, type, default), returns."""
        ptr = self._ptr
        return _read_json(lambda buf, n, needed: _native.lib().perfopt_model_methods(ptr, buf, n, needed))

    def output_count(self) -> Optional[int]:
        """How many tensors run() returns, without running (None if unknown before a run)."""
        count = ctypes.c_size_t(0)
        status = _native.lib().perfopt_model_output_count(self._ptr, ctypes.byref(count))
        if status == Status.INVALID_ARGUMENT:
            return None
        check(status)
        return count.value

    def last_report(self, kind: int) -> Dict[str, Any]:
        """The kept report of the last warmup (PERFOPT_REPORT_WARMUP) or
        recommend_batch (PERFOPT_REPORT_RECOMMEND_BATCH), without redoing it."""
        ptr = self._ptr
        kind = c_int(kind, "kind", INT32)
        return _read_json(lambda buf, n, needed: _native.lib().perfopt_model_last_report(ptr, kind, buf, n, needed))

    def _refuse_non_tensor_forward(self, caller: str) -> None:
        """Refuses before running a forward() whose schema returns something
        other than tensors: the library would run it (a stateful model's
        state moving on) and only then refuse its result."""
        refusal = self._forward_refusal
        if refusal is None:
            refusal = self._forward_refusal = _non_tensor_return(self.methods())
        if refusal:
            raise PerfoptError(
                Status.INVALID_ARGUMENT,
                f"forward() returns {refusal} where {caller}() passes tensors only: use call('forward', ...)",
            )

    def _outputs(self, call: Callable[[Any, int, Any], int], convert: Callable[[DLPackOutput], Any]) -> List[Any]:
        slots = _slots
        outputs = slots.outputs
        count = slots.count
        status = call(outputs, 8, slots.count_ref)
        if status != Status.OK:
            if status == Status.BUFFER_TOO_SMALL and count.value > 8:
                # More than 8 outputs: they wait in the library; no second run.
                outputs = (ctypes.c_void_p * count.value)()
                status = _native.lib().perfopt_model_take_outputs(self._ptr, outputs, count.value, ctypes.byref(count))
            check(status)
        # An output not converted (a consumer failed) is freed with its owner.
        wrapped = [DLPackOutput(address) for address in outputs[:count.value]]
        convert = _per_call(convert, self._outputs_device)
        return [convert(w) for w in wrapped]

    def report(self) -> Dict[str, Any]:
        """Format, methods, calls, latency percentiles, peak memory, and what compilation chose and why."""
        ptr = self._ptr
        return _read_json(lambda buf, n, needed: _native.lib().perfopt_model_report(ptr, buf, n, needed))


# Types a TorchScript schema names that are never a tensor.
_NOT_TENSORS = {"int", "float", "bool", "str", "complex", "NoneType", "Dict", "Device", "Layout", "ScalarType"}


def _non_tensor_return(methods: List[Dict[str, Any]]) -> str:
    """forward()'s return type when its schema says it cannot be tensors
    only; "" when it can, or may (Optional, Any, a class: decided when it
    runs), or when the model has no forward."""
    for method in methods:
        if method["name"] == "forward":
            returns = method.get("returns") or []
            return next((r for r in returns if _never_tensors(r)), "")
    return ""


def _never_tensors(type_name: str) -> bool:
    """Whether a schema type ("Tuple[Tensor, int]") holds something other
    than tensors whatever the model does: tuples and lists flatten."""
    head, items = _split_type(type_name)
    if head in ("Tuple", "List"):
        return any(_never_tensors(item) for item in items)
    return head in _NOT_TENSORS


def _split_type(type_name: str) -> Tuple[str, List[str]]:
    """"Tuple[Tensor, List[int]]" -> ("Tuple", ["Tensor", "List[int]"])."""
    text = type_name.strip()
    if "[" not in text or not text.endswith("]"):
        return text, []
    head, inner = text[:-1].split("[", 1)
    items, depth, start = [], 0, 0
    for i, char in enumerate(inner):
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        elif char == "," and depth == 0:
            items.append(inner[start:i].strip())
            start = i + 1
    items.append(inner[start:].strip())
    return head.strip(), [item for item in items if item]


def _flatten(result: Any) -> List[Any]:
    """A result's tensors in order (what run() returns)."""
    if isinstance(result, (list, tuple)):
        return [t for item in result for t in _flatten(item)]
    if result is None or isinstance(result, (bool, int, float, str)):
        raise PerfoptError(
            Status.INVALID_ARGUMENT,
            f"the model returned {type(result).__name__} where run() passes tensors only: use call()",
        )
    return [result]
