"""Static checks of the book's pages: nothing stale, nothing cited that the book lacks."""

from __future__ import annotations

import re
from pathlib import Path

import nbformat
import yaml

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
NOTEBOOKS = ROOT / "notebooks"
MISSING_NOTES = "method" + ".md"  # notes outside the repository, never to be cited


def _chapter_code() -> str:
    return "\n".join(
        cell.source
        for path in sorted(NOTEBOOKS.glob("*.ipynb"))
        for cell in nbformat.read(path, as_version=4).cells
    )


def test_api_page_documents_every_module_the_chapters_import() -> None:
    api = (BOOK / "api.md").read_text()
    documented = set(re.findall(r"^\.\. automodule:: (snnlite[\w.]*)$", api, flags=re.M))
    code = _chapter_code()
    used = set(re.findall(r"from (snnlite(?:\.\w+)+) import", code))
    used |= {f"snnlite.{m}" for m in re.findall(r"from snnlite import ([\w, ]+)", code)
             for m in m.replace(" ", "").split(",")}  # fmt: skip
    assert used, "no snnlite imports found in the chapters"
    missing = used - documented
    assert not missing, f"book/api.md does not document {sorted(missing)}"


def test_no_reference_to_files_the_repository_lacks() -> None:
    folders = ("book", "notebooks", "snnlite", "tests", "bench")
    files = [p for folder in folders for p in (ROOT / folder).rglob("*")
             if p.suffix in {".md", ".py", ".ipynb", ".yml"} and "_build" not in p.parts
             and p.name != "test_docs.py"]  # fmt: skip
    files.append(ROOT / "README.md")
    for path in files:
        assert MISSING_NOTES not in path.read_text(errors="ignore"), path


def test_every_citation_is_in_the_bibliography_and_every_entry_is_cited() -> None:
    bib = (BOOK / "references.bib").read_text()
    keys = set(re.findall(r"^@\w+\{([\w-]+),", bib, flags=re.M))
    text = _chapter_code() + "".join(p.read_text() for p in BOOK.glob("*.md"))
    cited = {k for group in re.findall(r"\{cite:[tp]\}`([^`]+)`", text)
             for k in group.split(",")}  # fmt: skip
    assert cited <= keys, f"cited but not in references.bib: {sorted(cited - keys)}"
    assert keys <= cited, f"in references.bib but never cited: {sorted(keys - cited)}"
    assert len(keys) >= 15


def test_reproducing_page_names_only_parameters_that_exist() -> None:
    params = yaml.safe_load((NOTEBOOKS / "params.yml").read_text())
    page = (BOOK / "reproducing.md").read_text()
    named = set(re.findall(r"^\| `(\w+)` \|", page, flags=re.M))
    named |= set(re.findall(r"-p (\w+) ", page)) | set(re.findall(r'-y "(\w+):', page))
    known = set()
    for path in NOTEBOOKS.glob("*.ipynb"):
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if "parameters" in cell.metadata.get("tags", []):
                known |= set(re.findall(r"^(\w+)\s*=", cell.source, flags=re.M))
    assert named, "no parameters found on the page"
    assert named <= known, f"reproducing.md names unknown parameters {sorted(named - known)}"
    assert params  # the page's profile file exists


WIDTH = 79  # characters of code that fit the theme's code box at full width (test_book)


def test_code_fits_the_page() -> None:
    """Code cells and solution blocks wrap at WIDTH characters: no sideways scrolling."""
    long = []
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        for i, cell in enumerate(nbformat.read(path, as_version=4).cells):
            if cell.cell_type == "code":
                lines = cell.source.splitlines()
            else:
                blocks = re.findall(r"```python\n(.*?)```", cell.source, flags=re.S)
                lines = [line for block in blocks for line in block.splitlines()]
            long += [f"{path.name} cell {i}: {line}" for line in lines if len(line) > WIDTH]
    assert not long, "\n".join(long)
