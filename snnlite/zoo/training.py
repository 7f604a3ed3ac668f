"""What the zoo's training scripts share: how weights are saved, what is recorded about the
saved file, and the command line.

The registry pins each weight file by sha256, so a file must be written the same way every
time (contiguous float32 copies of the state_dict) and every metric must be measured on the
file as stored, reloaded into a fresh model, not on the model still in memory.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from snnlite.zoo.registry import sha256_file


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
