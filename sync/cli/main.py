"""`python -m sync`: manage pairs, preview and run syncs, read status. Same functions as the Functions triggers.

Exit codes: 0 done, 1 some operations failed, 2 bad input or usage (also: a failed connection test, a pair
quarantined for its credentials), 3 stopped by the safety gate, 4 some operations wait for Exchange (creation quota,
throttling) and will be applied later, 130 interrupted (Ctrl-C). An ordinary mistake (a bad setting, unreachable
storage, a closed pipe) is one line on
stderr and its exit code, never a traceback; `-vv` shows DEBUG logs.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path

from azure.core.exceptions import AzureError

from sync.app.admin.connection_test import ConnectionReport, check_connection
from sync.app.admin.deep_test import deep_check
from sync.app.admin.drain import drain
from sync.app.admin.explain import explain
from sync.app.admin.provision import Result, provision_user
from sync.app.admin.retest import lift_credentials_quarantine
from sync.app.admin.status import status_report
from sync.app.planner.reconcile import preview_reconcile, reconcile_pair
from sync.app.planner.rounds import Invocation, RoundProgress
from sync.app.planner.run import preview, record_applied, run_pair
from sync.app.planner.subscriptions import remove_pair
from sync.app.wiring.runtime import Runtime
from sync.app.worker.delivery import replay_poison
from sync.cli import ownership, render
from sync.cli.console import Progress, Ticker
from sync.contract.ops import OpKind
from sync.contract.pairs import TenantPair, load_pair_file
from sync.contract.vocabulary import ContactStatus, RunOutcome, RunTrigger
from sync.errors import ConfigError, CtcsError, PairNotFound, PairValidationError
from sync.identity.rooms import pair_problems
from sync.settings import load_local_settings
from sync.state.queues import waiting_ops, waiting_requests

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_UNSAFE, EXIT_WAITING = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

Command = Callable[[argparse.Namespace, Callable[[], Runtime]], int]


def _pairs_add(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    pair = load_pair_file(args.file)
    if problems := pair_problems(pair):  # secrets and clouds a pair row may not reach (sync.identity.rooms)
        raise PairValidationError(problems, where=f"pair file {args.file}")
    rt = runtime()
    if not args.no_test:
        report = check_connection(rt, pair)
        render.connection_report(report)
        if not report.ok:
            print(f"pair {pair.id} not stored: fix the failed checks and add it again, or add it with --no-test",
                  file=sys.stderr)
            return EXIT_USAGE
    replaced = rt.stores.pairs.add(pair, replace=args.replace)
    print(f"{'replaced' if replaced else 'added'} pair {pair.id}: {pair.source.name} -> {pair.target.organization}")
    if not args.no_test and rt.stores.pair_state.get(pair.id).credentials_quarantined:
        _lift(rt, pair.id)
    return EXIT_OK


def _lift(rt: Runtime, pair_id: str) -> None:
    moved = lift_credentials_quarantine(rt, pair_id)
    print(f"pair {pair_id}: credentials quarantine lifted; {moved} waiting operation(s) back on the queue")


def _pairs_test(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    if args.record and not args.deep:
        raise ConfigError("--record needs --deep: the record is what the deep probes saw")
    if args.deep:
        return _pairs_test_deep(args, runtime())
    rt = runtime()
    report: ConnectionReport = check_connection(rt, args.id)
    lifted = report.credentials_ok and rt.stores.pair_state.get(args.id).credentials_quarantined
    if args.json:
        print(json.dumps({**report.as_json(), "quarantine_lifted": bool(lifted)}, indent=2))
        if lifted:
            lift_credentials_quarantine(rt, args.id)
    else:
        render.connection_report(report)
        if lifted:
            _lift(rt, args.id)
    return EXIT_OK if report.ok else EXIT_USAGE


def _pairs_test_deep(args: argparse.Namespace, rt: Runtime) -> int:
    deep = deep_check(rt, args.id)
    lifted = deep.connection.credentials_ok and rt.stores.pair_state.get(args.id).credentials_quarantined
    if args.json:
        print(json.dumps({**deep.as_json(), "quarantine_lifted": bool(lifted)}, indent=2))
    else:
        render.connection_report(deep.connection)
        render.deep_report(deep)
    if lifted:
        if args.json:
            lift_credentials_quarantine(rt, args.id)
        else:
            _lift(rt, args.id)
    if args.record:
        args.record.write_text(json.dumps(deep.record(), indent=2) + "\n", encoding="utf-8")
        if not args.json:
            print(f"record written to {args.record} (redacted: no names, addresses, ids or tokens)")
    return EXIT_OK if deep.ok else EXIT_USAGE


def _pairs_list(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    pairs = runtime().stores.pairs.list()
    if args.json:
        print(json.dumps([json.loads(pair.to_json()) for pair in pairs], indent=2))
    else:
        render.pairs_table(pairs)
    return EXIT_OK


def _pairs_show(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    pair = runtime().stores.pairs.get(args.id)
    print(json.dumps(json.loads(pair.to_json()), indent=2))
    return EXIT_OK


def _pairs_enable(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    pair = runtime().stores.pairs.set_enabled(args.id, args.enabled)
    print(f"pair {pair.id} {'enabled' if pair.enabled else 'disabled'}")
    if not pair.enabled:
        _drop_subscriptions(runtime(), pair)
    return EXIT_OK


def _drop_subscriptions(rt: Runtime, pair: TenantPair) -> None:
    """Stop Graph's change notifications for the pair now (the timer would, within minutes)."""
    try:
        dropped = remove_pair(rt, pair)
    except CtcsError as error:
        print(f"its change-notification subscriptions stay until they expire: {error}", file=sys.stderr)
        return
    if dropped:
        print(f"deleted its change-notification subscription(s) on {', '.join(m.resource for m in dropped)}")


