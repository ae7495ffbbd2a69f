"""Run a teacher and its students over the same rows, in the same order, and record how."""

from __future__ import annotations

import contextlib
import functools
import platform
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterator, Mapping, Sequence

import numpy as np

from kdaudit._exceptions import KDAuditError, ModelExecutionError, QueryBudgetExceededError, invalid_argument
from kdaudit._validation import PROB_SUM_ATOL
from kdaudit.data._audit_data import AuditData
from kdaudit.harness._cache import OutputCache
from kdaudit.harness._outputs import ModelOutputs, ModelRecord, Outputs, Provenance
from kdaudit.models._base import Access, ModelAdapter
from kdaudit.models._convert import softmax
from kdaudit.models._ensemble import EnsembleModel
from kdaudit.models._loading import as_model
from kdaudit.models._torch import TorchModel, normalize_precision

__all__ = ["RunResult", "library_versions", "run"]

# CPU outputs are written to the host arrays at once; tests set this to send them through the device path
_DEFER_CPU = False
_VERSIONED = ("numpy", "pandas", "scipy", "scikit-learn", "torch", "onnxruntime", "skops", "kdaudit")


@dataclass(frozen=True)
class RunResult:
    """What :func:`run` returns; unpacks as ``outputs, provenance = run(...)``."""

    outputs: Outputs
    provenance: Provenance

    def __iter__(self) -> Iterator[Any]:
        return iter((self.outputs, self.provenance))


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that can change a model's outputs."""
    return dict(_library_versions())


@functools.lru_cache(maxsize=1)
def _library_versions() -> dict[str, str]:  # reading package metadata costs ~30 ms; versions do not change
    out = {"python": platform.python_version()}
    for dist in _VERSIONED:
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


@dataclass(eq=False)
class _Slot:
    """Per-model state during a run."""

    model: ModelAdapter
    sha: Any  # str, or a Future of it while the weights are being hashed
    key: str | None
    precision: str
    raw: np.ndarray | None = None  # what the model returned: logits, probabilities or labels
    probs: np.ndarray | None = None  # softmax of ``raw`` when it holds logits
    probs_done: int = 0  # rows of ``probs`` filled
    done: int = 0  # rows computed (on the host, or queued on the device)
    host_done: int = 0  # rows in ``raw``
    checked: int = 0  # rows validated
    saved: int = 0  # rows checkpointed
    pending: list[tuple[int, int, Any, Any]] = field(default_factory=list)  # device outputs not yet copied
    inflight: list[tuple[int, int, Any, Any, Any]] = field(default_factory=list)  # copies to the host under way
    prior_queries: int = 0
    queries_at_start: int = 0
    rows_from_cache: int = 0
    from_cache: bool = False
    seconds: float = 0.0
    # torch models (and ensembles of torch models on one device) run through the device path: outputs stay on
    # the device until a flush; ``nets`` pairs each network with the dtype its inputs are cast to
    torch_fast: bool = False
    nets: list[tuple[TorchModel, Any]] = field(default_factory=list)
    device: Any = None

    @property
    def name(self) -> str:
        return self.model.name


