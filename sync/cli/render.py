"""What the CLI shows: plans, run summaries, pair status and explanations, as tables (status data: sync.app.admin.status)."""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

from sync.app.admin.connection_test import ConnectionReport
from sync.app.admin.deep_test import FAILED, OK, DeepReport
from sync.app.admin.drain import DrainReport
from sync.app.admin.explain import Explanation
from sync.app.admin.provision import Provisioned
from sync.app.planner.reconcile import REPAIR_KINDS, ReconcileFindings
from sync.app.planner.run import RunResult
from sync.cli.console import table
from sync.contract.ops import OpKind
from sync.contract.pairs import TenantPair
from sync.contract.vocabulary import PAIR_REPLACED, ObjectKind
from sync.core.group_scope import GROUP_SKIP_REASONS, group_kind
from sync.core.plan import Plan
from sync.core.scope import SKIP_REASONS
from sync.state.queues import PEEK_LIMIT, Waiting

SAMPLE_ROWS = 20


def pairs_table(pairs: Sequence[TenantPair]) -> None:
    if not pairs:
        print("no pairs yet: add one with python -m sync pairs add FILE")
        return
    table(
        ["pair", "enabled", "source", "target", "deletion"],
        [
            [p.id, p.enabled, f"{p.source.name} ({p.source.tenant_id})", p.target.organization, p.deletion.mode]
            for p in pairs
        ],
    )


def void_messages(pair_id: str, seen: Sequence[tuple[str, Waiting]]) -> None:
    """What `pairs remove` made void: the pair's messages at the front of each queue (a peek, so a bound)."""
    total = sum(waiting.messages for _, waiting in seen)
    bounded = not all(waiting.complete for _, waiting in seen)
    where = ", ".join(f"{waiting.messages} in {name}" for name, waiting in seen)
    print(f"{'at least ' if bounded else ''}{total} queued message(s) of pair {pair_id} are now void ({where}): the "
          f"worker and the planner discard them, never apply them, even to a pair added again with this id "
          f"(status counts them as {PAIR_REPLACED}).")
    if bounded:
        print(f"(counted among the first {PEEK_LIMIT} messages of each queue; more may wait behind them)")


def plan_json(result: RunResult) -> dict[str, Any]:
    plan = result.plan
    assert plan is not None
    groups = result.groups_plan
    body: dict[str, Any] = {
        "pair": plan.pair_id,
        "full": plan.full,
        "counts": plan.counts(),
        "warnings": dict(plan.warnings),
        "unsafe": result.quarantine_reason or None,
        "graph_requests": result.run.graph_requests,
        "ops": _ops_json(plan),
        "skipped": [{"source_id": s.source_id, "name": s.name, "reason": s.reason} for s in plan.skips],
    }
    if groups is not None:  # pairs whose objects include groups (or that still have group contacts)
        body["groups"] = {"full": groups.full, "counts": {k.removeprefix("groups_"): n for k, n in groups.counts().items()},
                          "ops": _ops_json(groups),
                          "skipped": [{"source_id": s.source_id, "name": s.name, "reason": s.reason} for s in groups.skips]}
    return body


def _ops_json(plan: Plan) -> list[dict[str, Any]]:
    return [{"kind": op.kind.value, "source_id": op.source_id, "reason": op.reason, "contact": op.contact}
            for op in plan.ops]


