"""NaNGuard with real faults: NaN/inf in a real batch, a diverging SimpleRNN."""

import json

import keras
import numpy as np
import pytest

from gradguard.callbacks import GradientNormLogger, NaNGuard, NonFiniteTrainingError
from tests.callbacks.helpers import WeightsPerStep, adding_data, dense_model, regression_data


def _finite(model):
    return all(np.isfinite(w).all() for w in model.get_weights())


def _poisoned(value):
    x, y = regression_data((8,), n=96)
    x[40] = value  # in the third batch of 16
    return x, y


def _nonfinite_gradients(model, weights, x, y) -> list:
    """Per trainable variable, whether its gradient on (x, y) is non-finite."""
    import tensorflow as tf

    clone = keras.models.clone_model(model)
    clone.set_weights(weights)

    @tf.function
    def grads():
        with tf.GradientTape() as tape:
            loss = keras.ops.mean(keras.losses.mean_squared_error(y, clone(x, training=True)))
        return tape.gradient(loss, clone.trainable_variables)

    return [not bool(np.isfinite(g.numpy()).all()) for g in grads()]


@pytest.mark.parametrize("action", ["stop", "raise", "rollback"])
@pytest.mark.parametrize("value", [np.nan, np.inf])
def test_poisoned_batch(action, value, tmp_path):
    x, y = _poisoned(value)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="mse")
    report = tmp_path / "report.json"
    # skip_bad_data=False: stop and raise act on bad data too (by default a
    # single bad batch is skipped and training goes on, whatever `action`).
    guard = NaNGuard(action=action, report_path=report, snapshot_every=1, verbose=False,
                     skip_bad_data=False)
    keep = WeightsPerStep()
    fit = lambda: model.fit(  # noqa: E731
        x, y, batch_size=16, epochs=1, shuffle=False, verbose=0,
        callbacks=[keep, guard],
    )
    if action == "raise":
        with pytest.raises(FloatingPointError, match=r"Step 3: NaNGuard caught nonfinite gradient: cause bad_data, action raise\.\n  What: epoch 0, batch 2 \(0-based\)") as caught:
            fit()
        assert isinstance(caught.value, NonFiniteTrainingError)
        assert caught.value.report is guard.events[0]
    else:
        history = fit()
    assert _finite(model)
    event = guard.events[0]
    assert (event["trigger"], event["step"], event["batch"]) == ("nonfinite_gradient", 3, 2)
    # Which gradients a NaN input row reaches depends on the platform (a
    # compiled ReLU may take NaN to 0: on one CPU 3 of the 6 here, under
    # XLA 5, eagerly 6), so the expectation is the same step recomputed
    # here, in a compiled function, from the weights after step 2.
    bad = _nonfinite_gradients(model, keep.weights[2], x[32:48], y[32:48])
    assert event["nonfinite_variables"] == sum(bad)
    if all(bad):  # no variable is named (the first in list order would
        # name the first layer, wherever the NaN came from)
        assert event["first_nonfinite_variable"] is None
        assert "Every gradient is non-finite (6 variables)" in event["message"]
    else:
        assert event["first_nonfinite_variable"] == model.trainable_variables[bad.index(True)].path
    assert json.loads(report.read_text())["events"][0]["trigger"] == "nonfinite_gradient"
    if action == "stop":
        assert keep.step == 3  # fit ended at the poisoned batch
    # A NaN with no growth before it is bad data: the step was skipped, the
    # model holds the weights after step 2.
    assert event["cause"] == "bad_data"
    assert event["weights"] == {"step": 2, "restored": False, "kept_last": False}
    if action != "rollback":
        for a, b in zip(model.get_weights(), keep.weights[2]):
            np.testing.assert_array_equal(a, b)
    if action == "rollback":
        assert event["action"] == "skip"  # no rollback, no lr cut, no retry
        assert keep.step == 6  # trained on to the end of the epoch
        assert np.isfinite(history.history["loss"][-1])
        assert event["restored_step"] is None and guard.retries == 0
        assert float(np.array(model.optimizer.learning_rate)) == pytest.approx(1e-2)


