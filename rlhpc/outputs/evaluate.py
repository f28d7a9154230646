"""Play a trained policy greedily: returns per episode, optionally a video, without starting Ray.

    python -m rlhpc.evaluate ~/ray_results/CartPole-v0                # best trial, its latest checkpoint
    python -m rlhpc.evaluate TRIAL_DIR/checkpoint_000001 --episodes 20 --seed 0
    python -m rlhpc.evaluate CHECKPOINT --video cartpole.mp4          # also records the first episode
    python -m rlhpc.evaluate CHECKPOINT --render                      # a window (needs a display)

The policy network (the RLModule) is loaded from the checkpoint, with the observation normalizer it trained behind
(--normalize-obs: RLlib's MeanStdFilter, its statistics as saved, no longer updated); the env is the one the run
recorded (rlhpc.run.experiment: a Gymnasium id, or the file and class of your own env), or --name-env
in any form the trainer takes (rlhpc.envs.sources), e.g. path/to/file.py:ClassName.
"""

import argparse
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rlhpc.envs import action_masks
from rlhpc.envs import sources as envs
from rlhpc.envs.gym_compat import is_multi_agent
from rlhpc.errors import UserError, fail
from rlhpc.run.cli import OneLineParser, env_config_from, positive_number
from rlhpc.run.experiment import read_run_record
from rlhpc.run.results import BEST_CHECKPOINT, BEST_RECORD

if TYPE_CHECKING:
    from imageio.core.format import Format

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")  # Gymnasium's renderers import pygame

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".avi")
MODULE_PATH = ("learner_group", "learner", "rl_module")  # where an Algorithm checkpoint keeps its RLModules
# Where it keeps the env runners' MeanStdFilter (rlhpc.algo.config.normalized_observations): merged over the runners.
FILTER_PATH = ("env_runner", "env_to_module_connector", "MeanStdFilter", "state.pkl")


def is_checkpoint(path: Path) -> bool:
    return (path / "rllib_checkpoint.json").is_file() or (path / "learner_group").is_dir()


def checkpoint_index(path: Path) -> int:
    try:
        return int(path.name.rsplit("_", 1)[1])
    except (IndexError, ValueError):
        return -1


def best_checkpoint(trial_dir: Path):
    """-> (the trial's best checkpoint by evaluation, its record), or (None, None) (rlhpc.algo.metrics,
    --eval-interval)."""
    best = trial_dir / BEST_CHECKPOINT
    if not is_checkpoint(best):
        return None, None
    try:
        return best, json.loads((best / BEST_RECORD).read_text())
    except (OSError, ValueError):
        return best, {}


def chosen(trial_dir: Path, latest: bool) -> Path:
    """A trial's best checkpoint by evaluation (said), unless --latest or it has none; else its latest."""
    best, record = (None, None) if latest else best_checkpoint(trial_dir)
    if best is None or record is None:
        return latest_checkpoint(trial_dir)
    print(f"best checkpoint by evaluation: iteration {record.get('training_iteration', '?')}, evaluation return "
          f"{record.get('evaluation_return', float('nan')):.2f} (--latest for the last one)", flush=True)
    return best


def find_checkpoint(path, latest: bool = False) -> Path:
    """A checkpoint dir as given; a trial dir's best checkpoint by evaluation, else its latest; an experiment's
    best trial's (by evaluation where its trials were evaluated, else by final training return)."""
    path = Path(os.path.expanduser(str(path))).absolute()
    if not path.exists():
        raise UserError(f"no such checkpoint: {path}")
    if not path.is_dir():
        raise UserError(f"{path} is not a checkpoint: give a checkpoint_* dir, a trial dir or an experiment dir")
    if is_checkpoint(path):
        return path
    if latest_checkpoint(path) or best_checkpoint(path)[0]:
        return chosen(path, latest)
    trials = [p for p in sorted(path.iterdir()) if p.is_dir() and (latest_checkpoint(p) or best_checkpoint(p)[0])]
    if not trials:
        raise UserError(f"{path} is not a checkpoint and holds no checkpoint_* dirs "
                        "(give a checkpoint dir, a trial dir or an experiment dir)")
    if len(trials) == 1:
        return chosen(trials[0], latest)
    evaluated: dict[Path, Any] = {t: (best_checkpoint(t)[1] or {}).get("evaluation_return") for t in trials}
    if not latest and all(v is not None for v in evaluated.values()):
        best = max(trials, key=lambda t: evaluated[t])
        print(f"best of {len(trials)} trials by evaluation return: {best.name}", flush=True)
        return chosen(best, latest)
    from rlhpc.outputs.compare import final_return, read_progress

    def score(trial):  # a trial with a broken progress.csv still counts, just last
        try:
            return final_return(read_progress(trial))
        except UserError:
            return float("-inf")

    best = max(trials, key=score)  # the first of equals: trials are sorted by name
    print(f"best of {len(trials)} trials by final training return: {best.name}", flush=True)
    return chosen(best, latest)


