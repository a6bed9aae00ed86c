"""Built-in MDPs, each with its source. ``make("name:key=value,...")`` builds one by name."""

from __future__ import annotations

import inspect
from collections.abc import Callable

import numpy as np

from pgvar import budget
from pgvar.errors import SpecError
from pgvar.mdp import REWARD_LIMIT, TabularMDP
from pgvar.validation import check_int, check_number, check_seed


def lesson(noise_width: float = 0.6) -> TabularMDP:
    """The lesson's gradient-variance explorer (lesson 07): 3 steps, 3 actions per step.

    The best actions are [0, 1, 2]; the best action earns 1, the others 0, plus uniform noise of
    width 0.6 (``0.6 * (U - 0.5)`` in the lesson's code); gamma = 1. States 0, 1, 2 are the steps, so
    logits per observation are the lesson's per-step logits; state 3 is terminal.
    """
    n_steps, n_actions, best = 3, 3, (0, 1, 2)
    transitions = np.zeros((n_steps + 1, n_actions, n_steps + 1))
    rewards = np.zeros((n_steps + 1, n_actions))
    for t in range(n_steps):
        transitions[t, :, t + 1] = 1.0
        rewards[t, best[t]] = 1.0
    transitions[n_steps, :, n_steps] = 1.0
    return TabularMDP(
        initial_s=np.eye(n_steps + 1)[0],
        transitions=transitions,
        rewards=rewards,
        gamma=1.0,
        horizon=n_steps,
        terminal_s=np.arange(n_steps + 1) == n_steps,
        observation_s=np.array([0, 1, 2, -1]),
        reward_noise="uniform",
        noise_scale=noise_width,
        name="lesson",
        description="Lesson 07's explorer MDP: 3 steps x 3 actions, best actions [0, 1, 2], "
        "reward 1 for the best action + uniform noise of width 0.6, gamma 1.",
        state_names=("step 0", "step 1", "step 2", "end"),
    )


def short_corridor() -> TabularMDP:
    """Sutton & Barto (2018), Example 13.1: the short corridor with switched actions.

    Three non-terminal states that all look the same to the policy; actions are left (0) and
    right (1), reversed in the second state; reward -1 per step; gamma = 1; unbounded episodes
    that end on reaching the goal (state 3). The best stochastic policy picks right with
    probability about 0.59 and has v*(S0) of about -11.6.
    """
    left, right = 0, 1
    moves = {0: {left: 0, right: 1}, 1: {left: 2, right: 0}, 2: {left: 1, right: 3}}
    transitions = np.zeros((4, 2, 4))
    for state, by_action in moves.items():
        for action, target in by_action.items():
            transitions[state, action, target] = 1.0
    transitions[3, :, 3] = 1.0
    return TabularMDP(
        initial_s=np.eye(4)[0],
        transitions=transitions,
        rewards=np.full((4, 2), -1.0),
        gamma=1.0,
        horizon=None,
        terminal_s=np.array([False, False, False, True]),
        observation_s=np.array([0, 0, 0, -1]),
        name="short-corridor",
        description="Sutton & Barto Example 13.1: short corridor with switched actions, "
        "reward -1 per step, every state looks alike.",
        state_names=("S", "switched", "right of switched", "G"),
        action_names=("left", "right"),
    )


def bandit(k: int = 10, seed: int = 0, mean: float = 4.0) -> TabularMDP:
    """A k-armed Gaussian bandit as in Sutton & Barto (2018), Section 2.8 / Figure 2.5.

    Arm means q*(a) ~ Normal(``mean``, 1) from ``seed``, rewards q*(a) + Normal(0, 1); one step.
    The offset ``mean`` = 4 is the figure's: without a baseline the gradient bandit then learns slowly.
    """
    k = check_int(k, "bandit: k", low=1)
    seed = check_seed(seed, "bandit: seed")
    mean = check_number(mean, "bandit: mean", low=-REWARD_LIMIT, high=REWARD_LIMIT)
    budget.check_table(f"bandit: k={k}", 4.0 * k)
    means = np.random.default_rng(seed).normal(mean, 1.0, size=k)
    transitions = np.zeros((2, k, 2))
    transitions[:, :, 1] = 1.0
    rewards = np.zeros((2, k))
    rewards[0] = means
    return TabularMDP(
        initial_s=np.array([1.0, 0.0]),
        transitions=transitions,
        rewards=rewards,
        gamma=1.0,
        horizon=1,
        terminal_s=np.array([False, True]),
        observation_s=np.array([0, -1]),
        reward_noise="gaussian",
        noise_scale=1.0,
        name=f"bandit:k={k},seed={seed}",
        description=f"{k}-armed Gaussian bandit, arm means ~ N({mean}, 1), unit reward noise.",
    )