def run(models: Any, data: Any, *, teacher: Any = None, batch_size: int = 256, device: Any = None,
        precision: str | None = None, cache_dir: Any = None, seed: int = 0, progress: bool = True,
        checkpoint_every: int = 16, fingerprints: Mapping[str, str] | None = None) -> RunResult:
    """Run every model over the same rows of ``data``, in the same order, teacher first.

    Parameters
    ----------
    models : sequence or dict
        Models (adapters, or objects :func:`~kdaudit.models.as_model` wraps: nn.Module, fitted scikit-learn
        classifier, model file, list of models for an ensemble, ...), or a dict name -> model.
    data : AuditData or array-like
    teacher : str or model, optional
        The teacher: a name among ``models``, or a model to put first. Default: the first model.
    batch_size : int
    device : str, optional
        Where torch models run ("cpu", "cuda", "cuda:1"); None leaves each torch model where it is.
    precision : {None, "fp32", "bf16", "fp16"}
        Autocast precision for torch models; None leaves each model's own.
    cache_dir : str or Path, optional
        Outputs are stored per (model sha256, data sha256, precision), and progress every
        ``checkpoint_every`` batches, so a re-run does not query a model again and an interrupted run resumes
        where it stopped.
    seed : int
        Seeds torch's RNG for the run (for models that sample); the global RNG state is restored afterwards.
    progress : bool
        Show a tqdm progress bar.
    checkpoint_every : int
        Batches between copies of device outputs to the host, checks, and (with ``cache_dir``) checkpoints.
    fingerprints : mapping, optional
        ``model name -> sha256`` already computed for these very models (the engine hashes each model once per
        audit, not once per unit of rows); the others are hashed here.

    Returns
    -------
    RunResult
        ``outputs``: per model float32 probabilities (logits softmaxed in float64), predicted labels and the
        logits when known, row-aligned with ``data``; ``provenance``: hashes, versions, seed, device, precision,
        timings, query counts.

    Raises
    ------
    KDAuditError
        Class counts or class orders that differ between teacher and students (or the data), NaN or inf outputs,
        probabilities that do not sum to 1, labels out of range; the message names the model and the row.
    ModelExecutionError
        A model raised; ``partial`` holds each model's outputs computed so far (also checkpointed when
        ``cache_dir`` is given).
    QueryBudgetExceededError
        A black-box model's remaining budget cannot cover the rows still to query (raised before any query).

    Examples
    --------
    >>> import numpy as np, torch
    >>> from kdaudit import AuditData
    >>> from kdaudit.harness import run
    >>> data = AuditData(np.random.default_rng(0).normal(size=(100, 4)).astype(np.float32))
    >>> teacher, student = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    >>> outputs, provenance = run({"teacher": teacher, "student": student}, data, progress=False)
    >>> outputs["student"].probs.shape, outputs.teacher, provenance.models[1].queries
    ((100, 3), 'teacher', 100)
    """
    t_start = time.perf_counter()
    if not isinstance(data, AuditData):
        data = AuditData(data)
    if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise invalid_argument("batch_size", batch_size, "an integer >= 1")
    if not isinstance(checkpoint_every, (int, np.integer)) or checkpoint_every < 1:
        raise invalid_argument("checkpoint_every", checkpoint_every, "an integer >= 1")
    adapters = _collect_models(models, teacher)
    # The run's device and precision apply to every torch model for the run only: the caller's models are put back
    # where and as they were, so a teacher audited in bf16 is not left in bf16 (nor on another device).
    with _settings(adapters, device=device, precision=precision):
        return _run_adapters(adapters, data, batch_size=batch_size, cache_dir=cache_dir, seed=seed,
                             progress=progress, checkpoint_every=checkpoint_every, t_start=t_start,
                             fingerprints=dict(fingerprints or {}))


@contextlib.contextmanager
def _settings(adapters: Sequence[ModelAdapter], *, device: Any, precision: str | None) -> Iterator[None]:
    """Apply one device and precision to every torch model (ensemble members too); restore each on exit."""
    if device is None and precision is None:
        yield
        return
    saved = [(m, m.device, m.precision) for m in _torch_models(adapters)]
    try:
        for m, _, _ in saved:
            m.configure(device=device, precision=precision)
        yield
    finally:
        for m, dev, prec in saved:
            m.configure(device=dev)
            m.precision = prec


