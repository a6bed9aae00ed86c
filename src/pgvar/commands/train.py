"""``pgvar train``: learning curves of the estimators (and of the exact gradient) on one MDP.

A thin shell over :mod:`pgvar.train` (learning) and :mod:`pgvar.curves` (files and plots): it checks
every option with :mod:`pgvar.validation` (one-line errors), shows a progress bar, saves the curves and
plots, and prints a summary table. Registered in ``pgvar.cli`` with ``app.command()(train)``.
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


def check_cost(model, config, theta_size: int, curves: int) -> None:
    """Refuse up front (:class:`~pgvar.budget.BudgetError`, one line) a training whose loop alone would
    outlast the current limits or whose records would not fit: ``curves`` runs of ``config.updates``
    updates, each a fixed cost, N episodes of sampling and an exact evaluation of the policy."""
    from pgvar import budget

    steps = model.horizon or 1  # unbounded episodes: the sampler checks its own batches
    entries = steps * model.n_states**2 * model.n_actions
    per_update = (
        UPDATE_SECONDS
        + config.n * steps / budget.MC_STEPS_PER_SECOND
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
        str,
        typer.Option(
            "--mdp", help="Built-in name (lesson, short-corridor, bandit, deceptive, ...) or a file."
        ),
    ] = "lesson",
    estimators: Annotated[
        str,
        typer.Option(
            "--estimators", "-e", help="Comma-separated specs WEIGHT+BASELINE or presets (rtg+learned, ...)."
        ),
    ] = "vanilla,rtg,base,rtg+base",
    lr: Annotated[float, typer.Option("--lr", help="Step size of the gradient ascent (> 0).")] = 0.1,
    n: Annotated[int, typer.Option("--N", help="Episodes N per update, the batch size (>= 1).")] = 1,
    episodes: Annotated[
        int | None, typer.Option("--episodes", help="Episodes per run (a multiple of --N).")
    ] = None,
    updates: Annotated[
        int | None, typer.Option("--updates", help=f"Updates per run (default {DEFAULT_UPDATES}).")
    ] = None,
    entropy: Annotated[float, typer.Option("--entropy", help="Entropy bonus coefficient (>= 0).")] = 0.0,
    baseline_lr: Annotated[
        float, typer.Option("--baseline-lr", help="Rate of the learned baseline, in (0, 1].")
    ] = 0.1,
    learned_by: Annotated[
        str, typer.Option("--learned-by", help="Learned baseline per 'state' or per 'observation'.")
    ] = "state",
    runs: Annotated[int, typer.Option("--runs", help="Independent runs (>= 1).")] = 5,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the runs' SeedSequence (>= 0).")] = 0,
    theta: Annotated[
        str, typer.Option("--theta", help="Starting logits: 'uniform', a JSON list, or a .json/.npy file.")
    ] = "uniform",
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Directory for curves.csv/.parquet, summary.json, curves.png/.svg."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace results already in --out (else refuse).")
    ] = False,
    exact_reference: Annotated[
        bool,
        typer.Option("--exact-reference/--no-exact-reference", help="Also ascend the exact gradient."),
    ] = True,
    variance_every: Annotated[
        int | None,
        typer.Option(
            "--variance-every",
            help="Record the exact variance every K updates (0: never; default: about 20 records per "
            "run for finite horizons, never for unbounded episodes, where it is slow).",
        ),
    ] = None,
) -> None:
    """Train with stochastic gradient ascent (batch of N episodes per update) for several runs; plot
    learning curves (mean and 95% band over runs) beside ascent on the exact gradient."""
    import numpy as np
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from pgvar.curves import check_out_dir, default_out, save
    from pgvar.estimators import parse_estimators
    from pgvar.mdp import REWARD_LIMIT
    from pgvar.mdpfile import resolve_mdp
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
    specs = parse_estimators(estimators, entropy=entropy)
    if variance_every is None:
        fields["variance_every"] = max(1, n_updates // AUTO_VARIANCE_RECORDS) if model.horizon else 0
    config = TrainConfig(**fields)
    out_dir = out if out is not None else default_out(mdp)
    # a folder the user names is created, not its parents; the default runs/train-... may create runs/
    check_out_dir(out_dir, overwrite, option="--out", parents=out is None)
    check_start(model, logits, entropy, theta)
    check_cost(model, config, logits.size, len(specs) * runs + (1 if exact_reference else 0))

    total = (len(specs) * runs + (1 if exact_reference else 0)) * n_updates
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