def _rnn(lr):
    model = keras.Sequential([
        keras.Input((100, 2)),
        keras.layers.SimpleRNN(32, name="rnn"),
        keras.layers.Dense(1, name="head"),
    ])
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="mse")
    return model


@pytest.mark.parametrize("snapshot_every", [1, 50])
def test_diverging_rnn_is_caught_at_the_spike_before_nan(snapshot_every):
    # SGD(0.1) on the adding problem: the norm spikes ~100x around step 8-11,
    # then doubles about every step until it overflows (step 33 on one
    # machine, past step 64 on another: the path is chaotic, so the run is
    # given 6 epochs to get there).
    x, y = adding_data(1024, 100)
    unguarded, logger = _rnn(0.1), GradientNormLogger()
    late = NaNGuard(spike_factor=None, verbose=False)
    unguarded.fit(x, y, batch_size=32, epochs=6, shuffle=False, verbose=0,
                  callbacks=[logger, late])
    norms = logger.to_dataframe("global")["grad_norm"].to_numpy()
    first_inf = int(np.argmax(~np.isfinite(norms))) + 1
    assert not np.isfinite(norms).all() and first_inf > 15
    assert late.events[0]["step"] == first_inf
    # At the overflow the output layer's norm is the largest, yet the
    # recurrent kernel is named first: its norm left its median first.
    last = logger.to_dataframe().query("step == @first_inf - 1")
    assert last.set_index("layer")["norm"].idxmax() == "head"
    recurrent = unguarded.layers[0].cell.recurrent_kernel.path
    assert late.events[0]["suspects"][0]["variable"] == recurrent

    keras.utils.set_random_seed(0)
    model, keep = _rnn(0.1), WeightsPerStep()
    guard = NaNGuard(action="rollback", max_retries=0, verbose=False,
                     snapshot_every=snapshot_every, keep_snapshots=8)
    model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
              callbacks=[keep, guard])
    event = guard.events[0]
    assert event["trigger"] == "gradient_spike"
    assert event["step"] < first_inf
    assert event["action"] == "stop"  # retries used up
    assert event["suspects"][0]["layer"] == "rnn"
    # The weights are ones from before the spike: the newest snapshot taken
    # before the suspects' norms first rose 10x (snapshots at steps 0, k, 2k..;
    # the last 8 kept).
    restored = event["restored_step"]
    onset = event["onset_step"]
    # The recurrent kernel left its median first, but its gain at the start
    # is Keras' orthogonal 1.0000001: the recurrence does not amplify, the
    # rate does (rolled back at lower rates it trains: next test).
    assert event["cause"] == "learning_rate"
    assert "rnn_cell/recurrent_kernel left its median first" in event["evidence"]
    taken = [t for t in range(0, event["step"], snapshot_every)][-8:]
    # None of those before the onset: the fit's first copy (step 0), never a later one.
    assert restored == max([t for t in taken if t < onset], default=0)
    for a, b in zip(model.get_weights(), keep.weights[restored]):
        np.testing.assert_array_equal(a, b)


def test_rollback_trains_on_to_a_finite_loss():
    x, y = adding_data(1024, 100)
    model = _rnn(0.1)
    guard = NaNGuard(action="rollback", lr_factor=0.25, max_retries=3, verbose=False)
    history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0,
                        callbacks=[guard])
    assert guard.events and all(e["action"] == "rollback" for e in guard.events)
    assert len(history.history["loss"]) == 2  # not stopped
    assert np.isfinite(history.history["loss"][-1])
    assert history.history["loss"][-1] < 1.0
    assert _finite(model)


def test_nonfinite_weights_are_restored():
    x, y = regression_data((8,), n=64)
    model = dense_model()
    model.compile(optimizer=keras.optimizers.SGD(1e38), loss="mse")
    keep = WeightsPerStep()
    guard = NaNGuard(spike_factor=None, verbose=False)
    model.fit(x, y, batch_size=16, verbose=0, callbacks=[keep, guard])
    assert guard.events[0]["trigger"] in {"nonfinite_weights", "nonfinite_gradient"}
    assert _finite(model)


