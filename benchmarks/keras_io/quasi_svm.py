"""A quasi-SVM: fixed random Fourier features under a linear layer, a hinge loss, MNIST pixels.

Adapted from keras-io `examples/keras_recipes/quasi_svm.py` (commit
8320a6c0a63cd6debe960689c182cee491193fa9; Apache-2.0, fchollet). The model
(RandomFourierFeatures(output_dim=4096, scale=10.0, gaussian kernel) into
Dense(10), raw scores), compile (Adam(1e-3), `keras.losses.hinge`,
categorical accuracy) and fit (batch 128, validation_split 0.2) as
published, on flattened 784-pixel images in [0, 1] and one-hot float
labels (`to_categorical`). The script imports `RandomFourierFeatures` from
`tf.keras.layers.experimental`, which Keras 3 does not ship: it is written
here with `keras.ops` as tf.keras defines it (a non-trainable N(0, 1) kernel
of shape (784, 4096) divided by `kernel_scale`, a non-trainable U(0, 2 pi)
bias, `cos(x @ kernel + bias)`; the layer is built with `trainable=False`, its
default, so only the Dense layer trains), in the layer's compute dtype (the
tf.keras layer casts its input to float32). MNIST replaced by synthetic
28x28 images in [0, 1] whose class is where a bright square sits, the
square shifted up to 2 pixels each way and the pixels noisy (as blobs on a
grid alone they are separated with margin at once, and the hinge loss is 0
after an epoch; MNIST's is not). Shrunk:
3,000 images (not 60,000), epochs 5 (not 20).

Held out (a fourth round, session 7): added after the third held-out run,
run once with the rules as they then were.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import layers, ops

from . import Setup, blob_images

SOURCE = "examples/keras_recipes/quasi_svm.py"
COMMIT = "8320a6c0a63cd6debe960689c182cee491193fa9"
NOT_APPLICABLE: dict = {}

epochs = 5  # 20 as published


class RandomFourierFeatures(layers.Layer):
    """tf.keras' `layers.experimental.RandomFourierFeatures` (gaussian kernel), in `keras.ops`."""

    def __init__(self, output_dim, kernel_initializer="gaussian", scale=None,
                 trainable=False, name=None, **kwargs):
        super().__init__(trainable=trainable, name=name, **kwargs)
        self.output_dim = output_dim
        self.kernel_initializer = kernel_initializer
        self.scale = scale

    def build(self, input_shape):
        input_dim = input_shape[-1]
        self.unscaled_kernel = self.add_weight(
            name="unscaled_kernel", shape=(input_dim, self.output_dim), dtype="float32",
            initializer=keras.initializers.RandomNormal(stddev=1.0), trainable=False)
        self.bias = self.add_weight(
            name="bias", shape=(self.output_dim,), dtype="float32",
            initializer=keras.initializers.RandomUniform(minval=0.0, maxval=2 * np.pi),
            trainable=False)
        if self.scale is None:
            self.scale = np.sqrt(input_dim / 2.0)
        self.kernel_scale = self.add_weight(
            name="kernel_scale", shape=(1,), dtype="float32",
            initializer=keras.initializers.Constant(self.scale), trainable=True,
            constraint="non_neg")

    def call(self, inputs):
        kernel = (1.0 / self.kernel_scale) * self.unscaled_kernel
        outputs = ops.matmul(inputs, kernel)
        outputs = outputs + self.bias
        return ops.cos(outputs)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)


def make_data(seed: int):
    x, y = blob_images(3_000, (28, 28, 1), 10, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for i in range(len(x)):  # written by hand: the square moves up to 2 pixels each way
        x[i] = np.roll(x[i], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    x = np.clip(x + rng.normal(0.0, 0.15, x.shape), 0.0, 1.0).astype("float32")
    return x.reshape(-1, 784), keras.utils.to_categorical(y)


def build(x, y) -> Setup:
    model = keras.Sequential([
        keras.Input(shape=(784,)),
        RandomFourierFeatures(output_dim=4096, scale=10.0, kernel_initializer="gaussian"),
        layers.Dense(units=10),
    ])
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=1e-3),
        loss=keras.losses.hinge,
        metrics=[keras.metrics.CategoricalAccuracy(name="acc")],
    )
    return Setup(model, x, y, dict(epochs=epochs, batch_size=128, validation_split=0.2),
                 task="onehot")
