"""Reproducibility: the same conversion and simulation give the same bits, run after run,
and the same numbers up to float rounding on 1 or 2 CPU threads.

Both conversion modes are checked on the zoo's ResNet (residual adds), the paper's on its
VGG too (max pools). Two runs on the same number of threads are compared with
``torch.equal``, not a tolerance. Across 1 and 2 threads they agreed bit for bit on the
machines this was first run on (the convolutions and snnlite's kernels split work across
threads by output, not inside a sum), but not on an AVX-512 / AMX Xeon (2026-12-05): there
oneDNN's convolutions round differently with the thread count, which moved 29 of the VGG's
448 LTB thresholds by up to 1.1e-6 (relative) and its readouts by up to 5e-7, with the same
classes. Across thread counts the test therefore holds them to rtol 1e-5 and the same
top-1 classes. (Runs split across processes are compared in tests/test_distributed.py, at
rtol 1e-6: there the batches are summed in another order.)
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
def test_same_bits_run_after_run_and_on_1_and_2_threads(fashion, name: str, mode: str) -> None:
    """Two runs on 2 threads give the same bits; a run on 1 thread the same numbers up to
    the convolutions' rounding (bit for bit on most CPUs, see the module doc)."""
    one = _run(name, fashion, 1, **MODES[mode])
    two = _run(name, fashion, 2, **MODES[mode])
    again = _run(name, fashion, 2, **MODES[mode])
    assert torch.equal(two[0], again[0]), "thresholds differ run to run"
    torch.testing.assert_close(one[0], two[0], rtol=1e-5, atol=0)
    for T in TIMESTEPS:
        assert torch.equal(two[1][T], again[1][T]), f"readouts differ run to run at T={T}"
        torch.testing.assert_close(one[1][T], two[1][T], rtol=1e-5, atol=1e-5)
        assert torch.equal(one[1][T].argmax(1), two[1][T].argmax(1)), T
