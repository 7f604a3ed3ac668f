"""A fused CPU kernel for the IF neuron over a chunk of time steps (numba, optional).

Why a kernel: the IF update is sequential in time and elementwise in space. Written as torch
ops, each step streams the membrane through memory four times (integrate, compare, spike,
reset), so on a CPU the neuron, not the convolution, sets the pace. This kernel walks a block
of neurons through all the steps of a chunk with the membrane held in a small local array:
each current is read once, each spike written once; blocks run in parallel on as many threads
as torch uses. It computes exactly what
:func:`snnlite.neurons.integrate_and_fire_torch` computes (tested bit for bit).

numba is optional: without it (or for GPU tensors) the torch path runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

try:  # pragma: no cover - exercised where numba is installed
    import numba
    import numpy as np
except ImportError:  # pragma: no cover
    numba = None

__all__ = [
    "available",
    "clip_cpu",
    "empty_over_time",
    "excess_sums_cpu",
    "integrate_and_fire_cpu",
    "signed_integrate_and_fire_cpu",
    "spike_maps",
    "window_output_size",
]

BLOCK = 512  # neurons per block: their membranes stay in L1 across the steps of a chunk


def available(tensor: Tensor) -> bool:
    """Whether the fused kernel can run on this tensor (CPU, float32/float64, numba present)."""
    return (
        numba is not None
        and tensor.device.type == "cpu"
        and tensor.dtype in (torch.float32, torch.float64)
    )


if numba is not None:

    @numba.njit(inline="always")
    def _block(b, per_sample, period):  # pragma: no cover
        """Block ``b`` of a flat (N * P,) layer cut into ``per_sample`` blocks per sample of
        P neurons: its range [lo, hi) within the sample and [start, stop) in the layer."""
        lo = b % per_sample * BLOCK
        hi = min(lo + BLOCK, period)
        start = b // per_sample * period + lo
        return lo, hi, start, start + hi - lo

    @numba.njit(inline="always")
    def _if_step(u, value, level, zero, current, spike):  # pragma: no cover
        """One step of a block: integrate, fire (at most one spike), reset by subtraction.
        ``spike`` may be ``current`` itself (each element is read before it is written)."""
        for k in range(u.shape[0]):  # branch-free, so it vectorises
            v = u[k] + current[k]
            s = value[k] if v >= level[k] else zero
            spike[k] = s
            u[k] = v - s

    # Written for the vectoriser and the caches (each change measured on MobileNetV2's
    # largest layer, one core): the step loop works on 1-D row slices (2-D indexing kept it
    # scalar) with a "no spike" of the membrane's own dtype (a bare 0 made the select
    # float64); blocks never straddle two samples, so a block's thresholds are a slice of one
    # sample's map (expanding them per block cost more than the steps); the in-place twin is
    # a function of its own, so the compiler sees that its input and output rows are the
    # same memory (one array passed as both arguments of the other kernel ran scalar code).

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _if_chunk(currents, constant, membrane, value, level, spikes):  # pragma: no cover
        """currents: (steps, M) or (1, M) if constant; membrane: (M,), M = N * P; value,
        level: (P,) one sample's spike values (theta) and firing levels (inf: silent);
        spikes: (steps, M) output. Updates membrane."""
        steps, size = spikes.shape
        period = value.shape[0]
        per_sample = (period + BLOCK - 1) // BLOCK
        zero = np.zeros(1, dtype=membrane.dtype)[0]
        for b in numba.prange(size // period * per_sample):
            lo, hi, start, stop = _block(b, per_sample, period)
            u = membrane[start:stop]  # a block's membranes stay in L1 across the steps
            for t in range(steps):
                row = 0 if constant else t
                current = currents[row, start:stop]
                _if_step(u, value[lo:hi], level[lo:hi], zero, current, spikes[t, start:stop])

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _if_chunk_in_place(currents, membrane, value, level):  # pragma: no cover
        """``_if_chunk`` whose spikes overwrite its currents (steps, M)."""
        steps, size = currents.shape
        period = value.shape[0]
        per_sample = (period + BLOCK - 1) // BLOCK
        zero = np.zeros(1, dtype=membrane.dtype)[0]
        for b in numba.prange(size // period * per_sample):
            lo, hi, start, stop = _block(b, per_sample, period)
            u = membrane[start:stop]
            for t in range(steps):
                row = currents[t, start:stop]
                _if_step(u, value[lo:hi], level[lo:hi], zero, row, row)

    @numba.njit(inline="always")
    def _signed_step(u, sent, value, level, zero, current, spike):  # pragma: no cover
        """One step of a block of signed neurons with memory: integrate; fire +theta at
        ``u >= theta`` or -theta at ``u < 0`` with a spike to take back (``sent > 0``);
        reset by subtracting the spike; ``sent`` counts the net spikes."""
        one = zero + 1
        for k in range(u.shape[0]):  # branch-free, so it vectorises
            v = u[k] + current[k]
            up = one if v >= level[k] else zero
            back = one if (v < zero) & (sent[k] > zero) else zero
            sign = up - back
            sent[k] += sign
            s = sign * value[k]
            spike[k] = s
            u[k] = v - s

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _signed_chunk(currents, constant, membrane, sent, value, level, spikes):  # pragma: no cover
        """``_if_chunk`` for signed neurons with memory; ``sent`` (M,) updated too."""
        steps, size = spikes.shape
        period = value.shape[0]
        per_sample = (period + BLOCK - 1) // BLOCK
        zero = np.zeros(1, dtype=membrane.dtype)[0]
        for b in numba.prange(size // period * per_sample):
            lo, hi, start, stop = _block(b, per_sample, period)
            u = membrane[start:stop]
            n = sent[start:stop]
            for t in range(steps):
                row = 0 if constant else t
                current = currents[row, start:stop]
                _signed_step(u, n, value[lo:hi], level[lo:hi], zero, current,
                             spikes[t, start:stop])  # fmt: skip

    @numba.njit(inline="always")
    def _burst_step(u, value, level, zero, cap, current, spike):  # pragma: no cover
        """One step of a block of burst neurons: integrate, fire ``n = clip(floor(u / level),
        0, B)`` spikes of ``value`` (theta / B; ``level`` is inf where silent), reset by
        subtracting them; see :func:`snnlite.neurons.burst_integrate_and_fire`."""
        for k in range(u.shape[0]):
            v = u[k] + current[k]
            count = min(max(np.floor(v / level[k]), zero), cap)
            s = count * value[k]
            spike[k] = s
            u[k] = v - spike[k]  # the spike as stored, in the membrane's dtype

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _burst_chunk(currents, constant, membrane, value, level, limit, spikes):  # pragma: no cover
        """``_if_chunk`` for burst neurons of up to ``limit`` spikes per step."""
        steps, size = spikes.shape
        period = value.shape[0]
        per_sample = (period + BLOCK - 1) // BLOCK
        zero = np.zeros(1, dtype=membrane.dtype)[0]
        cap = zero + limit
        for b in numba.prange(size // period * per_sample):
            lo, hi, start, stop = _block(b, per_sample, period)
            u = membrane[start:stop]
            for t in range(steps):
                row = 0 if constant else t
                _burst_step(u, value[lo:hi], level[lo:hi], zero, cap, currents[row, start:stop],
                            spikes[t, start:stop])  # fmt: skip

    @numba.njit(inline="always")
    def _catch_up_step(
        u, sent, value, level, zero, limit, elapsed, current, spike
    ):  # pragma: no cover
        """``_signed_step`` for neurons that may send up to ``limit`` spikes in one step:
        floor(u / theta) up (never more than ``elapsed`` - sent, ``elapsed`` being the steps
        so far, this one included) or ceil(-u / theta) taken back below 0 (never more than
        ``sent``); see :func:`snnlite.neurons.signed_integrate_and_fire`."""
        for k in range(u.shape[0]):
            v = u[k] + current[k]
            up = np.floor(v / level[k])
            up = min(max(up, zero), limit, elapsed - sent[k])
            down = np.ceil(-v / level[k])
            down = min(max(down, zero), limit, sent[k]) if v < zero else zero
            count = up - down
            sent[k] += count
            spike[k] = count * value[k]
            u[k] = v - spike[k]  # the spike as stored, in the membrane's dtype

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _catch_up_chunk(
        currents, constant, membrane, sent, value, level, limit, done, per_step, spikes
    ):  # pragma: no cover
        """``_signed_chunk`` with up to ``limit`` spikes per step and ``per_step`` spikes per
        step on average at most; ``done``: the steps before this chunk."""
        steps, size = spikes.shape
        period = value.shape[0]
        per_sample = (period + BLOCK - 1) // BLOCK
        zero = np.zeros(1, dtype=membrane.dtype)[0]
        cap = zero + limit
        for b in numba.prange(size // period * per_sample):
            lo, hi, start, stop = _block(b, per_sample, period)
            u = membrane[start:stop]
            n = sent[start:stop]
            for t in range(steps):
                row = 0 if constant else t
                current = currents[row, start:stop]
                _catch_up_step(u, n, value[lo:hi], level[lo:hi], zero, cap,
                               zero + per_step * (done + t + 1), current,
                               spikes[t, start:stop])  # fmt: skip

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _gated_pool_chunk(x, sums, windows, out):  # pragma: no cover
        """x: (steps, P, HW) currents of P planes; sums: (P, HW) running input sums, updated;
        windows: (OUT, K) flat input index of each window position (-1: padding);
        out: (steps, P, OUT). Each window passes the current of its largest-sum position
        (the first one in row-major order on ties, as torch's max_pool2d picks)."""
        steps, planes, size = x.shape
        outputs, taps = windows.shape
        for p in numba.prange(planes):
            s = sums[p].copy()  # one plane's running sums: stays in L1 across the steps
            for t in range(steps):
                for i in range(size):
                    s[i] += x[t, p, i]
                for o in range(outputs):
                    winner = -1
                    for k in range(taps):
                        j = windows[o, k]
                        if j >= 0 and (winner < 0 or s[j] > s[winner]):
                            winner = j
                    out[t, p, o] = x[t, p, winner]
            sums[p] = s

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _gated_pool_2x2_chunk(x, sums, width, out_h, out_w, out):  # pragma: no cover
        """``_gated_pool_chunk`` for the common 2 x 2 pool of stride 2 without padding, on
        maps ``width`` wide pooled to (out_h, out_w): out (steps, P, out_h * out_w). The
        four taps in row-major order pick the first largest sum with a chain of selects:
        branch-free, so it vectorises, where the general kernel's data-dependent branch per
        tap ran several times slower (the zoo VGG's pools took a fifth of its simulation)."""
        steps, planes, size = x.shape
        for p in numba.prange(planes):
            s = sums[p].copy()
            for t in range(steps):
                row = x[t, p]
                for i in range(size):
                    s[i] += row[i]
                for oy in range(out_h):
                    top = 2 * oy * width
                    bottom = top + width
                    o = oy * out_w
                    for ox in range(out_w):
                        a = top + 2 * ox
                        c = bottom + 2 * ox
                        best, passed = s[a], row[a]
                        take = s[a + 1] > best
                        best = s[a + 1] if take else best
                        passed = row[a + 1] if take else passed
                        take = s[c] > best
                        best = s[c] if take else best
                        passed = row[c] if take else passed
                        take = s[c + 1] > best
                        passed = row[c + 1] if take else passed
                        out[t, p, o + ox] = passed
            sums[p] = s

    # reassoc: lets the sum vectorise (the order of a float sum is otherwise fixed, which
    # keeps it one add at a time); nothing else of fast-math, so inf and NaN stay exact.
    @numba.njit(cache=True, nogil=True, parallel=True, fastmath={"reassoc"})
    def _excess_plane_sums(z, theta, period, out):  # pragma: no cover
        """z: (P, L) planes; plane p's threshold is theta[p % period]; out[p] = sum over the
        plane of max(z - theta, 0), accumulated in float64."""
        planes, size = z.shape
        for p in numba.prange(planes):
            level = theta[p % period]
            total = 0.0
            for i in range(size):
                d = z[p, i] - level
                total += d if d > 0 else 0.0
            out[p] = total

    @numba.njit(cache=True, nogil=True, parallel=True)
    def _clip_planes(z, ceiling, period, out):  # pragma: no cover
        """out[p] = clip(z[p], 0, ceiling[p % period]) for planes z: (P, L)."""
        planes, size = z.shape
        for p in numba.prange(planes):
            top = ceiling[p % period]
            for i in range(size):
                v = z[p, i]
                v = v if v > 0 else 0.0
                out[p, i] = v if v < top else top


def match_torch_threads() -> None:
    """Use as many numba threads as torch does: a user who limits torch limits the kernels."""
    wanted = max(1, min(torch.get_num_threads(), numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)


def empty_over_time(membrane: Tensor, steps: int) -> Tensor:
    """Uninitialised (steps, N, ...) tensor whose every step has the membrane's memory format."""
    if membrane.dim() == 4 and membrane.is_contiguous(memory_format=torch.channels_last):
        n, c, h, w = membrane.shape
        buffer = membrane.new_empty((steps, n, h, w, c))
        return buffer.permute(0, 1, 4, 2, 3)  # (steps, N, C, H, W), channels last per step
    return membrane.new_empty((steps, *membrane.shape))


def _flat_in_memory_order(x: Tensor) -> Tensor:
    """A 1-D view of ``x``'s storage order (contiguous or channels-last 4-D)."""
    if x.is_contiguous():
        return x.view(-1)
    if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last):
        return x.permute(0, 2, 3, 1).reshape(-1)  # a view: NHWC is the storage order
    raise ValueError("expected a contiguous or channels-last tensor")


def spike_maps(threshold: Tensor, membrane: Tensor) -> tuple[Tensor, Tensor]:
    """One sample's spike values (theta) and firing levels (inf where silent), flat (P,) in
    the membrane's memory order: what the kernel reads for every block.

    Computed once per simulation by the neuron and passed in: built every chunk, these two
    maps (and the copies behind them) cost several times the kernel itself on MobileNetV2's
    largest layer.
    """
    per_sample = torch.broadcast_to(threshold.to(membrane.dtype), membrane[:1].shape)
    value = _flat_in_memory_order(per_sample.contiguous(memory_format=_format_of(membrane)))
    return value, torch.where(value > 0, value, torch.inf)


def integrate_and_fire_cpu(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    steps: int,
    constant: bool,
    in_place: bool = False,
    maps: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Fused IF chunk. Same contract as :func:`snnlite.neurons.integrate_and_fire`.

    ``currents`` is (steps, N, ...) or, if ``constant``, (N, ...); ``membrane`` (N, ...) is
    updated in place; ``threshold`` broadcasts to one sample (a scalar or (C, 1, ..., 1)),
    or ``maps`` is :func:`spike_maps` of it, computed before. Returns spikes (steps, N, ...)
    in the membrane's memory format: with ``in_place`` (and currents over time stored in
    that format) the currents' own memory, overwritten.
    """
    value, level = spike_maps(threshold, membrane) if maps is None else maps
    value, level = value.numpy(), level.numpy()
    flat_membrane = _flat_in_memory_order(membrane).numpy()

    match_torch_threads()
    if in_place and not constant and _stored_like(currents, membrane):
        _if_chunk_in_place(_flat_over_time(currents, membrane).numpy(), flat_membrane, value, level)
        return currents
    spikes = empty_over_time(membrane, steps)
    _if_chunk(
        _flat_currents(currents, membrane, constant).numpy(),
        constant,
        flat_membrane,
        value,
        level,
        _flat_over_time(spikes, membrane).numpy(),
    )
    return spikes


def signed_integrate_and_fire_cpu(
    currents: Tensor,
    membrane: Tensor,
    sent: Tensor,
    threshold: Tensor,
    steps: int,
    constant: bool,
    maps: tuple[Tensor, Tensor] | None = None,
    catch_up: int = 1,
    done: int = 0,
    levels: int = 1,
) -> Tensor:
    """Fused chunk of signed neurons with memory: the contract of
    :func:`snnlite.neurons.signed_integrate_and_fire`. ``membrane`` and ``sent`` (N, ...),
    in one memory format, are updated in place; returns spikes (steps, N, ...) in it.
    ``maps``: :func:`spike_maps` of ``threshold / levels`` (the spike and its firing
    level)."""
    value, level = spike_maps(threshold / levels, membrane) if maps is None else maps
    spikes = empty_over_time(membrane, steps)
    match_torch_threads()
    arrays = (
        _flat_currents(currents, membrane, constant).numpy(),
        constant,
        _flat_in_memory_order(membrane).numpy(),
        _flat_in_memory_order(sent).numpy(),
        value.numpy(),
        level.numpy(),
    )
    if catch_up * levels > 1:
        _catch_up_chunk(*arrays, catch_up * levels, done, levels,
                        _flat_over_time(spikes, membrane).numpy())  # fmt: skip
    else:
        _signed_chunk(*arrays, _flat_over_time(spikes, membrane).numpy())
    return spikes


def burst_integrate_and_fire_cpu(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    levels: int,
    steps: int,
    constant: bool,
    maps: tuple[Tensor, Tensor] | None = None,
) -> Tensor:
    """Fused chunk of burst neurons (up to ``levels`` spikes of theta / B per step): the
    contract of :func:`snnlite.neurons.burst_integrate_and_fire`. ``maps``: :func:`spike_maps`
    of ``threshold / levels`` (the spike and its firing level). ``membrane`` is updated in
    place; returns spikes (steps, N, ...) in its memory format."""
    value, level = spike_maps(threshold / levels, membrane) if maps is None else maps
    spikes = empty_over_time(membrane, steps)
    match_torch_threads()
    _burst_chunk(
        _flat_currents(currents, membrane, constant).numpy(),
        constant,
        _flat_in_memory_order(membrane).numpy(),
        value.numpy(),
        level.numpy(),
        levels,
        _flat_over_time(spikes, membrane).numpy(),
    )
    return spikes


def _flat_currents(currents: Tensor, membrane: Tensor, constant: bool) -> Tensor:
    """A chunk's currents as the kernels read them, (steps, M) or (1, M) if ``constant``,
    in the membrane's memory order (copies only if needed)."""
    if constant:
        layout = _format_of(membrane)
        return _flat_in_memory_order(currents.contiguous(memory_format=layout)).view(1, -1)
    return _flat_over_time(currents, membrane)


def _stored_like(x: Tensor, like: Tensor) -> bool:
    """Whether (steps, N, ...) ``x`` flattens to (steps, M) in ``like``'s order as a view."""
    if _format_of(like) == torch.channels_last:
        return x.dim() == 5 and x.permute(0, 1, 3, 4, 2).is_contiguous()
    return x.is_contiguous()


def _format_of(x: Tensor) -> torch.memory_format:
    if (
        x.dim() == 4
        and not x.is_contiguous()
        and x.is_contiguous(memory_format=torch.channels_last)
    ):
        return torch.channels_last
    return torch.contiguous_format


def _flat_over_time(x: Tensor, like: Tensor) -> Tensor:
    """(steps, N, ...) -> (steps, M) in ``like``'s memory order (copies only if needed)."""
    steps = x.shape[0]
    if _format_of(like) == torch.channels_last:
        nhwc = x.permute(0, 1, 3, 4, 2)  # (steps, N, H, W, C)
        return (
            nhwc.reshape(steps, -1)
            if nhwc.is_contiguous()
            else (nhwc.contiguous().reshape(steps, -1))
        )
    return x.reshape(steps, -1) if x.is_contiguous() else x.contiguous().reshape(steps, -1)


def pool_windows(pool: torch.nn.MaxPool2d, height: int, width: int) -> Tensor:
    """(OUT, K) int64: the flat input index of every tap of every window, -1 for padding.

    Cached per geometry: ``unfold`` of even a tiny map costs ~17 ms on a CPU (measured), which
    once per chunk and pool was a tenth of a whole simulation.
    """
    key = (pool.kernel_size, pool.stride, pool.padding, pool.dilation, height, width)
    if key not in _WINDOWS:
        index = torch.arange(1, height * width + 1, dtype=torch.float64)
        taps = torch.nn.functional.unfold(
            index.view(1, 1, height, width),
            pool.kernel_size,
            dilation=pool.dilation,
            padding=pool.padding,
            stride=pool.stride,
        )  # (1, K, OUT), 0 where the window hangs over the padding
        _WINDOWS[key] = (taps[0].T.round().long() - 1).contiguous()
    return _WINDOWS[key]


_WINDOWS: dict[tuple, Tensor] = {}  # pool geometry -> pool_windows(...)


def gated_pool_supported(pool: torch.nn.Module, x: Tensor) -> bool:
    """The fused kernel handles 2-D max pools without ceil mode on contiguous CPU floats."""
    return (
        available(x)
        and isinstance(pool, torch.nn.MaxPool2d)
        and not pool.ceil_mode
        and x.dim() == 4
        and x.is_contiguous()
    )


def gated_max_pool_cpu(
    pool: torch.nn.MaxPool2d, x: Tensor, running_sum: Tensor, steps: int
) -> Tensor:
    """Fused gated max pool over a chunk: x (steps * N, C, H, W) -> (steps * N, C, h, w).

    ``running_sum`` (N, C, H, W), contiguous, is updated in place.
    """
    match_torch_threads()
    n, c, h, w = running_sum.shape
    out_h, out_w = _pooled_size(pool, h, w)
    out = x.new_empty((steps, n * c, out_h * out_w))
    planes = x.view(steps, n * c, h * w).numpy()
    sums = running_sum.view(n * c, h * w).numpy()
    if _two_by_two(pool):
        _gated_pool_2x2_chunk(planes, sums, w, out_h, out_w, out.numpy())
    else:
        _gated_pool_chunk(planes, sums, pool_windows(pool, h, w).numpy(), out.numpy())
    return out.view(steps * n, c, out_h, out_w)


def _geometry(pool: torch.nn.MaxPool2d) -> tuple[tuple[int, int], ...]:
    """A 2-D pool's (kernel, stride, padding, dilation), each as a (height, width) pair."""

    def pair(v):
        return (v, v) if isinstance(v, int) else tuple(v)

    stride = pool.stride or pool.kernel_size
    return pair(pool.kernel_size), pair(stride), pair(pool.padding), pair(pool.dilation)


def _two_by_two(pool: torch.nn.MaxPool2d) -> bool:
    """Whether a pool is 2 x 2 with stride 2, no padding and no dilation."""
    return _geometry(pool) == ((2, 2), (2, 2), (0, 0), (1, 1))


def _pooled_size(pool: torch.nn.MaxPool2d, height: int, width: int) -> tuple[int, int]:
    return window_output_size((height, width), *_geometry(pool))


def window_output_size(
    size: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Output (height, width) of a sliding window (pool or convolution, no ceil mode)."""
    return tuple(  # type: ignore[return-value]
        (n + 2 * p - d * (k - 1) - 1) // s + 1
        for n, k, s, p, d in zip(size, kernel, stride, padding, dilation, strict=True)
    )


def excess_sums_cpu(z: Tensor, theta: Tensor) -> Tensor:
    """Fused sum of ``max(z - theta, 0)`` per threshold: float64, shape of ``theta``.

    ``z`` is a contiguous (N, C, ...) CPU tensor (:func:`available`) and ``theta`` one value
    per channel (C,) or a scalar (). Same contract as :func:`snnlite.recipes.excess_sums`,
    which dispatches here: torch ops take three passes and a temporary as large as ``z``,
    this one read of ``z``, which is what keeps calibration close to the cost of inference.
    """
    match_torch_threads()
    n, c = z.shape[:2]
    planes = z.view(n * c, -1) if theta.dim() == 1 else z.view(n, -1)
    levels = theta.to(z.dtype).reshape(-1).contiguous()
    sums = torch.empty(planes.shape[0], dtype=torch.float64)
    _excess_plane_sums(planes.numpy(), levels.numpy(), levels.numel(), sums.numpy())
    return sums.view(n, c).sum(0) if theta.dim() == 1 else sums.sum()


def clip_cpu(z: Tensor, ceiling: Tensor) -> Tensor:
    """``clip(z, 0, ceiling)`` with one ceiling per channel (C,), in one read of ``z``.

    ``z`` is a contiguous (N, C, ...) CPU tensor (:func:`available`). torch's clamp with
    tensor bounds broadcasts them: on a (100, 32, 28, 28) activation it took 1.85 ms against
    0.67 ms with scalar bounds, this kernel 1.23 ms (a small share of LTB calibration,
    whose convolutions cost ~30 ms there, but one paid at every site of every batch).
    """
    match_torch_threads()
    n, c = z.shape[:2]
    out = torch.empty_like(z)
    levels = ceiling.to(z.dtype).reshape(-1).contiguous()
    _clip_planes(z.view(n * c, -1).numpy(), levels.numpy(), c, out.view(n * c, -1).numpy())
    return out
