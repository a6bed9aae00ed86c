"""The group baselines of language-model RL (RLOO, GRPO, Dr. GRPO): the reference estimator, the
exact moments (pairs of episodes, K-tuples of paths) against closed forms, against each other and
against Monte Carlo through grouped batches, and the errors a user can meet.

Monte-Carlo bounds are derived, not guessed. For the mean m of M batch means with exact mean mu and
exact per-episode covariance trace v (so each batch mean has covariance trace v / N),
S = M N |m - mu|^2 / v is by the central limit theorem a weighted sum of chi-square(1) variables with
weights summing to 1, and P(S >= t) <= P(chi2_1 >= t) for t >= 1.54 (Szekely & Bakirov 2003):
S < 15.1 fails with probability at most 1e-4. The KPI (trace of the sample covariance of the batch
means) is a mean of M squared deviations; its standard error is estimated from their spread, and
|z| < 4 fails with probability about 6e-5.
"""

from __future__ import annotations

import numpy as np
import pytest
from helpers import run, strict_json
from hypothesis import given, settings
from hypothesis import strategies as st

import pgvar
from pgvar.errors import SpecError
from pgvar.estimators import GROUP_STD_EPSILON, episode_gradients, group_weights, parse_estimator
from pgvar.exact import exact_gradient, exact_moments
from pgvar.groups import GroupMomentsError, group_moments
from pgvar.mdp import TabularMDP
from pgvar.montecarlo.groups import GroupSampler, estimator_moments, group_moments_estimate

S_LIMIT = 15.1
Z_LIMIT = 4.0


def bandit(rewards: np.ndarray) -> TabularMDP:
    """One state, one step, deterministic reward per arm."""
    arms = rewards.size
    return TabularMDP(
        initial_s=np.array([1.0, 0.0]),
        transitions=np.tile(np.array([0.0, 1.0]), (2, arms, 1)),
        rewards=np.vstack([rewards, np.zeros(arms)]),
        horizon=1,
        terminal_s=np.array([False, True]),
        observation_s=np.array([0, -1]),
        name="deterministic bandit",
    )


def random_theta(mdp: TabularMDP, seed: int, scale: float = 0.7) -> np.ndarray:
    return scale * np.random.default_rng(seed).normal(size=pgvar.uniform_theta(mdp).shape)


# -- the spec grammar and the reference ----------------------------------------------------------


def test_group_specs_parse_with_their_group_size():
    spec = parse_estimator("rtg+group-std:per-length", group=8)
    assert (spec.weight, spec.baseline, spec.group, spec.per_length, spec.grouped) == (
        "rtg", "group-std", 8, True, True,
    )  # fmt: skip
    assert spec.canonical == "rtg+group-std:per-length"
    assert parse_estimator("rtg+value", group=8).group == 1  # K belongs to the group baselines only
    assert parse_estimator("rtg+loo:common:per-length", group=2).canonical == "rtg+loo:common:per-length"


@pytest.mark.parametrize(
    ("text", "group", "message"),
    [
        ("return+loo", 1, "needs groups of K >= 2"),
        ("return+group", 0, "group: must be a whole number from 1"),
        ("return+group-std", 2.5, "group: must be a whole number"),
        ("rtg+none:per-length", 4, "':per-length' goes with the group baselines"),
        ("gae0.9+loo", 4, "GAE takes its baseline as the value function"),
        ("rtg+loo:per-length:per-length", 4, "a suffix given twice"),
        ("return+loo", None, "are measured by pgvar exact, pgvar variance and pgvar train"),
    ],
)
def test_bad_group_specs_say_what_is_wrong(text, group, message):
    with pytest.raises(SpecError, match=message):
        parse_estimator(text, group=group)


