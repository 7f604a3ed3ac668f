"""Point the launch buttons (Colab, Binder, JupyterHub) at the notebooks' real path.

The chapters live in ``notebooks/`` and reach the book through the symlink
``book/notebooks``. sphinx-book-theme builds launch URLs from ``path_to_book`` + page name,
i.e. ``book/notebooks/...``, which on GitHub is a symlink: Colab cannot open it. This
extension runs after the theme's own handler and rewrites that prefix to ``notebooks/``.
"""

from __future__ import annotations

from typing import Any

SYMLINKED = "book/notebooks/"
REAL = "notebooks/"


def _rewrite(app: Any, pagename: str, templatename: str, context: dict, doctree: Any) -> None:
    for group in context.get("header_buttons", []):
        for button in group.get("buttons", []) if isinstance(group, dict) else []:
            url = button.get("url")
            if isinstance(url, str) and SYMLINKED in url:
                button["url"] = url.replace(SYMLINKED, REAL)


def setup(app: Any) -> dict[str, Any]:
    app.connect("html-page-context", _rewrite, priority=900)  # after the theme (501)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
