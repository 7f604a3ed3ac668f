"""Redraw time of every widget in the book's chapters, measured in a live Jupyter kernel.

Each chapter runs in a fresh IPython kernel (the one JupyterLab starts) at its default
parameters, cell by cell, exactly as a reader runs it. After each ``widgets.interact`` cell,
every control of that widget is moved, in the kernel, the way a browser moves it (its
``value`` changes and the widget's observer calls the chapter's function): one step, to its
maximum, to its minimum and back for sliders; every option for drop-downs and selection
sliders; each other option added, then back, for a multiple selection (chapter 6's parts);
both states for check boxes. A move that would leave the control where it is (a slider that
starts at its maximum, a one-option list) is left out: every timed move is a redraw. Each
move is timed until the new figure (or table) has been drawn and sent, so the number is the
kernel's share of a redraw; the browser adds only the decoding of one PNG. The issue's
target: every move under about 2 s on a 2-core laptop.

Regenerate the committed numbers (bench/widgets.json, bench/widgets.md), about 10 minutes on
2 CPU cores:

    .venv/bin/python bench/bench_widgets.py
    .venv/bin/python bench/bench_widgets.py 01_spiking_neurons --no-write   # one chapter, print

tests/test_lab.py re-runs the slice of chapter 1 and holds it to the same target.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
TARGET_SECONDS = 2.0
CELL_TIMEOUT = 1800  # seconds per cell (a loaded machine): a hang fails the run, not stalls it
WIDGET_CELL = "widgets.interact("


# --- what runs inside the kernel ------------------------------------------------------------


def measure_new_widgets(seen: set[str]) -> list[dict[str, Any]]:
    """Move every control of each ``interactive`` widget not in ``seen``; time each move.

    Runs inside the chapter's kernel (its source is sent there). Setting ``control.value`` is
    what a browser's comm message does: the interactive's observer calls the chapter's
    function synchronously, which clears the output and draws again. Each move gets its wall
    time and the kernel's CPU time: on cores shared with other work the wall time grows with
    the load, the CPU time hardly (it is what the move costs on an idle core).
    """
    import time

    import ipywidgets
    from ipywidgets.widgets.interaction import interactive

    registry = getattr(ipywidgets.widgets.widget, "_instances", None) or ipywidgets.Widget.widgets
    found = [w for w in list(registry.values()) if isinstance(w, interactive)]
    records = []
    for widget in found:
        if widget.model_id in seen:
            continue
        seen.add(widget.model_id)
        for control in widget.kwargs_widgets:
            for label, apply in _moves(control):
                start, cpu = time.perf_counter(), time.process_time()
                apply()
                seconds = time.perf_counter() - start
                cpu_seconds = time.process_time() - cpu
                name = control.description or type(control).__name__
                records.append({"function": widget.f.__name__, "control": name, "move": label,
                                "seconds": seconds, "cpu_seconds": cpu_seconds})  # fmt: skip
    return records


def _moves(control: Any) -> list[tuple[str, Any]]:
    """(label, action) pairs that move ``control`` away from its value and back to it."""
    import math

    def setter(name: str, value: Any) -> Any:
        return lambda: setattr(control, name, value)

    default = control.value
    kind = type(control).__name__
    if kind == "SelectMultiple":  # chapter 6's parts: each other option added, then back
        start, labels = tuple(control.index), control._options_labels
        others = [i for i in range(len(labels)) if i not in start]
        moves = [(f"+ {labels[i]}", setter("index", (*start, i))) for i in others]
        return moves + [("-> as it was", setter("index", start))] if moves else []
    if hasattr(control, "index") and hasattr(control, "_options_labels"):  # selections
        start, labels = control.index, control._options_labels
        others = [i for i in range(len(labels)) if i != start]
        if not others:  # a one-option list (chapter 6's target T at its defaults) cannot move
            return []
        moves = [(f"-> {labels[i]}", setter("index", i)) for i in others]
        return moves + [(f"-> {labels[start]}", setter("index", start))]
    if kind == "Checkbox":
        return [(f"-> {not default}", setter("value", not default)),
                (f"-> {default}", setter("value", default))]  # fmt: skip
    if kind == "FloatLogSlider":
        exponent = math.log(default, control.base)
        up = min(exponent + control.step, control.max)
        step = control.base ** (up if up != exponent else exponent - control.step)
        targets = [step, control.base**control.max, control.base**control.min]
    else:  # IntSlider, FloatSlider
        up = min(default + control.step, control.max)
        targets = [up if up != default else default - control.step, control.max, control.min]
    # A move to where the slider already is redraws nothing (chapter 9's T starts at its
    # maximum): left out, so that every timed move is a redraw.
    moves, value = [], default
    for target in [*targets, default]:
        if not math.isclose(target, value):
            moves.append((f"-> {target:.4g}", setter("value", target)))
            value = target
    return moves


KERNEL_SOURCE = "from typing import Any\n\n" + "\n\n".join(
    inspect.getsource(f) for f in (measure_new_widgets, _moves)
)


# --- driving a kernel -----------------------------------------------------------------------


class CellError(RuntimeError):
    """A cell raised (or a widget callback printed a traceback) in the chapter's kernel."""


