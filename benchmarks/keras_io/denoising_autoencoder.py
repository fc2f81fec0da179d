"""Convolutional autoencoder for image denoising (Conv2D / UpSampling2D).

Adapted from keras-io `examples/vision/autoencoder.py` (commit
28033e1c219da0430c695fdcbee81552b8c5f594; Apache-2.0, Santiago L.
Valdarrama). Model, compile and fit settings as published for the denoising
fit (noisy images in, clean images out, batch 128, shuffle); MNIST replaced
by synthetic 28x28x1 images, with the script's own noise (0.4 x normal,
clipped to [0, 1]). Shrunk: 1024 images (not 60000), epochs 3 (not 100),
the validation set left out.
"""

from __future__ import annotations

import numpy as np
from keras.layers import Conv2D, Input, MaxPooling2D, UpSampling2D
from keras.models import Model

from . import Setup, blob_images

SOURCE = "examples/vision/autoencoder.py"
COMMIT = "28033e1c219da0430c695fdcbee81552b8c5f594"
NOT_APPLICABLE: dict = {}


def make_data(seed: int):
    clean, _ = blob_images(1024, (28, 28, 1), 10, seed=seed)
    rng = np.random.default_rng(seed + 1)
    noisy = np.clip(clean + 0.4 * rng.normal(size=clean.shape), 0.0, 1.0)
    return noisy.astype("float32"), clean


def build(x, y) -> Setup:
    input = Input(shape=(28, 28, 1))
    h = Conv2D(32, (3, 3), activation="relu", padding="same")(input)
    h = MaxPooling2D((2, 2), padding="same")(h)
    h = Conv2D(32, (3, 3), activation="relu", padding="same")(h)
    h = MaxPooling2D((2, 2), padding="same")(h)
    h = Conv2D(32, (3, 3), activation="relu", padding="same")(h)
    h = UpSampling2D((2, 2))(h)
    h = Conv2D(32, (3, 3), activation="relu", padding="same")(h)
    h = UpSampling2D((2, 2))(h)
    h = Conv2D(1, (3, 3), activation="sigmoid", padding="same")(h)
    autoencoder = Model(input, h)
    autoencoder.compile(optimizer="adam", loss="binary_crossentropy")
    return Setup(autoencoder, x, y, dict(epochs=3, batch_size=128, shuffle=True),
                 task="reconstruction")