def latest_checkpoint(trial_dir: Path):
    found = [p for p in trial_dir.glob("checkpoint_*") if p.is_dir() and is_checkpoint(p)]
    return max(found, key=lambda p: (checkpoint_index(p), p.stat().st_mtime)) if found else None


def module_dirs(checkpoint: Path) -> dict:
    """{policy id: its RLModule's dir} in a checkpoint: one for a single agent, one per policy for several."""
    if (checkpoint / "policies").is_dir():
        raise UserError(f"{checkpoint} is a legacy API stack checkpoint (--framework tf2): "
                        "evaluate reads new API stack (torch) checkpoints only")
    modules = checkpoint.joinpath(*MODULE_PATH)
    found = sorted(p for p in modules.iterdir() if p.is_dir()) if modules.is_dir() else []
    if not found:
        raise UserError(f"corrupt checkpoint {checkpoint}: no policy under {'/'.join(MODULE_PATH)}/")
    return {p.name: p for p in found}


def load_module(checkpoint: Path, path: Path):
    """The trained RLModule, in inference mode; any failure to read it is a corrupt checkpoint."""
    logging.getLogger("ray._common.deprecation").setLevel(logging.ERROR)  # RLlib warns about its own call
    try:
        from ray.rllib.core.rl_module import RLModule

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            module = RLModule.from_checkpoint(path)
    except ImportError as e:
        raise UserError(f"cannot load the policy: {e}") from None
    except Exception as e:  # noqa: BLE001 -- truncated pickles, missing state files, a checkpoint from another Ray
        detail = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise UserError(f"corrupt checkpoint {checkpoint}: cannot load {path.name}: "
                        f"{type(e).__name__}{': ' + detail if detail else ''}") from None
    if hasattr(module, "eval"):
        module.eval()  # torch: dropout/batch-norm in inference mode
    if module.is_stateful():
        raise UserError("recurrent policies (use_lstm / stateful RLModules) are not supported by evaluate yet")
    return module


def observation_filters(checkpoint: Path) -> dict:
    """The run's observation normalizers as saved (ray.rllib.utils.filter.MeanStdFilter): {agent id: normalizer},
    agent None for a single-agent env; {} when it trained without. A policy played without its agent's normalizer
    sees raw observations it never saw in training."""
    path = checkpoint.joinpath(*FILTER_PATH)
    if not path.is_file():
        return {}
    import pickle

    import tree  # type: ignore[import-untyped]
    from ray.rllib.utils.filter import MeanStdFilter, RunningStat

    normalizers = {}
    try:
        with open(path, "rb") as f:
            state = pickle.load(f)
        for agent, saved in state.items():  # RLlib's MeanStdFilter connector: one filter per agent id
            normalizer = MeanStdFilter(saved["shape"], demean=saved["de_mean_to_zero"],
                                       destd=saved["de_std_to_one"], clip=saved["clip_by_value"])
            normalizer.running_stats = tree.unflatten_as(
                normalizer.shape, [RunningStat.from_state(stats) for stats in saved["running_stats"]])
            normalizers[agent] = normalizer
    except Exception as e:  # noqa: BLE001 -- a truncated pickle, a state from another Ray
        raise UserError(f"corrupt checkpoint {checkpoint}: cannot read its observation normalizer "
                        f"({'/'.join(FILTER_PATH)}): {type(e).__name__}: {e}") from None
    return normalizers


