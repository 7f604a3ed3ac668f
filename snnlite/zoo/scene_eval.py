"""FashionScenes splits and task metrics shared by the zoo's scene models, their training
scripts and their tests.

The registry pins the exact generator arguments (``TRAIN_SCENES``, ``TEST_SCENES``) so that
a metric in ``zoo.info()`` names the scenes it was measured on; everything here is
deterministic given those arguments.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from snnlite.data import FashionScenes
from snnlite.metrics import detection_map, mean_iou

# Arguments of FashionScenes for the zoo's train and test splits.
TRAIN_SCENES = {"split": "train", "num_scenes": 5000, "size": 96, "seed": 0, "max_items": 4}
TEST_SCENES = {"split": "test", "num_scenes": 500, "size": 96, "seed": 0, "max_items": 4}
NUM_CLASSES = 11  # background + 10


def load_scenes(progress: bool = True, **scene_args) -> dict:
    """Generate a whole FashionScenes split into memory (why: generating a scene costs
    about as much as one training step on it, so every epoch after the first reuses them).

    Returns ``images`` float32 (N, 3, S, S) in [0, 1], ``semantic`` uint8 (N, S, S), and
    ``targets``: one ``{"boxes": (K, 4) float32, "labels": (K,) int64}`` per scene.
    """
    scenes = FashionScenes(**scene_args)
    n, s = len(scenes), scenes.size
    images = torch.empty(n, 3, s, s)
    semantic = torch.empty(n, s, s, dtype=torch.uint8)  # labels 0..10 fit a byte
    targets: list[dict[str, Tensor]] = []
    for i in tqdm(range(n), desc=f"scenes {scenes.split}", disable=not progress, leave=False):
        images[i], target = scenes[i]
        semantic[i] = target["semantic"]
        targets.append({"boxes": target["boxes"], "labels": target["labels"]})
    return {"images": images, "semantic": semantic, "targets": targets}


@torch.no_grad()
def segmentation_miou(model: nn.Module, images: Tensor, semantic: Tensor,
                      batch_size: int = 100) -> float:
    """mIoU (11 classes, background counted, VOC-style) of a model returning {"out": logits}."""
    model.eval()
    preds = torch.cat([model(images[i:i + batch_size])["out"].argmax(1)
                       for i in range(0, len(images), batch_size)])  # (N, S, S)
    return mean_iou(preds, semantic.long(), NUM_CLASSES)


@torch.no_grad()
def detection_metrics(model: nn.Module, images: Tensor, targets: list[dict[str, Tensor]],
                      batch_size: int = 50) -> dict[str, float]:
    """COCO mAP / mAP@.5 of a torchvision detector (eval mode) on stacked images."""
    model.eval()
    preds: list[dict[str, Tensor]] = []
    for i in range(0, len(images), batch_size):
        preds += model(list(images[i:i + batch_size]))
    return detection_map(preds, targets)
