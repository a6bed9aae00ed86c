"""The ``pgvar`` command: a thin shell over the library (no mathematics lives here)."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import sys
import warnings
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Annotated

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from pgvar import __version__, budget, kpi
from pgvar.commands.sweep import app as sweep_app
from pgvar.commands.train import train as train_command
from pgvar.documents import estimator_keys, network_variance_document, plain, variance_document
from pgvar.errors import PgvarError, SpecError
from pgvar.estimators import MAX_GROUP, EstimatorSpec, parse_estimators
from pgvar.kpi import RELIABLE_DOF, TARGET_COSINE
from pgvar.mdp import REWARD_LIMIT, TabularMDP
from pgvar.validation import check_choice, check_int, check_int_list, check_number, check_seed
from pgvar.vocabulary import LESSON_LABELS

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Policy-gradient estimators and their variance: exact where mathematics allows.",
)
mdp_app = typer.Typer(
    no_args_is_help=True, help="Check and describe MDPs (built-in names or YAML/JSON files)."
)
app.add_typer(mdp_app, name="mdp")
out = Console(width=None if sys.stdout.isatty() else 160)
err = Console(stderr=True)

MdpOption = Annotated[
    str,
    typer.Option(
        "--mdp",
        help="Built-in name (lesson, short-corridor, bandit, random, repayment, deceptive, prompts), "
        "gym:ID[,key=value...] or a YAML/JSON file.",
    ),
]
ThetaOption = Annotated[
    str, typer.Option("--theta", help="Logits: 'uniform', a JSON list, or a .json/.npy file.")
]
EstimatorsOption = Annotated[
    str, typer.Option("--estimators", "-e", help="Comma-separated specs WEIGHT+BASELINE or presets.")
]
EntropyOption = Annotated[
    float, typer.Option("--entropy", help=f"Entropy bonus coefficient beta, 0 to {REWARD_LIMIT:g}.")
]
GroupOption = Annotated[
    int,
    typer.Option(
        "--group",
        help="Group size K of the group baselines loo, group and group-std (>= 2): a batch of N "
        "episodes is N/K groups of K that share a start state.",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines instead of a table.")]
BatchesOption = Annotated[int, typer.Option("--batches", help="Independent batches M per reading (>= 2).")]
SeedOption = Annotated[int, typer.Option("--seed", help="Seed of NumPy's Generator (>= 0).")]
EnvOption = Annotated[
    str | None,
    typer.Option(
        "--env",
        help="A Gymnasium environment, ID[,gamma=G][,horizon=H][,key=value...], for a neural policy "
        "(needs pgvar[gym]); instead of --mdp.",
    ),
]
PolicyOption = Annotated[
    str, typer.Option("--policy", help="With --env: tabular, linear or mlp:WIDTH,WIDTH,... (tanh).")
]
PolicySeedOption = Annotated[int, typer.Option("--policy-seed", help="Seed of the policy's initial weights.")]
WeightsOption = Annotated[
    str | None,
    typer.Option("--weights", help="With --env: trained weights, a state_dict saved by torch.save."),
]


def _print_version(value: bool) -> None:
    if value:
        out.print(f"pgvar {__version__}", highlight=False)
        raise typer.Exit()


@app.callback()
def _options(
    ctx: typer.Context,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    max_memory: Annotated[
        float | None,
        typer.Option(
            "--max-memory",
            metavar="GB",
            help="Refuse up front any request estimated to need more memory, in GB "
            f"(default here: {budget.DEFAULT.memory / budget.GB:.3g}).",
        ),
    ] = None,
    max_seconds: Annotated[
        float | None,
        typer.Option(
            "--max-seconds",
            metavar="S",
            help="Refuse up front any request estimated at more seconds of one core's work "
            f"(default: {budget.DEFAULT.seconds:g}).",
        ),
    ] = None,
) -> None:
    """Policy-gradient estimators and their variance: exact where mathematics allows."""
    memory_gb = None if max_memory is None else check_number(max_memory, "--max-memory", low=0, low_open=True)
    seconds = (
        None if max_seconds is None else check_number(max_seconds, "--max-seconds", low=0, low_open=True)
    )
    ctx.with_resource(budget.limits(memory_gb=memory_gb, seconds=seconds))  # left when the command ends


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def main() -> None:
    """Entry point: user errors become one line on stderr and exit code 2; Ctrl-C exits 130.

    User errors are a :class:`PgvarError` (budget refusals included), a usage error of the command
    line, a file or port the system refuses (``OSError``) and, as a last resort, running out of
    memory. NumPy's floating-point warnings are silenced: every command checks that its results are
    finite numbers and says so in one line when they are not (the inputs' bounds make that rare)."""
    try:
        with ExitStack() as stack:
            stack.enter_context(np.errstate(over="ignore", invalid="ignore", divide="ignore"))
            stack.enter_context(warnings.catch_warnings())
            warnings.simplefilter("ignore", RuntimeWarning)
            # with standalone_mode=False click returns an Exit's code instead of raising it
            code = app(standalone_mode=False, prog_name="pgvar")
    except PgvarError as error:
        _fail(error)
    except KeyboardInterrupt:
        err.print("interrupted", highlight=False)
        sys.exit(130)
    except typer.Abort:
        sys.exit(130)
    except typer.Exit as done:
        sys.exit(done.exit_code)
    except MemoryError:
        _fail(
            "out of memory: this request needs more memory than the machine gives it; ask for less "
            "(smaller --N, --batches, --count, MDP) or lower --max-memory to have it refused up front"
        )
    except BrokenPipeError:  # `pgvar ... | head`: the reader left; leave quietly, as `cat` would
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)
    except OSError as error:  # a file or a port the system refuses
        where = f"{error.filename}: " if error.filename else ""
        _fail(f"{where}{error.strerror or error}")
    except Exception as error:  # usage errors from typer's bundled click
        if hasattr(error, "show") and hasattr(error, "exit_code"):
            context = getattr(error, "ctx", None)
            if type(error).__name__ == "NoArgsIsHelpError" or not hasattr(error, "format_message"):
                error.show()  # a bare group (`pgvar mdp`): its help
            else:
                hint = f" (see '{context.command_path} --help')" if context is not None else ""
                _say(f"{_one_line(error.format_message())}{hint}")
            sys.exit(error.exit_code)
        raise
    sys.exit(code if isinstance(code, int) else 0)


