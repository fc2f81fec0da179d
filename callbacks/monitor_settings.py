"""What a `fit` call sets on a `GradientMonitor`, and how it gets to the step.

The per-fit settings (AutoClip's percentile, AGC, ZClip, NaNGuard's spike
gate and learning-rate multiplier) are named variables that only these
setters write and the compiled step reads; a mode's code enters the step
the first time it is switched on (a setter returns True: rebuild the train
function once). `begin_fit` / `end_fit` put the settings back between fits.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from keras import ops

from .host_read import to_int
from .optimizer_chain import clip_settings, loss_scaler, step_counter
from .validation import check, is_int, is_number

class SpikeSetting(NamedTuple):
    """NaNGuard's spike gate as set on the monitor (`set_spike_gate`)."""

    factor: float  # 0: off
    window: int
    min_history: int
    clip: float  # 1: clip a spike to the median, 0: skip it


_SPIKE_OFF = SpikeSetting(0.0, 2, 1, 0.0)


def _constant(value):
    """An initializer that fills a variable with `value`."""
    return lambda shape, dtype: ops.full(shape, value, dtype)


def _check_one_mode(mode, percentile, keras_clip, other=None) -> None:
    """Refuses a second clipping mode next to AGC or ZClip."""
    if mode is None:
        return
    taken = [f"autoclip_percentile={percentile}" if percentile is not None else None,
             str(keras_clip) if keras_clip else None,
             "the other of AGC and ZClip" if other is not None else None]
    taken = [t for t in taken if t]
    if taken:
        raise ValueError(
            f"GradientMonitor cannot clip with {mode}: it already clips with "
            f"{taken[0]}; use one clipping mode only."
        )


def _check_window(window, history: int) -> None:
    check(
        is_int(window) and 1 <= window <= history, "GradientMonitor",
        "autoclip_history", window, f"an int in [1, history={history}]",
    )