def random_mdp(
    seed: int = 0, states: int = 5, actions: int = 3, horizon: int = 10, gamma: float = 0.95
) -> TabularMDP:
    """A random finite-horizon MDP: Dirichlet(1) transitions, Normal(0, 1) mean rewards per (s, a),
    Gaussian reward noise of std 0.5, uniform start; logits per observation (= state)."""
    seed = check_seed(seed, "random: seed")
    states = check_int(states, "random: states", low=1)
    actions = check_int(actions, "random: actions", low=1)
    horizon = check_int(horizon, "random: horizon", low=1)
    gamma = check_number(gamma, "random: gamma", low=0.0, high=1.0)
    budget.check_table(f"random: states={states}, actions={actions}", float(states) * actions * states)
    rng = np.random.default_rng(seed)
    return TabularMDP(
        initial_s=np.full(states, 1.0 / states),
        transitions=rng.dirichlet(np.ones(states), size=(states, actions)),
        rewards=rng.normal(size=(states, actions)),
        gamma=gamma,
        horizon=horizon,
        reward_noise="gaussian",
        noise_scale=0.5,
        name=f"random:seed={seed},states={states},actions={actions},horizon={horizon},gamma={gamma}",
        description=f"Random MDP (seed {seed}): {states} states, {actions} actions, horizon {horizon}.",
    )


def repayment(bonus: float = 0.5) -> TabularMDP:
    """A counterexample to "reward-to-go only lowers the variance" (built for pgvar).

    Step 0: ``borrow`` pays +1 now and leads to the ``in debt`` state, ``abstain`` pays 0. Step 1:
    in debt, every action costs the 1 back; either way action 1 earns ``bonus``. The full return
    never contains the loan (it cancels), but the reward-to-go at step 1 sees only the repayment, so
    dropping the "irrelevant" past adds variance. A state-value baseline takes it out again.
    """
    # states: 0 start, 1 in debt, 2 no debt, 3 end
    transitions = np.zeros((4, 2, 4))
    transitions[0, 0, 1] = transitions[0, 1, 2] = 1.0
    transitions[1:, :, 3] = 1.0
    rewards = np.array([[1.0, 0.0], [-1.0, -1.0 + bonus], [0.0, bonus], [0.0, 0.0]])
    return TabularMDP(
        initial_s=np.eye(4)[0],
        transitions=transitions,
        rewards=rewards,
        gamma=1.0,
        horizon=2,
        terminal_s=np.array([False, False, False, True]),
        observation_s=np.array([0, 1, 2, -1]),
        name="repayment",
        description="Counterexample: borrow +1 at step 0, repay -1 at step 1; action 1 at step 1 earns "
        f"{bonus:g}. Reward-to-go raises the variance here; a value baseline lowers it.",
        state_names=("start", "in debt", "no debt", "end"),
        action_names=("borrow / act 0", "abstain / act 1"),
    )


