"""`python -m sync adopt` and `python -m sync handback`: who owns a contact, as an admin decides it.

Exit codes as every command (sync.cli.main): 0 done (a dry run too), 2 bad input (no such pair, nothing released
under that name, an anchor attribute another tool holds).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from typing import Any

from sync.app.admin.adopt import AdoptReport, adopt_contacts
from sync.app.admin.handback import hand_back
from sync.app.wiring.runtime import Runtime
from sync.cli.console import table

EXIT_OK = 0  # as sync.cli.main


def register(commands: Any) -> None:
    """Add both commands to `python -m sync`'s subcommands."""
    adopt = commands.add_parser("adopt", help="onboarding: take over the target's existing contacts of in-scope users")
    adopt.add_argument("--pair", required=True)
    adopt.add_argument("--dry-run", action="store_true", help="list what it would take; write nothing")
    adopt.add_argument("--json", action="store_true")
    adopt.set_defaults(handler=_adopt)
    back = commands.add_parser("handback", help="give a released contact back to ctcs (it is managed again)")
    back.add_argument("--pair", required=True)
    back.add_argument("who", help="the source user's object id, or the released contact's address")
    back.set_defaults(handler=_handback)


def _adopt(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    report = adopt_contacts(runtime(), args.pair, dry_run=args.dry_run)
    if args.json:
        print(json.dumps(report.as_json(), indent=2, ensure_ascii=False))
    else:
        _adopt_table(report)
    return EXIT_OK


def _adopt_table(report: AdoptReport) -> None:
    rows = [(c.source_id, c.user, c.address, c.contact, "skip: " + c.skipped if c.skipped else "adopt")
            for c in report.candidates]
    if rows:
        table(["source id", "user", "address", "target contact", "action"], rows)
    taken = len(report.taken)
    if report.dry_run:
        print(f"dry run: {taken} contact(s) would be adopted of {report.users_read} source user(s) read; nothing written")
    else:
        print(f"adopted {report.adopted} contact(s); the next run (a full round) sets their values from the source")


def _handback(args: argparse.Namespace, runtime: Callable[[], Runtime]) -> int:
    done = hand_back(runtime(), args.pair, args.who)
    where = f"contact {done.name!r}" if done.guid else "its contact is gone; the next run makes it again"
    print(f"handed back {done.source_id} ({where}): the next run (a full round) manages it again")
    return EXIT_OK
