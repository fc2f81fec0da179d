"""One way to write a file whole or not at all: a temporary name, then a rename.

Every file the package writes (NaNGuard's JSON report, a recipe's tables,
figures and settings) goes through `write_atomic`, so a reader, a crash or a
full disk never leaves a file cut short.
"""

from __future__ import annotations

import os
import pathlib
import uuid


def write_atomic(path: str | os.PathLike, data: str | bytes) -> pathlib.Path:
    """Writes `data` to `path` through a temporary file and a rename.

    Readers see the old file or the new one, never a partial one: the data
    go to a hidden file of a unique name in the same folder
    (`.<name>.<pid>.<uuid>.tmp`), are flushed to disk, and the temporary
    file is renamed over `path` (`os.replace`, atomic on POSIX). The file
    gets the mode `open()` would give it (0666 less the umask), not a
    `tempfile`'s private 0600.

    Args:
        path: The file to write; its folder is created if missing.
        data: Text (written as UTF-8) or bytes.

    Returns:
        `path` as a `pathlib.Path`.

    Raises:
        OSError: If the folder or the file cannot be written (read-only, a
            full disk, a folder in the way); `path` is left as it was and no
            temporary file stays behind.

    Example:

    >>> import tempfile
    >>> path = write_atomic(pathlib.Path(tempfile.mkdtemp()) / "a.txt", "x\\n")
    >>> path.read_text()
    'x\\n'
    """
    path = pathlib.Path(path)
    temp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            file.write(data.encode("utf-8") if isinstance(data, str) else data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            temp.unlink(missing_ok=True)
        except OSError:
            pass
        raise
    return path
