"""AGC and ZClip as a `GradientMonitor` runs them: settings and statistics in named variables.

`MonitorClipping` belongs to one `GradientMonitor`. It creates its variables
through the monitor (`add_variable`, so JAX's stateless step carries them
and checkpoints do not: the monitor saves only the inner optimizer), is the
only code that writes them, and clips inside the compiled step with the
pure helpers of `adaptive_clipping.py`. As with AutoClip, each mode's code
is compiled into the step the first time it is asked for; after that it is
switched on and off by its setting variable, without a retrace.
"""

from __future__ import annotations

import numpy as np
from keras import ops

from . import norms
from .adaptive_clipping import ZClipState, adaptive_grad_clip, zclip_boundary, zclip_update
from .validation import check, is_int, is_number

OWNER = "GradientMonitor"


def check_agc(owner: str, clipping_: float | None, eps: float) -> None:
    """Validates AGC's ratio and epsilon."""
    check(clipping_ is None or (is_number(clipping_) and clipping_ > 0), owner,
          "clipping" if owner == "AGC" else "agc", clipping_, "a number > 0")
    check(is_number(eps) and eps >= 0, owner,
          "eps" if owner == "AGC" else "agc_eps", eps, "a number >= 0")


def check_zclip(owner: str, z: float | None, alpha: float, warmup: int) -> None:
    """Validates ZClip's z-score threshold, EMA factor and warm-up."""
    prefix = "" if owner == "ZClip" else "zclip_"
    check(z is None or (is_number(z) and z > 0), owner,
          "z_threshold" if owner == "ZClip" else "zclip", z, "a number > 0")
    check(is_number(alpha) and 0 <= alpha < 1, owner, f"{prefix}alpha", alpha,
          "a number in [0, 1)")
    check(is_int(warmup) and warmup >= 1, owner,
          "warmup_steps" if owner == "ZClip" else "zclip_warmup", warmup,
          "an int >= 1")


