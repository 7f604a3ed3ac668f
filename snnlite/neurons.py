"""The two neuron models of the conversion, as small pure functions wrapped by thin modules.

* ``relux``: the clipped ReLU ``clip(z, 0, theta)`` of the calibrated ANN (book chapters 1, 3).
* ``integrate_and_fire``: the discrete-time IF neuron with reset by subtraction, membrane
  initialised at ``theta / 2`` and theta-valued spikes, at most one per step (book chapter 1).
* ``rate``: the closed-form average output ``psi_T`` of that neuron under a constant current,
  the bridge between the two (it tends to ``relux`` as T grows).
* ``burst_integrate_and_fire``: an opt-in variant that may send up to B spikes of
  ``theta / B`` per step (``spikes_per_step=B``; more than one bit per step, so its T is not
  the binary neuron's T). Under a constant current it gives ``psi_{B T}`` in T steps.
* ``signed_integrate_and_fire``: an opt-in variant with *signed spikes and memory*
  (``signed_spikes=True``): it may also send a spike of ``-theta`` to take back one it sent
  before, so its spikes so far always round its input so far. Three values per step
  (log2 3 = 1.58 bits), the binary neuron's rate under a constant current. With
  ``catch_up=B`` it may send up to B such spikes in one step when its input came faster
  than theta per step, never more than t spikes in t steps (log2(2 B + 1) bits per step).
  With ``spikes_per_step=S`` too, its spikes are theta / S, up to S B per step (S T levels
  in T steps; log2(2 S B + 1) bits per step, :func:`bits_per_step`).

The spike condition is ``v >= theta`` everywhere (neuron, ``rate``), so ``rate`` matches the
neuron exactly: a constant current ``z`` gives ``floor(z * T / theta + 1/2)`` spikes in T steps.

After :func:`snnlite.fold_thresholds` a site is *unit*: its neuron emits spikes of value 1
(the threshold moved into the weights its spikes reach) and still resets by subtracting its
threshold; its ANN reading is ``relux(z, theta) / theta``, the same clipped value in units of
theta.

A threshold of 0 marks a *silent* neuron (a channel that never activated during calibration):
it never fires and ``relux`` outputs 0 for it. No code path divides by a threshold.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from snnlite import kernels
from snnlite.kernels import empty_over_time

__all__ = [
    "ActivationSite",
    "IFNeuron",
    "QuantisedSite",
    "broadcast_threshold",
    "bits_per_step",
    "burst_integrate_and_fire",
    "check_catch_up",
    "check_signed_spikes",
    "check_spikes_per_step",
    "events_per_position",
    "integrate_and_fire",
    "rate",
    "relux",
    "signed_integrate_and_fire",
    "signed_integrate_and_fire_torch",
    "synaptic_operations",
]


def broadcast_threshold(threshold: Tensor, ndim: int) -> Tensor:
    """View a scalar or per-channel threshold so it broadcasts over an ``ndim`` activation.

    Channel thresholds have shape (C,) and the channel is dim 1 of an (N, C, ...) activation,
    so they become (C, 1, ..., 1); a scalar threshold is returned unchanged.
    """
    if threshold.dim() == 0:
        return threshold
    return threshold.view(threshold.shape[0], *([1] * (ndim - 2)))


def relux(z: Tensor, threshold: Tensor) -> Tensor:
    """``clip(z, 0, theta)`` with a scalar or per-channel threshold (shape () or (C,))."""
    return torch.minimum(torch.relu(z), broadcast_threshold(threshold, z.dim()))


def rate(z: Tensor, threshold: Tensor | float, timesteps: int) -> Tensor:
    """Average output over ``timesteps`` of an IF neuron driven by the constant current ``z``.

    ``psi_T(z) = theta / T * clip(floor(z * T / theta + 1/2), 0, T)`` (book chapter 1). It is
    exactly what :func:`integrate_and_fire` produces for a constant input (tested), and it
    tends to ``clip(z, 0, theta)`` as T grows. Silent neurons (theta = 0) give 0.
    """
    theta = torch.as_tensor(threshold, dtype=z.dtype)
    safe = torch.where(theta > 0, theta, torch.ones_like(theta))
    spikes = torch.clamp(torch.floor(z * timesteps / safe + 0.5), 0, timesteps)
    return torch.where(theta > 0, theta * spikes / timesteps, torch.zeros_like(spikes))


def _use_fused_kernel(
    backend: str, currents: Tensor, membrane: Tensor, threshold: Tensor, *state: Tensor
) -> bool:
    """Whether a neuron function runs its fused CPU kernel (:mod:`snnlite.kernels`):
    ``"auto"`` where one can (numba, CPU float tensors of the membrane's dtype, one threshold
    map per sample), ``"fused"`` only there (else an error), ``"torch"`` never."""
    if backend not in ("auto", "torch", "fused"):
        raise ValueError(f"backend must be 'auto', 'torch' or 'fused', got {backend!r}")
    fusable = (
        kernels.available(membrane)
        and all(x.dtype == membrane.dtype for x in (currents, *state))
        and threshold.dim() < membrane.dim()  # one threshold map per sample, not per batch
    )
    if backend == "fused" and not fusable:
        raise RuntimeError("the fused neuron kernels need numba and CPU float tensors")
    return backend != "torch" and fusable


def integrate_and_fire(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    steps: int | None = None,
    backend: str = "auto",
    in_place: bool = False,
    maps: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Run the IF neuron over a chunk of time steps.

    Args:
        currents: input currents, shape (steps, N, ...) or, for an input that is constant in
            time (the first layer under direct coding), shape (N, ...) together with ``steps``.
        membrane: the membrane potential ``u`` carried over from the previous chunk, (N, ...).
            It is updated in place (it is this module's state, not the caller's data).
        threshold: broadcastable to one sample: a scalar or a (C, 1, ..., 1) view.
        steps: number of steps; required for a constant current.
        backend: ``"torch"`` (a loop of torch ops, any device), ``"fused"`` (the numba CPU
            kernel of :mod:`snnlite.kernels`, same results) or ``"auto"`` (fused if possible).
        in_place: the spikes may overwrite ``currents`` (steps, N, ...), which the caller no
            longer needs: no new tensor, and one stream through memory fewer, as an in-place
            ReLU saves in the ANN. Ignored for a constant current.
        maps: for the fused kernel, :func:`snnlite.kernels.spike_maps` of ``threshold`` and
            ``membrane``, computed once for all chunks (else every call).

    Returns:
        spikes of shape (steps, N, ...), theta-valued, and the updated membrane.

    Only the membrane update is sequential; everything around it (the convolutions that make
    the currents) runs over the whole chunk at once.
    """
    constant = steps is not None and currents.dim() == membrane.dim()
    if not constant:
        steps = currents.shape[0]
    assert steps is not None
    if _use_fused_kernel(backend, currents, membrane, threshold):
        spikes = kernels.integrate_and_fire_cpu(
            currents, membrane, threshold, steps, constant, in_place, maps
        )
        return spikes, membrane
    return integrate_and_fire_torch(currents, membrane, threshold, steps, constant, in_place)