def test_existing_report_gets_a_numbered_sibling(tmp_path):
    # A script re-run with the same report_path trains, keeps the old report
    # and writes report-1.json (issue 31: never refuse, never overwrite).
    report = tmp_path / "report.json"
    report.write_text("mine")
    (tmp_path / "report-1.json").write_text("mine too")
    x, y = _poisoned(np.nan)
    model = dense_model()
    model.compile(optimizer="sgd", loss="mse")
    guard = NaNGuard(report_path=report, verbose=False)
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0, callbacks=[guard])
    assert report.read_text() == "mine"
    assert (tmp_path / "report-1.json").read_text() == "mine too"
    written = json.loads((tmp_path / "report-2.json").read_text())
    assert [e["batch"] for e in written["events"]] == [2]
    assert guard.report_file == str(tmp_path / "report-2.json")


def test_overwrite_writes_over_the_report(tmp_path):
    report = tmp_path / "report.json"
    report.write_text("mine")
    x, y = _poisoned(np.nan)
    model = dense_model()
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=16, shuffle=False, verbose=0,
              callbacks=[NaNGuard(report_path=report, overwrite=True, verbose=False)])
    assert json.loads(report.read_text())["events"][0]["cause"] == "bad_data"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_report_path_of_the_wrong_type_names_the_value_and_the_fix():
    with pytest.raises(TypeError, match=r"NaNGuard received report_path=123 of type int; "
                                        r"expected a str or os\.PathLike file path"):
        NaNGuard(report_path=123)


@pytest.mark.parametrize("kwargs, message", [
    ({"action": "halt"}, r"NaNGuard received action='halt'; expected one of 'stop', 'raise', 'rollback'\."),
    ({"spike_action": "drop"}, r"NaNGuard received spike_action='drop'; expected one of 'skip', 'clip'\."),
    ({"snapshot_every": 0}, r"NaNGuard received snapshot_every=0; expected an int >= 1\."),
    ({"spike_factor": 1}, r"NaNGuard received spike_factor=1; expected a number > 1"),
    ({"window": 1}, r"NaNGuard received window=1; expected an int >= 2\."),
    ({"lr_factor": 0}, r"NaNGuard received lr_factor=0; expected a number in \(0, 1\]\."),
    ({"max_retries": -1}, r"NaNGuard received max_retries=-1; expected an int >= 0\."),
    ({"loss_is": "mean"},
     r"NaNGuard received loss_is='mean'; expected one of 'auto', 'running', 'batch'\."),
    ({"max_consecutive_bad_batches": 0},
     r"NaNGuard received max_consecutive_bad_batches=0; expected an int >= 1\."),
])
def test_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NaNGuard(**kwargs)


def test_the_start_evidence_is_the_weights_the_fit_began_with():
    # The gains and the weights' norm are measured lazily, from the fit's
    # first snapshot: asked for after 4 updates, they are still those of
    # the start weights (computed here from a copy, in float64 numpy).
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(16, activation="tanh"), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    x = np.random.default_rng(0).normal(size=(128, 8)).astype("float32")
    y = np.tanh(x[:, :1]).astype("float32")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # a second fit starts elsewhere
    start = [np.asarray(w, np.float64) for w in model.get_weights()]
    guard, seen = NaNGuard(verbose=False), []

    class Ask(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if batch == 3:
                seen.append(guard.start_evidence)

    model.fit(x, y, batch_size=32, epochs=1, verbose=0, callbacks=[guard, Ask()])
    assert not np.allclose(start[0], model.get_weights()[0])  # the weights moved
    gains, recurrent, norm = seen[0]
    kernels = [w for w in start if w.ndim == 2]
    assert gains == pytest.approx([np.std(k) * np.sqrt(k.shape[0]) for k in kernels])
    assert recurrent is None
    assert norm == pytest.approx(np.sqrt(sum((w ** 2).sum() for w in start)))
