"""snnlite: training-free conversion of pretrained CNNs into spiking neural networks.

Bu, Li & Yu (2024), "Training-free Conversion of Pretrained ANNs to SNNs for Low-Power and
High-Performance Applications". Quick start::

    import snnlite
    snn = snnlite.convert(model, calibration, method="ltb", granularity="channel")
    outputs = snn.simulate(x, timesteps=[8, 16, 32, 64], delay="auto")  # {T: readout}

Layers, bottom up: a module imports only from its own layer (without a cycle) or the layers
below it, never from above, and never inside a function to dodge that rule
(tests/test_layers.py reads this table)::

    0 foundations  kernels, distributed, groupnorm, data, checks
    1 units        neurons, pooling
    2 preparation  graph, recipes
    3 synapses     synapses
    4 simulation   network
    5 analysis     latency, metrics, theory
    6 conversion   convert, detection, export, fold
    7 energy       energy
    8 book         notebook, plots
    9 scripts      zoo, energy.__main__
   10 cli          cli, __main__

* foundations: the numba kernels and frozen GroupNorm; ``data``, the offline data sets, needs
  nothing else of the package; ``checks``, the validation of what users pass in;
  ``distributed``, the only module that calls ``torch.distributed`` (shards, reductions);
* units: the IF neuron and the gated max pool, pure functions of their input and state that
  return spikes (they record nothing);
* preparation: the fx graph of activation sites and its op tables; threshold recipes;
* synapses: fan-out maps (where each spike goes) and :class:`~snnlite.synapses.Activity`;
* simulation: :class:`SpikingNetwork`, whose runner records events and SOPs from what the
  units return;
* analysis: evaluators and time-step curves (one loop for every metric), Theorem 1's terms,
  the low-latency corrections;
* conversion: :func:`convert`, the detectors' wrapper, the export of a converted network
  to NIR (``export``; the ``nir`` extra), and :func:`fold_thresholds` (unit spikes, the
  thresholds moved into the weights);
* energy: constants, MACs, energy rows and tables (no command line);
* book: helpers of the chapters (``plots`` alone needs matplotlib);
* scripts: the model zoo, its training and measuring scripts, and the energy command line
  (``python -m snnlite.energy``);
* cli: the ``snnlite`` command line (``python -m snnlite``): convert, export, energy; it
  only parses, loads data and writes reports, every number comes from the layers below.
"""

from snnlite.convert import calibrate, convert
from snnlite.fold import FoldError, fold_thresholds
from snnlite.graph import UnsupportedLayerError, prepare
from snnlite.network import SpikingNetwork

__version__ = "0.1.0"

__all__ = [
    "FoldError",
    "SpikingNetwork",
    "UnsupportedLayerError",
    "__version__",
    "calibrate",
    "convert",
    "fold_thresholds",
    "prepare",
]
