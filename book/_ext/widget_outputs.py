"""Keep the book's widget cells from hanging the build (jupyter/nbclient#312).

Jupyter Book executes the chapters with nbclient in this process; see
:func:`snnlite.notebook.headless_widgets` for what goes wrong and what it changes.
"""

from __future__ import annotations

from typing import Any


def setup(app: Any) -> dict[str, Any]:
    from snnlite.notebook import headless_widgets

    headless_widgets()
    return {"parallel_read_safe": True, "parallel_write_safe": True}