def _run_adapters(adapters: list[ModelAdapter], data: AuditData, *, batch_size: int, cache_dir: Any, seed: int,
                  progress: bool, checkpoint_every: int, t_start: float, fingerprints: Mapping[str, str]
                  ) -> RunResult:
    _check_declared_classes(adapters, data)
    for m in adapters:
        m.prepare(data)

    n = len(data)
    data_sha = data.fingerprint()
    cache = OutputCache(cache_dir) if cache_dir is not None else None
    # Without a cache the hashes are needed only for the provenance: weights are snapshotted now and hashed
    # in a background thread while the models run (hashlib releases the GIL), instead of before the run.
    hasher = ThreadPoolExecutor(max_workers=1) if cache is None else None
    slots = []
    for m in adapters:
        prec = _precision_of(m)
        job = getattr(m, "fingerprint_later", None) or (lambda m=m: m.fingerprint)
        sha: Any = fingerprints.get(m.name)
        if sha is None:
            sha = job()() if hasher is None else hasher.submit(job())
        slot = _Slot(m, sha, OutputCache.key(sha, data_sha, prec, m.output, device=_device_of(m)) if cache else None,
                     prec,
                     queries_at_start=m.query_count)
        _plan_device_path(slot)
        if cache is not None:
            _restore(slot, cache, n)
        slots.append(slot)

    try:
        todo = [s for s in slots if s.done < n]
        for s in todo:
            check_budget = getattr(s.model, "check_budget", None)
            if check_budget is not None:  # refuse up front rather than spend part of the budget and stop
                check_budget(n - s.done)
        for s in slots:
            if s.raw is not None:
                _check_width(s, slots[0], data)
        torch = sys.modules.get("torch")
        rng = torch.random.fork_rng(devices=[]) if torch is not None else contextlib.nullcontext()
        with rng, contextlib.ExitStack() as stack:
            if torch is not None:
                torch.manual_seed(seed)
            for s in todo:
                for net, _ in s.nets:
                    stack.enter_context(net.session())
            _loop(todo, slots, data, batch_size, checkpoint_every, cache, progress)
    except BaseException:
        if hasher is not None:
            hasher.shutdown(wait=False, cancel_futures=True)
        raise
    for s in slots[1:]:  # students restored from the cache before the teacher had produced anything
        _check_width(s, slots[0], data)

    if hasher is not None:
        for s in slots:
            if not isinstance(s.sha, str):
                s.sha = s.sha.result()
        hasher.shutdown()
    records = []
    outputs: dict[str, ModelOutputs] = {}
    for s in slots:
        if cache is not None and not s.from_cache:
            meta = {"name": s.name, "output": s.model.output, "access": str(s.model.access),
                    "queries": s.prior_queries + s.model.query_count - s.queries_at_start}
            cache.save_final(s.key, s.raw, s.probs, meta)  # type: ignore[arg-type]
        outputs[s.name] = _model_outputs(s, n)
        records.append(_record(s))
    provenance = provenance_of(adapters, data, records=records, seed=seed, batch_size=batch_size,
                               wall_time_s=time.perf_counter() - t_start)
    return RunResult(Outputs(models=outputs, ids=data.ids, data_sha256=data_sha, teacher=slots[0].name),
                     provenance)


# -- setting up --------------------------------------------------------------------------------------------
def _collect_models(models: Any, teacher: Any) -> list[ModelAdapter]:
    if isinstance(models, Mapping):
        adapters = [as_model(m, name=str(k)) for k, m in models.items()]
    elif isinstance(models, (ModelAdapter, str)) or not isinstance(models, Sequence):
        adapters = [as_model(models)]
    else:
        adapters = [as_model(m) for m in models]
    if teacher is not None:
        if isinstance(teacher, str) and not any(m.name == teacher for m in adapters):
            raise invalid_argument("teacher", teacher, f"one of the model names {[m.name for m in adapters]}")
        if isinstance(teacher, str):
            t = next(m for m in adapters if m.name == teacher)
        else:
            t = teacher if isinstance(teacher, ModelAdapter) else None
            t = t if t is not None and any(m is t for m in adapters) else as_model(teacher)
        adapters = [t] + [m for m in adapters if m is not t]
    if not adapters:
        raise invalid_argument("models", models, "at least one model (the teacher)")
    names = [m.name for m in adapters]
    dupes = sorted({x for x in names if names.count(x) > 1})
    if dupes:
        raise invalid_argument("models", f"duplicate model name {dupes[0]!r}",
                               "distinct names (pass a dict name -> model, or name= to each adapter)")
    return adapters


def _torch_models(adapters: Sequence[ModelAdapter]) -> list[TorchModel]:
    out: list[TorchModel] = []
    for m in adapters:
        if isinstance(m, TorchModel):
            out.append(m)
        elif isinstance(m, EnsembleModel):
            out.extend(_torch_models(m.members))
    return out


def _precision_of(m: ModelAdapter) -> str:
    tms = _torch_models([m])
    if not tms:
        return "native"
    return "+".join(sorted({normalize_precision(t.precision) for t in tms}))


