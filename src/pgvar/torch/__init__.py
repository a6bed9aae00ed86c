"""PyTorch policies on Gymnasium environments (the optional extra ``pgvar[gym]``): the same KPI as
the tabular core, measured from per-episode gradients, and exact where the environment is tabular::

    import pgvar.torch as pt
    from pgvar.estimators import parse_estimators

    env, policy = pt.make_network("CartPole-v1", "mlp:64,64", policy_seed=0)
    study = pt.network_variance_study(env, policy, parse_estimators("vanilla,rtg+base"), ns=[1, 16])
    study.readings[0].variance_trace, study.readings[0].noise_scale

    episodes = pt.collect(env, policy, 256, seed=1)              # padded (B, T) arrays
    grads_bD = pt.episode_gradients(policy, episodes, parse_estimators("rtg")[0])

    monitor = pt.GradientMonitor(my_model.parameters())           # inside your own training loop
    record = monitor.update(per_episode_losses_b)                  # tr Sigma, |G|^2, B_simple, cosine

Modules: ``policies`` (tabular, linear, mlp heads), ``episodes`` (seeded vector-env collection),
``gradients`` (per-episode estimates: one packed backward pass, or torch.func's vmap), ``critic``
(the value baseline), ``lift`` (the exact engine in a network's parameters), ``lqr`` (the LQR's exact
gradient for a linear Gaussian policy), ``study`` (the measurement), ``training`` (``pgvar train
--env``) and ``monitor``.
"""

from pgvar.torch.critic import ValueCritic, fit_critic
from pgvar.torch.episodes import Episodes, collect
from pgvar.torch.gradients import (
    RunningBaseline,
    batched_gradient,
    episode_gradients,
    loop_gradients,
    parameter_layout,
)
from pgvar.torch.lift import exact_network_moments, logit_jacobian, logit_table
from pgvar.torch.lqr import exact_lqr_gradient, exact_lqr_objective
from pgvar.torch.monitor import GradientMonitor, MonitorRecord, per_episode_gradients
from pgvar.torch.policies import Policy, make_network, make_policy
from pgvar.torch.study import (
    NetworkReading,
    NetworkStudy,
    Reference,
    network_variance_study,
)

__all__ = [
    "Episodes",
    "GradientMonitor",
    "MonitorRecord",
    "NetworkReading",
    "NetworkStudy",
    "Policy",
    "Reference",
    "RunningBaseline",
    "ValueCritic",
    "batched_gradient",
    "collect",
    "episode_gradients",
    "exact_lqr_gradient",
    "exact_lqr_objective",
    "exact_network_moments",
    "fit_critic",
    "logit_jacobian",
    "logit_table",
    "loop_gradients",
    "make_network",
    "make_policy",
    "network_variance_study",
    "parameter_layout",
    "per_episode_gradients",
]
