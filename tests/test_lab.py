"""The chapters work live in JupyterLab: run in a real browser, their widgets redraw.

A JupyterLab server (the ``lab`` extra) is started headless on a free port with a token, on a
temporary copy of the chapters, and driven by Playwright with Debian's ``chromium`` (no
browser download). For each chapter with an ``interact`` widget the test opens the notebook,
runs all cells, drags the first widget's first slider with the mouse (chapter 6's widget has
none: it picks one more option in its list of parts), and checks that

- the control moved and the figure was redrawn (the PNG's bytes differ),
- no "Error displaying widget" is on the page and no "Loading widget..." lasts,
- no cell raised, and the kernel is idle afterwards.

Chapter 1 runs at its own defaults; the others run at the tiny parameters below (injected
after their ``parameters`` cell with papermill, as the other tests do), which is enough to
exercise each widget: the redraw *times* at the default parameters are measured in a live
kernel by ``bench/bench_widgets.py`` (numbers in bench/widgets.md), of which
``test_chapter_1_redraws_within_target`` re-runs the chapter-1 slice. ``make lab`` itself is
checked to print its URL with a token when there is no display.

Screenshots (also on failure) go to ``book/_build/screenshots/lab-*.screenshot.png``,
ignored by git. The server, its kernels and the browser are stopped in fixture finalizers
whatever happens; every wait has its own timeout, below each test's pytest timeout.
Under CI=true a missing chromium, JupyterLab or Playwright fails with the command that
installs it (``make test`` does); elsewhere those tests are skipped.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
SHOTS = ROOT / "book" / "_build" / "screenshots"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
WIDGET_CELL = "widgets.interact("
CHAPTERS = sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb") if WIDGET_CELL in p.read_text())

# Small enough that a chapter runs in well under a minute on 2 cores, large enough that each
# widget has something to show (two time steps, two images...). Chapter 1 keeps its defaults.
TINY: dict[str, dict[str, Any]] = {
    "02_error_bound": {"n_images": 4, "T_values": [8, 32], "calibration_images": 40},
    "03_threshold_balancing": {"calibration_images": 40, "updates": 60, "K_values": [10, 60],
                               "n_test": 16, "T_values": [8, 16]},
    "04_channels_and_pooling": {"calibration_images": 40, "n_test": 8, "T_values": [8, 16],
                                "window_T": 16},
    "05_classification": {"calibration_images": 40, "n_test": 8, "T_values": [8, 16],
                          "n_photos": 1, "photo_size": 32, "photo_calibration": 8,
                          "photo_updates": 10, "photo_T": [8, 16], "own_train_images": 200},
    "06_low_latency": {"calibration_images": 40, "updates": 20, "tuning_size": 16,
                       "n_test": 16, "T_values": [4, 8], "targets": [4],
                       "values_per_channel": 256},
    "07_segmentation": {"models": ["scenes_fcn"], "test_scenes": 2, "calibration_scenes": 8,
                        "calibration_batch": 4, "ltb_updates": 10, "timesteps": [16, 32],
                        "grid_scenes": 1},
    "08_detection": {"models": ["scenes_retinanet"], "test_scenes": 2, "calibration_scenes": 8,
                     "calibration_batch": 4, "ltb_updates": 10, "timesteps": [16, 64],
                     "grid_scenes": 1},
    "09_energy": {"model_names": ["fmnist_vgg"], "calibration_images": 40, "updates": 20,
                  "n_test": 8, "T_values": [2, 4, 8]},
}  # fmt: skip

SERVER_START_S = 90  # JupyterLab answers /api/status
KERNEL_READY_S = 90  # the notebook's kernel is started and idle
RUN_ALL_S = 480  # every cell of one chapter (tiny parameters; chapter 1 at its defaults);
# about 1-4 min on 2 busy cores (chapter 6 the longest); 300 s ran out for chapter 2 once,
# with its 2 cores shared by four other heavy jobs
REDRAW_S = 60  # the figure after a slider move (a hang, not slowness: see bench/)
SETTLE_S = 30  # widgets rendered, kernel idle again

pytestmark = [pytest.mark.notebook]


def require(ok: bool, what: str, fix: str) -> None:
    """Skip when ``what`` is missing, except under CI=true: there, fail with the fix."""
    if ok:
        return
    message = f"{what} is missing; fix: {fix}"
    if IN_CI:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


def importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the server ---------------------------------------------------------------------------


@dataclass
class Lab:
    """A running JupyterLab server: where it is, its token, its own folders."""

    url: str
    token: str
    root: Path
    runtime: Path
    process: subprocess.Popen

    def api(self, path: str, method: str = "GET") -> Any:
        request = urllib.request.Request(
            f"{self.url}/api/{path}", method=method,
            headers={"Authorization": f"token {self.token}"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=10) as response:
            body = response.read()
        return json.loads(body) if body else None

    def shutdown_kernels(self) -> None:
        """Stop every kernel of this server through its API (best effort)."""
        try:
            for kernel in self.api("kernels"):
                self.api(f"kernels/{kernel['id']}", method="DELETE")
        except OSError:
            pass


def prepare_chapters(root: Path) -> None:
    """Copy the chapters into ``root``, with TINY's parameters injected (papermill)."""
    import papermill

    shutil.copy(NOTEBOOKS / "params.yml", root)
    for name in CHAPTERS:
        source, target = NOTEBOOKS / f"{name}.ipynb", root / f"{name}.ipynb"
        if name in TINY:
            papermill.execute_notebook(
                str(source), str(target), parameters=TINY[name], prepare_only=True,
                kernel_name="python3", progress_bar=False, log_output=False,
            )  # fmt: skip
        else:
            shutil.copy(source, target)


