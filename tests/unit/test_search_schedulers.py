"""The schedulers and searchers a search is given, built from resolved specs as the Tune backend builds them (no
trial runs here: tests/test_search.py trains ASHA, PBT and Optuna searches for real): what each gets from the flags,
and that each survives the pickling Tune saves an experiment with (a resumed search is unpickled from it)."""

import pickle

import pytest

from rlhpc.run import cli
from rlhpc.run.spec import resolve


def spec_of(monkeypatch, tmp_path, *flags):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("ip_head", raising=False)
    flags = [*flags, "--stop-iters", "8"]
    return resolve(cli.build_parser("").parse_args(flags), flags=flags)


def test_pb2_gets_the_ranges_as_bounds_and_pickles(monkeypatch, tmp_path):
    from rlhpc.train import tune_search

    spec = spec_of(monkeypatch, tmp_path, "--scheduler", "pb2", "--loguniform", "lr=1e-5,1e-3", "--uniform",
                   "gamma=0.9,0.999", "--num-samples", "4", "--perturbation-interval", "2")
    pb2 = tune_search.scheduler(spec, {"lr", "gamma"})
    assert isinstance(pb2, tune_search.RecordedPB2) and pb2.scheduler_name == "pb2"
    assert pb2._hyperparam_bounds == {"lr": [1e-5, 1e-3], "gamma": [0.9, 0.999]}
    assert pb2._perturbation_interval == 2
    assert type(pickle.loads(pickle.dumps(pb2))) is tune_search.RecordedPB2


def test_hyperband_goes_to_the_stop_iteration_by_the_reduction_factor(monkeypatch, tmp_path):
    from ray.tune.schedulers import HyperBandScheduler

    from rlhpc.train import tune_search

    spec = spec_of(monkeypatch, tmp_path, "--scheduler", "hyperband", "--grid", "lr=[1e-3,1e-4,1e-5]",
                   "--reduction-factor", "2")
    hyperband = tune_search.scheduler(spec)
    assert isinstance(hyperband, HyperBandScheduler)
    assert (hyperband._max_t_attr, hyperband._eta) == (8, 2)


@pytest.mark.parametrize("searcher, limit, at_once, expected", [
    ("optuna", None, 3, 3),  # as many at once as the allocation holds
    ("optuna", "2", 3, 2),
    ("bayesopt", None, 0, 1),  # never 0: a search that fits nowhere still starts one at a time
])
def test_a_model_based_search_is_limited_to_the_trials_at_once(monkeypatch, tmp_path, searcher, limit, at_once,
                                                               expected):
    from ray.tune.search import ConcurrencyLimiter

    from rlhpc.train import tune_search

    flags = ["--search", searcher, "--loguniform", "lr=1e-5,1e-3", "--num-samples", "6", "--seed", "3"]
    spec = spec_of(monkeypatch, tmp_path, *flags, *(["--max-concurrent", limit] if limit else []))
    limited = tune_search.search_algorithm(spec, at_once)
    assert isinstance(limited, ConcurrencyLimiter) and limited.max_concurrent == expected
    assert type(limited.searcher).__name__ == {"optuna": "OptunaSearch", "bayesopt": "BayesOptSearch"}[searcher]
    pickle.loads(pickle.dumps(limited))


def test_pbts_state_comes_back_into_the_resumed_scheduler_by_trial_id(monkeypatch, tmp_path):
    """Tune saves the callbacks' states, not the scheduler's: SchedulerStateKept carries PBT's per-trial state over
    (a resumed PBT that forgot it saw every trial due for a perturbation at once), into a scheduler whose trials are
    new objects with the same ids, as a restore makes them."""
    import types

    from ray.tune.experiment import Trial

    from rlhpc.train import tune_search

    spec = spec_of(monkeypatch, tmp_path, "--scheduler", "pbt", "--grid", "lr=[1e-3,1e-4]")
    controller = types.SimpleNamespace(search_alg=None)

    def population():
        pbt = tune_search.scheduler(spec, {"lr"})
        trials = [Trial("PPO", stub=True, trial_id=trial_id, config={"lr": 1e-3}) for trial_id in ("a", "b")]
        for trial in trials:
            pbt.on_trial_add(controller, trial)
        return pbt, trials

    before, (a, _) = population()
    before._trial_state[a].last_score, before._trial_state[a].last_perturbation_time = 42.0, 8
    saved = pickle.loads(pickle.dumps(tune_search.SchedulerStateKept(before).get_state()))  # as Tune saves it

    after, (a_again, b_again) = population()
    tune_search.SchedulerStateKept(after).set_state(saved)
    assert (after._trial_state[a_again].last_score, after._trial_state[a_again].last_perturbation_time) == (42.0, 8)
    assert after._trial_state[b_again].last_perturbation_time == 0


def test_a_metric_that_is_not_a_number_names_no_best_trial(monkeypatch, tmp_path, capsys):
    """--metric env_runners names a group of results, not a number: said once the search is done."""
    from rlhpc.outputs.report import TrialOutcome, print_best

    spec = spec_of(monkeypatch, tmp_path, "--grid", "lr=[1e-3]", "--metric", "env_runners")
    trial = TrialOutcome(path=str(tmp_path / "t"), metrics={"env_runners": {"episode_return_mean": 20.0}},
                         checkpoint=None, config={"lr": 1e-3})
    print_best([trial], spec)
    assert capsys.readouterr().out == "best: none of 1 trials has a value for env_runners\n"


def test_optunas_importance_ranks_the_key_that_decides_the_score(monkeypatch, tmp_path):
    """The fANOVA table's numbers, from trials whose return follows lr and not gamma (a failed trial left out)."""
    from rlhpc.outputs.report import TrialOutcome
    from rlhpc.run.search import importance

    spec = spec_of(monkeypatch, tmp_path, "--search", "optuna", "--loguniform", "lr=1e-5,1e-2", "--uniform",
                   "gamma=0.9,0.999", "--num-samples", "8")
    trials = [TrialOutcome(path=f"t{k}", checkpoint=None, config={"lr": 10 ** (-5 + k * 0.4), "gamma": gamma},
                           metrics={"env_runners": {"episode_return_mean_100": 20.0 + 30 * k}})
              for k, gamma in enumerate([0.95, 0.91, 0.99, 0.93, 0.97, 0.92, 0.98, 0.94])]
    trials.append(TrialOutcome(path="failed", metrics={}, checkpoint=None, config={}, error="boom"))
    shares = importance(trials, spec.search.space, "return", "max", None)
    assert list(shares) == ["lr", "gamma"] and shares["lr"] > 2 * shares["gamma"]
    assert abs(sum(shares.values()) - 1) < 1e-6


def test_no_importance_table_when_every_trial_scored_the_same(monkeypatch, tmp_path):
    """Trials of one iteration from one seed all return the same: nothing to explain (fANOVA would raise)."""
    from rlhpc.outputs.report import TrialOutcome
    from rlhpc.run.search import importance

    spec = spec_of(monkeypatch, tmp_path, "--search", "optuna", "--loguniform", "lr=1e-5,1e-2", "--uniform",
                   "gamma=0.9,0.999", "--num-samples", "3")
    trials = [TrialOutcome(path=f"t{k}", checkpoint=None, config={"lr": 10 ** -(k + 3), "gamma": 0.9 + k / 100},
                           metrics={"env_runners": {"episode_return_mean_100": 21.27}}) for k in range(3)]
    assert importance(trials, spec.search.space, "return", "max", None) == {}
