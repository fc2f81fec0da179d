"""The same bad rows, reshuffled into another batch, are the same bad data (issue 29)."""

import keras
import numpy as np

from gradguard.callbacks import NaNGuard
from gradguard.callbacks.bad_rows import BadRows, nonfinite_rows
from tests.callbacks.helpers import tanh_data


def test_nonfinite_rows_fingerprint_the_rows_not_their_position():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 4)).astype("float32")
    y = rng.normal(size=(16, 1)).astype("float32")
    x[3, 1], y[9, 0] = np.nan, np.inf
    first = nonfinite_rows([x, y])
    assert len(first) == 2  # rows 3 and 9, found independently of the digest
    order = rng.permutation(16)  # a reshuffle: the same rows elsewhere
    again = nonfinite_rows([x[order], y[order]])
    assert sorted(again) == sorted(first)
    x2 = x.copy()
    x2[3, 0] += 1.0  # another row with a NaN in the same place is other data
    assert set(nonfinite_rows([x2, y])) != set(first)
    assert nonfinite_rows([np.ones((4, 2)), np.arange(4)]) == []
    seen = BadRows()
    assert seen.seen_before(first) is None
    seen.add(first, 7)
    assert seen.seen_before(again) == 7 and seen.seen_before([]) is None


def test_one_nan_row_reshuffled_every_epoch_is_counted_once():
    # 12 epochs of 4 batches, shuffled: the NaN row falls in a bad batch
    # every epoch. Counted by batches, max_bad_batches=3 would stop at the
    # fourth; counted by distinct rows, training goes on to the end.
    keras.utils.set_random_seed(0)
    x, y = tanh_data(n=128)
    x[40, 2] = np.nan
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    guard = NaNGuard(verbose=False, max_bad_batches=3)
    history = model.fit(x, y, batch_size=32, epochs=12, shuffle=True, verbose=0,
                        callbacks=[guard])
    assert len(history.history["loss"]) == 12 and not model.stop_training
    assert len(guard.events) == 12  # one bad batch an epoch, each skipped
    assert all((e.cause, e.action) == ("bad_data", "skip") for e in guard.events)
    assert guard.bad_batches == 1
    first = guard.events[0].step
    assert all(f"as at step {first}" in e.evidence for e in guard.events[1:])
    clean = np.isfinite(x).all(axis=1)
    assert all(np.isfinite(w).all() for w in model.get_weights())
    assert model.evaluate(x[clean], y[clean], verbose=0) < np.var(y)  # it learned