LAB_SETTINGS: dict[str, dict[str, Any]] = {
    # No news or update checks: there is no network here.
    "apputils-extension/notification": {"fetchNews": "false", "checkForUpdates": False},
    # Every cell attached and laid out at its real size. JupyterLab 4's default windowing
    # ("contentVisibility") lays off-screen cells out at an estimated height, so scrolling
    # to a widget far down a long chapter lands short: the cells passed on the way take
    # their real heights and push it below the window, and a drag aimed at its slider
    # presses empty space (chapter 1's slider ended ~300 px below a 1000 px window).
    "notebook-extension/tracker": {"windowingMode": "none"},
}


def lab_settings(folder: Path) -> None:
    """User settings for the test server (``LAB_SETTINGS``), in ``folder``."""
    for plugin, values in LAB_SETTINGS.items():
        package, name = plugin.split("/")
        target = folder / "@jupyterlab" / package / f"{name}.jupyterlab-settings"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(values))


def die_with_parent() -> None:
    """In the server's process, before exec: SIGTERM it when pytest dies (Linux).

    Fixture finalizers do not run when pytest itself is killed (a CI time limit, Ctrl-C
    twice); the server then still gets its SIGTERM and, stopping, shuts its kernels down.
    """
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def kill_leftover_kernels(runtime: Path) -> None:
    """Kernels whose connection file lies in ``runtime`` (this server's own folder): SIGKILL.

    jupyter_client starts kernels in sessions of their own, so they outlive a killed server;
    their command line names their connection file, which identifies them as ours.
    """
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if str(runtime) in cmdline:
            try:
                os.kill(int(proc.name), signal.SIGKILL)
            except OSError:
                pass


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """JupyterLab on a free port with a token, on copies of the chapters; always stopped."""
    require(importable("jupyterlab"), "JupyterLab", 'pip install -e ".[dev,book,lab]"')
    require(importable("papermill"), "papermill", 'pip install -e ".[dev,book,lab]"')
    base = tmp_path_factory.mktemp("lab")
    root, runtime, settings = base / "notebooks", base / "runtime", base / "settings"
    for folder in (root, runtime):
        folder.mkdir()
    lab_settings(settings)
    prepare_chapters(root)
    port, token = free_port(), secrets.token_hex(16)
    env = {k: v for k, v in os.environ.items() if k not in ("SNNLITE_PROFILE", "SNNLITE_PARAMS")}
    env.update(JUPYTER_RUNTIME_DIR=str(runtime), JUPYTER_CONFIG_DIR=str(base / "config"),
               JUPYTERLAB_SETTINGS_DIR=str(settings),
               JUPYTERLAB_WORKSPACES_DIR=str(base / "workspaces"))  # fmt: skip
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}", "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells by command
    ]  # fmt: skip
    if os.geteuid() == 0:
        command.append("--allow-root")
    log = (base / "server.log").open("wb")
    process = subprocess.Popen(command, env=env, cwd=root, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True,
                               preexec_fn=die_with_parent)  # fmt: skip
    server = Lab(f"http://127.0.0.1:{port}", token, root, runtime, process)
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            assert process.poll() is None, (base / "server.log").read_text()[-3000:]
            try:
                server.api("status")
                break
            except OSError:
                assert time.monotonic() < deadline, "JupyterLab did not answer in time"
                time.sleep(0.5)
        yield server
    finally:
        server.shutdown_kernels()
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        kill_leftover_kernels(runtime)
        log.close()