def _say(error: object) -> None:
    """``error: MESSAGE`` as one line on stderr (the message is never read as markup)."""
    err.print("[bold red]error:[/] ", end="", highlight=False)
    err.print(_one_line(error), highlight=False, soft_wrap=True, markup=False)


def _fail(error: object) -> None:
    """One line on stderr, exit code 2."""
    _say(error)
    sys.exit(2)


def _require_finite(what: str, *values: object) -> None:
    """The second line of defence: refuse to print a result that is not a finite number (NaN, an
    overflow) though the inputs passed their bounds; ``what`` names the command's result."""
    for value in values:
        if value is None:
            continue
        array = np.asarray(value, dtype=float)
        if not np.isfinite(array).all():
            raise PgvarError(
                f"{what}: the result is not a finite number (floating-point overflow); scale the "
                "rewards down or move the logits toward 0"
            )


def _check_start(model: TabularMDP, logits: np.ndarray, what: str, entropy: float = 0.0) -> None:
    """J and grad J at ``logits`` are finite numbers (before a command spends its time)."""
    from pgvar.exact import chain_gradient, unroll, values

    chain = unroll(model, logits, entropy)
    _require_finite(what, float(model.initial_s @ values(chain)[0][0]), chain_gradient(chain))


def _load(mdp: str, theta: str) -> tuple[TabularMDP, np.ndarray]:
    from pgvar.mdpfile import resolve_mdp
    from pgvar.policy import parse_theta

    model = resolve_mdp(mdp)
    return model, parse_theta(theta, model)


def _specs(estimators: str, entropy: float, group: int | None = None) -> list[EstimatorSpec]:
    """The estimators of ``-e``; ``group`` is ``--group`` on the commands that measure groups."""
    entropy = check_number(entropy, "--entropy", low=0, high=REWARD_LIMIT)
    group = None if group is None else check_int(group, "--group", low=1, high=MAX_GROUP)
    return parse_estimators(estimators, entropy=entropy, group=group)


def display_name(spec: EstimatorSpec) -> str:
    """A table's estimator column: the spelling the user typed, then the lesson's name of the
    configuration in parentheses where it is one of the lesson's and is spelled differently
    (``rtg (reward-to-go)``, ``vanilla``, ``rtg+value``)."""
    if spec.canonical in LESSON_LABELS and spec.label != spec.name:
        return f"{spec.name} ({spec.label})"
    return spec.name


def _print_json(payload: dict) -> None:
    out.print_json(json.dumps(plain(payload), allow_nan=False))


def weight_formula(spec: EstimatorSpec, gamma: float) -> str:
    """The weight Psi_t in the lesson's notation (see LEGEND)."""
    discount = "γ^t·" if gamma < 1 and spec.discount_scores and spec.weight != "return" else ""
    if spec.weight == "gae":
        value = {"none": "V=0", "value": "V exact", "running-value": "V=Ḡ_t(s)", "learned": "V learned"}.get(
            spec.baseline, "V=Ḡ_t"
        )
        return f"{discount}A_t^GAE(λ={spec.lam:g}, {value})"
    weight = "R(τ)" if spec.weight == "return" else "G_t"
    other = "R_j" if spec.weight == "return" else "G_t,j"  # episode j of the group
    baseline = {
        "none": "",
        "lesson": "Ḡ_t",
        "running": "R̄_t" if spec.weight == "return" else "Ḡ_t",
        "running-value": "Ḡ_t(s_t)",
        "value": "V(s_t)",
        "learned": "V̂(s_t)",
        "optimal": "b*_t",
        "optimal-per-parameter": "b*_t,i",
        "loo": f"mean_{{j≠i}} {other}",
        "group": f"mean_j {other}",
        "group-std": f"mean_j {other}",
    }[spec.baseline]
    text = f"{weight} − {baseline}" if baseline else weight
    if spec.baseline == "group-std":
        text = f"({text}) / (std_j {other} + ε)"
    formula = f"{discount}({text})" if discount and baseline else discount + text
    if not spec.per_length:
        return formula
    return f"{formula} / |τ|" if formula.startswith("(") and formula.endswith(")") else f"({formula}) / |τ|"