class MonitorClipping:
    """The AGC and ZClip modes of one `GradientMonitor`.

    Args:
        agc: AGC's ratio lambda, or `None` (off).
        agc_eps: AGC's floor on the weight norm.
        zclip: ZClip's z-score threshold, or `None` (off).
        zclip_alpha: ZClip's EMA factor.
        zclip_warmup: ZClip's warm-up steps.
    """

    def __init__(self, agc=None, agc_eps=1e-3, zclip=None, zclip_alpha=0.97,
                 zclip_warmup=25):
        check_agc(OWNER, agc, agc_eps)
        check_zclip(OWNER, zclip, zclip_alpha, zclip_warmup)
        if agc is not None and zclip is not None:
            raise ValueError(
                f"GradientMonitor received agc={agc!r} and zclip={zclip!r}; "
                "use one clipping mode only."
            )
        self.agc, self.agc_eps = agc, float(agc_eps)
        self.zclip, self.zclip_alpha, self.zclip_warmup = zclip, float(zclip_alpha), int(zclip_warmup)
        self.base = self.config()  # what `fit` calls go back to
        self.agc_compiled = agc is not None
        self.zclip_compiled = zclip is not None
        self.built = False

    def config(self) -> dict:
        return {"agc": self.agc, "agc_eps": self.agc_eps, "zclip": self.zclip,
                "zclip_alpha": self.zclip_alpha, "zclip_warmup": self.zclip_warmup}

    @property
    def mode(self) -> str | None:
        """`"AGC(...)"`, `"ZClip(...)"` or `None`."""
        if self.agc is not None:
            return f"AGC(clipping={self.agc})"
        if self.zclip is not None:
            return f"ZClip(z_threshold={self.zclip})"
        return None

    def set_agc(self, ratio: float | None, eps: float = 1e-3) -> bool:
        """Turns AGC on (or off with `None`); True when the step must be retraced."""
        check_agc(OWNER, ratio, eps)
        self.agc, self.agc_eps = ratio, float(eps)
        self._assign()
        rebuild = ratio is not None and not self.agc_compiled
        self.agc_compiled |= ratio is not None
        return rebuild

    def set_zclip(self, z: float | None, alpha: float = 0.97, warmup: int = 25) -> bool:
        """Turns ZClip on (or off with `None`); True when the step must be retraced."""
        check_zclip(OWNER, z, alpha, warmup)
        self.zclip, self.zclip_alpha, self.zclip_warmup = z, float(alpha), int(warmup)
        self._assign()
        rebuild = z is not None and not self.zclip_compiled
        self.zclip_compiled |= z is not None
        return rebuild

    def copy_settings(self, other: MonitorClipping) -> None:
        """Takes over another monitor's current settings (before `build`)."""
        self.agc, self.agc_eps = other.agc, other.agc_eps
        self.zclip, self.zclip_alpha, self.zclip_warmup = (
            other.zclip, other.zclip_alpha, other.zclip_warmup)
        self.agc_compiled |= other.agc_compiled
        self.zclip_compiled |= other.zclip_compiled
        self._assign()

    def reset_statistics(self) -> None:
        """Forgets ZClip's statistics: the next step starts a new warm-up."""
        if self.built:
            for variable in (self._count, self._mean, self._var):
                variable.assign(ops.zeros_like(variable.value))

    def statistics(self) -> dict:
        """ZClip's `count`, `mean` and `std` as Python numbers (after `build`)."""
        return {"count": int(self._count.numpy()), "mean": float(self._mean.numpy()),
                "std": float(np.sqrt(max(float(self._var.numpy()), 0.0)))}

    def _settings(self) -> dict:
        """The settings the compiled step reads, by variable name."""
        return {"agc_ratio": self.agc or 0.0,  # 0: off
                "agc_eps": self.agc_eps,
                "zclip_z": self.zclip or 0.0,  # 0: off
                "zclip_alpha": self.zclip_alpha,
                "zclip_warmup": self.zclip_warmup}

    def _assign(self):
        if self.built:
            for name, value in self._settings().items():
                getattr(self, f"_{name}").assign(np.float32(value))

    def build(self, monitor) -> None:
        """Creates the variables, through `monitor.add_variable`."""

        def add(name, value, dtype="float32"):
            return monitor.add_variable(
                shape=np.shape(value), dtype=dtype, name=name,
                aggregation="only_first_replica",
                initializer=lambda shape, dtype: ops.convert_to_tensor(value, dtype),
            )

        # One named scalar per setting (`_agc_ratio`, `_zclip_z`, ...).
        for name, value in self._settings().items():
            setattr(self, f"_{name}", add(f"gg_{name}", np.float32(value)))
        self._count = add("gg_zclip_count", np.int32(0), "int32")
        self._mean = add("gg_zclip_mean", np.float32(0))
        self._var = add("gg_zclip_var", np.float32(0))
        self.built = True

    def clip(self, grads, weights, ok, norm, norm_clipped, threshold, scale):
        """Applies AGC or ZClip inside the step.

        Args:
            grads: the gradients (loss-scaled when `scale` is not None).
            weights: the weight values, one per gradient.
            ok: bool scalar, the gradients are finite.
            norm: the unscaled global norm before clipping.
            norm_clipped, threshold: what the other clipping modes decided.
            scale: the loss scale, or None.

        Returns:
            `(grads, norm_clipped, threshold)`.
        """
        if self.agc_compiled:
            ratio, eps = self._agc_ratio.value, self._agc_eps.value
            limit = ops.where(ratio > 0, ratio, float("inf"))
            if scale is not None:  # the scaled gradient against scale x lambda
                limit = limit * ops.cast(scale, "float32")
            # A sparse gradient (Embedding) is clipped per unit densified.
            grads = [ops.convert_to_tensor(g) if norms.is_sparse(g) else g for g in grads]
            grads = adaptive_grad_clip(grads, weights, limit, eps)
            after = norms.global_norm(ops.sqrt(ops.stack(norms.squared_norms(grads))))
            if scale is not None:
                after = after / ops.cast(scale, "float32")
            norm_clipped = ops.where(ratio > 0, after, norm_clipped)
        if self.zclip_compiled:
            z, alpha = self._zclip_z.value, self._zclip_alpha.value
            warmup = ops.cast(self._zclip_warmup.value, "int32")
            on = z > 0
            state = ZClipState(self._count.value, self._mean.value, self._var.value)
            fed = ops.where(ok & on, norm, float("nan"))  # NaN: statistics unchanged
            clip_to, new = zclip_update(
                state, fed, z_threshold=ops.where(on, z, 1.0), alpha=alpha,
                warmup_steps=warmup,
            )
            self._count.assign(new.count)
            self._mean.assign(new.mean)
            self._var.assign(new.var)
            grads = norms.scale_by_threshold(grads, norm, clip_to)
            norm_clipped = ops.minimum(norm_clipped, clip_to)
            bound = ops.where(ops.isfinite(clip_to), clip_to,
                              zclip_boundary(state, z, warmup))
            threshold = ops.where(on, bound, threshold)
        return grads, norm_clipped, threshold
