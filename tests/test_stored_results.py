"""Stored results are reproduced by the command stored with them: a slice of each, re-run
with the same settings, gives the stored numbers exactly.

The slice is the zoo ResNet's section of the energy tables (``python -m snnlite.energy ...
--output bench/energy_tables.md``) at the first two time steps of its grid, re-run with the
stored command's settings: one conversion and a short simulation. A simulation to T reads
the same at T whatever longer T it would go on to, so the slice is the stored computation,
not an approximation of it. The zoo's SNN table (``python -m snnlite.zoo.snn_table``) shares
its calibration and test images, so its LTB channel-wise row must read the same accuracy at
every T both grids have: the re-run reproduces that row at T = 8 too.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

from snnlite import zoo

ROOT = Path(__file__).resolve().parents[1]
ENERGY = ROOT / "bench" / "energy_tables.md"
MODEL = "fmnist_resnet"


def _command(text: str) -> list[str]:
    match = re.match(r"<!-- written by: (python -m snnlite\.energy .*) -->", text)
    assert match, "the energy tables do not start with the command that wrote them"
    return shlex.split(match.group(1))[3:]


def _section_rows(text: str, model: str) -> dict[str, list]:
    """The curve table of ``model``'s section: ``"T"`` -> its time steps, and each row
    label -> its cells as written."""
    section = text.split(f"## {model}\n", 1)[1].split("\n## ", 1)[0]
    rows: dict[str, list] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if line.startswith("| | T="):
            rows["T"] = [int(c.removeprefix("T=")) for c in cells[1:]]
        elif line.startswith("| ") and cells[0] in ("accuracy (%)", "SOPs per image"):
            rows[cells[0]] = cells[1:]
    return rows


def test_every_stored_table_names_its_command() -> None:
    for path in sorted((ROOT / "snnlite" / "zoo" / "results").glob("fmnist_*.json")):
        assert json.loads(path.read_text())["command"].startswith("python -m snnlite."), path
    for path in sorted((ROOT / "bench").glob("energy_*.md")):
        assert _command(path.read_text())[0].startswith("--"), path


def test_energy_table_slice_reproduces_the_stored_section() -> None:
    from snnlite.energy.__main__ import CALIBRATION_BATCH, CALIBRATION_BATCHES, measure, parser

    text = ENERGY.read_text()
    args = parser().parse_args(_command(text))
    args.models, args.timesteps = [MODEL], args.timesteps[:2]
    _, sections = measure(args)
    fresh, stored = _section_rows(sections[0], MODEL), _section_rows(text, MODEL)
    for label in ("accuracy (%)", "SOPs per image"):
        assert fresh[label] == stored[label][:2], label
    # Same calibration and test images as the stored SNN table: the same accuracy.
    table = zoo.info(MODEL)["snn_accuracy"]
    calibration = (
        f"--calibration-batches {CALIBRATION_BATCHES} --calibration-batch {CALIBRATION_BATCH}"
    )
    assert table["command"].endswith(calibration)
    assert table["test_images"] == args.images
    energy = dict(zip(stored["T"], stored["accuracy (%)"], strict=True))
    shared = [T for T in table["timesteps"] if T in energy]
    assert shared
    for T in shared:
        assert energy[T] == f"{100 * table['recipes']['ltb-channel']['accuracy'][str(T)]:.2f}"
