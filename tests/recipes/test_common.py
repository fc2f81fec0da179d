import dataclasses
import json
import re
from dataclasses import field
from typing import Literal

import pandas as pd
import pytest

from gradguard.recipes import run_files
from gradguard.recipes.common import (
    device_name,
    help_text,
    new_run_dir,
    parse_config,
    write_config,
    write_table,
)
from gradguard.recipes.run_files import markdown_table


@dataclasses.dataclass(frozen=True)
class Config:
    """Toy recipe settings."""

    lr: float = field(default=0.01, metadata={"help": "learning rate"})
    steps: int = field(default=10, metadata={"help": "training steps"})
    cell: Literal["lstm", "gru"] = field(default="lstm", metadata={"help": "recurrent cell"})
    clip_norm: float | None = field(default=None, metadata={"help": "clip at this norm"})
    depths: tuple[int, ...] = field(default=(1, 2), metadata={"help": "numbers of layers"})
    scale_range: tuple[float, float] = field(default=(1e-3, 1e4), metadata={"help": "scales"})
    batch_norm: bool = field(default=False, metadata={"help": "add batch norm"})
    shuffle: bool = field(default=True, metadata={"help": "shuffle every epoch"})
    out: str | None = field(default=None, metadata={"help": "results folder"})

    def validate(self):
        if self.steps < 1:
            return f"--steps received {self.steps}; expected an int >= 1."
        if self.lr <= 0:
            raise ValueError(f"--lr received {self.lr}; expected a float > 0.")
        return None


def test_defaults_round_trip():
    assert parse_config(Config, []) == Config()


def test_every_kind_of_flag():
    config = parse_config(
        Config,
        [
            "--lr", "0.5", "--steps", "3", "--cell", "gru", "--clip-norm", "1.5",
            "--depths", "4", "5", "6", "--scale-range", "1", "100", "--batch-norm",
            "--no-shuffle",
        ],
    )
    assert config == Config(
        lr=0.5, steps=3, cell="gru", clip_norm=1.5, depths=(4, 5, 6),
        scale_range=(1.0, 100.0), batch_norm=True, shuffle=False,
    )
    assert isinstance(config.depths, tuple)


def test_optional_field_accepts_none():
    assert parse_config(Config, ["--clip-norm", "1"]).clip_norm == 1.0
    assert parse_config(Config, ["--clip-norm", "none"]).clip_norm is None


