"""Expected-max estimators against exhaustive enumeration of draws and subsets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import CURVE_COLUMNS, budget_axis, expected_max_unbiased
from analysis.expected_max import expected_max
from trainables.errors import ConfigError

SAMPLES = [
    [0.7],
    [3.0, 1.0],
    [2.0, 2.0, 1.0],  # ties
    [0.5, 0.9, 0.1, 0.9],
    [88.1, 90.4, 85.0, 90.4, 79.9],
    [5.0, -1.0, 3.0, 3.0, 7.5, 0.0, 2.0],
]


@pytest.mark.parametrize("values", SAMPLES)
def test_expected_max_with_replacement_matches_all_ordered_draws(values):
    n_max = min(len(values) + 1, 5)
    curve = expected_max(values, n_max=n_max)
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert curve["n"].tolist() == list(range(1, n_max + 1))
    for n in range(1, n_max + 1):
        maxima = np.array([max(draw) for draw in itertools.product(values, repeat=n)])  # all N^n draws
        row = curve.iloc[n - 1]
        assert row["mean"] == pytest.approx(maxima.mean())
        assert row["std"] == pytest.approx(maxima.std(), abs=1e-12)
        assert row["lower"] == pytest.approx(max(maxima.mean() - maxima.std(), min(values)))
        assert row["upper"] == pytest.approx(min(maxima.mean() + maxima.std(), max(values)))


@pytest.mark.parametrize("values", SAMPLES)
def test_expected_max_unbiased_matches_all_subsets(values):
    curve = expected_max_unbiased(values, n_bootstrap=50)
    assert list(curve.columns) == list(CURVE_COLUMNS)
    assert len(curve) == len(values)
    for n in range(1, len(values) + 1):
        # subsets of positions, so tied values count as distinct trials
        maxima = np.array([max(values[i] for i in idx) for idx in itertools.combinations(range(len(values)), n)])
        row = curve.iloc[n - 1]
        assert row["mean"] == pytest.approx(maxima.mean())
        assert row["std"] == pytest.approx(maxima.std(), abs=1e-12)
        assert min(values) <= row["lower"] <= row["upper"] <= max(values)


def test_estimators_differ_as_documented():
    values = [1.0, 2.0, 3.0, 4.0]
    with_repl = expected_max(values)["mean"].to_numpy()
    without = expected_max_unbiased(values, n_bootstrap=10)["mean"].to_numpy()
    assert with_repl[0] == pytest.approx(2.5) and without[0] == pytest.approx(2.5)  # n=1: the sample mean for both
    assert (with_repl[1:] < without[1:]).all()  # with replacement is biased low
    assert without[-1] == 4.0  # all N trials: the best observed


def test_unbiased_is_stable_for_thousands_of_trials():
    values = np.random.default_rng(0).normal(85.0, 3.0, size=3000)
    curve = expected_max_unbiased(values, n_bootstrap=20)
    assert np.isfinite(curve[["mean", "std", "lower", "upper"]].to_numpy()).all()
    assert curve["mean"].iloc[0] == pytest.approx(values.mean())
    assert curve["mean"].iloc[-1] == pytest.approx(values.max())
    assert curve["mean"].is_monotonic_increasing
    assert curve["std"].iloc[-1] == pytest.approx(0.0, abs=1e-6)
    big = expected_max(values)
    assert np.isfinite(big["mean"]).all() and big["mean"].iloc[-1] <= values.max()


def test_bootstrap_interval_of_n1_is_the_mean_interval():
    # for n=1 the estimator is the sample mean: its 95% interval is about mean +- 1.96 sd/sqrt(N)
    values = np.random.default_rng(1).normal(0.0, 1.0, size=200)
    row = expected_max_unbiased(values, n_max=1, n_bootstrap=4000, ci=0.95, seed=3).iloc[0]
    half = 1.96 * values.std() / np.sqrt(values.size)
    assert row["lower"] == pytest.approx(values.mean() - half, abs=0.2 * half)
    assert row["upper"] == pytest.approx(values.mean() + half, abs=0.2 * half)


def test_bootstrap_is_seeded_and_ci_widens_with_level():
    values = np.random.default_rng(2).uniform(70.0, 90.0, size=40)
    a = expected_max_unbiased(values, n_max=10, n_bootstrap=300, seed=7)
    b = expected_max_unbiased(values, n_max=10, n_bootstrap=300, seed=7)
    c = expected_max_unbiased(values, n_max=10, n_bootstrap=300, seed=8)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["lower"], c["lower"])
    wide = expected_max_unbiased(values, n_max=10, n_bootstrap=300, ci=0.99, seed=7)
    narrow = expected_max_unbiased(values, n_max=10, n_bootstrap=300, ci=0.5, seed=7)
    assert ((wide["upper"] - wide["lower"]) >= (narrow["upper"] - narrow["lower"])).all()
    constant = expected_max_unbiased([80.0] * 5, n_bootstrap=50)
    np.testing.assert_allclose(constant[["mean", "lower", "upper"]].to_numpy(), 80.0, rtol=1e-12)


def test_nan_scores_are_dropped():
    values = [np.nan, 1.0, np.inf, 3.0]
    pd.testing.assert_frame_equal(expected_max(values), expected_max([1.0, 3.0]))
    pd.testing.assert_frame_equal(
        expected_max_unbiased(values, n_bootstrap=20), expected_max_unbiased([1.0, 3.0], n_bootstrap=20)
    )


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: expected_max([np.nan]), "at least one trial"),
        (lambda: expected_max(["a"]), "numbers"),
        (lambda: expected_max([1.0], n_max=0), "n_max"),
        (lambda: expected_max([1.0], n_max=2.5), "n_max"),
        (lambda: expected_max_unbiased([1.0, 2.0], n_max=3), "n_max=3 exceeds"),
        (lambda: expected_max_unbiased([1.0, 2.0], n_bootstrap=0), "n_bootstrap"),
        (lambda: expected_max_unbiased([1.0, 2.0], ci=1.0), "ci"),
    ],
)
def test_bad_input_raises_config_error(call, match):
    with pytest.raises(ConfigError, match=match):
        call()


def test_expected_max_allows_n_beyond_sample_size():
    curve = expected_max([1.0, 2.0], n_max=50)
    assert len(curve) == 50
    assert curve["mean"].iloc[-1] == pytest.approx(2.0 - 0.5**50)


def test_budget_axis_multiplies_n_by_mean_cost():
    curve = expected_max([1.0, 2.0, 3.0])
    timed = budget_axis(curve, [100.0, 200.0, np.nan, 300.0])
    assert timed["budget"].tolist() == [200.0, 400.0, 600.0]
    assert "budget" not in curve.columns
    energy = budget_axis(curve, 5.0, column="energy_j")
    assert energy["energy_j"].tolist() == [5.0, 10.0, 15.0]
    with pytest.raises(ConfigError, match="positive finite"):
        budget_axis(curve, [np.nan])
    with pytest.raises(ConfigError, match="positive finite"):
        budget_axis(curve, -1.0)
    with pytest.raises(ConfigError, match="'n' column"):
        budget_axis(curve.drop(columns="n"), 1.0)