LEGEND = (
    "Ḡ_t, R̄_t: running means of G_t, R(τ) at step t over earlier batches (exact: their limits); "
    "b*: variance-optimal constant (Greensmith et al. 2004; per parameter: Peters & Schaal 2008)."
)
GROUP_LEGEND = (
    "mean_j, std_j: over the K episodes of episode i's group, which share its start state (RLOO: "
    "Ahmadian et al. 2024; GRPO: Shao et al. 2024); |τ|: the episode's length."
)


def _fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}g}"


@app.command()
def exact(
    mdp: MdpOption = "lesson",
    theta: ThetaOption = "uniform",
    estimators: EstimatorsOption = "vanilla,rtg,base,rtg+base",
    entropy: EntropyOption = 0.0,
    method: Annotated[str, typer.Option(help="auto, enumeration or recursion.")] = "auto",
    as_json: JsonOption = False,
    env: EnvOption = None,
    policy: PolicyOption = "tabular",
    policy_seed: PolicySeedOption = 0,
    weights: WeightsOption = None,
    group: GroupOption = 1,
) -> None:
    """Exact J, grad J and each estimator's single-episode mean and variance (no sampling); with
    --env, for a network on a tabular Gymnasium environment, in the network's parameters. A group
    baseline's moments are exact where its groups can be enumerated, else estimated from sampled
    groups with 95% intervals (the method column says which)."""
    from pgvar.exact import chain_gradient, exact_moments, unroll, values
    from pgvar.montecarlo.groups import estimator_moments

    method = check_choice(method, "--method", ("auto", "enumeration", "recursion"))
    specs = _specs(estimators, entropy, group)
    if env is not None:
        _refuse_groups_on_env(specs)
        _exact_on_env(env, mdp, policy, policy_seed, weights, specs, method, as_json)
        return
    model, logits = _load(mdp, theta)
    chain = unroll(model, logits, entropy)
    grad = chain_gradient(chain)
    objective = float(model.initial_s @ values(chain)[0][0])
    results = [
        estimator_moments(model, logits, spec, chain)
        if spec.grouped
        else exact_moments(model, logits, spec, method=method, chain=chain)
        for spec in specs
    ]
    _require_finite("exact", objective, grad)
    for r in results:
        parts = (r.reward_noise, r.sampling) if r.variance_ci95 is None else r.variance_ci95
        _require_finite(f"exact: {r.spec.name}", r.mean, r.variance_trace, *parts)
    scale = max(1.0, float(np.abs(grad).max()))
    biased = any(float(np.abs(r.mean - grad).max()) >= 1e-9 * scale for r in results)
    if as_json:
        payload = {
            "mdp": model.name,
            "method": results[0].method,
            "steps": chain.steps,
            "tail_mass": chain.tail_mass,
            "theta": logits.tolist(),
            "entropy": entropy,
            "J": objective,
            "grad": grad.tolist(),
            "estimators": {
                r.spec.name: {
                    "spec": r.spec.canonical,
                    "label": r.spec.label,
                    "mean": r.mean.tolist(),
                    "bias": float(np.abs(r.mean - grad).max()),
                    "bias_norm": kpi.bias_norm(r.mean, grad),
                    "cosine_to_gradient": kpi.gradient_cosine(r.mean, grad),
                    "variance_trace": r.variance_trace,
                    "variance_parts": {"reward_noise": r.reward_noise, "sampling": r.sampling},
                    **({"baseline_t": r.baseline_t.tolist()} if r.baseline_t is not None else {}),
                    **({"covariance": r.covariance.tolist()} if r.covariance is not None else {}),
                    **(
                        {"group": r.spec.group, "method": r.method, "variance_ci95": r.variance_ci95}
                        if r.spec.grouped
                        else {}
                    ),
                    **(
                        {"mean_standard_error": r.mean_standard_error.tolist()}
                        if r.mean_standard_error is not None
                        else {}
                    ),
                }
                for r in results
            },
        }
        _print_json(payload)
        return
    vanilla = next((r.variance_trace for r in results if r.spec.canonical == "return+none"), None)
    table = Table(title=f"Exact single-episode moments on {model.name!r}", title_justify="left")
    for column, justify in (
        ("estimator", "left"),
        ("Ψ_t", "left"),
        ("bias", "right"),
        ("variance", "right"),
        ("reward noise", "right"),
        ("sampling", "right"),
        ("vs vanilla", "right"),
        *((("|E g − ∇J|", "right"), ("cos(E g, ∇J)", "right")) if biased else ()),
    ):
        table.add_column(column, justify=justify)
    for r in results:
        bias = float(np.abs(r.mean - grad).max())
        estimated = r.variance_ci95 is not None
        cosine = kpi.gradient_cosine(r.mean, grad)
        table.add_row(
            display_name(r.spec) + (f" (K = {r.spec.group})" if r.spec.grouped else ""),
            weight_formula(r.spec, model.gamma),
            "none" if bias < 1e-9 * scale and not estimated else f"{bias:.3g}",
            _fmt(r.variance_trace)
            + (f" ({r.variance_ci95[0]:.3g}–{r.variance_ci95[1]:.3g})" if estimated else ""),
            "—" if estimated else _fmt(r.reward_noise),
            "—" if estimated else _fmt(r.sampling),
            "—" if not vanilla else f"{r.variance_trace / vanilla:.3f}×",
            *((_bias_text(r, grad), _fmt(cosine, 6)) if biased else ()),
        )
    out.print(
        f"J(θ) = {objective:.6g}   |∇J| = {np.linalg.norm(grad):.6g}   method: {results[0].method}"
        + (
            f"   (unrolled {chain.steps} steps; P(longer episode) = {chain.tail_mass:.1e})"
            if chain.tail_mass
            else ""
        )
    )
    out.print(table)
    out.print(
        "variance = trace of the covariance of the single-episode estimate g; divide by N for a batch "
        "of N. bias = max over parameters of |E g − ∇J|.",
        highlight=False,
    )
    out.print(LEGEND, highlight=False)
    grouped = [r for r in results if r.spec.grouped]
    if grouped:
        out.print(GROUP_LEGEND, highlight=False)
        out.print(
            "a group baseline's variance is K × that of a group's mean gradient (a batch of N = N/K groups "
            "has variance / N); "
            + "; ".join(f"{r.spec.name}: {_group_method(r.method, r.spec.group)}" for r in grouped)
            + ".",
            highlight=False,
        )


