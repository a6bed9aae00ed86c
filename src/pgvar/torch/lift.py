"""Exact answers for a network on a tabular environment: the exact engine lifted to its parameters.

With one-hot observations a network's logits on every observation are a table theta(params), and
each episode's gradient in the parameters is J' g, g its gradient in that table and
J = d theta / d params. So the exact engine's mean and covariance lift to any network (see
``pgvar.exact.lifted_moments``): exact grad J, the exact variance trace of every estimator and its
share per parameter tensor, with nothing sampled.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.func import functional_call, jacrev

from pgvar import budget
from pgvar.errors import SpecError
from pgvar.estimators import EstimatorSpec
from pgvar.exact import LiftedMoments, lifted_moments
from pgvar.mdp import TabularMDP


def logit_table(policy: torch.nn.Module, n_observations: int) -> np.ndarray:
    """(O, A) the policy's logits on observations 0 .. O-1: pgvar's table for this network."""
    with torch.no_grad():
        return policy(torch.arange(n_observations)).double().numpy()


def logit_jacobian(policy: torch.nn.Module, n_observations: int) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """The policy's logits on observations 0 .. O-1 and their Jacobian in its parameters.

    Returns:
      theta_oa: (O, A) the logits, pgvar's table for this network.
      jacobian_dP: (O A, P) d theta / d params, columns in ``named_parameters`` order.
      block_sizes: the number of entries of each parameter tensor, in that order.
    """
    parameters = {name: value.detach() for name, value in policy.named_parameters()}
    n_parameters = sum(value.numel() for value in parameters.values())
    rows = n_observations * int(getattr(policy, "n_outputs", 1))
    budget.check(  # the Jacobian, and as much again while jacrev builds it
        f"exact: the logits' Jacobian ({rows} logits x {n_parameters} parameters)",
        memory=2 * 8.0 * rows * n_parameters,
        hint="a smaller network",
    )
    observations = torch.arange(n_observations)

    def logits(values: dict[str, torch.Tensor]) -> torch.Tensor:
        return functional_call(policy, values, (observations,))

    with torch.no_grad():
        theta_oa = logits(parameters)
    blocks_n = jacrev(logits)(parameters)  # name -> (O, A, *shape of the tensor)
    rows = theta_oa.numel()
    columns = [blocks_n[name].reshape(rows, -1) for name in parameters]
    return (
        theta_oa.double().numpy(),
        torch.cat(columns, dim=1).double().numpy(),
        [column.shape[1] for column in columns],
    )


def exact_network_moments(
    policy: torch.nn.Module, mdp: TabularMDP, spec: EstimatorSpec, method: str = "auto"
) -> LiftedMoments:
    """Exact mean (the policy gradient, for unbiased estimators) and variance trace of ``spec``'s
    single-episode estimate for ``policy`` on ``mdp`` (a tabular model of the same environment: its
    observation of each state is what the policy is fed), per parameter tensor too."""
    if not getattr(policy, "discrete", False):
        raise SpecError("exact: needs a categorical policy (discrete actions)")
    n_observations = int(mdp.observation_s.max()) + 1
    theta_oa, jacobian_dP, block_sizes = logit_jacobian(policy, n_observations)
    if theta_oa.shape != (n_observations, mdp.n_actions):
        raise SpecError(
            f"exact: the policy gives {theta_oa.shape[-1]} logits per observation; "
            f"{mdp.name!r} has {mdp.n_actions} actions"
        )
    return lifted_moments(mdp, theta_oa, spec, jacobian_dP, block_sizes, method)
