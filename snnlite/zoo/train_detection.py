"""Train a zoo FashionScenes detector (RetinaNet or FCOS) on CPU, reproducibly.

Usage::

    python -m snnlite.zoo.train_detection --model scenes_retinanet --epochs 10 --seed 0 \
        --out snnlite/zoo/weights/scenes_retinanet.pth

Why it looks like this: as torchvision's detection references do, the backbone trains with
ordinary ``BatchNorm2d`` (here from scratch, so its statistics must be learned: batch 32
gives them enough samples) and the zoo model is then *built* with ``FrozenBatchNorm2d``,
into which the trained BN state dict loads unchanged (``num_batches_tracked`` is dropped
from the file: FrozenBatchNorm2d has no such buffer). One CPU thread, a fixed seed, scenes
generated once into memory, random horizontal flips (boxes mirrored), AdamW + OneCycle with
gradient clipping (focal/GIoU losses from scratch spike early). It prints the COCO mAP and
mAP@.5 of the *saved* file in the frozen-BN zoo model on the test split, the CPU minutes
(scene generation included), the parameter count and the sha256.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from snnlite.zoo import models, training
from snnlite.zoo.scene_eval import TEST_SCENES, TRAIN_SCENES, detection_metrics, load_scenes
from snnlite.zoo.training import file_record, reload, save_weights

MODELS = {"scenes_retinanet": models.scenes_retinanet, "scenes_fcos": models.scenes_fcos}


def hflip_targets(
    targets: list[dict[str, Tensor]], flip: Tensor, size: int
) -> list[dict[str, Tensor]]:
    """Mirror the (x1, y1, x2, y2) boxes of the scenes whose ``flip`` is set: x -> size - x."""
    out = []
    for t, f in zip(targets, flip.tolist()):
        boxes = t["boxes"]
        if f:
            boxes = torch.stack(
                [size - boxes[:, 2], boxes[:, 1], size - boxes[:, 0], boxes[:, 3]], dim=1
            )
        out.append({"boxes": boxes, "labels": t["labels"]})
    return out


def train(
    model_name: str,
    epochs: int,
    seed: int,
    out: Path,
    batch_size: int = 32,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    clip: float = 10.0,
    threads: int = 1,
    limit: int | None = None,
) -> dict:
    """Train with BatchNorm2d, save the state_dict to ``out``, evaluate the frozen-BN model."""
    if model_name not in MODELS:
        raise ValueError(f"unknown detection model {model_name!r}; choose from {list(MODELS)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cpu0, wall0 = time.process_time(), time.time()

    train_args, test_args = dict(TRAIN_SCENES), dict(TEST_SCENES)
    if limit is not None:
        train_args["num_scenes"] = test_args["num_scenes"] = limit
    data = load_scenes(**train_args)
    images, targets = data["images"], data["targets"]  # (N, 3, S, S), N dicts
    size = images.shape[-1]

    model = MODELS[model_name](norm_layer=nn.BatchNorm2d)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # norms and biases
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    steps = len(images) // batch_size
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps, pct_start=0.2
    )
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(images), generator=gen)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        totals: dict[str, float] = {}
        for step in bar:
            idx = perm[step * batch_size : (step + 1) * batch_size]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], images[idx].flip(-1), images[idx])
            y = hflip_targets([targets[i] for i in idx.tolist()], flip, size)
            losses = model(list(x), y)
            loss = sum(losses.values())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
            sched.step()
            for k, v in losses.items():
                totals[k] = totals.get(k, 0.0) + v.item()
            bar.set_postfix(loss=f"{sum(totals.values()) / (step + 1):.3f}")
        parts = "  ".join(f"{k} {v / steps:.4f}" for k, v in totals.items())
        print(
            f"epoch {epoch + 1}/{epochs}: {parts}  cpu {(time.process_time() - cpu0) / 60:.1f} min",
            flush=True,
        )
    cpu_min = (time.process_time() - cpu0) / 60
    wall_min = (time.time() - wall0) / 60

    save_weights(model, out, skip_suffix="num_batches_tracked")
    # Re-measure the file as stored, in the zoo's FrozenBatchNorm2d model, on the test split.
    fresh = reload(MODELS[model_name], out)
    test = load_scenes(**test_args)
    metrics = detection_metrics(fresh, test["images"], test["targets"])
    return file_record(model_name, fresh, out, cpu_min, wall_min,
                       test_map=round(metrics["map"], 4), test_map_50=round(metrics["map_50"], 4),
                       test_map_75=round(metrics["map_75"], 4))  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    training.main(__doc__, train, list(MODELS), epochs=10, batch_size=32, lr=2e-3,
                  weight_decay=1e-4, argv=argv)  # fmt: skip


if __name__ == "__main__":
    main()
