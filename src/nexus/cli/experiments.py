"""``nexus experiment evaluate-policy``: score a policy on logged decisions before it gets
traffic (off-policy evaluation: IPS, self-normalised IPS and doubly robust).

Logs come from the workspace's event store (every ``$decision`` that ``decide`` logged,
rewarded by the goal event within its window) or from a JSON-lines file of
``{"context": [...], "arm": "calm", "reward": 1, "propensity": 0.4}``. The candidate is
a fresh policy of a kind (trained on the first ``--train-share`` of the logs, scored on
the rest, so it is never scored on what it learned from), the workspace's saved policy, a
saved policy state file, or one fixed arm.
"""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer

from nexus.cli.output import console, fail, print_json, print_table
from nexus.core.settings import Settings
from nexus.events import service as events
from nexus.experiments import analysis, bandits, ope
from nexus.experiments import service as experiments
from nexus.experiments.decisions import ADAPTATION_POLICY
from nexus.storage import migrate
from nexus.storage.database import Database
from nexus.workspaces import service as workspaces

experiment_app = typer.Typer(
    help="Experiments and policies: score a policy offline.", no_args_is_help=True
)
KINDS = ("linear_thompson", "linucb", "thompson", "uniform")


def _read_logs(path: Path) -> list[ope.LoggedDecision]:
    logs: list[ope.LoggedDecision] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            context = row.get("context")
            logs.append(
                ope.LoggedDecision(
                    context=None if context is None else np.asarray(context, dtype=np.float64),
                    arm=str(row["arm"]),
                    reward=float(row["reward"]),
                    propensity=float(row["propensity"]),
                )
            )
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
            fail(f"{path}:{number}: not a logged decision ({exc.__class__.__name__}: {exc})", 2)
    return logs


def _store_logs(
    settings: Settings, workspace: str | None, days: float
) -> tuple[list[ope.LoggedDecision], dict[str, Any] | None]:
    database_url = settings.resolved_database_url
    if settings.is_embedded_database:
        migrate.upgrade(database_url)
    database = Database(database_url)
    try:
        with database.session() as db:
            if workspace is None:
                page = workspaces.list_workspaces(db, limit=2)
                if len(page.items) != 1:
                    fail(
                        "there is more than one workspace (or none): choose one with --workspace", 2
                    )
                workspace = page.items[0].id
            saved = experiments.load_bandit_state(
                db, workspace_id=workspace, name=ADAPTATION_POLICY
            )
    finally:
        database.dispose()
    end = datetime.now(UTC)
    start = end - timedelta(days=days)
    with events.store_for_cli(settings) as store:
        logs = analysis.logged_decisions(
            store,
            workspace_id=workspace,
            start_us=int(start.timestamp() * 1e6),
            end_us=int(end.timestamp() * 1e6),
        )
    return logs, saved


def _candidate(
    policy: str,
    logs: list[ope.LoggedDecision],
    *,
    saved: dict[str, Any] | None,
    train_share: float,
    seed: int,
) -> tuple[ope.TargetPolicy, list[ope.LoggedDecision], str]:
    """The policy to score, the logs to score it on, and a description."""
    arms = sorted({log.arm for log in logs})
    if policy.startswith("arm:"):
        arm = policy.removeprefix("arm:")
        if arm not in arms:
            fail(f"arm {arm!r} never appears in the logs (arms: {', '.join(arms)})", 2)
        return (lambda _context: {a: float(a == arm) for a in arms}), logs, f"always {arm}"
    if policy == "saved":
        if saved is None:
            fail("this workspace has no saved adaptation policy yet", 1)
        assert saved is not None
        return bandits.policy_from_state(saved["policy"]), logs, "the workspace's saved policy"
    path = Path(policy)
    if policy not in KINDS and path.suffix == ".json":
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            # A policy's own state, or the {"policy", "features"} the server saves.
            state = state.get("policy", state) if isinstance(state, dict) else state
            return bandits.policy_from_state(state), logs, f"policy state {path}"
        except (OSError, json.JSONDecodeError, ValueError, KeyError, TypeError) as exc:
            fail(f"cannot load a policy state from {path}: {exc}", 2)
    if policy not in KINDS:
        fail(
            f"unknown policy {policy!r}: use one of {', '.join(KINDS)}, saved, arm:<name> "
            "or a .json policy state",
            2,
        )
    return _fresh(policy, logs, arms, train_share=train_share, seed=seed)