def _device_of(m: ModelAdapter) -> str:
    """Device type(s) a model computes on, for the cache key: CPU and CUDA kernels differ in the last bits."""
    tms = _torch_models([m])
    if not tms:
        return "host"
    return "+".join(sorted({t.device.type for t in tms}))


def _declared_n_classes(m: ModelAdapter) -> int | None:
    if not getattr(m, "_n_classes_declared", True):
        return None  # a torch model's count inferred from its last Linear layer: the output width decides
    return m.n_classes or None


def _check_declared_classes(adapters: list[ModelAdapter], data: AuditData) -> None:
    """Checks that need no query: declared class counts and class names against the teacher and the data."""
    t = adapters[0]
    t_n = _declared_n_classes(t)
    for s in adapters[1:]:
        s_n = _declared_n_classes(s)
        if t_n is not None and s_n is not None and s_n != t_n:
            raise _class_count_error(s.name, s_n, t.name, t_n)
    ref_name, ref_classes = (("teacher " + repr(t.name)), t.classes) if t.classes is not None else (
        "the data", data.classes)
    for s in adapters:
        if s.classes is None or ref_classes is None or s.classes is ref_classes:
            continue
        if s.classes != ref_classes:
            raise _class_order_error(s.name, s.classes, ref_name, ref_classes)
    if t.classes is not None and data.classes is not None and t.classes != data.classes:
        raise _class_order_error(t.name, t.classes, "the data", data.classes)
    if t_n is not None:
        _check_data_classes(data, t.name, t_n)


def _class_count_error(name: str, got: int, teacher: str, expected: int) -> KDAuditError:
    return invalid_argument("models", f"student {name!r} with {got} classes",
                            f"the teacher's class count: teacher {teacher!r} has {expected} classes")


def _class_order_error(name: str, got: tuple[str, ...], ref_name: str, ref: tuple[str, ...]) -> KDAuditError:
    what = "in a different order" if sorted(got) == sorted(ref) else "with different names"
    return invalid_argument("models", f"model {name!r} with classes {list(got)} ({what})",
                            f"the class order of {ref_name}: {list(ref)} (reorder the model's output columns)")


def _check_data_classes(data: AuditData, teacher: str, n_classes: int) -> None:
    if data.classes is not None and len(data.classes) != n_classes:
        raise invalid_argument("data", f"{len(data.classes)} classes {list(data.classes)}",
                               f"{n_classes} classes like teacher {teacher!r}")
    if data.y_true is not None:
        hi = int(data.y_true.max())
        if hi >= n_classes:
            row = int(np.argmax(data.y_true))
            raise invalid_argument("y_true", f"label {hi} at row {row}",
                                   f"integers in [0, {n_classes - 1}] (teacher {teacher!r} has {n_classes} classes)")


def _restore(slot: _Slot, cache: OutputCache, n: int) -> None:
    assert slot.key is not None
    final = cache.load_final(slot.key, n)
    if final is not None:
        slot.raw, slot.probs, meta = final
        if slot.probs is None and slot.model.output == "logits":
            slot.probs = softmax(slot.raw)
        slot.done = slot.host_done = slot.checked = slot.saved = slot.rows_from_cache = slot.probs_done = n
        slot.prior_queries = int(meta.get("queries", 0))
        slot.from_cache = True
        return
    partial = cache.load_partial(slot.key)
    if partial is None:
        return
    chunks, queries = partial
    _allocate(slot, n, chunks[0][2].shape[1:], chunks[0][2].dtype)
    for a, b, raw, probs in chunks:
        slot.raw[a:b] = raw  # type: ignore[index]
        if slot.probs is not None:
            slot.probs[a:b] = probs if probs is not None else softmax(raw)
    stop = chunks[-1][1]
    slot.done = slot.host_done = slot.checked = slot.saved = slot.rows_from_cache = slot.probs_done = stop
    slot.prior_queries = queries


def _allocate(s: _Slot, n: int, row_shape: tuple[int, ...], dtype: Any) -> None:
    s.raw = np.empty((n,) + tuple(row_shape), dtype=dtype)
    if s.model.output == "logits":
        s.probs = np.empty((n,) + tuple(row_shape), dtype=np.float32)