def agent_policies(checkpoint: Path, agents: list, policies: list) -> dict:
    """A multi-agent env's agent -> policy id: as the run recorded it (rlhpc.envs.multi_agent), else the obvious one."""
    recorded = read_run_record(checkpoint.parent).agent_policy
    if recorded:
        unknown = [str(agent) for agent in agents if agent not in recorded]
        if unknown:
            raise UserError(f"{checkpoint}'s run trained agents {', '.join(sorted(map(str, recorded)))}, not "
                            f"{', '.join(unknown)}: is it the env (and env_config) the run trained on?")
        mapping = {agent: recorded[agent] for agent in agents}
    elif set(agents) <= set(policies):
        mapping = {agent: agent for agent in agents}
    elif len(policies) == 1:
        mapping = dict.fromkeys(agents, policies[0])
    else:
        raise UserError(f"{checkpoint} holds policies {', '.join(policies)} and its run recorded no agent -> "
                        "policy mapping: cannot tell which policy plays which agent")
    missing = sorted({str(p) for p in mapping.values() if p not in policies})
    if missing:
        raise UserError(f"{checkpoint} has no policy {', '.join(missing)} (it holds {', '.join(policies)}): "
                        "is it the env the run was trained on?")
    return mapping


def trial_params(checkpoint: Path) -> dict:
    try:
        with open(checkpoint.parent / "params.json") as f:
            return json.load(f)
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        raise UserError(f"cannot read {checkpoint.parent / 'params.json'}: {e}") from None


def env_to_play(checkpoint: Path, params: dict, name_env):
    """-> (EnvSource, creator, env_config): --name-env if given, else the env the run recorded."""
    trained_env = params.get("env")
    record = read_run_record(checkpoint.parent).env
    if name_env:
        source, creator = envs.find(name_env)
    elif record:
        source = envs.EnvSource.from_record(record)
        creator = envs.load(source)
    elif isinstance(trained_env, str) and trained_env and not trained_env.startswith("<"):
        try:
            source, creator = envs.find(trained_env)
        except UserError as e:
            raise UserError(f"{e}; the run recorded no env source: give --name-env path/to/file.py:ClassName") \
                from None
    else:
        raise UserError(f"no params.json beside {checkpoint} names the env it was trained on "
                        f"({'found ' + repr(trained_env) if trained_env else 'none found'}): give --name-env")
    same_env = trained_env in (source.name, source.name.rpartition(":")[2])  # file.py:Class for the class trained on
    return source, creator, dict(params.get("env_config") or {}) if same_env else {}


def check_masked_spaces(trained, here, name: str) -> None:
    """A masking policy's Dict against the env's: the same inner observation size and mask, else one line."""
    key = action_masks.observation_key(here)
    sizes = [(action_masks.input_size(space[k]), space[action_masks.MASK_KEY].shape) if k else None
             for space, k in ((trained, action_masks.observation_key(trained)), (here, key))]
    if sizes[0] != sizes[1]:
        raise UserError(f"the policy takes observations {trained} with an action mask but {name} gives {here}: "
                        "is it the env (and env_config) the policy was trained on?")


