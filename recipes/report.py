"""What a recipe's `main` does around its `run`: resume, report, interrupt, errors.

`run_main` parses the flags (or, with `--resume DIR`, takes every setting
from `DIR/config.json`), opens the run folder, calls the recipe's
`run(config, out_dir)`, prints the table and the summary, and only then
draws the figures. SIGINT and SIGTERM end the run with one line saying how
to resume it; an unwritable or full folder ends it with the path named, and
every finished row stays in `results.csv`.

Everything that loads Keras is imported inside the functions, so `--help`
and a bad flag answer before TensorFlow loads; TensorFlow then loads
quietly (`console.quiet_start`).
"""

from __future__ import annotations

import pathlib
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence

import pandas as pd

from .cli import help_description, program
from .common import new_run_dir, parse_config
from .console import console_table, quiet_start, wrap
from .resume import STOPPING, RunFolderBusy, check_stop, count_rows, interrupted_advice
from .run_files import RunFolderInvalid, markdown_table, write_atomic

SHOWN = ["variant", "cell", "seed", "optimizer", "learning_rate", "val_loss", "val/trivial",
         "learned", "learned_epoch", "exploded_step", "max_grad_norm", "median_grad_norm",
         "nan_guard", "epochs_run", "wall_time_s"]


def write_report(table: pd.DataFrame, out_dir: pathlib.Path, *, caption: str, title: str) -> pd.DataFrame:
    """Writes results.md and summary.txt; returns the table with `attrs` filled.

    `attrs`: `summary` (lines), `spread` (`analysis.spread_table`),
    `threshold` (the suggested clipping threshold), `title`, `out_dir`.
    """
    from . import analysis

    norms = analysis.load_norms(out_dir, table)
    threshold, used = analysis.suggest_clip_threshold(table, norms)
    summary = analysis.summarize(table, threshold, used, analysis.guard_reports(out_dir, table))
    spread = analysis.spread_table(table)
    shown = table[SHOWN]
    text = f"{caption}\n\n"
    if table["seed"].nunique() > 1:
        text += f"Mean and min..max over seeds:\n\n{markdown_table(spread)}\n"
    text += (f"Every row:\n\n{markdown_table(shown)}\nSummary:\n\n"
             + "".join(f"- {line}\n" for line in summary))
    if table["seed"].nunique() == 1 and analysis.effects(table):
        text += ("\nEffect of each factor (one seed: the spread is unknown, so none is called real):\n\n"
                 + "".join(f"- {analysis.effect_line(e)}\n" for e in analysis.effects(table)))
    write_atomic(out_dir / "results.md", text)
    write_atomic(out_dir / "summary.txt", "\n".join(summary) + "\n")
    table.attrs.update(summary=summary, spread=spread, threshold=threshold, title=title,
                       out_dir=str(out_dir))
    return table


def plot_report(table: pd.DataFrame) -> list[pathlib.Path]:
    """Writes first_steps.png, grad_norms.png, loss.png and gradient_flow.png from the rows on disk.

    The figures also go to TensorBoard as images (`tensorboard/figures`,
    `tensorboard_report.write_figures`). Returns the PNG files written.
    """
    from . import analysis, gradient_flow, plots
    from .experiment import LEARNED_RATIO
    from .tensorboard_report import write_figures

    out_dir = pathlib.Path(table.attrs["out_dir"])
    names = analysis.load_norms(out_dir, table)
    losses = {n: pd.read_csv(out_dir / "rows" / n / "losses.csv") for n in names}
    written = [
        plots.plot_first_steps(table, names, out_dir / "first_steps.png", title=table.attrs["title"]),
        plots.plot_grad_norms(table, names, out_dir / "grad_norms.png", title=table.attrs["title"],
                              threshold=table.attrs["threshold"]),
        plots.plot_losses(table, losses, out_dir / "loss.png", title=table.attrs["title"],
                          trivial_mse=float(table["trivial_mse"].iloc[0]), learned_ratio=LEARNED_RATIO)]
    layers = {n: out_dir / "rows" / n / "layer_norms.csv" for n in names}
    flows = {n: gradient_flow.gradient_flow(pd.read_csv(p)) for n, p in layers.items()
             if p.is_file() and p.stat().st_size > 1}  # rows trained before layer_norms.csv existed: none
    flows = {n: f for n, f in flows.items() if f.layers}
    if flows:
        written.append(gradient_flow.plot_gradient_flows(
            flows, out_dir / "gradient_flow.png",
            title=f"{table.attrs['title']}: gradient norm per layer and step (red: NaN/inf)"))
    write_figures(out_dir / "tensorboard", written)
    return written


def _python_command() -> str:
    """`python` when that is this Python on PATH, else this Python's path (a venv not activated)."""
    import shutil

    found = shutil.which("python")
    if found and pathlib.Path(found).resolve() == pathlib.Path(sys.executable).resolve():
        return "python"
    return sys.executable


def _tensorboard_command() -> str:
    """`tensorboard`, or its path beside this Python when that is not on PATH (a venv)."""
    import shutil

    found = shutil.which("tensorboard")
    beside = pathlib.Path(sys.executable).parent / "tensorboard"
    if found and pathlib.Path(found).resolve() == beside.resolve():
        return "tensorboard"
    return str(beside) if beside.exists() else "tensorboard"


class _Interrupted(KeyboardInterrupt):
    """Raised by the SIGTERM handler, so SIGTERM ends a run like Ctrl-C."""



