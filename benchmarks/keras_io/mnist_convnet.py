"""Simple MNIST convnet: two Conv2D + MaxPooling, dropout, softmax over 10 digits.

Adapted from keras-io `examples/vision/mnist_convnet.py` (commit
02cfe8063b505adc073986c91729f22039f77ad0; Apache-2.0, fchollet). Model,
compile and fit settings as published (one-hot labels, batch 128,
validation_split 0.1); MNIST replaced by synthetic 28x28x1 images in [0, 1]
whose class is where a bright square sits. Shrunk: 1152 images (not 60000),
epochs 3 (not 15).
"""

from __future__ import annotations

import keras
from keras import layers

from . import Setup, blob_images

SOURCE = "examples/vision/mnist_convnet.py"
COMMIT = "02cfe8063b505adc073986c91729f22039f77ad0"
NOT_APPLICABLE: dict = {}

num_classes = 10
input_shape = (28, 28, 1)


def make_data(seed: int):
    x, y = blob_images(1152, input_shape, num_classes, seed=seed)
    return x, keras.utils.to_categorical(y, num_classes).astype("float32")


def build(x, y) -> Setup:
    model = keras.Sequential([
        keras.Input(shape=input_shape),
        layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
        layers.MaxPooling2D(pool_size=(2, 2)),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(num_classes, activation="softmax"),
    ])
    model.compile(loss="categorical_crossentropy", optimizer="adam", metrics=["accuracy"])
    return Setup(model, x, y, dict(batch_size=128, epochs=3, validation_split=0.1),
                 task="onehot")
