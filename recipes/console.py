"""What a recipe prints: a quiet start, a row counter with an ETA, a compact table.

TensorFlow prints about ten lines when it loads and first looks for a GPU
(`WARNING: All log messages before absl::InitializeLog() ...`, `Could not
find cuda drivers`, `failed call to cuInit`, CPU feature notes), twice for
some of them. Its C++ logging writes them before any Python setting applies
(`TF_CPP_MIN_LOG_LEVEL` does not reach the lines absl prints before it is
initialized), so `quiet_start` sets `TF_CPP_MIN_LOG_LEVEL=2` and absl's
Python log level to errors, then loads the Keras backend with file
descriptor 2 captured, and writes back every captured line that is not one
of those start-up notes. A user who set `TF_CPP_MIN_LOG_LEVEL` sees
everything, as TensorFlow prints it.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import math
import os
import re
import sys
import tempfile
import textwrap
import warnings
from collections.abc import Mapping, Sequence

import pandas as pd

WIDTH = 120  # no line the package prints is wider (a 120-column terminal)

# Lines TensorFlow, XLA and CUDA's stubs print while loading on any machine.
STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IW]\d{4} [\d:. ]+\d+ \S+\.cc:\d+\] .*"
    r"|E\d{4} [\d:. ]+\d+ (cuda_\w+|cudart_stub|cuda_platform)\.cc:\d+\] .*"
    r"|To enable the following instructions: .*, in other operations, rebuild TensorFlow .*"
    r"|.*oneDNN custom operations are on.*)$")


@contextlib.contextmanager
def quiet_startup():
    """Drops TensorFlow's start-up notes from stderr inside the block.

    Does nothing when the user set `TF_CPP_MIN_LOG_LEVEL`. Lines that are not
    start-up notes are written back to stderr when the block ends.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"  # TensorFlow's own INFO and WARNING lines
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            kept = [line for line in captured.read().decode(errors="replace").splitlines()
                    if line.strip() and not STARTUP_NOISE.match(line)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def quiet_start() -> str:
    """Loads the Keras backend quietly, finds the device; returns its name.

    Unless the user set `TF_CPP_MIN_LOG_LEVEL`, absl's Python log level
    (TensorFlow's `WARNING:tensorflow:` lines) is set to errors too.
    """
    user_set = "TF_CPP_MIN_LOG_LEVEL" in os.environ
    with quiet_startup():
        import keras  # noqa: F401  (loads the backend: TensorFlow by default)

        from .common import device_name

        name = device_name()  # the first device query: where CUDA is tried
        if keras.backend.backend() != "tensorflow" and importlib.util.find_spec("tensorflow"):
            # Keras' data adapters load TensorFlow in the first fit when it is
            # installed, whatever the backend: load it here, in the quiet.
            import tensorflow  # noqa: F401
    if keras.backend.backend() == "jax":
        # JAX runs in 32 bits unless told otherwise; Keras asks for int64
        # step counters anyway and JAX warns on every new model (each row).
        warnings.filterwarnings("ignore", message=r"Explicitly requested dtype int64 requested in asarray")
    if not user_set:
        # TensorFlow's Python warnings (`WARNING:tensorflow:`), such as the
        # retracing note every row's new model triggers, go through the
        # `tensorflow` logger; absl's through absl.
        logging.getLogger("tensorflow").setLevel(logging.ERROR)
        try:
            from absl import logging as absl_logging

            absl_logging.set_verbosity(absl_logging.ERROR)
        except ImportError:  # a JAX- or PyTorch-only install may lack absl
            pass
    return name


def wrap(text: str, width: int = WIDTH, indent: str = "  ") -> str:
    """`text` with every line at most `width` characters, continued under `indent`.

    Breaks only at spaces (a path or a number is never cut), so a single
    word longer than `width` stays whole on its own line.
    """
    return "\n".join(
        textwrap.fill(line, width, subsequent_indent=indent + " " * (len(line) - len(line.lstrip())),
                      break_long_words=False, break_on_hyphens=False) if len(line) > width else line
        for line in text.split("\n"))


def text_table(frame, last: str, width: int = WIDTH) -> str:
    """`frame` as aligned text columns within `width`, column `last` at the end, wrapped.

    Numbers take 4 significant digits; the other columns keep their
    width; the text of `last` (a cure's name, say) is wrapped into what is
    left of each line (at least 30 characters) and continues under itself.
    """
    def cell(value) -> str:
        if isinstance(value, bool) or value is None:
            return "" if value is None else str(value)
        if isinstance(value, float):
            return "" if math.isnan(value) else f"{value:.4g}"
        return str(value)

    columns = [c for c in frame.columns if c != last]
    cells = [[cell(v) for v in frame[c].tolist()] for c in columns]
    widths = [max([len(c), *map(len, col)]) for c, col in zip(columns, cells)]
    words = [all(isinstance(v, str) for v in frame[c].tolist() if v is not None) for c in columns]
    left = sum(widths) + 2 * len(widths)
    room = max(30, width - left)

    def line(values) -> str:  # text to the left, numbers to the right
        return "  ".join(v.ljust(w) if word else v.rjust(w) for v, w, word in zip(values, widths, words)) + "  "

    lines = [line(columns) + last]
    for i, text in enumerate(frame[last].tolist()):
        front = line([col[i] for col in cells])
        parts = textwrap.wrap(str(text), room, break_long_words=False, break_on_hyphens=False) or [""]
        lines.append(front + parts[0])
        lines += [" " * left + part for part in parts[1:]]
    return "\n".join(line.rstrip() for line in lines)


def terminal(markdown: str, width: int = WIDTH) -> str:
    """A Markdown report as it should print in a `width`-column terminal.

    Prose lines are wrapped (`wrap`). A table that fits stays as it is;
    a wider one prints one block per row: the row's leading text cells
    joined by ` / ` on a line, then `column value` pairs (empty cells left
    out), wrapped under a 4-space indent. The file a benchmark writes keeps
    the Markdown; this is only what the console shows.
    """
    out, lines, i = [], markdown.split("\n"), 0
    while i < len(lines):
        if not lines[i].startswith("|"):
            out.append(wrap(lines[i], width, "  " if re.match(r"\s*[-*] ", lines[i]) else ""))
            i += 1
            continue
        block = []
        while i < len(lines) and lines[i].startswith("|"):
            block.append(lines[i])
            i += 1
        if max(map(len, block)) <= width or len(block) < 2:
            out += block
            continue
        split = lambda line: [c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]  # noqa: E731
        header, rows = split(block[0]), [split(line) for line in block[1:]
                                         if not re.fullmatch(r"\|[\s:|-]*\|", line.strip())]
        numeric = re.compile(r"^[-+<>=~ ]*[\d.]+(e[-+]?\d+)?[%x]?( ?[-/] ?[\d.]+)?$|^(nan|inf|-inf|)$")
        lead = 0  # the leading text columns name the row
        while lead < min(2, len(header) - 1) and not all(numeric.match(r[lead]) for r in rows if len(r) > lead):
            lead += 1
        lead = max(lead, 1)
        for row in rows:
            out.append(wrap(" / ".join(row[:lead]), width))
            pairs = [f"{h} {v}" for h, v in zip(header[lead:], row[lead:]) if v]
            out.append(textwrap.fill("; ".join(pairs), width, initial_indent="    ", subsequent_indent="    ",
                                     break_long_words=False, break_on_hyphens=False))
    return "\n".join(out)


def duration(seconds: float) -> str:
    """`42 s`, `3 min 05 s` or `1 h 02 min`."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def time_left(spent: Mapping[str, tuple[float, int]], kinds_left: Sequence[str], epochs: int) -> float | None:
    """Seconds the rows still to train take at most, from the rows measured so far.

    Rows of one kind (a recipe's cell or set-up: an LSTM epoch costs more
    than a SimpleRNN's) are timed together: each row left runs `epochs`
    epochs at the measured seconds per epoch of its kind, or at the mean
    over every kind measured when its own has not run yet.

    Args:
        spent: Kind -> (seconds, epochs) of the rows trained so far in this process.
        kinds_left: The kind of each row still to train, this one included.
        epochs: Epochs per row at most (NaNGuard may stop a row earlier).

    Returns:
        The seconds, or None before any epoch was measured.
    """
    seconds, done = sum(s for s, _ in spent.values()), sum(e for _, e in spent.values())
    if not done:
        return None
    rate = {kind: s / e for kind, (s, e) in spent.items() if e}
    return sum(rate.get(kind, seconds / done) * epochs for kind in kinds_left)


def progress_line(index: int, total: int, name: str, elapsed: float, epochs_done: int,
                  epochs_left: int, left: float | None = None) -> str:
    """`[3/14] baseline-lstm-seed0  (2 min 10 s so far, about 5 min 03 s left)`.

    The time left assumes every epoch still to run takes as long as the
    epochs run so far in this process did on average (a row NaNGuard stops
    early counts only the epochs it ran).

    Args:
        index: 1-based number of the row about to train.
        total: Rows in the table.
        name: The row's name.
        elapsed: Seconds spent on the rows trained so far in this process.
        epochs_done: Epochs those rows ran.
        epochs_left: Epochs at most still to run, this row's included.
        left: Seconds left, measured per kind of row (`time_left`). Defaults
            to `None`: the mean epoch time so far x `epochs_left`.
    """
    if left is None and epochs_done:
        left = elapsed / epochs_done * epochs_left
    eta = f", about {duration(left)} left" if left is not None else ""
    return f"[{index}/{total}] {name}  ({duration(elapsed)} so far{eta})"


# The console table: (column, header), most telling first; the last ones are
# dropped first when the table is wider than `width`.
CONSOLE_COLUMNS = [
    ("variant", "variant"), ("cell", "cell"), ("seed", "seed"), ("seeds", "seeds"),
    ("learned", "learned"), ("exploded", "exploded"), ("exploded_step", "exploded@"), ("val/trivial", "val/trivial"),
    ("learned_epoch", "learned@ep"), ("max_grad_norm", "max |g|"),
    ("median_grad_norm", "median |g|"), ("val_loss", "val_loss"), ("learning_rate", "lr"),
    ("nan_guard", "NaNGuard"), ("epochs_run", "epochs"), ("wall_time_s", "time s"),
]


def console_table(table: pd.DataFrame, width: int = 120) -> str:
    """The results as a compact text table at most `width` characters wide.

    Numbers have 3 significant digits, missing values are blank, `learned`
    reads `yes` or blank, NaNGuard's cell shows its action and step, and the
    seed column appears only with several seeds. Columns are dropped from
    the end of `CONSOLE_COLUMNS` until the table fits.
    """
    columns = [(c, h) for c, h in CONSOLE_COLUMNS if c in table.columns
               and (c != "seed" or table["seed"].nunique() > 1)]
    cells = {h: [_cell(c, v) for v in table[c]] for c, h in columns}
    left = {h for c, h in columns if c in ("variant", "cell", "nan_guard")}
    while True:
        sizes = {h: max(len(h), *map(len, v)) for h, v in cells.items()}
        lines = [" ".join(h.ljust(sizes[h]) if h in left else h.rjust(sizes[h]) for h in cells)]
        lines += [" ".join(v[i].ljust(sizes[h]) if h in left else v[i].rjust(sizes[h])
                           for h, v in cells.items()) for i in range(len(table))]
        text = "\n".join(line.rstrip() for line in lines)
        if max(map(len, text.splitlines())) <= width or len(cells) <= 4:
            return text
        cells.pop(list(cells)[-1])


def _cell(column: str, value) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return ""
    if column == "nan_guard":
        return "" if value == "none" else re.sub(r" at step (\d+) \([^)]*\)", r"@\1", str(value))
    if isinstance(value, str):
        return value  # e.g. "2/3" learned over seeds
    if column == "learned":
        return "yes" if bool(value) else ""
    if isinstance(value, (int,)) or (hasattr(value, "is_integer") and column in (
            "seed", "exploded_step", "learned_epoch", "epochs_run")):
        return str(int(value))
    value = float(value)
    if not math.isfinite(value):
        return str(value)
    if column == "wall_time_s":
        return f"{value:.0f}"
    return f"{value:.3g}"