@contextmanager
def chapter_kernel(workdir: Path) -> Iterator[Any]:
    """A fresh IPython kernel in ``workdir`` (shut down however the block ends)."""
    from jupyter_client.manager import start_new_kernel

    env = {k: v for k, v in os.environ.items() if k not in ("SNNLITE_PROFILE", "SNNLITE_PARAMS")}
    km, kc = start_new_kernel(kernel_name="python3", startup_timeout=120, cwd=str(workdir),
                              env=env)  # fmt: skip
    try:
        yield kc
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def run(kc: Any, code: str, timeout: float = CELL_TIMEOUT, shown: list | None = None) -> str:
    """Execute ``code``; return its text output. Any traceback, even a widget's, raises.

    ``shown`` collects the MIME types of what the code displayed (the redrawn figures).
    """
    texts: list[str] = []
    errors: list[str] = []

    def hook(msg: dict) -> None:
        kind, content = msg["msg_type"], msg["content"]
        if kind == "stream" and content["name"] == "stdout":
            texts.append(content["text"])
        elif kind == "error":
            errors.append("\n".join(content["traceback"]))
        elif kind == "display_data" and shown is not None:
            data = content["data"]  # a figure: image/png (+ text/plain); a table: text/markdown
            shown.append("image/png" if "image/png" in data else max(data))

    reply = kc.execute_interactive(code, timeout=timeout, output_hook=hook, allow_stdin=False)
    if errors or reply["content"]["status"] != "ok":
        raise CellError("\n".join(errors) or str(reply["content"]))
    return "".join(texts)


def bench_chapter(name: str) -> dict[str, Any]:
    """Run chapter ``name`` at its default parameters; time every move of every widget."""
    import nbformat

    nb = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    cells = [c.source for c in nb.cells if c.cell_type == "code"]
    last = max(i for i, source in enumerate(cells) if WIDGET_CELL in source)
    records: list[dict[str, Any]] = []
    shown: list[str] = []
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:
        shutil.copy(NOTEBOOKS / "params.yml", tmp)
        start = time.perf_counter()
        with chapter_kernel(Path(tmp)) as kc:
            run(kc, KERNEL_SOURCE + "\n_bench_seen = set()")
            for source in cells[: last + 1]:
                run(kc, source)
                if WIDGET_CELL in source:
                    code = "import json; print(json.dumps(measure_new_widgets(_bench_seen)))"
                    out = run(kc, code, shown=shown)
                    records += json.loads(out.strip().splitlines()[-1])
        setup = time.perf_counter() - start - sum(r["seconds"] for r in records)
    # Every move redraws: as many displays as moves (a figure, or chapter 9's table).
    return {"chapter": name, "run_seconds": setup, "moves": records, "displays": len(shown),
            "load_average": round(os.getloadavg()[0], 2)}  # fmt: skip


# --- reporting ------------------------------------------------------------------------------


