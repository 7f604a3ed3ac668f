"""Real datasets that work offline: Fashion-MNIST, bundled photos, fashion scenes.

Only torch, torchvision, numpy, scikit-image and tqdm are imported here, so this
package is cheap to import on its own.
"""

from snnlite.data.fashion import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    DatasetNotFoundError,
    fashion_mnist,
    fashion_mnist_benchmark,
    fashion_mnist_tensors,
)
from snnlite.data.photos import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    augmented_crops,
    imagenet_batch,
    imagenet_transform,
    photo,
    photo_names,
)
from snnlite.data.scenes import (
    SCENE_CLASSES,
    FashionScenes,
    collate_detection,
    load_scenes,
    scene_tensors,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "DatasetNotFoundError",
    "FashionScenes",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "SCENE_CLASSES",
    "augmented_crops",
    "collate_detection",
    "fashion_mnist",
    "fashion_mnist_benchmark",
    "fashion_mnist_tensors",
    "imagenet_batch",
    "imagenet_transform",
    "load_scenes",
    "photo",
    "photo_names",
    "scene_tensors",
]
