"""Pareto ranks, fronts and hypervolume against brute force on small random point sets."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from analysis import default_reference, hypervolume, hypervolume_history, pareto_front, pareto_ranks
from trainables.errors import ConfigError

DIRECTION_SETS = [("max", "min"), ("min", "min"), ("max", "max", "min"), ("min", "max", "min")]


def _dominates(a: np.ndarray, b: np.ndarray, directions) -> bool:
    """a dominates b: at least as good everywhere and strictly better somewhere."""
    better_eq = [(x >= y) if d == "max" else (x <= y) for x, y, d in zip(a, b, directions)]
    strictly = [(x > y) if d == "max" else (x < y) for x, y, d in zip(a, b, directions)]
    return all(better_eq) and any(strictly)


def _brute_ranks(values: np.ndarray, directions) -> np.ndarray:
    """Peel fronts one at a time by pairwise comparison; -1 for rows with NaN."""
    ranks = np.full(len(values), -1)
    left = {i for i in range(len(values)) if np.isfinite(values[i]).all()}
    r = 0
    while left:
        front = {i for i in left if not any(_dominates(values[j], values[i], directions) for j in left if j != i)}
        for i in front:
            ranks[i] = r
        left -= front
        r += 1
    return ranks


def _brute_hv(values: np.ndarray, directions, reference) -> float:
    """Exact HV of integer points by counting the unit cells they dominate (minimisation space)."""
    sign = np.array([-1 if d == "max" else 1 for d in directions])
    pts = values[np.isfinite(values).all(axis=1)] * sign
    ref = np.asarray(reference) * sign
    if len(pts) == 0:
        return 0.0
    lo = pts.min(axis=0)
    count = 0
    for cell in itertools.product(*[range(int(lo[k]), int(ref[k])) for k in range(len(ref))]):
        if ((pts <= np.array(cell)).all(axis=1)).any():
            count += 1
    return float(count)


def _random_points(rng: np.random.Generator, n: int, m: int, nan_rows: int = 0) -> np.ndarray:
    """Integer points in 0..4 (many ties and exact duplicates), some rows duplicated, some NaN."""
    pts = rng.integers(0, 5, size=(n, m)).astype(float)
    dup = rng.integers(0, n, size=max(1, n // 5))
    pts[rng.integers(0, n, size=dup.size)] = pts[dup]
    if nan_rows:
        rows = rng.choice(n, size=nan_rows, replace=False)
        pts[rows, rng.integers(0, m, size=nan_rows)] = np.nan
    return pts


@pytest.mark.parametrize("directions", DIRECTION_SETS)
def test_pareto_ranks_match_brute_force(directions):
    rng = np.random.default_rng(len(directions) * 7 + directions.count("max"))
    for _ in range(15):
        pts = _random_points(rng, int(rng.integers(1, 25)), len(directions), nan_rows=int(rng.integers(0, 2)))
        np.testing.assert_array_equal(pareto_ranks(pts, directions), _brute_ranks(pts, directions))


def test_identical_points_share_a_rank_and_nan_rows_get_minus_one():
    pts = np.array([[1.0, 1.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0], [np.nan, 5.0], [9.0, np.inf]])
    ranks = pareto_ranks(pts, ["max", "max"])
    assert ranks.tolist() == [0, 0, 1, 1, -1, -1]
    assert ranks.dtype == np.int64


def test_pareto_ranks_single_objective_and_all_nan():
    assert pareto_ranks([3.0, 1.0, 3.0, 2.0], ["max"]).tolist() == [0, 2, 0, 1]
    assert pareto_ranks(np.full((3, 2), np.nan), ["max", "min"]).tolist() == [-1, -1, -1]


@pytest.mark.parametrize(
    "values, directions, match",
    [
        ([[1.0, 2.0]], ["max", "up"], "direction 'up'"),
        ([[1.0, 2.0]], ["max"], "2 objective columns but 1 directions"),
        ([[1.0, 2.0]], "max", "not the string"),
        ([["a", "b"]], ["max", "min"], "numeric"),
        ([[[1.0]]], ["max"], "2-D"),
    ],
)
def test_pareto_ranks_rejects_bad_input(values, directions, match):
    with pytest.raises(ConfigError, match=match):
        pareto_ranks(values, directions)


def test_pareto_front_returns_rank0_rows_sorted_by_first_objective():
    rng = np.random.default_rng(3)
    pts = _random_points(rng, 30, 3, nan_rows=2)
    df = pd.DataFrame(pts, columns=["size_bytes", "accuracy", "latency_ms"], index=[f"t{i}" for i in range(30)])
    df["trial_id"] = range(30)
    objectives = {"size_bytes": "min", "accuracy": "max", "latency_ms": "min"}
    front = pareto_front(df, objectives)
    expected = np.flatnonzero(_brute_ranks(pts, ["min", "max", "min"]) == 0)
    assert sorted(front["trial_id"]) == sorted(expected.tolist())
    assert front["size_bytes"].is_monotonic_increasing
    assert list(front.columns) == list(df.columns)
    before = df.copy()
    front.loc[front.index[0], "accuracy"] = -1.0  # a copy: the caller's frame is untouched
    pd.testing.assert_frame_equal(df, before)


def test_pareto_front_rejects_missing_or_text_columns():
    df = pd.DataFrame({"accuracy": [1.0, 2.0], "student": ["ffn", "rnn"]})
    with pytest.raises(ConfigError, match="'size_bytes' is not in the trials table"):
        pareto_front(df, {"accuracy": "max", "size_bytes": "min"})
    with pytest.raises(ConfigError, match="'student' must be numeric"):
        pareto_front(df, {"accuracy": "max", "student": "min"})
    with pytest.raises(ConfigError, match="at least one objective"):
        pareto_front(df, {})


@pytest.mark.parametrize("directions", DIRECTION_SETS)
def test_hypervolume_matches_cell_counting(directions):
    rng = np.random.default_rng(11 + len(directions))
    # reference inside the box for some draws, so some points add nothing
    for ref_value in (5, 3):
        reference = [(-1 if d == "max" else ref_value) for d in directions]
        for _ in range(10):
            pts = _random_points(rng, int(rng.integers(1, 15)), len(directions), nan_rows=1)
            assert hypervolume(pts, directions, reference) == pytest.approx(_brute_hv(pts, directions, reference))


@pytest.mark.parametrize("directions", DIRECTION_SETS)
def test_hypervolume_history_matches_prefix_hypervolumes(directions):
    rng = np.random.default_rng(5)
    pts = _random_points(rng, 20, len(directions), nan_rows=2)
    reference = [(-1 if d == "max" else 5) for d in directions]
    hist = hypervolume_history(pts, directions, reference)
    brute = [_brute_hv(pts[: i + 1], directions, reference) for i in range(len(pts))]
    np.testing.assert_allclose(hist, brute)
    assert hist.shape == (20,)
    assert (np.diff(hist) >= 0).all()


def test_hypervolume_history_default_reference_is_shared_by_all_prefixes():
    pts = np.array([[80.0, 300.0], [90.0, 400.0], [85.0, 100.0]])
    ref = default_reference(pts, ["max", "min"])
    hist = hypervolume_history(pts, ["max", "min"])
    assert hist[0] == pytest.approx(hypervolume(pts[:1], ["max", "min"], ref))
    assert hist[-1] == pytest.approx(hypervolume(pts, ["max", "min"]))


def test_default_reference_pads_worst_value_by_tenth_of_range():
    pts = [[90.0, 400.0, 5.0], [80.0, 100.0, 5.0], [np.nan, 1e9, 5.0]]
    ref = default_reference(pts, ["max", "min", "min"])
    np.testing.assert_allclose(ref, [79.0, 430.0, 5.5])  # equal values: 10% of |value|
    np.testing.assert_allclose(default_reference([[0.0], [0.0]], ["max"]), [-0.1])
    # every observed point then strictly beats the reference, so HV > 0 even for one point
    assert hypervolume([[90.0, 400.0]], ["max", "min"]) > 0


def test_hypervolume_rejects_bad_reference_and_all_nan():
    pts = [[1.0, 2.0]]
    with pytest.raises(ConfigError, match="one per objective"):
        hypervolume(pts, ["max", "min"], [0.0])
    with pytest.raises(ConfigError, match="finite"):
        hypervolume(pts, ["max", "min"], [0.0, np.nan])
    with pytest.raises(ConfigError, match="no trial has finite values"):
        hypervolume([[np.nan, 1.0]], ["max", "min"])
    assert hypervolume([[np.nan, 1.0]], ["max", "min"], [0.0, 2.0]) == 0.0
