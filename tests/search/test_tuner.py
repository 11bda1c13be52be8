"""Search planning pieces that need no Ray: samplers and warm-start points."""

import optuna
import pytest

from search.tuner import SearchOptions, _initial_points, make_sampler, plan_search


@pytest.mark.parametrize("name, cls", [("tpe", optuna.samplers.TPESampler), ("nsga2", optuna.samplers.NSGAIISampler),
                                       ("gp", optuna.samplers.GPSampler), ("random", optuna.samplers.RandomSampler)])
def test_samplers_are_seeded_and_multi_objective(name, cls):
    def draws():
        study = optuna.create_study(directions=["maximize", "minimize"], sampler=make_sampler(name, 3, 12))
        out = []
        for _ in range(3):
            trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
            study.tell(trial, [trial.params["x"], 1 - trial.params["x"]])
            out.append(trial.params["x"])
        return out

    assert isinstance(make_sampler(name, 0), cls)
    assert draws() == draws()


def test_nsga2_population_follows_the_budget():
    assert make_sampler("nsga2", 0, 12)._population_size == 4
    assert make_sampler("nsga2", 0, 120)._population_size == 30
    assert make_sampler("nsga2", 0, 1000)._population_size == 50


def test_initial_points_except_for_random_search(glue_dir, sst2_teacher, tmp_path):
    base = dict(task="sst2", data_dir=str(glue_dir), teacher=str(sst2_teacher), num_samples=1,
                tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    tpe = plan_search(SearchOptions(**base))
    assert tpe.space.initial_points and _initial_points(tpe) == tpe.space.initial_points[:1]
    assert _initial_points(plan_search(SearchOptions(**base, sampler="random"))) is None
