"""Real datasets that work offline: Fashion-MNIST, bundled photos, fashion scenes."""

from snnlite.data.fashion import (
    FASHION_MNIST_CLASSES,
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    fashion_mnist,
    fashion_mnist_tensors,
)

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_MEAN",
    "FASHION_MNIST_STD",
    "fashion_mnist",
    "fashion_mnist_tensors",
]