# -- the loop ------------------------------------------------------------------------------------------
def _loop(todo: list[_Slot], slots: list[_Slot], data: AuditData, batch_size: int, checkpoint_every: int,
          cache: OutputCache | None, progress: bool) -> None:
    if not todo:
        return
    from tqdm.auto import tqdm

    n = len(data)
    first_row = min(s.done for s in todo)
    starts = list(range(first_row, n, batch_size))
    teacher = slots[0]
    prefetch = _Prefetcher([pair for s in todo if s.torch_fast and s.device.type == "cuda" for pair in s.nets])
    bar = tqdm(total=n, initial=first_row, unit="row", desc="kdaudit: running models", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        xb_next = data.rows(starts[0], min(starts[0] + batch_size, n))
        for i, start in enumerate(starts):
            stop = min(start + batch_size, n)
            xb = xb_next
            ids = data.ids[start:stop]
            converted = prefetch.take(start)
            if i + 1 < len(starts):
                # read the next batch and start its host->device copy now, so it overlaps this batch's compute
                nxt = starts[i + 1]
                xb_next = data.rows(nxt, min(nxt + batch_size, n))
            for s in todo:
                if s.done >= stop:
                    continue
                a = max(start, s.done)
                x = xb if a == start else _slice_rows(xb, a - start)
                t0 = time.perf_counter()
                try:
                    if s.torch_fast:
                        out = _device_forward(s, x, converted, a == start)
                    else:
                        out = np.asarray(s.model.predict_batch(x, ids=ids[a - start:], rows=(a, stop)))
                except QueryBudgetExceededError:
                    _flush_all(todo, data, cache)
                    raise
                except Exception as exc:
                    _fail(s, exc, a, stop, todo, slots, data, cache)
                s.seconds += time.perf_counter() - t0
                _accept(s, out, a, stop, n, teacher, data)
            if i + 1 < len(starts):
                prefetch.put(starts[i + 1], xb_next)
            bar.update(stop - start)
            if (i + 1) % checkpoint_every == 0:
                _flush_all(todo, data, cache, final=False)
        _flush_all(todo, data, cache)
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):  # keep what was computed so a re-run resumes
            with contextlib.suppress(KDAuditError):
                _flush_all(todo, data, cache)
        raise
    finally:
        bar.close()


def _slice_rows(x: Any, offset: int) -> Any:
    return x.iloc[offset:] if hasattr(x, "iloc") else x[offset:]


class _Prefetcher:
    """Copies the next batch to each CUDA device on a side stream while the current batch computes."""

    def __init__(self, nets: list[tuple[TorchModel, Any]]) -> None:
        self.targets: dict[Any, TorchModel] = {}
        for net, dtype in nets:
            self.targets.setdefault((str(net.device), dtype), net)
        self.streams: dict[str, Any] = {}
        self.ready: tuple[int, dict[Any, Any]] | None = None

    def put(self, start: int, x: Any) -> None:
        if not self.targets:
            return
        import torch

        out = {}
        for key, m in self.targets.items():
            stream = self.streams.get(key[0])
            if stream is None:
                stream = self.streams[key[0]] = torch.cuda.Stream(device=m.device)
            host = m.to_tensor(x, dtype=key[1])
            with torch.cuda.stream(stream):
                xd = m.to_device(host)
                event = torch.cuda.Event()
                event.record(stream)
            out[key] = (xd, event)
        self.ready = (start, out)

    def take(self, start: int) -> dict[Any, Any]:
        """Device copies of the batch at ``start`` made by :meth:`put`, safe to use on the compute stream."""
        if self.ready is None or self.ready[0] != start:
            return {}
        import torch

        got = {}
        for key, (xd, event) in self.ready[1].items():
            compute = torch.cuda.current_stream(xd.device)
            compute.wait_event(event)
            xd.record_stream(compute)  # the side stream's allocation is now used on the compute stream
            got[key] = xd
        self.ready = None
        return got


def _plan_device_path(s: _Slot) -> None:
    m = s.model
    if isinstance(m, TorchModel):
        s.nets = [(m, m.input_dtype())]
    elif isinstance(m, EnsembleModel) and all(isinstance(x, TorchModel) for x in m.members) and \
            len({str(x.device) for x in m.members}) == 1:  # type: ignore[attr-defined]
        s.nets = [(x, x.input_dtype()) for x in m.members]  # type: ignore[misc]
    s.torch_fast = bool(s.nets)
    if s.torch_fast:
        s.device = s.nets[0][0].device


