"""Small helpers the book's notebooks share: parameter profiles and result files.

(Running the notebooks headless without hangs is the book's and the tests' business, not
the package's: see ``book/_ext/widget_outputs.py``.)

Every notebook has a cell tagged ``parameters`` with small values (fast enough for the test
suite and for a laptop). The published book uses larger values, kept in ONE place,
``notebooks/params.yml``::

    ci:                       # what the tests pass through papermill
      01_spiking_neurons: {...}
    book:                     # what `make book` uses (SNNLITE_PROFILE=book)
      01_spiking_neurons: {...}

``make book`` sets ``SNNLITE_PROFILE=book`` (and ``SNNLITE_PARAMS`` to the file); the cell
after the parameters cell calls :func:`profile_parameters`, which returns that section's
values for the notebook, or nothing when no profile is set (tests, Colab, Binder, you).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["chapter_fingerprint", "profile_parameters", "save_results"]

PROFILE_ENV = "SNNLITE_PROFILE"
PARAMS_ENV = "SNNLITE_PARAMS"


def profile_parameters(notebook: str, path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The parameter overrides of ``notebook`` under the active profile ({} if none is set).

    Under a profile, ``results_dir`` defaults to ``results/<profile>``.

    Raises if a profile is set but the file or the notebook's entry is missing: a book built
    silently with the small test values would publish the wrong numbers.
    """
    profile = os.environ.get(PROFILE_ENV, "").strip()
    if not profile:
        return {}
    import yaml

    file = Path(path or os.environ.get(PARAMS_ENV) or "params.yml")
    if not file.is_file():
        raise FileNotFoundError(f"{PROFILE_ENV}={profile} but no parameter file at {file}")
    table = yaml.safe_load(file.read_text()) or {}
    try:
        values = dict(table[profile][notebook] or {})
    except KeyError:
        raise KeyError(f"{file} has no entry {profile}.{notebook}") from None
    # A profile's numbers go to their own folder (results/book/...), where the tests check
    # the prose's claims at the profile's parameters too; the CI runs write elsewhere.
    values.setdefault("results_dir", str(Path("results") / profile))
    return values


def _plain(value: Any) -> Any:
    """JSON-safe scalar: tensors and numpy numbers become Python floats/ints."""
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, bool | int | str) or value is None:
        return value
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"result value {value} is not finite")
    return value


def save_results(notebook: str, values: Mapping[str, Any], results_dir: str | os.PathLike) -> Path:
    """Write the numbers a notebook claims to ``<results_dir>/<notebook>.json``, flat and sorted.

    Keys are flat strings; task metrics follow ``ann_<metric>`` and ``snn_<metric>_T<T>``
    (metric: accuracy, miou or map) so tests and readers can find them.
    """
    flat = _provenance(notebook)
    for key, value in values.items():
        if not isinstance(key, str):
            raise TypeError(f"result keys must be strings, got {key!r}")
        if isinstance(value, Mapping | list | tuple):
            raise TypeError(f"result {key!r} must be a scalar (the file is a flat mapping)")
        flat[key] = _plain(value)
    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    file = out / f"{notebook}.json"
    file.write_text(json.dumps(flat, indent=1, sort_keys=True) + "\n")
    return file


def chapter_fingerprint(notebook: str | os.PathLike, params: Mapping[str, Any]) -> str:
    """sha256 of a chapter's code cells and its parameter overrides: what its numbers depend
    on besides the package. Outputs and prose are left out, so a stripped notebook and the
    executed one have the same fingerprint."""
    cells = json.loads(Path(notebook).read_text())["cells"]
    code = ["".join(c["source"]) if isinstance(c["source"], list) else c["source"]
            for c in cells if c["cell_type"] == "code"]  # fmt: skip
    blob = json.dumps({"code": code, "params": dict(params)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def _provenance(notebook: str) -> dict[str, Any]:
    """Under a profile (``make book``), where the numbers came from: the command and the
    chapter's fingerprint, so a test can tell stored book numbers from stale ones. Keys start
    with ``_``; outside a profile (tests, readers) there are none."""
    profile = os.environ.get(PROFILE_ENV, "").strip()
    source = Path(f"{notebook}.ipynb")  # the chapters run in their own folder
    if not profile or not source.is_file():
        return {}
    overrides = profile_parameters(notebook)
    overrides.pop("results_dir", None)
    return {
        "_command": f"make book  (SNNLITE_PROFILE={profile}; notebooks/params.yml)",
        "_chapter_sha256": chapter_fingerprint(source, overrides),
    }
