"""Train a zoo FashionScenes segmentation model (FCN or DeepLabV3) on CPU, reproducibly.

Usage::

    python -m snnlite.zoo.train_segmentation --model scenes_fcn --epochs 8 --seed 0 \
        --out snnlite/zoo/weights/scenes_fcn.pth

Why it looks like this: the weights must be reproducible on a laptop, so training uses one
CPU thread, a fixed seed, the scenes generated once into memory (``registry.TRAIN_SCENES``),
random horizontal flips of image and mask together, per-pixel cross-entropy on the
full-resolution logits (torchvision's FCN/DeepLabV3 upsample to the input size) and AdamW
with a OneCycle schedule (robust from scratch, no tuning per model). It prints the mIoU of
the *saved* file reloaded into a fresh model on the test split, the CPU minutes (scene
generation included), the parameter count and the sha256: the numbers the registry records.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

from snnlite.zoo import models, training
from snnlite.zoo.scene_eval import load_scenes, segmentation_miou
from snnlite.zoo.training import file_record, reload, save_weights

MODELS = {"scenes_fcn": models.scenes_fcn, "scenes_deeplabv3": models.scenes_deeplabv3}


def train(
    model_name: str,
    epochs: int,
    seed: int,
    out: Path,
    batch_size: int = 32,
    lr: float = 3e-3,
    weight_decay: float = 1e-4,
    threads: int = 1,
    limit: int | None = None,
) -> dict:
    """Train, save the float32 state_dict to ``out`` and return the stats.

    ``limit`` keeps only that many train and test scenes (smoke tests).
    """
    gen, clock, data, test_args = training.scene_start(
        "segmentation", MODELS, model_name, seed, threads, limit
    )  # the clock counts scene generation
    images, semantic = data["images"], data["semantic"]  # (N, 3, S, S), (N, S, S) uint8

    model = MODELS[model_name]().to(memory_format=torch.channels_last)
    opt = torch.optim.AdamW(training.decay_groups(model, weight_decay), lr=lr)

    def losses(idx: torch.Tensor) -> dict[str, torch.Tensor]:
        x, y = images[idx], semantic[idx].long()  # (B, 3, S, S), (B, S, S)
        flip = torch.rand(len(idx), generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        y = torch.where(flip[:, None, None], y.flip(-1), y)
        logits = model(x.contiguous(memory_format=torch.channels_last))["out"]
        return {"train loss": F.cross_entropy(logits, y)}

    steps = len(images) // batch_size  # drop the ragged last batch (BN needs > 1 sample)
    cpu_min, wall_min = training.fit(
        model, opt, len(images), batch_size, steps, epochs, 0.2, gen, losses, clock
    )

    save_weights(model, out)
    # Re-measure on the file as stored, in a fresh model, on the whole test split.
    fresh = reload(MODELS[model_name], out)
    test = load_scenes(**test_args)
    miou = segmentation_miou(fresh, test["images"], test["semantic"])
    return file_record(model_name, fresh, out, cpu_min, wall_min, test_miou=round(miou, 4))


def main(argv: list[str] | None = None) -> None:
    training.main(__doc__, train, list(MODELS), epochs=8, batch_size=32, lr=3e-3,
                  weight_decay=1e-4, argv=argv)  # fmt: skip


if __name__ == "__main__":
    main()
