"""The doctor's trials: a fresh copy of the user's set-up, trained and judged.

`Bar` is the learned bar, measured once from the data: the constant
prediction's validation loss (regression) or the majority class's accuracy
(classification). `Trainer` builds each trial's `Patient` as a faithful
copy of the user's model (`model.save` + `load_model`, in memory; the same
initial weights every time) and its compile config, trains it under
`NaNGuard()`'s defaults and a `GradientNormLogger`, and keeps
the run folder: results.csv appended per trial, a TensorBoard run per trial,
the first trial's findings and each learned model, so that an interrupted
examination resumes where it stopped.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import pathlib
import time
import warnings

import keras
import numpy as np
import pandas as pd

from gradguard.callbacks import GradientNormLogger, NaNGuard
from gradguard.callbacks.model_copy import model_bytes, model_from_bytes

from .cures import Patient, finite_rows
from .epoch_summary import EpochSummary
from .run_files import RunFolderInvalid, write_atomic
from .safe_paths import check_no_links, remove_inside

LEARNED_RATIO = 0.1  # val loss at most this x the constant prediction's (regression)
ACCURACY_MARGIN = 0.5  # accuracy >= majority + this x (1 - majority) (classification)
RELATIVE = 0.5  # or: no event, val/trivial at most this and this x trial 0's, and no longer falling
IMPROVING = 0.97  # last epoch's val loss below this x every earlier epoch's: still improving
DIVERGING = 1.5  # last epoch's val loss above this x the best epoch's: diverging
COLUMNS = ["trial", "change", "exploded_step", "val_loss", "val/trivial", "accuracy", "trend",
           "learned", "wall_time_s"]


FINDINGS = {"cause": str, "problem": str, "evidence": str, "bad_rows": list}  # findings.json's keys


def read_trials(out: pathlib.Path) -> list[dict]:
    """The trials an interrupted examination recorded in `out/results.csv`, checked.

    Raises:
        RunFolderInvalid: With one line naming the file, the row or column
            and the fix, for a link in the folder, a damaged file, a column
            the doctor never writes, a trial number that is not a whole
            number >= 0, a trial twice, no trial 0, or a value that is not
            a number where the doctor writes numbers.
    """
    check_no_links(out, "--out")
    path = out / "results.csv"
    where = f"--out: {str(path)!r}"
    fix = "move results.csv and findings.json away to examine the model again"
    try:  # its code column holds lines: quoted fields over several lines
        table = pd.read_csv(path, keep_default_na=False, na_values=[""], encoding="utf-8")
    except (OSError, ValueError, pd.errors.ParserError) as error:  # UnicodeDecodeError too
        reason = getattr(error, "strerror", None) or str(error).splitlines()[0]
        raise RunFolderInvalid(f"{where} is damaged ({reason[:100]}); {fix}.") from None
    known = {*COLUMNS, "note", "code"}
    foreign = [c for c in table.columns if c not in known]
    missing = [c for c in ("trial", "change", "val/trivial", "learned") if c not in table.columns]
    if foreign or missing:
        raise RunFolderInvalid(f"{where} has " + (f"columns {foreign} the doctor never writes" if foreign
                               else f"no column {missing}") + f"; {fix}.")
    numbers = pd.to_numeric(table["trial"], errors="coerce")
    bad = table["trial"][~(numbers.notna() & (numbers >= 0) & (numbers == numbers.round()))]
    if len(bad):
        raise RunFolderInvalid(f"{where} holds trial {_shown(bad.iloc[0])}, not a whole number >= 0; {fix}.")
    twice = numbers[numbers.duplicated()]
    if len(twice):
        raise RunFolderInvalid(f"{where} holds trial {int(twice.iloc[0])} twice; {fix}.")
    if len(table) and 0 not in set(numbers):
        raise RunFolderInvalid(f"{where} has no trial 0 (the model as given); {fix}.")
    for column in ("exploded_step", "val_loss", "val/trivial", "accuracy", "wall_time_s"):
        if column in table:
            values = pd.to_numeric(table[column], errors="coerce")
            wrong = table[column][values.isna() & table[column].notna()]
            if len(wrong):
                raise RunFolderInvalid(f"{where}: {column} {_shown(wrong.iloc[0])} is not a number; {fix}.")
    learned = table["learned"].map(lambda v: {True: True, False: False, "True": True, "False": False}.get(v))
    if learned.isna().any():
        raise RunFolderInvalid(f"{where}: learned {_shown(table['learned'][learned.isna()].iloc[0])} is "
                               f"not True or False; {fix}.")
    table = table.assign(trial=numbers.astype(int), learned=learned.astype(bool))
    return table.sort_values("trial").to_dict("records")


def _shown(value) -> str:
    """A value read from a CSV as Python writes it (`-1`, `'abc'`), not numpy's repr."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def read_findings(path: pathlib.Path) -> dict:
    """Trial 0's findings from `findings.json`, checked (`RunFolderInvalid` names the fix)."""
    fix = "move results.csv and findings.json away to examine the model again"
    try:
        findings = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise RunFolderInvalid(f"--out: {str(path)!r} cannot be read "
                               f"({getattr(error, 'strerror', None) or str(error)[:80]}); {fix}.") from None
    for key, kind in FINDINGS.items():
        if not isinstance(findings, dict) or not isinstance(findings.get(key), kind):
            raise RunFolderInvalid(f"--out: {str(path)!r} has no {key} ({kind.__name__}) as the "
                                   f"doctor writes it; {fix}.")
    if not isinstance(findings.get("clip_norm"), (int, float, type(None))) or "clip_norm" not in findings:
        raise RunFolderInvalid(f"--out: {str(path)!r} has no clip_norm (a number or null) as the "
                               f"doctor writes it; {fix}.")
    return findings


