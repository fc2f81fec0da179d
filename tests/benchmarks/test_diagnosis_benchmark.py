"""benchmarks.diagnosis on a tiny subset of its --quick population."""

import pandas as pd
import pytest

from gradguard.benchmarks import diagnosis
from gradguard.benchmarks.diagnosis_population import CAUSES


def test_population_sizes_meet_the_issue():
    full = diagnosis.population()
    assert sum(c.label != "healthy" for c in full) >= 120
    assert sum(c.label == "healthy" for c in full) >= 40
    assert {c.label for c in full} == {*CAUSES, "healthy"}
    quick = diagnosis.population(quick=True)
    assert {c.label for c in quick} == {*CAUSES, "healthy"}


@pytest.mark.slow  # two real runs: ~10 s idle, ~50 s on a loaded machine
def test_quick_subset_runs_and_reports():
    quick = diagnosis.population(quick=True)
    cases = [next(c for c in quick if c.label == "bad_data" and c.family == "mlp"),
             next(c for c in quick if c.label == "healthy" and c.family == "mlp")]
    df = pd.DataFrame([diagnosis.run_case(c) for c in cases])
    assert (df["error"] == "").all()
    broken, healthy = df.iloc[0], df.iloc[1]
    assert broken["events"] >= 1 and broken["cause"] == "bad_data"
    # NaNGuard()'s defaults: the bad batch is skipped, training goes on, the weights stay finite.
    assert broken["skips"] >= 1 and broken["stops"] == 0 and broken["weights_finite"]
    assert healthy["stops"] == 0
    text = diagnosis.summarize(df)
    assert "detection: 1/1 = 100.0%" in text and "cause confusion matrix" in text