class GreedyPolicy:
    """The module's most likely action (argmax for Discrete, the mean for Box, squashed for SAC).

    Observations and actions pass through what the trainer's connectors did: observations the default networks
    cannot take are flattened (one-hot for Discrete, rlhpc.envs.spaces); Box actions are scaled
    from [-1, 1] to the env's bounds (normalize_actions, RLlib's default) or clipped (clip_actions).
    """

    def __init__(self, module, spaces: tuple, params: dict, name: str, normalizer=None):
        """spaces: (observation space, action space) of the env, or of one agent of a multi-agent env; normalizer:
        the run's observation filter (observation_filters: its agent's), applied after the flattening as in training."""
        import gymnasium
        from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

        self.module, self.normalizer = module, normalizer
        self.observation_space, action_space = spaces
        # The trainer flattened what RLlib's default networks cannot take (rlhpc.envs.spaces.observation_plan): a
        # module that takes a flat vector from an env that gives anything else played flattened observations.
        trained_on = getattr(module, "observation_space", None)
        self.flatten = isinstance(trained_on, gymnasium.spaces.Box) and len(trained_on.shape) == 1 and not (
            isinstance(self.observation_space, gymnasium.spaces.Box) and len(self.observation_space.shape) == 1)
        # A policy trained with an action mask (rlhpc.algo.action_masking) takes the Dict whole, mask included, and
        # sets the masked actions' logits to FLOAT_MIN in forward_inference: the greedy action is never masked.
        self.masked = isinstance(trained_on, gymnasium.spaces.Dict) and \
            action_masks.observation_key(trained_on) is not None
        if self.masked:
            check_masked_spaces(trained_on, self.observation_space, name)
        self.action_struct = get_base_struct_from_space(action_space)
        self.normalize = params.get("normalize_actions", True)
        self.clip = params.get("clip_actions", False)
        self.dist_cls = module.get_inference_action_dist_cls()
        expected = getattr(module.observation_space, "shape", None)
        got = self.prepare(self.observation_space.sample()).shape if expected is not None else None
        if expected is not None and tuple(expected) != got:
            raise UserError(f"the policy takes observations of shape {tuple(expected)} but {name} gives {got}: "
                            "is it the env (and env_config) the policy was trained on?")
        trained, here = getattr(module, "action_space", None), action_space
        if trained is not None and (type(trained) is not type(here) or trained.shape != here.shape
                                    or getattr(trained, "n", None) != getattr(here, "n", None)):
            raise UserError(f"the policy acts in {trained} but {name} takes {here}: "
                            "is it the env (and env_config) the policy was trained on?")

    def prepare(self, obs):
        import gymnasium
        import numpy as np

        if self.masked:  # the module flattens the inner observation itself
            return {key: np.asarray(value) for key, value in obs.items()}
        if self.flatten:
            obs = gymnasium.spaces.flatten(self.observation_space, obs)
        if self.normalizer is not None:  # the saved statistics, not updated by what evaluate plays
            obs = self.normalizer(obs, update=False)
        return np.asarray(obs, dtype=np.float32)

    def __call__(self, obs):
        import torch
        from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action

        with torch.no_grad():
            prepared = self.prepare(obs)
            batch = {key: torch.from_numpy(value)[None] for key, value in prepared.items()} \
                if isinstance(prepared, dict) else torch.from_numpy(prepared)[None]
            out = self.module.forward_inference({"obs": batch})
            if "actions" in out:  # e.g. DQN: argmax of the Q-values, already chosen
                action = out["actions"]
            else:
                dist = self.dist_cls.from_logits(out["action_dist_inputs"])
                action = dist.to_deterministic().sample()
                if hasattr(dist, "_squash"):
                    # SAC's squashed Gaussian: training acts with tanh(sample), but RLlib's deterministic
                    # action is the bare mean; tanh(mean) is the trained policy's most likely action.
                    action = dist._squash(action)
        action = action[0].cpu().numpy()
        if self.normalize:
            action = unsquash_action(action, self.action_struct)
        elif self.clip:
            action = clip_action(action, self.action_struct)
        return action.item() if getattr(action, "ndim", None) == 0 else action


class VideoRecorder:
    """Streams rgb_array frames into a video file (ffmpeg from imageio-ffmpeg, no system install)."""

    writer: "Format.Writer | None"  # opened at the first frame

    def __init__(self, path: Path, fps: int):
        self.path, self.fps, self.writer, self.frames = path, fps, None, 0

    def add(self, frame) -> None:
        import numpy as np

        if not isinstance(frame, np.ndarray) or frame.ndim != 3 or frame.shape[2] not in (3, 4):
            raise UserError(f"the env's render() gave no RGB image ({type(frame).__name__}): cannot record a video")
        if self.writer is None:
            import imageio.v2 as imageio

            # Block size 2: yuv420p needs even sides; 16 (the default) would rescale most frames.
            self.writer = imageio.get_writer(self.path, format="FFMPEG", mode="I", fps=self.fps,
                                             macro_block_size=2, ffmpeg_log_level="error")
        self.writer.append_data(frame[:, :, :3])
        self.frames += 1

    def close(self, keep: bool = True) -> None:
        if self.writer is not None:
            self.writer.close()
        if not keep:
            self.path.unlink(missing_ok=True)