def split_data(x, y, validation_data, validation_split: float) -> tuple:
    """`(x, y, x_val, y_val)`: `validation_data`, or the last rows, as Keras splits them."""
    if validation_data is not None:
        return (x, y, *validation_data)
    n = len(y)
    cut = n - max(1, int(round(n * validation_split)))
    head = lambda a: [v[:cut] for v in a] if isinstance(a, (list, tuple)) else a[:cut]  # noqa: E731
    tail = lambda a: [v[cut:] for v in a] if isinstance(a, (list, tuple)) else a[cut:]  # noqa: E731
    return head(x), head(y), tail(x), tail(y)


@dataclasses.dataclass(frozen=True)
class Bar:
    """When a trial learned: the trivial baseline and the target."""

    kind: str  # "regression" or "classification"
    loss: object  # the compiled loss (a function or a keras Loss)
    trivial: float  # the constant prediction's validation loss
    majority: float | None  # the majority class's validation accuracy
    target: float  # val/trivial at most this, or accuracy at least this
    labels: str = ""  # "sparse", "onehot" or "binary"
    from_logits: bool = False

    @classmethod
    def measure(cls, model, data, target: float | None) -> "Bar":
        x, y, x_val, y_val = data
        # The constant prediction and the scores use the finite rows only: the
        # doctor judges the model; NaN/inf rows are `bad_data`'s evidence.
        y = np.asarray(y)[np.isfinite(np.asarray(y, np.float64)).reshape(len(y), -1).all(1)]
        y_val = np.asarray(y_val)[finite_rows(x_val, y_val)]
        loss = model.loss
        if isinstance(loss, (list, tuple, dict)):
            raise ValueError("examine supports a model with one loss; received "
                             f"loss={loss!r}.")
        loss = keras.losses.get(loss) if isinstance(loss, str) else loss
        name = (getattr(loss, "name", None) or getattr(loss, "__name__", "")).lower()
        y_train = np.asarray(y, np.float64)
        y_val = np.asarray(y_val, np.float64)
        config = loss.get_config() if hasattr(loss, "get_config") else {}
        logits = bool(config.get("from_logits", False))
        if "crossentropy" in name:
            labels = "sparse" if "sparse" in name else "binary" if "binary" in name else "onehot"
        else:  # a loss of the user's own: class labels into probabilities are a classifier too
            labels = probability_labels(model, y_train)
        if labels is None:
            constant = np.broadcast_to(y_train.mean(axis=0), y_val.shape)
            trivial = mean_loss(loss, y_val, constant)
            return cls("regression", loss, trivial, None,
                       LEARNED_RATIO if target is None else float(target))
        if labels == "sparse":
            classes = int(max(y_train.max(), y_val.max())) + 1
            prior = np.bincount(y_train.astype(int).ravel(), minlength=classes) / y_train.size
            majority = float(np.mean(y_val.ravel() == prior.argmax()))
            shape = (len(y_val), classes)
        elif labels == "onehot":
            prior = y_train.mean(axis=0)
            majority = float(np.mean(y_val.argmax(-1) == prior.argmax()))
            shape = y_val.shape
        else:
            prior = np.array(y_train.mean())
            majority = float(np.mean((y_val > 0.5) == (prior > 0.5)))
            shape = y_val.shape
        prior = np.clip(prior, 1e-7, 1 - 1e-7)
        if logits:
            prior = np.log(prior / (1 - prior)) if labels == "binary" else np.log(prior)
        trivial = mean_loss(loss, y_val, np.broadcast_to(prior, shape))
        bar = majority + ACCURACY_MARGIN * (1 - majority) if target is None else float(target)
        return cls("classification", loss, trivial, majority, bar, labels, logits)

    def score(self, model, x_val, y_val) -> dict:
        """val_loss, val/trivial, accuracy (classification) and learned."""
        if not all(np.isfinite(w).all() for w in model.get_weights()):
            return {"val_loss": math.inf, "val/trivial": math.inf, "accuracy": None, "learned": False}
        keep = finite_rows(x_val, y_val)
        x_val = [a[keep] for a in x_val] if isinstance(x_val, (list, tuple)) else x_val[keep]
        pred = predict(model, x_val).astype(np.float64)
        y_val = np.asarray(y_val, np.float64)[keep]
        val = mean_loss(self.loss, y_val, pred)
        val = val if math.isfinite(val) else math.inf
        ratio = val / self.trivial
        if self.kind == "regression":
            return {"val_loss": val, "val/trivial": ratio, "accuracy": None,
                    "learned": bool(ratio <= self.target)}
        if self.labels == "binary":
            guess = pred > (0.0 if self.from_logits else 0.5)
            accuracy = float(np.mean(guess.reshape(y_val.shape) == (y_val > 0.5)))
        else:
            truth = y_val.ravel() if self.labels == "sparse" else y_val.argmax(-1)
            accuracy = float(np.mean(pred.argmax(-1) == truth))
        return {"val_loss": val, "val/trivial": ratio, "accuracy": accuracy,
                "learned": bool(accuracy >= self.target)}


