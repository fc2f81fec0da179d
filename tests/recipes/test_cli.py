"""Every recipe command the README, docs/ and the recipes' own headers quote still parses."""

import dataclasses
import importlib
import pathlib
import re
import shlex

import pytest

from gradguard.recipes.cli import parse_config
from gradguard.recipes.run_files import write_config

ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted((ROOT / "recipes").glob("*.py"))]
# A command opens the quote, or follows `&&` or `with:` (a path such as .venv/bin/ may lead).
COMMAND = re.compile(r"(?:^|&& |: )(?:\S*/)?python3? -m recipes\.(\w+)(.*)")
OWN_PARSER = {"doctor"}  # argparse of its own: --model and --data name files


def quoted_commands(text: str) -> list[str]:
    """`python -m recipes.X ...` in inline code (lines may wrap) and in code blocks (`\\` joins lines)."""
    found = []
    for i, part in enumerate(text.split("```")):
        if i % 2:  # a fenced block: one command a line, continued by a backslash
            found += part.replace("\\\n", " ").splitlines()
        else:
            found += re.findall(r"`([^`]+)`", part)
    return [" ".join(c.split()) for c in found if "python -m recipes." in c or "python3 -m recipes." in c]


def commands() -> list[tuple[str, str, list[str]]]:
    out = []
    for path in SOURCES:
        for line in quoted_commands(path.read_text()):
            match = COMMAND.search(line)
            if not match or match.group(1) in OWN_PARSER \
                    or not (ROOT / "recipes" / f"{match.group(1)}.py").is_file():
                continue  # `recipes.NAME`, `recipes.<name>`: placeholders
            name, rest = match.group(1), match.group(2).split("#")[0]
            out.append((path.relative_to(ROOT).as_posix(), name, shlex.split(rest)))
    return out


COMMANDS = commands()


def test_the_docs_quote_commands_with_flags():
    assert len(COMMANDS) >= 8
    assert any("--variants" in argv for _, _, argv in COMMANDS)
    assert any("--resume" in argv for _, _, argv in COMMANDS)


@pytest.mark.parametrize("where, name, argv", COMMANDS,
                         ids=[f"{w}:{n} {' '.join(a)}" for w, n, a in COMMANDS])
def test_quoted_command_parses(where, name, argv, tmp_path):
    config_cls = importlib.import_module(f"gradguard.recipes.{name}").Config
    if "--resume" in argv:  # a real run folder, saved with the defaults
        write_config(config_cls(), tmp_path)
        argv = [str(tmp_path) if a == argv[argv.index("--resume") + 1] else a for a in argv]
    config = parse_config(config_cls, argv, prog=f"python -m recipes.{name}")
    assert dataclasses.is_dataclass(config)
    if "--resume" in argv:
        assert config == dataclasses.replace(config_cls(), resume=str(tmp_path))


def test_resume_takes_every_setting_from_config_json(tmp_path):
    from gradguard.recipes.deep_dense import Config

    saved = Config(variants=("baseline", "clipnorm@adam"), depth=3, seeds=2)
    write_config(saved, tmp_path)
    resumed = parse_config(Config, ["--resume", str(tmp_path)])
    assert resumed == dataclasses.replace(saved, resume=str(tmp_path))
    assert [r.spec.optimizer for r in resumed.rows()] == [None, None, "adam", "adam"]
