"""`NaNEvent`: one NaNGuard event, and the causes it can name."""

from __future__ import annotations

import dataclasses

CAUSES = (
    "learning_rate", "input_scale", "target_scale", "depth", "recurrence",
    "bad_data", "loss_scale", "transient_spike", "unknown",
)


@dataclasses.dataclass(frozen=True)
class NaNEvent:
    """One NaNGuard event: what was caught, its cause, and what was done.

    Read it as attributes (`event.cause`) or as a mapping (`event["cause"]`,
    as in earlier versions, where events were dicts); `to_dict()` gives the
    JSON report's form. `step` is the global step; `epoch` and `batch` are
    0-based. The guard fills the last seven fields once it has acted.
    """

    trigger: str  # nonfinite_gradient, nonfinite_weights, gradient_spike, nonfinite_loss, loss_scale, ...
    step: int
    epoch: int
    batch: int
    detail: str  # what the monitor saw, one clause
    cause: str  # one of CAUSES
    evidence: str  # why that cause, with numbers
    cure: str  # what to change, with numbers
    suspects: tuple = ()  # variables that left their median first (`rank_suspects`)
    onset_step: int = 0  # where the failure began (the snapshot restored is older)
    growth: float | None = None  # `measure_growth`: recent max / median
    last_applied_norm: float | None = None
    learning_rate: float = 0.0  # the rate in use (with a rollback's cut)
    first_nonfinite_variable: str | None = None
    first_nonfinite_layer: str | None = None  # None when every gradient is non-finite
    nonfinite_variables: int = 0  # how many variables' gradients were non-finite
    loss_scale: dict | None = None  # `LossScaleWatch`'s finding
    method: str = "rules"  # "replay" when an experiment named the cause (`replay.py`)
    replays: tuple = ()  # the replays run: {"change", "loss", "loss_after", "finite"}
    replay_seconds: float | None = None  # from the event to its diagnosis (replays included)
    action: str = ""  # stop, raise, rollback, skip, clip or warn
    weights: dict | None = None  # step held, restored, kept_last
    restored_step: int | None = None
    new_learning_rate: float | None = None
    moments_reset: list | None = None  # slots `reset_moments=True` set back to zero
    skipped_batches: list | None = None  # `skip_batches`: filled as the batches pass
    message: str = ""

    def __getitem__(self, key: str):
        if key not in self.__dataclass_fields__:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default=None):
        return getattr(self, key, default)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
