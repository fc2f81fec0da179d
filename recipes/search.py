"""The doctor's search: every cure family, ranked by the evidence, stacked.

`rank` orders the whole catalogue for one examination: the cures the
static findings name (facts about the set-up, found before training) come
first, then the named cause's own list (`PRIORS`, argued in
docs/doctor.md), then a learning-rate range test, then every other family.
Nothing is left out because the cause was named otherwise: a wrong name
costs trials, not the answer.

`search` trains them one by one on fresh, faithful copies. A cure that
improves (validation loss over the constant prediction's at most
`IMPROVES` x the best so far, without a guard event) but does not learn is
kept, and the next cure is stacked on it; stacked cures are applied in
`cures.KINDS` order (data, layers, output and loss, Normalization in
front, optimizer), and so is their code printed. The static findings'
cures are kept whatever their own trial shows: they fix facts. It stops at the first
trial that learns (or ranks all with `try_all`), after `max_trials`
trained trials or `max_seconds`. A kept stack that is still improving at
its last epoch is retrained at once for `EXTEND` x the epochs, before
anything is stacked on it.
"""

from __future__ import annotations

import math
import time

import pandas as pd

from . import cures as C
from . import output_cures as O

IMPROVES = 0.8  # val/trivial at most this x the best so far: kept, and stacked on
BEATS_CONSTANT = 0.95  # and below this x the constant prediction's: a trial 0 that exploded
# makes a constant output (val/trivial ~1) look like progress
EXTEND = 4  # a kept stack still improving at the end is retrained for this x the epochs

CATALOGUE = (  # every cure, in the order tried after the evidence's
    C.LR_FINDER, C.LR_10, C.LR_100, C.ADAM, C.ADAM_FOUND, C.NORMALIZE, O.TARGET_SCALE, C.FAN_IN,
    C.BATCH_NORM, C.RELU, C.SELU, C.LEAKY, C.ELU, C.CLIP, C.ORTHOGONAL, C.LSTM,
    C.FLOAT32_OUTPUT, O.LOGITS, O.LINEAR_OUTPUT, C.DROP_ROWS,
)
BY_NAME = {cure.name: cure for cure in CATALOGUE}
SCALES_RATE = (C.LR_10, C.LR_100)  # relative to the rate before: they compound when stacked
SETS_RATE = (C.LR_FINDER,)  # sets the rate of the optimizer in use: a kept scaling is dropped
SWITCHES = (C.ADAM, C.ADAM_FOUND)  # set the optimizer and its rate: a kept rate is dropped too
# Within the optimizer kind, stacked cures apply in this order: which optimizer,
# then its rate (a range test stacked on a kept Adam tunes Adam's), then its
# clipping (which a switch of optimizer would otherwise drop).
OPTIMIZER_ORDER = (*SWITCHES, *SETS_RATE, *SCALES_RATE, C.CLIP)

# Each cause's (or problem's) own cures, first after the static findings'.
PRIORS = {
    "learning_rate": (C.LR_10, C.LR_FINDER, C.LR_100, C.CLIP, C.ADAM, C.ADAM_FOUND),
    "input_scale": (C.NORMALIZE, C.LR_10, C.CLIP),
    "depth": (C.FAN_IN, C.BATCH_NORM, C.CLIP, C.LR_10),
    "vanishing": (C.FAN_IN, C.RELU, C.BATCH_NORM, C.SELU, C.LEAKY, C.ADAM),
    "dying_relu": (C.FAN_IN, C.LEAKY, C.ELU, C.BATCH_NORM),
    "recurrence": (C.CLIP, C.ORTHOGONAL, C.LSTM, C.LR_10, C.LR_100),
    "bad_data": (C.DROP_ROWS,),
    "loss_scale": (C.FLOAT32_OUTPUT, C.LR_10, C.CLIP),
    "unknown": (C.LR_FINDER, C.LR_10, C.CLIP, C.ADAM, C.ADAM_FOUND),
}


def rank(findings, cause: str, problem: str) -> list[tuple[C.Cure, ...]]:
    """The candidates, each a tuple of cures to add to the kept stack.

    Every cure once, in this order: the static findings' cures (first all
    of them together when there are several: facts found before training,
    such as inputs *and* targets in the thousands, that each fail alone),
    the cause's own, then the catalogue.
    """
    named = list(dict.fromkeys(BY_NAME[f.cure] for f in findings if f.cure in BY_NAME))
    prior = PRIORS.get(problem) or PRIORS.get(cause, PRIORS["unknown"])
    single = [(cure,) for cure in dict.fromkeys([*named, *prior, *CATALOGUE])]
    return [tuple(named), *single] if len(named) > 1 else single