def plan_tables(result: RunResult) -> None:
    plan = result.plan
    assert plan is not None
    round_kind = "full round (every user)" if plan.full else "changes since the last run"
    print(f"Plan for pair {plan.pair_id}: {round_kind}; dry run, nothing was written.\n")
    rows: list[list[object]] = [[kind.value, plan.count(kind)] for kind in OpKind]
    rows.append(["unchanged", plan.unchanged])
    rows += [[f"kept ({status}, unchanged since it failed)", n] for status, n in sorted(plan.kept.items())]
    rows += [[f"skipped: {reason}", n] for reason, n in sorted(plan.skipped_by_reason.items())]
    table(["what", "users"], rows)
    if plan.ops:
        print()
        table(
            ["op", "source id", "display name", "reason"],
            [
                [op.kind.value, op.source_id, (op.contact or {}).get("DisplayName", ""), op.reason]
                for op in plan.ops[:SAMPLE_ROWS]
            ],
        )
        if len(plan.ops) > SAMPLE_ROWS:
            print(f"... and {len(plan.ops) - SAMPLE_ROWS} more (use --json for all)")
    if plan.skips:
        print("\nSkip reasons:")
        for reason in sorted(plan.skipped_by_reason):
            print(f"  {reason}: {SKIP_REASONS.get(reason, reason)}")
    for warning, count in sorted(plan.warnings.items()):
        print(f"warning: {warning} for {count} user(s)")
    if result.groups_plan is not None:
        _group_plan_table(result.groups_plan)
    if result.quarantine_reason:
        print(f"\nSAFETY GATE: {result.quarantine_reason}. A run would quarantine the pair instead of deleting.")


def _group_plan_table(plan: Plan) -> None:
    print(f"\nGroups: {'full round (every group)' if plan.full else 'changes since the last run'}\n")
    rows: list[list[object]] = [[kind.value, plan.count(kind)] for kind in OpKind]
    rows.append(["unchanged", plan.unchanged])
    rows += [[f"kept ({status}, unchanged since it failed)", n] for status, n in sorted(plan.kept.items())]
    rows += [[f"skipped: {reason}", n] for reason, n in sorted(plan.skipped_by_reason.items())]
    table(["what", "groups"], rows)
    if plan.ops:
        print()
        table(["op", "group id", "display name", "reason"],
              [[op.kind.value, op.source_id, (op.contact or {}).get("DisplayName", ""), op.reason]
               for op in plan.ops[:SAMPLE_ROWS]])
        if len(plan.ops) > SAMPLE_ROWS:
            print(f"... and {len(plan.ops) - SAMPLE_ROWS} more (use --json for all)")
    for reason in sorted(plan.skipped_by_reason):
        print(f"  {reason}: {GROUP_SKIP_REASONS.get(reason, reason)}")


def run_summary(result: RunResult, drained: DrainReport) -> None:
    plan = result.plan
    assert plan is not None
    print(f"\nRun {result.run.run_id} of pair {plan.pair_id} ({'full round' if plan.full else 'incremental'})")
    rows: list[list[object]] = [[name, n] for name, n in sorted(drained.outcomes.items())]
    rows.append(["unchanged (not queued)", plan.unchanged])
    rows += [[f"skipped: {reason}", n] for reason, n in sorted(plan.skipped_by_reason.items())]
    if drained.poisoned:
        rows.append(["poisoned (see status, then replay-poison)", drained.poisoned])
    if drained.parked:
        rows.append(["parked (the pair's credentials fail; kept untried)", drained.parked])
    groups = result.groups_plan
    if groups is not None:  # applied outcomes above count users and groups together; planned, apart
        rows += [[f"groups: {kind.value} (planned)", groups.count(kind)] for kind in OpKind if groups.count(kind)]
        rows.append(["groups: unchanged (not queued)", groups.unchanged])
        rows += [[f"groups: skipped: {reason}", n] for reason, n in sorted(groups.skipped_by_reason.items())]
    table(["outcome", "count"], rows)
    print(
        f"graph requests: {result.run.graph_requests}   planning: {result.run.seconds:.1f} s   "
        f"applying: {drained.seconds:.1f} s   retries deferred: {drained.deferred}"
    )


def waiting_note(pair_id: str, drained: DrainReport) -> None:
    """Exit code 4: what waits, for what, until when, and how it gets applied (stderr: scripts read stdout).
    Exchange is named only when Exchange made them wait (its creation quota, throttling)."""
    until = drained.waiting_until.isoformat(timespec="seconds") if drained.waiting_until else "a later moment"
    why = f" ({drained.waiting_reason})" if drained.waiting_reason else ""
    what = "wait for Exchange" if drained.waiting_for_exchange else "are not applied yet"
    print(
        f"\n{drained.waiting} operation(s) of pair {pair_id} {what}{why} until {until}. They stay queued: the "
        f"Functions worker applies them then, or run `python -m sync run --pair {pair_id}` after that time."
        + (" `python -m sync status` shows the pause." if drained.waiting_for_exchange else ""),
        file=sys.stderr,
    )