def deceptive(depth: int = 7, actions: int = 2, safe: float = 1.0, treasure: float = 3.0) -> TabularMDP:
    """A deceptive early optimum, for the entropy bonus (built for pgvar; lesson 07, "The entropy bonus").

    At the start, action 0 ("onward") walks into a corridor of ``depth`` (7) states; any other action
    stops at once with ``safe`` (+1). In the corridor only "onward" goes on, any other action stops
    with 0, and the end of the corridor pays ``treasure`` (3). Under the uniform policy the corridor is
    worth 3 / 2^7 = 0.023, so every gradient first says "stop": plain policy gradient commits to the
    safe +1 before the corridor has been learnt and then hardly ever walks it again (sampled gradients
    stop seeing the corridor; the exact gradient sits on a plateau: softmax policy gradient can take
    exponentially long to leave one, Li et al. 2021). An entropy bonus beta * H (Williams & Peng 1991;
    Mnih et al. 2016; faster convergence: Mei et al. 2020) keeps some probability on walking in and pays
    beta * H in every corridor state, so the corridor keeps being sampled and learnt, and the policy
    then commits to the treasure; too large a beta keeps every state undecided and the policy never
    commits (J below even the safe +1).

    Exact values (defaults, gamma 1; H summed over the steps of an episode): the uniform policy has
    J = 0.512; the trap (stop at once) has J = J + beta * H = 1; the best policy has J = 3. The maximum
    of the regularised objective J + beta * H is 3.0005 at beta = 0.3 (its policy has J = 2.997) and
    7.22 at beta = 3, where its policy has J = 0.86, below the trap's: it walks on with probability
    0.73 to 0.90 in each state and reaches the treasure a quarter of the time.
    ``pgvar train --mdp deceptive`` shows the learning curves (docs/training.md).
    """
    depth = check_int(depth, "deceptive: depth", low=1)
    actions = check_int(actions, "deceptive: actions", low=2)
    budget.check_table(f"deceptive: depth={depth}, actions={actions}", (depth + 2.0) ** 2 * actions)
    n_states = depth + 2  # 0 start, 1 .. depth corridor, depth + 1 end
    end = depth + 1
    transitions = np.zeros((n_states, actions, n_states))
    rewards = np.zeros((n_states, actions))
    transitions[:, :, end] = 1.0  # every action but "onward" stops
    rewards[0, 1:] = safe
    for state in range(depth + 1):
        transitions[state, 0, :] = 0.0
        transitions[state, 0, state + 1] = 1.0  # "onward" (the last one reaches the end)
    rewards[depth, 0] = treasure
    return TabularMDP(
        initial_s=np.eye(n_states)[0],
        transitions=transitions,
        rewards=rewards,
        gamma=1.0,
        horizon=depth + 1,
        terminal_s=np.arange(n_states) == end,
        observation_s=np.r_[np.arange(depth + 1), -1],
        name="deceptive"
        if (depth, actions, safe, treasure) == (7, 2, 1.0, 3.0)
        else f"deceptive:depth={depth},actions={actions},safe={safe:g},treasure={treasure:g}",
        description=f"Deceptive early optimum: stop at once for {safe:g}, or walk a corridor of {depth} "
        f"states (one right action of {actions} in each) for {treasure:g}; entropy bonus example.",
        state_names=("start", *(f"corridor {i}" for i in range(1, depth + 1)), "end"),
        action_names=("onward", "stop")
        if actions == 2
        else ("onward", *(f"stop {i}" for i in range(1, actions))),
    )


PROMPT_SUCCESS = (0.9, 0.5, 0.2, 0.05)  # P(correct) of an immediate answer to each prompt, easy to hard
PROMPT_NAMES = ("easy", "medium", "hard", "very hard")


