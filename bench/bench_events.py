"""Would event-driven layers beat dense ones here? An exact event-driven layer, measured.

Why ask: a spiking layer's input is mostly silence (in the zoo VGG 10-17% of the inputs are
nonzero at a step), yet a dense convolution multiplies every zero by every weight. An
event-driven layer does ``density x`` the work: each nonzero input adds its weighted
contribution to the outputs it reaches, as neuromorphic hardware does and as the
synaptic-operation count of :mod:`snnlite.energy` assumes. The issue's stretch goal asked for
such a path, if exact, to run >= 3x SpikingJelly.

The layer below is exact: it sums the same terms as the dense layer minus the zero ones (only
the order of the float additions differs) and does not assume the inputs are spikes. With
``fire`` the IF neuron (book chapter 1) runs on each output position as soon as its current is
summed, so currents never reach memory. This script checks both against the dense layer and
:func:`snnlite.neurons.integrate_and_fire`, then times them on the inputs each layer of the
zoo VGG really receives in ``simulate``, with snnlite's own tiling.

Finding (bench/README.md, 2026-11-30): on this AVX-512 CPU the dense convolution runs near
the core's peak, and the event-driven layer with its fused neuron only matches dense
convolution + fused neuron: 0.6-1.25x on the convolutions, 1.6-2.4x on the small linear
layers, 0.76-0.98x over all layers. So ``simulate`` keeps the dense path. Where spikes are
sparser or dense arithmetic slower the balance can tip: run this script to see.

    python bench/bench_events.py
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import Tensor, nn

import snnlite
from snnlite import kernels
from snnlite.neurons import broadcast_threshold, integrate_and_fire

try:  # pragma: no cover - exercised where numba is installed
    import numba
    import numpy as np
except ImportError:  # pragma: no cover
    numba = None


def supported(layer: nn.Module) -> bool:
    """Whether ``layer`` has an event-driven form here (and numba is present to run it)."""
    if numba is None:
        return False
    if isinstance(layer, nn.Linear):
        return True
    return (
        isinstance(layer, nn.Conv2d)
        and layer.groups == 1
        and layer.padding_mode == "zeros"
        and not isinstance(layer.padding, str)
    )


class EventSynapse:
    """A conv or linear layer prepared for event-driven simulation.

    Holds the weights as rows ``(taps * C_in, C_out)``, so one input event at one tap reads
    one contiguous row, and the bias as (C_out,). Built once per simulation.
    """

    def __init__(self, layer: nn.Module) -> None:
        if not supported(layer):
            raise TypeError(f"no event-driven form for {type(layer).__name__}")
        self.linear = isinstance(layer, nn.Linear)
        weight = layer.weight.detach()
        if self.linear:
            weight = weight[:, :, None, None]  # (out, in) -> (out, in, 1, 1)
            self.stride, self.padding, self.dilation = (1, 1), (0, 0), (1, 1)
        else:
            self.stride, self.padding = tuple(layer.stride), tuple(layer.padding)
            self.dilation = tuple(layer.dilation)
        out_channels, in_channels, kh, kw = weight.shape
        self.kernel_size = (kh, kw)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.rows = weight.permute(2, 3, 1, 0).reshape(kh * kw * in_channels, out_channels)
        self.rows = self.rows.float().contiguous()  # (taps * C_in, C_out)
        bias = layer.bias.detach() if layer.bias is not None else torch.zeros(out_channels)
        self.bias = bias.float().contiguous()

    def accepts(self, x: Tensor) -> bool:
        """Whether the kernel can take this input (CPU float32, contiguous, right shape)."""
        return (
            x.device.type == "cpu"
            and x.dtype == torch.float32
            and x.is_contiguous()
            and x.dim() == (2 if self.linear else 4)
            and x.shape[1] == self.in_channels
        )

    def __call__(self, x: Tensor) -> Tensor:
        """The layer's output for a batch (B, C_in, H, W) or (B, C_in): same as the layer."""
        return self._run(x, steps=1, membrane=None, threshold=None)

    def fire(self, x: Tensor, steps: int, membrane: Tensor, threshold: Tensor) -> Tensor:
        """Layer and IF neuron fused, over a chunk: spikes of the neurons this layer feeds.

        ``x``: time-folded input (steps * N, C_in, ...); ``membrane``: (N, C_out, ...),
        contiguous, updated in place; ``threshold``: () or (C_out,). Returns theta-valued
        spikes (steps * N, C_out, ...), exactly as :class:`snnlite.neurons.IFNeuron` would
        produce from this layer's currents (up to the order of the float additions).
        """
        return self._run(x, steps, membrane, threshold)

    def _run(
        self, x: Tensor, steps: int, membrane: Tensor | None, threshold: Tensor | None
    ) -> Tensor:
        if not self.accepts(x):
            raise ValueError(f"event-driven layer: unsupported input {tuple(x.shape)} {x.dtype}")
        batch = x.shape[0] // steps
        height, width = (1, 1) if self.linear else x.shape[2:]
        out_h, out_w = kernels.window_output_size(
            (height, width), self.kernel_size, self.stride, self.padding, self.dilation
        )
        out_shape = (x.shape[0], self.out_channels) + (() if self.linear else (out_h, out_w))
        out = x.new_empty(out_shape)
        fire = membrane is not None
        if fire:
            assert threshold is not None and membrane.is_contiguous()
            theta = torch.broadcast_to(threshold.float().reshape(-1), (self.out_channels,))
            theta = theta.contiguous()
            u = membrane.view(batch, self.out_channels, out_h * out_w)
        else:
            theta = self.bias  # unused
            u = x.new_empty((1, 1, 1))  # unused
        kernels.match_torch_threads()
        _event_layer(
            x.view(steps, batch, self.in_channels, height * width).numpy(),
            self.rows.numpy(),
            self.bias.numpy(),
            height, width, *self.kernel_size, *self.stride, *self.padding, *self.dilation,
            out_h, out_w,
            fire, u.numpy(), theta.numpy(),
            out.view(steps, batch, self.out_channels, out_h * out_w).numpy(),
        )  # fmt: skip
        return out


