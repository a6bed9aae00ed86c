"""The lifted exact engine on a network (``pgvar.torch.lift``): the Jacobian of the logits, and the
exact policy gradient in the network's parameters against finite differences of the exact J."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import pgvar  # noqa: E402
from pgvar.errors import SpecError  # noqa: E402
from pgvar.exact import objective  # noqa: E402
from pgvar.torch.lift import exact_network_moments, logit_jacobian  # noqa: E402


class OneHotMLP(torch.nn.Module):
    """A small categorical policy on one-hot observations (independent of pgvar's own policies)."""

    discrete = True

    def __init__(self, observations: int, actions: int, hidden: int = 6, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.observations = observations
        self.net = torch.nn.Sequential(
            torch.nn.Linear(observations, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, actions)
        ).double()

    def forward(self, observations: torch.Tensor) -> torch.Tensor:
        return self.net(torch.nn.functional.one_hot(observations, self.observations).double())


def _flat(policy):
    return torch.cat([p.detach().reshape(-1) for p in policy.parameters()]).numpy()


def _set_flat(policy, flat):
    with torch.no_grad():
        start = 0
        for p in policy.parameters():
            p.copy_(torch.from_numpy(flat[start : start + p.numel()]).reshape(p.shape))
            start += p.numel()


def test_the_jacobian_matches_finite_differences():
    policy = OneHotMLP(3, 3)
    theta, jacobian, blocks = logit_jacobian(policy, 3)
    assert theta.shape == (3, 3) and jacobian.shape == (9, sum(blocks)) and blocks == [18, 6, 18, 3]
    flat, step = _flat(policy), 1e-6
    for p in range(0, flat.size, 5):
        bumped = flat.copy()
        bumped[p] += step
        _set_flat(policy, bumped)
        up = logit_jacobian(policy, 3)[0]
        bumped[p] -= 2 * step
        _set_flat(policy, bumped)
        down = logit_jacobian(policy, 3)[0]
        np.testing.assert_allclose((up - down).ravel() / (2 * step), jacobian[:, p], atol=1e-8)
        _set_flat(policy, flat)


@pytest.mark.parametrize("name", ["lesson", "short-corridor"])
def test_the_exact_mean_is_the_gradient_of_the_exact_objective_in_the_network_s_parameters(name):
    mdp = pgvar.make(name)
    n_observations = int(mdp.observation_s.max()) + 1
    policy = OneHotMLP(n_observations, mdp.n_actions, seed=3)
    moments = exact_network_moments(policy, mdp, pgvar.parse_estimator("rtg+value"))
    flat, step = _flat(policy), 1e-5

    def at(values):
        _set_flat(policy, values)
        return objective(mdp, logit_jacobian(policy, n_observations)[0])

    for p in range(0, flat.size, 4):
        up, down = flat.copy(), flat.copy()
        up[p] += step
        down[p] -= step
        assert moments.mean[p] == pytest.approx((at(up) - at(down)) / (2 * step), abs=1e-7)
    _set_flat(policy, flat)
    assert moments.variance_trace == pytest.approx(moments.block_traces.sum())
    assert (moments.block_traces > 0).all()


def test_a_policy_that_does_not_fit_the_mdp_is_refused_in_one_line():
    mdp = pgvar.make("lesson")
    with pytest.raises(SpecError, match="logits per observation"):
        exact_network_moments(OneHotMLP(3, 2), mdp, pgvar.parse_estimator("rtg"))
    gaussian = OneHotMLP(3, 3)
    gaussian.discrete = False
    with pytest.raises(SpecError, match="categorical"):
        exact_network_moments(gaussian, mdp, pgvar.parse_estimator("rtg"))