def _bias_text(moments, grad: np.ndarray) -> str:
    """|E g − ∇J|, with its standard error where E g was estimated by sampling."""
    bias = kpi.bias_norm(moments.mean, grad)
    if moments.mean_standard_error is not None:
        return f"{bias:.4g} ± {np.linalg.norm(moments.mean_standard_error):.2g}"
    return "none" if bias < 1e-9 * max(1.0, float(np.linalg.norm(grad))) else f"{bias:.4g}"


def _group_method(method: str, k: int) -> str:
    """How a group baseline's moments were had, in words."""
    from pgvar.montecarlo.groups import estimate_groups

    return {
        "pairs": "exact, from moments of pairs of episodes",
        "recursion": "exact, from moments of pairs of episodes by recursion over the steps",
        "tuples": "exact, from every multiset of K paths",
        "monte-carlo": f"estimated from {estimate_groups(k):,} sampled groups, 95% interval in brackets",
    }[method]


@contextlib.contextmanager
def _progress_bar(episodes: float, shown_above: float = 2_000_000) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr for long sampling (shown on a terminal only, above ``shown_above``
    episodes); yields the function that advances it by a number of episodes."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(
        TextColumn("simulating"),
        BarColumn(),
        TextColumn("{task.completed:,.0f}/{task.total:,.0f} episodes"),
        TimeRemainingColumn(),
        console=err,
        transient=True,
        disable=not (episodes > shown_above and err.is_terminal),
    ) as bar:
        task = bar.add_task("episodes", total=episodes)
        yield lambda k: bar.advance(task, k)


def _reading_cells(reading, gamma: float) -> list[str]:
    """The first cells of a row of either variance table: estimator, Ψ_t, N, the KPI, its interval
    (``!`` where unreliable), the exact value and the ratio to vanilla at the same N."""
    return [
        display_name(reading.spec),
        weight_formula(reading.spec, gamma),
        str(reading.n),
        _fmt(reading.variance_trace),
        f"{reading.ci95[0]:.3g}–{reading.ci95[1]:.3g}" + ("" if reading.reliable else " !"),
        _fmt(reading.exact_variance_trace),
        f"{reading.vs_vanilla:.3f}×" if reading.vs_vanilla is not None else "—",
    ]