def integrate_and_fire_torch(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    steps: int,
    constant: bool,
    in_place: bool = False,
) -> tuple[Tensor, Tensor]:
    """The IF chunk as plain torch ops, one step at a time (the reference; runs anywhere)."""
    # Silent neurons (theta = 0) get an infinite firing level so they never fire.
    fire_level = torch.where(threshold > 0, threshold, torch.full_like(threshold, math.inf))
    # Step t's spikes overwrite step t's currents only after the membrane has integrated them.
    spikes = currents if in_place and not constant else empty_over_time(membrane, steps)
    fired = torch.empty(membrane.shape, dtype=torch.bool, device=membrane.device)
    for t in range(steps):
        membrane.add_(currents if constant else currents[t])  # integrate
        torch.ge(membrane, fire_level, out=fired)  # fire: at most one spike per step
        torch.mul(fired, threshold, out=spikes[t])  # theta-valued spike
        membrane.sub_(spikes[t])  # reset by subtraction
    return spikes, membrane


def check_spikes_per_step(value: object) -> int:
    """Spikes a neuron may send per step: a positive int (1: binary, the paper's)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"spikes_per_step must be a positive int, got {value!r}")
    return value


def check_signed_spikes(value: object) -> bool:
    """Whether neurons send signed spikes: a bool."""
    if not isinstance(value, bool):
        raise ValueError(f"signed_spikes must be True or False, got {value!r}")
    return value


def check_catch_up(value: object, signed_spikes: bool) -> int:
    """The most spikes a signed neuron may send in one step: a positive int, and more than
    one only with signed spikes (a binary neuron's spikes are final: it has nothing to
    catch up that it could later take back)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"catch_up must be a positive int, got {value!r}")
    if value > 1 and not signed_spikes:
        raise ValueError(
            f"catch_up={value} lets a signed neuron send several spikes in one step: it "
            "needs signed_spikes=True"
        )
    return value


