"""The custom training loop guide: an MLP on MNIST trained with `tf.GradientTape`.

Adapted from keras-io `guides/writing_a_custom_training_loop_in_tensorflow.py`,
"A first end-to-end example" (commit 1806537c4333fbff1f9fd038b78179beeda480fb;
Apache-2.0, fchollet). `get_model`, the optimizer (Adam(1e-3)), the loss
(sparse crossentropy from logits), the batch size 32, the shuffled
`tf.data` pipeline and the loop as published, on the guide's raw 0-255
pixels (it does not scale them). MNIST replaced by synthetic 784-pixel
images whose class is where a bright square sits. Shrunk: 320 images (not
50000), epochs 3 as published.

Two additions let callbacks see the loop, as a user would add them: the
model is compiled with the guide's optimizer and loss (the guard wraps
`model.optimizer`, so the loop applies gradients through it), and the loop
drives a `keras.callbacks.CallbackList(callbacks, model=model, epochs=...,
steps=..., verbose=0)` as `fit` drives its callbacks: with fit's params
(without them NaNGuard raised `AttributeError: 'NoneType' object has no
attribute 'get'` on every run at 75cfd5d) and the epoch's running mean loss
as `logs["loss"]`. A callback with an `observe_batch(x, y)` method (a
custom-loop hook) is handed each batch before it trains.
"""

from __future__ import annotations

import keras
import numpy as np

from . import Setup, blob_images

SOURCE = "guides/writing_a_custom_training_loop_in_tensorflow.py"
COMMIT = "1806537c4333fbff1f9fd038b78179beeda480fb"
NOT_APPLICABLE = {
    "nan_label": "sparse integer labels: TF raises on a NaN label, before any gradient",
    "targets_x1e5": "sparse integer labels: a scaled label is out of range, TF raises",
}

batch_size = 32
epochs = 3


def get_model():
    inputs = keras.Input(shape=(784,), name="digits")
    x1 = keras.layers.Dense(64, activation="relu")(inputs)
    x2 = keras.layers.Dense(64, activation="relu")(x1)
    outputs = keras.layers.Dense(10, name="predictions")(x2)
    return keras.Model(inputs=inputs, outputs=outputs)


def make_data(seed: int):
    x, y = blob_images(320, (28, 28, 1), 10, seed=seed)
    return np.reshape(x * 255.0, (-1, 784)).astype("float32"), y.astype("int64")


def train(setup: Setup, callbacks: list) -> dict:
    """The guide's loop, with a `CallbackList` around it."""
    import tensorflow as tf  # the guide is TensorFlow's

    model, loss_fn = setup.model, setup.fit_kwargs["loss_fn"]
    train_dataset = tf.data.Dataset.from_tensor_slices((setup.x, setup.y))
    train_dataset = train_dataset.shuffle(buffer_size=1024).batch(batch_size)
    steps = int(np.ceil(len(setup.y) / batch_size))
    callback_list = keras.callbacks.CallbackList(callbacks, model=model, epochs=epochs,
                                                 steps=steps, verbose=0)
    observers = [c for c in callbacks if hasattr(c, "observe_batch")]
    running = keras.metrics.Mean()
    model.stop_training = False
    callback_list.on_train_begin()
    losses = []
    for epoch in range(epochs):
        callback_list.on_epoch_begin(epoch)
        running.reset_state()
        for step, (x_batch_train, y_batch_train) in enumerate(train_dataset):
            callback_list.on_train_batch_begin(step)
            for observer in observers:
                observer.observe_batch(x_batch_train, y_batch_train)
            with tf.GradientTape() as tape:
                logits = model(x_batch_train, training=True)
                loss_value = loss_fn(y_batch_train, logits)
            grads = tape.gradient(loss_value, model.trainable_weights)
            model.optimizer.apply(grads, model.trainable_weights)
            running.update_state(loss_value)
            callback_list.on_train_batch_end(step, {"loss": float(running.result())})
            if model.stop_training:
                break
        losses.append(float(running.result()))
        callback_list.on_epoch_end(epoch, {"loss": losses[-1]})
        if model.stop_training:
            break
    callback_list.on_train_end()
    return {"loss": losses}


def build(x, y) -> Setup:
    model = get_model()
    optimizer = keras.optimizers.Adam(learning_rate=1e-3)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    model.compile(optimizer=optimizer, loss=loss_fn)  # so callbacks find the optimizer
    return Setup(model, x, y, dict(loss_fn=loss_fn, epochs=epochs), task="sparse",
                 from_logits=True, train=train)
