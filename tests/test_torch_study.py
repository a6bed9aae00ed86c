"""Neural policies measured against the truth: the lifted exact engine against Monte Carlo through the
real pipeline (Gymnasium episodes, per-episode gradients by torch.func), every unbiased estimator's
mean against the reference gradient, and ``pgvar exact/variance --env`` as a user runs them.

The bounds are derived, not guessed. For a mean g of B independent per-episode gradients with mean mu
and covariance Sigma, S = B |g - mu|^2 / tr Sigma is (by the central limit theorem) a weighted sum of
chi-square(1) variables with weights summing to 1, and P(S >= t) <= P(chi2_1 >= t) for t >= 1.54
(Szekely & Bakirov 2003): S < 15.1 fails with probability at most 1e-4. The single-episode trace is a
mean of B squared deviations, normal to within its own standard error: |z| < 4 fails about 6e-5.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("gymnasium")

from helpers import run, strict_json  # noqa: E402

from pgvar.estimators import parse_estimator  # noqa: E402
from pgvar.gym.envspec import make_env, parse_env  # noqa: E402
from pgvar.torch.episodes import collect  # noqa: E402
from pgvar.torch.gradients import episode_gradients  # noqa: E402
from pgvar.torch.lift import exact_network_moments  # noqa: E402
from pgvar.torch.policies import make_policy  # noqa: E402
from pgvar.torch.study import StateValues, network_variance_study, tabular_model  # noqa: E402

S_LIMIT = 15.1  # P(chi2_1 >= 15.1) = 1e-4, a bound on the tail of S (module docstring)
Z_LIMIT = 4.0  # two-sided normal tail 6e-5
EXACT_ESTIMATORS = ["vanilla", "rtg", "rtg+value", "return+value", "gae0.9+value"]


def network(text: str, spec: str, seed: int = 1):
    env = parse_env(text)
    probe = make_env(env)
    policy = make_policy(spec, probe.observation_space, probe.action_space, seed=seed)
    probe.close()
    return env, policy


@pytest.fixture(scope="module", params=["FrozenLake-v1", "CliffWalking-v1,horizon=20"])
def sampled(request):
    """An MLP on a tabular environment, its exact model and 4,000 episodes."""
    env, policy = network(request.param, "mlp:16")
    model, note = tabular_model(env, policy)
    assert model is not None, note
    return env, policy, model, collect(env, policy, 4000, seed=5)


@pytest.mark.parametrize("text", EXACT_ESTIMATORS)
def test_lifted_exact_moments_match_monte_carlo_through_the_real_pipeline(sampled, text):
    env, policy, model, episodes = sampled
    spec = parse_estimator(text)
    exact = exact_network_moments(policy, model, spec)
    extra = {}
    if spec.baseline == "value":
        values_bt, final_b = StateValues(env, policy, model, 0.0, seed=0)(episodes)
        extra = {"values_bt": values_bt, "truncation_values_b": final_b}  # V = 0 at the limit
    grads_bD = episode_gradients(policy, episodes, spec, **extra).numpy()
    B = grads_bD.shape[0]
    mean_d = grads_bD.mean(axis=0)
    squared_b = ((grads_bD - mean_d) ** 2).sum(axis=1)
    trace = squared_b.sum() / (B - 1)
    z = (trace - exact.variance_trace) / (squared_b.std(ddof=1) / np.sqrt(B))
    s = B * float(((mean_d - exact.mean) ** 2).sum()) / exact.variance_trace
    assert abs(z) < Z_LIMIT, (trace, exact.variance_trace, z)
    assert s < S_LIMIT, s
    assert exact.variance_trace > 0 and np.linalg.norm(exact.mean) > 0


def test_tabular_on_frozen_lake_reproduces_the_exact_engine_from_the_cli(capsys):
    code, core, _ = run(["exact", "--mdp", "gym:FrozenLake-v1", "-e", "vanilla,rtg+value", "--json"], capsys)
    assert code == 0
    code, lifted, _ = run(
        ["exact", "--env", "FrozenLake-v1", "--policy", "tabular", "-e", "vanilla,rtg+value", "--json"],
        capsys,
    )
    assert code == 0
    core, lifted = strict_json(core), strict_json(lifted)
    assert lifted["parameters"] == 64 and lifted["J"] == pytest.approx(core["J"], rel=1e-12)
    for name in ("vanilla", "rtg+value"):
        assert lifted["estimators"][name]["variance_trace"] == pytest.approx(
            core["estimators"][name]["variance_trace"], rel=1e-12
        )


def test_every_unbiased_estimator_agrees_with_the_reference_gradient_on_cartpole():
    env, policy = network("CartPole-v1,horizon=40", "mlp:8", seed=2)
    specs = [parse_estimator(t) for t in ("vanilla", "rtg", "rtg+base", "rtg+running", "rtg+value")]
    study = network_variance_study(env, policy, specs, [8], batches=120, seed=3, reference_episodes=4096)
    assert study.true_source == "reference" and study.exact_note is not None
    reference = study.reference
    for reading in study.readings:
        # the difference of two independent unbiased means: covariance trace = the sum of theirs
        spread = reading.variance_trace / reading.batches + reference.mean_variance
        s = float(((reading.mean - reference.mean) ** 2).sum()) / spread
        assert s < S_LIMIT, (reading.spec.name, s)
    biased = network_variance_study(env, policy, [parse_estimator("rtg")], [8], batches=120, seed=3,
                                    reference_episodes=4096)  # fmt: skip
    # the test can fail: a wrong sign or scale of the estimate is far outside the bound
    flipped = -biased.readings[0].mean
    assert float(((flipped - reference.mean) ** 2).sum()) / reference.mean_variance > 10 * S_LIMIT


def test_the_study_reports_exact_values_where_the_environment_is_tabular():
    env, policy = network("FrozenLake-v1,is_slippery=false,horizon=12", "mlp:8")
    specs = [parse_estimator(t) for t in ("rtg", "rtg+value")]
    study = network_variance_study(env, policy, specs, [1, 4], batches=20, seed=0, reference_episodes=64)
    model, _ = tabular_model(env, policy)
    exact = exact_network_moments(policy, model, specs[1])
    assert study.true_source == "exact" and study.exact_note is None
    np.testing.assert_allclose(study.true_gradient, exact.mean, rtol=1e-12)
    reading = next(r for r in study.readings if r.spec == specs[1] and r.n == 4)
    assert reading.exact_variance_trace == pytest.approx(exact.variance_trace / 4, rel=1e-12)
    assert sum(reading.layer_traces.values()) == pytest.approx(reading.variance_trace, rel=1e-12)
    assert reading.noise_scale == pytest.approx(4 * reading.variance_trace / (exact.mean @ exact.mean))


def test_variance_env_json_holds_the_tabular_keys_and_the_deep_rl_ones(capsys):
    code, out, err = run(["variance", "--env", "CliffWalking-v1,horizon=10", "--policy", "mlp:8",
                                      "-e", "rtg,rtg+value", "--N", "1,4", "--batches", "8",
                          "--reference-episodes", "64", "--json"], capsys)  # fmt: skip
    assert code == 0, err
    payload = strict_json(out)
    assert payload["true_gradient"] == "exact" and payload["parameters"] == 48 * 8 + 8 + 8 * 4 + 4
    assert payload["reference"]["episodes"] == 64 and payload["reference"]["standard_error"] > 0
    rows = payload["results"]
    assert [(r["estimator"], r["N"]) for r in rows] == [("rtg", 1), ("rtg+value", 1), ("rtg", 4),
                                                         ("rtg+value", 4)]  # fmt: skip
    for row in rows:
        for key in ("variance_trace", "ci95", "exact_variance_trace", "vs_vanilla", "snr",
                    "cosine_to_true", "pairwise_cosine", "noise_scale", "layers"):  # fmt: skip
            assert key in row
        assert set(row["noise_scale"]) == {"value", "ci95", "batch_for_cosine_0.9"}


def test_variance_env_without_a_model_uses_the_reference(capsys):
    code, out, err = run(["variance", "--env", "CartPole-v1,horizon=20", "--policy", "linear",
                                      "-e", "rtg", "--N", "2", "--batches", "6", "--reference-episodes", "32",
                          "--json"], capsys)  # fmt: skip
    assert code == 0, err
    payload = strict_json(out)
    assert payload["true_gradient"] == "reference" and "exact_note" in payload
    assert payload["results"][0]["exact_variance_trace"] is None


@pytest.mark.parametrize(
    "args,needle",
    [
        (["variance", "--env", "NoSuchEnv-v0"], "doesn't exist"),
        (["variance", "--env", "CartPole-v1", "--policy", "tabular"], "tabular"),
        (["variance", "--env", "CartPole-v1", "--policy", "mlp:0"], "mlp"),
        (["variance", "--env", "CartPole-v1", "--mdp", "bandit"], "not both"),
        (["exact", "--env", "CartPole-v1,horizon=5", "--policy", "linear"], "exact"),
        (["variance", "--env", "CartPole-v1", "--policy", "linear", "--weights", "WEIGHTS"], "weights"),
        (["variance", "--env", "CartPole-v1", "--N", "1000", "--batches", "1000"], "over the limit"),
        (["variance", "--env", "CartPole-v1", "--policy", "mlp:100000,100000"], "10000800002 parameters"),
        (["exact", "--env", "FrozenLake-v1,map_name=8x8", "--policy", "mlp:4096,4096"], "Jacobian"),
    ],
)
def test_bad_environments_policies_and_weights_are_one_line_errors(tmp_path, capsys, args, needle):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    args = [str(garbage) if a == "WEIGHTS" else a for a in args]
    code, out, err = run(args, capsys)
    assert code == 2 and not out, (out, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err


def test_on_the_lqr_the_true_gradient_is_the_closed_form():
    import pgvar.gym  # noqa: F401  (registers pgvar/LQR-v0)
    from pgvar.torch.lqr import exact_lqr_gradient

    env, policy = network("pgvar/LQR-v0,horizon=5", "linear")
    study = network_variance_study(env, policy, [parse_estimator("rtg")], [4], batches=10, seed=0,
                                   reference_episodes=0)  # fmt: skip
    assert study.true_source == "exact" and "closed form" in study.exact_note
    np.testing.assert_array_equal(study.true_gradient, exact_lqr_gradient(policy, env))
    assert study.readings[0].exact_variance_trace is None and study.readings[0].noise_scale is not None
