"""keras-io example scripts, adapted to run offline on synthetic data.

Each module here re-expresses one script from keras-io
(https://github.com/keras-team/keras-io, Apache-2.0; its source path and the
commit it was read at are at the top of the module): the model, `compile`
and `fit` settings as published, the data replaced by synthetic numpy arrays
of the same shapes and dtypes (nothing is downloaded), and only the data size
and the number of epochs shrunk (each module says by how much).

Every module exposes the same interface, which `benchmarks.diagnosis_scripts`
uses to inject one break at a time:

- `SOURCE`, `COMMIT`: where the script comes from;
- `NOT_APPLICABLE`: `{break: why}` for breaks the script cannot carry;
- `make_data(seed) -> (x, y)`: clean synthetic data (numpy, or a dict or
  list of numpy arrays for multi-input models, as the script passes them;
  `y` is `None` for a VAE); a list's `NAN_KEY` and `FEATURE_KEY` name the
  input that carries the bad-value and scale breaks;
- `build(x, y) -> Setup`: the model built and compiled as published (any
  `adapt` runs on this clean data), with its `fit` arguments.

A break is then injected into copies of `setup.x` / `setup.y` (or into the
optimizer's learning rate, or the dtype policy before `build`), and `fit`
runs with the caller's callbacks (`Setup.fit`).
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import numpy as np

SCRIPTS = (  # the slowest (two bidirectional LSTMs over 200 steps) last
    "text_cnn", "text_transformer", "weather_lstm", "mnist_convnet", "vae",
    "denoising_autoencoder", "timeseries_fcn", "boston_regression",
    "collaborative_filtering", "toy_resnet", "structured_data",
    "custom_training_loop", "bidirectional_lstm",
    # Held out (session 6): added after the rules were set, run once, not tuned on.
    "imbalanced_classification", "addition_rnn", "anomaly_autoencoder",
    # A second held-out round (session 6), after the first led to a change.
    "lstm_seq2seq", "siamese_contrastive",
    # A third held-out round (session 7): three more families (a custom layer, a graph
    # convolution into an LSTM regressor, frozen pretrained embeddings), run once.
    "antirectifier", "traffic_forecasting", "pretrained_word_embeddings",
    # A fourth held-out round (session 7): three more families (a kernel approximation
    # under a hinge loss, GRUs over masked frame features, a Conv1D stack with
    # BatchNormalization and class weights), run once.
    "quasi_svm", "video_classification", "eeg_signal_classification",
    # A fifth round (session 8): ConvLSTM2D next-frame prediction, a Transformer encoder
    # over time series, an MLP-Mixer under AdamW with augmentation and plateau callbacks.
    "conv_lstm", "timeseries_transformer", "mlp_mixer",
    # A sixth round (session 8), run after the fifth (which led to no change): a character-level
    # LSTM, a multi-label MLP over tf-idf vectors, a U-Net-like segmentation net.
    "char_lstm", "multi_label", "pets_segmentation",
    # A seventh round (session 8), after the change the sixth led to: a residual Conv1D
    # over FFT magnitudes, a loss added inside the model (compiled with no loss), a
    # Transformer tagging tokens under a masked custom loss.
    "speaker_recognition", "endpoint_layer", "ner_transformer",
    # An eighth round (session 9), after the change the seventh led to: a Switch
    # Transformer (mixture of experts, a routing loss via add_loss), a Deep & Cross
    # network over numeric and string features, a trainer model whose own
    # train_step reports no loss.
    "switch_transformer", "wide_deep_cross_networks", "trainer_pattern",
)
HELD_OUT = ("imbalanced_classification", "addition_rnn", "anomaly_autoencoder")
HELD_OUT_2 = ("lstm_seq2seq", "siamese_contrastive")
HELD_OUT_3 = ("antirectifier", "traffic_forecasting", "pretrained_word_embeddings")
HELD_OUT_4 = ("quasi_svm", "video_classification", "eeg_signal_classification")
HELD_OUT_5 = ("conv_lstm", "timeseries_transformer", "mlp_mixer")
HELD_OUT_6 = ("char_lstm", "multi_label", "pets_segmentation")
HELD_OUT_7 = ("speaker_recognition", "endpoint_layer", "ner_transformer")
HELD_OUT_8 = ("switch_transformer", "wide_deep_cross_networks", "trainer_pattern")


@dataclasses.dataclass
class Setup:
    """One script, ready to train: its compiled model, data and fit arguments."""

    model: Any  # a compiled keras.Model
    x: Any  # numpy array or dict of arrays
    y: Any  # numpy array, or None (the VAE trains on x alone)
    fit_kwargs: dict  # batch_size, epochs (shrunk), validation_split, callbacks
    task: str  # binary, binary_balanced, onehot, sparse, regression, reconstruction (how chance is judged)
    from_logits: bool = False
    # A script with its own loop: train(setup, callbacks) -> {"loss": [per epoch]}
    train: Callable | None = None

    def fit(self, callbacks: list) -> dict:
        """Trains as the script does, with `callbacks` added; the history dict."""
        if self.train is not None:
            return self.train(self, callbacks)
        kwargs = dict(self.fit_kwargs)
        published = kwargs.pop("callbacks", [])
        history = self.model.fit(self.x, self.y, verbose=0,
                                 callbacks=list(published) + list(callbacks), **kwargs)
        return history.history


def load(name: str):
    """The module of script `name` (one of `SCRIPTS`)."""
    if name not in SCRIPTS:
        raise ValueError(f"Unknown keras-io script {name!r}; expected one of {SCRIPTS}.")
    return importlib.import_module(f"{__name__}.{name}")


# -- synthetic data shared by several scripts -----------------------------


def token_reviews(n: int, length: int, vocab: int, *, seed: int):
    """Integer reviews and 0/1 sentiment labels, learnable from a few tokens.

    Tokens are uniform over `[200, vocab)`; in 30% of the positions a
    positive review carries a token from `[2, 100)`, a negative one from
    `[100, 200)` (the sentiment words).
    """
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, size=n)
    x = rng.integers(200, vocab, size=(n, length))
    marked = rng.random((n, length)) < 0.3
    words = rng.integers(2, 100, size=(n, length)) + 98 * (1 - y)[:, None]
    x = np.where(marked, words, x)
    return x.astype("int64"), y


def blob_images(n: int, shape=(28, 28, 1), classes: int = 10, *, seed: int):
    """Images in [0, 1] whose class is where a bright square sits, and the labels."""
    rng = np.random.default_rng(seed)
    h, w, c = shape
    y = rng.integers(0, classes, size=n)
    x = rng.uniform(0.0, 0.3, size=(n, h, w, c))
    grid = int(np.ceil(np.sqrt(classes)))
    size = h // (grid + 1)
    for i, k in enumerate(y):
        r, q = divmod(int(k), grid)
        top, left = size // 2 + r * size, size // 2 + q * size
        x[i, top:top + size, left:left + size, :] = rng.uniform(0.7, 1.0)
    return x.astype("float32"), y