class MonitorSettings:
    """The `GradientMonitor`'s setters and per-fit switches (a mixin).

    Reads and writes the monitor's attributes: `autoclip_*`, `adaptive`,
    `spike_setting`, `lr_multiplier`, the `*_compiled` flags and the
    `gg_*` setting variables created in `build` from `_settings()`.
    """

    @staticmethod
    def _check_autoclip(percentile, optimizer):
        if percentile is None:
            return
        check(
            is_number(percentile) and 0 < percentile <= 100,
            "GradientMonitor", "autoclip_percentile", percentile,
            "a number in (0, 100] or None",
        )
        clip = clip_settings(optimizer)
        if clip:
            raise ValueError(
                "GradientMonitor received autoclip_percentile="
                f"{percentile!r} but the optimizer already clips with "
                f"{clip}; use one clipping mode only."
            )

    def set_autoclip(
        self, percentile: float | None, window: int | None = None
    ) -> bool:
        """Turns adaptive clipping on (or off with `None`).

        Takes effect at the next step without retracing once AutoClip's code
        is in the compiled step; the first time it is turned on the train
        function must be rebuilt.

        Returns:
            True when the caller must rebuild the train function.
        """
        self._check_autoclip(percentile, self.inner_optimizer)
        if percentile is not None:
            _check_one_mode(self.adaptive.mode, percentile, {})
        window = self.history if window is None else window
        _check_window(window, self.history)
        self.autoclip_percentile = percentile
        self.autoclip_history = int(window)
        self._assign_settings()
        if percentile is not None and not self.autoclip_compiled:
            self.autoclip_compiled = True
            return True
        return False

    def set_agc(self, clipping: float | None, eps: float = 1e-3) -> bool:
        """Turns AGC on with ratio `clipping` (or off with `None`).

        Returns:
            True when the caller must rebuild the train function (the first
            time it is turned on).
        """
        if clipping is not None:
            _check_one_mode(f"AGC(clipping={clipping})", self.autoclip_percentile,
                            clip_settings(self.inner_optimizer), self.adaptive.zclip)
        return self.adaptive.set_agc(clipping, eps)

    def set_zclip(
        self, z_threshold: float | None, alpha: float = 0.97, warmup_steps: int = 25
    ) -> bool:
        """Turns ZClip on (or off with `z_threshold=None`).

        Its statistics carry over from earlier fits while they are on
        (`adaptive.reset_statistics()` forgets them).

        Returns:
            True when the caller must rebuild the train function.
        """
        if z_threshold is not None:
            _check_one_mode(f"ZClip(z_threshold={z_threshold})", self.autoclip_percentile,
                            clip_settings(self.inner_optimizer), self.adaptive.agc)
        return self.adaptive.set_zclip(z_threshold, alpha, warmup_steps)

    def set_spike_gate(
        self, factor: float | None, window: int = 50, min_history: int = 5,
        mode: str = "skip",
    ) -> bool:
        """Turns the spike gate on (or off with `factor=None`).

        A step whose global norm (before clipping) exceeds `factor` times the
        median of the finite, applied norms among the last `window` steps (at
        least `min_history` of them) is a spike. It is decided inside the
        compiled step, before the update: `mode="skip"` leaves the weights
        and optimizer state as they were (only `iterations` advances);
        `mode="clip"` applies it with its global norm scaled down to that
        running median. The ring records it (`GradientRecord.status`).

        The clip (a factor of the global norm on every gradient, which
        makes every update wait for the last gradient) is compiled in the
        first time `mode="clip"` is asked for; a gate that only skips
        scales nothing.

        Returns:
            True when the caller must rebuild the train function (the first
            time the gate is turned on, or set to clip).
        """
        self.spike_setting = SpikeSetting(
            0.0 if factor is None else float(factor), int(window),
            int(min_history), 1.0 if mode == "clip" else 0.0,
        )
        self._assign_settings()
        rebuild = False
        if factor is not None and not self.spike_compiled:
            self.spike_compiled = rebuild = True
        if factor is not None and mode == "clip" and not self.spike_clip_compiled:
            self.spike_clip_compiled = rebuild = True
        return rebuild

    def set_lr_multiplier(self, multiplier: float) -> bool:
        """Scales every update by `multiplier` (the learning rate in use).

        The update is the inner optimizer's times `multiplier`, which equals
        training with `learning_rate * multiplier` for every Keras optimizer
        (their updates are linear in the learning rate). Schedules,
        `LearningRateScheduler` and `ReduceLROnPlateau` set the inner
        learning rate and cannot undo it. It lives with the monitor; a saved
        model stores the rate in use (`save_own_variables`);
        `set_lr_multiplier(1.0)` ends it.

        Returns:
            True when the caller must rebuild the train function.
        """
        self.lr_multiplier = float(multiplier)
        self._assign_settings()
        if multiplier != 1.0:
            return self.compile_lr_multiplier()
        return False

    def compile_lr_multiplier(self) -> bool:
        """Compiles the learning-rate multiplier into the step now, at 1.0.

        NaNGuard calls it before a `fit` whose rollbacks may cut the rate,
        so that the cut needs no retrace mid-fit.

        Returns:
            True when the caller must rebuild the train function.
        """
        if self.lr_scale_compiled:
            return False
        self.lr_scale_compiled = True
        return True

    def _settings(self) -> dict:
        """The per-fit settings the compiled step reads, by variable name."""
        spike = self.spike_setting
        return {
            "autoclip_percentile": self.autoclip_percentile or 0.0,  # 0: off
            "autoclip_window": self.autoclip_history,
            "spike_factor": spike.factor,  # 0: off
            "spike_window": spike.window,
            "spike_min_history": spike.min_history,
            "spike_clip": spike.clip,
            "lr_multiplier": self.lr_multiplier,
        }

    def _assign_settings(self):
        """Writes the settings that changed to their variables.

        Only these setters write them (from `build`'s initial values on), so
        the values last written are known: a `fit` that sets what the last
        one set writes nothing (an eager assign is ~1-3 ms on a busy CPU,
        and `begin_fit` / `end_fit` run at every `fit`).
        """
        if not self.built:
            return
        written = self._settings_written
        for name, value in self._settings().items():
            value = np.float32(value)
            if written.get(name) != value:
                getattr(self, f"_{name}").assign(value)
                written[name] = value

    # -- per fit -----------------------------------------------------------

    def begin_fit(self, params: dict) -> None:
        """Starts a `fit` call: per-fit settings go back to the monitor's own.

        Every gradguard callback calls this in `on_train_begin` with its
        `self.params` (one dict shared by all callbacks of a `fit` call), so
        the first one of each `fit` resets what an earlier `fit` switched on
        and could not switch off (an exception skips `on_train_end`).
        """
        if self._fit_params is params:
            return
        # Set past Keras' attribute tracking, which would store a copy of the dict.
        object.__setattr__(self, "_fit_params", params)
        self.end_fit()

    def end_fit(self) -> None:
        """Ends a `fit` call: per-fit settings (AutoClip, AGC, ZClip, spike gate) go back."""
        if (self.autoclip_percentile, self.autoclip_history) != self._base_autoclip:
            self.set_autoclip(*self._base_autoclip)
        adaptive = self.adaptive
        if adaptive.config() != adaptive.base:
            self.set_agc(None)
            self.set_zclip(None)
            base = adaptive.base
            self.set_agc(base["agc"], base["agc_eps"])
            self.set_zclip(base["zclip"], base["zclip_alpha"], base["zclip_warmup"])
        if self.spike_setting.factor:  # NaNGuard's spike gate is per fit too
            self.set_spike_gate(None)

    def require_skip(self) -> bool:
        """Turns the non-finite skip on; True when the step must be retraced."""
        if self.skip_nonfinite:
            return False
        self.skip_nonfinite = True
        return True

    def require_combined_sparse(self) -> bool:
        """Hands on `IndexedSlices` with repeated rows summed; True: retrace.

        Keras clips an `IndexedSlices` row by row, so a token seen k times
        can move k times past a `clipvalue`. `GradientClipping` asks for
        the summed rows on a model with an `Embedding`, so that its bound
        holds for the update itself. Off by default: a monitor hands the
        inner optimizer the gradients Keras would (a logger changes
        nothing).
        """
        if self.combine_sparse:
            return False
        self.combine_sparse = True
        return True

    def require_weight_check(self) -> bool:
        """Turns the weight check on; True when the step must be retraced."""
        if self.check_weights:
            return False
        self.check_weights = True
        return True

    def continue_steps_from(self, last_step: int) -> bool:
        """Numbers this monitor's next step `last_step + 1` (after a recompile).

        Returns:
            True when the step offset changed (the step must be retraced).
        """
        counter = step_counter(self.inner_optimizer)
        offset = max(0, int(last_step) - to_int(counter))
        changed = offset != self.step_offset
        self.step_offset = offset
        return changed

    def with_history(self, history: int):
        """A new monitor around the same optimizer, with a longer ring and these settings."""
        monitor = type(self)(
            self.inner_optimizer,
            history=history,
            autoclip_percentile=self.autoclip_percentile,
            autoclip_history=self.autoclip_history,
            skip_nonfinite=self.skip_nonfinite,
            check_weights=self.check_weights,
            **self.adaptive.base,
        )
        monitor.adaptive.copy_settings(self.adaptive)
        monitor.combine_sparse = self.combine_sparse
        return monitor

    @property
    def loss_scaled(self) -> bool:
        """True when a LossScaleOptimizer inside handles non-finite steps."""
        return loss_scaler(self.inner_optimizer) is not None