@app.command()
def variance(
    mdp: MdpOption = "lesson",
    theta: ThetaOption = "uniform",
    estimators: EstimatorsOption = "vanilla,rtg,base,rtg+base",
    ns: Annotated[str, typer.Option("--N", help="Comma-separated batch sizes N (each >= 1).")] = "1,4,16",
    batches: BatchesOption = 60,
    seed: SeedOption = 0,
    entropy: EntropyOption = 0.0,
    as_json: JsonOption = False,
    env: EnvOption = None,
    policy: PolicyOption = "mlp:64,64",
    policy_seed: PolicySeedOption = 0,
    weights: WeightsOption = None,
    reference_episodes: Annotated[
        int,
        typer.Option(
            "--reference-episodes",
            help="With --env: episodes of the reference gradient (0: none; exact where tabular).",
        ),
    ] = 2048,
    group: GroupOption = 1,
) -> None:
    """Monte-Carlo variance of the batch-mean gradient over independent batches (the lesson's KPI),
    with the exact value beside it; with --env, of a neural policy on a Gymnasium environment, with
    the gradient noise scale, cosines to the true gradient and the variance per parameter tensor."""
    from pgvar.montecarlo import DEFAULT_WARMUP
    from pgvar.studies import variance_study

    n_list = check_int_list(ns, "--N", low=1)
    batches = check_int(batches, "--batches", low=2)
    seed = check_seed(seed, "--seed")
    specs = _specs(estimators, entropy, group)
    if env is not None:
        _refuse_groups_on_env(specs)
        reference_episodes = check_int(reference_episodes, "--reference-episodes", low=0)
        study_args = (specs, n_list, batches, seed, reference_episodes)
        _variance_on_env(env, mdp, policy, policy_seed, weights, study_args, as_json)
        return
    model, logits = _load(mdp, theta)
    total = sum(batches * n + DEFAULT_WARMUP for n in sorted(set(n_list) | {1}))
    with _progress_bar(total) as advance:
        study = variance_study(model, logits, specs, n_list, batches, seed, progress=advance)
    for r in study.readings:
        _require_finite(f"variance: {r.spec.name} at N = {r.n}", r.variance_trace, r.exact_variance_trace)
    if as_json:
        _print_json(variance_document(study, logits, entropy))
        return
    scale = 1e-9 * max(1.0, float(np.linalg.norm(study.grad))) if study.grad is not None else 0.0
    biased = any(r.exact_bias is not None and r.exact_bias > scale for r in study.readings)
    table = Table(
        title=f"Gradient variance on {model.name!r}: {batches} batches per reading, seed {seed}",
        title_justify="left",
    )
    for column in (
        "estimator",
        "Ψ_t",
        "N",
        "variance",
        "95% CI",
        "exact",
        "vs vanilla",
        "vs vanilla N=1",
        "SNR",
        "cos to ∇J",
        *(("|E g − ∇J|",) if biased else ()),
    ):
        table.add_column(column, justify="left" if column in ("estimator", "Ψ_t") else "right")
    for r in study.readings:
        table.add_row(
            *_reading_cells(r, model.gamma),
            f"{r.vs_vanilla_n1:.3f}×" if r.vs_vanilla_n1 is not None else "—",
            _fmt(r.snr, 3),
            _fmt(r.cosine_to_exact, 3),
            *(
                ("none" if r.exact_bias is not None and r.exact_bias <= scale else _fmt(r.exact_bias, 3),)
                if biased
                else ()
            ),
        )
    out.print(table)
    out.print(
        "variance = trace of the covariance of the batch-mean gradient across batches; "
        "exact = exact single-episode variance / N.",
        highlight=False,
    )
    how = (
        "episodes walked step by step"
        if study.sampled_paths is None
        else f"each episode's whole path drawn from its exact probability ({study.sampled_paths} paths)"
    )
    out.print(f"sampling: {how}.", highlight=False)
    out.print(LEGEND, highlight=False)
    sizes = sorted({r.spec.group for r in study.readings if r.spec.grouped})
    if sizes:
        out.print(GROUP_LEGEND, highlight=False)
        out.print(
            f"group baselines: each batch is N/K groups of K = {', '.join(map(str, sizes))} episodes "
            "sharing a start state; the other estimators take independent episodes."
            + (" |E g − ∇J|: exact bias of the mean." if biased else ""),
            highlight=False,
        )
    if study.slopes:
        slopes = ", ".join(f"{name} {slope:+.2f}" for name, slope in study.slopes.items())
        out.print(f"slope of log variance against log N (1/N predicts −1): {slopes}")
    if not all(r.reliable for r in study.readings):
        out.print(
            "! heavy tails: few batches carry this reading (effective degrees of freedom under "
            f"{RELIABLE_DOF:g}); the reading and its interval are unreliable: take more --batches.",
            highlight=False,
        )
    if study.exact_note:
        out.print(f"note: {study.exact_note}", highlight=False)
    truncated = max((r.truncated_episodes for r in study.readings), default=0)
    if truncated:
        out.print(f"[yellow]note:[/] {truncated} episodes hit the step cap and were cut short")


def _refuse_groups_on_env(specs: list[EstimatorSpec]) -> None:
    grouped = [spec.name for spec in specs if spec.grouped]
    if grouped:
        raise SpecError(
            f"--env: {', '.join(grouped)}: group baselines are measured on tabular MDPs (--mdp, e.g. "
            "--mdp gym:FrozenLake-v1), not for neural policies"
        )


