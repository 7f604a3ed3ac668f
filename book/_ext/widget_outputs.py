"""Keep the book's widget cells from hanging the build (jupyter/nbclient#312).

nbclient mimics a browser's Output widget so that what an ``interact`` cell draws ends up in
the saved widget state (the static page shows it). To keep the kernel's copy in step, the
mimic also sends each update back on the kernel's shell socket, while nbclient itself is
waiting for the cell's reply on that same socket; now and then the reply's wake-up is lost
and both sides wait forever (seen here: chapter 1's widget cell, kernel and client idle).
The book never reads the kernel's copy back, so the mimic keeps recording and stops sending.
"""

from __future__ import annotations

from typing import Any


def _record_only(self: Any) -> None:
    """OutputWidget.sync_state without the shell message (the outputs are already recorded
    in ``self.outputs`` and in the executor's widget state by the caller)."""


def setup(app: Any) -> dict[str, Any]:
    from nbclient.output_widget import OutputWidget

    OutputWidget.sync_state = _record_only
    return {"parallel_read_safe": True, "parallel_write_safe": True}