# --- the browser --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Debian's chromium under Playwright (its own browser builds are never downloaded)."""
    require(CHROMIUM is not None, "Debian's chromium", "apt-get install -y chromium")
    require(importable("playwright"), "Playwright", 'pip install -e ".[dev,book,lab]"')
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, timeout=60_000,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update",
                  "--disable-sync"],
        )  # fmt: skip
        try:
            yield chromium
        finally:
            chromium.close()


NOTEBOOK_JS = "window.jupyterapp?.shell.currentWidget"
KERNEL_IDLE_JS = f"() => {NOTEBOOK_JS}?.sessionContext?.session?.kernel?.status === 'idle'"
ALL_RAN_JS = f"""() => {{
  const panel = {NOTEBOOK_JS};
  const cells = panel.content.widgets.filter(c => c.model.type === 'code');
  return cells.every(c => c.model.executionCount !== null)
      && panel.sessionContext.session.kernel.status === 'idle';
}}"""
ERRORS_JS = f"""() => {NOTEBOOK_JS}.content.widgets
  .filter(c => c.model.type === 'code')
  .flatMap(c => c.model.outputs.toJSON())
  .filter(o => o.output_type === 'error')
  .map(o => o.ename + ': ' + o.evalue)"""
NEW_FIGURE_JS = """([box, before]) => {
  const img = box.querySelector('.jp-OutputArea-output img');
  return img !== null && img.getAttribute('src') !== before;
}"""


def figure_bytes(src: str | None) -> bytes:
    """The PNG behind an output ``<img>`` (JupyterLab inlines it as a data URI)."""
    assert src and src.startswith("data:image/png;base64,"), f"not an inline PNG: {src!r:.80}"
    return base64.b64decode(src.split(",", 1)[1])


CONTROLS_JS = """box => [
  ...[...box.querySelectorAll('.widget-readout')].map(r => r.innerText),
  ...[...box.querySelectorAll('select')].map(
    s => [...s.selectedOptions].map(o => o.textContent).join(' + ')),
]"""
CONTROLS_MOVED_JS = f"""([box, before]) =>
  JSON.stringify(({CONTROLS_JS})(box)) !== JSON.stringify(before)"""
HIT_JS = """el => {
  const r = el.getBoundingClientRect();
  const hit = document.elementFromPoint(r.x + r.width / 2, r.y + r.height / 2);
  return hit !== null && (el === hit || el.contains(hit));
}"""


def bring_into_view(page: Any, target: Any, timeout: float = SETTLE_S) -> dict[str, float]:
    """Scroll ``target`` into the window; its box once it stays put and a press hits it.

    A drag is raw mouse events at coordinates: aimed at a control that is still moving
    (outputs above it being laid out) or hidden (outside the window, under the toolbar),
    it presses something else and the slider never moves.
    """
    deadline = time.monotonic() + timeout
    last = None
    while True:
        target.scroll_into_view_if_needed(timeout=10_000)
        box = target.bounding_box(timeout=10_000)
        if box is not None and box == last and target.evaluate(HIT_JS):
            return box
        last = box
        assert time.monotonic() < deadline, f"control not steady in view: {box}"
        page.wait_for_timeout(200)


