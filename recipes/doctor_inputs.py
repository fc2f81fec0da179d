"""The doctor's inputs, checked before Keras loads them and before any trial.

`python -m recipes.doctor --model m.keras --data d.npz --out DIR` trusts
three files and a folder. Each check here answers with one line naming the
file or value and the fix (a `ValueError`), before anything is trained or
written:

- `check_files(args)`, before the arrays load: `--data` is a `.npz`
  whose arrays, read from their headers only (`np.lib.format`), are numbers,
  have a samples axis with rows in it (`x` at least 2-D), agree in rows and
  per-sample shapes, and fit in the memory this machine has free (about
  `MEMORY_FACTOR` times their size while the trials run); `--out` follows
  the recipes' rule: a new or empty folder, or a doctor's folder for the same
  model, data and settings (`doctor.json`'s fingerprint).
- `check_model_file(path)`, before Keras loads it: `--model` is a Keras
  archive (a zip holding `config.json`) saved after `compile`.
- `check_model(model, y)`, after Keras loaded the model: it is compiled, and
  its output per sample matches `y`'s (Keras would otherwise broadcast one
  against the other and train on a wrong loss).
- `claim_out(args)`: creates `--out` and writes `doctor.json`, which marks
  the folder as this examination's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import pathlib
import zipfile

import numpy as np

from .safe_paths import check_no_links

# While the trials run the doctor holds the arrays, a split copy, the
# training copy Keras makes and each trial's batches: about this many times
# their size (measured in the issue: 2 GB of arrays reached 5.9-7.6 GB).
MEMORY_FACTOR = 4
MARKER = "doctor.json"  # what makes a folder a doctor's
ARRAYS = ("x", "y", "x_val", "y_val")
NUMERIC = "biuf"  # numpy dtype kinds a model trains on: bool, ints, floats


@dataclasses.dataclass(frozen=True)
class Header:
    """An array of a .npz as its header declares it (nothing loaded)."""

    shape: tuple[int, ...]
    dtype: np.dtype

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


def check_files(args) -> None:
    """Checks `--data` (a `.npz`'s headers) and `--out` without loading the arrays.

    `check_model_file` checks `--model`, after the data were read.

    Raises:
        ValueError: One line naming the file or value and the fix.
    """
    if args.data.endswith(".npz"):
        headers = read_headers(args.data)
        check_arrays(args.data, headers)
        check_memory(args.data, headers)
    if args.out is not None:
        check_out(args.out, fingerprint(args))


def check_model_file(path: str) -> None:
    """`--model` is a `.keras` archive holding `config.json`, saved after `compile`.

    A legacy `.h5` is checked for HDF5's signature only here (reading its
    attributes needs h5py); Keras' own loader judges the rest.
    """
    if str(path).lower().endswith(".h5"):
        try:
            with open(path, "rb") as file:
                magic = file.read(8)
        except OSError as error:
            raise ValueError(f"--model {path!r}: {error.strerror or error}; give the path of a "
                             "saved model (.keras or .h5).") from None
        if magic != b"\x89HDF\r\n\x1a\n":
            raise ValueError(f"--model {path!r} is not an HDF5 file (no HDF5 signature); save the "
                             "model with model.save('model.keras') after model.compile(...).")
        return
    try:
        with zipfile.ZipFile(path) as archive:
            config = json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, KeyError, OSError, ValueError) as error:
        reason = "not a zip archive" if isinstance(error, zipfile.BadZipFile) else \
            "no config.json in it" if isinstance(error, KeyError) else \
            getattr(error, "strerror", None) or str(error).splitlines()[0][:80]
        raise ValueError(f"--model {path!r} is not a Keras file ({reason}); save the model with "
                         "model.save('model.keras') after model.compile(...).") from None
    if isinstance(config, dict) and not config.get("compile_config"):
        raise ValueError(f"--model {path!r} was saved before model.compile(...); compile it "
                         "(optimizer=..., loss=...) and save it again.")


def read_headers(path: str) -> dict[str, Header]:
    """Every array's shape and dtype in a `.npz`, read from the `.npy` headers only."""
    headers = {}
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with archive.open(info) as file:
                    version = np.lib.format.read_magic(file)
                    read = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                            else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read(file)
                headers[info.filename[:-4]] = Header(tuple(shape), np.dtype(dtype))
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        reason = "not a zip archive" if isinstance(error, zipfile.BadZipFile) else \
            getattr(error, "strerror", None) or str(error).splitlines()[0][:80]
        raise ValueError(f"--data {path!r} is not a readable .npz ({reason}); write it with "
                         "np.savez(path, x=x, y=y).") from None
    return headers


