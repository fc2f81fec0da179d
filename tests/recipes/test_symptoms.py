"""symptoms.judge_after_search on small trial tables: healthy only when the search is the evidence."""

import pandas as pd
import pytest

from gradguard.recipes.symptoms import NO_BETTER, judge_after_search

UNKNOWN = {"cause": "unknown", "problem": "none", "evidence": "no guard event and no symptom"}


def trials(*rows):
    """rows: (trial, val/trivial, exploded_step, note)."""
    return pd.DataFrame(rows, columns=["trial", "val/trivial", "exploded_step", "note"]).astype(
        {"exploded_step": "Int64"})


def test_a_set_up_no_cure_did_better_than_is_healthy():
    table = trials((0, 0.97, None, ""), (1, 1.09, None, ""), (2, 0.9, None, ""),
                   (3, None, None, "not applicable"), (4, float("inf"), 5, ""))
    judged = judge_after_search(UNKNOWN, table)
    assert judged["cause"] == "healthy" and judged["problem"] == "none"
    assert "0.97" in judged["evidence"] and "none of the 3 cures" in judged["evidence"]


@pytest.mark.parametrize("first, table", [
    # a cure did clearly better: it was kept, the set-up was not healthy
    (UNKNOWN, trials((0, 0.97, None, ""), (1, 0.97 * NO_BETTER, None, ""))),
    # trial 0 does not beat the constant prediction
    (UNKNOWN, trials((0, 1.0, None, ""), (1, 1.2, None, ""))),
    # trial 0 had a guard event (its cause would not be unknown, but judged on the table too)
    (UNKNOWN, trials((0, 0.5, 3, ""), (1, 0.9, None, ""))),
    # a named cause (a symptom) stays named
    ({**UNKNOWN, "cause": "activation", "problem": "dying_relu"},
     trials((0, 0.97, None, ""), (1, 1.0, None, ""))),
    # no cure was trained: no evidence
    (UNKNOWN, trials((0, 0.97, None, ""), (1, None, None, "not applicable"))),
])
def test_anything_else_is_left_as_it_was(first, table):
    assert judge_after_search(first, table) is first
