"""Neural policies for Gymnasium spaces: a categorical head for Discrete actions, a diagonal Gaussian
for Box actions, on a tabular, linear or tanh-MLP body.

Parameters are float64: the per-episode gradients are compared with pgvar's exact engine and with a
backward loop to 1e-6 relative, which float32's 6e-8 epsilon, summed over hundreds of steps, would
not leave room for.

Spec strings (:func:`make_policy`):

``tabular``    one logit per (observation, action), a one-hot linear softmax without bias: the same
               parameterisation as pgvar's logit table (weight (A, S) = theta transposed). Zero logits,
               the uniform policy, unless weights are loaded. Discrete observations and actions only.
``linear``     one linear layer (with bias) from the encoded observation to the head.
``mlp:64,64``  tanh hidden layers of the given widths, then a linear output.

Observations are taken raw: integers for a Discrete space (one-hot encoded inside), floats for a 1-D Box.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from pgvar import budget
from pgvar.errors import SpecError
from pgvar.gym.envspec import EnvSpec, make_env, parse_env
from pgvar.validation import check_seed

DTYPE = torch.float64
ARCHITECTURES = ("tabular", "linear", "mlp:W1,W2,...")
_HALF_LOG_TWO_PI_E = 0.5 * math.log(2.0 * math.pi * math.e)


def _space_kind(space, what: str) -> tuple[str, int]:
    """("discrete", n) or ("box", size) for a space a policy can use, else a one-line SpecError."""
    name = type(space).__name__
    if name == "Discrete":
        return "discrete", int(space.n)
    if name == "Box" and len(space.shape) == 1 and np.issubdtype(space.dtype, np.floating):
        return "box", int(space.shape[0])
    shape = getattr(space, "shape", None)
    raise SpecError(
        f"policy: unsupported {what} space {name}{'' if shape is None else tuple(shape)}; "
        "neural policies take Discrete or 1-D float Box spaces"
    )


def _parse_architecture(spec: str) -> tuple[str, tuple[int, ...]]:
    """("tabular" | "linear" | "mlp", hidden widths) from a spec string."""
    text = spec.strip() if isinstance(spec, str) else ""
    kind, _, rest = text.partition(":")
    if kind in ("tabular", "linear") and not rest:
        return kind, ()
    if kind == "mlp":
        try:
            widths = tuple(int(part) for part in rest.split(","))
        except ValueError:
            widths = ()
        if widths and all(0 < width <= 1_000_000 for width in widths):
            return kind, widths
        raise SpecError(f"policy {spec!r}: give the hidden widths, e.g. mlp:64,64")
    raise SpecError(f"policy {spec!r}: unknown; use one of {', '.join(ARCHITECTURES)}")


class ObservationEncoder(nn.Module):
    """Raw observations -> float64 network inputs: (...) ints of a Discrete space -> (..., n) one-hot
    (a comparison rather than ``F.one_hot``, so that it runs under ``vmap``); (..., n) Box floats as
    they are. No parameters."""

    def __init__(self, observation_space) -> None:
        super().__init__()
        self.kind, self.width = _space_kind(observation_space, "observation")
        self.start = int(getattr(observation_space, "start", 0)) if self.kind == "discrete" else 0

    def forward(self, observations: Tensor | np.ndarray) -> Tensor:
        observations = torch.as_tensor(observations)
        if self.kind == "discrete":
            index = torch.arange(self.width, device=observations.device)
            return ((observations.long() - self.start).unsqueeze(-1) == index).to(DTYPE)
        return observations.to(DTYPE)


class Policy(nn.Module):
    """pi_theta(a|o) for one observation and action space.

    Attributes:
      discrete: categorical head (True) or diagonal Gaussian with a state-independent log-std (False).
      spec: the architecture spec it was made from.
      observation_space, action_space: the Gymnasium spaces.
      obs_kind: ``discrete`` or ``box``; n_inputs: width of the encoded observation; n_outputs: A.
    """

    def __init__(self, spec: str, observation_space, action_space, body: nn.Module) -> None:
        super().__init__()
        self.spec = spec
        self.observation_space, self.action_space = observation_space, action_space
        self.encode = ObservationEncoder(observation_space)
        self.obs_kind, self.n_inputs = self.encode.kind, self.encode.width
        action_kind, self.n_outputs = _space_kind(action_space, "action")
        self.discrete = action_kind == "discrete"
        self.body = body
        if not self.discrete:
            self.log_std = nn.Parameter(torch.zeros(self.n_outputs, dtype=DTYPE))

    def forward(self, observations: Tensor | np.ndarray) -> Tensor:
        """(..., A) logits (categorical) or means (Gaussian) for raw observations."""
        return self.body(self.encode(observations))

    def log_prob(self, observations: Tensor | np.ndarray, actions: Tensor) -> Tensor:
        """(...) log pi(a|o); ``actions`` (...) action indices, or (..., A) floats for a Gaussian."""
        return self.head_log_prob(self(observations), actions)

    def entropy(self, observations: Tensor | np.ndarray) -> Tensor:
        """(...) H[pi(.|o)]: -sum_a pi log pi, or sum_i (log sigma_i + log(2 pi e) / 2) for a Gaussian."""
        return self.head_entropy(self(observations))

    def log_prob_and_entropy(self, observations: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """(log pi(a|o), H[pi(.|o)]) from one pass through the body, each (...)."""
        out = self(observations)
        return self.head_log_prob(out, actions), self.head_entropy(out)

    def head_log_prob(self, out: Tensor, actions: Tensor, log_std: Tensor | None = None) -> Tensor:
        """(...) log pi(a|o) from the body's (..., A) output ``out``; ``log_std`` replaces the
        Gaussian's (A,) log-std (any shape that broadcasts, e.g. one row per step)."""
        if self.discrete:
            one_hot = torch.arange(self.n_outputs, device=out.device) == actions.long().unsqueeze(-1)
            return (torch.log_softmax(out, dim=-1) * one_hot).sum(-1)
        log_std = self.log_std if log_std is None else log_std
        z = (actions - out) * torch.exp(-log_std)
        return (-0.5 * z * z - log_std - 0.5 * math.log(2.0 * math.pi)).sum(-1)

    def head_entropy(self, out: Tensor, log_std: Tensor | None = None) -> Tensor:
        """(...) H[pi(.|o)] from the body's (..., A) output; ``log_std`` as in :meth:`head_log_prob`."""
        if self.discrete:
            log_probs = torch.log_softmax(out, dim=-1)
            return -(torch.exp(log_probs) * log_probs).sum(-1)
        log_std = self.log_std if log_std is None else log_std
        return (log_std + _HALF_LOG_TWO_PI_E).sum(-1).expand(out.shape[:-1])

    def activations_per_step(self) -> int:
        """Floats one step keeps for the backward pass (inputs, every layer's output before and after
        its nonlinearity, the head's log-probabilities): what memory estimates count per step."""
        widths = [m.out_features for m in self.body.modules() if isinstance(m, nn.Linear)]
        return self.n_inputs + 2 * sum(widths) + 2 * self.n_outputs


