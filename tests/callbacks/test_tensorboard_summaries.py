"""tensorboard_writer's image, text and layout summaries, read back as TensorBoard reads them."""

import io
import json

import numpy as np
import pytest

from gradguard.callbacks.tensorboard_writer import (
    LOGGER_LAYOUT, SummaryWriter, image_summary, layout_summary, text_summary,
)


def _png(height=5, width=7):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    plt.imsave(buffer, np.random.default_rng(0).random((height, width)), format="png")
    return buffer.getvalue()


def test_text_summary_is_tensorboards_own_text_proto():
    from tensorboard.plugins.text import summary

    ours = text_summary("nan_guard", "**Step 12**: stop").value[0]
    theirs = summary.pb("nan_guard", "**Step 12**: stop").value[0]
    assert ours.tensor.SerializeToString() == theirs.tensor.SerializeToString()
    assert ours.metadata.plugin_data.plugin_name == theirs.metadata.plugin_data.plugin_name == "text"


def test_a_users_logger_run_shows_its_layout_images_and_text(tmp_path):
    """What `GradientNormLogger` gets from one `writer.add(layout_summary(), 0)` line, and the rest."""
    from tensorboard import context
    from tensorboard.backend.event_processing import data_provider, plugin_event_multiplexer
    from tensorboard.data import provider
    from tensorboard.plugins import base_plugin
    from tensorboard.plugins.custom_scalar.custom_scalars_plugin import CustomScalarsPlugin

    png = _png()
    writer = SummaryWriter(str(tmp_path / "run"))
    writer.add(layout_summary(), 0)
    writer.add(image_summary("figures/flow", png), 3)
    writer.add(text_summary("nan_guard", "**Step 12: NaNGuard stopped**"), 12)
    writer.close()
    assert writer.error is None

    mux = plugin_event_multiplexer.EventMultiplexer()
    mux.AddRunsFromDirectory(str(tmp_path))
    mux.Reload()
    data = data_provider.MultiplexerDataProvider(mux, str(tmp_path))
    ctx, every = context.RequestContext(), provider.RunTagFilter()
    plugin = CustomScalarsPlugin(base_plugin.TBContext(logdir=str(tmp_path), multiplexer=mux, data_provider=data))
    layout = json.loads(plugin.layout_impl(ctx, ""))
    assert [c["title"] for c in layout["category"]] == list(LOGGER_LAYOUT)
    charts = layout["category"][0]["chart"]
    assert [c["multiline"]["tag"] for c in charts] == [tags for _, tags in LOGGER_LAYOUT[layout["category"][0]["title"]]]
    (image,) = data.read_blob_sequences(ctx, experiment_id="", plugin_name="images", downsample=10,
                                        run_tag_filter=every)["run"]["figures/flow"]
    width, height, blob = (data.read_blob(ctx, blob_key=b.blob_key) for b in image.values)
    assert image.step == 3 and (width, height) == (b"7", b"5") and blob == png
    (text,) = data.read_tensors(ctx, experiment_id="", plugin_name="text", downsample=10,
                                run_tag_filter=every)["run"]["nan_guard"]
    assert text.step == 12 and text.numpy.item().decode() == "**Step 12: NaNGuard stopped**"


def test_image_summary_refuses_what_is_not_a_png():
    with pytest.raises(ValueError, match="image_summary received 4 bytes for 'x' that are not a PNG file"):
        image_summary("x", b"GIF8")


def test_a_users_own_logger_fit_opens_custom_scalars_on_its_layout(tmp_path):
    """A real `fit` with `GradientNormLogger(log_dir=...)`, read back by the Custom Scalars plugin."""
    import keras

    from gradguard.callbacks import GradientNormLogger
    from tests.callbacks.helpers import custom_scalars_layout

    x = np.random.default_rng(0).normal(size=(64, 4)).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    log_dir = tmp_path / "grads"
    model.fit(x, x[:, :1], epochs=2, batch_size=16, verbose=0, callbacks=[GradientNormLogger(log_dir=str(log_dir))])
    model.fit(x, x[:, :1], epochs=1, batch_size=16, verbose=0, callbacks=[GradientNormLogger(log_dir=str(log_dir))])

    layout = custom_scalars_layout(tmp_path)
    assert [c["title"] for c in layout["category"]] == list(LOGGER_LAYOUT)
    # Two fits, one layout each: TensorBoard merges the identical charts into one set.
    charts = layout["category"][0]["chart"]
    assert len(charts) == len(LOGGER_LAYOUT[layout["category"][0]["title"]])
