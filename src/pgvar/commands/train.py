"""``pgvar train``: learning curves of the estimators (and of the exact gradient) on one MDP, or of a
neural policy on a Gymnasium environment (``--env``).

A thin shell over :mod:`pgvar.train` (learning) and :mod:`pgvar.curves` (files and plots), and with
``--env`` over :mod:`pgvar.torch.training` (learning, files and plots): it checks every option with
:mod:`pgvar.validation` (one-line errors), shows a progress bar, saves the curves and plots, and prints
a summary table. Registered in ``pgvar.cli`` with ``app.command()(train)``.

Options that differ by mode default to None and are resolved here: ``--lr`` (0.1, with ``--env``
0.01), ``--N`` (1, with ``--env`` 16), ``--runs`` (5, with ``--env`` 1). ``--mdp`` and ``--env``
exclude each other; the tabular options (``--theta``, ``--exact-reference``, ``--baseline-lr``,
``--learned-by``, ``--variance-every``) are refused with ``--env``, and the network options
(``--policy``, ``--policy-seed``, ``--weights``, ``--optimizer``) without it, one line each.
"""

from __future__ import annotations

import math
import re
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pgvar.errors import PgvarError, SpecError
from pgvar.validation import check_int, check_number

AUTO_VARIANCE_RECORDS = 20
DEFAULT_UPDATES = 100
UPDATE_SECONDS = 1e-3  # fixed cost of one update of one run (a batch, a step, an exact record): ~1 ms
OPTION_NAMES = {
    "lr": "--lr",
    "n": "--N",
    "updates": "--updates",
    "runs": "--runs",
    "seed": "--seed",
    "entropy": "--entropy",
    "baseline_lr": "--baseline-lr",
    "learned_by": "--learned-by",
    "variance_every": "--variance-every",
}