def _body(kind: str, widths: tuple[int, ...], n_in: int, n_out: int) -> nn.Module:
    """The network from encoded observations to the head's A outputs."""
    if kind == "tabular":
        layer = nn.Linear(n_in, n_out, bias=False, dtype=DTYPE)
        nn.init.zeros_(layer.weight)  # zero logits: the uniform policy, as pgvar's uniform theta
        return layer
    if kind == "linear":
        return nn.Linear(n_in, n_out, dtype=DTYPE)
    layers: list[nn.Module] = []
    for width in widths:
        layers += [nn.Linear(n_in, width, dtype=DTYPE), nn.Tanh()]
        n_in = width
    return nn.Sequential(*layers, nn.Linear(n_in, n_out, dtype=DTYPE))


def _load_weights(policy: Policy, weights: str | Path) -> None:
    """Load a state_dict saved with ``torch.save``; every problem is one line naming the key or shape."""
    try:
        state = torch.load(Path(weights), map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for unreadable files (pickle, zip, OS errors)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise SpecError(f"weights {str(weights)!r}: cannot read: {first}") from None
    if not isinstance(state, dict) or not all(isinstance(v, Tensor) for v in state.values()):
        raise SpecError(f"weights {str(weights)!r}: not a state_dict of tensors (save policy.state_dict())")
    own = policy.state_dict()
    missing = [key for key in own if key not in state]
    extra = [key for key in state if key not in own]
    if missing or extra:
        raise SpecError(
            f"weights {str(weights)!r}: keys do not match the policy {policy.spec!r}: "
            f"missing {missing or 'none'}, unexpected {extra or 'none'}"
        )
    for key, tensor in own.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise SpecError(
                f"weights {str(weights)!r}: {key} has shape {tuple(state[key].shape)}, "
                f"the policy {policy.spec!r} needs {tuple(tensor.shape)}"
            )
        if not torch.isfinite(state[key]).all():
            raise SpecError(f"weights {str(weights)!r}: {key} has non-finite entries")
    policy.load_state_dict({key: value.to(DTYPE) for key, value in state.items()})


def make_policy(
    spec: str,
    observation_space,
    action_space,
    *,
    seed: int = 0,
    weights: str | Path | None = None,
) -> Policy:
    """A :class:`Policy` from a spec (``tabular``, ``linear``, ``mlp:64,64``) for Gymnasium spaces.

    Args:
      spec: the architecture (see the module doc).
      observation_space, action_space: Discrete or 1-D float Box spaces.
      seed: seeds the initial weights (PyTorch's default initialisation; the global RNG is untouched).
      weights: a state_dict saved with ``torch.save(policy.state_dict(), path)``, loaded over them.
    """
    kind, widths = _parse_architecture(spec)
    obs_kind, n_in = _space_kind(observation_space, "observation")
    action_kind, n_out = _space_kind(action_space, "action")
    if kind == "tabular" and (obs_kind, action_kind) != ("discrete", "discrete"):
        raise SpecError(
            f"policy 'tabular': needs Discrete observations and actions (a logit table), got "
            f"{type(observation_space).__name__} observations and {type(action_space).__name__} "
            "actions; use linear or mlp:64,64"
        )
    sizes = [n_in, *widths, n_out]
    n_parameters = sum((fan_in + (kind != "tabular")) * fan_out for fan_in, fan_out in pairwise(sizes))
    budget.check(  # the weights, their gradient and Adam's two moments, before any is allocated
        f"policy {spec.strip()!r} ({n_parameters} parameters)",
        memory=4 * 8.0 * n_parameters,
        hint="narrower hidden layers",
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        policy = Policy(spec.strip(), observation_space, action_space, _body(kind, widths, n_in, n_out))
    if weights is not None:
        _load_weights(policy, weights)
    return policy


def make_network(
    env: str | EnvSpec,
    policy: str = "mlp:64,64",
    policy_seed: int = 0,
    weights: str | Path | None = None,
    *,
    seed_option: str = "policy_seed",
) -> tuple[EnvSpec, Policy]:
    """The environment spec and a policy for its spaces: ``env`` as ``ID[,gamma=G][,horizon=H][,k=v]``,
    ``policy`` ``tabular``, ``linear`` or ``mlp:W,W``, initial weights from ``policy_seed`` (checked
    under the name ``seed_option``) or loaded from ``weights``. Every bad input is a one-line SpecError."""
    spec = env if isinstance(env, EnvSpec) else parse_env(env)
    seed = check_seed(policy_seed, seed_option)
    probe = make_env(spec)
    try:
        network = make_policy(policy, probe.observation_space, probe.action_space, seed=seed, weights=weights)
    finally:
        probe.close()
    return spec, network


@contextlib.contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op threads in torch, then restore the previous number."""
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
