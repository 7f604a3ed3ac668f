"""What the zoo's training scripts share: the seeds, the optimiser's parameter groups, the
training loop, how weights are saved, what is recorded about the saved file, and the command
line.

The registry pins each weight file by sha256, so a file must be written the same way every
time (contiguous float32 copies of the state_dict) and every metric must be measured on the
file as stored, reloaded into a fresh model, not on the model still in memory.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from snnlite.data import load_scenes
from snnlite.zoo.registry import TEST_SCENES, TRAIN_SCENES, sha256_file


def seeded(seed: int) -> torch.Generator:
    """Seed torch (the model's initialisation) and return a generator seeded alike for the
    data order and augmentation, so that a run depends on ``seed`` alone."""
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


class Clock:
    """CPU and wall time since it was made: the minutes the registry records."""

    def __init__(self) -> None:
        self.cpu, self.wall = time.process_time(), time.time()

    def minutes(self) -> tuple[float, float]:
        """(CPU minutes, wall minutes) so far."""
        return (time.process_time() - self.cpu) / 60, (time.time() - self.wall) / 60


def scene_start(
    task: str, models: dict, model_name: str, seed: int, threads: int, limit: int | None
) -> tuple[torch.Generator, Clock, dict, dict]:
    """How a scene model's training starts: check ``model_name`` against ``models``, train on
    ``threads`` threads, seed (:func:`seeded`), start the clock (scene generation counts) and
    generate the zoo's train scenes into memory. Returns the generator, the clock, the train
    scenes and the test scenes' arguments (loaded after training, when the train scenes'
    memory is free); ``limit``: that many scenes in each split (smoke tests)."""
    if model_name not in models:
        raise ValueError(f"unknown {task} model {model_name!r}; choose from {list(models)}")
    torch.set_num_threads(threads)
    gen = seeded(seed)
    clock = Clock()
    train_args, test_args = dict(TRAIN_SCENES), dict(TEST_SCENES)
    if limit is not None:
        train_args["num_scenes"] = test_args["num_scenes"] = limit
    return gen, clock, load_scenes(**train_args), test_args


def decay_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """The optimiser's parameter groups: weight decay on the weights, none on the norms and
    biases (the 1-D parameters)."""
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]
    return [
        {"params": decay, "weight_decay": weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]


def fit(
    model: nn.Module,
    opt: torch.optim.Optimizer,
    samples: int,
    batch_size: int,
    steps: int,
    epochs: int,
    pct_start: float,
    gen: torch.Generator,
    losses: Callable[[Tensor], dict[str, Tensor]],
    clock: Clock,
    clip: float | None = None,
    note: Callable[[nn.Module], str] | None = None,
) -> tuple[float, float]:
    """Train ``model`` for ``epochs`` of ``steps`` batches under a OneCycle schedule peaking at
    the optimiser's ``lr``; return the (CPU, wall) minutes of ``clock`` at the end.

    Every epoch draws a permutation of the ``samples`` from ``gen``; ``losses`` maps a batch's
    sample indices to its named losses (their sum is minimised, each is reported), ``clip``
    bounds the gradient norm, and ``note`` adds text after each epoch's losses (e.g. a test
    score).
    """
    lr = opt.param_groups[0]["lr"]
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps, pct_start=pct_start
    )
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(samples, generator=gen)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        totals: dict[str, float] = {}
        for step in bar:
            named = losses(perm[step * batch_size : (step + 1) * batch_size])
            loss = sum(named.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[union-attr]
            if clip is not None:
                nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            for k, v in named.items():
                totals[k] = totals.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{sum(totals.values()) / (step + 1):.3f}")
        parts = "  ".join(f"{k} {v / steps:.4f}" for k, v in totals.items())
        parts += note(model) if note is not None else ""
        print(f"epoch {epoch + 1}/{epochs}: {parts}  cpu {clock.minutes()[0]:.1f} min", flush=True)
    return clock.minutes()


def save_weights(model: nn.Module, out: Path, skip_suffix: str | None = None) -> None:
    """Save ``model``'s state_dict to ``out`` as contiguous copies (stable bytes); keys ending
    in ``skip_suffix`` are left out (e.g. BN counters the frozen-BN zoo model lacks)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()
             if skip_suffix is None or not k.endswith(skip_suffix)}  # fmt: skip
    torch.save(state, out)


def reload(builder: Callable[[], nn.Module], out: Path) -> nn.Module:
    """A fresh model from ``builder`` with the weights of the file as stored."""
    fresh = builder()
    fresh.load_state_dict(torch.load(out, map_location="cpu", weights_only=True))
    return fresh


def file_record(
    model_name: str,
    fresh: nn.Module,
    out: Path,
    cpu_minutes: float,
    wall_minutes: float,
    **metrics: float,
) -> dict:
    """What the registry records about a trained file: its metrics, cost, size and hash."""
    return {
        "model": model_name,
        **metrics,
        "cpu_minutes": round(cpu_minutes, 1),
        "wall_minutes": round(wall_minutes, 1),
        "params": sum(p.numel() for p in fresh.parameters()),
        "sha256": sha256_file(out),
        "bytes": out.stat().st_size,
    }


def main(
    doc: str,
    train: Callable[..., dict],
    models: list[str] | None,
    *,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    argv: list[str] | None = None,
) -> None:
    """The scripts' shared command line; the defaults are each script's recipe."""
    p = argparse.ArgumentParser(description=doc.split("\n")[0])
    p.add_argument("--model", required=True, choices=sorted(models) if models else None)
    p.add_argument("--epochs", type=int, default=epochs)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--weight-decay", type=float, default=weight_decay)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--limit", type=int, default=None, help="samples per split (smoke test)")
    args = p.parse_args(argv)
    stats = train(args.model, args.epochs, args.seed, args.out, batch_size=args.batch_size,
                  lr=args.lr, weight_decay=args.weight_decay, threads=args.threads,
                  limit=args.limit)  # fmt: skip
    for k, v in stats.items():
        print(f"{k}: {v}")