def _device_forward(s: _Slot, x: Any, converted: dict[Any, Any], whole: bool) -> Any:
    """Forward on the device; returns (outputs, float64-softmax probabilities or None), still on the device."""
    import torch

    outs = []
    for net, dtype in s.nets:
        key = (str(net.device), dtype)
        if whole and key in converted:  # one host->device copy per batch, shared by models on the same device
            xd = converted[key]
        else:
            xd = net.to_device(net.to_tensor(x, dtype=dtype))
            if whole:
                converted[key] = xd
        out = net.forward_tensor(xd)
        if not isinstance(s.model, EnsembleModel):
            if net.output == "logits" and out.device.type != "cpu":
                # softmax in float64 on the device, queued with the forward: no extra host pass over (N, C);
                # CPU logits get theirs at the next flush, over many batches at once
                return out, torch.softmax(out.double(), dim=1).float()
            return out, None
        outs.append(torch.softmax(out.double(), dim=1) if net.output == "logits" else out.double())
    widths = {int(o.shape[1]) for o in outs}
    if len(widths) > 1:
        raise invalid_argument("members", f"member outputs of widths {sorted(widths)}",
                               "members with the same number of classes")
    mean = sum(w * p for w, p in zip(s.model.weights.tolist(), outs))
    return mean.float(), None


def _accept(s: _Slot, out: Any, a: int, b: int, n: int, teacher: _Slot, data: AuditData) -> None:
    """Store one batch of outputs (device tensors wait in ``pending`` until the next flush)."""
    probs = None
    if s.torch_fast:
        out, probs = out
    rows = int(out.shape[0])
    if rows != b - a:
        raise invalid_argument(f"outputs of model {s.name!r}", f"{rows} rows for a batch of {b - a}",
                               "one output row per input row")
    if s.raw is None:
        labels = s.model.access is Access.LABELS
        if not labels and (out.ndim != 2 or out.shape[1] < 1):
            raise invalid_argument(f"outputs of model {s.name!r}", f"shape {tuple(out.shape)}",
                                   "an (n, n_classes) array")
        _allocate(s, n, () if labels else (int(out.shape[1]),), np.int64 if labels else np.float32)
        _check_width(s, teacher, data)
    elif s.raw.ndim == 2 and out.shape[1:] != s.raw.shape[1:]:
        raise invalid_argument(f"outputs of model {s.name!r}", f"shape {tuple(out.shape)} at rows {a}:{b}",
                               f"(n, {s.raw.shape[1]}) like its earlier batches")
    if s.torch_fast and (_DEFER_CPU or s.device.type != "cpu"):
        s.pending.append((a, b, out, probs))
    else:
        if s.torch_fast:
            out = out.numpy()
            probs = None if probs is None else probs.numpy()
        s.raw[a:b] = out  # type: ignore[index]
        if probs is not None:
            s.probs[a:b] = probs  # type: ignore[index]
            s.probs_done = b
        s.host_done = b
    s.done = b


def _check_width(s: _Slot, teacher: _Slot, data: AuditData) -> None:
    width = s.raw.shape[1] if s.raw.ndim == 2 else s.model.n_classes  # type: ignore[union-attr]
    declared = _declared_n_classes(s.model)
    if declared is not None and declared != width:
        raise invalid_argument(f"outputs of model {s.name!r}", f"{width} columns",
                               f"{declared} columns, one per class (as the model declares)")
    if not s.model.n_classes or not getattr(s.model, "_n_classes_declared", True):
        s.model.n_classes = width
    if s is teacher:
        _check_data_classes(data, s.name, width)
    elif teacher.raw is not None:
        t_width = teacher.raw.shape[1] if teacher.raw.ndim == 2 else teacher.model.n_classes
        if width != t_width:
            raise _class_count_error(s.name, width, teacher.name, t_width)


def _flush_all(todo: list[_Slot], data: AuditData, cache: OutputCache | None, *, final: bool = True) -> None:
    for s in todo:
        _flush(s, data, cache, final=final)


