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

from pathlib import Path

import torch
from torch import Tensor, nn

from snnlite.zoo import models, training
from snnlite.zoo.scene_eval import detection_metrics, load_scenes
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
    gen, clock, data, test_args = training.scene_start(
        "detection", MODELS, model_name, seed, threads, limit
    )  # the clock counts scene generation
    images, targets = data["images"], data["targets"]  # (N, 3, S, S), N dicts
    size = images.shape[-1]

    model = MODELS[model_name](norm_layer=nn.BatchNorm2d)
    opt = torch.optim.AdamW(training.decay_groups(model, weight_decay), lr=lr)

    def losses(idx: Tensor) -> dict[str, Tensor]:
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], images[idx].flip(-1), images[idx])
        y = hflip_targets([targets[i] for i in idx.tolist()], flip, size)
        return model(list(x), y)

    steps = len(images) // batch_size
    cpu_min, wall_min = training.fit(
        model, opt, len(images), batch_size, steps, epochs, 0.2, gen, losses, clock, clip=clip
    )

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