def status_tables(report: Mapping[str, Any]) -> None:
    """`status`: a row per pair (its own counts), the shared queues once, then each pair's problems and runs."""
    statuses: Sequence[dict[str, Any]] = report["pairs"]
    if not statuses:
        print("no pairs yet: add one with python -m sync pairs add FILE")
        return
    table(
        ["pair", "enabled", "last run", "outcome", "ok", "conflict", "failed", "queued", "poisoned", "quarantine"],
        [
            [
                s["pair"], s["enabled"], s["last_run"]["at"], s["last_run"]["outcome"],
                _with_groups(s, "ok"), _with_groups(s, "conflict"), _with_groups(s, "failed"),
                s["waiting"]["creates_queued"], s["waiting"]["poisoned"],
                f"{s['quarantine_kind']}: {s['quarantine_reason']}" if s["quarantine_reason"] else "",
            ]
            for s in statuses
        ],
    )
    queue_rows(report)
    notes = report.get("notifications") or {}
    print(f"change notifications: {'on, Graph posts to ' + str(notes.get('url')) if notes.get('enabled') else 'off'}"
          + (f"; {notes['rejected_unmatched']} rejected for naming no subscription of ours"
             if notes.get("rejected_unmatched") else ""))
    for s in statuses:
        for sub in s.get("subscriptions", []):
            print(
                f"  {s['pair']} / {sub['resource']}: {sub['state']}, expires {sub['expires_at'] or '-'}, "
                f"{sub['notifications_accepted']} accepted, {sub['notifications_rejected']} rejected, last "
                f"{sub['last_notification_at'] or 'never'}" + (f"; {sub['error']}" if sub["error"] else "")
            )
    for s in statuses:
        pause = s["exchange"]["creation_quota_pause"]
        if pause:
            print(
                f"\n{s['pair']}: Exchange's creation quota of {s['exchange']['organization']} was reached at "
                f"{pause['reached_at']}; {pause['creates_waiting']} create(s) wait; next attempt at "
                f"{pause['next_attempt_at']} (updates and deletes go on)"
            )
    for s in statuses:
        if s.get("overlap"):
            print(f"\n{s['pair']}: OVERLAP: {s['overlap']}")
        discarded = s.get("discarded_pair_replaced") or {}
        if any(discarded.values()):
            print(f"\n{s['pair']}: {discarded['ops']} op(s) and {discarded['requests']} planning request(s) of an "
                  f"earlier pair with this id {PAIR_REPLACED}, never applied")
        round_ = s["round_in_progress"]
        if round_:
            print(
                f"\n{s['pair']}: {'full' if round_['full'] else 'incremental'} round {round_['round_id']} in progress "
                f"since {round_['started_at']}: {round_['pages_done']} pages, {round_['users_read']} users read, "
                f"{round_['ops_queued']} ops queued; checkpoint saved {round_['checkpoint_at'] or 'not yet'}"
            )
        reconciled = s["last_reconcile"]
        if reconciled:
            repaired = ", ".join(f"{kind} {n}" for kind, n in reconciled["repaired"].items() if n) or "nothing to repair"
            print(f"\n{s['pair']}: last reconcile {reconciled['at']} (run {reconciled['run_id']}): {repaired}; "
                  f"next due {reconciled['next_due_at'] or 'not scheduled'}")
        if s.get("conflicts_note"):
            print(f"\n{s['pair']}: {s['conflicts_note']}")
        if s.get("released_contacts"):
            print(f"\n{s['pair']}: released contacts (an admin's own; python -m sync handback gives one back)")
            table(["source id", "contact", "address", "since"], [
                [r["source_id"], r["name"], r["address"], r["at"]] for r in s["released_contacts"][:SAMPLE_ROWS]
            ])
        if s["problems"]:
            print(f"\n{s['pair']}: contacts that need attention")
            table(["source id", "status", "last op", "error"], [
                [p["source_id"], p["status"], p["last_op"], p["error"]] for p in s["problems"][:SAMPLE_ROWS]
            ])
        if s["recent_runs"]:
            print(f"\n{s['pair']}: recent runs")
            table(["started", "trigger", "outcome", "full", "seconds", "create", "update", "delete", "error"], [
                [r["started"], r["trigger"], r["outcome"], r["full"], r["seconds"], r["counts"].get("create", 0),
                 r["counts"].get("update", 0), r["counts"].get("delete", 0), r["error"] or ""]
                for r in s["recent_runs"]
            ])