def summary(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per widget: number of moves, median and slowest move, and the slowest control."""
    rows = []
    for chapter in sorted(results, key=lambda c: c["chapter"]):
        functions = dict.fromkeys(r["function"] for r in chapter["moves"])
        for function in functions:
            moves = [r for r in chapter["moves"] if r["function"] == function]
            slowest = max(moves, key=lambda r: r["seconds"])
            rows.append({
                "chapter": chapter["chapter"], "widget": function, "moves": len(moves),
                "median_s": statistics.median(r["seconds"] for r in moves),
                "max_s": slowest["seconds"],
                "max_cpu_s": max(r.get("cpu_seconds", math.nan) for r in moves),
                "slowest_move": f'{slowest["control"]} {slowest["move"]}',
                "load_average": chapter["load_average"],
            })  # fmt: skip
    return rows


def write(results: list[dict[str, Any]], machine: dict[str, Any], pending: list[str]) -> None:
    """bench/widgets.json (every move) and bench/widgets.md (the table)."""
    rows = summary(results)
    data = {"machine": machine, "target_seconds": TARGET_SECONDS, "pending": pending,
            "widgets": rows, "chapters": results}  # fmt: skip
    (ROOT / "bench" / "widgets.json").write_text(json.dumps(data, indent=1) + "\n")
    (ROOT / "bench" / "widgets.md").write_text(markdown(rows, machine, pending))


def markdown(rows: list[dict[str, Any]], machine: dict[str, Any], pending: list[str]) -> str:
    """The table of bench/widgets.md, with the command that regenerates it."""
    lines = [
        "# Widget redraw times",
        "",
        "Written by `.venv/bin/python bench/bench_widgets.py` (do not edit by hand; raw numbers",
        "in `widgets.json`). Each chapter runs in a fresh kernel at its default parameters; every",
        "control of every widget is moved (sliders: one step, max, min, back; selections: every",
        "option; a multiple selection: each other option added, then back), and each move is",
        "timed until the redrawn output has been sent.",
        f"Target: every move under {TARGET_SECONDS:g} s on a 2-core laptop. *load*: the",
        "machine's 1-minute load average when the chapter's moves ended (above the CPU count,",
        "other work shared the cores and the times are longer than on an idle laptop).",
        "*slowest CPU*: the kernel's CPU time in its costliest move, which the load hardly",
        "changes: about what that move takes on an idle core.",
        "",
        f"Machine: {machine['cpus']} CPUs, {machine['platform']}, Python {machine['python']}, "
        f"torch {machine['torch']}; load average {machine['load_before']} before the run; "
        f"{machine['date']}.",
        "",
        "| chapter | widget | moves | median (s) | slowest (s) | slowest move | slowest CPU (s) "
        "| load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        flag = "" if r["max_s"] <= TARGET_SECONDS else " **over target**"
        cells = [r["chapter"], f"`{r['widget']}`", r["moves"], f"{r['median_s']:.3f}",
                 f"{r['max_s']:.3f}{flag}", r["slowest_move"], f"{r['max_cpu_s']:.3f}",
                 r["load_average"]]  # fmt: skip
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    if pending:
        lines += ["", f"Not measured yet (the run was stopped): {', '.join(pending)}."]
    return "\n".join(lines) + "\n"


def machine_info() -> dict[str, Any]:
    """Where the numbers were taken (they are absolute times, so the machine matters)."""
    import torch

    return {
        "cpus": os.cpu_count(), "platform": platform.platform(terse=True),
        "python": platform.python_version(), "torch": torch.__version__,
        "load_before": " ".join(f"{x:.2f}" for x in os.getloadavg()),
        "date": time.strftime("%Y-%m-%d %H:%M %Z"),
    }  # fmt: skip


def chapters_with_widgets() -> list[str]:
    """Every notebook of notebooks/ with an ``interact`` cell, in chapter order."""
    return sorted(p.stem for p in NOTEBOOKS.glob("[0-9]*.ipynb") if WIDGET_CELL in p.read_text())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("chapters", nargs="*", help="notebook names (default: all with widgets)")
    parser.add_argument("--no-write", action="store_true", help="print only, write no files")
    args = parser.parse_args(argv)
    machine = machine_info()
    chapters = args.chapters or chapters_with_widgets()
    results: list[dict[str, Any]] = []
    for name in chapters:
        results.append(bench_chapter(name))
        for row in summary(results[-1:]):  # as it goes: a full run takes a while
            print(f"{name}: ran in {results[-1]['run_seconds']:.0f} s; {row['widget']}: "
                  f"median {row['median_s']:.3f} s, slowest {row['max_s']:.3f} s "
                  f"({row['slowest_move']})", file=sys.stderr, flush=True)  # fmt: skip
        if not args.no_write:  # after every chapter, so a stopped run keeps what it measured
            write(results, machine, pending=chapters[len(results) :])
    rows = summary(results)
    print(markdown(rows, machine, pending=[]))
    return 0 if all(r["max_s"] <= TARGET_SECONDS for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
