"""The book renders offline: build the introduction and chapter 1, open them in headless Chromium.

Every chapter of the full build (``make book``, when book/_build/html exists) is also opened,
and no code block may be wider than its box (no sideways scrolling).

A fast build (intro + chapter 1 at its CI parameters, into a temporary folder, with the same
configuration and vendored JavaScript as `make book`) is rendered by Debian's ``chromium`` with
every network request refused. After JavaScript ran, the DOM must hold typeset math (MathJax's
``mjx-container``, no raw TeX left), the chapter's figures, and a live ipywidgets slider.
Screenshots go to ``book/_build/screenshots`` (ignored by git) for a human to look at.
The full book (all chapters, BOOK parameters, warnings as errors) is ``make book``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import skip_or_fail

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"
SHOTS = BOOK / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

pytestmark = [pytest.mark.notebook]


@pytest.fixture(scope="module", autouse=True)
def _browser_and_scripts() -> None:
    """Without chromium or the vendored JavaScript: skipped, but failed under CI=true."""
    if CHROMIUM is None:
        skip_or_fail("Debian's chromium is not installed: run `make browser` as root "
                     "(apt-get install -y chromium)")  # fmt: skip
    if not (BOOK / "_vendor" / "mathjax" / "tex-mml-chtml.js").is_file():
        skip_or_fail("vendored JavaScript missing: run `make vendor` (part of `make book`)")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    """A fast build of the whole book with its real configuration, where only chapter 1 is
    executed: the other pages keep their code cells (all the code-width test needs) and no
    outputs. Returns the html dir."""
    src = tmp_path_factory.mktemp("book")
    for entry in BOOK.iterdir():
        if entry.name not in ("_build", "_config.yml"):
            (src / entry.name).symlink_to(entry)
    config = (BOOK / "_config.yml").read_text()
    assert "execute_notebooks: cache\n" in config
    others = sorted(f"notebooks/{p.name}" for p in (ROOT / "notebooks").glob("*.ipynb")
                    if not p.name.startswith("01_"))  # fmt: skip
    (src / "_config.yml").write_text(config.replace(
        "execute_notebooks: cache\n",
        f"execute_notebooks: cache\n  exclude_patterns: {others}\n",
    ))  # fmt: skip
    jupyter_book = Path(sys.executable).with_name("jupyter-book")
    result = subprocess.run(
        [str(jupyter_book), "build", str(src), "--builder", "html"],
        capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    # `make book` builds everything with warnings as errors; this build may not warn either.
    warnings = [line for line in (result.stdout + result.stderr).splitlines()
                if "WARNING:" in line]  # fmt: skip
    assert not warnings, warnings
    return src / "_build" / "html"


def render(page: Path, screenshot: Path | None = None, width: int = 1200) -> str:
    """The DOM of ``page`` after its JavaScript ran, with all network access refused."""
    base = [
        CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--allow-file-access-from-files",
        "--proxy-server=127.0.0.1:9", "--proxy-bypass-list=<-loopback>",
        "--virtual-time-budget=15000", f"--window-size={width},2400",
    ]  # fmt: skip
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([*base, f"--screenshot={screenshot}", page.as_uri()],
                       capture_output=True, timeout=120, check=True)  # fmt: skip
    dom = subprocess.run([*base, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120, check=True)  # fmt: skip
    return dom.stdout


def visible_text(dom: str) -> str:
    """Prose: text outside scripts, styles, code blocks and MathJax's own markup."""
    dom = re.sub(r"<(script|style|pre)\b.*?</\1>", "", dom, flags=re.S)
    dom = re.sub(r"<mjx-container\b.*?</mjx-container>", "", dom, flags=re.S)
    return re.sub(r"<[^>]+>", " ", dom)


OVERFLOW_SCRIPT = """<script>
window.addEventListener("load", () => {
  const code = document.querySelectorAll("div.cell_input pre, div.highlight-python pre");
  const wide = [...code].filter((pre) => pre.scrollWidth > pre.clientWidth + 1);
  document.body.setAttribute("data-code-blocks", String(code.length));
  document.body.setAttribute("data-too-wide", String(wide.length));
});
</script>"""


# At 1440 px and wider the theme's content column has its full width (786 px of code box:
# 79 characters at 14 px). Between 1200 and 1440 px both sidebars share the window and the
# box is narrowest at 1200 (608 px), so book/_static/code-width.css shrinks the code font
# with the box; below 1200 the page's table of contents folds away and the box widens
# again (measured down to 800 px).
WIDTHS = (1200, 1440)


def code_overflow(page: Path) -> tuple[int, int]:
    """(code blocks, code blocks wider than their box at any of ``WIDTHS``) of ``page``."""
    probe = page.with_name(page.stem + ".width-probe.html")
    probe.write_text(page.read_text().replace("</body>", OVERFLOW_SCRIPT + "</body>"))
    counts = []
    try:
        for width in WIDTHS:
            dom = render(probe, width=width)
            blocks = re.search(r'data-code-blocks="(\d+)"', dom)
            wide = re.search(r'data-too-wide="(\d+)"', dom)
            assert blocks and wide, "the width probe did not run"
            counts.append((int(blocks.group(1)), int(wide.group(1))))
    finally:
        probe.unlink()
    return min(blocks for blocks, _ in counts), max(wide for _, wide in counts)


def _toc_notebooks() -> list[str]:
    import yaml

    toc = yaml.safe_load((BOOK / "_toc.yml").read_text())
    return [entry["file"] for part in toc["parts"] for entry in part["chapters"]
            if entry["file"].startswith("notebooks/")]  # fmt: skip


@pytest.mark.parametrize("page", _toc_notebooks())
def test_every_chapter_code_fits_the_page(site: Path, page: str) -> None:
    blocks, wide = code_overflow(site / f"{page}.html")
    assert blocks >= 3 and wide == 0, (page, blocks, wide)


def test_intro_typesets_math_offline(site: Path) -> None:
    dom = render(site / "intro.html", SHOTS / "intro.screenshot.png")
    assert dom.count("<mjx-container") >= 5, "MathJax did not typeset the introduction"
    text = visible_text(dom)
    assert "\\theta" not in text and "\\begin{aligned}" not in text, "raw TeX left on the page"
    assert "bu2024training" not in text  # citations resolved by sphinxcontrib-bibtex


def test_chapter_1_has_math_figures_and_a_widget(site: Path) -> None:
    page = site / "notebooks" / "01_spiking_neurons.html"
    dom = render(page, SHOTS / "chapter1.screenshot.png")
    assert dom.count("<mjx-container") >= 5, "MathJax did not typeset chapter 1"
    assert "\\psi_T" not in visible_text(dom)
    images = re.findall(r'<img[^>]+src="([^"]+\.png)"', dom)
    assert len(images) >= 3, "chapter 1's figures are missing"
    for src in images:
        assert (page.parent / src).resolve().is_file(), src
    # The widget manager rendered the saved widget state: a live slider, not a placeholder.
    assert "widget-slider" in dom, "the ipywidgets sliders were not rendered"
    # Launch buttons open the real notebook path (book/notebooks is a symlink on GitHub).
    assert "colab.research.google.com/github/snnlite/snnlite/blob/main/notebooks/01_" in dom
    assert "book/notebooks/" not in dom
