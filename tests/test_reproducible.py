"""Reproducibility: the same conversion and simulation give the same bits, run after run and
on 1 or 2 CPU threads.

Both conversion modes are checked on the zoo's ResNet (residual adds), the paper's on its
VGG too (max pools): thresholds and readouts compared with ``torch.equal``, not a
tolerance. They agree bit for bit on the machines this was run on (the convolutions and
snnlite's kernels split work across threads by output, not inside a sum); a platform where
they did not would fail here, and the spread would have to be measured and stated. (Runs
split across processes are
compared in tests/test_distributed.py, at rtol 1e-6: there the batches are summed in another
order.)
"""

from __future__ import annotations

import pytest
import torch

import snnlite
from snnlite import zoo

TIMESTEPS = [8, 32]


def _run(name: str, fashion: dict, threads: int, **options) -> tuple[torch.Tensor, dict]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        calibration = list(fashion["train"][:100].split(25))
        snn = snnlite.convert(zoo.load(name), calibration, iterations=60, progress=False,
                              **options)  # fmt: skip
        thresholds = torch.cat([t.reshape(-1) for t in snn.thresholds.values()])
        return thresholds, snn.simulate(fashion["test"][:100], timesteps=TIMESTEPS)
    finally:
        torch.set_num_threads(before)


# The low-latency tuning on 100 images (not its default 512) keeps the test short; what it
# does per image is the same.
MODES = {"paper": {}, "target8": {"target_timesteps": 8, "tuning_size": 100}}


@pytest.mark.parametrize(
    ("name", "mode"),
    [("fmnist_resnet", "paper"), ("fmnist_resnet", "target8"), ("fmnist_vgg", "paper")],
)
def test_same_bits_on_1_and_2_threads(fashion, name: str, mode: str) -> None:
    """Two runs, one on 1 thread and one on 2: equal bits also say two runs are equal."""
    one = _run(name, fashion, 1, **MODES[mode])
    two = _run(name, fashion, 2, **MODES[mode])
    assert torch.equal(one[0], two[0]), "thresholds differ"
    for T in TIMESTEPS:
        assert torch.equal(one[1][T], two[1][T]), f"readouts differ at T={T}"
