"""Fashion scenes: real Fashion-MNIST items on textured backgrounds.

A small, offline stand-in for COCO-style data so the tutorial can convert
segmentation and detection models. Every object is a real Fashion-MNIST item
(train items for the train split, test items for the test split, so no item
is shared between splits); only the layout is synthetic. Scene ``i`` is drawn
from a random generator seeded by ``(seed, split, i)``, so random access,
several workers and repeated runs all see the same scene.
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from snnlite.data.fashion import FASHION_MNIST_CLASSES, fashion_mnist

SCENE_CLASSES = ("background",) + FASHION_MNIST_CLASSES  # index = semantic label

MASK_THRESHOLD = 0.2  # item intensity (0..1) above which a pixel belongs to the item
MAX_BOX_IOU = 0.3  # reject a placement whose box overlaps an earlier box more than this
MIN_VISIBLE_FRACTION = 0.5  # drop an item if occlusion hides more than half of it
MIN_VISIBLE_PIXELS = 40  # ... or if fewer pixels than this remain visible
_SPLIT_IDS = {"train": 0, "test": 1}


@cache
def _item_pool(split: str, root: str | None) -> tuple[torch.Tensor, torch.Tensor]:
    """All items of a Fashion-MNIST split: images (N, 28, 28) uint8, labels (N,) int64."""
    ds = fashion_mnist(split, root=root, normalize=False)
    return ds.data, ds.targets.to(torch.int64)


def _background(rng: np.random.Generator, size: int) -> torch.Tensor:
    """Textured colour background (3, size, size) in [0, 1]: smooth noise plus stripes."""
    base = rng.uniform(0.15, 0.85, size=(3, 1, 1))
    cells = int(rng.integers(3, 9))
    noise = rng.normal(0.0, 0.15, size=(1, 3, cells, cells))
    smooth = F.interpolate(
        torch.from_numpy(noise).float(), size=(size, size), mode="bicubic", align_corners=False
    )[0].numpy()  # (3, size, size)
    angle = rng.uniform(0.0, np.pi)
    period = rng.uniform(6.0, 24.0)
    ys, xs = np.mgrid[0:size, 0:size]
    phase = (xs * np.cos(angle) + ys * np.sin(angle)) * (2 * np.pi / period)
    stripes = np.sin(phase + rng.uniform(0, 2 * np.pi))[None]  # (1, size, size)
    stripe_colour = rng.uniform(-0.12, 0.12, size=(3, 1, 1))
    image = base + smooth + stripe_colour * stripes
    return torch.from_numpy(np.clip(image, 0.0, 1.0)).float()


def _cutout(item: torch.Tensor, longest: int) -> torch.Tensor:
    """Crop a 28x28 uint8 item to its object and resize so its longer side is ``longest``.

    Keeps the aspect ratio. Returns intensity (h, w) float32 in [0, 1].
    """
    intensity = item.float() / 255.0
    rows = torch.nonzero((intensity > MASK_THRESHOLD).any(1)).flatten()
    cols = torch.nonzero((intensity > MASK_THRESHOLD).any(0)).flatten()
    if len(rows) == 0:  # blank item (does not happen in Fashion-MNIST): keep it whole
        rows, cols = torch.arange(28), torch.arange(28)
    crop = intensity[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = longest / max(crop.shape)
    h = max(1, round(crop.shape[0] * scale))
    w = max(1, round(crop.shape[1] * scale))
    resized = F.interpolate(crop[None, None], size=(h, w), mode="bilinear", antialias=True)
    return resized[0, 0].clamp(0.0, 1.0)


def _boxes_iou(box: np.ndarray, boxes: np.ndarray) -> np.ndarray:
    """IoU of one (x1, y1, x2, y2) box with each row of ``boxes`` (K, 4)."""
    x1 = np.maximum(box[0], boxes[:, 0])
    y1 = np.maximum(box[1], boxes[:, 1])
    x2 = np.minimum(box[2], boxes[:, 2])
    y2 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / (area + areas - inter)


class FashionScenes(Dataset):
    """Scenes of 1..``max_items`` Fashion-MNIST items for segmentation and detection.

    Item ``i`` is ``(image, target)``:

    - ``image``: float32 (3, size, size) in [0, 1].
    - ``target["semantic"]``: int64 (size, size); 0 background, class + 1 for items,
      later items painted over earlier ones.
    - ``target["boxes"]``: float32 (K, 4) as (x1, y1, x2, y2) in pixel-edge
      coordinates, tight around each item's visible pixels: pixel (row r, col c)
      lies in the box iff x1 <= c < x2 and y1 <= r < y2.
    - ``target["labels"]``: int64 (K,), class + 1 in 1..10 (same ids as ``semantic``).
    - ``target["masks"]``: bool (K, size, size), visible pixels of each item.
    - ``target["source_indices"]``: int64 (K,), index of each item in the
      Fashion-MNIST split ``self.split``.

    All target values are tensors, so ``{k: v.to(device) ...}`` works.
    """

    def __init__(
        self,
        split: str = "train",
        num_scenes: int = 1000,
        size: int = 96,
        seed: int = 0,
        max_items: int = 4,
        root: str | os.PathLike | None = None,
    ) -> None:
        if split not in _SPLIT_IDS:
            raise ValueError(f"split must be 'train' or 'test', got {split!r}")
        if num_scenes < 0:
            raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
        if size < 32:
            raise ValueError(f"size must be at least 32 pixels, got {size}")
        if not 1 <= max_items <= 8:
            raise ValueError(f"max_items must be in 1..8, got {max_items}")
        self.split = split
        self.num_scenes = num_scenes
        self.size = size
        self.seed = seed
        self.max_items = max_items
        self.items, self.item_labels = _item_pool(split, None if root is None else str(root))
        # Item sizes: longer side 24..56 px, scaled down for small canvases.
        self.min_side = max(8, round(24 * min(1.0, size / 96)))
        self.max_side = min(56, size - 8)

    def __len__(self) -> int:
        return self.num_scenes

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, _SPLIT_IDS[self.split], index])

    def _place_items(self, rng: np.random.Generator) -> list[tuple[int, torch.Tensor, int, int]]:
        """Choose items and non-overlapping placements: [(source index, cutout, top, left)]."""
        wanted = int(rng.integers(1, self.max_items + 1))
        placed: list[tuple[int, torch.Tensor, int, int]] = []
        boxes = np.zeros((0, 4))
        for _ in range(wanted):
            source = int(rng.integers(len(self.items)))
            for _attempt in range(10):
                longest = int(rng.integers(self.min_side, self.max_side + 1))
                cut = _cutout(self.items[source], longest)
                h, w = cut.shape
                top = int(rng.integers(0, self.size - h + 1))
                left = int(rng.integers(0, self.size - w + 1))
                box = np.array([left, top, left + w, top + h], dtype=float)
                if len(boxes) == 0 or _boxes_iou(box, boxes).max() <= MAX_BOX_IOU:
                    placed.append((source, cut, top, left))
                    boxes = np.vstack([boxes, box])
                    break
        return placed

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if not 0 <= index < self.num_scenes:
            raise IndexError(f"scene {index} out of range for {self.num_scenes} scenes")
        rng = self._rng(index)
        image = _background(rng, self.size)  # (3, S, S)
        placed = self._place_items(rng)

        # Full-canvas intensity of each item: (K, S, S).
        layers = torch.zeros(len(placed), self.size, self.size)
        for k, (_source, cut, top, left) in enumerate(placed):
            layers[k, top : top + cut.shape[0], left : left + cut.shape[1]] = cut

        # Drop items that later ones hide too much; dropping never hides others more.
        keep = list(range(len(placed)))
        while True:
            full = layers[keep] > MASK_THRESHOLD  # (K, S, S)
            visible = _visible(full)
            seen = visible.sum((1, 2))
            ok = (seen >= MIN_VISIBLE_PIXELS) & (seen >= MIN_VISIBLE_FRACTION * full.sum((1, 2)))
            ok[-1] = True  # the top item is fully visible: always keep it, so K >= 1
            if ok.all():
                break
            keep = [k for k, good in zip(keep, ok.tolist()) if good]

        # Paint in order: the item's own intensity is its alpha, tinted with a colour.
        for k in keep:
            intensity = layers[k]  # (S, S)
            alpha = ((intensity - 0.05) / 0.25).clamp(0.0, 1.0)
            tint = torch.from_numpy(rng.uniform(0.3, 1.0, size=(3, 1, 1))).float()
            colour = tint * (0.35 + 0.65 * intensity)  # keeps the item's texture
            image = alpha * colour + (1 - alpha) * image

        sources = torch.tensor([placed[k][0] for k in keep], dtype=torch.int64)
        labels = self.item_labels[sources] + 1  # (K,)
        semantic = torch.zeros(self.size, self.size, dtype=torch.int64)
        for label, mask in zip(labels, visible):
            semantic[mask] = label
        return image, {
            "semantic": semantic,
            "boxes": _masks_to_boxes(visible),
            "labels": labels,
            "masks": visible,
            "source_indices": sources,
        }


def _visible(full: torch.Tensor) -> torch.Tensor:
    """Painter's order: (K, S, S) full masks -> masks of the pixels still seen."""
    if len(full) == 0:
        return full
    # Number of later items covering each pixel; a pixel is visible if that is 0.
    later = full.flip(0).cumsum(0).flip(0) - full.int()  # (K, S, S)
    return full & (later == 0)