if numba is not None:

    @numba.njit(cache=True, nogil=True, parallel=True, fastmath={"contract"})
    def _event_layer(  # pragma: no cover - compiled
        x, rows, bias, height, width, kh, kw, sh, sw, ph, pw, dh, dw, out_h, out_w,
        fire, membrane, theta, out,
    ):  # fmt: skip
        """x: (steps, N, C, H*W) inputs; rows: (kh*kw*C, CO); out: (steps, N, CO, OH*OW).

        Without ``fire``, ``out`` gets the layer's output. With ``fire``, ``membrane``
        (N, CO, OH*OW) integrates it and ``out`` gets the IF neuron's spikes (theta-valued,
        at most one per step, reset by subtraction; theta = 0: never fires).
        """
        steps, batch, channels, size = x.shape
        out_channels = rows.shape[1]
        for n in numba.prange(batch):  # samples are independent; steps are sequential
            count = np.zeros(size, np.int32)
            index = np.empty((size, channels), np.int32)  # events at each input position
            value = np.empty((size, channels), x.dtype)
            acc = np.empty(out_channels, x.dtype)
            u = membrane[min(np.int64(n), membrane.shape[0] - 1)]  # (unused without fire)
            for t in range(steps):
                image = x[t, n]
                for p in range(size):  # gather the events, branch-free
                    k = 0
                    for c in range(channels):
                        v = image[c, p]
                        index[p, k] = c
                        value[p, k] = v
                        k += v != 0
                    count[p] = k
                target = out[t, n]
                for oy in range(out_h):
                    for ox in range(out_w):
                        q = oy * out_w + ox
                        acc[:] = bias
                        for ky in range(kh):
                            iy = oy * sh - ph + ky * dh
                            if iy < 0 or iy >= height:
                                continue
                            for kx in range(kw):
                                ix = ox * sw - pw + kx * dw
                                if ix < 0 or ix >= width:
                                    continue
                                p = iy * width + ix
                                first = (ky * kw + kx) * channels
                                for k in range(count[p]):
                                    row = rows[first + index[p, k]]
                                    v = value[p, k]
                                    for co in range(out_channels):
                                        acc[co] += v * row[co]
                        if fire:
                            for co in range(out_channels):
                                level = theta[co]
                                potential = u[co, q] + acc[co]
                                spike = level if level > 0 and potential >= level else 0.0
                                target[co, q] = spike
                                u[co, q] = potential - spike
                        else:
                            for co in range(out_channels):
                                target[co, q] = acc[co]