def _on_sigterm(signum, frame):
    # A second SIGTERM while the first is being handled must not cut that
    # short (a raw traceback): neither once run_main handles it ("now") nor
    # within a second of the first, while its exception may still be
    # unwinding through TensorFlow. A later one raises again, in case the
    # first was swallowed (the row loop also checks the flag between rows).
    now = time.monotonic()
    first = STOPPING.get("first")
    STOPPING["requested"] = True
    if STOPPING["now"] or (first is not None and now - first < 1.0):
        return
    STOPPING["first"] = now
    raise _Interrupted()


def _redeliver(unraisable):
    """Sends SIGTERM again when Python swallowed its exception (in a gc callback)."""
    if isinstance(unraisable.exc_value, _Interrupted):
        threading.Timer(0.01, os.kill, (os.getpid(), signal.SIGTERM)).start()
        return
    STOPPING["hook"](unraisable)


def _interrupted(out_dir, prog: str) -> None:
    STOPPING["now"] = True
    done = count_rows(out_dir / "results.csv") if out_dir else 0
    print(f"\nInterrupted: {done} finished row{'s' * (done != 1)} saved in {out_dir}/results.csv; "
          f"finish the run with: {prog} --resume {out_dir}", file=sys.stderr)
    raise SystemExit(130) from None


def _fail(prog: str, message: str, code: int) -> None:
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def show_rows(table: pd.DataFrame, out_dir: pathlib.Path) -> None:
    """Prints a sweep's table (and spread) and summary, then draws its figures."""
    print("\n" + console_table(table))
    if table["seed"].nunique() > 1:
        print("\nMean and min..max over seeds:")
        print(console_table(table.attrs["spread"]))
    print("\n".join(["", "Summary:", *(wrap(f"- {line}") for line in table.attrs["summary"])]))
    figures = plot_report(table)
    print("\n".join(closing_lines(out_dir, figures)))


def closing_lines(out_dir: pathlib.Path, figures: Sequence[pathlib.Path] = (), prefix: str = "") -> list[str]:
    """Where the results are, every path absolute: table, figures, the TensorBoard command.

    Each line starts with `prefix` and is wrapped at 120 characters.
    """
    out = pathlib.Path(out_dir).resolve()
    lines = [f"Results in {out}: results.md, results.csv, summary.txt"]
    if figures:
        lines.append(f"Figures: {', '.join(str(pathlib.Path(p).resolve()) for p in figures)}")
    lines.append("TensorBoard (it opens on the figures, charts/; NaNGuard's words in its Text tab; untick "
                 "\"Ignore outliers in chart scaling\" in Scalars and in Time Series, on by default, or the "
                 "scalar charts hide the explosion):")
    lines = [wrap(prefix + line) for line in lines]
    # The command stays on one line, to be copied whole.
    return [*lines, f"{prefix}  {_tensorboard_command()} --logdir {out / 'tensorboard'}"]


def run_main(config_cls: type, argv: Sequence[str] | None, run: Callable[..., pd.DataFrame],
             doc: str | None, *, show: Callable[[pd.DataFrame, pathlib.Path], None] = show_rows,
             ) -> pd.DataFrame:
    """Parses flags (`cli.parse_config`), runs, then shows the table (`show_rows`).

    `run(config, out_dir)` trains and returns the table; `config_cls.NAME`
    names the recipe. Exits with code 2 on a bad flag, 130 after SIGINT or
    SIGTERM (with one line saying how to resume), and 1 when the results
    folder cannot be written (naming the path).
    """
    name = config_cls.NAME
    prog = program(f"recipes.{name}")  # or gradguard.recipes.<name>, as the user ran it
    command = f"{_python_command()} -m {prog.split()[-1]}"  # what to type to resume
    config = parse_config(config_cls, argv, description=help_description(doc, f"recipes.{name}"),
                          prog=prog)  # resumes with --resume
    STOPPING["now"] = STOPPING["requested"] = False
    STOPPING["first"] = None
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    STOPPING["hook"], sys.unraisablehook = sys.unraisablehook, _redeliver
    out_dir = None
    try:
        quiet_start()  # TensorFlow loads here, after the flags were read
        out_dir = pathlib.Path(config.resume) if config.resume else new_run_dir(config.out, name)
        table = run(config, out_dir)
        check_stop()  # a SIGTERM during the last row: resume writes the report
        show(table, out_dir)
        return table
    except KeyboardInterrupt:
        _interrupted(out_dir, command)
    except Exception as error:
        # A SIGTERM's exception raised inside a C extension (TensorFlow's)
        # can come out as another exception: after a SIGTERM, any is one.
        if STOPPING["requested"]:
            _interrupted(out_dir, command)
        if not isinstance(error, OSError):
            raise
        # RunFolderError, or a row's own folder or TensorBoard files
        kept = "" if isinstance(error, (RunFolderBusy, RunFolderInvalid)) else \
            interrupted_advice(out_dir, prog)
        _fail(prog, f"{error}{kept}", 1)
    finally:
        # A command-line run that is exiting after an interrupt ignores a
        # second SIGTERM (sent a millisecond after the first, it would
        # otherwise kill the exiting process with -15 after the resume line);
        # a caller in the same process (argv given) gets its handler back.
        exiting = STOPPING["now"] and argv is None
        signal.signal(signal.SIGTERM, signal.SIG_IGN if exiting else previous)
        sys.unraisablehook = STOPPING["hook"]
        STOPPING["now"] = STOPPING["requested"] = False
        STOPPING["first"] = None