def move_a_control(page: Any, box: Any) -> str:
    """Move a control of ``box`` as a reader does; which one, in words.

    The first slider is dragged with the mouse, 60% of its track toward the far end (60%
    reaches another position even on a two-option selection slider; the handle stops at the
    end of the track). A widget without a slider (chapter 6's: a drop-down and a list of
    parts) gets one more option picked in its first list that has a choice left.
    """
    sliders = box.locator(".widget-slider")
    if sliders.count():
        track = sliders.first.locator(".noUi-target")
        handle = sliders.first.locator(".noUi-handle")
        h = bring_into_view(page, handle)
        t = track.bounding_box(timeout=10_000)
        x, y = h["x"] + h["width"] / 2, h["y"] + h["height"] / 2
        direction = 1 if x < t["x"] + t["width"] / 2 else -1
        page.mouse.move(x, y)
        page.mouse.down()
        page.mouse.move(x + direction * 0.6 * t["width"], y, steps=8)
        page.mouse.up()
        return "the first slider"
    for select in box.locator("select").all():
        options = select.locator("option").all_text_contents()
        chosen = select.evaluate("s => [...s.selectedOptions].map(o => o.textContent)")
        others = [o for o in options if o not in chosen]
        if not others:
            continue
        bring_into_view(page, select)
        multiple = select.evaluate("s => s.multiple")
        select.select_option(label=[*chosen, others[0]] if multiple else others[0])
        return f"the list {select.evaluate('s => s.labels[0]?.textContent') or ''}".strip()
    raise AssertionError("the widget has no slider and no list with a choice left")


def wait_kernels_idle(lab: Lab, timeout: float = SETTLE_S) -> None:
    """The server's own view: every kernel reports execution_state 'idle'."""
    deadline = time.monotonic() + timeout
    while True:
        states = [k["execution_state"] for k in lab.api("kernels")]
        if states and all(s == "idle" for s in states):
            return
        assert time.monotonic() < deadline, f"kernel not idle after the redraw: {states}"
        time.sleep(0.25)


@pytest.mark.timeout(900)  # above the sum of the waits below
@pytest.mark.parametrize("chapter", CHAPTERS)
def test_widget_redraws_live(lab: Lab, browser: Any, chapter: str) -> None:
    page = browser.new_page(viewport={"width": 1400, "height": 1000})
    page.set_default_timeout(30_000)
    shot = SHOTS / f"lab-{chapter}.screenshot.png"
    try:
        page.goto(f"{lab.url}/lab/tree/{chapter}.ipynb?reset&token={lab.token}")
        page.wait_for_function(KERNEL_IDLE_JS, timeout=KERNEL_READY_S * 1000, polling=250)
        started = time.monotonic()
        # Not awaited (evaluate has no timeout): the wait below, with its own, follows it.
        page.evaluate("() => { window.jupyterapp.commands.execute('notebook:run-all-cells'); }")
        page.wait_for_function(ALL_RAN_JS, timeout=RUN_ALL_S * 1000, polling=500)
        ran = time.monotonic() - started
        assert page.evaluate(ERRORS_JS) == [], f"{chapter}: a cell raised"

        box = page.locator(".widget-interact").first
        figure = box.locator(".jp-OutputArea-output img").first
        figure.wait_for(timeout=SETTLE_S * 1000)
        before_controls = box.evaluate(CONTROLS_JS)
        before_src = figure.get_attribute("src")
        start = time.monotonic()
        moved = move_a_control(page, box)
        # The control first (a press that missed says so here), then the figure.
        page.wait_for_function(CONTROLS_MOVED_JS, arg=[box.element_handle(), before_controls],
                               timeout=SETTLE_S * 1000, polling=50)  # fmt: skip
        page.wait_for_function(NEW_FIGURE_JS, arg=[box.element_handle(), before_src],
                               timeout=REDRAW_S * 1000, polling=50)  # fmt: skip
        redraw = time.monotonic() - start
        after_src = figure.get_attribute("src")
        assert figure_bytes(after_src) != figure_bytes(before_src), "the figure is unchanged"

        page.get_by_text("Loading widget...").first.wait_for(state="detached",
                                                             timeout=SETTLE_S * 1000)  # fmt: skip
        assert page.get_by_text("Error displaying widget").count() == 0
        wait_kernels_idle(lab)
        assert page.evaluate(ERRORS_JS) == [], f"{chapter}: the widget's callback raised"
        after_controls = box.evaluate(CONTROLS_JS)
        print(f"{chapter}: all cells ran in {ran:.0f} s; moved {moved}: {before_controls} -> "
              f"{after_controls}, figure redrawn in the browser in {redraw:.2f} s")  # fmt: skip
    finally:
        SHOTS.mkdir(parents=True, exist_ok=True)
        try:
            page.screenshot(path=str(shot), timeout=15_000)
        except Exception:  # noqa: BLE001 - a screenshot is a courtesy, never the failure
            pass
        page.close()
        lab.shutdown_kernels()


