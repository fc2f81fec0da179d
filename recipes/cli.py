"""A recipe's command line: flags from its frozen Config dataclass, by tyro.

A recipe declares its settings once, as a frozen dataclass whose fields
carry `metadata={"help": ...}`; `parse_config` hands it to
[tyro](https://brentyi.github.io/tyro/), which makes one flag per field
(`n_train` -> `--n-train`; `bool` -> `--quick` / `--no-quick`; a `Literal`
-> its choices; `tuple[X, ...]` -> several values; `X | None` -> a value or
`none`), then runs the checks tyro cannot know:

1. a float flag must not be `nan`, and a tuple flag needs a value;
2. the Config's `validate()` must return `None`, not an error message;
3. `--out` must not name a file or a folder that is not empty;
4. `--resume DIR` takes every setting from `DIR/config.json` (any other
   flag beside it is refused).

Every problem ends the program with exit code 2 before any training:
tyro's own errors in tyro's words, the checks above as
`<prog>: error: <message>`, each naming the value and the fix.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import os
import re
import sys
import textwrap
import types
import typing
from collections.abc import Sequence
from typing import Any, NoReturn

from .resume import read_run_config
from .run_files import check_out_dir
from .safe_paths import check_no_links

_NONE_WORDS = ("none", "null")
# `--help`'s description lines are at most this wide (tyro prints them as given).
HELP_WIDTH = 100


def parse_config(
    config_cls: type,
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    prog: str | None = None,
) -> Any:
    """Parses command-line flags into a checked instance of `config_cls`.

    Args:
        config_cls: A frozen dataclass whose fields all carry
            `metadata={"help": "..."}`.
        argv: The flags, without the program name. Defaults to `None`:
            `sys.argv[1:]`.
        description: Text shown by `--help` above the flags. Defaults to
            `None`: the first line of `config_cls`'s docstring.
        prog: Program name for messages, e.g. `"python -m recipes.deep_dense"`.
            Defaults to `None`: the script's file name.

    Returns:
        An instance of `config_cls` (tuple fields hold tuples); with
        `--resume DIR`, the one saved in `DIR/config.json`, resuming `DIR`.

    Raises:
        TypeError: If a field of `config_cls` has no help text.
        SystemExit: With code 2 on a bad flag or a failed check, and code 0
            after `--help`.

    Example:

    >>> @dataclasses.dataclass(frozen=True)
    ... class Config:
    ...     depths: tuple[int, ...] = dataclasses.field(
    ...         default=(1, 2), metadata={"help": "numbers of layers"})
    >>> parse_config(Config, ["--depths", "3", "4"])
    Config(depths=(3, 4))
    """
    import tyro

    _check_help(config_cls)
    argv = list(sys.argv[1:] if argv is None else argv)
    if description is None:
        description = (config_cls.__doc__ or "").strip().split("\n")[0] or None
    try:
        config = tyro.cli(config_cls, args=_none_words(config_cls, argv), prog=prog,
                          description=description)
    except BrokenPipeError:  # `--help | head` closed the pipe: end quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(0)
    problem = _problem(config)
    if problem:
        _usage_error(prog, problem)
    if getattr(config, "resume", None):
        config = _resumed(config_cls, config, prog)
    return config


def help_text(config_cls: type, description: str | None = None, *, prog: str | None = None) -> str:
    """What `--help` prints for `config_cls`, as a string."""
    buffer = io.StringIO()
    with contextlib.redirect_stdout(buffer), contextlib.suppress(SystemExit):
        parse_config(config_cls, ["--help"], description=description, prog=prog)
    return buffer.getvalue()


def program(module: str) -> str:
    """`python -m <module>` as the user ran it, for usage lines and messages.

    `python -m gradguard.recipes.doctor` (from anywhere) and `python -m
    recipes.doctor` (from the repository root) run the same module; the
    name the user typed is the one to repeat. In-process callers (tests)
    get `module`.

    Args:
        module: The module as run from the repository root, e.g. `"recipes.doctor"`.

    Returns:
        `"python -m recipes.doctor"` or `"python -m gradguard.recipes.doctor"`.
    """
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    ran = getattr(spec, "name", None) or ""
    return f"python -m {ran if ran.endswith(module) else module}"


def help_description(doc: str | None, module: str) -> str | None:
    """What `--help` prints above the flags: a recipe's title and description, wrapped.

    A recipe's docstring opens with a keras-io header (`Title:`,
    `Description:`) and goes on for a page; `--help` shows the header only,
    every line at most `HELP_WIDTH` characters and indented by two spaces
    (tyro joins the lines of an unindented paragraph into one), then where
    the rest is. A docstring without a header gives its first paragraph.

    Args:
        doc: The module docstring.
        module: The module as run from the repository root, e.g. `"recipes.cures_race"`.

    Returns:
        The description, or `None` without a docstring.
    """
    if not doc or not doc.strip():
        return None
    first = doc.strip().split("\n\n")[0]
    title = re.search(r"^Title:\s*(.+)$", first, re.M)
    described = re.search(r"^Description:\s*(.+)", first, re.M | re.S)
    parts = [title.group(1), described.group(1)] if title and described else [first]
    lines = [line for part in parts for line in textwrap.wrap(" ".join(part.split()), HELP_WIDTH - 2)]
    lines.append(f"The whole story: python -m pydoc gradguard.{module}")
    return "\n".join(f"  {line}" for line in lines)


def _check_help(config_cls: type) -> None:
    for field in dataclasses.fields(config_cls):
        if field.init and not field.metadata.get("help"):
            raise TypeError(
                f"parse_config: field {field.name!r} of {config_cls.__name__} has no help "
                "text; declare it with field(default=..., metadata={'help': '...'}).")


def _optional(hint: Any) -> bool:
    return (typing.get_origin(hint) in (typing.Union, types.UnionType)
            and type(None) in typing.get_args(hint))


def _none_words(config_cls: type, argv: list[str]) -> list[str]:
    """`none` or `null` after an `X | None` flag, as tyro spells it: `None`."""
    hints = typing.get_type_hints(config_cls)
    flags = {"--" + f.name.replace("_", "-") for f in dataclasses.fields(config_cls)
             if _optional(hints[f.name])}
    return [("None" if i and argv[i - 1] in flags and arg.lower() in _NONE_WORDS else arg)
            for i, arg in enumerate(argv)]


def _problem(config: Any) -> str | None:
    """What tyro cannot check: nan, an empty tuple, `validate()`, a taken `--out`."""
    for field in dataclasses.fields(config):
        value, flag = getattr(config, field.name), "--" + field.name.replace("_", "-")
        values = value if isinstance(value, tuple) else (value,)
        if any(isinstance(v, float) and math.isnan(v) for v in values):
            return f"{flag} received nan; expected a number."
        if value == () and field.default != ():
            return f"{flag} received no value; expected at least one."
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            problem = validate()
        except ValueError as error:
            problem = str(error)
        if problem:
            return str(problem)
    out = getattr(config, "out", None)
    if isinstance(out, str):
        return check_out_dir(out, who="--out")
    return None


def _resumed(config_cls: type, config: Any, prog: str | None) -> Any:
    """The settings saved in `config.resume`/config.json, resuming that folder.

    The saved values pass the command line's checks (their types, then
    `_problem`) before anything in the folder is touched, and a folder
    holding a symbolic link is refused (`safe_paths.check_no_links`).
    """
    if dataclasses.replace(config, resume=None) != config_cls():
        _usage_error(prog, f"--resume takes every setting from {config.resume}/config.json; "
                           "drop the other flags.")
    try:
        check_no_links(config.resume, "--resume")
        values = read_run_config(config.resume, config_cls, prog or "this recipe")
    except (ValueError, OSError) as error:
        _usage_error(prog, str(error))
    path = f"{config.resume}/config.json"
    hints = typing.get_type_hints(config_cls)
    for name, value in values.items():
        if not _fits(value, hints[name]):
            _usage_error(prog, f"--resume: {path!r} has {name}={_shown(value)}; expected "
                               f"{_describe(hints[name])}. Restore config.json from a copy, or "
                               "start a new run with --out.")
    saved = dataclasses.replace(config_cls(**values), resume=config.resume)
    problem = _problem(dataclasses.replace(saved, out=None) if hasattr(saved, "out") else saved)
    if problem:
        _usage_error(prog, f"--resume: {path!r} holds settings the command line refuses "
                           f"({problem.rstrip('.')}); restore config.json from a copy, or start "
                           "a new run with --out.")
    return saved


def _shown(value: Any) -> str:
    return repr(list(value) if isinstance(value, tuple) else value)


def _fits(value: Any, hint: Any) -> bool:
    """Whether a value read from JSON has the type a Config field declares."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return any(value == a and type(value) is type(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        if not isinstance(value, tuple):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(_fits(v, args[0]) for v in value)
        return len(value) == len(args) and all(_fits(v, a) for v, a in zip(value, args))
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    return True


def _describe(hint: Any) -> str:
    """A field's type in words, for a message."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Literal:
        return f"one of {list(args)}"
    if origin in (typing.Union, types.UnionType):
        return " or ".join("null" if a is type(None) else _describe(a) for a in args)
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list, each {_describe(args[0])}"
        return f"a list of {len(args)}: {', '.join(_describe(a) for a in args)}"
    return {bool: "true or false", int: "an int", float: "a number", str: "a string"}.get(
        hint, getattr(hint, "__name__", str(hint)))


def _usage_error(prog: str | None, message: str) -> NoReturn:
    """Ends the program as argparse does: usage, `prog: error: message`, exit code 2."""
    prog = prog or sys.argv[0]
    print(f"usage: {prog} [-h] [OPTIONS]\n{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
