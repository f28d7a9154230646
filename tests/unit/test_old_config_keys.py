"""The tutorial's config keys (RLlib's old API stack) given to --set: mapped onto the new stack's keys with one
line each, or refused naming the new one; never accepted and ignored. Step counts written as 1e5."""

import pytest

from rlhpc.errors import UserError
from rlhpc.run import old_keys
from rlhpc.run.cli import whole_number


@pytest.mark.parametrize(("old", "value", "new"), [
    ("train_batch_size", 500, ("train_batch_size_per_learner",)),
    ("sgd_minibatch_size", 64, ("minibatch_size",)),
    ("num_sgd_iter", 5, ("num_epochs",)),
    ("num_envs_per_worker", 4, ("num_envs_per_env_runner",)),
    ("model.fcnet_hiddens", [32], ("model_config", "fcnet_hiddens")),
    ("model.post_fcnet_hiddens", [16], ("model_config", "head_fcnet_hiddens")),
    ("lr_schedule", [[0, 1e-3], [1000, 1e-4]], ("lr",)),
])
def test_an_old_key_is_set_as_its_new_name_and_said_once(old, value, new, capsys):
    assert old_keys.translate([(old.split("."), value)], legacy=False) == ((new, value),)
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"warning: --set {old}: the old API stack's name, set as {'.'.join(new)}"]


def test_the_old_model_dict_is_set_key_by_key():
    assert old_keys.translate([(["model"], {"fcnet_hiddens": [32], "fcnet_activation": "relu"})], legacy=False) == (
        (("model_config", "fcnet_hiddens"), [32]), (("model_config", "fcnet_activation"), "relu"))


@pytest.mark.parametrize(("old", "named"), [
    ("num_workers", "--num-cpus N"),
    ("ignore_worker_failures", "restart_failed_env_runners"),
    ("model.custom_model", "model_config"),
])
def test_an_old_key_without_a_twin_is_refused_naming_what_to_use(old, named):
    with pytest.raises(UserError, match=named):
        old_keys.translate([(old.split("."), 1)], legacy=False)


def test_the_legacy_stack_keeps_the_old_names():
    assert old_keys.translate([(["train_batch_size"], 500)], legacy=True) == ((["train_batch_size"], 500),)


@pytest.mark.parametrize(("text", "value"), [("100000", 100_000), ("1e5", 100_000), ("1_000_000", 1_000_000)])
def test_step_counts_may_be_written_as_scientific_notation(text, value):
    assert whole_number(text) == value