def play(env, policy, episodes: int, seed=None, max_steps=None, recorder=None) -> list:
    """Returns the episode returns; the first episode goes to `recorder` frame by frame."""
    returns = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)  # seeded once: a reproducible sequence
        record = recorder is not None and episode == 0
        if record:
            recorder.add(env.render())
        total, length, done = 0.0, 0, False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(policy(obs))
            total += float(reward)
            length += 1
            done = terminated or truncated or (max_steps is not None and length >= max_steps)
            if record:
                recorder.add(env.render())
        print(f"episode {episode + 1:4d}  return {total:10.2f}  length {length:6d}", flush=True)
        returns.append(total)
    return returns


def print_normalizers(policy) -> None:
    """How many observations the normalizers it plays with were computed from (the policy's, or each agent's)."""
    played = policy.items() if isinstance(policy, dict) else [(None, policy)]
    counts = {agent: p.normalizer.running_stats.n for agent, p in played if p.normalizer is not None}
    if None in counts:
        print(f"observations normalized as in training: mean/std of {counts[None]:,} observations from the "
              "checkpoint", flush=True)
    elif counts:
        print("observations normalized as in training, each agent's own mean/std from the checkpoint: "
              + ", ".join(f"{agent} {n:,} observations" for agent, n in sorted(counts.items())), flush=True)


def play_agents(env, policies: dict, episodes: int, seed=None, max_steps=None, recorder=None) -> list:
    """A multi-agent env: each agent acts with its own policy. -> [(total return, {agent: return})]."""
    played = []
    for episode in range(episodes):
        obs, _ = env.reset(seed=seed if episode == 0 else None)
        record = recorder is not None and episode == 0
        if record:
            recorder.add(env.render())
        by_agent, length, done = dict.fromkeys(policies, 0.0), 0, False
        while not done:
            obs, rewards, terminated, truncated, _ = env.step({agent: policies[agent](o) for agent, o in obs.items()})
            for agent, reward in rewards.items():
                by_agent[agent] = by_agent.get(agent, 0.0) + float(reward)
            length += 1
            done = terminated.get("__all__", False) or truncated.get("__all__", False) or \
                (max_steps is not None and length >= max_steps)
            if record:
                recorder.add(env.render())
        total = sum(by_agent.values())
        print(f"episode {episode + 1:4d}  return {total:10.2f}  length {length:6d}  (" +
              ", ".join(f"{agent} {value:.2f}" for agent, value in by_agent.items()) + ")", flush=True)
        played.append((total, by_agent))
    return played


