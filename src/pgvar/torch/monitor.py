"""A gradient-noise monitor for a user's own training loop: tr(Sigma), |G|^2, the gradient noise scale
B_simple and the expected cosine of the batch gradient to the true one, once per update.

McCandlish, Kaplan, Amodei et al. 2018, "An empirical model of large-batch training": B_simple =
tr(Sigma) / |G|^2 (Sigma the covariance of one episode's gradient, G the true gradient) is the batch
size at which the batch gradient's noise equals its signal; a mean of N episodes points at G with
cosine about (1 + B_simple / N)^(-1/2). Every statistic comes from :mod:`pgvar.kpi`.

Two ways in, each returning a :class:`MonitorRecord` appended to ``monitor.history``:

``update(losses_b)``                  per-episode surrogate losses built in the user's graph; the
                                      per-episode gradients come from one batched backward
                                      (``is_grads_batched``), chunked, and are never stored whole.
``update_two_batches(gs, gb, s, b)``  two gradients averaged over ``s`` < ``b`` episodes, when
                                      per-episode gradients cost too much (appendix A).

Fields of a record: ``trace``, ``squared_norm``, ``noise_scale_raw`` and ``per_layer`` are this
update's own estimates (raw); ``smoothed_trace`` and ``smoothed_squared_norm`` are exponential moving
averages of them (bias-corrected, as Adam's), and ``noise_scale``, ``expected_cosine`` and
``batch_for_cosine_09`` are read off the smoothed pair: the ratio of averages, not the average of
ratios, which a single noisy |G|^2 near zero would wreck.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import Tensor, nn

from pgvar import budget, kpi
from pgvar.errors import SpecError

MAX_CHUNK = 16  # episodes per batched backward: larger chunks measured no faster, only bigger
CHUNK_BYTES = 128e6  # memory for one chunk of per-episode gradients (chunk x D floats)

Parameters = nn.Module | Mapping[str, Tensor] | Iterable[Tensor] | Iterable[tuple[str, Tensor]]
Gradient = Tensor | np.ndarray | Sequence[Tensor] | Sequence[np.ndarray]


@dataclass(frozen=True)
class MonitorRecord:
    """One update's readings (see the module docstring for which fields are raw and which smoothed).

    Attributes:
      step: the record's index in ``monitor.history`` (0 for the first update).
      mode: "per-episode" or "two-batch".
      episodes: N, the episodes behind this update's gradient (B, or ``big`` in the two-batch mode).
      trace: tr(Sigma) of one episode's gradient, this update (raw; may be negative in two-batch mode).
      squared_norm: unbiased |G|^2, this update (raw; may be negative when noise dominates).
      noise_scale_raw: trace / squared_norm, this update alone; None where squared_norm <= 0.
      smoothed_trace, smoothed_squared_norm: their exponential moving averages.
      noise_scale: B_simple = smoothed_trace / smoothed_squared_norm, in episodes; None where the
        smoothed |G|^2 <= 0 (no signal detected yet) or the smoothed trace < 0 (two-batch noise).
      expected_cosine: expected cos(mean of N episodes' gradients, G) at this update's N, from
        ``noise_scale``; None where that is None.
      batch_for_cosine_09: the N at which that cosine would reach 0.9; None likewise.
      per_layer: tr(Sigma) per parameter tensor by name, this update (raw); they sum to ``trace``.
    """

    step: int
    mode: str
    episodes: int
    trace: float
    squared_norm: float
    noise_scale_raw: float | None
    smoothed_trace: float
    smoothed_squared_norm: float
    noise_scale: float | None
    expected_cosine: float | None
    batch_for_cosine_09: float | None
    per_layer: Mapping[str, float] = field(default_factory=dict)

    def row(self) -> dict[str, object]:
        """A flat dict: every field, with ``per_layer`` spread into ``trace[name]`` columns."""
        flat = asdict(self)
        per_layer = flat.pop("per_layer")
        flat.update({f"trace[{name}]": value for name, value in per_layer.items()})
        return flat


# -- parameters --------------------------------------------------------------------------------------


def named_tensors(parameters: Parameters) -> list[tuple[str, Tensor]]:
    """(name, tensor) for each tensor that requires grad: a module's ``named_parameters``, a mapping's
    items, (name, tensor) pairs, or plain tensors named "0", "1", ... in order."""
    if isinstance(parameters, nn.Module):
        items = list(parameters.named_parameters())
    elif isinstance(parameters, Mapping):
        items = list(parameters.items())
    elif isinstance(parameters, Tensor):
        items = [("0", parameters)]
    else:
        entries = list(parameters)
        items = [
            (str(entry[0]), entry[1]) if isinstance(entry, tuple) else (str(index), entry)
            for index, entry in enumerate(entries)
        ]
    if not all(isinstance(tensor, Tensor) for _, tensor in items):
        raise SpecError("parameters: give a module, a mapping of names to tensors, or tensors")
    items = [(name, tensor) for name, tensor in items if tensor.requires_grad]
    if not items:
        raise SpecError("parameters: none of them requires grad")
    return items


# -- per-episode gradients ---------------------------------------------------------------------------


def _chunk_size(episodes: int, dimension: int, itemsize: int, chunk_size: int | None) -> int:
    """Episodes per batched backward: the user's choice, else what CHUNK_BYTES holds, at most MAX_CHUNK."""
    if chunk_size is None:
        chunk_size = max(1, min(MAX_CHUNK, int(CHUNK_BYTES // max(dimension * itemsize, 1))))
    chunk = min(episodes, chunk_size)
    budget.check(
        "GradientMonitor.update", memory=2.0 * chunk * dimension * itemsize, hint="pass a smaller chunk_size"
    )
    return chunk


def _freed_graph(error: RuntimeError) -> bool:
    return "backward through the graph a second time" in str(error)


def _fill(grads: Sequence[Tensor | None], tensors: Sequence[Tensor], rows: int | None) -> list[Tensor]:
    """Zeros for the tensors the losses do not depend on (allow_unused gives None)."""
    shape = (lambda t: (rows, *t.shape)) if rows is not None else (lambda t: tuple(t.shape))
    return [
        torch.zeros(shape(t), dtype=t.dtype, device=t.device) if g is None else g
        for g, t in zip(grads, tensors, strict=True)
    ]


def _batched_chunk(losses_b: Tensor, tensors: Sequence[Tensor], rows_cb: Tensor) -> list[Tensor]:
    """(C, *shape) per tensor: the gradients of C episodes from one vmapped backward."""
    grads = torch.autograd.grad(
        losses_b, tensors, grad_outputs=rows_cb, is_grads_batched=True, retain_graph=True, allow_unused=True
    )
    return _fill(grads, tensors, rows_cb.shape[0])


def _looped_chunk(losses_b: Tensor, tensors: Sequence[Tensor], start: int, stop: int) -> list[Tensor]:
    """The same as :func:`_batched_chunk`, one backward per episode."""
    per_episode = [
        _fill(torch.autograd.grad(losses_b[b], tensors, retain_graph=True, allow_unused=True), tensors, None)
        for b in range(start, stop)
    ]
    return [torch.stack(column) for column in zip(*per_episode, strict=True)]


def gradient_chunks(
    losses_b: Tensor,
    tensors: Sequence[Tensor],
    chunk_size: int | None = None,
    batched: bool = True,
    on_fallback: Callable[[], None] | None = None,
) -> Iterator[list[Tensor]]:
    """Per-episode gradients of ``losses_b`` (B,) in ``tensors``, C episodes at a time: for each chunk
    a list of (C, *shape) tensors, one per parameter tensor. Nothing is written to ``.grad`` and the
    graph is kept for the user's own backward. Where the batched backward fails (an operation without
    a batching rule) it warns once, calls ``on_fallback`` and loops over episodes."""
    episodes = losses_b.shape[0]
    dimension = sum(t.numel() for t in tensors)
    chunk = _chunk_size(episodes, dimension, tensors[0].element_size(), chunk_size)
    eye_bb = torch.eye(episodes, dtype=losses_b.dtype, device=losses_b.device)
    for start in range(0, episodes, chunk):
        stop = min(start + chunk, episodes)
        if batched:
            try:
                chunk_grads = _batched_chunk(losses_b, tensors, eye_bb[start:stop])
            except (RuntimeError, NotImplementedError) as error:
                if isinstance(error, RuntimeError) and _freed_graph(error):
                    raise _graph_error() from None
                warnings.warn(
                    f"GradientMonitor: the batched backward failed ({str(error).splitlines()[0][:200]}); "
                    "looping over episodes instead",
                    RuntimeWarning,
                    stacklevel=3,
                )
                batched = False
                if on_fallback is not None:
                    on_fallback()
            else:
                yield chunk_grads
                continue
        try:
            chunk_grads = _looped_chunk(losses_b, tensors, start, stop)
        except RuntimeError as error:
            if _freed_graph(error):
                raise _graph_error() from None
            raise
        yield chunk_grads


def _graph_error() -> SpecError:
    return SpecError(
        "losses_b: its graph was freed; call monitor.update(losses_b) before your own .backward()"
    )


def per_episode_gradients(
    losses_b: Tensor, parameters: Parameters, chunk_size: int | None = None, batched: bool = True
) -> Tensor:
    """(B, D) every episode's flat gradient, columns in ``parameters`` order (for checks and small
    models; the monitor itself never holds more than one chunk)."""
    tensors = [tensor for _, tensor in named_tensors(parameters)]
    chunks = [
        torch.cat([g.reshape(g.shape[0], -1) for g in chunk], dim=1)
        for chunk in gradient_chunks(losses_b, tensors, chunk_size, batched)
    ]
    return torch.cat(chunks, dim=0)


def _accumulator_dtype(device: torch.device) -> torch.dtype:
    return torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64


@dataclass
class _Sums:
    """Per parameter tensor: the sum of the episodes' gradients and of their squared norms."""

    sum_n: list[Tensor]
    sum_squares_n: list[float]


def _sums(chunks: Iterable[list[Tensor]], tensors: Sequence[Tensor]) -> _Sums:
    """Sums over episodes, chunk by chunk, in float64: the only statistics the readings need."""
    dtype = _accumulator_dtype(tensors[0].device)
    sums = _Sums([torch.zeros(t.shape, dtype=dtype, device=t.device) for t in tensors], [0.0] * len(tensors))
    for chunk in chunks:
        for n, g in enumerate(chunk):
            g = g.detach().to(dtype)
            sums.sum_n[n] += g.sum(dim=0)
            sums.sum_squares_n[n] += float(torch.sum(g * g))
    return sums


def _per_tensor_traces(sums: _Sums, episodes: int) -> list[float]:
    """tr(Sigma-hat) of one episode's gradient per tensor: (sum |g_i|^2 - |sum g_i|^2 / B) / (B - 1)."""
    return [
        float(kpi.variance_traces(total.reshape(1, -1).cpu().numpy(), np.array([squares]), episodes)[0])
        for total, squares in zip(sums.sum_n, sums.sum_squares_n, strict=True)
    ]


# -- validation ----------------------------------------------------------------------------------------


def _check_losses(losses_b: object) -> Tensor:
    if not isinstance(losses_b, Tensor):
        raise SpecError(
            f"losses_b: expected a torch.Tensor of per-episode losses, got {type(losses_b).__name__}"
        )
    if losses_b.dim() != 1:
        raise SpecError(f"losses_b: expected shape (B,), one loss per episode, got {tuple(losses_b.shape)}")
    if losses_b.shape[0] < 2:
        raise SpecError(f"losses_b: needs at least 2 episodes for a variance, got {losses_b.shape[0]}")
    if not losses_b.is_floating_point():
        raise SpecError(f"losses_b: expected a floating-point tensor, got {losses_b.dtype}")
    if not bool(torch.isfinite(losses_b.detach()).all()):
        raise SpecError("losses_b: contains NaN or infinite values")
    if not losses_b.requires_grad:
        raise SpecError(
            "losses_b: does not require grad; build it from the parameters, outside torch.no_grad()"
        )
    return losses_b


def _check_ema(ema: object) -> float:
    if isinstance(ema, bool) or not isinstance(ema, (int, float)) or not 0.0 <= ema < 1.0:
        raise SpecError(f"ema: expected a number in [0, 1), got {ema!r}")
    return float(ema)


def _check_sizes(small: object, big: object) -> tuple[int, int]:
    for name, value in (("small", small), ("big", big)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise SpecError(f"{name}: expected a positive number of episodes, got {value!r}")
    if not small < big:
        raise SpecError(f"small, big: expected small < big episodes, got {small} and {big}")
    return int(small), int(big)


def _as_blocks(gradient: Gradient, what: str) -> list[np.ndarray]:
    """A gradient as a list of flat float64 arrays: one per tensor for a list, one for a flat array."""
    parts = [gradient] if isinstance(gradient, (Tensor, np.ndarray)) else list(gradient)
    if not parts:
        raise SpecError(f"{what}: is empty")
    blocks = []
    for part in parts:
        if isinstance(part, Tensor):
            part = part.detach().to("cpu", torch.float64).numpy()
        try:
            block = np.asarray(part, dtype=float).ravel()
        except (TypeError, ValueError):
            raise SpecError(f"{what}: expected tensors or arrays, got {type(part).__name__}") from None
        if not np.all(np.isfinite(block)):
            raise SpecError(f"{what}: contains NaN or infinite values")
        blocks.append(block)
    return blocks


# -- the monitor ---------------------------------------------------------------------------------------


class GradientMonitor:
    """Gradient noise of a user's policy-gradient updates (McCandlish, Kaplan, Amodei et al. 2018,
    "An empirical model of large-batch training").

        monitor = GradientMonitor(policy, ema=0.95)
        for update in range(updates):
            losses_b = ...                    # (B,) per-episode surrogate losses, in the graph
            record = monitor.update(losses_b)
            losses_b.mean().backward()        # the user's own step, undisturbed
            ...
        rows = monitor.to_rows()              # for CSV or pandas

    Args:
      parameters: the module or tensors to differentiate (only those requiring grad); may be given
        per call instead.
      ema: weight of the past in the moving averages of tr(Sigma) and |G|^2 (0: no smoothing).
      chunk_size: episodes per batched backward (memory about chunk x D floats plus the chunk's
        share of the backward); default from CHUNK_BYTES, at most MAX_CHUNK.
      batched: use the vmapped backward (``is_grads_batched``); False loops over episodes.
    """

    def __init__(
        self,
        parameters: Parameters | None = None,
        *,
        ema: float = 0.95,
        chunk_size: int | None = None,
        batched: bool = True,
    ) -> None:
        if chunk_size is not None and (
            isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
        ):
            raise SpecError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
        if isinstance(parameters, Tensor):
            parameters = [parameters]
        elif parameters is not None and not isinstance(parameters, nn.Module | Mapping):
            parameters = list(parameters)  # a generator such as model.parameters() is read once
        if parameters is not None:
            named_tensors(parameters)  # fail here, not at the first update
        self.parameters = parameters
        self.ema = _check_ema(ema)
        self.chunk_size = chunk_size
        self.batched = batched
        self.history: list[MonitorRecord] = []
        self._averages = np.zeros(2)  # moving sums of (trace, squared norm), before bias correction
        self._weight = 0.0  # 1 - ema^updates: the bias correction

    def _stop_batching(self) -> None:
        self.batched = False  # it failed on this graph; later updates build the same one

    def _named(self, parameters: Parameters | None) -> list[tuple[str, Tensor]]:
        chosen = self.parameters if parameters is None else parameters
        if chosen is None:
            raise SpecError("parameters: give them to GradientMonitor(...) or to update(..., parameters=)")
        return named_tensors(chosen)

    def update(self, losses_b: Tensor, parameters: Parameters | None = None) -> MonitorRecord:
        """Read this update from (B,) per-episode surrogate losses: losses_b[b]'s gradient must be
        episode b's own gradient estimate (e.g. -sum_t Psi_t log pi(a_t|s_t), not divided by B).

        Costs one vmapped backward through the batch's graph per chunk of episodes: about as much
        work as B ordinary backwards (docs/monitor.md). Writes no ``.grad`` and keeps the graph."""
        losses_b = _check_losses(losses_b)
        named = self._named(parameters)
        tensors = [tensor for _, tensor in named]
        episodes = int(losses_b.shape[0])
        chunks = gradient_chunks(losses_b, tensors, self.chunk_size, self.batched, self._stop_batching)
        sums = _sums(chunks, tensors)
        traces_n = _per_tensor_traces(sums, episodes)
        trace = float(sum(traces_n))
        mean_d = torch.cat([total.reshape(-1) for total in sums.sum_n]).cpu().numpy() / episodes
        squared_norm = kpi.squared_norm_estimate(mean_d, trace, episodes)
        per_layer = {name: value for (name, _), value in zip(named, traces_n, strict=True)}
        return self._record("per-episode", episodes, trace, squared_norm, per_layer)

    def update_two_batches(
        self,
        small_gradient: Gradient,
        big_gradient: Gradient,
        small: int,
        big: int,
        parameters: Parameters | None = None,
    ) -> MonitorRecord:
        """Read this update from two gradients averaged over ``small`` < ``big`` episodes (McCandlish
        et al. 2018, appendix A), each flat or a list of per-tensor gradients (e.g. ``[p.grad for p in
        model.parameters()]``). One pair is very noisy: read ``noise_scale``, the smoothed ratio.
        ``per_layer`` is filled where the tensors can be named: lists in the order of the monitor's
        parameters, or a flat gradient of their total size."""
        small, big = _check_sizes(small, big)
        small_blocks = _as_blocks(small_gradient, "small_gradient")
        big_blocks = _as_blocks(big_gradient, "big_gradient")
        if [b.size for b in small_blocks] != [b.size for b in big_blocks]:
            raise SpecError(
                f"small_gradient, big_gradient: sizes differ ({[b.size for b in small_blocks]} "
                f"vs {[b.size for b in big_blocks]})"
            )
        names, small_blocks, big_blocks = self._layers(small_blocks, big_blocks, parameters)
        pairs = [
            kpi.two_batch_estimates(float(s @ s), float(b @ b), small, big)
            for s, b in zip(small_blocks, big_blocks, strict=True)
        ]
        squared_norm = float(sum(norm for norm, _ in pairs))
        trace = float(sum(trace for _, trace in pairs))
        per_layer = dict(zip(names, (t for _, t in pairs), strict=True)) if names else {}
        return self._record("two-batch", big, trace, squared_norm, per_layer)

    def _layers(
        self, small_blocks: list[np.ndarray], big_blocks: list[np.ndarray], parameters: Parameters | None
    ) -> tuple[list[str] | None, list[np.ndarray], list[np.ndarray]]:
        """Names for the blocks, splitting a flat gradient by the parameters' sizes where they match."""
        chosen = self.parameters if parameters is None else parameters
        if chosen is None:
            return None, small_blocks, big_blocks
        named = named_tensors(chosen)
        sizes = [tensor.numel() for _, tensor in named]
        names = [name for name, _ in named]
        if [b.size for b in small_blocks] == sizes:
            return names, small_blocks, big_blocks
        if len(small_blocks) == 1 and small_blocks[0].size == sum(sizes):
            cuts = np.cumsum(sizes)[:-1]
            return names, np.split(small_blocks[0], cuts), np.split(big_blocks[0], cuts)
        return None, small_blocks, big_blocks

    def _record(
        self, mode: str, episodes: int, trace: float, squared_norm: float, per_layer: dict[str, float]
    ) -> MonitorRecord:
        """Move the averages, read the smoothed noise scale off them, append and return the record."""
        self._averages = self.ema * self._averages + (1.0 - self.ema) * np.array([trace, squared_norm])
        self._weight = self.ema * self._weight + (1.0 - self.ema)
        smoothed_trace, smoothed_norm = (float(v) for v in self._averages / self._weight)
        noise = kpi.noise_scale(smoothed_trace, smoothed_norm)
        if noise is not None and not (noise >= 0.0 and math.isfinite(noise)):
            noise = None  # a negative averaged trace (two-batch mode) is noise, not a reading
        readable = noise is not None
        record = MonitorRecord(
            step=len(self.history),
            mode=mode,
            episodes=episodes,
            trace=trace,
            squared_norm=squared_norm,
            noise_scale_raw=kpi.noise_scale(trace, squared_norm),
            smoothed_trace=smoothed_trace,
            smoothed_squared_norm=smoothed_norm,
            noise_scale=noise,
            expected_cosine=kpi.expected_cosine(noise, episodes) if readable else None,
            batch_for_cosine_09=kpi.batch_for_cosine(noise, kpi.TARGET_COSINE) if readable else None,
            per_layer=per_layer,
        )
        self.history.append(record)
        return record

    def to_rows(self) -> list[dict[str, object]]:
        """Every record as a flat dict (``per_layer`` as ``trace[name]`` columns): CSV or pandas rows."""
        return [record.row() for record in self.history]
