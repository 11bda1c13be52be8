"""Expected maximum performance (EMP) curves: how good is the best of ``n`` trials?

Two estimators of ``E[max(v_1..v_n)]`` from ``N`` observed trial scores ``v`` (e.g. dev
``accuracy`` in percent), both for ``n = 1..n_max``:

- :func:`expected_max`: Dodge et al. 2019, "Show Your Work: Improved Reporting of
  Experimental Results" (EMNLP), which treats the ``N`` scores as the empirical distribution
  and draws ``n`` of them *with* replacement.
- :func:`expected_max_unbiased`: Tang et al. 2020, "Showing Your Work Doesn't Always Work"
  (ACL), which draws ``n`` *without* replacement; it is the unbiased (U-statistic) estimator of
  the expected maximum of ``n`` i.i.d. trials, and comes with bootstrap confidence intervals.

Both assume the scores are i.i.d. draws, i.e. trials from *random search*; with a guided
searcher (TPE, ...) later trials depend on earlier ones and the curves are only indicative.

Both return a DataFrame with columns ``n, mean, std, lower, upper`` so the plots treat them
alike; :func:`budget_axis` adds a ``budget`` column (trials x mean cost per trial).

Example:
    >>> curve = expected_max([70.0, 80.0, 90.0])
    >>> curve["mean"].round(3).tolist()
    [80.0, 84.444, 86.667]
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from scipy.special import gammaln

from trainables.errors import ConfigError

__all__ = ["CURVE_COLUMNS", "expected_max", "expected_max_unbiased", "budget_axis"]

CURVE_COLUMNS = ("n", "mean", "std", "lower", "upper")
"""Columns of every curve returned by this module."""

_BOOTSTRAP_CHUNK = 256  # columns of the weight matrix built at once (memory: N x chunk floats)


def _sorted_scores(values: object) -> np.ndarray:
    """The finite entries of ``values`` (any shape), sorted ascending; NaN/inf are dropped.

    Raises:
        ConfigError: non-numeric input, or no finite value.
    """
    try:
        arr = np.array(values, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError("expected-max scores must be numbers (one per trial)") from None
    arr = arr[np.isfinite(arr)]
    if arr.size == 0:
        raise ConfigError("expected-max needs at least one trial with a finite score")
    return np.sort(arr)


def _check_n_max(n_max: int | None, n_obs: int, *, cap: bool) -> int:
    """``n_max`` or its default ``n_obs``; ``cap``: it may not exceed ``n_obs``.

    Raises:
        ConfigError: ``n_max`` < 1, not an integer, or above ``n_obs`` when ``cap``.
    """
    if n_max is None:
        return n_obs
    if isinstance(n_max, bool) or not isinstance(n_max, (int, np.integer)) or n_max < 1:
        raise ConfigError(f"n_max must be a positive integer, got {n_max!r}")
    if cap and n_max > n_obs:
        raise ConfigError(
            f"n_max={n_max} exceeds the {n_obs} finite scores; without replacement n_max <= number of trials"
        )
    return int(n_max)


def _with_replacement_weights(n_obs: int, ns: np.ndarray) -> np.ndarray:
    """``p[i, k] = P(max of ns[k] draws with replacement is the (i+1)-th smallest)``, shape (N, K).

    ``p_i(n) = (i/N)^n - ((i-1)/N)^n`` with 1-based ``i`` (Dodge et al. 2019, eq. 1).
    """
    cdf = np.power.outer(np.arange(n_obs + 1) / n_obs, ns.astype(float))  # (N+1, K)
    return cdf[1:] - cdf[:-1]


def _without_replacement_weights(n_obs: int, ns: np.ndarray) -> np.ndarray:
    """``w[i, k] = C(i-1, n-1) / C(N, n)`` for 1-based ``i >= n = ns[k]``, else 0; shape (N, K).

    The probability that the largest of a uniformly random ``n``-subset is the ``i``-th
    smallest score (Tang et al. 2020, eq. 4); computed from a table of log factorials (``gammaln``) so that
    ``N`` in the thousands neither overflows nor loses precision, then each column is divided
    by its sum (1 by the hockey-stick identity) to remove rounding drift.
    """
    log_fact = gammaln(np.arange(n_obs + 1) + 1.0)  # log k! for k = 0..N
    i = np.arange(1, n_obs + 1)[:, None]
    n = ns.astype(np.int64)[None, :]
    valid = i >= n
    log_w = (
        log_fact[i - 1] - log_fact[n - 1] - log_fact[np.where(valid, i - n, 0)]  # log C(i-1, n-1)
        - (log_fact[n_obs] - log_fact[n] - log_fact[n_obs - n])  # log C(N, n)
    )
    weights = np.where(valid, np.exp(log_w), 0.0)
    return weights / weights.sum(axis=0)  # sums to 1 exactly in theory; remove rounding drift


def _curve(v: np.ndarray, weights: np.ndarray, ns: np.ndarray) -> pd.DataFrame:
    """Mean and standard deviation of the max for each ``n`` from weights (N, K) over sorted ``v``."""
    mean = v @ weights
    var = ((v[:, None] - mean[None, :]) ** 2 * weights).sum(axis=0)
    std = np.sqrt(np.maximum(var, 0.0))
    return pd.DataFrame({"n": ns.astype(np.int64), "mean": mean, "std": std})


def expected_max(values: Sequence[float] | np.ndarray, n_max: int | None = None) -> pd.DataFrame:
    """Expected maximum of ``n`` trials, sampling *with* replacement (Dodge et al. 2019).

    With the ``N`` finite scores sorted ascending, ``v_(1) <= ... <= v_(N)``::

        E_n   = sum_i v_(i) p_i(n),   p_i(n) = (i/N)^n - ((i-1)/N)^n
        std_n = sqrt(sum_i (v_(i) - E_n)^2 p_i(n))

    and the band is ``E_n +- std_n`` clipped to ``[v_(1), v_(N)]``. The estimator is biased
    low for ``n`` close to ``N`` (Tang et al. 2020); see :func:`expected_max_unbiased`.

    Args:
        values: one score per trial (any units, e.g. accuracy in percent), shape ``(N,)``;
            NaN/inf (failed trials) are dropped.
        n_max: largest ``n``; default ``N``. May exceed ``N`` (draws are with replacement).

    Returns:
        DataFrame of ``n_max`` rows with columns ``n`` (1..n_max, int), ``mean``, ``std``,
        ``lower``, ``upper`` (units of ``values``).

    Raises:
        ConfigError: no finite score, non-numeric scores, or ``n_max`` < 1.

    Example:
        >>> expected_max([1.0, 2.0], n_max=2)[["n", "mean", "std"]].to_dict("list")
        {'n': [1, 2], 'mean': [1.5, 1.75], 'std': [0.5, 0.4330127018922193]}
    """
    v = _sorted_scores(values)
    ns = np.arange(1, _check_n_max(n_max, v.size, cap=False) + 1)
    curve = _curve(v, _with_replacement_weights(v.size, ns), ns)
    curve["lower"] = np.clip(curve["mean"] - curve["std"], v[0], v[-1])
    curve["upper"] = np.clip(curve["mean"] + curve["std"], v[0], v[-1])
    return curve


def expected_max_unbiased(
    values: Sequence[float] | np.ndarray,
    n_max: int | None = None,
    n_bootstrap: int = 1000,
    ci: float = 0.95,
    seed: int = 0,
) -> pd.DataFrame:
    """Unbiased expected maximum of ``n`` trials, *without* replacement (Tang et al. 2020).

    With the ``N`` finite scores sorted ascending and 1-based ``i``::

        E_n = sum_{i >= n} v_(i) C(i-1, n-1) / C(N, n)

    the mean of the maximum over all ``C(N, n)`` subsets of size ``n``; binomials are taken
    in log space. ``std`` is the standard deviation of that subset maximum. ``lower``/``upper``
    are a bootstrap percentile confidence interval of ``E_n`` (Efron & Tibshirani 1993):
    ``n_bootstrap`` resamples of the ``N`` scores with replacement, the estimator on each, and
    their ``(1-ci)/2`` and ``(1+ci)/2`` quantiles. Cost: ``n_bootstrap * N * n_max`` flops
    (N=2000 takes a few seconds); lower ``n_max`` for very large ``N``.

    Args:
        values: one score per trial, shape ``(N,)``; NaN/inf are dropped.
        n_max: largest ``n``, at most ``N``; default ``N``.
        n_bootstrap: number of bootstrap resamples (>= 1).
        ci: confidence level in (0, 1).
        seed: seed of the bootstrap's ``numpy`` generator (same seed, same interval).

    Returns:
        DataFrame of ``n_max`` rows, columns ``n, mean, std, lower, upper``. At ``n == N``
        ``mean`` is the best score observed.

    Raises:
        ConfigError: no finite score, ``n_max`` not in ``1..N``, ``n_bootstrap`` < 1, or
            ``ci`` outside (0, 1).

    Example:
        >>> curve = expected_max_unbiased([1.0, 2.0, 3.0], n_bootstrap=200)
        >>> curve["mean"].round(4).tolist()
        [2.0, 2.6667, 3.0]
        >>> list(curve.columns)
        ['n', 'mean', 'std', 'lower', 'upper']
    """
    v = _sorted_scores(values)
    ns = np.arange(1, _check_n_max(n_max, v.size, cap=True) + 1)
    if isinstance(n_bootstrap, bool) or not isinstance(n_bootstrap, (int, np.integer)) or n_bootstrap < 1:
        raise ConfigError(f"n_bootstrap must be a positive integer, got {n_bootstrap!r}")
    if not 0.0 < float(ci) < 1.0:
        raise ConfigError(f"ci must be a confidence level strictly between 0 and 1, got {ci!r}")
    rng = np.random.default_rng(seed)
    boot = np.sort(rng.choice(v, size=(int(n_bootstrap), v.size), replace=True), axis=1)  # (B, N)
    parts, boot_means = [], []
    for start in range(0, ns.size, _BOOTSTRAP_CHUNK):
        chunk = ns[start : start + _BOOTSTRAP_CHUNK]
        weights = _without_replacement_weights(v.size, chunk)
        parts.append(_curve(v, weights, chunk))
        boot_means.append(boot @ weights)  # (B, len(chunk))
    curve = pd.concat(parts, ignore_index=True)
    boot_mean = np.concatenate(boot_means, axis=1)
    alpha = (1.0 - float(ci)) / 2.0
    curve["mean"] = np.clip(curve["mean"], v[0], v[-1])  # rounding only: a weighted mean of v
    curve["lower"] = np.clip(np.quantile(boot_mean, alpha, axis=0), v[0], v[-1])
    curve["upper"] = np.clip(np.quantile(boot_mean, 1.0 - alpha, axis=0), v[0], v[-1])
    return curve


def budget_axis(
    curve: pd.DataFrame, cost_per_trial: float | Sequence[float] | np.ndarray, column: str = "budget"
) -> pd.DataFrame:
    """Add a cumulative-budget X axis to an EMP curve: ``budget = n * mean cost per trial``.

    Dodge et al. 2019 plot expected max against the number of trials or the total budget;
    pass e.g. the trials' ``train_time_s`` (seconds) or ``energy_j`` (joules).

    Args:
        curve: a curve from :func:`expected_max` or :func:`expected_max_unbiased` (needs ``n``).
        cost_per_trial: the mean cost of one trial (a positive number), or the per-trial costs
            (shape ``(N,)``), whose finite entries are averaged.
        column: name of the new column.

    Returns:
        A copy of ``curve`` with ``column`` added (float, units of the cost).

    Raises:
        ConfigError: ``curve`` has no ``n`` column, or the mean cost is not finite and > 0.

    Example:
        >>> budget_axis(expected_max([1.0, 2.0]), [10.0, 30.0, float("nan")])["budget"].tolist()
        [20.0, 40.0]
    """
    if "n" not in curve.columns:
        raise ConfigError("budget_axis needs a curve with an 'n' column (from expected_max*)")
    try:
        costs = np.array(cost_per_trial, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ConfigError(f"cost per trial must be a number or numbers, got {cost_per_trial!r}") from None
    costs = costs[np.isfinite(costs)]
    mean_cost = float(costs.mean()) if costs.size else float("nan")
    if not (np.isfinite(mean_cost) and mean_cost > 0):
        raise ConfigError(f"mean cost per trial must be a positive finite number, got {mean_cost!r}")
    out = curve.copy()
    out[column] = out["n"].to_numpy(dtype=float) * mean_cost
    return out