def _pairs_remove(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    stores = runtime().stores
    _drop_subscriptions(runtime(), stores.pairs.get(args.id))
    void = [(queue.name, waiting_ops(queue, args.id)) for queue in (stores.ops, stores.parked)]
    void.append((stores.pair_runs.name, waiting_requests(stores.pair_runs, args.id)))
    stores.pairs.remove(args.id)
    stores.pair_state.forget(args.id)
    stores.round_pages.forget(args.id)
    rows = stores.contacts.forget_pair(args.id)
    stores.runs.forget_pair(args.id)
    stores.groups.forget(args.id)
    print(
        f"removed pair {args.id} and its state ({rows} contact rows). Its contacts stay in the target and keep "
        "their anchor: adding the pair again adopts them."
    )
    render.void_messages(args.id, void)
    return EXIT_OK


def _plan(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    result = preview(runtime(), args.pair, full=args.full)
    assert result.plan is not None
    if args.json:
        print(json.dumps(render.plan_json(result), indent=2))
    else:
        render.plan_tables(result)
    return EXIT_UNSAFE if result.quarantine_reason else EXIT_OK


def _secrets_missing_here(rt: Runtime, pair_id: str) -> bool:
    """True (and why, on stderr) when this machine cannot read the pair's secrets: the command stops here, and the
    pair is not quarantined for the deployment (a secret missing on an admin's laptop is that machine's problem)."""
    problems = rt.unreadable_secrets(rt.stores.pairs.get(pair_id))
    for problem in problems:
        print(f"error: {problem}", file=sys.stderr)
    if problems:
        print(f"pair {pair_id}: nothing was run: this machine cannot read the pair's secrets (set them here and run "
              "again); the pair is not quarantined, the deployment reads its own", file=sys.stderr)
    return bool(problems)


def _run(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    if _secrets_missing_here(runtime(), args.pair):
        return EXIT_USAGE
    if args.user is not None:
        return _run_user(args, runtime)
    if args.json:
        print("error: --json goes with --user (one user's steps); a pair's run prints a summary", file=sys.stderr)
        return EXIT_USAGE
    rt = runtime()
    planning = Ticker("planning")

    def on_page(progress: RoundProgress) -> None:
        planning.update(f"{progress.pages} pages, {progress.users:,} users read, {progress.queued:,} ops queued",
                        force=progress.finished)

    result = run_pair(rt, args.pair, trigger=RunTrigger.CLI, full=args.full, allow_deletes=args.allow_deletes,
                      invocation=Invocation(on_page=on_page))
    planning.finish()
    if result.outcome is RunOutcome.QUARANTINED and rt.stores.pair_state.get(args.pair).credentials_quarantined:
        print(f"pair {args.pair} is quarantined for its credentials: {result.run.error}", file=sys.stderr)
        print(f"fix them, then python -m sync pairs test {args.pair} (the timer also tests again on its own)",
              file=sys.stderr)
        return EXIT_USAGE
    if result.outcome is RunOutcome.QUARANTINED:
        print(f"pair {args.pair} is quarantined: {result.run.error}", file=sys.stderr)
        print("review the plan (python -m sync plan), then release it with --allow-deletes", file=sys.stderr)
        return EXIT_UNSAFE
    if result.outcome in (RunOutcome.FAILED, RunOutcome.LEASE_HELD):
        print(f"pair {args.pair}: {result.outcome}: {result.run.error}", file=sys.stderr)
        return EXIT_FAILED
    assert result.plan is not None
    # Creates an earlier run left waiting (for the creation quota) are applied too once Exchange lets them.
    queued = rt.stores.contacts.status_counts(args.pair).get(ContactStatus.QUEUED, 0)
    progress = Progress("applying", sum(1 for op in result.plan.ops if op.kind is not OpKind.CREATE) + queued)
    drained = drain(
        rt,
        pair_id=args.pair,  # this pair's ops only: another pair's stay on the queue for their own run or the worker
        concurrency=rt.tuning.worker_concurrency,
        on_done=lambda outcome: progress.advance(detail=outcome),
    )
    progress.finish()
    record_applied(rt, result, {**drained.outcomes, "poisoned": drained.poisoned, "waiting": drained.waiting,
                             "parked": drained.parked})
    render.run_summary(result, drained)
    if drained.parked:
        reason = rt.stores.pair_state.get(args.pair).quarantine_reason
        print(f"pair {args.pair} is now quarantined for its credentials: {reason}", file=sys.stderr)
        print(f"its {drained.parked} remaining operation(s) wait untried; fix the credentials, then "
              f"python -m sync pairs test {args.pair}", file=sys.stderr)
        return EXIT_USAGE
    if drained.failed:
        return EXIT_FAILED
    if drained.waiting:
        render.waiting_note(args.pair, drained)
        return EXIT_WAITING
    return EXIT_OK


def _reconcile(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    rt = runtime()
    if _secrets_missing_here(rt, args.pair):
        return EXIT_USAGE
    if args.dry_run:
        preview = preview_reconcile(rt, args.pair)
        if args.json:
            print(json.dumps(render.reconcile_json(args.pair, preview, None), indent=2))
        else:
            render.reconcile_text(args.pair, preview, None, dry_run=True)
        return EXIT_OK
    ticker = Ticker("reconciling")
    ticker.update("listing the target's contacts and comparing them with state", force=True)
    result, findings = reconcile_pair(rt, args.pair, allow_deletes=args.allow_deletes)
    ticker.finish()
    if result.outcome in (RunOutcome.FAILED, RunOutcome.LEASE_HELD):
        print(f"pair {args.pair}: {result.outcome}: {result.run.error}", file=sys.stderr)
        return EXIT_FAILED
    drained = None
    if result.outcome is not RunOutcome.QUARANTINED:
        progress = Progress("applying repairs", sum(1 for _ in result.plan.ops) if result.plan else 0)
        drained = drain(rt, pair_id=args.pair, concurrency=rt.tuning.worker_concurrency,
                        on_done=lambda outcome: progress.advance(detail=outcome))
        progress.finish()
    if args.json:
        print(json.dumps(render.reconcile_json(args.pair, findings, result), indent=2))
    else:
        render.reconcile_text(args.pair, findings, result, dry_run=False)
    if result.outcome is RunOutcome.QUARANTINED:
        print(f"pair {args.pair} is quarantined: {result.run.error}", file=sys.stderr)
        return EXIT_UNSAFE
    if drained is not None and drained.failed:
        return EXIT_FAILED
    if drained is not None and drained.waiting:
        return EXIT_WAITING
    return EXIT_OK


def _run_user(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    if args.full or args.allow_deletes:
        print("error: --user provisions one user: --full and --allow-deletes do not apply", file=sys.stderr)
        return EXIT_USAGE
    done = provision_user(runtime(), args.pair, args.user)
    if args.json:
        print(json.dumps(done.as_json(), indent=2, ensure_ascii=False, default=str))
    else:
        render.provisioned(done)
    if done.result in (Result.NOT_FOUND, Result.QUARANTINED):
        return EXIT_USAGE
    return EXIT_OK if done.ok else EXIT_FAILED


def _status(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    report = status_report(runtime(), [args.pair] if args.pair else None)
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        render.status_tables(report)
    return EXIT_OK


def _explain(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    explanation = explain(runtime(), args.pair, args.user)
    if args.json:
        print(json.dumps(asdict(explanation), indent=2, ensure_ascii=False))
    else:
        render.explanation_text(explanation)
    return EXIT_OK


def _replay(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    moved = replay_poison(runtime(), pair_id=args.pair)
    print(f"moved {moved} failed operation(s) back to the ops queue (from the -failed and -poison queues)")
    return EXIT_OK


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sync", description="Cross-Tenant Contact Sync")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="log what happens (INFO; -vv for DEBUG)")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    pairs = commands.add_parser("pairs", help="manage tenant pairs").add_subparsers(dest="pairs_command", required=True)
    add = pairs.add_parser("add", help="validate a pair file and store it")
    add.add_argument("file")
    add.add_argument("--replace", action="store_true", help="replace a pair with the same id")
    add.add_argument("--no-test", action="store_true", help="store it without testing its connections first")
    add.set_defaults(handler=_pairs_add)
    test = pairs.add_parser("test", help="test a pair's sign-ins, permissions and cheapest calls on both sides")
    test.add_argument("id")
    test.add_argument("--json", action="store_true")
    test.add_argument("--deep", action="store_true",
                      help="also probe, read-only, every assumption ctcs makes about both tenants (one row each)")
    test.add_argument("--record", metavar="FILE", type=Path,
                      help="with --deep: write a redacted record of what the tenants showed (no names, addresses, ids)")
    test.set_defaults(handler=_pairs_test)
    listing = pairs.add_parser("list", help="every pair")
    listing.add_argument("--json", action="store_true")
    listing.set_defaults(handler=_pairs_list)
    show = pairs.add_parser("show", help="one pair's definition (secret references only)")
    show.add_argument("id")
    show.set_defaults(handler=_pairs_show)
    for name, enabled in (("enable", True), ("disable", False)):
        toggle = pairs.add_parser(name, help=f"{name} a pair's timer runs")
        toggle.add_argument("id")
        toggle.set_defaults(handler=_pairs_enable, enabled=enabled)
    remove = pairs.add_parser("remove", help="remove a pair and its state (its contacts stay)")
    remove.add_argument("id")
    remove.set_defaults(handler=_pairs_remove)

    plan = commands.add_parser("plan", help="dry run: what a run would change (writes nothing)")
    plan.add_argument("--pair", required=True)
    plan.add_argument("--full", action="store_true", help="read every user instead of the changes")
    plan.add_argument("--json", action="store_true")
    plan.set_defaults(handler=_plan)

    run = commands.add_parser("run", help="plan, queue and apply in-process, with progress")
    run.add_argument("--pair", required=True)
    run.add_argument("--full", action="store_true", help="read every user and sweep contacts whose user is gone")
    run.add_argument("--allow-deletes", action="store_true", help="pass the safety gate once and lift a quarantine")
    run.add_argument("--user", help="provision one user now (object id, UPN or mail), showing each step")
    run.add_argument("--json", action="store_true", help="with --user: the steps as JSON")
    run.set_defaults(handler=_run)

    fix = commands.add_parser("reconcile", help="compare the target's contacts with state and source; repair drift")
    fix.add_argument("--pair", required=True)
    fix.add_argument("--dry-run", action="store_true", help="print what it would repair; write nothing")
    fix.add_argument("--allow-deletes", action="store_true", help="pass the safety gate once (orphans, duplicates)")
    fix.add_argument("--json", action="store_true")
    fix.set_defaults(handler=_reconcile)

    status = commands.add_parser("status", help="last runs, contact counts, quarantine, queues")
    status.add_argument("--pair")
    status.add_argument("--json", action="store_true")
    status.set_defaults(handler=_status)

    why = commands.add_parser("explain", help="why a person is or is not in the target's address list")
    why.add_argument("--pair", required=True)
    why.add_argument("user", help="object id, user principal name or mail address")
    why.add_argument("--json", action="store_true")
    why.set_defaults(handler=_explain)

    replay = commands.add_parser("replay-poison", help="put failed operations back on the queue")
    replay.add_argument("--pair")
    replay.set_defaults(handler=_replay)
    ownership.register(commands)  # adopt, handback
    return parser


def main(argv: Sequence[str] | None = None, *, runtime: Callable[[], Runtime] | None = None) -> int:
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:
        return EXIT_OK if exit_.code == 0 else EXIT_USAGE
    level = logging.WARNING if not args.verbose else logging.INFO if args.verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    cached: list[Runtime] = []

    def get_runtime() -> Runtime:
        if not cached:
            cached.append(runtime() if runtime else Runtime.from_settings())
        return cached[0]

    try:
        load_local_settings(Path("local.settings.json"))
        code: int = args.handler(args, get_runtime)
        sys.stdout.flush()  # a closed pipe shows here, inside the try, not at interpreter exit
        return code
    except (ConfigError, PairNotFound) as error:
        return _fail(f"error: {error}", EXIT_USAGE)
    except CtcsError as error:
        return _fail(f"error: {error}", EXIT_FAILED)
    except BrokenPipeError:
        # `python -m sync plan ... | head`: the reader has what it wanted. Nothing more can be written to stdout.
        _silence_stdout()
        return EXIT_OK
    except KeyboardInterrupt:
        return _fail(
            "interrupted: ops already queued stay on the queue; the worker or the next run applies them",
            EXIT_INTERRUPTED,
        )
    except AzureError as error:
        return _fail(f"error: storage or Azure service unreachable: {first_line(error)}", EXIT_FAILED)


def _fail(message: str, code: int) -> int:
    print(message, file=sys.stderr)
    return code


def _silence_stdout() -> None:
    """Point stdout at /dev/null so the interpreter's final flush does not raise BrokenPipeError again."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def first_line(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return lines[0][:300] if lines else type(error).__name__
