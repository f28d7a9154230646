"""A PPO policy network (RLlib torch RLModule) that never picks an action the env's action mask forbids.

RLlib's action-masking pattern (rllib/examples/rl_modules/classes/action_masking_rlm.py): the env's observation is
a Dict {observation(s): ..., action_mask: ...}; the default PPO network runs on the inner observation, and the logits
of masked actions are set to a large negative number in every forward pass (exploration, inference, training), so
they get ~0 probability when acting and the loss is computed under the same distribution the actions came from.

Unlike the example, the inner observation may be a Box of any rank (a (3, 3, 2) board), Discrete, MultiDiscrete or
MultiBinary: it is flattened inside the module (one-hot for integers), because the Dict must reach the module whole
(no FlattenObservations connector, rlhpc.algo.config) and RLlib's default encoders take a 1-D Box only. The batch
is never changed in place: RLlib's GAE connector and the learner call compute_values and forward_train on the same
batch, and the example's in-place rewrite makes the second call depend on the first.
"""

import gymnasium
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns
from ray.rllib.utils.framework import try_import_torch
from ray.rllib.utils.torch_utils import FLOAT_MIN

from rlhpc.envs import action_masks
from rlhpc.errors import UserError

torch, _ = try_import_torch()


class ActionMaskingTorchRLModule(DefaultPPOTorchRLModule):
    """DefaultPPOTorchRLModule on the flattened inner observation, with masked logits set to FLOAT_MIN."""

    def __init__(self, *, observation_space=None, action_space=None, **kwargs):
        # The checks of rlhpc.envs.action_masks ran before Ray started (rlhpc.algo.config); here they guard a module
        # built by hand or from a checkpoint of another env.
        key = action_masks.check(observation_space, action_space)
        if key is None:
            raise UserError(f"the action-masking policy needs an observation with an {action_masks.MASK_KEY!r}, "
                            f"got {observation_space}")
        self.observation_space_with_mask = observation_space
        self.observation_key = key
        self.inner_space = observation_space[key]
        flat = gymnasium.spaces.Box(float("-inf"), float("inf"), (action_masks.input_size(self.inner_space),))
        # The default network (PPOCatalog) is built for the flat inner observation...
        super().__init__(observation_space=flat, action_space=action_space, **kwargs)

    def setup(self):
        super().setup()
        # ...while the module declares the Dict it takes: RLlib's checks, the checkpoint's constructor arguments
        # (get_ctor_args_and_kwargs) and rlhpc.outputs.evaluate all read observation_space.
        self.observation_space = self.observation_space_with_mask

    def _forward_inference(self, batch, **kwargs):
        mask, batch = self._unpack(batch)
        return self._mask(super()._forward_inference(batch, **kwargs), mask)

    def _forward_exploration(self, batch, **kwargs):
        mask, batch = self._unpack(batch)
        return self._mask(super()._forward_exploration(batch, **kwargs), mask)

    def _forward_train(self, batch, **kwargs):
        mask, batch = self._unpack(batch)
        return self._mask(super()._forward_train(batch, **kwargs), mask)

    def compute_values(self, batch, embeddings=None):
        if embeddings is None:  # the learner passes forward_train's embeddings; GAE passes the raw batch
            _, batch = self._unpack(batch)
        return super().compute_values(batch, embeddings)

    def _unpack(self, batch):
        """-> (the mask, a shallow copy of the batch whose observation is the flat inner one)."""
        obs = batch[Columns.OBS]
        if not isinstance(obs, dict):  # already unpacked (a subclass calling twice)
            return batch.get(action_masks.MASK_KEY), batch
        batch = dict(batch)
        batch[Columns.OBS] = self._flatten(obs[self.observation_key])
        return obs[action_masks.MASK_KEY], batch

    def _flatten(self, obs):
        """The inner observation as the (batch..., n) float tensor the default network was built for."""
        space = self.inner_space
        if isinstance(space, gymnasium.spaces.Discrete):
            return torch.nn.functional.one_hot(obs.long() - int(space.start), int(space.n)).float()
        if isinstance(space, gymnasium.spaces.MultiDiscrete):
            parts = [torch.nn.functional.one_hot(obs[..., i].long() - int(space.start[i]), int(n))
                     for i, n in enumerate(space.nvec)]
            return torch.cat(parts, dim=-1).float()
        leading = obs.shape[:obs.dim() - len(space.shape)]  # batch (and time) dims in front of the space's own
        return obs.reshape(*leading, -1).float()

    @staticmethod
    def _mask(outputs, mask):
        if mask is not None:
            logits = outputs[Columns.ACTION_DIST_INPUTS]
            # Replaced rather than added to (the example adds log(mask) clamped at FLOAT_MIN): the same
            # probabilities, with no log(0) = -inf on the way and no dependence on the logit's size.
            outputs[Columns.ACTION_DIST_INPUTS] = logits.masked_fill(mask.to(logits.device) <= 0, FLOAT_MIN)
        return outputs
