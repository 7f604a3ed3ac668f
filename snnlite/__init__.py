"""snnlite: training-free conversion of pretrained CNNs into spiking neural networks.

Bu, Li & Yu (2024), "Training-free Conversion of Pretrained ANNs to SNNs for Low-Power and
High-Performance Applications". Quick start::

    import snnlite
    snn = snnlite.convert(model, calibration, method="ltb", granularity="channel")
    outputs = snn.simulate(x, timesteps=[8, 16, 32, 64], delay="auto")  # {T: readout}
"""

from snnlite.convert import calibrate, convert
from snnlite.graph import UnsupportedLayerError, prepare
from snnlite.network import SpikingNetwork

__version__ = "0.1.0"

__all__ = [
    "SpikingNetwork",
    "UnsupportedLayerError",
    "__version__",
    "calibrate",
    "convert",
    "prepare",
]
