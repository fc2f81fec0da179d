"""Flag combinations that cannot both hold, or that one would silently ignore: one line naming both.

Each test runs a recipe's `main` in process with the flags and an `--out`
beside an `outside/` folder, and asserts exit code 2, the one error line
(naming both flags and the fix), that `--out` was never made and that no
file under `tmp_path` changed. The accepted neighbours of each combination
are parsed too (`parse_config`, nothing trained), so the checks refuse
only what they should.
"""

import pytest

from gradguard.recipes import cures_race, deep_dense, rnn_long_seq
from gradguard.recipes.cli import parse_config

from fault_checks import error_line, make_outside, snapshot

REFUSED = [
    (deep_dense, ["--factorial", "--variants", "standardize"],
     "--factorial replaces --variants (received standardize); drop one of the two flags."),
    (rnn_long_seq, ["--factorial", "--variants", "baseline", "global_clipnorm"],
     "--factorial replaces --variants (received baseline global_clipnorm)"),
    (deep_dense, ["--factorial-clip", "clipnorm"],
     "--factorial-clip received clipnorm without --factorial, which it is a factor of; add "
     "--factorial, or use --variants clipnorm instead."),
    (rnn_long_seq, ["--factorial-clip", "autoclip", "--variants", "baseline"],
     "--factorial-clip received autoclip without --factorial"),
    (rnn_long_seq, ["--variants", "irnn", "--cells", "lstm"],
     "--variants irnn trains a ReLU SimpleRNN whatever the cell, so --cells lstm would label it "
     "lstm; use --cells simple_rnn with these variants, or drop them."),
    (rnn_long_seq, ["--variants", "baseline", "orthogonal+global_clipnorm", "--cell", "gru"],
     "--variants orthogonal+global_clipnorm trains a ReLU SimpleRNN whatever the cell, so --cell gru"),
    (rnn_long_seq, ["--variants", "irnn"],  # the default --cells holds lstm
     "so --cells lstm would label it lstm"),
    (rnn_long_seq, ["--variants", "irnn@adam", "--cells", "simple_rnn", "gru"], "--cells gru"),
    (cures_race, ["--methods", "foo"], "--methods received 'foo': modifiers 'foo'"),
    (cures_race, ["--methods", "baseline", "clipnorm+clipvalue"],
     "--methods received 'clipnorm+clipvalue': 'clipnorm+clipvalue' with more than one clipping mode"),
    (cures_race, ["--methods", "clipnorm@foo"], "--methods received 'clipnorm@foo': optimizer 'foo'"),
    (deep_dense, ["--variants", "../../outside/x"], "--variants received '../../outside/x'"),
    (deep_dense, ["--factorial", "--factorial-clip", "clipnorm", "--variants", "baseline", "clipnorm"],
     "--factorial replaces --variants"),
]


@pytest.mark.parametrize("module, flags, message", REFUSED,
                         ids=[f"{m.NAME}:{' '.join(f)}" for m, f, _ in REFUSED])
def test_an_impossible_combination_is_one_line_naming_both_flags(tmp_path, capsys, module, flags, message):
    make_outside(tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(SystemExit) as info:
        module.main([*flags, "--out", str(tmp_path / "never")])
    assert info.value.code == 2
    line = error_line(capsys.readouterr().err, f"python -m recipes.{module.NAME}")
    assert message in line
    assert not (tmp_path / "never").exists()
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("module, flags, check", [
    (deep_dense, ["--factorial"], lambda c: len(c.rows()) == 4),
    (deep_dense, ["--factorial", "--factorial-clip", "clipnorm"], lambda c: len(c.rows()) == 8),
    (rnn_long_seq, ["--variants", "irnn", "--cells", "simple_rnn"], lambda c: c.row_cells() == ("simple_rnn",)),
    (rnn_long_seq, ["--factorial", "--cells", "lstm"], lambda c: {r.cell for r in c.rows()} == {"lstm"}),
    (cures_race, ["--methods", "baseline", "agc"], lambda c: c.methods == ("baseline", "agc")),
])
def test_the_neighbouring_combinations_are_accepted(module, flags, check):
    config = parse_config(module.Config, flags, prog=f"python -m recipes.{module.NAME}")
    assert check(config)