def check_outputs(args) -> None:
    """Flag problems that would otherwise surface only after loading the policy."""
    if args.video:
        video = Path(os.path.expanduser(args.video))
        if video.suffix.lower() not in VIDEO_SUFFIXES:
            raise UserError(f"--video {args.video}: give a file ending in {', '.join(VIDEO_SUFFIXES)}")
        if not video.parent.absolute().is_dir():
            raise UserError(f"--video {args.video}: no such directory {video.parent}")
        if not os.access(video.parent.absolute(), os.W_OK):
            raise UserError(f"--video {args.video}: cannot write to {video.parent.absolute()}")
        try:
            import imageio_ffmpeg

            imageio_ffmpeg.get_ffmpeg_exe()
        except (ImportError, RuntimeError) as e:
            raise UserError(f"--video needs imageio and imageio-ffmpeg (pip install imageio imageio-ffmpeg): {e}") \
                from None
    if args.render and sys.platform.startswith("linux") and not (
            os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        raise UserError("--render opens a window and needs a display (DISPLAY is not set); "
                        "on a cluster node record one instead: --video out.mp4")


def evaluate(args) -> int:  # noqa: C901 -- one story: load, build the env, play; no half video left on a failure
    check_outputs(args)
    checkpoint = find_checkpoint(args.checkpoint, args.latest)
    params = trial_params(checkpoint)
    source, creator, env_config = env_to_play(checkpoint, params, args.name_env)
    name = source.name
    env_config.update(env_config_from(args.env_config))
    dirs = module_dirs(checkpoint)
    render_mode = "human" if args.render else "rgb_array" if args.video else None
    # pygame (Gymnasium's renderer) opens sound and a display on init and complains on stderr without
    # them; frames for a video need neither.
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")
    if not args.render:
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")
    env = envs.make(source, creator, env_config, render_mode)
    recorder = None
    try:
        if is_multi_agent(env):  # each agent with the policy it trained
            spaces_of = envs.agent_spaces(env)
            mapping = agent_policies(checkpoint, list(spaces_of), list(dirs))
            modules = {policy: load_module(checkpoint, dirs[policy]) for policy in set(mapping.values())}
            normalizers = observation_filters(checkpoint)  # per agent, also when agents share a policy
            policy: dict[str, GreedyPolicy] | GreedyPolicy = {
                agent: GreedyPolicy(modules[mapping[agent]], spaces, params, f"{name} ({agent})",
                                    normalizers.get(agent))
                for agent, spaces in spaces_of.items()}
        elif len(dirs) > 1:
            raise UserError(f"{checkpoint} holds {len(dirs)} policies ({', '.join(dirs)}) but {name} has one "
                            "agent: is it the env the run was trained on?")
        else:
            [path] = dirs.values()
            policy = GreedyPolicy(load_module(checkpoint, path), (env.observation_space, env.action_space), params,
                                  name, observation_filters(checkpoint).get(None))
        if args.video:
            fps = (getattr(env, "metadata", None) or {}).get("render_fps") or 30
            recorder = VideoRecorder(Path(os.path.expanduser(args.video)), int(fps))
        print(f"checkpoint: {checkpoint}", flush=True)
        print(f"env: {name}" + (f" {json.dumps(env_config)}" if env_config else "")
              + f", {args.episodes} greedy episode(s)", flush=True)
        print_normalizers(policy)
        try:
            if isinstance(policy, dict):
                played = play_agents(env, policy, args.episodes, args.seed, args.max_steps, recorder)
                returns = [total for total, _ in played]
            else:
                played, returns = None, play(env, policy, args.episodes, args.seed, args.max_steps, recorder)
        except Exception as e:  # pygame missing for rendering, and the like
            import gymnasium

            if isinstance(e, gymnasium.error.DependencyNotInstalled):
                raise UserError(f"cannot render {name}: {e}") from None
            raise
    except BaseException:
        if recorder is not None:
            recorder.close(keep=False)  # half a video would look like a whole one
        raise
    finally:
        env.close()
    if recorder is not None:
        recorder.close()
    print(f"mean return {sum(returns) / len(returns):.2f}  min {min(returns):.2f}  max {max(returns):.2f} "
          f"over {len(returns)} episodes")
    if played:
        agents = list(played[0][1])
        print("mean return by agent: " + ", ".join(
            f"{agent} {sum(by_agent.get(agent, 0.0) for _, by_agent in played) / len(played):.2f} "
            f"({mapping[agent]})" for agent in agents))
    if recorder is not None:
        print(f"video: {args.video} (episode 1, {recorder.frames} frames at {recorder.fps} fps)")
    return 0


def main(argv=None) -> int:
    parser = OneLineParser(prog="python -m rlhpc.evaluate", description=__doc__,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("checkpoint", metavar="CHECKPOINT",
                        help="a checkpoint_* dir, a trial dir (its latest checkpoint) or an experiment dir "
                             "(the trial with the best final training return)")
    parser.add_argument("--latest", action="store_true",
                        help="a trial's latest checkpoint, not its best by evaluation (runs with --eval-interval)")
    parser.add_argument("--episodes", type=positive_number, default=10, help="episodes to play (default: 10)")
    parser.add_argument("--seed", type=int, help="seed of the first reset (default: random)")
    parser.add_argument("--name-env", help="env to play in (default: the one in the trial's params.json)")
    parser.add_argument("--env-config", action="append", default=[], metavar="KEY=VALUE",
                        help="override the trained env_config (repeatable)")
    parser.add_argument("--max-steps", type=positive_number, help="cut episodes after this many steps")
    show = parser.add_mutually_exclusive_group()
    show.add_argument("--video", metavar="OUT.mp4", help="record the first episode to this video file")
    show.add_argument("--render", action="store_true", help="show the episodes in a window (needs a display)")
    args = parser.parse_args(argv)
    try:
        return evaluate(args)
    except UserError as e:
        fail(str(e))
    except KeyboardInterrupt:
        fail("interrupted", code=130)
    except BrokenPipeError:  # `... | head`: the reader is gone, nothing is left to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