def _flush(s: _Slot, data: AuditData, cache: OutputCache | None, *, final: bool = True) -> None:
    """Move device outputs to the host, check new rows, checkpoint them.

    A periodic flush (``final=False``) only starts the copy of the latest device outputs and completes the copies
    started by the previous flush, which finished long ago: the GPU never waits for the host. A final flush
    completes everything.
    """
    _start_copy(s)
    while s.inflight and (final or len(s.inflight) > 1):
        a, b, raw, probs, event = s.inflight.pop(0)
        if event is not None:
            event.synchronize()
        s.raw[a:b] = raw.numpy()  # type: ignore[index]
        if probs is not None:
            s.probs[a:b] = probs.numpy()  # type: ignore[index]
            s.probs_done = b
        s.host_done = b
    if s.probs is not None and s.probs_done < s.host_done:
        # logits that came without probabilities: one float64 softmax over everything since the last flush
        softmax(s.raw[s.probs_done:s.host_done], out=s.probs[s.probs_done:s.host_done])  # type: ignore[index]
        s.probs_done = s.host_done
    if s.checked < s.host_done:
        _validate(s, s.checked, s.host_done, data)
        s.checked = s.host_done
    if cache is not None and s.saved < s.checked:
        queries = s.prior_queries + s.model.query_count - s.queries_at_start
        probs = None if s.probs is None else s.probs[s.saved:s.checked]
        cache.save_chunk(s.key, s.saved, s.checked, s.raw[s.saved:s.checked], probs,  # type: ignore[index]
                         queries)
        s.saved = s.checked


def _start_copy(s: _Slot) -> None:
    """One asynchronous device->host copy (into pinned memory) of the outputs waiting in ``pending``."""
    if not s.pending:
        return
    import torch

    a, b = s.pending[0][0], s.pending[-1][1]
    hosts: list[Any] = []
    event = None
    for col in (2, 3):
        if s.pending[0][col] is None:
            hosts.append(None)
            continue
        parts = [p[col] for p in s.pending]
        block = parts[0] if len(parts) == 1 else torch.cat(parts)
        if block.device.type == "cuda":
            host = torch.empty(block.shape, dtype=block.dtype, pin_memory=True)
            host.copy_(block, non_blocking=True)
            if event is None:
                event = torch.cuda.Event()
            hosts.append(host)
        else:
            hosts.append(block)
    if event is not None:
        event.record(torch.cuda.current_stream(s.device))
    s.inflight.append((a, b, hosts[0], hosts[1], event))
    s.pending.clear()


def _validate(s: _Slot, a: int, b: int, data: AuditData) -> None:
    """Vectorised checks of rows a:b; errors name the model, the first bad row and its sample id."""
    raw = s.raw[a:b]  # type: ignore[index]
    where = f"outputs of model {s.name!r}"

    def at(mask_rows: np.ndarray) -> str:
        row = a + int(np.flatnonzero(mask_rows)[0])
        sid = data.ids[row]
        return f"row {row} (sample id {sid.item() if hasattr(sid, 'item') else sid!r})"

    if s.model.access is Access.LABELS:
        bad = (raw < 0) | (raw >= s.model.n_classes)
        if bad.any():
            row = a + int(np.flatnonzero(bad)[0])
            raise invalid_argument(where, f"label {int(s.raw[row])} at {at(bad)}",  # type: ignore[index]
                                   f"labels in [0, {s.model.n_classes - 1}]")
        return
    finite = np.isfinite(raw).all(axis=1)
    if not finite.all():
        raise invalid_argument(where, f"NaN or inf at {at(~finite)}", f"finite {s.model.output}")
    if s.model.output != "probabilities":
        return
    out_of_range = ((raw < -1e-6) | (raw > 1 + 1e-6)).any(axis=1)
    if out_of_range.any():
        raise invalid_argument(where, f"values outside [0, 1] at {at(out_of_range)}",
                               "probabilities in [0, 1] (if these are scores, declare them as logits: output='logits', "
                               "or kind='logits' for precomputed outputs)")
    sums = raw.sum(axis=1, dtype=np.float64)
    if s.model.access is Access.TOP_K:
        bad = sums > 1 + PROB_SUM_ATOL
        accepted = f"top-k probabilities that sum to at most 1 (tolerance {PROB_SUM_ATOL})"
    else:
        bad = np.abs(sums - 1) > PROB_SUM_ATOL
        accepted = f"probabilities that sum to 1 per row (tolerance {PROB_SUM_ATOL})"
    if bad.any():
        row = a + int(np.flatnonzero(bad)[0])
        raise invalid_argument(where, f"a row summing to {sums[row - a]:.6g} at {at(bad)}", accepted)


