"""Gymnasium environments named in one string: ``ID,key=value,...``.

``CartPole-v1,gamma=0.99,horizon=200,key=value``: the id first, then options. ``gamma`` (the
discount of the objective J = E[sum_t gamma^t r_t], default 1, as with ``--mdp gym:``) and
``horizon`` (the time limit, default the environment's own ``max_episode_steps``) are pgvar's;
every other option goes to ``gymnasium.make``.
Values are read as int, float, ``true``/``false``, else kept as strings.

Parsing needs no Gymnasium; :func:`make_env` and :func:`make_vector_env` import it when called, so
the core install (without the extra ``pgvar[gym]``) can still parse and report.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from typing import Any

from pgvar.errors import SpecError
from pgvar.validation import check_int

DEFAULT_GAMMA = 1.0
INSTALL_HINT = "pip install 'pgvar[gym]'"
AUTORESET_MODES = ("next-step", "same-step", "disabled")
_AUTORESET_VALUES = {"next-step": "NextStep", "same-step": "SameStep", "disabled": "Disabled"}


@dataclass(frozen=True)
class EnvSpec:
    """A Gymnasium environment and pgvar's settings for it.

    Attributes:
      id: the registered id (``CartPole-v1``).
      kwargs: options passed to ``gymnasium.make``.
      horizon: the time limit in steps, or None for the environment's own ``max_episode_steps``.
      gamma: the discount of the objective.
      text: the spelling it was parsed from (canonical when built in code).
    """

    id: str
    kwargs: dict = field(default_factory=dict, hash=False)
    horizon: int | None = None
    gamma: float = DEFAULT_GAMMA
    text: str = ""

    def __post_init__(self) -> None:
        if not self.text:
            items = [self.id, f"gamma={self.gamma:g}"]
            items += [f"horizon={self.horizon}"] if self.horizon is not None else []
            items += [f"{key}={_spell(value)}" for key, value in self.kwargs.items()]
            object.__setattr__(self, "text", ",".join(items))


def _spell(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def parse_value(raw: str) -> int | float | bool | str:
    """An option's value: int, float, true/false, else the string itself."""
    lowered = raw.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    for kind in (int, float):
        try:
            return kind(raw)
        except ValueError:
            pass
    return raw


def parse_env(text: str) -> EnvSpec:
    """Parse ``ID[,gamma=G][,horizon=H][,key=value...]`` into an :class:`EnvSpec` (no Gymnasium needed)."""
    if not isinstance(text, str) or not text.strip():
        raise SpecError("env: give a Gymnasium id, e.g. CartPole-v1 or 'CartPole-v1,gamma=0.99,horizon=200'")
    env_id, *items = (part.strip() for part in text.strip().split(","))
    if not env_id or "=" in env_id:
        raise SpecError(f"env {text!r}: must start with a Gymnasium id, e.g. CartPole-v1,horizon=200")
    kwargs: dict[str, Any] = {}
    horizon, gamma = None, DEFAULT_GAMMA
    seen: set[str] = set()
    for item in filter(None, items):
        key, eq, raw = (part.strip() for part in item.partition("="))
        if not eq or not key or not raw:
            raise SpecError(f"env {text!r}: option {item!r} must look like key=value")
        if key in seen:
            raise SpecError(f"env {text!r}: option {key!r} given twice")
        seen.add(key)
        value = parse_value(raw)
        if key == "horizon":
            if type(value) is not int or value < 1:
                raise SpecError(f"env {text!r}: horizon must be a whole number >= 1, got {raw!r}")
            horizon = value
        elif key == "gamma":
            if type(value) not in (int, float) or not 0.0 <= value <= 1.0:
                raise SpecError(f"env {text!r}: gamma must be a number from 0 to 1, got {raw!r}")
            gamma = float(value)
        elif key == "max_episode_steps":
            raise SpecError(f"env {text!r}: give the time limit as horizon={raw}")
        else:
            kwargs[key] = value
    return EnvSpec(env_id, kwargs, horizon, gamma, text.strip())


def _as_spec(env: EnvSpec | str) -> EnvSpec:
    return env if isinstance(env, EnvSpec) else parse_env(env)


def _gymnasium():
    """The gymnasium module, or a one-line SpecError saying how to install it."""
    try:
        import gymnasium
    except ImportError:
        raise SpecError(f"env: gymnasium is not installed; {INSTALL_HINT}") from None
    return gymnasium


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return " ".join(text[0].split()) if text else type(err).__name__


def env_horizon(env: EnvSpec | str) -> int:
    """The time limit episodes run under: ``horizon=`` if given, else the registered
    ``max_episode_steps``; an environment with neither is refused (one line asking for horizon=)."""
    spec = _as_spec(env)
    if spec.horizon is not None:
        return spec.horizon
    gym = _gymnasium()
    try:
        registered = gym.spec(spec.id)
    except gym.error.Error as err:
        raise SpecError(f"env {spec.id!r}: {_first_line(err)}") from None
    if registered.max_episode_steps is None:
        raise SpecError(
            f"env {spec.id!r} has no time limit of its own; give one, e.g. '{spec.text},horizon=100'"
        )
    return int(registered.max_episode_steps)


def make_env(spec: EnvSpec | str, **extra: Any):
    """``gymnasium.make`` for ``spec``, with its time limit (:func:`env_horizon`) as ``max_episode_steps``.

    ``extra`` options (``render_mode=...``) are added to the spec's. Unknown ids, options the
    environment refuses, missing optional dependencies and a missing Gymnasium are one-line SpecErrors.
    """
    spec = _as_spec(spec)
    horizon = env_horizon(spec)
    gym = _gymnasium()
    try:
        with warnings.catch_warnings():  # a deprecation notice would add lines to a one-line error
            warnings.simplefilter("ignore")
            return gym.make(spec.id, max_episode_steps=horizon, **{**spec.kwargs, **extra})
    except gym.error.Error as err:  # unknown id or version, deprecated, missing dependency
        raise SpecError(f"env {spec.id!r}: {_first_line(err)}") from None
    except TypeError as err:  # an unknown keyword; Gymnasium appends where it was raised
        reason = _first_line(err).split(" was raised from the environment creator")[0]
        raise SpecError(f"env {spec.text!r}: options refused: {reason}") from None
    except MemoryError:
        raise
    except Exception as err:  # the constructor refused a value (FrozenLake's map_name: KeyError)
        reason = f"{type(err).__name__}: {_first_line(err)}"
        raise SpecError(f"env {spec.text!r}: options refused: {reason}") from None


def make_vector_env(spec: EnvSpec | str, envs: int, *, autoreset_mode: str | None = None):
    """A ``gymnasium.vector.SyncVectorEnv`` of ``envs`` copies of :func:`make_env`'s environment.

    ``autoreset_mode``: ``next-step`` (Gymnasium's default), ``same-step`` or ``disabled``.
    """
    spec = _as_spec(spec)
    envs = check_int(envs, "envs", low=1)
    make_env(spec).close()  # a bad spec fails here, with its one-line error, not inside the vector env
    gym = _gymnasium()
    key = "next-step" if autoreset_mode is None else str(autoreset_mode).lower()
    if key not in AUTORESET_MODES:
        choices = ", ".join(AUTORESET_MODES)
        raise SpecError(f"autoreset_mode: unknown {autoreset_mode!r}; use one of {choices}")
    mode = gym.vector.AutoresetMode(_AUTORESET_VALUES[key])
    return gym.vector.SyncVectorEnv([lambda: make_env(spec) for _ in range(envs)], autoreset_mode=mode)