QUEUE_ROLES = {  # what the messages in each queue are, in the words of `status`
    "ops": "ops waiting for the worker",
    "poison": "ops that failed every delivery",
    "poison_poison": "poisoned ops the poison trigger failed on",
    "failed": "ops kept for replay-poison",
    "parked": "ops of pairs quarantined for credentials",
    "pair_runs": "planning requests waiting",
    "pair_runs_poison": "planning requests that failed every time",
    "pair_runs_poison_poison": "(no trigger fills it)",
}


def queue_rows(report: Mapping[str, Any]) -> None:
    """Every queue once, for all pairs: its name, its messages and what they are."""
    names = report.get("queue_names") or {}
    print()
    table(["queue (all pairs)", "messages", "what they are"],
          [[names.get(role, role), count, QUEUE_ROLES.get(role, "")] for role, count in report["queues"].items()])


def _with_groups(status: Mapping[str, Any], word: str) -> object:
    """A status column: the users' count, and the groups' beside it when the pair has group contacts."""
    users = status["contacts"].get(word, 0)
    groups = status.get("group_contacts")
    return users if groups is None else f"{users} + {groups.get(word, 0)} groups"


def explanation_text(explanation: Explanation) -> None:
    user = explanation.user
    print(f"pair {explanation.pair_id}, user {explanation.key!r}")
    if explanation.found and explanation.kind is ObjectKind.GROUP:
        print(f"  source group: {user.get('displayName', '')} <{user.get('mail') or 'no mail'}> "
              f"(id {user.get('id')}, {group_kind(user)})")
        scope = "in scope" if explanation.in_scope else f"out of scope: {explanation.reason}"
        print(f"  scope       : {scope}" + (f" ({explanation.rule})" if explanation.rule else ""))
    elif explanation.found:
        enabled = "enabled" if user.get("accountEnabled") is not False else "disabled"
        print(f"  source user : {user.get('displayName', '')} <{user.get('mail') or 'no mail'}> "
              f"(id {user.get('id')}, {user.get('userType') or 'Member'}, {enabled})")
        scope = "in scope" if explanation.in_scope else f"out of scope: {explanation.reason}"
        print(f"  scope       : {scope}" + (f" ({explanation.rule})" if explanation.rule else ""))
    else:
        print("  source user : not found in the source tenant")
    state = explanation.state
    print(f"  state       : {state['status']}" + (f", contact {state['contact_guid']}" if state["contact_guid"] else "")
          + (f", last op {state['last_op']} in run {state['last_run']}" if state["last_op"] else ""))
    if state["last_error"]:
        print(f"  last error  : {state['last_error']}")
    print(f"  verdict     : {explanation.verdict}")
    for warning in explanation.warnings:
        print(f"  warning     : {warning}")
    if explanation.desired:
        print()
        table(["contact parameter", "desired value"], [[k, v] for k, v in explanation.desired.items()])


