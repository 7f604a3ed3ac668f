"""Real colour photos for ImageNet models, with no download.

scikit-image ships a handful of real colour photographs inside its wheel, so
they are available offline everywhere scikit-image is installed. Images that
scikit-image fetches with ``pooch`` (e.g. ``eagle``, ``lily``) are left out,
as are duplicates (``cat`` is ``chelsea``) and drawings (``logo``,
``colorwheel``).
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
import skimage.data
import torch
from torchvision import transforms
from torchvision.models import MobileNet_V2_Weights
from torchvision.transforms import functional as TF

_EVAL = MobileNet_V2_Weights.IMAGENET1K_V1.transforms()  # torchvision's eval preset
IMAGENET_MEAN: tuple[float, ...] = tuple(_EVAL.mean)  # (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, ...] = tuple(_EVAL.std)  # (0.229, 0.224, 0.225)
_RESIZE_RATIO = _EVAL.resize_size[0] / _EVAL.crop_size[0]  # 256 / 224


def _motorcycle() -> np.ndarray:
    left, _right, _disparity = skimage.data.stereo_motorcycle()
    return left


# name -> loader; every file is bundled in the scikit-image wheel.
_LOADERS = {
    "astronaut": skimage.data.astronaut,
    "chelsea": skimage.data.chelsea,
    "coffee": skimage.data.coffee,
    "rocket": skimage.data.rocket,
    "motorcycle": _motorcycle,
    "hubble_deep_field": skimage.data.hubble_deep_field,
    "immunohistochemistry": skimage.data.immunohistochemistry,
    "retina": skimage.data.retina,
}


def photo_names() -> list[str]:
    """Names accepted by :func:`photo`, in a fixed order."""
    return list(_LOADERS)


@cache
def _load(name: str) -> np.ndarray:
    image = np.ascontiguousarray(_LOADERS[name]())
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise RuntimeError(f"photo {name!r} is not HxWx3 uint8: {image.shape} {image.dtype}")
    image.setflags(write=False)  # cached: make accidental edits fail loudly
    return image


@cache
def _photo_tensor(name: str) -> torch.Tensor:
    return _to_uint8_chw(_load(name))  # (3, H, W) uint8


def photo(name: str) -> np.ndarray:
    """The photo ``name`` as an HxWx3 uint8 array (a fresh, writable copy)."""
    if name not in _LOADERS:
        raise ValueError(f"unknown photo {name!r}; choose from {photo_names()}")
    return _load(name).copy()


def _to_uint8_chw(image) -> torch.Tensor:
    """HxWx3 uint8 array, PIL image or 3xHxW uint8 tensor -> 3xHxW uint8 tensor."""
    if isinstance(image, torch.Tensor):
        return image
    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an HxWx3 image, got shape {image.shape}")
        return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1)
    return TF.pil_to_tensor(image)


def imagenet_transform(size: int = 224) -> transforms.Compose:
    """torchvision's ImageNet eval preprocessing (resize 256, center-crop 224, normalise).

    Accepts HxWx3 uint8 arrays (as :func:`photo` returns), PIL images or
    3xHxW uint8 tensors; returns a float32 3 x size x size tensor. For other
    sizes the resize keeps torchvision's 256/224 ratio.
    """
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    return transforms.Compose(
        [
            transforms.Lambda(_to_uint8_chw),
            transforms.Resize(round(size * _RESIZE_RATIO), antialias=True),
            transforms.CenterCrop(size),
            transforms.ConvertImageDtype(torch.float32),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )


def imagenet_batch(size: int = 224) -> torch.Tensor:
    """All photos, preprocessed for ImageNet models: (N, 3, size, size) float32."""
    transform = imagenet_transform(size)
    return torch.stack([transform(_photo_tensor(name)) for name in photo_names()])


def _random_resized_box(
    height: int, width: int, gen: torch.Generator, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)
) -> tuple[int, int, int, int]:
    """Like RandomResizedCrop.get_params, but drawing from ``gen`` so it is reproducible."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        u = torch.rand(4, generator=gen).tolist()
        target_area = area * (scale[0] + (scale[1] - scale[0]) * u[0])
        aspect = math.exp(log_ratio[0] + (log_ratio[1] - log_ratio[0]) * u[1])
        w = round(math.sqrt(target_area * aspect))
        h = round(math.sqrt(target_area / aspect))
        if 0 < w <= width and 0 < h <= height:
            top = int(u[2] * (height - h + 1))
            left = int(u[3] * (width - w + 1))
            return top, left, h, w
    side = min(height, width)  # fallback: central square
    return (height - side) // 2, (width - side) // 2, side, side


def augmented_crops(n: int, seed: int = 0, size: int = 224) -> torch.Tensor:
    """``n`` augmented crops of the photos, normalised for ImageNet: (n, 3, size, size).

    Random resized crops, horizontal flips and mild colour jitter, all drawn
    from a ``torch.Generator`` seeded with ``seed``: the same seed gives a
    bitwise identical tensor, so calibration and evaluation sets are
    reproducible. Photos are used round-robin so every photo is represented.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if size < 1:
        raise ValueError(f"size must be positive, got {size}")
    gen = torch.Generator().manual_seed(seed)
    names = photo_names()
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    out = torch.empty(n, 3, size, size)
    for k in range(n):
        image = _photo_tensor(names[k % len(names)])  # (3, H, W) uint8
        top, left, h, w = _random_resized_box(image.shape[1], image.shape[2], gen)
        crop = image[:, top : top + h, left : left + w].to(torch.float32) / 255.0
        crop = TF.resize(crop, [size, size], antialias=True)  # (3, size, size)
        flip, bright, contrast, sat = torch.rand(4, generator=gen).tolist()
        if flip < 0.5:
            crop = crop.flip(-1)
        crop = TF.adjust_brightness(crop, 0.8 + 0.4 * bright)
        crop = TF.adjust_contrast(crop, 0.8 + 0.4 * contrast)
        crop = TF.adjust_saturation(crop, 0.8 + 0.4 * sat)
        out[k] = (crop.clamp(0.0, 1.0) - mean) / std
    return out