def check_arrays(path: str, headers: dict[str, Header]) -> None:
    """Names, dtypes, shapes and row counts of the arrays, from their headers."""
    if "x" not in headers or "y" not in headers or ("x_val" in headers) != ("y_val" in headers):
        raise ValueError(f"--data {path!r} holds {sorted(headers)}; expected x and y (and x_val "
                         "with y_val, or neither): np.savez(path, x=x, y=y).")
    for name in (n for n in ARRAYS if n in headers):
        shape, dtype = headers[name].shape, headers[name].dtype
        if dtype.kind not in NUMERIC:
            fix = ("encode the labels as ints, e.g. np.unique(y, return_inverse=True)[1]"
                   if name.startswith("y") else "convert it to floats")
            raise ValueError(f"--data {path!r}: {name} holds {dtype} values, not numbers; {fix}.")
        least = 2 if name.startswith("x") else 1
        if len(shape) < least:
            fix = f"pass {name}[:, None] for one feature" if len(shape) == 1 else "pass an array"
            raise ValueError(f"--data {path!r}: {name} has shape {shape}; expected (samples, "
                             f"features, ...), at least {least}-D: {fix}.")
        if 0 in shape:
            raise ValueError(f"--data {path!r}: {name} has shape {shape}, with no values; expected "
                             "at least one sample and one value per sample.")
    for a, b in (("x", "y"), ("x_val", "y_val")):
        if a in headers and headers[a].shape[0] != headers[b].shape[0]:
            raise ValueError(f"--data {path!r}: {a} has {headers[a].shape[0]} rows but {b} has "
                             f"{headers[b].shape[0]}; expected one target per input row.")
    for a, b in (("x", "x_val"), ("y", "y_val")):
        if b in headers and headers[a].shape[1:] != headers[b].shape[1:]:
            raise ValueError(f"--data {path!r}: {b} has shape {headers[b].shape} but {a} has "
                             f"{headers[a].shape}; expected the same shape per sample.")


def available_memory() -> int | None:
    """Bytes of memory free for a new allocation (Linux's MemAvailable), or None if unknown."""
    try:
        with open("/proc/meminfo") as file:
            for line in file:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_memory(path: str, headers: dict[str, Header], free: int | None = None) -> None:
    """Refuses arrays that would not fit: `MEMORY_FACTOR` x their size over the free memory."""
    free = available_memory() if free is None else free
    size = sum(h.nbytes for n, h in headers.items() if n in ARRAYS)
    if free is not None and size * MEMORY_FACTOR > free:
        biggest = max((n for n in headers if n in ARRAYS), key=lambda n: headers[n].nbytes)
        h = headers[biggest]
        raise ValueError(
            f"--data {path!r} declares {_size(size)} of arrays ({biggest}: {h.dtype} {h.shape}), "
            f"and the doctor needs about {MEMORY_FACTOR}x that ({_size(size * MEMORY_FACTOR)}); "
            f"this machine has {_size(free)} free. Pass a sample of the rows.")


def _size(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.3g} {unit}" if unit != "bytes" else f"{int(n)} bytes"
        n /= 1000
    return ""  # pragma: no cover