def connection_report(report: ConnectionReport) -> None:
    """`pairs test`: one line per check; a failed one with its cause and fix."""
    print(f"Connection test of pair {report.pair_id} ({report.seconds:.1f} s)")
    table(["side", "check", "result", "details"], [
        [check.side, check.name, "ok" if check.ok else "FAILED", check.detail if check.ok else check.cause]
        for check in report.checks
    ])
    for check in report.failures:
        print(f"\n{check.side} {check.name}: {check.cause}" + (f" ({check.code})" if check.code else ""))
        print(f"  fix: {check.fix}")
    print("\nall checks passed" if report.ok else f"\n{len(report.failures)} check(s) failed")


DEEP_WIDTHS = (33, 18, 20)  # assumption, assumed, seen: with "ok" and the gaps, 80 columns


def deep_report(report: DeepReport) -> None:
    """`pairs test --deep`: one row per assumption (assumed / seen / ok), side by side; a failed one in full below."""
    marks = {OK: "yes", FAILED: "NO"}
    for side in dict.fromkeys(row.side for row in report.rows):
        print(f"\n{side}: assumptions")
        table(["assumption", "assumed", "seen", "ok"], [
            [*(_clip(text, width) for text, width in zip((row.name, row.assumed, row.seen), DEEP_WIDTHS, strict=True)),
             marks.get(row.status, "?")]
            for row in report.rows if row.side == side
        ])
    for row in report.failures:
        print(f"\n{row.side} {row.name}: assumed {row.assumed}, seen {row.seen}" + (f" ({row.detail})" if row.detail else ""))
    unverified = sum(1 for row in report.rows if row.status not in marks)
    note = f" ({unverified} not verifiable here: ?)" if unverified else ""
    print(f"\nevery assumption holds{note}" if not report.failures else f"\n{len(report.failures)} assumption(s) failed")


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def provisioned(done: Provisioned) -> None:
    """`run --user`: each step, then the result."""
    print(f"pair {done.pair_id}, user {done.key!r} (run {done.run_id})")
    for step in done.steps:
        print(f"  {step.name:<9}: {step.detail}")
        if step.name == "contact":
            for name, value in step.data.get("contact", {}).items():
                print(f"      {name:<32} {value}")
    print(f"result: {done.result}")


def reconcile_json(pair_id: str, findings: ReconcileFindings | None, result: RunResult | None) -> dict[str, Any]:
    """`reconcile --json`: what the target showed, and (not a dry run) the run with its counts per repair kind."""
    body: dict[str, Any] = {"pair": pair_id, "dry_run": result is None}
    if findings is not None:
        comparison = findings.comparison
        body["found"] = {
            "contacts_listed": comparison.listed,
            "drifted": {source_id: sorted(values) for source_id, values in sorted(comparison.drifted.items())},
            "deleted_by_hand": sorted(findings.deleted_by_hand),
            "released": dict(sorted(findings.released.items())),
            "rows_rebuilt": sorted([*comparison.rebuilt, *comparison.relinked]),
            "duplicates": sorted(r.guid for r in comparison.duplicates),
        }
    if result is not None:
        run = result.run
        body["run"] = {"run_id": run.run_id, "outcome": run.outcome, "counts": run.counts, "error": run.error or None}
    return body


def reconcile_text(pair_id: str, findings: ReconcileFindings | None, result: RunResult | None, *, dry_run: bool) -> None:
    if findings is None:
        print(f"pair {pair_id}: the reconcile did not run: {result.run.outcome if result else 'no result'}")
        return
    lines = findings.lines()
    verb = "would repair" if dry_run else "repaired"
    print(f"pair {pair_id}: {findings.comparison.listed} contacts with the pair's anchor in the target; "
          f"{len(lines)} finding(s) ctcs {verb} in the state")
    for line in lines[:SAMPLE_ROWS]:
        print(f"  {line}")
    if len(lines) > SAMPLE_ROWS:
        print(f"  ... and {len(lines) - SAMPLE_ROWS} more (--json lists them all)")
    if dry_run:
        print("orphans (contacts whose user is gone or out of scope) are counted by the full round a reconcile plans; "
              "python -m sync plan --pair ID --full previews it")
        return
    assert result is not None
    counts = result.run.counts
    table(["repair", "count"], [[kind, counts.get(kind, 0)] for kind in REPAIR_KINDS])
