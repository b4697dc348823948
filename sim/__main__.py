"""`python -m sim serve`: run the simulated clouds until Ctrl-C. Subcommands are registered in `build_parser`
so others (the `demo`) can be added next to `serve`."""

from __future__ import annotations

import argparse
import json
import threading
import uuid

from sim.cloud import SimCloud
from sim.demo import demo
from sim.generator import generate_users


def serve(args: argparse.Namespace) -> int:
    with SimCloud.start() as cloud:
        source = cloud.add_tenant(domain="contoso.onmicrosoft.com", name="Contoso")
        target = cloud.add_tenant(domain="fabrikam.onmicrosoft.com", name="Fabrikam")
        client_id = str(uuid.uuid4())
        for tenant in (source, target):
            tenant.register_app(client_id, secret=args.secret)
        for user in generate_users(args.users, seed=args.seed, domain="contoso.com"):
            source.directory.add_user(user)
        print(json.dumps({
            "endpoints": cloud.endpoints,
            "ca_bundle_path": cloud.ca_bundle_path,
            "env": cloud.client_env(),
            "source": {"tenant_id": source.tenant_id, "domain": source.domain},
            "target": {"tenant_id": target.tenant_id, "domain": target.domain},
            "client_id": client_id,
            "users": args.users,
        }, indent=2), flush=True)
        print("Serving; press Ctrl-C to stop.", flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            print("Stopping.")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m sim", description="Simulated Microsoft 365 tenants for ctcs.")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="start the simulated clouds and print their endpoints")
    serve_parser.add_argument("--users", type=int, default=50, help="generated users in the source tenant")
    serve_parser.add_argument("--seed", type=int, default=0)
    serve_parser.add_argument("--secret", default="sim-secret", help="client secret of the demo app (a test value)")
    serve_parser.set_defaults(handler=serve)
    demo_parser = commands.add_parser("demo", help="sync simulated tenants end to end (Azurite + the function entry points)")
    demo_parser.add_argument("--users", type=int, default=2000, help="generated users in the source tenant")
    demo_parser.add_argument("--changes", type=int, default=80, help="source changes between the two runs")
    demo_parser.add_argument("--seed", type=int, default=1)
    demo_parser.set_defaults(handler=lambda args: demo(users=args.users, changes=args.changes, seed=args.seed))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    raise SystemExit(main())
