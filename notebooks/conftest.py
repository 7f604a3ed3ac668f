"""nbval's items (one per notebook cell) carry the ``notebook`` marker, like tests/'s runs.

``pytest -m "not notebook"`` then skips every execution of the book's chapters.
"""

from __future__ import annotations

import pytest


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.suffix == ".ipynb":
            item.add_marker(pytest.mark.notebook)