def best_time(run, repeats: int) -> float:
    run()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    from snnlite import zoo
    from snnlite.data import fashion_mnist_tensors

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=16, help="steps per chunk (snnlite's)")
    parser.add_argument("--batch", type=int, default=5, help="samples per tile (snnlite's)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    model = zoo.load("fmnist_vgg")
    images, _ = fashion_mnist_tensors("test")
    train, _ = fashion_mnist_tensors("train")
    snn = snnlite.convert(model, [train[i * 100 : (i + 1) * 100] for i in range(20)],
                          progress=False)  # fmt: skip
    inputs: dict[str, tuple[nn.Module, Tensor]] = {}
    for name, layer in snn.ann.named_modules():
        if supported(layer):

            def keep(layer, args, _output, name=name):
                inputs.setdefault(name, (layer, args[0].clone()))

            layer.register_forward_hook(keep)
    # 3 chunks in: the network is past its start-up, spikes flow in every layer
    snn.simulate(images[: args.batch], [3 * args.steps], chunk_size=args.steps,
                 batch_size=args.batch, progress=False)  # fmt: skip
    print(
        f"zoo fmnist_vgg, chunks of {args.steps} steps x {args.batch} samples "
        f"({torch.get_num_threads()} threads); times per chunk, best of {args.repeats}"
    )
    print(f"{'layer':<14}{'density':>8}{'dense+IF ms':>13}{'event ms':>10}{'speed-up':>10}"
          f"{'max rel err':>13}{'spike diffs':>13}")  # fmt: skip
    totals = [0.0, 0.0]
    with torch.no_grad():
        for name, (layer, x) in inputs.items():
            if float((x != 0).float().mean()) > 0.5:  # the first layer: analog input, run once
                continue
            t_dense, t_event = compare(name, layer, x, args.steps, args.batch, args.repeats)
            totals[0] += t_dense
            totals[1] += t_event
    print(f"{'all layers':<22}{totals[0] * 1e3:>13.2f}{totals[1] * 1e3:>10.2f}"
          f"{totals[0] / totals[1]:>9.2f}x")  # fmt: skip


def compare(
    name: str, layer: nn.Module, x: Tensor, steps: int, batch: int, repeats: int
) -> tuple[float, float]:
    """Check the event-driven layer against the dense one on ``x``, time both, print a row."""
    synapse = EventSynapse(layer)
    current = layer(x)
    shape = current.shape[1:]
    theta = current.abs().mean() * 4 * torch.ones(shape[0])  # a threshold that fires often
    start = (broadcast_threshold(theta, current.dim()) / 2).expand(batch, *shape).contiguous()

    def dense() -> Tensor:
        z = layer(x).view(steps, batch, *shape)
        return integrate_and_fire(z, start.clone(), broadcast_threshold(theta, z.dim() - 1))[0]

    def event() -> Tensor:
        return synapse.fire(x, steps, start.clone(), theta)

    error = float((synapse(x) - current).abs().max() / current.abs().max())
    differ = int((event() != dense().reshape(-1, *shape)).sum())
    t_dense, t_event = best_time(dense, repeats), best_time(event, repeats)
    density = float((x != 0).float().mean())
    print(f"{name:<14}{density:>8.3f}{t_dense * 1e3:>13.2f}{t_event * 1e3:>10.2f}"
          f"{t_dense / t_event:>9.2f}x{error:>13.1e}{differ:>8d} of {current.numel()}")  # fmt: skip
    return t_dense, t_event


if __name__ == "__main__":
    main()
