"""Tests of interleaved fits: real fits take turns one step at a time."""

import keras
import numpy as np
import pytest

from gradguard.benchmarks.interleave import interleave


class Recorder(keras.callbacks.Callback):
    """Appends (fit, batch) at the end of each step, and the thread count."""

    def __init__(self, index, order, running):
        super().__init__()
        self.index, self.order, self.running = index, order, running

    def on_train_batch_begin(self, batch, logs=None):
        self.running.append(self.index)
        assert len(self.running) == 1, f"fits {self.running} ran at once"

    def on_train_batch_end(self, batch, logs=None):
        self.order.append((self.index, batch))
        self.running.remove(self.index)


def tiny_fit(index, n_batches, order, running, fail_at=None):
    keras.utils.set_random_seed(index)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.random.default_rng(index).normal(size=(4 * n_batches, 3)).astype("float32")
    y = x[:, :1] * 2.0
    callbacks = [Recorder(index, order, running)]
    if fail_at is not None:
        callbacks.append(keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: b == fail_at and 1 / 0))

    def fit(extra):
        model.fit(x, y, batch_size=4, epochs=1, shuffle=False, verbose=0,
                  callbacks=callbacks + list(extra))
    return fit


def test_fits_take_one_step_each_in_every_cycle_until_they_end():
    order, running = [], []
    lengths = [6, 6, 3]  # the third ends early; the other two go on
    seconds = interleave([tiny_fit(i, n, order, running)
                          for i, n in enumerate(lengths)], seed=1)
    # Every fit ran all its batches, in order, and timed all but the first.
    for i, n in enumerate(lengths):
        assert [b for j, b in order if j == i] == list(range(n))
        assert len(seconds[i]) == n - 1 and all(s > 0 for s in seconds[i])
    # In cycle c every fit still running took exactly one step.
    cycles = [order[:3], order[3:6], order[6:9], order[9:11], order[11:13],
              order[13:15]]
    for c, cycle in enumerate(cycles):
        live = {i for i, n in enumerate(lengths) if n > c}
        assert sorted(i for i, _ in cycle) == sorted(live), (c, cycle)
        assert {b for _, b in cycle} == {c}
    # The order is shuffled from cycle to cycle, not fixed.
    assert len({tuple(i for i, _ in cycle) for cycle in cycles[:3]}) > 1


def test_an_error_in_one_fit_is_raised_after_the_others_finish():
    order, running = [], []
    fits = [tiny_fit(0, 5, order, running),
            tiny_fit(1, 5, order, running, fail_at=2)]
    with pytest.raises(ZeroDivisionError):
        interleave(fits)
    assert [b for i, b in order if i == 0] == list(range(5))
    assert [b for i, b in order if i == 1] == [0, 1, 2]