def fingerprint(args) -> dict:
    """What an examination is of: the model's and the data's bytes, and the settings."""
    def digest(path):
        sha = hashlib.sha256()
        with open(path, "rb") as file:
            for block in iter(lambda: file.read(1 << 20), b""):
                sha.update(block)
        return sha.hexdigest()

    return {"model_sha256": digest(args.model), "data_sha256": digest(args.data),
            "settings": {k: getattr(args, k) for k in (
                "epochs", "batch_size", "seed", "target", "target_column", "seq_len")}}


def check_out(out: str, found: dict) -> None:
    """`--out` is new, empty, or this examination's own folder (same fingerprint)."""
    path = pathlib.Path(out)
    if os.path.lexists(path) and not path.is_dir() or path.is_symlink():
        raise ValueError(f"--out {out!r} is an existing file (or link); pick a new folder path.")
    if not path.exists() or not any(path.iterdir()):
        return
    check_no_links(path, "--out")
    marker = path / MARKER
    if not marker.is_file():
        held = ", ".join(sorted(p.name for p in path.iterdir())[:4])
        raise ValueError(f"--out {out!r} already holds files ({held}, ...) and is not a doctor's "
                         f"folder (no {MARKER}); pick a new or empty folder (a run never "
                         "writes into another's).")
    try:
        saved = json.loads(marker.read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"--out {out!r}: cannot read {os.fspath(marker)!r} "
                         f"({getattr(error, 'strerror', None) or error}); pick a new --out.") from None
    for key, what in (("model_sha256", "--model"), ("data_sha256", "--data"), ("settings", "settings")):
        if not isinstance(saved, dict) or saved.get(key) != found[key]:
            raise ValueError(
                f"--out {out!r} holds the examination of another {what} (its {MARKER} differs: "
                f"{(saved.get(key) if isinstance(saved, dict) else saved)!r:.60}); pick a new "
                "--out, or pass the --model, --data and settings it was made with to resume it.")


def claim_out(args) -> None:
    """Creates `--out` and writes `doctor.json` there, if not yet written."""
    from .run_files import write_atomic

    if args.out is None or (pathlib.Path(args.out) / MARKER).is_file():
        return
    try:
        pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise ValueError(f"--out {args.out!r}: could not create it ({error.strerror or error}); "
                         "pick a writable folder.") from None
    write_atomic(pathlib.Path(args.out) / MARKER, json.dumps(fingerprint(args), indent=2) + "\n")


def check_model(model, y, path: str) -> None:
    """The loaded model is compiled and its output per sample matches `y`'s.

    A sparse cross-entropy takes one class index per sample (`y` of shape
    `(n,)` or `(n, 1)`); any other loss takes `y` of the output's shape per
    sample, trailing axes of size 1 aside.
    """
    if getattr(model, "optimizer", None) is None or not model.get_compile_config():
        raise ValueError(f"--model {path!r} is not compiled; call model.compile(optimizer=..., "
                         "loss=...) before model.save.")
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        return  # a subclassed or multi-output model: examine's own checks apply
    out = tuple(outputs[0].shape[1:])
    if None in out:
        return  # a variable-length output: nothing to compare before a trial
    loss = model.loss
    name = (loss if isinstance(loss, str) else getattr(loss, "name", None)
            or getattr(loss, "__name__", "")).lower()
    per_sample = tuple(np.shape(y)[1:])
    squeeze = lambda s: tuple(s[:max((i + 1 for i, d in enumerate(s) if d != 1), default=0)])  # noqa: E731
    if "sparse" in name:
        if per_sample not in ((), (1,)):
            raise ValueError(
                f"--data's y has shape {per_sample} per sample, but --model {path!r} is compiled "
                f"with {name!r}, which takes one class index per sample (y of shape (n,) or "
                "(n, 1)); pass the class indices (y.argmax(-1) for one-hot y) or a "
                "non-sparse loss.")
    elif squeeze(per_sample) != squeeze(out):
        raise ValueError(
            f"--data's y has shape {per_sample} per sample but --model {path!r} outputs {out} "
            f"(loss {name or loss!r}); Keras would broadcast one against the other: reshape y or "
            "change the model's last layer.")