def test_help_shows_each_fields_help_and_default():
    text = help_text(Config, "Toy recipe.")
    assert "Toy recipe." in text
    for flag, words in [
        ("--lr", "learning rate (default: 0.01)"),
        ("--depths", "numbers of layers (default: 1 2)"),
        ("--batch-norm", "add batch norm (default: False)"),
        ("--no-shuffle", "shuffle every epoch (default: True)"),
        ("--cell", "recurrent cell (default: lstm)"),
    ]:
        assert flag in text
        assert words in " ".join(text.split())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "error: --steps received 0; expected an int >= 1."),
        (["--lr", "-1"], "error: --lr received -1.0; expected a float > 0."),
        # tyro's own words for what it parses (exit code 2 all the same).
        (["--steps", "two"], "Error parsing --steps: invalid literal for int() with base 10: 'two'"),
        (["--cell", "rnn"], "invalid choice 'rnn'"),
        (["--scale-range", "1"], "Missing value for argument '--scale-range'"),
        (["--lr", "nan"], "error: --lr received nan; expected a number."),
        (["--bogus"], "Unrecognized options: --bogus"),
    ],
)
def test_bad_flags_exit_with_code_2_and_a_message(argv, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Config, argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_post_init_value_error_becomes_a_usage_error(capsys):
    @dataclasses.dataclass(frozen=True)
    class Checked:
        n: int = field(default=1, metadata={"help": "n"})

        def __post_init__(self):
            if self.n > 5:
                raise ValueError(f"Checked received n={self.n}; expected n <= 5.")

    with pytest.raises(SystemExit) as exit_info:
        parse_config(Checked, ["--n", "9"])
    assert exit_info.value.code == 2
    assert "Checked received n=9; expected n <= 5." in capsys.readouterr().err


def test_non_empty_out_is_refused_before_running(tmp_path, capsys):
    (tmp_path / "old.csv").write_text("x\n")
    with pytest.raises(SystemExit) as exit_info:
        parse_config(Config, ["--out", str(tmp_path)])
    assert exit_info.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert f"error: --out {str(tmp_path)!r} already exists and is not empty; pick a new path" in err
    assert parse_config(Config, ["--out", str(tmp_path / "new")]).out == str(tmp_path / "new")


def test_field_without_help_is_a_type_error():
    @dataclasses.dataclass(frozen=True)
    class NoHelp:
        n: int = 1

    message = (
        "parse_config: field 'n' of NoHelp has no help text; declare it with "
        "field(default=..., metadata={'help': '...'})."
    )
    with pytest.raises(TypeError, match=re.escape(message)):
        parse_config(NoHelp, [])


def test_new_run_dir_never_reuses_a_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(run_files.time, "strftime", lambda fmt: "20261126-181500")
    first = new_run_dir(None, "rnn_long_seq", root=tmp_path / "runs")
    second = new_run_dir(None, "rnn_long_seq", root=tmp_path / "runs")
    third = new_run_dir(None, "rnn_long_seq", root=tmp_path / "runs")
    assert first == tmp_path / "runs" / "rnn_long_seq-20261126-181500"
    assert second.name == "rnn_long_seq-20261126-181500-1"
    assert third.name == "rnn_long_seq-20261126-181500-2"
    assert all(p.is_dir() and not any(p.iterdir()) for p in (first, second, third))


def test_new_run_dir_with_out(tmp_path):
    fresh = new_run_dir(tmp_path / "a" / "b", "x")
    assert fresh.is_dir()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert new_run_dir(empty, "x") == empty
    (empty / "results.csv").write_text("")
    message = (
        f"new_run_dir received out={str(empty)!r}: {str(empty)!r} already exists and is "
        "not empty; pick a new path (a run never overwrites another)"
    )
    with pytest.raises(FileExistsError, match=re.escape(message)):
        new_run_dir(empty, "x")
    with pytest.raises(FileExistsError, match="is an existing file; pick a new folder path"):
        new_run_dir(empty / "results.csv", "x")


def test_write_table_writes_csv_and_markdown(tmp_path):
    table = pd.DataFrame(
        {"variant": ["clip|1.0", "none"], "depth": [10, 20], "grad_norm": [57.6650390625, 1.5e-12]}
    )
    csv_path, md_path = write_table(table, tmp_path, caption="Device: CPU.")
    assert (csv_path, md_path) == (tmp_path / "results.csv", tmp_path / "results.md")
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), table, check_dtype=False)
    assert md_path.read_text() == (
        "Device: CPU.\n"
        "\n"
        "| variant   |   depth |   grad_norm |\n"
        "|:----------|--------:|------------:|\n"
        "| clip\\|1.0 |      10 |    57.665   |\n"
        "| none      |      20 |     1.5e-12 |\n"
    )


def test_write_table_keeps_a_named_index(tmp_path):
    table = pd.DataFrame({"gain": [0.5, 1.5], "norm": [1.0, 2.0]}).set_index("gain")
    csv_path, md_path = write_table(table, tmp_path, stem="summary")
    assert list(pd.read_csv(csv_path).columns) == ["gain", "norm"]
    assert md_path.name == "summary.md"
    assert md_path.read_text().startswith("|   gain |   norm |")


def test_markdown_table_matches_a_hand_written_table():
    table = pd.DataFrame({"a": [1, 22], "b": ["x", "yy"], "c": [float("nan"), 0.125]})
    assert markdown_table(table, float_format=".2f") == (
        "|   a | b   |      c |\n"
        "|----:|:----|-------:|\n"
        "|   1 | x   | nan    |\n"
        "|  22 | yy  |   0.12 |\n"
    )


def test_write_config_round_trips(tmp_path):
    config = Config(depths=(3, 4), clip_norm=2.0)
    path = write_config(config, tmp_path)
    assert json.loads(path.read_text()) == {**dataclasses.asdict(config), "depths": [3, 4], "scale_range": [1e-3, 1e4]}


def test_device_name_agrees_with_tensorflow():
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    name = device_name()
    if not gpus:
        assert name == "CPU"
    else:
        assert tf.config.experimental.get_device_details(gpus[0])["device_name"] in name
