"""Fixtures the recipe tests share."""

import pytest


@pytest.fixture
def refused(tmp_path, capsys):
    """`refused(main, flags)`: runs `main([*flags, "--out", DIR])` and returns its stderr.

    Asserts what every bad flag must do: exit with code 2, and before any
    work, so DIR is never made.
    """
    def run(main, flags):
        out = tmp_path / "never"
        with pytest.raises(SystemExit) as info:
            main([*flags, "--out", str(out)])
        assert info.value.code == 2
        assert not out.exists()
        return capsys.readouterr().err

    return run
