"""Command-line flags generated from a recipe's frozen Config dataclass.

A recipe declares its settings once, as a frozen dataclass whose fields carry
`metadata={"help": ...}`; `parse_config` turns them into flags, builds the
Config and runs its checks, so a bad flag exits with argparse's usage message
and exit code 2 before any training starts. Import these through
`recipes.common`.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import types
import typing
from collections.abc import Sequence
from typing import Any, Literal

from .run_files import check_out_dir

_NONE_WORDS = ("none", "null")


def config_parser(
    config_cls: type,
    description: str | None = None,
    *,
    prog: str | None = None,
) -> argparse.ArgumentParser:
    """Builds an `ArgumentParser` with one flag per field of a dataclass.

    Field `learning_rate` becomes `--learning-rate`; its help text is the
    field's `metadata["help"]` followed by its default. Supported field
    types:

    - `int`, `float`, `str`: one value of that type.
    - `bool`: a pair of flags, `--name` / `--no-name`.
    - `Literal["a", "b"]`: one of the listed values (argparse `choices`).
    - `X | None`: a value of type `X`, or the word `none` for `None`.
    - `tuple[X, ...]`: one or more values (`nargs="+"`); `tuple[X, X]`:
      exactly two values.

    Args:
        config_cls: A dataclass (normally frozen) whose fields all carry
            `metadata={"help": "..."}`.
        description: Text shown by `--help` above the flags, kept verbatim.
            Defaults to `None`: the first line of `config_cls`'s docstring.
        prog: Program name for usage messages, e.g.
            `"python -m recipes.linear_chain"`. Defaults to `None`, argparse's
            choice (the script's file name).

    Returns:
        An `argparse.ArgumentParser` whose parsed namespace holds one
        attribute per field.

    Raises:
        TypeError: If `config_cls` is not a dataclass, or a field has no help
            text or a type this function cannot turn into a flag.

    Example:

    >>> @dataclasses.dataclass(frozen=True)
    ... class Config:
    ...     units: int = dataclasses.field(default=2, metadata={"help": "width"})
    >>> config_parser(Config).parse_args(["--units", "3"]).units
    3
    """
    if not (isinstance(config_cls, type) and dataclasses.is_dataclass(config_cls)):
        raise TypeError(
            f"config_parser received {config_cls!r}; expected a dataclass type "
            "such as a recipe's Config."
        )
    if description is None:
        description = (config_cls.__doc__ or "").strip().split("\n")[0] or None
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    hints = typing.get_type_hints(config_cls)
    for field in dataclasses.fields(config_cls):
        if not field.init:
            continue
        help_text = field.metadata.get("help")
        if not help_text:
            raise TypeError(
                f"config_parser: field {field.name!r} of {config_cls.__name__} has "
                "no help text; declare it with "
                "field(default=..., metadata={'help': '...'})."
            )
        _add_flag(parser, config_cls.__name__, field, hints[field.name], help_text)
    return parser


def parse_config(
    config_cls: type,
    argv: Sequence[str] | None = None,
    *,
    description: str | None = None,
    prog: str | None = None,
) -> Any:
    """Parses command-line flags into a validated instance of `config_cls`.

    After parsing, three checks run, and any problem ends the program through
    `parser.error` (usage, message, exit code 2) before any training:

    1. constructing `config_cls(**flags)` must not raise `ValueError`
       (e.g. from a `__post_init__`);
    2. if the config has a `validate()` method, it must return `None` (or an
       empty string) rather than an error message, and not raise
       `ValueError`;
    3. if the config has a string field `out`, it must not name an existing
       file or non-empty folder (see `new_run_dir`).

    Args:
        config_cls: The dataclass to build, as for `config_parser`.
        argv: The flags, without the program name. Defaults to `None`:
            `sys.argv[1:]`.
        description: Passed to `config_parser`.
        prog: Passed to `config_parser`.

    Returns:
        An instance of `config_cls`; tuple fields hold tuples.

    Raises:
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
    parser = config_parser(config_cls, description, prog=prog)
    namespace = parser.parse_args(argv)
    values = {
        name: tuple(value) if isinstance(value, list) else value
        for name, value in vars(namespace).items()
    }
    try:
        config = config_cls(**values)
    except ValueError as error:
        parser.error(str(error))
    validate = getattr(config, "validate", None)
    if callable(validate):
        try:
            problem = validate()
        except ValueError as error:
            problem = str(error)
        if problem:
            parser.error(str(problem))
    out = getattr(config, "out", None)
    if isinstance(out, (str, os.PathLike)):
        problem = check_out_dir(out, who="--out")
        if problem:
            parser.error(problem)
    return config


def _add_flag(
    parser: argparse.ArgumentParser,
    owner: str,
    field: dataclasses.Field,
    hint: Any,
    help_text: str,
) -> None:
    flag = "--" + field.name.replace("_", "-")
    required = (
        field.default is dataclasses.MISSING
        and field.default_factory is dataclasses.MISSING
    )
    default = None
    if field.default is not dataclasses.MISSING:
        default = field.default
    elif field.default_factory is not dataclasses.MISSING:
        default = field.default_factory()
    help_text = help_text.replace("%", "%%")
    if not required:
        if isinstance(default, tuple):
            shown = " ".join(map(str, default))
        else:
            shown = "none" if default is None else default
        help_text += f" (default: {shown})".replace("%", "%%")

    base, optional = _strip_none(hint)
    kwargs: dict[str, Any] = dict(dest=field.name, help=help_text, required=required)
    if not required:
        kwargs["default"] = default
    if base is bool:
        parser.add_argument(flag, action=argparse.BooleanOptionalAction, **kwargs)
        return
    if typing.get_origin(base) is tuple:
        args = typing.get_args(base)
        if len(args) == 2 and args[1] is Ellipsis:
            kwargs["nargs"] = "+"
            element = args[0]
        elif args and all(a == args[0] for a in args):
            kwargs["nargs"] = len(args)
            element = args[0]
        else:
            raise TypeError(_unsupported(owner, field.name, hint))
        kwargs["metavar"] = field.name.upper()
    else:
        element = base
    convert, choices = _scalar(owner, field.name, element, hint)
    if optional:
        convert = _or_none(convert)
    kwargs["type"] = convert
    if choices is not None:
        kwargs["choices"] = list(choices) + ([None] if optional else [])
    parser.add_argument(flag, **kwargs)


def _strip_none(hint: Any) -> tuple[Any, bool]:
    """Returns `(X, True)` for `X | None`, else `(hint, False)`."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(hint)) == 2:
            return args[0], True
    return hint, False


def _scalar(owner: str, name: str, element: Any, hint: Any) -> tuple[Any, tuple | None]:
    if element in (int, str):
        return element, None
    if element is float:
        return _float, None
    if typing.get_origin(element) is Literal:
        choices = typing.get_args(element)
        kinds = {type(c) for c in choices}
        if len(kinds) == 1 and kinds <= {int, float, str}:
            kind = kinds.pop()
            return (_float if kind is float else kind), choices
    raise TypeError(_unsupported(owner, name, hint))


def _float(text: str) -> float:
    value = float(text)
    if math.isnan(value):
        raise ValueError(text)
    return value


_float.__name__ = "float"  # argparse names the type in "invalid float value".


def _or_none(convert: Any) -> Any:
    def parse(text: str) -> Any:
        return None if text.lower() in _NONE_WORDS else convert(text)

    parse.__name__ = getattr(convert, "__name__", "value")
    return parse


def _unsupported(owner: str, name: str, hint: Any) -> str:
    return (
        f"config_parser: field {name!r} of {owner} has type {hint}, which has no "
        "flag form; use int, float, str, bool, a Literal, X | None, "
        "tuple[X, ...] or tuple[X, X]."
    )