def stacked(trainer, cures: list[C.Cure], context: C.Context) -> C.Patient:
    """A fresh patient with `cures` applied in `cures.KINDS` order, the optimizer's in
    `OPTIMIZER_ORDER` (stable otherwise)."""
    patient = trainer.patient()
    for cure in sorted(cures, key=lambda c: (C.KINDS.index(c.kind), OPTIMIZER_ORDER.index(c)
                                             if c in OPTIMIZER_ORDER else 0)):
        patient = cure.apply(patient, context)
    return patient


def search(trainer, first: dict, findings, context: C.Context, *, max_trials: int,
           max_seconds: float | None, try_all: bool, say) -> None:
    """Trains ranked cures, stacking the ones that improve, within the budget."""
    done = trainer.finished()
    start = time.perf_counter()
    trained = 1  # trial 0; resumed trials count again as they are read back
    best = float(done["val/trivial"].iloc[0]) if len(done) else math.inf
    best = best if math.isfinite(best) else math.inf
    kept: list[C.Cure] = []
    improving: list[C.Cure] | None = None  # the best stack, while its curve still falls
    extended: list[list[C.Cure]] = []  # stacks given their longer run already
    number = 0  # the trial numbers: every candidate's, and each longer run's
    named = tuple(dict.fromkeys(BY_NAME[f.cure] for f in findings if f.cure in BY_NAME))
    for add in rank(findings, first["cause"], first["problem"]):
        if trained >= max_trials or (not try_all and trainer.winner() is not None):
            break
        if max_seconds is not None and time.perf_counter() - start > max_seconds:
            say(f"stopped: the time budget of {max_seconds:g} s is spent")
            break
        number += 1
        if all(c in kept for c in add):  # tried already, as part of the kept stack
            continue
        drop = SCALES_RATE if any(c in SETS_RATE for c in add) else ()
        drop = SCALES_RATE + SETS_RATE + SWITCHES if any(c in SWITCHES for c in add) else drop
        stack = [c for c in kept if c not in drop]
        stack += [c for c in add if c not in stack]
        row = _trial(trainer, done, number, stack, context, say)
        if row is None:
            continue
        trained += 1
        ratio = float(row["val/trivial"]) if pd.notna(row["val/trivial"]) else math.inf
        if not row["learned"] and pd.isna(row["exploded_step"]) and math.isfinite(ratio) \
                and ratio <= IMPROVES * best and ratio < BEATS_CONSTANT:
            kept, best = stack, ratio
            improving = stack if row["trend"] == "improving" else None
            say(f"  kept: {' + '.join(c.name for c in add)} improves (val/trivial {ratio:.3g}); "
                "the next cure stacks on it")
        elif not row["learned"] and not kept and set(add) == set(named):
            # The static findings' cures fix facts found before training (fan-in
            # for an output 100x the targets', Normalization for inputs in the
            # thousands): the next cure stacks on them even when they alone
            # did not help (a deep stack at its right initialization may still
            # need a lower learning rate).
            kept = stack
            improving = stack if row["trend"] == "improving" and pd.isna(row["exploded_step"]) else None
            say(f"  kept: {' + '.join(c.name for c in add)}, the static findings' cures; "
                "the next cure stacks on them")
        # A kept stack still improving at its last epoch gets its longer run
        # (EXTEND x the epochs) next, before other cures are stacked on it: a
        # right cure that learns slowly is not rejected for its speed, and the
        # trials other cures would spend around it are saved.
        if improving and improving not in extended and not try_all and trained < max_trials:
            extended.append(improving)
            number += 1
            if _trial(trainer, done, number, improving, context, say,
                      epochs=trainer.epochs * EXTEND) is not None:
                trained += 1


def _trial(trainer, done, number: int, stack: list[C.Cure], context, say, epochs=None):
    """The row of trial `number` (read back on a resume, else trained); None: not applicable."""
    name = " + ".join(c.name for c in stack) + (f" ({epochs} epochs)" if epochs else "")
    if number in set(done["trial"]):  # resumed: recorded before the interruption
        row = done[done["trial"] == number].iloc[0]
        return None if row["note"] else row
    try:
        patient = stacked(trainer, stack, context)
    except C.NotApplicable as reason:
        trainer.record_not_applicable(number, name, str(reason))
        say(f"trial {number} ({name}): not applicable: {reason}")
        return None
    row = trainer.train(number, name, patient, epochs=epochs).row
    say(f"trial {number} ({name}): val/trivial {row['val/trivial']:.3g}, "
        f"trend {row['trend'] or '-'}, learned {row['learned']}")
    return row