def probability_labels(model, y: np.ndarray) -> str | None:
    """"binary" or "onehot" for 0/1 targets into a sigmoid or softmax output, else None.

    A custom loss (binary cross-entropy written by hand) has no
    "crossentropy" in its name; its targets and the output say what it is.
    Judged as regression, a classifier would need its loss at 0.1 x the
    constant prediction's, which a right cure may never reach.
    """
    from .static_checks import output_activation

    activation, units = output_activation(model)
    if y.size == 0 or not np.isin(y, (0.0, 1.0)).all():
        return None
    if activation == "sigmoid":
        return "binary"
    if activation == "softmax" and units > 1 and y.ndim == 2 and y.shape[-1] == units \
            and np.all(y.sum(-1) == 1):
        return "onehot"
    return None


def predict(model, x, batch_size: int = 1024) -> np.ndarray:
    """`model(x)` in eager batches: no `predict` function traced per fresh copy."""
    arrays = x if isinstance(x, (list, tuple)) else [x]
    out = []
    for start in range(0, len(arrays[0]), batch_size):
        batch = [np.asarray(a[start:start + batch_size]) for a in arrays]
        value = model(batch if isinstance(x, (list, tuple)) else batch[0], training=False)
        out.append(value if isinstance(value, (list, tuple)) else [value])
    return [np.concatenate([keras.ops.convert_to_numpy(o[i]) for o in out])
            for i in range(len(out[0]))] if len(out[0]) > 1 else \
        np.concatenate([keras.ops.convert_to_numpy(o[0]) for o in out])