def _fail(s: _Slot, exc: Exception, a: int, b: int, todo: list[_Slot], slots: list[_Slot], data: AuditData,
          cache: OutputCache | None) -> None:
    """Keep what was computed (on disk too, with a cache), then raise ModelExecutionError."""
    try:
        _flush_all(todo, data, cache)
    except KDAuditError:
        pass  # the model's own error is the one to report
    n = len(data)
    partial = {t.name: _model_outputs(t, t.checked) for t in slots if t.raw is not None and t.checked > 0}
    where = (f"they are checkpointed in {str(cache.root)!r} and a re-run with the same cache_dir resumes there"
             if cache is not None else "pass cache_dir= to keep them on disk so a re-run resumes")
    raise ModelExecutionError(
        f"model {s.name!r} raised {type(exc).__name__}: {exc} on rows {a}:{b} of {n}; the {s.checked} rows "
        f"before were computed and kept (ModelExecutionError.partial); {where}",
        model=s.name, rows_done=s.checked, partial=partial) from exc


# -- results -------------------------------------------------------------------------------------------
def _model_outputs(s: _Slot, rows: int) -> ModelOutputs:
    m = s.model
    raw = s.raw[:rows]  # type: ignore[index]
    if m.access is Access.LABELS:
        labels = raw.astype(np.int64, copy=False)
        probs = np.zeros((rows, m.n_classes), dtype=np.float32)
        probs[np.arange(rows), labels] = 1.0
        return ModelOutputs(m.name, probs, labels, m.access, m.top_k, None)
    if m.output == "logits":
        probs = s.probs[:rows]  # type: ignore[index]
        logits = raw
    else:
        probs = raw.astype(np.float32, copy=False)
        logits = None
    labels = probs.argmax(axis=1).astype(np.int64)
    return ModelOutputs(m.name, probs, labels, m.access, m.top_k, logits)


def _record(s: _Slot) -> ModelRecord:
    new = s.model.query_count - s.queries_at_start
    return model_record(s.model, sha=s.sha, precision=s.precision, queries=s.prior_queries + new, queries_new=new,
                        from_cache=s.from_cache, seconds=s.seconds, rows_from_cache=s.rows_from_cache)


def model_record(m: ModelAdapter, *, sha: str, precision: str, queries: int, queries_new: int,
                 from_cache: bool = False, seconds: float = 0.0, rows_from_cache: int = 0) -> ModelRecord:
    """The provenance of one model in a run (the harness's and the streaming engine's)."""
    members = tuple(x.name for x in m.members) if isinstance(m, EnsembleModel) else ()
    tms = _torch_models([m])
    return ModelRecord(
        name=m.name, kind=m.kind, sha256=sha, access=str(m.access), n_classes=int(m.n_classes),
        n_parameters=m.n_parameters(), size_bytes=m.size_bytes(), queries=queries,
        from_cache=from_cache, wall_time_s=seconds, members=members, queries_this_run=queries_new,
        rows_from_cache=rows_from_cache, device=",".join(sorted({str(t.device) for t in tms})) or "cpu",
        precision=precision, file_sha256=m.file_sha256,
    )


def provenance_of(adapters: Sequence[ModelAdapter], data: AuditData, *, records: Sequence[ModelRecord], seed: int,
                  batch_size: int, wall_time_s: float) -> Provenance:
    """The run's provenance from its models' records (one rule for the device and precision labels)."""
    devices = sorted({str(m.device) for m in _torch_models(adapters)})
    precisions = sorted({r.precision for r in records if r.precision != "native"})
    return Provenance(data_sha256=data.fingerprint(), n_rows=len(data), models=tuple(records),
                      versions=library_versions(), seed=int(seed), device=",".join(devices) if devices else "cpu",
                      precision=",".join(precisions) if precisions else "native", batch_size=int(batch_size),
                      wall_time_s=wall_time_s)