def _masks_to_boxes(masks: torch.Tensor) -> torch.Tensor:
    """(K, S, S) bool -> (K, 4) float32 pixel-edge boxes (x1, y1, x2, y2), tight."""
    boxes = torch.zeros(len(masks), 4)
    for k, mask in enumerate(masks):
        rows = torch.nonzero(mask.any(1)).flatten()
        cols = torch.nonzero(mask.any(0)).flatten()
        boxes[k] = torch.tensor([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1])
    return boxes


def collate_detection(
    batch: list[tuple[torch.Tensor, dict[str, torch.Tensor]]],
) -> tuple[list[torch.Tensor], list[dict[str, torch.Tensor]]]:
    """Batch for torchvision detection models: (list of images, list of target dicts).

    Detection models take lists because images may differ in size and scenes
    hold different numbers of boxes, so default stacking would fail.
    """
    images, targets = zip(*batch)
    return list(images), list(targets)


def load_scenes(progress: bool = True, **scene_args) -> dict:
    """Generate a whole FashionScenes split into memory (why: generating a scene costs
    about as much as one training step on it, so every epoch after the first reuses them).

    ``scene_args`` go to :class:`FashionScenes`. Returns ``images`` float32 (N, 3, S, S) in
    [0, 1], ``semantic`` uint8 (N, S, S), and ``targets``: one ``{"boxes": (K, 4) float32,
    "labels": (K,) int64}`` per scene.
    """
    scenes = FashionScenes(**scene_args)
    n, s = len(scenes), scenes.size
    images = torch.empty(n, 3, s, s)
    semantic = torch.empty(n, s, s, dtype=torch.uint8)  # labels 0..10 fit a byte
    targets: list[dict[str, torch.Tensor]] = []
    for i in tqdm(range(n), desc=f"scenes {scenes.split}", disable=not progress, leave=False):
        images[i], target = scenes[i]
        semantic[i] = target["semantic"]
        targets.append({"boxes": target["boxes"], "labels": target["labels"]})
    return {"images": images, "semantic": semantic, "targets": targets}


def scene_tensors(
    split: str = "train",
    num_scenes: int = 1000,
    size: int = 96,
    seed: int = 0,
    max_items: int = 4,
    root: str | os.PathLike | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole scene set stacked for segmentation: images (N, 3, S, S), semantic (N, S, S) int64
    (:func:`load_scenes` without the boxes)."""
    scenes = load_scenes(progress=False, split=split, num_scenes=num_scenes, size=size,
                         seed=seed, max_items=max_items, root=root)  # fmt: skip
    return scenes["images"], scenes["semantic"].long()
