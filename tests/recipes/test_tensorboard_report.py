"""The recipes' TensorBoard extras: NaNGuard's Markdown, and the layouts of the rows' and figures' runs merged."""

from gradguard.callbacks.tensorboard_writer import LOGGER_CATEGORY, LOGGER_LAYOUT, SummaryWriter, layout_summary
from gradguard.recipes.epoch_summary import LAYOUT
from gradguard.recipes.tensorboard_report import guard_markdown, write_figures


def test_guard_markdown_makes_a_paragraph_of_each_part_of_the_message():
    event = {"step": 12, "message": "Step 12: NaNGuard caught gradient spike: cause learning_rate, action stop.\n"
                                    "  What: the norm was 5.3e5.\n  Cause: learning_rate (x).\n  Cure: lr 0.01."}
    assert guard_markdown(event) == ("**Step 12: NaNGuard caught gradient spike: cause learning_rate, action stop.**"
                                     "\n\nWhat: the norm was 5.3e5.\n\nCause: learning_rate (x).\n\nCure: lr 0.01.")
    # The replays in words, the seconds rounded (not a tuple of dicts).
    replayed = {**event, "replays": ({"change": "as_given", "loss": 0.6723437, "loss_after": 3.4548, "finite": True},
                                     {"change": "lr_x0.1", "loss": 0.6723437, "loss_after": float("inf"),
                                      "finite": False}),
                "replay_seconds": 1.2865768949995982}
    assert guard_markdown(replayed).endswith("\n\nReplays: as given 0.672 -> 3.45; lr x0.1 0.672 -> inf (non-finite)"
                                             "\n\nReplay seconds: 1.3 s")
    # An event without a message (an older report) gives its fields.
    old = {"step": 3, "action": "stop", "trigger": "nonfinite_gradient", "detail": "NaN in dense/kernel",
           "cause": "bad_data", "cure": "clean the data"}
    assert guard_markdown(old) == ("**Step 3: NaNGuard stop (nonfinite_gradient)**\n\nDetail: NaN in dense/kernel"
                                   "\n\nCause: bad_data\n\nCure: clean the data")


def test_a_logger_layout_in_every_row_and_the_recipes_layout_merge_log10_first(tmp_path):
    """If GradientNormLogger writes its own layout in each row's run, the merged view still opens on log10."""
    from tests.callbacks.helpers import custom_scalars_layout

    for run in ("exploded/a-seed0", "stable/b-seed0"):
        writer = SummaryWriter(str(tmp_path / run))
        writer.add(layout_summary(), 0)  # the line GradientNormLogger would add
        writer.close()
    write_figures(tmp_path)  # the recipes' layout, in the figures run
    layout = custom_scalars_layout(tmp_path)
    first = layout["category"][0]
    assert first["title"] == LOGGER_CATEGORY and "log10" in first["chart"][0]["title"]
    charts = {c["title"] for category in layout["category"] for c in category["chart"]}
    expected = {chart for category in (LAYOUT, LOGGER_LAYOUT) for charts_ in category.values()
                for chart, _ in charts_}
    assert charts == expected
    titles = [c["title"] for c in first["chart"]]
    assert len(titles) == len(set(titles))  # the log10 chart both layouts carry is drawn once