def _network(env: str, mdp: str, policy: str, policy_seed: int, weights: str | None):
    """The environment spec and the policy of ``--env``/``--policy`` (``--mdp`` must be left alone)."""
    if mdp != "lesson":
        raise SpecError("--env: give --mdp or --env, not both")
    try:
        from pgvar.torch.policies import make_network
    except ImportError as missing:
        raise SpecError(
            f"--env: needs the gym extra ({missing.name} is missing): pip install 'pgvar[gym]'"
        ) from None
    return make_network(env, policy, policy_seed, weights, seed_option="--policy-seed")


def _exact_on_env(env, mdp, policy, policy_seed, weights, specs, method, as_json) -> None:
    """``pgvar exact --env``: the lifted exact engine on a tabular Gymnasium environment."""
    from pgvar.exact import objective
    from pgvar.torch.gradients import parameter_layout
    from pgvar.torch.lift import exact_network_moments, logit_table
    from pgvar.torch.study import tabular_model

    spec, network = _network(env, mdp, policy, policy_seed, weights)
    model, note = tabular_model(spec, network)
    if model is None:
        raise SpecError(f"exact --env {spec.text}: {note}")
    results = [exact_network_moments(network, model, s, method) for s in specs]
    theta = logit_table(network, int(model.observation_s.max()) + 1)
    value = objective(model, theta)
    grad = next((r.mean for r in results if r.spec.canonical == "rtg+none"), results[0].mean)
    names = [name for name, _ in parameter_layout(network)]
    for r in results:
        _require_finite(f"exact: {r.spec.name}", r.mean, r.variance_trace)
    if as_json:
        _print_json({
            "env": spec.text,
            "policy": network.spec,
            "parameters": int(grad.size),
            "method": results[0].method,
            "steps": results[0].steps,
            "J": value,
            "grad_norm": float(np.linalg.norm(grad)),
            "estimators": {
                r.spec.name: {
                    **estimator_keys(r.spec),
                    "bias": float(np.abs(r.mean - grad).max()),
                    "variance_trace": r.variance_trace,
                    "layers": dict(zip(names, r.block_traces.tolist(), strict=True)),
                }
                for r in results
            },
        })  # fmt: skip
        return
    out.print(
        f"J = {value:.6g}   |∇J| = {np.linalg.norm(grad):.6g}   {grad.size} parameters of "
        f"{network.spec!r}   method: {results[0].method}",
        highlight=False,
    )
    table = Table(title=f"Exact single-episode moments on {spec.text!r}", title_justify="left")
    for column in ("estimator", "Ψ_t", "variance", *names):
        table.add_column(column, justify="left" if column in ("estimator", "Ψ_t") else "right")
    for r in results:
        shares = [
            f"{share / r.variance_trace:.0%}" if r.variance_trace > 0 else "—" for share in r.block_traces
        ]
        table.add_row(
            display_name(r.spec), weight_formula(r.spec, model.gamma), _fmt(r.variance_trace), *shares
        )
    out.print(table)
    out.print(
        "variance = trace of the covariance of the single-episode estimate in the network's parameters; "
        "the other columns: each parameter tensor's share of it.",
        highlight=False,
    )


def _variance_on_env(env, mdp, policy, policy_seed, weights, study_args, as_json) -> None:
    """``pgvar variance --env``: the KPI of a neural policy, and what deep-RL practice needs besides."""
    from pgvar.torch.study import network_variance_study, planned_episodes

    spec, network = _network(env, mdp, policy, policy_seed, weights)
    specs, n_list, batches, seed, reference_episodes = study_args
    total = planned_episodes(specs, n_list, batches, reference_episodes)
    with _progress_bar(total, shown_above=0) as advance:
        study = network_variance_study(spec, network, specs, n_list, batches, seed,
                                       reference_episodes=reference_episodes, progress=advance)  # fmt: skip
    for r in study.readings:
        _require_finite(f"variance: {r.spec.name} at N = {r.n}", r.variance_trace)
    if as_json:
        _print_json(network_variance_document(study, specs[0].entropy))
        return
    table = Table(
        title=f"Gradient variance of {network.spec!r} ({study.parameters} parameters) on {spec.text!r}: "
        f"{batches} batches per reading, seed {seed}",
        title_justify="left",
    )
    columns = ("estimator", "Ψ_t", "N", "variance", "95% CI", "exact", "vs vanilla", "SNR",
               "cos to ∇J", "cos pairs", "B_simple", f"N for cos {TARGET_COSINE:g}")  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column in ("estimator", "Ψ_t") else "right")
    for r in study.readings:
        table.add_row(
            *_reading_cells(r, spec.gamma),
            _fmt(r.snr, 3),
            _fmt(r.cosine_to_true, 3),
            _fmt(r.pairwise_cosine, 3),
            _fmt(r.noise_scale, 3),
            _fmt(r.batch_for_cosine, 3),
        )
    out.print(table)
    truth = {"exact": "the exact gradient", "reference": "the reference gradient"}
    out.print(
        "variance = trace of the covariance of the batch-mean gradient across batches; B_simple = "
        "tr Σ / |∇J|² in episodes (McCandlish et al. 2018); cosines to "
        f"{truth.get(study.true_source, 'no true gradient')}.",
        highlight=False,
    )
    if study.reference is not None:
        ref = study.reference
        out.print(
            f"reference: {ref.episodes} episodes of reward-to-go, "
            f"|∇J| ≈ {ref.norm:.4g} ± {ref.standard_error:.2g}",
            highlight=False,
        )
    widest = max(r.n for r in study.readings)
    shares = Table(title=f"Variance per parameter tensor at N = {widest}", title_justify="left")
    layers = list(study.readings[0].layer_traces)
    for column in ("estimator", *layers):
        shares.add_column(column, justify="left" if column == "estimator" else "right")
    for r in study.readings:
        if r.n == widest:
            shares.add_row(display_name(r.spec), *(_fmt(r.layer_traces[name], 3) for name in layers))
    out.print(shares)
    if study.exact_note:
        out.print(f"note: {study.exact_note}", highlight=False)