def bits_per_step(spikes_per_step: int = 1, signed_spikes: bool = False,
                  catch_up: int = 1) -> float:  # fmt: skip
    """What one neuron's output carries per step, in bits: log2 of the values it can take.

    Binary spikes: 2 values, 1 bit. Bursts of up to S spikes: S + 1 values. Signed spikes of
    theta / S, up to S B sent or taken back in one step: 2 S B + 1 values (three for the
    signed neuron with one spike per step, log2 3 = 1.58 bits). Stated wherever a T of such
    a network is compared with a T of binary spikes: T steps of b bits carry what b T
    binary steps could at most.
    """
    if signed_spikes:
        return math.log2(2 * spikes_per_step * catch_up + 1)
    return math.log2(spikes_per_step + 1)


def burst_integrate_and_fire(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    levels: int,
    steps: int | None = None,
    backend: str = "auto",
    maps: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """The IF neuron that may fire up to ``levels`` (B) spikes of ``theta / B`` per step.

    Each step: integrate, fire ``n = clip(floor(u / (theta / B)), 0, B)`` spikes, reset by
    subtracting ``n theta / B``. Its output per step is one of B + 1 values (log2(B + 1)
    bits), its largest rate is still theta (the clipped ANN is unchanged), and with
    ``u(0) = theta / (2 B)`` a constant current ``z`` gives ``floor(z B T / theta + 1/2)``
    spikes in T steps (clipped to ``[0, B T]``): the binary neuron's rate over B T steps,
    ``rate(z, theta, B * T)``, reached in T steps. Every one of the n spikes counts as an
    event (the runner counts ``n`` per position), so its synaptic operations are those of
    the spikes it sends. ``levels=1`` is the binary neuron (same spikes as
    :func:`integrate_and_fire`, which the network uses for it).

    Args and shapes as :func:`integrate_and_fire`; ``backend`` as there, the fused kernel
    being :func:`snnlite.kernels.burst_integrate_and_fire_cpu` (bit for bit the torch loop
    below), ``maps`` its :func:`snnlite.kernels.spike_maps` of ``threshold / levels``.
    Returns spikes (steps, N, ...) with values in ``{0, theta / B, ..., theta}`` and the
    updated membrane.
    """
    levels = check_spikes_per_step(levels)
    constant = steps is not None and currents.dim() == membrane.dim()
    if not constant:
        steps = currents.shape[0]
    assert steps is not None
    if _use_fused_kernel(backend, currents, membrane, threshold):
        spikes = kernels.burst_integrate_and_fire_cpu(
            currents, membrane, threshold, levels, steps, constant, maps
        )
        return spikes, membrane
    quantum = threshold / levels
    # Silent neurons (theta = 0) get an infinite firing level so they never fire.
    level = torch.where(threshold > 0, quantum, torch.full_like(quantum, math.inf))
    spikes = empty_over_time(membrane, steps)
    for t in range(steps):
        membrane.add_(currents if constant else currents[t])  # integrate
        count = torch.floor(membrane / level).clamp_(0, levels)  # fire: 0 .. B spikes
        torch.mul(count, quantum, out=spikes[t])
        membrane.sub_(spikes[t])  # reset by subtraction
    return spikes, membrane


def signed_integrate_and_fire(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    sent: Tensor,
    steps: int | None = None,
    backend: str = "auto",
    maps: tuple[Tensor, Tensor] | None = None,
    catch_up: int = 1,
    done: int = 0,
    levels: int = 1,
) -> tuple[Tensor, Tensor]:
    """The IF neuron with signed spikes and memory: it can take back a spike it sent.

    Each step: integrate; fire ``+theta`` if ``u >= theta``, or ``-theta`` if ``u < 0`` and
    the neuron has a spike to take back (``sent > 0``, its memory: spikes sent minus spikes
    taken back); reset by subtracting the spike either way (a negative spike adds theta).

    Why: a binary neuron never takes a spike back, so a neuron that fired early on an input
    that later turns out smaller has sent too much for the rest of the run (the unevenness
    error), and in a deep network every layer's early, wrong spikes drive the next one. With
    ``u(0) = theta / 2`` the membrane is ``A(t) + theta / 2 - theta S(t)``, with ``A`` the
    input so far and ``S`` the net spikes. Keeping ``0 <= u < theta`` means
    ``S(t) = round(A(t) / theta)``: at every step the neuron's output so far is its input so
    far, rounded, clipped at 0 (and at one spike per step). So each layer's rate tracks the
    clipped ReLU of the *mean input so far*, and a deep network settles as soon as its
    inputs do. Under a constant current it never takes a spike back (nothing to correct)
    and fires exactly as :func:`integrate_and_fire`, so ``rate`` still describes it.

    Cost: a step carries one of three values (log2 3 = 1.58 bits); every spike, positive or
    negative, is an event and costs its synaptic operations (the runner counts nonzero
    outputs). The idea is the signed neuron with memory of Wang et al. (IJCAI 2022).

    **Catching up** (``catch_up`` = B > 1): one spike per step is also a speed limit. When a
    step brings more than theta (a deep layer's input arrives as spikes, several theta at
    once through large weights), the excess waits in the membrane and the output lags the
    input; what is still owed at the end of the run is lost. With B > 1 the neuron sends
    ``n = min(floor(u / theta), B, t - sent)`` spikes of theta at once (or takes back up to
    ``min(ceil(-u / theta), B, sent)``), so ``S(t) = round(A(t) / theta)`` holds as long as
    the input never runs more than B theta per step ahead; ``t - sent`` keeps at most t
    spikes in t steps, so the rate is still clipped at theta. A step then carries one of
    2 B + 1 values, log2(2 B + 1) bits; each of the n spikes is an event. B = 1 is the
    neuron above, bit for bit. ``done``: the steps this neuron ran before this chunk.

    **Finer spikes** (``levels`` = S > 1, ``spikes_per_step`` of the network): spikes of
    ``theta / S``, the burst neuron's (:func:`burst_integrate_and_fire`), with the same
    memory: up to ``S B`` of them sent or taken back in one step, never more than ``S t``
    in t steps (the rate is still clipped at theta), ``u(0) = theta / (2 S)``. Its spikes so
    far are then its input so far rounded to ``theta / S``: a network read out at T
    computes the quantised ANN of ``S T`` levels. A step carries one of ``2 S B + 1``
    values, log2(2 S B + 1) bits.

    Args and shapes as :func:`integrate_and_fire` (``backend``: the fused CPU kernel of
    :mod:`snnlite.kernels`, same spikes bit for bit, or this torch loop), plus ``sent``
    (N, ...): the net spikes so far, updated in place with the membrane. Returns spikes
    (steps, N, ...) with values in ``{-B theta, ..., B theta}`` and the updated membrane.
    """
    levels = check_spikes_per_step(levels)
    constant = steps is not None and currents.dim() == membrane.dim()
    if _use_fused_kernel(backend, currents, membrane, threshold, sent):
        count = steps if constant else currents.shape[0]
        assert count is not None
        spikes = kernels.signed_integrate_and_fire_cpu(
            currents, membrane, sent, threshold, count, constant, maps, catch_up, done, levels
        )
        return spikes, membrane
    return signed_integrate_and_fire_torch(
        currents, membrane, threshold, sent, steps, catch_up, done, levels
    )


def signed_integrate_and_fire_torch(
    currents: Tensor,
    membrane: Tensor,
    threshold: Tensor,
    sent: Tensor,
    steps: int | None = None,
    catch_up: int = 1,
    done: int = 0,
    levels: int = 1,
) -> tuple[Tensor, Tensor]:
    """The signed chunk as plain torch ops, one step at a time (the reference; runs
    anywhere). Arguments as :func:`signed_integrate_and_fire`."""
    constant = steps is not None and currents.dim() == membrane.dim()
    if not constant:
        steps = currents.shape[0]
    assert steps is not None
    quantum = threshold / levels  # the spike: theta, or theta / S with finer spikes
    fire_level = torch.where(threshold > 0, quantum, torch.full_like(quantum, math.inf))
    spikes = empty_over_time(membrane, steps)
    limit = catch_up * levels  # spikes of theta / S in one step
    if limit > 1:
        for t in range(steps):
            membrane.add_(currents if constant else currents[t])  # integrate
            # Up: floor(u / q) spikes of q (none below q; silent neurons: u / inf = 0), at
            # most S B, and never more than S t in t steps. Down: ceil(-u / q) taken back
            # below 0, at most S B and at most what was sent.
            up = torch.floor(membrane / fire_level).clamp_(0, limit)
            up = torch.minimum(up, levels * (done + t + 1) - sent)
            down = torch.ceil(-membrane / fire_level).clamp_(0, limit)
            down = torch.minimum(down, sent) * torch.lt(membrane, 0)
            count = up - down
            sent.add_(count)
            torch.mul(count, quantum, out=spikes[t])
            membrane.sub_(spikes[t])
        return spikes, membrane
    for t in range(steps):
        membrane.add_(currents if constant else currents[t])  # integrate
        up = torch.ge(membrane, fire_level)
        back = torch.lt(membrane, 0) & torch.gt(sent, 0)  # a spike to take back
        sign = up.to(membrane.dtype) - back.to(membrane.dtype)  # +1, 0 or -1
        sent.add_(sign)
        torch.mul(sign, threshold, out=spikes[t])
        membrane.sub_(spikes[t])  # reset by subtraction (adds theta for a negative spike)
    return spikes, membrane


def events_per_position(output: Tensor) -> Tensor:
    """How many samples have a nonzero output, per step and position: (steps, N, ...) ->
    (steps, P) integers.

    Reducing over the batch first, in int16 where it fits (a vectorised byte sum), makes
    counting spikes and their synaptic operations cost about one pass over the spikes.
    """
    fired = (output != 0).view(torch.uint8)
    dtype = torch.int16 if output.shape[1] <= torch.iinfo(torch.int16).max else torch.int32
    return fired.sum(1, dtype=dtype).flatten(1)


def synaptic_operations(counts: Tensor, fanout: Tensor) -> Tensor:
    """Synapses reached per step, float64 (steps,): ``sum_i counts[t, i] * fanout[i]``.

    ``counts``: (steps, P) from :func:`events_per_position`; ``fanout``: one sample's shape,
    the synapses an event at each position reaches (:func:`snnlite.synapses.fanout_maps`).
    """
    return counts.to(torch.float64) @ fanout.reshape(-1).to(torch.float64)


class ActivationSite(nn.Module):
    """One activation call site of the ANN, holding its threshold; acts as ReLUX.

    ``cap`` keeps what the original activation clipped at (6 for ReLU6, inf for ReLU), so a
    site with an infinite threshold computes exactly the original activation.


    Two optional buffers are corrections of the *spiking* twin only, set by the low-latency
    mode (:mod:`snnlite.latency`) and ``None`` otherwise: ``bias``, a current added to the
    neuron's input at every step, and ``charge``, added to the initial membrane potential
    ``theta / 2``. The clipped ANN (``forward``) ignores them: it is what the SNN
    approximates, and they correct the SNN's systematic error against it.

    ``unit`` is set by :func:`snnlite.fold_thresholds`: the site then outputs its value in
    units of its threshold (in [0, 1]; its neuron, spikes of 1), the threshold having moved
    into the weights downstream.
    """

    bias: Tensor | None
    charge: Tensor | None

    def __init__(self, threshold: Tensor | None = None, cap: float = math.inf) -> None:
        super().__init__()
        self.cap = float(cap)
        self.unit = False
        init = torch.tensor(math.inf) if threshold is None else threshold.detach().clone()
        self.register_buffer("threshold", init)
        self.register_buffer("bias", None)
        self.register_buffer("charge", None)

    def forward(self, z: Tensor) -> Tensor:
        out = relux(z, self.threshold)
        if self.unit:  # in units of theta; silent neurons (theta = 0) output 0
            theta = broadcast_threshold(self.threshold, z.dim())
            return torch.where(theta > 0, out / torch.where(theta > 0, theta, 1.0), 0.0)
        return out.clamp(max=self.cap) if math.isfinite(self.cap) else out

    def extra_repr(self) -> str:
        shape = tuple(self.threshold.shape)
        unit = ", unit spikes" if self.unit else ""
        return f"threshold={'scalar' if not shape else shape}, cap={self.cap}{unit}"


class QuantisedSite(nn.Module):
    """An activation site read as its neuron's average output over T steps under a constant
    current: ``psi_T`` (:func:`rate`) of the input plus the site's corrections.

    Why: the net spikes a signed neuron with memory has sent by step t are its input so far,
    rounded (:func:`signed_integrate_and_fire`), as long as no step brings it more than
    theta. A signed network read out at T with no delay then computes exactly this ANN, whose
    every activation is rounded to T levels of theta / T (T B levels for bursts of B). What
    the SNN loses against it is lag: a step whose input exceeds theta leaves a backlog. For
    binary neurons it is the constant-current limit only.

    The corrections enter as the neuron sees them: ``bias`` is added to the current every
    step, and the ``charge`` added to ``u(0)`` moves the T-step count as a current of
    ``charge / T`` would.
    """

    def __init__(self, site: ActivationSite, timesteps: int, spikes_per_step: int = 1) -> None:
        super().__init__()
        if site.unit:
            raise ValueError("a site folded into unit spikes has no quantised twin: unfold it")
        self.site = site
        self.timesteps = timesteps
        self.levels = timesteps * spikes_per_step  # stairs of theta / (T B)

    def forward(self, z: Tensor) -> Tensor:
        site = self.site
        if site.bias is not None:
            z = z + broadcast_threshold(site.bias.to(z.dtype), z.dim())
        if site.charge is not None:
            z = z + broadcast_threshold(site.charge.to(z.dtype), z.dim()) / self.timesteps
        theta = broadcast_threshold(site.threshold.to(z.dtype), z.dim())
        out = rate(z, theta, self.levels)
        return out.clamp(max=site.cap) if math.isfinite(site.cap) else out

    def extra_repr(self) -> str:
        return f"timesteps={self.timesteps}, levels={self.levels}"


def fold_time(x: Tensor) -> Tensor:
    """(steps, N, ...) -> (steps * N, ...), a view whose strides keep ``x``'s memory format.

    Merging dims may leave a dim of size 1 with any stride: one sample-step of a
    channels-last map came out as (1, C, H, W) with a batch stride of C, which the
    convolutions after it read as NCHW, taking their slow path (and rounding differently)
    for the rest of the network. A size-1 dim's stride addresses nothing, so it is set to
    the sample's size, as every memory format has it.
    """
    folded = x.flatten(0, 1)
    if folded.shape[0] == 1 and folded.dim() > 1:
        strides = (folded[0].numel(), *folded.stride()[1:])
        folded = folded.as_strided(folded.shape, strides, folded.storage_offset())
    return folded


class IFNeuron(nn.Module):
    """Integrate-and-fire neuron over time chunks; the spiking twin of an ActivationSite.

    The input is time-folded into the batch, (steps * N, ...), as every stateless layer of the
    network sees it; this module alone unfolds time. The membrane persists across chunks until
    :meth:`reset`. It returns its spikes and records nothing: whoever runs it (the network's
    runner) counts events and synaptic operations from what it returns.

    Spikes are theta-valued, or with ``unit`` (a folded site) 1-valued; the reset subtracts
    theta either way. With ``spikes_per_step`` B > 1 it is the burst neuron
    (:func:`burst_integrate_and_fire`): up to B spikes of theta / B per step, ``u(0) =
    theta / (2 B)``. With ``signed`` it is the neuron with signed spikes and memory
    (:func:`signed_integrate_and_fire`), whose memory ``sent`` persists with the membrane;
    ``catch_up`` B > 1 lets it send up to B of them in one step; with ``spikes_per_step`` S
    as well, its spikes are theta / S, up to S B per step.
    """

    def __init__(
        self,
        threshold: Tensor,
        bias: Tensor | None = None,
        charge: Tensor | None = None,
        unit: bool = False,
        spikes_per_step: int = 1,
        signed: bool = False,
        catch_up: int = 1,
    ) -> None:
        super().__init__()
        if spikes_per_step > 1 and unit:
            raise ValueError("unit (folded) spikes are binary: spikes_per_step must be 1")
        if signed and unit:
            raise ValueError("signed spikes are not unit (folded) spikes")
        self.unit = unit
        self.spikes_per_step = spikes_per_step
        self.signed = signed
        self.catch_up = check_catch_up(catch_up, signed)
        self.sent: Tensor | None = None  # signed spikes: net spikes so far (the memory)
        self.steps_done = 0  # steps run since the last reset (catching up caps spikes by it)
        self.register_buffer("threshold", threshold)
        self.register_buffer("bias", bias)  # a current added every step (() or (C,))
        self.register_buffer("charge", charge)  # added to the initial potential theta / 2
        self.membrane: Tensor | None = None
        # The fused kernel's per-sample threshold maps, built with the membrane (its layout).
        self.maps: tuple[Tensor, Tensor] | None = None
        # What every batch tile starts from, kept across reset(): one sample's initial
        # potential and its threshold maps, for one input shape, dtype and layout (and these
        # buffers' versions: an in-place change of a threshold rebuilds them). Rebuilt for
        # every tile they took ~10% of MobileNetV2's simulation at 224 px.
        self._start: tuple[tuple, Tensor, tuple[Tensor, Tensor] | None] | None = None

    def reset(self) -> None:
        self.membrane = None
        self.sent = None
        self.maps = None
        self.steps_done = 0

    def _initial_state(self, current: Tensor, batch: int, theta: Tensor) -> Tensor:
        """The membrane at t = 0 for ``batch`` samples, in ``current``'s layout: ``u(0) =
        theta / 2`` per spike value (+ the low-latency charge); sets :attr:`maps`."""
        sample = tuple(current.shape[1:])
        channels_last = current.dim() == 4 and current.is_contiguous(
            memory_format=torch.channels_last
        )
        layout = torch.channels_last if channels_last else torch.contiguous_format
        versions = tuple(t._version for t in (self.threshold, self.charge) if t is not None)
        key = (sample, current.dtype, current.device, layout, versions)
        if self._start is None or self._start[0] != key:
            start = theta / (2 * self.spikes_per_step)  # half a spike: theta / 2 if binary
            if self.charge is not None:
                start = start + broadcast_threshold(self.charge.to(current.dtype), current.dim())
            one = start.expand(1, *sample).contiguous(memory_format=layout)  # (1, ...)
            # For the fused kernels, the spike and its firing level: theta (binary, signed)
            # or theta / B (bursts).
            fused = kernels.available(one)
            maps = kernels.spike_maps(theta / self.spikes_per_step, one) if fused else None
            self._start = (key, one, maps)
        _, one, self.maps = self._start
        membrane = torch.empty((batch, *sample), dtype=one.dtype, device=one.device,
                               memory_format=layout)  # fmt: skip
        return membrane.copy_(one.expand(batch, *sample))

    def forward(
        self, current: Tensor, steps: int, constant: bool = False, in_place: bool = False
    ) -> Tensor:
        """current: (steps * N, ...) or, if ``constant``, (N, ...). Returns (steps * N, ...).

        ``in_place``: the caller no longer needs ``current``, so the spikes may overwrite it.
        """
        batch = current.shape[0] if constant else current.shape[0] // steps
        theta = broadcast_threshold(self.threshold.to(current.dtype), current.dim())
        burst = self.spikes_per_step
        if self.membrane is None:  # u(0) = theta / 2 (+ the low-latency charge)
            self.membrane = self._initial_state(current, batch, theta)
            if self.signed:  # nothing sent yet, in the membrane's layout
                self.sent = torch.zeros_like(self.membrane)
        if self.bias is not None:  # a new tensor: the current may feed other nodes too
            current = current + broadcast_threshold(self.bias.to(current.dtype), current.dim())
            in_place = True  # that new tensor is this neuron's own
        currents = current if constant else current.view(steps, batch, *current.shape[1:])
        if self.signed:
            assert self.sent is not None
            spikes, self.membrane = signed_integrate_and_fire(
                currents, self.membrane, theta, self.sent, steps, maps=self.maps,
                catch_up=self.catch_up, done=self.steps_done, levels=burst,
            )  # fmt: skip
        elif burst > 1:
            spikes, self.membrane = burst_integrate_and_fire(
                currents, self.membrane, theta, burst, steps, maps=self.maps
            )
        else:
            spikes, self.membrane = integrate_and_fire(
                currents, self.membrane, theta, steps, in_place=in_place, maps=self.maps
            )
        self.steps_done += steps
        if self.unit:  # a spike is theta > 0 exactly where the neuron fired
            spikes = torch.ne(spikes, 0).to(spikes.dtype)
        return fold_time(spikes)  # a view: no copy
