"""Real datasets that work offline: Fashion-MNIST, bundled photos, fashion scenes.

Only torch, torchvision, numpy and scikit-image are imported here, so this
package is cheap to import on its own.
"""

from snnlite.data.fashion import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist,
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

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "augmented_crops",
    "fashion_mnist",
    "fashion_mnist_tensors",
    "imagenet_batch",
    "imagenet_transform",
    "photo",
    "photo_names",
]