def test_tiny_parameters_are_the_chapters_own() -> None:
    """A renamed parameter would leave its chapter at full size here, silently: fail instead."""
    import nbformat

    assert set(TINY) | {"01_spiking_neurons"} == set(CHAPTERS)
    for name, values in TINY.items():
        nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
        cell = next(c for c in nb.cells if "parameters" in c.metadata.get("tags", []))
        names = set(re.findall(r"^(\w+)\s*=", cell.source, flags=re.M))
        assert set(values) <= names, f"{name}: no parameter(s) {set(values) - names}"


@pytest.mark.timeout(300)
def test_chapter_1_redraws_within_target() -> None:
    """bench/bench_widgets.py's chapter-1 slice: every move of its widget under 2 s."""
    from bench.bench_widgets import TARGET_SECONDS, bench_chapter

    result = bench_chapter("01_spiking_neurons")
    moves = result["moves"]
    assert moves and result["displays"] >= len(moves), "a move did not redraw"
    slow = [m for m in moves if m["seconds"] > TARGET_SECONDS]
    assert not slow, f"redraws over {TARGET_SECONDS} s: {slow}"


@pytest.mark.timeout(300)
def test_make_lab_prints_its_url_without_a_display(tmp_path: Path) -> None:
    """``make lab`` with no display: kernel registered, URL with token printed, no failure."""
    require(importable("jupyterlab"), "JupyterLab", 'pip install -e ".[dev,book,lab]"')
    require(shutil.which("make") is not None, "make", "apt-get install -y make")
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env.update(JUPYTER_RUNTIME_DIR=str(tmp_path), JUPYTER_CONFIG_DIR=str(tmp_path / "config"))
    venv = Path(sys.prefix)
    # -o: the environment running this test is set up already; reinstall nothing.
    command = ["make", "-o", str(venv / ".installed"), "-o", "data", "lab", f"VENV={venv}",
               f"LAB_ARGS=--ServerApp.port={free_port()} --ServerApp.port_retries=0"]  # fmt: skip
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)  # fmt: skip
    seen: list[str] = []
    try:
        deadline = time.monotonic() + 120
        url = None
        os.set_blocking(process.stdout.fileno(), False)
        buffer = b""
        while url is None and time.monotonic() < deadline and process.poll() is None:
            buffer += process.stdout.read() or b""
            seen = buffer.decode(errors="replace").splitlines()
            url = next((m for line in seen
                        if (m := re.search(r"http://127\.0\.0\.1:\d+/lab\?token=\w+", line))),
                       None)  # fmt: skip
            time.sleep(0.2)
        assert url is not None, "no URL with a token:\n" + "\n".join(seen[-30:])
        spec = json.loads((venv / "share/jupyter/kernels/snnlite/kernel.json").read_text())
        assert spec["display_name"] == "Python (snnlite)"
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        kill_leftover_kernels(tmp_path)