def _fresh(
    policy: str, logs: list[ope.LoggedDecision], arms: list[str], *, train_share: float, seed: int
) -> tuple[ope.TargetPolicy, list[ope.LoggedDecision], str]:
    """A new policy of kind ``policy``, trained on the first ``train_share`` of the logs."""
    split = int(len(logs) * train_share)
    train, test = logs[:split], logs[split:]
    width = next((log.context.size for log in logs if log.context is not None), 0)
    candidate: bandits.Policy
    if policy == "uniform":
        candidate = bandits.UniformPolicy(arms, seed=seed)
    elif policy == "thompson":
        candidate = bandits.ThompsonBernoulli(arms, seed=seed)
    elif width == 0:
        fail(f"{policy} needs logged contexts, and these logs have none", 1)
    elif policy == "linucb":
        candidate = bandits.LinUCB(arms, width, seed=seed)
    else:
        candidate = bandits.LinearThompson(arms, width, seed=seed)
    for log in train:
        context = log.context if candidate.n_features is not None else None
        if context is not None and context.size != width:
            continue
        candidate.update(context, log.arm, log.reward)
    return candidate, test, f"{policy} trained on {len(train)} logs, scored on {len(test)}"


def _number(value: float) -> float | None:
    return None if not math.isfinite(value) else round(value, 6)


@experiment_app.command("evaluate-policy")
def evaluate_policy(
    policy: Annotated[
        str,
        typer.Option(
            help="linear_thompson | linucb | thompson | uniform (trained on the first part "
            "of the logs), saved (the workspace's policy), arm:<name>, or a .json state."
        ),
    ] = "linear_thompson",
    logs_file: Annotated[
        Path | None,
        typer.Option("--logs", help="JSON lines of logged decisions instead of the store."),
    ] = None,
    workspace: Annotated[
        str | None, typer.Option("--workspace", "-w", help="Workspace id (default: the only one).")
    ] = None,
    days: Annotated[float, typer.Option(min=0.001, help="Logs of the last N days.")] = 30.0,
    train_share: Annotated[
        float, typer.Option(min=0.0, max=0.95, help="Share of logs a fresh policy learns from.")
    ] = 0.5,
    alpha: Annotated[float, typer.Option(min=0.001, max=0.5, help="1 - confidence.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of a fresh policy.")] = 0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")] = False,
) -> None:
    """Estimate what a policy would earn, from decisions logged under another one."""
    saved: dict[str, Any] | None = None
    if logs_file is not None:
        logs = _read_logs(logs_file)
    else:
        logs, saved = _store_logs(Settings(), workspace, days)
    if len(logs) < 2:
        fail(f"{len(logs)} logged decisions with known rewards; at least 2 are needed", 1)
    target, scored, description = _candidate(
        policy, logs, saved=saved, train_share=train_share, seed=seed
    )
    try:
        values = ope.evaluate(scored, target, alpha=alpha)
    except ValueError as exc:
        fail(f"cannot score the policy on these logs: {exc}", 1)
    observed = float(np.mean([log.reward for log in scored])) if scored else math.nan
    rows = [
        {
            "estimator": v.estimator,
            "value": _number(v.value),
            "ci_low": _number(v.ci_low),
            "ci_high": _number(v.ci_high),
            "n": v.n,
            "effective_sample_size": _number(v.effective_sample_size),
            "error": v.error,
        }
        for v in values
    ]
    if as_json:
        print_json(
            {"policy": description, "logged_mean_reward": _number(observed), "estimates": rows}
        )
        return
    console.print(f"Policy: {description}")
    console.print(f"Logging policy's mean reward on these logs: {observed:.4f}")
    print_table(
        f"Estimated value ({(1 - alpha) * 100:g}% confidence)",
        ["estimator", "value", "interval", "n", "effective n", "error"],
        [
            [
                r["estimator"],
                "-" if r["value"] is None else f"{r['value']:.4f}",
                "-"
                if r["ci_low"] is None or r["ci_high"] is None
                else f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]",
                r["n"],
                "-" if r["effective_sample_size"] is None else f"{r['effective_sample_size']:.0f}",
                r["error"] or "",
            ]
            for r in rows
        ],
    )
