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

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from snnlite.zoo import models, training
from snnlite.zoo.scene_eval import TEST_SCENES, TRAIN_SCENES, load_scenes, segmentation_miou
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
    if model_name not in MODELS:
        raise ValueError(f"unknown segmentation model {model_name!r}; choose from {list(MODELS)}")
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cpu0, wall0 = time.process_time(), time.time()

    train_args, test_args = dict(TRAIN_SCENES), dict(TEST_SCENES)
    if limit is not None:
        train_args["num_scenes"] = test_args["num_scenes"] = limit
    data = load_scenes(**train_args)
    images, semantic = data["images"], data["semantic"]  # (N, 3, S, S), (N, S, S) uint8

    model = MODELS[model_name]().to(memory_format=torch.channels_last)
    decay = [p for p in model.parameters() if p.ndim > 1]
    no_decay = [p for p in model.parameters() if p.ndim <= 1]  # BN and biases
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=lr,
    )
    steps = len(images) // batch_size  # drop the ragged last batch (BN needs > 1 sample)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=lr, epochs=epochs, steps_per_epoch=steps, pct_start=0.2
    )
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(images), generator=gen)
        bar = tqdm(range(steps), desc=f"epoch {epoch + 1}/{epochs}", leave=False)
        total = 0.0
        for step in bar:
            idx = perm[step * batch_size : (step + 1) * batch_size]
            x, y = images[idx], semantic[idx].long()  # (B, 3, S, S), (B, S, S)
            flip = torch.rand(len(idx), generator=gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
            y = torch.where(flip[:, None, None], y.flip(-1), y)
            logits = model(x.contiguous(memory_format=torch.channels_last))["out"]
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item()
            bar.set_postfix(loss=f"{total / (step + 1):.3f}")
        print(
            f"epoch {epoch + 1}/{epochs}: train loss {total / steps:.4f}  "
            f"cpu {(time.process_time() - cpu0) / 60:.1f} min",
            flush=True,
        )
    cpu_min = (time.process_time() - cpu0) / 60
    wall_min = (time.time() - wall0) / 60

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
