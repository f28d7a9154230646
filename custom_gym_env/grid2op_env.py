"""A real power grid from PyPI: Grid2Op's IEEE 14-bus sandbox as a Gymnasium env the trainer can take by path.

    pip install grid2op        # its test data ship in the package: test=True needs no download
    python simple_example/simple_trainer.py --name-env custom_gym_env/grid2op_env.py:Grid2OpEnv --num-cpus 1

Grid2Op's own Gymnasium view (grid2op.gym_compat.GymEnv) has a Dict observation of ~50 keys and a Dict action of
every possible topology change; what an agent can learn from on a laptop is narrower, as Grid2Op's docs do it: the
observation is a flat Box of a few keys (BoxGymObsSpace: line loadings, generator outputs, loads) and the action a
choice among a few hundred unitary topology actions (DiscreteActSpace). Three things every Grid2Op user meets, and
how this file deals with them:

* Grid2Op makes its classes at run time, per env, in the process that builds it; a class made in one process does
  not unpickle in another. Everything here is built in the env's __init__, in whichever process the copy lives in
  (an env runner, an async sub-env), and nothing of Grid2Op is kept on the env class or pickled with the creator.
* A step runs a power flow (pandapower: 26 ms a step here, up to 240 ms when lines trip), so --vectorize auto picks
  async sub-envs and the run's sample timeout is set from the measured step (rlhpc.algo.config.sample_timeout).
* An episode ends when the grid collapses (a blackout): `terminated`. Reward: Grid2Op's default (L2RPNReward), the
  margin left on the lines; the env's length cap (`max_steps`) truncates.

env_config keys: env_name (l2rpn_case14_sandbox), max_steps (288: a day in 5-minute steps), seed (0).
"""

import gymnasium as gym
import numpy as np

OBSERVATION_KEYS = ["rho", "gen_p", "load_p", "topo_vect", "line_status"]


class Grid2OpEnv(gym.Env):
    def __init__(self, env_config=None):
        import warnings

        import grid2op
        from grid2op.gym_compat import BoxGymObsSpace, DiscreteActSpace, GymEnv

        config = dict(env_config or {})
        unknown = sorted(set(config) - {"env_name", "max_steps", "seed"})
        if unknown:
            raise ValueError(f"Grid2OpEnv: unknown env_config key {unknown[0]!r}; keys: env_name, max_steps, seed")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "Numba cannot be loaded", and its data-set notices
            self._grid = grid2op.make(config.get("env_name", "l2rpn_case14_sandbox"), test=True)
        self._gym = GymEnv(self._grid)
        self._gym.observation_space.close()
        self._gym.observation_space = BoxGymObsSpace(self._grid.observation_space, attr_to_keep=OBSERVATION_KEYS)
        self._gym.action_space.close()
        self._gym.action_space = DiscreteActSpace(self._grid.action_space, attr_to_keep=["set_bus", "set_line_status"])
        # Plain Gymnasium spaces (Grid2Op's own subclasses carry the grid and do not pickle).
        low, high = self._gym.observation_space.low, self._gym.observation_space.high
        self.observation_space = gym.spaces.Box(low.astype(np.float32), high.astype(np.float32), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(int(self._gym.action_space.n))
        self.max_steps = int(config.get("max_steps", 288))
        self._seed = int(config.get("seed", 0))
        self._steps = 0

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._steps = 0
        observation, info = self._gym.reset(seed=self._seed if seed is None else seed)
        return observation.astype(np.float32), {}

    def step(self, action):
        observation, reward, terminated, truncated, _ = self._gym.step(int(action))
        self._steps += 1
        truncated = truncated or (not terminated and self._steps >= self.max_steps)
        return observation.astype(np.float32), float(reward), bool(terminated), bool(truncated), {}

    def close(self):
        self._gym.close()
