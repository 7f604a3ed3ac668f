"""Checks of what users pass to snnlite's entry points (``convert``, ``calibrate``,
``SpikingNetwork.simulate``).

Why a module of its own: a wrong input should fail at the entry point with one error that
says what is wrong and what to do, before anything is computed or changed, instead of as a
shape or dtype error from deep inside a convolution, or not at all (a training-mode model
converted as something else than the user runs). Every check here only reads its arguments.

Decisions, so that the same input gets the same answer everywhere:

* time step counts are integers: Python and numpy integers (anything with ``__index__``,
  bools excepted) are accepted, floats refused even when integral (``8.0``), as
  ``target_timesteps`` is;
* a delay is ``"auto"``, ``"half"`` or a finite non-negative number of steps; a delay longer
  than T is not an error: the readout rule (:func:`snnlite.network.readout_start`) then reads
  the last ``MIN_WINDOW`` steps, as it does when the ``"auto"`` estimate exceeds a small T;
* inputs must have the network's floating dtype (no silent cast of half or integer data);
  calibration batches are moved to the network's device (a CPU data loader for a GPU model),
  simulation inputs are not (the readout would come back on another device than ``x``).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "CalibrationDataError",
    "check_delay",
    "check_eval_mode",
    "check_input",
    "check_runs",
    "check_timesteps",
    "read_calibration",
    "reference_of",
]


class CalibrationDataError(RuntimeError):
    """The calibration iterable itself raised while it was read (the cause is chained)."""


def check_eval_mode(model: nn.Module) -> None:
    """Refuse a model whose batch norms or dropout are in training mode.

    Such a model computes another function than the one a converted network can follow:
    batch norms normalise each batch by its own statistics, dropout drops at random. Converting
    its eval-mode function silently would give an SNN that matches nothing the user ran.
    """
    for name, module in model.named_modules():
        if not module.training:
            continue
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            what = "normalises each batch by its own statistics"
        elif isinstance(module, nn.modules.dropout._DropoutNd) and module.p > 0:
            what = "drops activations at random"
        else:
            continue
        raise ValueError(
            f"the model is in training mode: its {type(module).__name__} "
            f"{name or type(model).__name__!r} {what}, which a converted network cannot do. "
            "Call model.eval() before converting (convert copies the model, never changes it)."
        )


def reference_of(module: nn.Module) -> tuple[torch.dtype, torch.device] | None:
    """The dtype and device of ``module``'s first floating-point parameter (or buffer)."""
    for tensor in [*module.parameters(), *module.buffers()]:
        if tensor.is_floating_point():
            return tensor.dtype, tensor.device
    return None


def check_input(
    x: Any,
    reference: tuple[torch.dtype, torch.device] | None,
    what: str = "the input x",
    *,
    move: bool = False,
) -> Tensor:
    """``x`` if it is a floating tensor of the network's dtype on its device, else one error.

    With ``move`` a tensor on another (real) device is moved to the network's device instead.
    """
    if not torch.is_tensor(x):
        raise TypeError(f"{what} must be a tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(
            f"{what} has dtype {x.dtype}: the network takes floating-point inputs; convert it "
            "with .float() (scaled and normalised as the data the model was trained on)"
        )
    if x.is_meta:
        raise ValueError(f"{what} is a meta tensor (a shape without values): pass real data")
    if reference is None:
        return x
    dtype, device = reference
    if x.dtype != dtype:
        raise TypeError(
            f"{what} has dtype {x.dtype} but the network's weights are {dtype}: pass "
            f".to({dtype}), or convert a copy of the model cast to {x.dtype}"
        )
    if x.device != device:
        if move and device.type != "meta":
            return x.to(device)
        raise ValueError(
            f"{what} is on device {x.device} but the network is on {device}: move one of them, "
            f"e.g. x.to({str(device)!r})"
        )
    return x


def check_runs(ann: nn.Module, x: Tensor, sample_shape: tuple[int, ...] | None) -> None:
    """Check that ``x`` fits the network; a shape that does not gets one ValueError.

    ``sample_shape`` is the shape of one calibration sample (set by ``convert``): samples of
    that shape are known to fit, and without it (a network built by hand) nothing is checked
    here. Any other shape (a fully convolutional network may take other sizes) is tried on one
    sample through the clipped ANN, which costs far less than a simulation and turns a channel
    or size mismatch deep inside the graph into an error naming both shapes; forward hooks on
    the network's layers see that one extra pass.
    """
    if sample_shape is None or tuple(x.shape[1:]) == tuple(sample_shape):
        return
    calibrated = f"; it was calibrated on samples of shape {tuple(sample_shape)}"
    if x.dim() != len(sample_shape) + 1:
        raise ValueError(
            f"x has shape {tuple(x.shape)}{calibrated}: pass a batch (N, "
            f"{', '.join(map(str, sample_shape))}); a single sample needs x.unsqueeze(0)"
        )
    try:
        with torch.no_grad():
            ann(x[:1])
    except torch.OutOfMemoryError:
        raise
    except (RuntimeError, ValueError, IndexError) as error:
        raise ValueError(
            f"the network cannot run on x of shape {tuple(x.shape)}{calibrated}: pass a batch "
            f"shaped like the calibration data ({error})"
        ) from error


def _count(value: Any) -> int | None:
    """``value`` as an int if it is an integer (numpy and 0-d tensors too), not a bool."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def check_timesteps(timesteps: Any) -> list[int]:
    """One T or an iterable of them -> the sorted distinct counts; positive integers only."""
    single = (
        _count(timesteps) is not None
        or isinstance(timesteps, str | float)
        or not isinstance(timesteps, Iterable)
        or (torch.is_tensor(timesteps) and timesteps.dim() == 0)
    )
    values = [timesteps] if single else list(timesteps)
    if not values:
        raise ValueError("timesteps is empty: pass one T or a list of them, e.g. [8, 16, 32]")
    counts = []
    for T in values:
        count = _count(T)
        if count is None or count <= 0:
            hint = ""
            if isinstance(T, float) and T.is_integer() and T > 0:
                hint = f" (a float: pass the int {int(T)})"
            raise ValueError(f"every time step count T must be a positive integer, got {T!r}{hint}")
        counts.append(count)
    return sorted(set(counts))


def check_delay(delay: Any) -> int | float | str:
    """A readout delay: ``"auto"``, ``"half"``, or a finite number of steps >= 0."""
    if isinstance(delay, str):
        if delay in ("auto", "half"):
            return delay
    elif (count := _count(delay)) is not None:
        if count >= 0:
            return count
    elif isinstance(delay, float) and math.isfinite(delay) and delay >= 0:
        return float(delay)
    raise ValueError(
        f"delay must be a non-negative number of steps, 'auto' or 'half', got {delay!r}"
    )


def read_calibration(calibration: Iterable[Any]) -> Iterator[Any]:
    """Iterate over ``calibration``; an error it raises becomes a :class:`CalibrationDataError`.

    The error names how far the data got and chains the original. KeyboardInterrupt and other
    non-``Exception`` signals pass through unchanged.
    """
    read = 0
    try:
        iterator = iter(calibration)
    except Exception as error:
        raise _data_error(error, read) from error
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except Exception as error:
            raise _data_error(error, read) from error
        read += 1
        yield batch


def _data_error(error: Exception, read: int) -> CalibrationDataError:
    return CalibrationDataError(
        f"the calibration data raised {type(error).__name__} after {read} batch(es): {error}. "
        "Fix or replace the data source; nothing was converted and the model is unchanged."
    )