def test_group_weights_are_the_papers_formulas():
    weights_tb = np.array([[1.0, 0.0, 3.0, 2.0, 5.0, 5.0], [0.5, 0.0, 0.0, 1.0, 2.0, 4.0]])
    k = 3
    groups = weights_tb.reshape(2, 2, k)
    loo = group_weights(parse_estimator("return+loo", group=k), weights_tb).reshape(2, 2, k)
    for i in range(k):
        others = np.delete(groups, i, axis=2).mean(axis=2)
        np.testing.assert_allclose(loo[:, :, i], groups[:, :, i] - others)
    mean = group_weights(parse_estimator("return+group", group=k), weights_tb).reshape(2, 2, k)
    np.testing.assert_allclose(mean, groups - groups.mean(axis=2, keepdims=True))
    std = group_weights(parse_estimator("return+group-std", group=k), weights_tb).reshape(2, 2, k)
    expected = (groups - groups.mean(axis=2, keepdims=True)) / (
        groups.std(axis=2, ddof=1, keepdims=True) + GROUP_STD_EPSILON
    )
    np.testing.assert_allclose(std, expected)
    np.testing.assert_allclose(loo, k / (k - 1) * mean)  # RLOO is the group mean rescaled
    with pytest.raises(SpecError, match="do not split into groups of 4"):
        group_weights(parse_estimator("return+loo", group=4), weights_tb)


def test_per_length_divides_each_episode_by_its_length():
    mdp = pgvar.make("prompts")
    theta = random_theta(mdp, 3)
    episodes = pgvar.Sampler(mdp, theta, [parse_estimator("vanilla")]).episodes(8, 1, seed=1)
    arrays = (episodes.states_tb, episodes.actions_tb, episodes.rewards_tb, episodes.alive_tb)
    plain, divided = (
        exact_resolved(mdp, parse_estimator(text, group=4)) for text in ("rtg+loo", "rtg+loo:per-length")
    )
    lengths = episodes.alive_tb.sum(axis=0)
    assert len(set(lengths)) > 1  # episodes of the prompts MDP vary in length
    np.testing.assert_allclose(
        episode_gradients(mdp, theta, divided, *arrays),
        episode_gradients(mdp, theta, plain, *arrays) / lengths[:, None],
    )


def exact_resolved(mdp, spec):
    from pgvar.exact import resolve, unroll

    return resolve(unroll(mdp, pgvar.uniform_theta(mdp)), spec)


# -- exact values against closed forms --------------------------------------------------------------


@settings(max_examples=30, deadline=None)
@given(
    k=st.integers(2, 12),
    arms=st.integers(2, 5),
    seed=st.integers(0, 10_000),
    weight=st.sampled_from(["return", "rtg"]),
)
def test_on_a_deterministic_bandit_group_shrinks_by_k_minus_1_over_k_and_loo_is_unbiased(
    k, arms, seed, weight
):
    rng = np.random.default_rng(seed)
    mdp = bandit(rng.uniform(-2, 2, size=arms))
    theta = rng.normal(size=pgvar.uniform_theta(mdp).shape)
    grad = exact_gradient(mdp, theta).ravel()
    loo = exact_moments(mdp, theta, parse_estimator(f"{weight}+loo", group=k))
    group = exact_moments(mdp, theta, parse_estimator(f"{weight}+group", group=k))
    scale = max(1.0, float(np.abs(grad).max()))
    np.testing.assert_allclose(loo.mean, grad, atol=1e-12 * scale)
    np.testing.assert_allclose(group.mean, (k - 1) / k * grad, atol=1e-12 * scale)
    # RLOO is the group-mean estimate times K / (K - 1), episode by episode
    np.testing.assert_allclose(loo.variance, (k / (k - 1)) ** 2 * group.variance, rtol=1e-9, atol=1e-15)


