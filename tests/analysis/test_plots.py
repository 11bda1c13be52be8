"""Plots write real PNG files, draw the front and carry the non-random-search note."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from analysis import (
    NOT_RANDOM_NOTE,
    budget_axis,
    expected_max_unbiased,
    hypervolume_history,
    pareto_ranks,
    plot_expected_max,
    plot_hypervolume_history,
    plot_pairwise,
    plot_skyline,
)
from analysis.expected_max import expected_max
from analysis.plots import _expected_max_figure, _pairwise_figure, _skyline_figure
from trainables.errors import ConfigError


@pytest.fixture
def trials() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    n = 40
    size = 10 ** rng.uniform(3, 7, n)
    return pd.DataFrame(
        {
            "size_bytes": size,
            "accuracy": 70 + 5 * np.log10(size) + rng.normal(0, 2, n),
            "latency_ms": rng.uniform(0.1, 5.0, n),
            "student": rng.choice(["ffn", "bilstm"], n),
        }
    )


def _png(path) -> Image.Image:
    assert path.stat().st_size > 1000
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(path)
    img.load()
    assert img.size[0] > 300 and img.size[1] > 200
    return img


def test_plot_skyline_writes_png_and_draws_front_as_step_line(trials, tmp_path):
    trials.loc[3, "accuracy"] = np.nan
    out = plot_skyline(trials, path=tmp_path / "sub" / "skyline.png")
    assert out == tmp_path / "sub" / "skyline.png"
    assert "Pareto front" in _png(out).text["Title"]

    fig = _skyline_figure(trials, "size_bytes", "accuracy", None, True, ("min", "max"), None)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert ax.get_xlabel() == "size_bytes (bytes)" and ax.get_ylabel() == "accuracy (%)"
    front = trials.loc[pareto_ranks(trials[["size_bytes", "accuracy"]], ["min", "max"]) == 0]
    front = front.sort_values("size_bytes")
    (step,) = ax.lines
    assert step.get_drawstyle() == "steps-post"
    np.testing.assert_allclose(step.get_xdata(), front["size_bytes"])
    np.testing.assert_allclose(step.get_ydata(), front["accuracy"])
    assert ax.get_legend().get_title().get_text() == "1 trial(s) without values not shown"


def test_plot_skyline_uses_given_ranks_for_highlighting(trials, tmp_path):
    ranks = np.ones(len(trials), dtype=int)
    ranks[[0, 1]] = 0
    fig = _skyline_figure(trials, "size_bytes", "accuracy", ranks, True, ("min", "max"), None)
    highlighted = fig.axes[0].collections[1].get_offsets()
    np.testing.assert_allclose(highlighted, trials.loc[[0, 1], ["size_bytes", "accuracy"]].to_numpy())


def test_plot_skyline_rejects_bad_input(trials, tmp_path):
    with pytest.raises(ConfigError, match="log_x=False"):
        plot_skyline(trials.assign(size_bytes=0.0), path=tmp_path / "a.png")
    with pytest.raises(ConfigError, match="ranks has 2 entries"):
        plot_skyline(trials, ranks=[0, 1], path=tmp_path / "a.png")
    with pytest.raises(ConfigError, match="'energy_j' is not in the trials table"):
        plot_skyline(trials, x="energy_j", path=tmp_path / "a.png")
    assert not (tmp_path / "a.png").exists()
    assert plot_skyline(trials.assign(size_bytes=0.0), log_x=False, path=tmp_path / "b.png").exists()


def test_plot_pairwise_three_objectives(trials, tmp_path):
    objectives = {"size_bytes": "min", "accuracy": "max", "latency_ms": "min"}
    ranks = pareto_ranks(trials[list(objectives)], list(objectives.values()))
    out = plot_pairwise(trials, objectives, ranks, path=tmp_path / "pairs.png")
    _png(out)
    fig = _pairwise_figure(trials, objectives, ranks, None, None)
    panels = [ax for ax in fig.axes if ax.axison and ax.get_label() != "<colorbar>"]
    assert len(panels) == 3  # one per pair of objectives
    pairs = {(ax.get_xlabel(), ax.get_ylabel()) for ax in panels}
    assert pairs == {
        ("size_bytes (bytes)", "accuracy (%)"),
        ("size_bytes (bytes)", "latency_ms (ms)"),
        ("accuracy (%)", "latency_ms (ms)"),
    }
    assert {ax.get_xscale() for ax in panels if ax.get_xlabel().startswith("size_bytes")} == {"log"}
    with pytest.raises(ConfigError, match="at least two objectives"):
        plot_pairwise(trials, {"accuracy": "max"}, path=tmp_path / "x.png")
    with pytest.raises(ConfigError, match="'f1' is not one of the objectives"):
        plot_pairwise(trials, objectives, log=["f1"], path=tmp_path / "x.png")


def test_plot_hypervolume_history(trials, tmp_path):
    hv = hypervolume_history(trials[["size_bytes", "accuracy"]], ["min", "max"])
    out = plot_hypervolume_history(hv, path=tmp_path / "hv.png")
    assert f"{hv[-1]:.4g}" in _png(out).text["Title"]
    budget = np.cumsum(np.full(len(hv), 30.0))
    assert plot_hypervolume_history(hv, x=budget, x_label="training time (s)", path=tmp_path / "hv2.png").exists()
    with pytest.raises(ConfigError, match="empty"):
        plot_hypervolume_history([], path=tmp_path / "hv3.png")
    with pytest.raises(ConfigError, match="x has 2 values"):
        plot_hypervolume_history(hv, x=[1.0, 2.0], path=tmp_path / "hv3.png")


def _note_texts(fig) -> list[str]:
    return [" ".join(t.get_text().split()) for ax in fig.axes for t in ax.texts] + [t.get_text() for t in fig.texts]


def test_plot_expected_max_names_estimator_and_warns_when_not_random(trials, tmp_path):
    curves = {
        name: budget_axis(expected_max_unbiased(group["accuracy"], n_bootstrap=50), 120.0)
        for name, group in trials.groupby("student")
    }
    name = "Tang et al. 2020 (without replacement), 95% bootstrap CI"
    out = plot_expected_max(curves, name, "trials", path=tmp_path / "emp.png", warn_not_random=True)
    img = _png(out)
    assert name in img.text["Title"]
    assert img.text["Description"] == NOT_RANDOM_NOTE

    fig = _expected_max_figure(curves, name, "trials", True, "n", "accuracy (%)", None)
    ax = fig.axes[0]
    assert NOT_RANDOM_NOTE in _note_texts(fig)
    assert ax.get_legend().get_title().get_text() == name
    assert sorted(t.get_text() for t in ax.get_legend().get_texts()) == ["bilstm", "ffn"]
    assert len(ax.collections) == 2  # one band per group

    quiet = _expected_max_figure(curves, name, "trials", False, "n", "accuracy (%)", None)
    assert NOT_RANDOM_NOTE not in _note_texts(quiet)
    out2 = plot_expected_max(curves, name, "training time (s)", x="budget", path=tmp_path / "emp2.png")
    assert "Description" not in _png(out2).text


def test_plot_expected_max_rejects_bad_curves(tmp_path):
    with pytest.raises(ConfigError, match="at least one curve"):
        plot_expected_max({}, "Dodge", "trials", path=tmp_path / "e.png")
    with pytest.raises(ConfigError, match="lacks column 'budget'"):
        plot_expected_max({"a": expected_max([1.0, 2.0])}, "Dodge", "s", x="budget", path=tmp_path / "e.png")
