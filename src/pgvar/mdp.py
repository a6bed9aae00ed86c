"""Move 1 of the lesson: the environment whose trajectories we average over.

A :class:`TabularMDP` holds the "physics" of the lesson: the start distribution rho0, the
transitions P(s'|s, a) (optionally per step t), the mean rewards and the reward noise, the
discount gamma and the horizon. Policies see observations, not states: ``observation_s`` maps each
state to the observation the policy acts on, so several states can look alike (Sutton & Barto's
short corridor).

Episodes end when the horizon H is reached or an absorbing terminal state is entered. With
``horizon=None`` episodes are unbounded and must end in a terminal state with probability one.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pgvar.errors import MDPError

NOISE_KINDS = ("none", "uniform", "gaussian")
_ATOL = 1e-9
#: Largest |mean reward| and reward-noise scale an MDP may have (files and built-ins alike). Variances
#: square the returns and the confidence intervals of Monte-Carlo readings square them again, so the
#: engines raise rewards to the fourth power: with |r| <= 1e50 that stays below 1e200 (float64 ends at
#: 1.8e308), leaving a factor of 1e100 for episode lengths, sums over paths and parameters. At 1e75
#: the readings of the short corridor already overflow; any real reward scale is far below the limit.
REWARD_LIMIT = 1e50


@dataclass(frozen=True, eq=False)
class TabularMDP:
    """A finite MDP with episodic structure.

    Attributes:
      initial_s: (S,) start distribution rho0.
      transitions: (S, A, S) or (H, S, A, S) probabilities P(s'|s, a), per step when 4-D.
      rewards: (S, A) or (S, A, S) mean reward r(s, a) or r(s, a, s').
      reward_noise: "none", "uniform" (width ``noise_scale``, centred) or "gaussian" (std).
      noise_scale: scalar or (S, A) width/std of the zero-mean reward noise.
      gamma: discount in [0, 1].
      horizon: number of steps H, or None for episodes that end only in terminal states.
      terminal_s: (S,) bool, absorbing states where the episode stops.
      observation_s: (S,) int, the observation the policy sees in each state.
      per_step_logits: default policy parameterisation: logits per (step, observation) if True,
        per observation if False.
    """

    initial_s: np.ndarray
    transitions: np.ndarray
    rewards: np.ndarray
    gamma: float = 1.0
    horizon: int | None = None
    terminal_s: np.ndarray | None = None
    observation_s: np.ndarray | None = None
    reward_noise: str = "none"
    noise_scale: float | np.ndarray = 0.0
    per_step_logits: bool = False
    name: str = "mdp"
    description: str = ""
    state_names: tuple[str, ...] | None = None
    action_names: tuple[str, ...] | None = None
    _cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "initial_s", _float_array(self.initial_s, "initial"))
        set_(self, "transitions", _float_array(self.transitions, "transitions"))
        set_(self, "rewards", _float_array(self.rewards, "rewards"))
        n_states = self.initial_s.shape[0] if self.initial_s.ndim == 1 else -1
        if self.terminal_s is None:
            set_(self, "terminal_s", np.zeros(max(n_states, 0), dtype=bool))
        else:
            set_(self, "terminal_s", np.asarray(self.terminal_s, dtype=bool))
        if self.observation_s is None:
            set_(self, "observation_s", np.arange(max(n_states, 0)))
        else:
            obs = np.asarray(self.observation_s)
            if obs.dtype.kind not in "iu":
                raise MDPError("observations: must be integers, one per state")
            set_(self, "observation_s", obs.astype(np.int64))
        set_(self, "noise_scale", _float_array(self.noise_scale, "noise"))
        validate(self)

    # -- sizes -------------------------------------------------------------------------------
    @property
    def n_states(self) -> int:
        return self.initial_s.shape[0]

    @property
    def n_actions(self) -> int:
        return self.transitions.shape[-2]

    @property
    def n_observations(self) -> int:
        return int(self.observation_s.max()) + 1

    @property
    def time_dependent(self) -> bool:
        return self.transitions.ndim == 4

    # -- derived arrays ----------------------------------------------------------------------
    def transitions_at(self, t: int) -> np.ndarray:
        """(S, A, S) transition probabilities used at step t."""
        return self.transitions[t] if self.time_dependent else self.transitions

    @property
    def reward_sas(self) -> np.ndarray:
        """(S, A, S) mean reward r(s, a, s')."""
        if self.rewards.ndim == 3:
            return self.rewards
        return np.broadcast_to(self.rewards[:, :, None], (self.n_states, self.n_actions, self.n_states))

    @property
    def noise_variance_sa(self) -> np.ndarray:
        """(S, A) variance of the zero-mean reward noise."""
        scale = np.broadcast_to(self.noise_scale, (self.n_states, self.n_actions))
        if self.reward_noise == "uniform":
            return scale**2 / 12.0
        if self.reward_noise == "gaussian":
            return scale**2
        return np.zeros((self.n_states, self.n_actions))

    @property
    def noise_scale_sa(self) -> np.ndarray:
        """(S, A) width (uniform) or std (gaussian) of the reward noise."""
        return np.broadcast_to(self.noise_scale, (self.n_states, self.n_actions)).astype(float)

    def theta_shape(self, per_step: bool | None = None) -> tuple[int, ...]:
        """Shape of the logits: (H, n_obs, A) per step, else (n_obs, A)."""
        per_step = self.per_step_logits if per_step is None else per_step
        if per_step:
            if self.horizon is None:
                raise MDPError("per_step_logits: needs a finite horizon")
            return (self.horizon, self.n_observations, self.n_actions)
        return (self.n_observations, self.n_actions)


def _float_array(value, field_name: str) -> np.ndarray:
    try:
        array = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        raise MDPError(f"{field_name}: must be numbers (nested lists of numbers)") from None
    return array


def _check_finite(array: np.ndarray, field_name: str, limit: float | None = None) -> None:
    """Every entry a finite number (and within +-``limit`` where one is given)."""
    bad = ~np.isfinite(array)
    if limit is not None:
        bad |= np.abs(np.where(bad, 0.0, array)) > limit
    if bad.any():
        where = tuple(int(i) for i in np.argwhere(bad)[0])
        entry = f"entry {list(where)} is" if where else "is"
        value = array[where]
        rule = "must be a finite number"
        if limit is not None:
            rule += f" within ±{limit:g} (rescale the rewards; larger ones overflow the variances)"
        raise MDPError(f"{field_name}: {entry} {value:g}, {rule}")


def _check_distribution(p: np.ndarray, field_name: str, index_names: str) -> None:
    negative = p < -_ATOL
    if negative.any():
        where = tuple(int(i) for i in np.argwhere(negative)[0])
        raise MDPError(
            f"{field_name}: probability at {index_names} {list(where)} is {p[where]:g}, must be >= 0"
        )
    sums = p.sum(axis=-1)
    off = np.abs(sums - 1.0) > 1e-6
    if off.any():
        where = tuple(int(i) for i in np.argwhere(off)[0])
        label = f" at {index_names} {list(where)}" if where else ""
        raise MDPError(f"{field_name}: probabilities{label} sum to {sums[where]:.6g}, must sum to 1")


def validate(mdp: TabularMDP) -> None:
    """Raise :class:`MDPError` naming the first field that is wrong."""
    if mdp.initial_s.ndim != 1 or mdp.initial_s.shape[0] == 0:
        raise MDPError(
            f"initial: must be a non-empty list of S probabilities, got shape {mdp.initial_s.shape}"
        )
    n_states = mdp.initial_s.shape[0]
    t = mdp.transitions
    if t.ndim not in (3, 4) or t.shape[-1] != n_states or t.shape[-3] != n_states:
        raise MDPError(
            f"transitions: shape must be (S, A, S) or (H, S, A, S) with S={n_states}, got {t.shape}"
        )
    n_actions = t.shape[-2]
    if n_actions < 1:
        raise MDPError("transitions: needs at least one action")
    for array, name in ((mdp.initial_s, "initial"), (t, "transitions")):
        _check_finite(array, name)
    _check_finite(mdp.rewards, "rewards", REWARD_LIMIT)
    _check_distribution(mdp.initial_s, "initial", "state")
    _check_distribution(t, "transitions", "(t, s, a)" if t.ndim == 4 else "(s, a)")
    if mdp.rewards.shape not in ((n_states, n_actions), (n_states, n_actions, n_states)):
        raise MDPError(
            f"rewards: shape must be (S, A)=({n_states}, {n_actions}) or (S, A, S), got {mdp.rewards.shape}"
        )
    if not isinstance(mdp.gamma, (int, float)) or not np.isfinite(mdp.gamma) or not 0.0 <= mdp.gamma <= 1.0:
        raise MDPError(f"gamma: must be a number in [0, 1], got {mdp.gamma!r}")
    if mdp.horizon is not None:
        if isinstance(mdp.horizon, bool) or not isinstance(mdp.horizon, (int, np.integer)) or mdp.horizon < 1:
            raise MDPError(f"horizon: must be a positive integer or null, got {mdp.horizon!r}")
        if t.ndim == 4 and t.shape[0] < mdp.horizon:
            raise MDPError(
                f"transitions: per-step transitions cover {t.shape[0]} steps, horizon is {mdp.horizon}"
            )
    elif t.ndim == 4:
        raise MDPError("transitions: per-step transitions need a finite horizon")
    if mdp.terminal_s.shape != (n_states,):
        raise MDPError(f"terminal: must list S={n_states} booleans, got shape {mdp.terminal_s.shape}")
    if mdp.terminal_s.all():
        raise MDPError("terminal: at least one state must be non-terminal")
    if mdp.observation_s.shape != (n_states,):
        raise MDPError(
            f"observations: must give one observation per state (S={n_states}), "
            f"got shape {mdp.observation_s.shape}"
        )
    hidden = (mdp.observation_s < 0) & ~mdp.terminal_s
    if hidden.any():
        raise MDPError(
            f"observations: state {int(np.argmax(hidden))} has observation < 0; only terminal states may (-1)"
        )
    if mdp.reward_noise not in NOISE_KINDS:
        raise MDPError(
            f"noise.kind: unknown noise kind {mdp.reward_noise!r}; use one of {', '.join(NOISE_KINDS)}"
        )
    scale = mdp.noise_scale
    if scale.ndim != 0 and scale.shape != (n_states, n_actions):
        raise MDPError(f"noise.scale: must be a number or an (S, A) table, got shape {scale.shape}")
    _check_finite(scale, "noise.scale", REWARD_LIMIT)
    if (scale < 0).any():
        raise MDPError(f"noise.scale: width/std must be >= 0, got {scale.min():g}")
    if mdp.per_step_logits and mdp.horizon is None:
        raise MDPError("per_step_logits: needs a finite horizon")
    if mdp.horizon is None:
        _check_episodes_end(mdp)


def _check_episodes_end(mdp: TabularMDP) -> None:
    """Unbounded episodes need every non-terminal state to be able to reach a terminal one."""
    reach = mdp.terminal_s.copy()
    possible = mdp.transitions.max(axis=1) > 0  # (S, S): some action moves s -> s'
    for _ in range(mdp.n_states):
        reach = reach | (possible & reach[None, :]).any(axis=1)
    if not reach.all():
        stuck = int(np.argmin(reach))
        raise MDPError(
            f"terminal: state {stuck} can never reach a terminal state, "
            "so episodes without a horizon never end"
        )
