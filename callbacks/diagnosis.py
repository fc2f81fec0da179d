"""NaNGuard's judgment: what failed, why, and the cure (numpy in, `NaNEvent` out).

Pure functions of the monitor's record (a `GradientRecord`, numpy arrays)
and of a few numbers the guard measured on the model when the fit began.
Nothing here touches Keras: each rule is unit-tested on small arrays
(tests/callbacks/test_diagnosis.py), and its constants are defined once,
beside it, with the population that set them (`python -m benchmarks.diagnosis`,
docs/nan_guard.md).

This module gathers them from their homes, one concern each (and keeps
every earlier import working):

- `nan_event.py`: `NaNEvent` and `CAUSES`;
- `norm_history.py`: running medians, growth, suspects, a clip value;
- `structure_signs.py`: kernel gains, recurrent gain, input ratio;
- `loss_rules.py`: batch losses, loss growth, rise and stall;
- `blowup_rules.py`: the first steps and spikes a clip held;
- `cause_rules.py`: finding an event and naming its cause.
"""

from __future__ import annotations

from .cause_rules import _loss_scale, diagnose, find_event, name_cause  # noqa: F401
from .loss_rules import (  # noqa: F401
    LOSS_GROWTH, LOSS_RISE, SENSITIVITY, SENSITIVITY_FALL, SENSITIVITY_LOSS, STALL_LOSS,
    STALL_STEPS, batch_loss,
    early_level, find_stall, first_step_sensitivity, loss_has_grown, loss_has_risen,
    windows_flat,
)
from .nan_event import CAUSES, NaNEvent  # noqa: F401
from .norm_history import (  # noqa: F401
    CLIP_PERCENTILE, GROWTH_FACTOR, MIN_PERIODS, NORM_FLOOR, RECENT, SUSPECT_FACTOR,
    measure_growth, rank_suspects, running_median, suggest_clip,
)
from .structure_signs import (  # noqa: F401
    DEPTH_GAIN, INPUT_SCALE, MIN_DEPTH, RECURRENT_GAIN, WEIGHT_GROWTH, input_ratio,
    kernel_gains, structural_sign, ungated_recurrent_gain,
)