@app.command()
def readings(
    mdp: MdpOption = "lesson",
    theta: ThetaOption = "uniform",
    estimators: EstimatorsOption = "vanilla,rtg,base,rtg+base",
    n: Annotated[int, typer.Option("--N", help="Batch size N (>= 1).")] = 1,
    batches: BatchesOption = 60,
    count: Annotated[int, typer.Option("--count", help="How many readings to take (>= 1).")] = 1000,
    seed: SeedOption = 0,
    entropy: EntropyOption = 0.0,
    as_json: JsonOption = False,
) -> None:
    """How far one reading of the lesson's bar strays: many independent readings in one call, their
    spread, and how often each estimator is ordered against vanilla as the exact variances are."""
    import time

    from pgvar.studies import reading_spread

    n = check_int(n, "--N", low=1)
    batches = check_int(batches, "--batches", low=2)
    count = check_int(count, "--count", low=1)
    seed = check_seed(seed, "--seed")
    specs = _specs(estimators, entropy)
    model, logits = _load(mdp, theta)
    start = time.perf_counter()
    with _progress_bar(float(n) * batches * count * (len(specs) + 1)) as advance:
        spreads = reading_spread(model, logits, specs, n, batches, count, seed, progress=advance)
    seconds = time.perf_counter() - start
    for r in spreads:
        _require_finite(f"readings: {r.spec.name}", r.exact, r.mean, r.low, r.high)
    if as_json:
        payload = {
            "mdp": model.name,
            "N": n,
            "batches": batches,
            "count": count,
            "seed": seed,
            "results": [
                {
                    **estimator_keys(r.spec),
                    "exact_variance_trace": r.exact,
                    "mean": r.mean,
                    "relative_std": r.relative_std,
                    "q05": r.low,
                    "q95": r.high,
                    "agrees_with_exact": r.agrees_with_exact,
                }
                for r in spreads
            ],
        }
        _print_json(payload)
        return
    table = Table(
        title=f"{count} readings on {model.name!r}: {batches} batches of N = {n} each, seed {seed}",
        title_justify="left",
    )
    for column in (
        "estimator",
        "exact",
        "mean reading",
        "one reading ± (rel. std)",
        "5%–95%",
        "ordered as exact",
    ):
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for r in spreads:
        table.add_row(
            display_name(r.spec),
            _fmt(r.exact),
            _fmt(r.mean),
            f"{100 * r.relative_std:.1f}%",
            f"{r.low:.3g}–{r.high:.3g}",
            "—" if r.agrees_with_exact is None else f"{100 * r.agrees_with_exact:.1f}%",
        )
    out.print(table)
    out.print(
        "a reading = trace of the covariance of the batch-mean gradient across the batches (the bar); "
        "ordered as exact = readings in which the estimator and vanilla, on the same episodes, "
        "compare as their exact variances do.",
        highlight=False,
    )
    out.print(f"took {seconds:.2f} s ({1e6 * seconds / count:.0f} µs per reading).", highlight=False)


