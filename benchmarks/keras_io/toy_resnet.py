"""A toy ResNet for CIFAR10: three residual blocks of Conv2D, logits over 10 classes.

Adapted from keras-io `guides/functional_api.py`, "A toy ResNet model"
(commit 6f78709a673691753bdba7f1422390a73a93a1a5; Apache-2.0, fchollet).
Model, compile and fit settings as published (RMSprop(1e-3), categorical
crossentropy from logits on one-hot labels, the first 1000 samples, batch
64, epochs 1, validation_split 0.2); CIFAR10 replaced by synthetic 32x32x3
images whose class is where a bright square sits. Not shrunk: the guide
already trains on 1000 samples for 1 epoch.
"""

from __future__ import annotations

import keras
from keras import layers

from . import Setup, blob_images

SOURCE = "guides/functional_api.py"
COMMIT = "6f78709a673691753bdba7f1422390a73a93a1a5"
NOT_APPLICABLE: dict = {}


def make_data(seed: int):
    x, y = blob_images(1000, (32, 32, 3), 10, seed=seed)
    return x, keras.utils.to_categorical(y, 10).astype("float32")


def build(x, y) -> Setup:
    inputs = keras.Input(shape=(32, 32, 3), name="img")
    h = layers.Conv2D(32, 3, activation="relu")(inputs)
    h = layers.Conv2D(64, 3, activation="relu")(h)
    block_1_output = layers.MaxPooling2D(3)(h)
    h = layers.Conv2D(64, 3, activation="relu", padding="same")(block_1_output)
    h = layers.Conv2D(64, 3, activation="relu", padding="same")(h)
    block_2_output = layers.add([h, block_1_output])
    h = layers.Conv2D(64, 3, activation="relu", padding="same")(block_2_output)
    h = layers.Conv2D(64, 3, activation="relu", padding="same")(h)
    block_3_output = layers.add([h, block_2_output])
    h = layers.Conv2D(64, 3, activation="relu")(block_3_output)
    h = layers.GlobalAveragePooling2D()(h)
    h = layers.Dense(256, activation="relu")(h)
    h = layers.Dropout(0.5)(h)
    outputs = layers.Dense(10)(h)
    model = keras.Model(inputs, outputs, name="toy_resnet")
    model.compile(optimizer=keras.optimizers.RMSprop(1e-3),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True),
                  metrics=["acc"])
    return Setup(model, x, y, dict(batch_size=64, epochs=1, validation_split=0.2),
                 task="onehot", from_logits=True)
