"""What TensorBoard shows of a recipe's run as it opens: figures, NaNGuard events, runs in order.

TensorBoard's scalar charts hide an explosion by default ("Ignore outliers
in chart scaling" is ticked in Scalars and in Time Series), and no chart
says what NaNGuard did. So each run also carries what needs no click:

- the run's figures (`grad_norms.png`, `loss.png`, `gradient_flow.png`) as
  image summaries in a run of their own, `tensorboard/figures`: the Images
  tab opens on them (the same run holds the custom-scalars layout);
- each NaNGuard event as a text summary `nan_guard` in its row's run, at the
  step it acted (what happened, the cause, the cure, where the weights are);
- the rows' runs under `exploded/`, `learned/` and `stable/`
  (`experiment.RUN_GROUPS`), so the broken rows sort together and take
  TensorBoard's first colours.

Everything goes through `callbacks.tensorboard_writer` (tensorboard's own
event writer, no TensorFlow graph), so it works on every Keras backend.
"""

from __future__ import annotations

import os
import pathlib
from collections.abc import Sequence

from gradguard.callbacks.tensorboard_writer import SummaryWriter, image_summary, text_summary

from .run_files import RunFolderError
from .safe_paths import remove_inside

FIGURES_RUN = "figures"  # tensorboard/figures: the run's PNG figures, step 0
FIGURE_TAG = "charts/{}"  # image tag of figure <stem>: "charts" sorts before Keras' "epoch_loss",
# so Time Series, which groups cards by tag prefix in name order, opens on the figures
GUARD_TAG = "nan_guard"  # text tag of NaNGuard's events in a row's run


def guard_markdown(event) -> str:
    """One NaNGuard event as Markdown: the headline in bold, then one paragraph per part.

    Uses the event's `message` (`Step N: NaNGuard caught ...` and its
    indented `What:`, `Cause:`, `Cure:`, `Weights:` lines); an event
    without one gives its action, step, detail, cause, evidence and cure.
    """
    event = event.to_dict() if hasattr(event, "to_dict") else dict(event)  # a NaNEvent, or its JSON
    message = str(event.get("message") or "").strip()
    if message:
        head, *rest = message.splitlines()
        parts = [line.strip() for line in rest if line.strip()]
    else:
        head = f"Step {event.get('step')}: NaNGuard {event.get('action', '')} ({event.get('trigger', '')})"
        parts = [f"{key.capitalize()}: {event[key]}" for key in ("detail", "cause", "evidence", "cure")
                 if event.get(key)]
    replay = [f"{key.replace('_', ' ').capitalize()}: {_replay_text(value)}" for key, value in event.items()
              if "replay" in key and value not in (None, "", [], {})]
    return "\n\n".join([f"**{head.strip()}**", *parts, *replay])


def _replay_text(value) -> str:
    """An event's replays in words (`as given 0.672 -> 3.45; lr x0.1 ...`), seconds as `1.3 s`."""
    if isinstance(value, float):
        return f"{value:.2g} s"
    if isinstance(value, (list, tuple)) and all(isinstance(r, dict) and "change" in r for r in value):
        return "; ".join(
            f"{str(r['change']).replace('_', ' ')} {r.get('loss', float('nan')):.3g} -> "
            f"{r.get('loss_after', float('nan')):.3g}" + ("" if r.get("finite", True) else " (non-finite)")
            for r in value)
    return str(value)


def _write(folder: pathlib.Path, items: Sequence[tuple], owner: str) -> None:
    """Writes `(summary, step)` items to a new event file in `folder`; a failure names the folder."""
    try:
        writer = SummaryWriter(str(folder), owner=owner)
    except ValueError as error:
        raise RunFolderError(str(error)) from None
    for summary, step in items:
        writer.add(summary, step)
    writer.close()
    if writer.error is not None:
        raise RunFolderError(f"could not write TensorBoard events to {str(folder)!r}: {writer.error.reason}; "
                             "free space or fix the folder's permissions.")


def write_guard_events(run_dir: str | os.PathLike, events: Sequence) -> None:
    """Writes each NaNGuard event as a `nan_guard` text summary at its step in `run_dir`."""
    if events:
        _write(pathlib.Path(run_dir), [(text_summary(GUARD_TAG, guard_markdown(e)), int(e["step"]))
                                       for e in events], "NaNGuard's TensorBoard text")


def write_images(run_dir: str | os.PathLike, images: Sequence[str | os.PathLike], step: int = 0) -> None:
    """Writes PNG files as image summaries `charts/<file stem>` at `step` to a new event file in `run_dir`."""
    _write(pathlib.Path(run_dir), [(image_summary(FIGURE_TAG.format(pathlib.Path(p).stem),
                                                  pathlib.Path(p).read_bytes()), step) for p in images],
           "the doctor's TensorBoard images")


def write_figures(tensorboard_dir: str | os.PathLike, figures: Sequence[str | os.PathLike] = ()) -> pathlib.Path:
    """Writes the recipes' layout and PNG figures to `<tensorboard_dir>/figures`, replacing what was there.

    The custom-scalars layout (`epoch_summary.LAYOUT`) goes here, once, so
    that it is there from the first row on (call this with no figures
    before training) and no row's run holds two layouts.

    Args:
        tensorboard_dir: The folder given to `tensorboard --logdir`.
        figures: PNG files; each becomes the image `charts/<file stem>` at
            step 0. Defaults to none.

    Returns:
        The figures run's folder.
    """
    from .epoch_summary import layout_summary

    folder = pathlib.Path(tensorboard_dir) / FIGURES_RUN
    remove_inside(tensorboard_dir, folder)  # a resumed run draws its figures again; never through a link
    items = [(layout_summary(), 0)]
    items += [(image_summary(FIGURE_TAG.format(pathlib.Path(p).stem), pathlib.Path(p).read_bytes()), 0)
              for p in figures]
    _write(folder, items, "the recipe's TensorBoard figures")
    return folder