@app.command()
def verify(
    mdp: MdpOption = "lesson",
    theta: ThetaOption = "uniform",
    seed: Annotated[int, typer.Option("--seed", help="Seed for the Monte-Carlo checks (>= 0).")] = 0,
    as_json: JsonOption = False,
) -> None:
    """Check every claim of the lesson on this MDP and policy: PASS or FAIL with the numbers.
    Exit code 0 only when all hold."""
    from pgvar.claims import verify_groups, verify_lesson

    seed = check_seed(seed, "--seed")
    model, logits = _load(mdp, theta)
    _check_start(model, logits, "verify")  # a claim on NaN numbers would fail for the wrong reason
    claims, summary = verify_lesson(model, logits, seed)
    group_claims = verify_groups(model, logits, seed)
    if as_json:

        def listed(found):
            return [
                {"claim": c.claim, "passed": c.passed, "detail": c.detail, "numbers": c.numbers}
                for c in found
            ]

        _print_json(
            {
                "mdp": model.name,
                "seed": seed,
                "theta": logits.tolist(),
                "claims": listed(claims),
                "variance_optimal": summary,
                "group_claims": listed(group_claims),
            }
        )
    else:
        for title, found in (
            (f"Lesson 07's claims on {model.name!r}:", claims),
            ("The group baselines of language-model RL (RLOO, GRPO; docs/groups.md):", group_claims),
        ):
            out.print(title, highlight=False)
            for c in found:
                mark = "[green]PASS[/]" if c.passed else "[bold red]FAIL[/]"
                out.print(f"{mark} {c.claim}", highlight=False)
                out.print(f"     {c.detail}", highlight=False, markup=False)
            if found is claims:
                out.print(summary, highlight=False)
    if not all(c.passed for c in [*claims, *group_claims]):
        raise typer.Exit(1)


@app.command()
def report(
    mdp: MdpOption = "lesson",
    theta: ThetaOption = "uniform",
    out_dir: Annotated[
        str, typer.Option("--out", help="Folder for the figures and report.html.")
    ] = "pgvar-report",
    batches: Annotated[int, typer.Option("--batches", help="Batches per Monte-Carlo reading (>= 2).")] = 60,
    seed: SeedOption = 0,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace files in a non-empty --out.")
    ] = False,
) -> None:
    """Write a figure set (PNG + SVG) and a self-contained HTML report for one MDP and policy."""
    from pathlib import Path

    from pgvar.report import build_report

    batches = check_int(batches, "--batches", low=2)
    seed = check_seed(seed, "--seed")
    model, logits = _load(mdp, theta)
    _check_start(model, logits, "report")
    path = build_report(model, logits, Path(out_dir), batches=batches, seed=seed, overwrite=overwrite)
    out.print(f"report: {path}", highlight=False)


@mdp_app.command("check")
def mdp_check(
    path: Annotated[str, typer.Argument(help="A YAML/JSON MDP file (or a built-in name).")],
) -> None:
    """Validate an MDP file; exit 0 and say so when it is valid."""
    from pgvar.mdpfile import resolve_mdp

    model = resolve_mdp(path)
    horizon = "unbounded" if model.horizon is None else f"horizon {model.horizon}"
    out.print(
        f"ok: {path}: MDP {model.name!r} with {model.n_states} states, {model.n_actions} actions, "
        f"{horizon}, gamma {model.gamma:g}",
        highlight=False,
    )


@mdp_app.command("show")
def mdp_show(name: Annotated[str, typer.Argument(help="A built-in name or a YAML/JSON file.")]) -> None:
    """Describe an MDP: sizes, start distribution, transitions, rewards, noise."""
    from pgvar.mdpfile import describe, resolve_mdp

    out.print(describe(resolve_mdp(name)), highlight=False)


@app.command()
def explore(
    mdp: MdpOption = "lesson",
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0 picks a free one).")] = 0,
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Do not open a browser.")] = False,
    static: Annotated[
        str | None,
        typer.Option(
            "--static",
            metavar="OUT.html",
            help="Write one self-contained HTML page (no server, no network) with precomputed readings "
            "of every knob combination and N from 1 to 1024, and exit.",
        ),
    ] = None,
) -> None:
    """Serve the live gradient-variance explorer on 127.0.0.1 (Ctrl-C stops it), or write a static page."""
    if static is not None:
        from pgvar.explorer import write_static

        size = write_static(static, mdp)
        out.print(
            f"wrote {static} ({size / 1024:.0f} KiB, self-contained: open it from disk)", highlight=False
        )
        return
    from pgvar.explorer import serve

    port = check_int(port, "--port", low=0, high=65535)
    if port:
        check_port_free(port)
    try:
        serve(mdp=mdp, port=port, open_browser=not no_browser)  # a bad --mdp is reported on the page
    except OSError as error:  # taken between the check and the server's own bind
        if error.errno in (errno.EADDRINUSE, errno.EACCES):
            raise SpecError(f"--port: cannot serve on 127.0.0.1:{port}: {error.strerror}") from None
        raise


def check_port_free(port: int) -> None:
    """Bind 127.0.0.1:``port`` as the server will (SO_REUSEADDR, like Tornado); one line if it cannot."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as error:
            why = "in use" if error.errno == errno.EADDRINUSE else error.strerror or str(error)
            raise SpecError(
                f"--port: 127.0.0.1:{port} is not free ({why}); choose another port, or 0 for a free one"
            ) from None


app.command()(train_command)  # defined beside the training core, listed after the variance commands
app.add_typer(sweep_app, name="sweep")  # pgvar sweep run/show/query/plot


if __name__ == "__main__":
    main()
