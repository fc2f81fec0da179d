"""`GradientRecord.to_dataframe()`: the monitor's rows as a table, checked against a tape."""

import keras
import numpy as np

from gradguard.callbacks import GradientMonitor
from tests.callbacks.helpers import dense_model, global_norm, regression_data, tape_steps

BATCH, LR = 16, 0.05


def test_record_to_dataframe_matches_the_tape_and_names_the_skipped_step():
    x, y = regression_data((8,), n=3 * BATCH)
    x[BATCH + 2, 0] = np.nan  # step 2: a NaN input, skipped by the monitor
    model = dense_model()
    weights = model.get_weights()
    model.compile(optimizer=GradientMonitor(keras.optimizers.SGD(LR)), loss="mse")
    model.fit(x, y, batch_size=BATCH, shuffle=False, verbose=0)

    table = model.optimizer.read().to_dataframe()
    paths = [v.path for v in model.trainable_variables]
    assert list(table.columns[:8]) == ["step", "index", "norm", "norm_clipped", "threshold",
                                       "status", "weights_finite", "first_nonfinite"]
    assert list(table.columns[8:]) == paths
    assert table["step"].tolist() == [1, 2, 3]
    assert table["status"].tolist() == ["applied", "nonfinite", "applied"]
    assert table["first_nonfinite"].tolist() == [None, paths[0], None]
    # Step 1 from the initial weights; step 3 from the same weights, as
    # step 2 was skipped: the tape of batch 1, then of batch 3.
    first = tape_steps(dense_model, weights, x[:BATCH], y[:BATCH], BATCH, LR, 1)[0]
    third = tape_steps(dense_model, weights, np.concatenate([x[:BATCH], x[2 * BATCH:]]),
                       np.concatenate([y[:BATCH], y[2 * BATCH:]]), BATCH, LR, 2)[1]
    for row, grads in [(0, first), (2, third)]:
        np.testing.assert_allclose(table["norm"][row], global_norm(grads), rtol=1e-5)
        np.testing.assert_allclose(table.loc[row, paths].to_numpy(dtype=float),
                                   [np.linalg.norm(g) for g in grads], rtol=1e-5)
    assert np.isnan(table["norm"][1])
    assert list(model.optimizer.read().to_dataframe(variables=False).columns) == \
        list(table.columns[:8])


def test_empty_record_gives_an_empty_table():
    model = dense_model()
    model.compile(optimizer=GradientMonitor(keras.optimizers.SGD(LR)), loss="mse")
    table = model.optimizer.read().to_dataframe()
    assert len(table) == 0 and "norm" in table.columns
