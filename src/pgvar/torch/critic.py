"""A value critic for the ``value`` baseline and GAE: V(s_t, t) regressed on the discounted returns
of episodes SEPARATE from those it is used on (a baseline fitted on the same episodes would correlate
with their scores and bias the estimate).

    critic = fit_critic(collect(env, policy, 256, seed=1), policy.observation_space)
    batch = collect(env, policy, 256, seed=2)
    g_bD = episode_gradients(policy, batch, parse_estimator("gae0.95"), values_bt=critic.values_bt(batch))

The fit is deterministic given its seed: the initial weights come from the seed, and training is
full-batch Adam (Kingma & Ba 2015) for a fixed number of epochs on the mean squared error of
standardised targets, with no data shuffling. The step t (divided by the longest fitted episode's
length) is an input besides the observation, as the value of a time-limited task depends on the
time left (Pardo et al. 2018).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from pgvar import budget
from pgvar.returns import reward_to_go
from pgvar.torch.episodes import Episodes
from pgvar.torch.policies import DTYPE, ObservationEncoder
from pgvar.validation import check_int, check_number, check_seed

FLOPS = 2e9  # floating-point operations per second, for the budget's work estimate


class ValueCritic(nn.Module):
    """V(o, t): a tanh MLP on the encoded observation and t / ``time_scale``, in the targets' units."""

    def __init__(
        self, observation_space, hidden: tuple[int, ...] = (32, 32), time_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.encode = ObservationEncoder(observation_space)
        self.time_scale = float(time_scale)
        layers: list[nn.Module] = []
        width = self.encode.width + 1
        for size in hidden:
            layers += [nn.Linear(width, size, dtype=DTYPE), nn.Tanh()]
            width = size
        self.body = nn.Sequential(*layers, nn.Linear(width, 1, dtype=DTYPE))
        self.register_buffer("target_mean", torch.zeros((), dtype=DTYPE))
        self.register_buffer("target_std", torch.ones((), dtype=DTYPE))

    def normalised(self, observations: Tensor, steps: Tensor) -> Tensor:
        """(...) the network's output before the targets' scale is put back."""
        time = (torch.as_tensor(steps, dtype=DTYPE) / self.time_scale).unsqueeze(-1)
        return self.body(torch.cat([self.encode(observations), time], dim=-1)).squeeze(-1)

    def forward(self, observations: Tensor, steps: Tensor) -> Tensor:
        """(...) V(o, t) for observations (..., *obs_shape) at steps (...)."""
        return self.target_mean + self.target_std * self.normalised(observations, steps)

    def values_bt(self, episodes: Episodes) -> np.ndarray:
        """(B, T) V(s_t, t) along each episode, zero after its end."""
        steps_bt = torch.arange(episodes.n_steps, dtype=DTYPE).expand(episodes.alive_bt.shape)
        with torch.no_grad():
            values_bt = self(episodes.observations_bt, steps_bt).numpy()
        return np.where(episodes.alive_bt, values_bt, 0.0)

    def final_values_b(self, episodes: Episodes) -> np.ndarray:
        """(B,) V of each final observation at the step after the last: the truncation values a
        truncated episode bootstraps from (terminated ones ignore theirs)."""
        with torch.no_grad():
            steps_b = torch.as_tensor(episodes.lengths_b, dtype=DTYPE)
            return self(episodes.final_observations_b, steps_b).numpy()


def fit_critic(
    episodes: Episodes,
    observation_space,
    *,
    targets_bt: np.ndarray | None = None,
    hidden: tuple[int, ...] = (32, 32),
    epochs: int = 200,
    lr: float = 1e-2,
    seed: int = 0,
) -> ValueCritic:
    """Fit V(s_t, t) to the discounted reward-to-go of ``episodes`` (least squares, full-batch Adam).

    Args:
      episodes: the fitting episodes: NOT the ones the critic will be used on.
      observation_space: the environment's (``policy.observation_space``).
      targets_bt: (B, T) regression targets; default the reward-to-go G_t of the episodes' rewards
        (every end final). With an entropy bonus pass ``pgvar.torch.gradients.episode_returns_bt``.
      hidden: widths of the tanh hidden layers.
      epochs, lr: Adam steps on the whole set, and their step size.
      seed: seeds the initial weights (the global RNG is untouched).
    """
    epochs = check_int(epochs, "epochs", low=0)
    lr = check_number(lr, "lr", low=0.0, low_open=True)
    if targets_bt is None:
        targets_bt = reward_to_go(np.where(episodes.alive_bt, episodes.rewards_bt, 0.0).T, episodes.gamma).T
    alive_bt = episodes.alive_bt
    samples = int(alive_bt.sum())
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(check_seed(seed))
        critic = ValueCritic(observation_space, tuple(hidden), time_scale=max(episodes.n_steps, 1))
    n_parameters = sum(p.numel() for p in critic.parameters())
    activations = critic.encode.width + 1 + 2 * sum(hidden) + 2
    budget.check(
        f"fit_critic ({samples} steps, {epochs} epochs)",
        memory=8.0 * samples * (3 * activations + critic.encode.width + 2),
        seconds=6.0 * epochs * samples * (n_parameters + activations) / FLOPS,
        hint="fewer episodes or epochs",
    )
    alive = torch.from_numpy(alive_bt)
    observations = episodes.observations_bt[alive]
    steps = torch.arange(episodes.n_steps, dtype=DTYPE).expand(alive_bt.shape)[alive]
    targets = torch.as_tensor(np.asarray(targets_bt, dtype=float))[alive]
    if samples:
        critic.target_mean.fill_(targets.mean())
        critic.target_std.fill_(targets.std(correction=0).clamp_min(1e-8))
    scaled = (targets - critic.target_mean) / critic.target_std
    optimiser = torch.optim.Adam(critic.body.parameters(), lr=lr)
    for _ in range(epochs if samples else 0):
        optimiser.zero_grad()
        loss = torch.mean((critic.normalised(observations, steps) - scaled) ** 2)
        loss.backward()
        optimiser.step()
    return critic.requires_grad_(False)