def prompts(depth: int = 3, help_factor: float = 0.7, noise: float = 0.0) -> TabularMDP:
    """Language-model RL in miniature, for the group baselines (built for pgvar, after the outcome
    rewards of GRPO's training, Shao et al. 2024, and the difficulty bias of its std normalisation,
    Liu et al. 2025, Section 3).

    Four start states are four prompts, drawn uniformly: an immediate answer is right with
    probability 0.9, 0.5, 0.2 and 0.05 (easy to very hard). In each state the policy either answers
    (action 0) or thinks one more step (action 1); each step of thought multiplies the chance of a
    wrong answer by ``help_factor`` (0.7), and after ``depth`` (3) steps of thought the episode runs
    out of length and ends with no answer. Episodes therefore last 1 to ``depth`` steps. The reward
    comes only at the end: 1 for a right answer, 0 otherwise, plus Gaussian noise of std ``noise``
    on every answer (a noisy score; 0 by default, so a group's rewards are 0 or 1 and K-tuples of
    episodes can be enumerated). gamma = 1. Logits are per (prompt, step of thought).
    """
    depth = check_int(depth, "prompts: depth", low=1)
    help_factor = check_number(help_factor, "prompts: help_factor", low=0.0, high=1.0)
    noise = check_number(noise, "prompts: noise", low=0.0, high=REWARD_LIMIT)
    budget.check_table(f"prompts: depth={depth}", (4.0 * depth + 3) ** 2 * 2)
    n_prompts = len(PROMPT_SUCCESS)
    n_states = n_prompts * depth + 3  # (prompt, step of thought), then right, wrong, out of length
    right, wrong, cut = n_states - 3, n_states - 2, n_states - 1
    answer, think = 0, 1
    transitions = np.zeros((n_states, 2, n_states))
    rewards = np.zeros((n_states, 2, n_states))
    for prompt, success in enumerate(PROMPT_SUCCESS):
        for step in range(depth):
            state = prompt * depth + step
            p_right = 1.0 - (1.0 - success) * help_factor**step
            transitions[state, answer, right] = p_right
            transitions[state, answer, wrong] = 1.0 - p_right
            rewards[state, answer, right] = 1.0
            transitions[state, think, state + 1 if step + 1 < depth else cut] = 1.0
    for end in (right, wrong, cut):
        transitions[end, :, end] = 1.0
    scale = np.zeros((n_states, 2))
    scale[: n_prompts * depth, answer] = noise
    return TabularMDP(
        initial_s=np.r_[np.eye(depth)[0].tolist() * n_prompts, 0, 0, 0] / n_prompts,
        transitions=transitions,
        rewards=rewards,
        gamma=1.0,
        horizon=depth,
        terminal_s=np.arange(n_states) >= right,
        observation_s=np.r_[np.arange(n_prompts * depth), -1, -1, -1],
        reward_noise="gaussian" if noise > 0 else "none",
        noise_scale=scale if noise > 0 else 0.0,
        name="prompts"
        if (depth, help_factor, noise) == (3, 0.7, 0.0)
        else f"prompts:depth={depth},help_factor={help_factor:g},noise={noise:g}",
        description="LLM RL in miniature: four prompts from easy to very hard, answer now or think "
        f"(up to {depth} steps), reward 1 for a right answer only at the end"
        + (f", score noise std {noise:g}" if noise > 0 else "")
        + "; for the group baselines (RLOO, GRPO).",
        state_names=(
            *(f"{name} (thought {step})" for name in PROMPT_NAMES for step in range(depth)),
            "right",
            "wrong",
            "out of length",
        ),
        action_names=("answer", "think"),
    )


BUILTINS: dict[str, Callable[..., TabularMDP]] = {
    "lesson": lesson,
    "short-corridor": short_corridor,
    "bandit": bandit,
    "random": random_mdp,
    "repayment": repayment,
    "deceptive": deceptive,
    "prompts": prompts,
}


def make(name: str) -> TabularMDP:
    """Build a built-in MDP from ``NAME`` or ``NAME:key=value,key=value``, or a Gymnasium environment's
    model from ``gym:ID[,key=value,...]`` (``pgvar.gym.tabular.from_gym``)."""
    base, _, options = name.partition(":")
    if base.strip() == "gym":
        return _from_gym(options)
    if base not in BUILTINS:
        raise SpecError(
            f"mdp: unknown built-in {base!r}; choose one of {', '.join(BUILTINS)}, gym:ID or give a file"
        )
    builder = BUILTINS[base]
    parameters = inspect.signature(builder).parameters
    kwargs: dict[str, float | int] = {}
    for item in filter(None, options.split(",")):
        key, eq, raw = (part.strip() for part in item.partition("="))
        if not eq:
            raise SpecError(f"mdp: option {item!r} in {name!r} must look like key=value")
        if key not in parameters:
            raise SpecError(f"mdp: {base!r} takes options {', '.join(parameters)}; got {key!r}")
        try:
            number = float(raw)
        except ValueError:
            raise SpecError(f"mdp: option {key}={raw!r} in {name!r} must be a number") from None
        if isinstance(parameters[key].default, int):
            if not (np.isfinite(number) and number.is_integer()):
                raise SpecError(f"mdp: option {key}={raw} in {name!r} must be an integer")
            kwargs[key] = int(number)
        elif not np.isfinite(number):
            raise SpecError(f"mdp: option {key}={raw} in {name!r} must be a finite number")
        else:
            kwargs[key] = number
    return builder(**kwargs)


def _from_gym(text: str) -> TabularMDP:
    # imported here: the core never loads Gymnasium, which is an optional extra
    try:
        from pgvar.gym.tabular import from_gym
    except ModuleNotFoundError as err:
        if (err.name or "").partition(".")[0] != "gymnasium":
            raise
        raise SpecError(
            f"mdp: gym:{text} needs Gymnasium, which is not installed: pip install 'pgvar[gym]'"
        ) from None
    return from_gym(text)