def updates_from(episodes: int | None, updates: int | None, n: int) -> int:
    """The number of updates from ``--episodes`` (a multiple of ``--N``) or ``--updates``."""
    if episodes is not None and updates is not None:
        raise SpecError("--episodes/--updates: give one of them, not both (episodes = updates x N)")
    if updates is not None:
        return updates  # checked with the rest of the configuration
    if episodes is None:
        return DEFAULT_UPDATES
    check_int(episodes, "--episodes", low=1)
    if n >= 1 and episodes % n:
        raise SpecError(
            f"--episodes: {episodes} is not a multiple of --N {n} "
            f"(each update uses {n} episodes); try {max(n, episodes - episodes % n)}"
        )
    return max(episodes // max(n, 1), 1)


_STEP_GUESS = re.compile(r"\s*\((?:is the )?step size too large\?\)")


def stop_cause(update: int, reason: str, lr: float) -> str:
    """Why a run stopped, naming the culprit: the step size ``--lr`` when the logits overflowed or a
    later policy left the MDP's reach, the starting ``--theta`` when the run stopped at update 1 for
    any other reason (its batch was drawn, and the exact gradient taken, before any step)."""
    reason = _STEP_GUESS.sub("", reason).rstrip()
    if "overflow" in reason:
        return f"{reason}: --lr {lr:g} is too large for gradients of this size"
    if update <= 1:
        return f"{reason} (at the starting --theta, before any step)"
    steps = f"{update - 1} step{'s' if update > 2 else ''}"
    return f"{reason}, after {steps} of --lr {lr:g}: the steps took the policy there (lower --lr)"


def check_start(model, logits, entropy: float, theta_text: str) -> None:
    """The exact objective and gradient at the starting logits exist and are finite, else one line
    blaming ``--theta`` (a run that cannot start is the starting point's fault, not the step size's)."""
    import numpy as np

    from pgvar.budget import BudgetError
    from pgvar.exact import exact_gradient
    from pgvar.train import evaluate

    where = "--theta: at the starting logits" + (" (uniform)" if theta_text.strip() == "uniform" else "")
    try:
        start = evaluate(model, logits, entropy)
        grad = exact_gradient(model, logits, entropy)
    except BudgetError:
        raise
    except PgvarError as error:
        raise SpecError(f"{where}, {error}") from None
    if not (math.isfinite(start.objective) and math.isfinite(start.J) and np.isfinite(grad).all()):
        raise SpecError(
            f"{where}, J or its gradient is not a finite number (floating-point overflow); scale the "
            "rewards down or move the logits toward 0"
        )


def check_cost(model, config, theta_size: int, curves: int, step_cost: float = 1.0) -> None:
    """Refuse up front (:class:`~pgvar.budget.BudgetError`, one line) a training whose loop alone would
    outlast the current limits or whose records would not fit: ``curves`` runs of ``config.updates``
    updates, each a fixed cost, N episodes of sampling (``step_cost`` compiled steps a step) and an
    exact evaluation of the policy."""
    from pgvar import budget

    steps = model.horizon or 1  # unbounded episodes: the sampler checks its own batches
    entries = steps * model.n_states**2 * model.n_actions
    per_update = (
        UPDATE_SECONDS
        + config.n * steps * step_cost / budget.MC_STEPS_PER_SECOND
        + entries / budget.EXACT_ENTRIES_PER_SECOND
    )
    budget.check(
        f"--updates {config.updates} x --runs {config.runs}",
        memory=8.0 * curves * (config.updates + 1) * (theta_size + 5),  # the records of every run
        seconds=curves * config.updates * per_update,
        hint="fewer --updates, --runs or estimators",
    )


def _cell(value: float, spec: str = ".4g") -> str:
    return format(value, spec) if math.isfinite(value) else "—"


def train(
    mdp: Annotated[
        str | None,
        typer.Option(
            "--mdp",
            help="Built-in name (lesson, short-corridor, bandit, deceptive, ...) or a file (default lesson).",
        ),
    ] = None,
    env: Annotated[
        str | None,
        typer.Option(
            "--env",
            help="Instead of --mdp: a Gymnasium environment ID[,gamma=G][,horizon=H][,key=value...] "
            "for a neural policy trained with Adam (needs the gym extra of pgvar).",
        ),
    ] = None,
    policy: Annotated[
        str | None,
        typer.Option("--policy", help="With --env: tabular, linear or mlp:WIDTH,... (default mlp:64,64)."),
    ] = None,
    policy_seed: Annotated[
        int | None, typer.Option("--policy-seed", help="With --env: seed of the initial weights (default 0).")
    ] = None,
    weights: Annotated[
        str | None,
        typer.Option("--weights", help="With --env: initial weights, a state_dict saved by torch.save."),
    ] = None,
    optimizer: Annotated[
        str | None, typer.Option("--optimizer", help="With --env: adam (default) or sgd.")
    ] = None,
    estimators: Annotated[
        str,
        typer.Option(
            "--estimators", "-e", help="Comma-separated specs WEIGHT+BASELINE or presets (rtg+learned, ...)."
        ),
    ] = "vanilla,rtg,base,rtg+base",
    lr: Annotated[
        float | None, typer.Option("--lr", help="Step size (> 0; default 0.1, with --env 0.01).")
    ] = None,
    n: Annotated[
        int | None,
        typer.Option("--N", help="Episodes N per update, the batch size (>= 1; default 1, with --env 16)."),
    ] = None,
    episodes: Annotated[
        int | None, typer.Option("--episodes", help="Episodes per run (a multiple of --N).")
    ] = None,
    updates: Annotated[
        int | None, typer.Option("--updates", help=f"Updates per run (default {DEFAULT_UPDATES}).")
    ] = None,
    entropy: Annotated[float, typer.Option("--entropy", help="Entropy bonus coefficient (>= 0).")] = 0.0,
    baseline_lr: Annotated[
        float | None,
        typer.Option("--baseline-lr", help="Rate of the learned baseline, in (0, 1] (default 0.1)."),
    ] = None,
    learned_by: Annotated[
        str | None,
        typer.Option("--learned-by", help="Learned baseline per 'state' (default) or per 'observation'."),
    ] = None,
    runs: Annotated[
        int | None, typer.Option("--runs", help="Independent runs (>= 1; default 5, with --env 1).")
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the runs' SeedSequence (>= 0).")] = 0,
    theta: Annotated[
        str | None,
        typer.Option(
            "--theta", help="Starting logits: 'uniform' (default), a JSON list, or a .json/.npy file."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for curves.csv/.parquet, summary.json, curves.png/.svg."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace results already in --out (else refuse).")
    ] = False,
    exact_reference: Annotated[
        bool | None,
        typer.Option(
            "--exact-reference/--no-exact-reference", help="Also ascend the exact gradient (default on)."
        ),
    ] = None,
    variance_every: Annotated[
        int | None,
        typer.Option(
            "--variance-every",
            help="Record the exact variance every K updates (0: never; default: about 20 records per "
            "run for finite horizons, never for unbounded episodes, where it is slow).",
        ),
    ] = None,
    group: Annotated[
        int | None,
        typer.Option(
            "--group",
            help="Group size K of the group baselines loo, group and group-std (>= 2; default 1): each "
            "update's N episodes are N/K groups of K that share a start state.",
        ),
    ] = None,
) -> None:
    """Train with stochastic gradient ascent (batch of N episodes per update) for several runs; plot
    learning curves (mean and 95% band over runs) beside ascent on the exact gradient. With --env, train
    a neural policy on a Gymnasium environment and log its gradient variance and noise scale."""
    if env is not None:
        if mdp is not None:
            raise SpecError("--env: give --mdp or --env, not both")
        tabular_only = {
            "--theta": theta,
            "--exact-reference/--no-exact-reference": exact_reference,
            "--baseline-lr": baseline_lr,
            "--learned-by": learned_by,
            "--variance-every": variance_every,
            "--group": group,
        }
        for option, value in tabular_only.items():
            if value is not None:
                raise SpecError(f"{option}: only for a tabular MDP (--mdp), not with --env")
        train_on_env(
            env, policy, policy_seed, weights, optimizer, estimators, lr, n, episodes, updates, entropy,
            runs, seed, out, overwrite,
        )  # fmt: skip
        return
    network_only = {"--policy": policy, "--policy-seed": policy_seed, "--weights": weights,
                    "--optimizer": optimizer}  # fmt: skip
    for option, value in network_only.items():
        if value is not None:
            raise SpecError(f"{option}: only with --env (a neural policy on a Gymnasium environment)")
    mdp = "lesson" if mdp is None else mdp
    lr = 0.1 if lr is None else lr
    n = 1 if n is None else n
    runs = 5 if runs is None else runs
    baseline_lr = 0.1 if baseline_lr is None else baseline_lr
    learned_by = "state" if learned_by is None else learned_by
    theta = "uniform" if theta is None else theta
    exact_reference = True if exact_reference is None else exact_reference
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pgvar.curves import check_out_dir, default_out, save
    from pgvar.estimators import MAX_GROUP, parse_estimators
    from pgvar.mdp import REWARD_LIMIT
    from pgvar.mdpfile import resolve_mdp
    from pgvar.montecarlo.groups import READ_COST, check_group_size
    from pgvar.policy import parse_theta
    from pgvar.train import TrainConfig, validate_config
    from pgvar.train import train as run_training

    stdout = Console(width=None if sys.stdout.isatty() else 160)
    stderr = Console(stderr=True)
    n_updates = updates_from(episodes, updates, n)
    fields = dict(
        lr=lr,
        n=n,
        updates=n_updates,
        runs=runs,
        seed=seed,
        entropy=entropy,
        baseline_lr=baseline_lr,
        learned_by=learned_by,
        variance_every=0 if variance_every is None else variance_every,
    )
    validate_config(fields, OPTION_NAMES)
    check_number(entropy, "--entropy", low=0, high=REWARD_LIMIT)
    model = resolve_mdp(mdp)
    logits = parse_theta(theta, model)
    specs = parse_estimators(
        estimators,
        entropy=entropy,
        group=check_int(1 if group is None else group, "--group", low=1, high=MAX_GROUP),
    )
    for spec in specs:  # before --out is created (K = 1 takes any N)
        check_group_size(spec, n)
    if variance_every is None:
        fields["variance_every"] = max(1, n_updates // AUTO_VARIANCE_RECORDS) if model.horizon else 0
    config = TrainConfig(**fields)
    out_dir = out if out is not None else default_out(mdp)
    # a folder the user names is created, not its parents; the default runs/train-... may create runs/
    check_out_dir(out_dir, overwrite, option="--out", parents=out is None)
    check_start(model, logits, entropy, theta)
    curves = len(specs) * runs + (1 if exact_reference else 0)
    check_cost(model, config, logits.size, curves, READ_COST if any(s.grouped for s in specs) else 1.0)

    total = curves * n_updates
    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("updates"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as bar:
        task = bar.add_task("updates", total=total)
        result = run_training(
            model,
            specs,
            config,
            logits,
            exact_reference=exact_reference,
            progress=lambda k: bar.advance(task, k),
        )
    summary = result.summary()
    for curve, row in zip(result.curves, summary, strict=True):
        stopped = curve.stopped_r >= 0
        if not stopped.all() and not math.isfinite(row["final_J"]):  # the second line of defence
            raise PgvarError(
                f"train: {curve.label}: the final J is not a finite number (floating-point overflow); "
                "lower --lr or scale the rewards down"
            )
    if all((curve.stopped_r >= 0).all() for curve in result.curves):
        curve = result.curves[0]
        run = int(np.flatnonzero(curve.stopped_r >= 0)[0])
        update = int(curve.stopped_r[run])
        raise PgvarError(
            f"train: every run stopped early, nothing learned; {curve.label}, run {run}, update {update}: "
            + stop_cause(update, curve.reasons[run], lr)
        )
    paths = save(result, out_dir, overwrite=overwrite)

    table = Table(
        title=f"Training on {model.name!r}: lr {lr:g}, N = {n}, {n_updates} updates, "
        f"{runs} run{'s' if runs > 1 else ''}, seed {seed}"
        + (f", entropy β = {entropy:g}" if entropy else ""),
        title_justify="left",
    )
    columns = ["estimator", "initial J", "final J (mean ± 95% CI)"]
    if entropy:
        columns.append("final J + βH")
    columns += ["entropy", "updates", "episodes", "seconds"]
    for column in columns:
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for row in summary:
        low, high = row["final_J_ci95"]
        spread = f" ± {_cell((high - low) / 2, '.2g')}" if row["runs"] > 1 else " (1 run)"
        final = _cell(row["final_J"]) + (spread if math.isfinite(row["final_J"]) else " (every run stopped)")
        cells = [row["estimator"], _cell(row["initial_J"]), final]
        if entropy:
            cells.append(_cell(row["final_objective"]))
        cells += [
            _cell(row["final_policy_entropy"], ".3g"),
            str(row["updates"]),
            "—" if row["spec"] == "exact" else f"{row['episodes']:,}",
            f"{row['seconds']:.1f}",
        ]
        table.add_row(*cells)
    stdout.print(table)
    stdout.print(
        "J = expected discounted return (exact) at the final policy; ± = half-width of the 95% t-interval "
        "over runs; entropy = mean policy entropy per decision (nats); the exact-gradient reference takes "
        "as many steps with the same lr.",
        highlight=False,
    )
    for curve in result.curves:
        stopped = np.flatnonzero(curve.stopped_r >= 0)
        if stopped.size:
            first = stopped[0]
            update = int(curve.stopped_r[first])
            cause = stop_cause(update, curve.reasons[first], curve.lr)
            stdout.print(
                f"[yellow]note:[/] {escape(curve.label)}: {stopped.size} of {curve.runs} runs stopped early "
                f"(run {first} at update {update}: {escape(cause)}); their later records are empty and "
                "left out of the means",
                highlight=False,
            )
    stdout.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)


# -- neural policies on Gymnasium environments ------------------------------------------------------

NETWORK_OPTION_NAMES = {
    "lr": "--lr",
    "n": "--N",
    "updates": "--updates",
    "runs": "--runs",
    "seed": "--seed",
    "optimizer": "--optimizer",
}


def train_on_env(
    env: str,
    policy: str | None,
    policy_seed: int | None,
    weights: str | None,
    optimizer: str | None,
    estimators: str,
    lr: float | None,
    n: int | None,
    episodes: int | None,
    updates: int | None,
    entropy: float,
    runs: int | None,
    seed: int,
    out: Path | None,
    overwrite: bool,
) -> None:
    """``pgvar train --env``: train a neural policy with each estimator (:mod:`pgvar.torch.training`),
    save the curves and plots, print a summary table."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pgvar.curves import check_out_dir, default_out, save_network
    from pgvar.estimators import parse_estimators
    from pgvar.mdp import REWARD_LIMIT

    try:
        from pgvar.torch.policies import make_network
        from pgvar.torch.training import (
            NetworkConfig,
            check_estimators,
            check_network_cost,
            train_networks,
            validate_network_config,
        )
    except ImportError as missing:
        raise SpecError(
            f"--env: needs the gym extra ({missing.name} is missing): pip install 'pgvar[gym]'"
        ) from None
    stdout = Console(width=None if sys.stdout.isatty() else 160)
    stderr = Console(stderr=True)
    n = 16 if n is None else n
    fields = dict(
        updates=updates_from(episodes, updates, n),
        n=n,
        lr=0.01 if lr is None else lr,
        runs=1 if runs is None else runs,
        seed=seed,
        optimizer="adam" if optimizer is None else optimizer,
    )
    config = NetworkConfig(**validate_network_config({**fields, "ema": 0.9}, NETWORK_OPTION_NAMES))
    check_number(entropy, "--entropy", low=0, high=REWARD_LIMIT)
    specs = parse_estimators(estimators, entropy=entropy, group=None)
    check_estimators(specs)
    spec, network = make_network(
        env,
        "mlp:64,64" if policy is None else policy,
        0 if policy_seed is None else policy_seed,
        weights,
        seed_option="--policy-seed",
    )
    out_dir = out if out is not None else default_out(spec.id)
    check_out_dir(out_dir, overwrite, option="--out", parents=out is None)
    check_network_cost(
        spec,
        network,
        specs,
        config,
        what=f"--updates {config.updates} x --N {config.n} x --runs {config.runs} x {len(specs)} "
        "estimator(s), up to {horizon} steps an episode",
    )

    with Progress(
        TextColumn("training"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("updates"),
        TimeRemainingColumn(),
        console=stderr,
        transient=True,
        disable=not stderr.is_terminal,
    ) as bar:
        task = bar.add_task("updates", total=len(specs) * config.runs * config.updates)
        result = train_networks(spec, network, specs, config, progress=lambda k: bar.advance(task, k))
    paths = save_network(result, out_dir, overwrite=overwrite)

    runs_text = f"{config.runs} run{'s' if config.runs > 1 else ''}"
    table = Table(
        title=f"Training {network.spec!r} ({result.parameters:,} parameters) on {spec.text!r}: "
        f"{config.optimizer} lr {config.lr:g}, N = {config.n}, {config.updates} updates, {runs_text}, "
        f"seed {config.seed}" + (f", entropy β = {entropy:g}" if entropy else ""),
        title_justify="left",
    )
    rows = result.summary()
    share = rows[0]["share_updates"]
    columns = ["estimator", "return, start", "return, final", "B_simple, start", "B_simple, all",
               "variance, start", "variance, all", "updates", "episodes", "seconds"]  # fmt: skip
    for column in columns:
        table.add_column(column, justify="left" if column == "estimator" else "right")
    for row in rows:
        low, high = row["final_return_ci95"]
        spread = f" ± {_cell((high - low) / 2, '.3g')}" if row["runs"] > 1 else ""
        table.add_row(
            row["estimator"],
            _cell(row["start_return"]),
            _cell(row["final_return"]) + spread,
            _cell(row["start_noise_scale"], ".3g"),
            _cell(row["noise_scale"], ".3g"),
            _cell(row["start_variance_trace"], ".3g"),
            _cell(row["variance_trace"], ".3g"),
            str(row["updates"]),
            f"{row['episodes']:,}",
            f"{row['seconds']:.1f}",
        )
    stdout.print(table)
    update_word = "update" if share == 1 else f"{share} updates"
    stdout.print(
        f"return = mean undiscounted episode return of the batches, over the first (start) and the last "
        f"(final) {update_word} of each run"
        + (" (± = half-width of the 95% t-interval over runs)" if config.runs > 1 else "")
        + "; variance = trace of the covariance of the batch-mean gradient, tr Σ / N; B_simple = tr Σ / |G|² "
        "(McCandlish et al. 2018), mean tr Σ over mean unbiased |G|² over the same updates (— where the "
        "noise hides the gradient: B_simple ≫ N); all = every update.",
        highlight=False,
    )
    if config.n < 2:
        stdout.print(
            "[yellow]note:[/] N = 1: one episode per update has no variance to measure; the variance "
            "and B_simple columns need --N 2 or more",
            highlight=False,
        )
    stdout.print(f"wrote {', '.join(str(p) for p in paths)}", highlight=False, soft_wrap=True)
