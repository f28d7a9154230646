"""The tutorial's and RLlib's old-API-stack config keys given to --set: each mapped onto its new-stack key, or refused
naming it; none is accepted and then ignored.

RLlib 2.60 still has attributes such as `train_batch_size`, `sgd_minibatch_size` and `model` on its configs (its
legacy stack reads them), so `--set train_batch_size=500` passed every check and trained on the new stack's
`train_batch_size_per_learner` (2,000) instead. On the legacy stack (--framework tf2) the old names are the ones
that work, and they pass through untouched.
"""

from rlhpc.errors import UserError, warn

# old key -> new-stack key, the same value.
RENAMED = {
    "train_batch_size": "train_batch_size_per_learner",
    "sgd_minibatch_size": "minibatch_size",
    "num_sgd_iter": "num_epochs",
    "num_envs_per_worker": "num_envs_per_env_runner",
    "num_cpus_per_worker": "num_cpus_per_env_runner",
    "num_gpus_per_worker": "num_gpus_per_env_runner",
    "custom_resources_per_worker": "custom_resources_per_env_runner",
    "evaluation_num_workers": "evaluation_num_env_runners",
    "num_cpus_for_driver": "num_cpus_for_main_process",
    "recreate_failed_workers": "restart_failed_env_runners",
    "lr_schedule": "lr",  # the new stack takes the schedule ([[timestep, value], ...]) as lr itself
    "entropy_coeff_schedule": "entropy_coeff",
    "vf_share_layers": "model_config.vf_share_layers",
}
# old key -> what to use instead; no key of the new stack takes the same value.
REFUSED = {
    "num_workers": "--num-cpus N (env runners; RLlib's num_env_runners)",
    "num_rollout_workers": "--num-cpus N (env runners; RLlib's num_env_runners)",
    "ignore_worker_failures": "nothing: failed env runners are restarted already (restart_failed_env_runners)",
    "horizon": "the env's own time limit (gymnasium.wrappers.TimeLimit, or an --env-config key of your env)",
}
# The old `model` dict's keys that RLlib's DefaultModelConfig (the new stack's `model_config`) has, under
# their new names; any other `model.*` key (custom_model, framestack, dim, ...) has no default-model twin.
MODEL_KEYS = {
    "post_fcnet_hiddens": "head_fcnet_hiddens",
    "post_fcnet_activation": "head_fcnet_activation",
    **{key: key for key in ("fcnet_hiddens", "fcnet_activation", "conv_filters", "conv_activation", "free_log_std",
                            "vf_share_layers", "use_lstm", "max_seq_len", "lstm_cell_size", "lstm_use_prev_action",
                            "lstm_use_prev_reward")},
}


def translate(overrides, *, legacy: bool) -> tuple:
    """((path, value), ...) from --set -> the same with old keys renamed; each rename said in one warning line,
    each key without a new-stack twin a UserError naming what to use."""
    if legacy:
        return tuple(overrides)
    translated = []
    for path, value in overrides:
        for new_path, new_value in _translate_one(tuple(path), value):
            translated.append((new_path, new_value))
    return tuple(translated)


def _translate_one(path: tuple, value) -> list:
    old = ".".join(path)
    root = path[0]
    if root in REFUSED:
        raise UserError(f"--set {old}: an old API stack key that RLlib 2.60 ignores here; use {REFUSED[root]}")
    if root in RENAMED:
        new = tuple(RENAMED[root].split(".")) + path[1:]
        warn(f"--set {old}: the old API stack's name, set as {'.'.join(new)}")
        return [(new, value)]
    if root != "model":
        return [(path, value)]
    if len(path) == 1:  # --set model={"fcnet_hiddens": [32]}: each key on its own
        if not isinstance(value, dict):
            raise UserError(f"--set model={value!r}: the new API stack's network settings are model_config.KEY")
        return [item for key, sub in value.items() for item in _translate_one(("model", str(key)), sub)]
    key = path[1]
    if key not in MODEL_KEYS or len(path) > 2:
        raise UserError(f"--set {old}: the old `model` dict has no twin of {key!r} in the new API stack's "
                        f"model_config (which has {', '.join(sorted(set(MODEL_KEYS.values())))}); a custom network "
                        "is an RLModule there")
    new = ("model_config", MODEL_KEYS[key])
    warn(f"--set {old}: the old API stack's name, set as {'.'.join(new)}")
    return [(new, value)]