def mean_loss(loss, y_true, y_pred) -> float:
    """The loss averaged over the rows, in float32 as Keras computes it."""
    y_true, y_pred = np.asarray(y_true, np.float32), np.asarray(y_pred, np.float32)
    if y_true.ndim + 1 == y_pred.ndim and y_pred.shape[-1] == 1:  # (n,) labels, (n, 1) output
        y_true = y_true[..., None]
    value = loss(y_true, y_pred)
    return float(np.mean(keras.ops.convert_to_numpy(value)))


@dataclasses.dataclass
class Result:
    """One trained trial: its row and what trial 0's judgment reads."""

    row: dict
    events: list
    norms: pd.DataFrame  # GradientNormLogger.to_dataframe("global")
    layer_norms: pd.DataFrame  # GradientNormLogger.to_dataframe("layer")
    model: keras.Model  # the trained copy
    initial_weights: dict  # variable path -> array, before training


class Trainer:
    """Builds, trains and records the trials of one examination."""

    def __init__(self, model, data, bar: Bar, *, seed: int, epochs: int,
                 batch_size: int, out_dir: pathlib.Path | None):
        self.cls, self.config = type(model), model.get_config()
        self.compile_config = model.get_compile_config()
        # Every trial starts from the model as Keras' own saving round-trips
        # it (callbacks/model_copy.py): adapted Normalization statistics,
        # lookup vocabularies and custom layers' state come back as loading
        # rebuilds them, which from_config + set_weights does not do.
        try:
            self.saved = model_bytes(model)
        except (TypeError, ValueError) as error:
            warnings.warn(f"examine could not save the model ({error}); every trial is rebuilt "
                          "from its config and weights instead, which loses the state of "
                          "adapted preprocessing layers. Register custom layers with "
                          "@keras.saving.register_keras_serializable().", stacklevel=3)
            self.saved = None
        # An untrained model holds the initial weights its script made: every
        # trial starts from them (a config can lose an initializer's
        # arguments: Identity(gain=0.5) comes back as gain 1). A trained one
        # gets fresh trainable weights from its config with the seed, and
        # keeps its non-trainable state (adapted statistics).
        untrained = int(keras.ops.convert_to_numpy(model.optimizer.iterations)) == 0
        self.initial = model.get_weights() if untrained else None
        self.sample = data[0][:1] if not isinstance(data[0], (list, tuple)) else [a[:1] for a in data[0]]
        self.data, self.bar, self.seed = data, bar, seed
        self.epochs, self.batch_size, self.out = epochs, batch_size, out_dir
        self.rows: list[dict] = []
        self.reference = None  # trial 0's val/trivial
        self.models: dict[int, keras.Model] = {}
        if self.out is not None:
            self.out.mkdir(parents=True, exist_ok=True)
            # Trials are resumed only after trial 0's findings were saved.
            if (self.out / "results.csv").exists() and (self.out / "findings.json").exists():
                self.rows = read_trials(self.out)
                first = [r for r in self.rows if r["trial"] == 0]
                self.reference = float(first[0]["val/trivial"]) if first else None

    # -- the set-up as given ---------------------------------------------------

    def patient(self) -> Patient:
        """A fresh, faithful copy of the user's set-up, with the seed's initial weights."""
        keras.utils.set_random_seed(self.seed)
        if self.saved is not None:
            model = model_from_bytes(self.saved)
            if self.initial is None:
                fresh = self._from_config()
                for old, new in zip(model.trainable_variables, fresh.trainable_variables):
                    old.assign(new)
        else:
            model = self._from_config()
            if self.initial is not None:
                model.set_weights(self.initial)
        optimizer = keras.optimizers.deserialize(copy.deepcopy(self.compile_config["optimizer"]))
        if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
            optimizer = optimizer.inner_optimizer  # compile wraps it again under mixed_float16
        return Patient(model, optimizer, self.data)

    def _from_config(self):
        keras.utils.set_random_seed(self.seed)
        model = self.cls.from_config(copy.deepcopy(self.config))
        if not model.built:
            model(self.sample)
        return model

    # -- one trial ---------------------------------------------------------------

    def train(self, number: int, change: str, patient: Patient, epochs: int | None = None) -> Result:
        """Compiles and trains `patient` (`epochs`, default the trials'), judges it, appends its row."""
        model = patient.model
        kwargs = keras.saving.deserialize_keras_object(copy.deepcopy(self.compile_config))
        loss = patient.loss if patient.loss is not None else kwargs.get("loss")
        model.compile(**{**kwargs, "optimizer": patient.optimizer, "loss": loss})
        initial = {v.path: keras.ops.convert_to_numpy(v) for v in model.trainable_variables}
        tb = None
        if self.out is not None:
            tb = self.out / "tensorboard" / f"trial-{number}"
            remove_inside(self.out, tb)  # a trial trained but never recorded
        logger = GradientNormLogger(log_dir=None if tb is None else str(tb))
        # NaNGuard's own defaults, so the doctor and a user's guard agree on a run.
        guard = NaNGuard(verbose=False)
        x, y, x_val, y_val = patient.data
        keras.utils.set_random_seed(self.seed)
        start = time.perf_counter()
        history = model.fit(x, y, validation_data=(x_val, y_val), epochs=epochs or self.epochs,
                            batch_size=self.batch_size, verbose=0,
                            callbacks=[logger, guard, *([EpochSummary(tb)] if tb else [])])
        wall = time.perf_counter() - start
        norms = logger.to_dataframe("global")
        bad = norms["step"][~np.isfinite(norms["grad_norm"])].tolist()
        exploded = min([*bad[:1], *[int(e["step"]) for e in guard.events]], default=None)
        bar = self.bar
        if patient.loss is not None or patient.data is not self.data:  # scored on its own terms
            bar = dataclasses.replace(Bar.measure(model, patient.data, None), target=self.bar.target)
        score = bar.score(model, x_val, y_val)
        trend = curve_trend(history.history.get("val_loss", []))
        # A set-up learns without the guard stepping in: the user's script (trial 0)
        # and the cure they paste into it may have no guard. A guard that skipped
        # bad batches lets trial 0 score on the clean ones; as given, it was NaN.
        learned = exploded is None and (score["learned"] or (
            number > 0 and self.reference is not None and trend != "improving"
            and score["val/trivial"] <= RELATIVE * min(1.0, self.reference)))
        row = {"trial": number, "change": change, "exploded_step": exploded,
               "val_loss": score["val_loss"], "val/trivial": score["val/trivial"],
               "accuracy": score["accuracy"], "trend": trend, "learned": bool(learned),
               "wall_time_s": round(wall, 2), "note": "",
               "code": "\n".join(patient.code + compile_code(patient.optimizer, loss))}
        if number == 0:
            self.reference = score["val/trivial"]
        if learned or number == 0:
            self.models[number] = model
            if self.out is not None:
                save_model(model, self.out / "models" / f"trial-{number}.keras")
        self._append(row)
        layers = logger.to_dataframe("layer")
        if tb is not None:
            self._show(number, change, tb, guard.events, layers)
        return Result(row, guard.events, norms, layers, model, initial)

    def _show(self, number: int, change: str, tb: pathlib.Path, events: list, layers: pd.DataFrame) -> None:
        """The trial's gradient flow (a PNG, and an image in its TensorBoard run) and NaNGuard's words."""
        from .gradient_flow import gradient_flow, plot_gradient_flow
        from .tensorboard_report import write_guard_events, write_images

        write_guard_events(tb, events)
        if len(layers):
            png = plot_gradient_flow(gradient_flow(layers), self.out / f"gradient_flow-trial-{number}.png",
                                     title=f"trial {number} ({change}): gradient norm per layer and step")
            write_images(tb, [png])

    def record_not_applicable(self, number: int, change: str, reason: str) -> None:
        self._append({"trial": number, "change": change, "exploded_step": None,
                      "val_loss": None, "val/trivial": None, "learned": False,
                      "wall_time_s": 0.0, "accuracy": None, "trend": "",
                      "note": f"not applicable: {reason}", "code": ""})

    def _append(self, row: dict) -> None:
        self.rows.append(row)
        if self.out is not None:
            write_atomic(self.out / "results.csv", self.finished().to_csv(index=False))

    # -- the run folder ----------------------------------------------------------

    def finished(self) -> pd.DataFrame:
        """The trials recorded so far (read back from results.csv on a resume)."""
        table = pd.DataFrame(self.rows, columns=[*COLUMNS, "note", "code"])
        table["exploded_step"] = pd.to_numeric(table["exploded_step"]).astype("Int64")
        table["learned"] = table["learned"].astype(bool)
        table["accuracy"] = pd.to_numeric(table["accuracy"])  # None and a CSV's blank alike
        table[["note", "code", "trend"]] = table[["note", "code", "trend"]].astype(object).fillna("")
        return table

    def first_findings(self) -> dict | None:
        path = self.out / "findings.json" if self.out is not None else None
        if path is None or not path.exists() or not self.rows:
            return None
        return read_findings(path)

    def save_findings(self, findings: dict) -> None:
        self.findings = findings
        if self.out is not None:
            write_atomic(self.out / "findings.json", json.dumps(findings, indent=2) + "\n")

    def winner(self) -> int | None:
        """The learned trial with the lowest val/trivial (highest accuracy), if any."""
        table = self.finished()
        table = table[table["learned"].astype(bool) & (table["trial"] > 0)]
        if table.empty:
            return None
        key = "accuracy" if self.bar.kind == "classification" else "val/trivial"
        best = table.sort_values(key, ascending=self.bar.kind == "regression").iloc[0]
        return int(best["trial"])

    def finish(self, findings: dict, winner: int | None, static: tuple = ()):
        """The `Diagnosis`; writes summary.txt."""
        from .doctor import Diagnosis, report

        table = self.finished()
        number = 0 if findings["cause"] == "healthy" else winner
        model = None
        if number is not None:
            model = self.models.get(number)
            path = self.out / "models" / f"trial-{number}.keras" if self.out else None
            if model is None and path is not None and path.exists():
                model = keras.saving.load_model(path)
        chosen = table[table["trial"] == winner] if winner is not None else table.iloc[:0]
        found = Diagnosis(
            cause=findings["cause"], evidence=findings["evidence"], problem=findings["problem"],
            trials=table[[*COLUMNS, "note"]].reset_index(drop=True),
            bar=self.bar, findings=tuple(static),
            cure=None if chosen.empty else str(chosen["change"].iloc[0]),
            code=() if chosen.empty else tuple(str(chosen["code"].iloc[0]).splitlines()),
            model=model)
        if self.out is not None:
            write_atomic(self.out / "summary.txt", report(found))
        return found


def curve_trend(val_losses: list) -> str:
    """`improving`, `flat` or `diverging`: the last epoch's validation loss against the others'."""
    values = [float(v) for v in val_losses]
    if not values or not all(math.isfinite(v) for v in values):
        return "diverging" if values else ""
    if len(values) < 2:
        return ""
    if values[-1] > DIVERGING * min(values):
        return "diverging"
    return "improving" if values[-1] < IMPROVING * min(values[:-1]) else "flat"


def compile_code(optimizer, loss) -> tuple[str, ...]:
    """The block's last lines: the optimizer and the compile call."""
    from .cures import optimizer_code
    from .output_cures import loss_code

    return (optimizer_code(optimizer),
            f"model.compile(optimizer=optimizer, loss={loss_code(loss)})  # and your metrics")


def save_model(model: keras.Model, path: pathlib.Path) -> None:
    """`model.save` through a temporary name and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temp = path.with_name(f".{path.stem}.tmp.keras")
    model.save(temp)
    temp.replace(path)

