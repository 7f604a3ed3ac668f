"""Keep the book's widget cells from hanging the build (jupyter/nbclient#312).

Jupyter Book executes the chapters with nbclient in this process (a Sphinx extension, listed
in ``_config.yml``); the tests apply the same patch where papermill runs the chapters
(``tests/conftest.py`` imports :func:`headless_widgets` from this file).
"""

from __future__ import annotations

from typing import Any


def headless_widgets() -> None:
    """Let nbclient run notebooks with ``interact`` cells without the occasional hang.

    nbclient (papermill, Jupyter Book) mimics a browser's Output widget so that what an
    ``interact`` cell draws is recorded in the notebook's widget state (a static page shows
    it). To keep the kernel's copy in step, the mimic also sends every update back on the
    kernel's shell socket, while nbclient is waiting for the cell's reply on that same socket;
    now and then the reply's wake-up is lost and both sides wait forever (jupyter/nbclient#312;
    seen here in chapter 1's and chapter 9's widget cells, kernel and client idle). Nothing
    reads the kernel's copy back in a headless run, so after this call the mimic keeps
    recording and stops sending. Call it in the process that runs nbclient, before it runs.
    """
    from nbclient.output_widget import OutputWidget

    OutputWidget.sync_state = _record_only  # type: ignore[method-assign]


def _record_only(self: Any) -> None:
    """OutputWidget.sync_state without the shell message: the caller has already recorded
    the outputs (in the mimic and in the executor's widget state)."""


def setup(app: Any) -> dict[str, Any]:
    headless_widgets()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
