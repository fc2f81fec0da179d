"""`BatchTap`: references to the last few batches `fit` trained on, for a replay.

A Keras callback is never handed the batch (`on_train_batch_begin` gets an
index). The tap wraps the model's `train_function` for one `fit`: it draws
the batch from Keras' iterator itself, keeps a reference to it (no copy: the
tensors Keras made anyway) and hands it on to Keras' own step, unchanged. The
step, its inputs and its numbers are Keras': only where the batch is drawn
moves (from inside the compiled loop to just before it).

Limits, where the tap stays off and a replay is impossible (the guard then
falls back on its rules): `steps_per_execution > 1`, a `tf.distribute`
strategy, the torch backend, a train function another callback rebuilt
after the guard's `on_train_begin`, and custom training loops (no
`train_function`: pass the batch to `NaNGuard.observe_batch` instead).
"""

from __future__ import annotations

import collections

import keras


class BatchTap:
    """Keeps the last `keep` batches a model's `fit` drew.

    Args:
        keep: int >= 1, how many batches are kept (the newest last).
            Defaults to 4.
    """

    def __init__(self, keep: int = 4):
        self.batches = collections.deque(maxlen=keep)
        # `inner`: the train function the tap calls (Keras' own, or the one a
        # `StepLogs` put in its place for this fit).
        self._model = self.inner = None

    def install(self, model) -> bool:
        """Wraps `model.train_function`; returns whether the tap is on."""
        self.batches.clear()
        backend = keras.backend.backend()
        original = getattr(model, "train_function", None)
        # A tap an earlier guard left (its fit raised before on_train_end):
        # Keras' own function under it is the one to wrap.
        original = getattr(original, "_gradguard_original", original)
        if (original is None or getattr(model, "steps_per_execution", 1) != 1
                or backend not in ("tensorflow", "jax")):
            return False
        if backend == "tensorflow":
            import tensorflow as tf

            strategy = type(model.distribute_strategy).__name__
            if strategy != "_DefaultDistributionStrategy":  # tf.distribute
                return False
            iterator_types = (tf.data.Iterator,)

            def tapped(iterator):
                if not isinstance(iterator, iterator_types):
                    return self.inner(iterator)
                data = next(iterator)  # StopIteration at the end, as Keras expects
                self.batches.append(data)
                return self.inner([data])  # Keras' own step on that one batch
        else:
            def tapped(state, iterator):
                data = next(iterator)
                self.batches.append(data)
                return self.inner(state, iter([data]))

        # The tap itself, so that another wrapper (`StepLogs`) can find the
        # function it wraps and swap it (`inner`) without unwrapping the tap.
        tapped._gradguard_tap = self
        tapped._gradguard_original = original
        self._model, self.inner = model, original
        model.train_function = tapped
        return True

    def add(self, data) -> None:
        """Keeps a batch handed over by hand (a custom training loop)."""
        self.batches.append(data)

    def remove(self) -> None:
        """Puts Keras' train function back (if nothing replaced the tap since)."""
        model, self._model = self._model, None
        if model is not None and getattr(model.train_function, "_gradguard_tap", None) is self:
            model.train_function = self.inner
        self.inner = None

    def __deepcopy__(self, memo):
        return BatchTap(self.batches.maxlen)

    def __getstate__(self):
        return {"keep": self.batches.maxlen}

    def __setstate__(self, state):
        self.__init__(state["keep"])