@pytest.mark.parametrize("name", ["lesson", "prompts", "prompts:noise=0.3"])
@pytest.mark.parametrize("k", [2, 3, 8])
def test_loo_is_unbiased_and_group_is_k_minus_1_over_k_on_any_mdp(name, k):
    mdp = pgvar.make(name)
    theta = random_theta(mdp, k)
    grad = exact_gradient(mdp, theta).ravel()
    for weight in ("return", "rtg"):
        loo = exact_moments(mdp, theta, parse_estimator(f"{weight}+loo", group=k))
        group = exact_moments(mdp, theta, parse_estimator(f"{weight}+group", group=k))
        assert loo.method == group.method == "pairs"
        np.testing.assert_allclose(loo.mean, grad, atol=1e-13)
        np.testing.assert_allclose(group.mean, (k - 1) / k * grad, atol=1e-13)
        assert pgvar.kpi.gradient_cosine(group.mean, grad) == pytest.approx(1.0, abs=1e-12)


def test_with_k_equal_2_and_rewards_0_or_1_std_normalisation_only_rescales_the_group_mean():
    """Two rewards in {0, 1} either agree (both estimates 0) or differ by 1, where the sample std is
    1/sqrt(2): group-std is group times sqrt(2) / (1 + sqrt(2) eps), episode by episode."""
    mdp = pgvar.make("prompts")
    theta = random_theta(mdp, 11)
    group = exact_moments(mdp, theta, parse_estimator("return+group", group=2))
    std = exact_moments(mdp, theta, parse_estimator("return+group-std", group=2))
    factor = np.sqrt(2) / (1 + np.sqrt(2) * GROUP_STD_EPSILON)
    np.testing.assert_allclose(std.mean, factor * group.mean, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(std.variance, factor**2 * group.variance, rtol=1e-12, atol=1e-16)


def test_std_normalisation_turns_the_gradient_on_the_prompts_mdp():
    mdp = pgvar.make("prompts")
    theta = pgvar.uniform_theta(mdp)
    grad = exact_gradient(mdp, theta).ravel()
    std = exact_moments(mdp, theta, parse_estimator("return+group-std", group=8))
    assert std.method == "tuples"
    cosine = pgvar.kpi.gradient_cosine(std.mean, grad)
    assert cosine < 1 - 1e-4  # exact: no sampling error to allow for


# -- the two exact methods against each other -------------------------------------------------------


@pytest.mark.parametrize(
    "spec_text", ["return+loo", "rtg+loo:per-length", "return+group:per-length", "rtg+group"]
)
@pytest.mark.parametrize(("name", "k"), [("prompts", 3), ("prompts", 5), ("lesson:noise_width=0", 4)])
def test_pairs_of_episodes_agree_with_every_k_tuple_of_paths(spec_text, name, k):
    mdp = pgvar.make(name)
    theta = random_theta(mdp, 7)
    spec = parse_estimator(spec_text, group=k)
    pairs = group_moments(mdp, theta, spec, method="pairs")
    tuples = group_moments(mdp, theta, spec, method="tuples")
    np.testing.assert_allclose(pairs.mean, tuples.mean, atol=1e-14)
    np.testing.assert_allclose(pairs.variance, tuples.variance, rtol=1e-10, atol=1e-14)


@pytest.mark.parametrize(
    "name",
    ["lesson", "prompts:noise=0.3", "repayment", "random:seed=1,states=4,actions=3,horizon=3,gamma=0.9"],
)
@pytest.mark.parametrize(
    "spec_text", ["return+loo", "rtg+loo", "return+group", "rtg+group", "rtg+group:common"]
)
def test_the_recursion_agrees_with_pairs_of_enumerated_episodes(name, spec_text):
    mdp = pgvar.make(name)
    theta = random_theta(mdp, 2)
    for k in (2, 5):
        spec = parse_estimator(spec_text, group=k)
        pairs = group_moments(mdp, theta, spec, method="pairs")
        recursion = group_moments(mdp, theta, spec, method="recursion")
        np.testing.assert_allclose(recursion.mean, pairs.mean, atol=1e-14)
        np.testing.assert_allclose(recursion.variance, pairs.variance, rtol=1e-10, atol=1e-14)
        assert recursion.sampling == pytest.approx(pairs.sampling, rel=1e-10)
        assert recursion.reward_noise == pytest.approx(pairs.reward_noise, rel=1e-9, abs=1e-14)


def test_the_recursion_serves_episodes_too_many_to_enumerate_and_without_a_horizon():
    corridor = pgvar.make("short-corridor")  # unbounded episodes: unrolled until 1e-14 of them remain
    theta = np.array([[0.0, 0.4]])
    specs = [parse_estimator(text, group=4) for text in ("return+loo", "rtg+group")]
    sample = GroupSampler(corridor, theta, specs).sample(4, 3000, seed=3)
    for spec, means_md in zip(specs, sample.batch_means_emd, strict=True):
        exact = exact_moments(corridor, theta, spec)
        assert exact.method == "recursion" and exact.tail_mass < 1e-13
        assert_matches(means_md, 4, exact)
    frozen = bandit_chain_mdp()
    loo = exact_moments(frozen, pgvar.uniform_theta(frozen), parse_estimator("rtg+loo", group=3))
    assert loo.method == "recursion"  # 2^24 paths: no enumeration
    np.testing.assert_allclose(
        loo.mean, exact_gradient(frozen, pgvar.uniform_theta(frozen)).ravel(), atol=1e-14
    )


def bandit_chain_mdp() -> TabularMDP:
    """24 steps of a 2-armed bandit with reward 1 on arm 0: 2^24 paths."""
    steps = 24
    transitions = np.zeros((steps + 1, 2, steps + 1))
    for t in range(steps):
        transitions[t, :, t + 1] = 1.0
    transitions[steps, :, steps] = 1.0
    rewards = np.zeros((steps + 1, 2))
    rewards[:steps, 0] = 1.0
    return TabularMDP(
        initial_s=np.eye(steps + 1)[0],
        transitions=transitions,
        rewards=rewards,
        horizon=steps,
        terminal_s=np.arange(steps + 1) == steps,
        observation_s=np.r_[np.arange(steps), -1],
        name="long bandit",
    )


def test_what_cannot_be_enumerated_is_refused_with_the_reason_and_estimated_instead():
    lesson = pgvar.make("lesson")  # uniform reward noise: continuous
    spec = parse_estimator("return+group-std", group=4)
    with pytest.raises(GroupMomentsError, match="reward noise is continuous"):
        exact_moments(lesson, pgvar.uniform_theta(lesson), spec)
    with pytest.raises(GroupMomentsError, match="not linear"):
        group_moments(lesson, pgvar.uniform_theta(lesson), spec, method="pairs")
    corridor = pgvar.make("short-corridor")
    with pytest.raises(GroupMomentsError, match="no end"):
        exact_moments(
            corridor, pgvar.uniform_theta(corridor), parse_estimator("return+loo:per-length", group=2)
        )
    with pytest.raises(GroupMomentsError, match="does not take the division by length"):
        group_moments(
            corridor,
            pgvar.uniform_theta(corridor),
            parse_estimator("rtg+loo:per-length", group=2),
            "recursion",
        )
    estimate = estimator_moments(lesson, pgvar.uniform_theta(lesson), spec)
    assert estimate.method == "monte-carlo"
    low, high = estimate.variance_ci95
    assert low < estimate.variance_trace < high
    assert estimate.mean_standard_error.shape == estimate.mean.shape


# -- exact against Monte Carlo through grouped batches ----------------------------------------------


def assert_matches(means_md: np.ndarray, n: int, exact) -> None:
    """The batch means agree with the exact mean (S bound) and their KPI with exact / N (|z| bound)."""
    batches = means_md.shape[0]
    s = batches * n * float(np.sum((means_md.mean(axis=0) - exact.mean) ** 2)) / exact.variance_trace
    assert s < S_LIMIT, f"{exact.spec.name}: mean off, S = {s:.2f}"
    squares_m = np.sum((means_md - means_md.mean(axis=0)) ** 2, axis=1) * batches / (batches - 1)
    z = (squares_m.mean() - exact.variance_trace / n) / (squares_m.std(ddof=1) / np.sqrt(batches))
    assert abs(z) < Z_LIMIT, f"{exact.spec.name}: KPI off, z = {z:.2f}"


ALL_GROUP_SPECS = [
    f"{weight}+{baseline}{suffix}"
    for weight in ("return", "rtg")
    for baseline in ("loo", "group", "group-std")
    for suffix in ("", ":per-length")
]


@pytest.mark.parametrize(
    ("name", "k", "n"),
    [("lesson", 4, 8), ("lesson:noise_width=0", 3, 6), ("prompts", 4, 8), ("prompts:noise=0.3", 2, 4)],
)
def test_every_group_baseline_matches_its_exact_moments_by_monte_carlo(name, k, n):
    mdp = pgvar.make(name)
    theta = random_theta(mdp, 5)
    specs = [parse_estimator(text, group=k) for text in ALL_GROUP_SPECS]
    sample = GroupSampler(mdp, theta, specs).sample(n, 3000, seed=17)
    assert sample.route == "groups"
    checked = 0
    for spec, means_md in zip(specs, sample.batch_means_emd, strict=True):
        try:
            exact = exact_moments(mdp, theta, spec)
        except GroupMomentsError:
            assert spec.baseline == "group-std" and mdp.reward_noise != "none"
            continue
        assert_matches(means_md, n, exact)
        checked += 1
    assert checked >= 8


def test_group_std_enumeration_matches_monte_carlo_on_a_small_case():
    mdp = bandit(np.array([0.0, 1.0, 1.0]))
    theta = np.array([[0.3, -0.2, 0.1], [0.0, 0.0, 0.0]])
    spec = parse_estimator("return+group-std", group=3)
    exact = exact_moments(mdp, theta, spec)
    assert exact.method == "tuples"
    sample = GroupSampler(mdp, theta, [spec]).sample(3, 20_000, seed=2)
    assert_matches(sample.batch_means_emd[0], 3, exact)
    estimate = group_moments_estimate(mdp, theta, spec, groups=20_000, seed=3)
    low, high = estimate.variance_ci95
    assert low < exact.variance_trace < high


def test_groups_share_their_start_state():
    mdp = pgvar.make("prompts")
    sampler = GroupSampler(mdp, pgvar.uniform_theta(mdp), [parse_estimator("return+loo", group=5)])
    episodes = sampler.episodes(5, 400, seed=4)
    starts_gk = episodes.states_tb[0].reshape(400, 5)
    assert (starts_gk == starts_gk[:, :1]).all()
    counts = np.bincount(starts_gk[:, 0], minlength=mdp.n_states)[pgvar.groups.start_states(mdp)]
    # four prompts drawn uniformly: each count is binomial(400, 1/4), sd 8.7; 4 sd either side
    assert (np.abs(counts - 100) < 4 * np.sqrt(400 * 0.25 * 0.75)).all()


def test_a_batch_that_is_not_whole_groups_is_refused():
    mdp = pgvar.make("prompts")
    sampler = GroupSampler(mdp, pgvar.uniform_theta(mdp), [parse_estimator("return+loo", group=4)])
    with pytest.raises(SpecError, match="N = 6 is not a multiple of the group size K = 4"):
        sampler.sample(6, 10)
    with pytest.raises(SpecError, match="N = 6 is not a multiple"):
        pgvar.variance_study(
            mdp, pgvar.uniform_theta(mdp), [parse_estimator("return+loo", group=4)], ns=[4, 6]
        )


def test_variance_study_measures_group_and_independent_estimators_side_by_side():
    mdp = pgvar.make("prompts")
    theta = pgvar.uniform_theta(mdp)
    specs = [parse_estimator(t, group=4) for t in ("vanilla", "return+loo", "return+group")]
    study = pgvar.variance_study(mdp, theta, specs, ns=[4, 16], batches=200, seed=1)
    assert [(r.spec.name, r.n) for r in study.readings] == [(s.name, n) for n in (4, 16) for s in specs]
    grad = exact_gradient(mdp, theta).ravel()
    for r in study.readings:
        assert r.exact_variance_trace is not None
        if r.spec.baseline == "group":
            assert r.exact_bias == pytest.approx(np.linalg.norm(grad) / 4, rel=1e-9)
            assert r.exact_cosine == pytest.approx(1.0)
        else:
            assert r.exact_bias < 1e-12
    unchanged = pgvar.variance_study(mdp, theta, specs[:1], ns=[4, 16], batches=200, seed=1)
    assert [r.variance_trace for r in unchanged.readings] == [
        r.variance_trace for r in study.readings if r.spec.name == "vanilla"
    ]  # adding group estimators does not move the independent ones' numbers


# -- the command line ------------------------------------------------------------------------------


def test_pgvar_exact_reports_bias_and_cosine_with_the_method(capsys):
    code, out, err = run(
        ["exact", "--mdp", "prompts", "-e", "vanilla,return+loo,return+group,return+group-std",
         "--group", "8", "--json"], capsys,
    )  # fmt: skip
    assert code == 0, err
    document = strict_json(out)
    results = document["estimators"]
    grad_norm = float(np.linalg.norm(document["grad"]))
    assert results["return+loo"]["bias_norm"] < 1e-12 and results["return+loo"]["method"] == "pairs"
    assert results["return+group"]["bias_norm"] == pytest.approx(grad_norm / 8, rel=1e-9)
    assert results["return+group-std"]["method"] == "tuples"
    assert results["return+group-std"]["cosine_to_gradient"] < 1 - 1e-4
    assert results["return+group"]["group"] == 8 and "group" not in results["vanilla"]


def test_pgvar_exact_says_when_a_group_baseline_was_estimated(capsys):
    code, out, err = run(["exact", "-e", "vanilla,return+group-std", "--group", "4"], capsys)
    assert code == 0, err
    assert "return+group-std: estimated from 20,000 sampled groups" in " ".join(out.split())


def test_pgvar_variance_measures_groups_and_reports_the_exact_bias(capsys):
    code, out, err = run(
        ["variance", "--mdp", "prompts", "-e", "rtg+value,return+group", "--group", "4", "--N", "4,8",
         "--batches", "50", "--json"], capsys,
    )  # fmt: skip
    assert code == 0, err
    results = strict_json(out)["results"]
    group = [r for r in results if r["estimator"] == "return+group"]
    assert [r["N"] for r in group] == [4, 8] and all(r["group"] == 4 for r in group)
    assert all(r["exact_bias"] > 0 and r["exact_cosine"] == pytest.approx(1.0) for r in group)
    assert all(r["group"] == 1 and r["exact_bias"] < 1e-12 for r in results if r["estimator"] == "rtg+value")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["variance", "-e", "return+loo", "--group", "1"], "needs groups of K >= 2"),
        (
            ["variance", "-e", "return+loo", "--group", "4", "--N", "1,4"],
            "N = 1 is not a multiple of the group size K = 4",
        ),
        (["exact", "-e", "return+group", "--group", "0"], "--group"),
        (
            ["readings", "-e", "return+loo"],
            "group baselines (loo, group, group-std) are measured by pgvar exact",
        ),
        (["train", "-e", "rtg+group-std"], "needs groups of K >= 2"),
        (
            ["train", "--mdp", "prompts", "-e", "rtg+loo", "--group", "4", "--N", "6"],
            "N = 6 is not a multiple",
        ),
        (
            ["train", "--env", "CartPole-v1", "-e", "rtg+loo", "--group", "2"],
            "--group: only for a tabular MDP",
        ),
        (["exact", "--env", "FrozenLake-v1", "-e", "rtg+loo", "--group", "2"], "not for neural policies"),
    ],
)
def test_group_errors_are_one_line_and_exit_2(capsys, args, message):
    code, _, err = run(args, capsys)
    assert code == 2
    assert message in err and len(err.strip().splitlines()) == 1
