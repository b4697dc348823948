"""Invariant 6: no secret value (client secret, private key, certificate body, bearer token) appears in any log
line at DEBUG (ctcs, azure, msal, httpx, ...), exception message, table row or queue message, through a demo-sized
sync and the fault scenarios: throttling, 503s, a lost delta token, a poisoned op and its replay, a wrong secret;
with change notifications on, the subscription's clientState is one of the secrets (a forged notification and a
lifecycle event included)."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from typing import Any

import pytest

import function_app
from sim import SimCloud
from sim.generator import generate_users, mutate
from sync.app.worker.delivery import replay_poison
from sync.cli import main as cli

from .conftest import Credentials, SyncPair, stored_text

LOGGERS = ("", "ctcs", "azure", "azure.core.pipeline.policies.http_logging_policy", "azure.identity", "msal",
           "httpx", "httpcore", "urllib3", "kiota_http", "kiota_abstractions", "msgraph", "uvicorn")
NOTIFICATION_KEY = "reliability-notification-key-fedcba9876543210"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}")
BEARER = re.compile(r"Bearer\s+(?!REDACTED|\.\.\.)[A-Za-z0-9._~+/=-]{16,}")


def _pem_bodies(pem: bytes) -> list[str]:
    """The base64 lines of every PEM block: any one of them in a log would leak key or certificate material."""
    return [line for line in pem.decode().splitlines() if line and not line.startswith("-----") and len(line) >= 40]


def _log_text(record: logging.LogRecord) -> str:
    parts = [record.getMessage()]
    if record.exc_info:
        parts.append(logging.Formatter().formatException(record.exc_info))
    standard = set(vars(logging.makeLogRecord({})))
    extras = {k: v for k, v in vars(record).items() if k not in standard}
    parts.append(json.dumps(extras, default=str, ensure_ascii=False))
    return "\n".join(parts)


def test_no_secret_reaches_logs_errors_tables_or_queues(
    cloud: SimCloud, make_sync: Callable[..., SyncPair], credentials: Credentials, caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, record: Callable[..., None],
) -> None:
    tokens: list[str] = []
    issue = cloud.signer.issue

    def remembering(**claims: Any) -> tuple[str, int]:
        token, lifetime = issue(**claims)
        tokens.append(token)
        return token, lifetime

    monkeypatch.setattr(cloud.signer, "issue", remembering)
    for name in LOGGERS:
        caplog.set_level(logging.DEBUG, logger=name)

    sync = make_sync()
    for user in generate_users(300, seed=12, domain=sync.source.domain):
        sync.source.directory.add_user(user)
    sync.target.exchange.add_recipient("UserMailbox", "mailbox", f"someone@{sync.target.domain}")
    first = sync.sync(deadline_seconds=120)
    outputs: list[str] = []

    # Faults: throttling and 503s, a Graph 429, a lost delta token, a poisoned op replayed, a wrong secret.
    faults = cloud.faults
    faults.inject("exchange", "throttle", probability=0.3, retry_after="0")
    faults.inject("exchange", "unavailable", probability=0.05, retry_after="1")
    faults.inject("graph", "throttle", times=1, retry_after="0")
    mutate(sync.source.directory, __import__("random").Random(3), 25)
    sync.sync(deadline_seconds=120)
    faults.clear()
    sync.source.directory.expire_tokens()
    sync.sync()
    sync.add_user("Poisoned Hire")
    faults.inject("exchange", "unavailable", operation="New-MailContact", times=10_000, retry_after="120")
    poisoned = sync.sync()
    faults.clear()
    assert poisoned.poison_handled == 1 and replay_poison(sync.rt, pair_id=sync.pair.id) == 1
    sync.drain()
    wrong = make_sync("wrong-secret")
    monkeypatch.setenv("CTCS_SECRET_RELIABILITY_GRAPH", "not-the-registered-secret-" + credentials.secret[::-1])
    wrong_secret = "not-the-registered-secret-" + credentials.secret[::-1]
    wrong.host.call_http("POST", "/api/pairs/wrong-secret/resync")  # Entra refuses the secret: quarantined (credentials)
    monkeypatch.setenv("CTCS_SECRET_RELIABILITY_GRAPH", credentials.secret)
    assert sync.rt.stores.runs.recent("wrong-secret")[0].outcome == "quarantined"
    assert sync.rt.stores.pair_state.get("wrong-secret").quarantine_reason.startswith("source: wrong or expired client secret")

    # Change notifications on (the route on a loopback listener): each subscription's clientState is a secret too.
    # The healthy pair subscribes; changes are notified, one is forged, a lifecycle event asks for a renewal.
    base = sync.host.listen(cloud.tls_files)
    monkeypatch.setenv("CTCS_CHANGE_NOTIFICATIONS", "on")
    monkeypatch.setenv("CTCS_NOTIFICATION_URL", f"{base}/api/notifications")
    monkeypatch.setenv("CTCS_NOTIFICATION_KEY", NOTIFICATION_KEY)
    monkeypatch.setenv("CTCS_NOTIFICATION_DELAY_SECONDS", "0")
    function_app._runtime.clear()
    sync.plan()
    [subscription] = cloud.subscriptions.all(sync.source.tenant_id)
    mutate(sync.source.directory, __import__("random").Random(4), 5)
    deadline = time.monotonic() + 20
    while sync.rt.stores.subscriptions.of_pair(sync.pair.id)[0].accepted == 0 and time.monotonic() < deadline:
        time.sleep(0.1)  # Graph's notifications of the changes reach the route
    assert cloud.subscriptions.forge(subscription.notification_url, subscription_id=subscription.id,
                                     client_state="guess") == 202
    assert cloud.subscriptions.lifecycle(subscription.id, "reauthorizationRequired") == 202
    sync.drain()
    assert sync.rt.stores.subscriptions.of_pair(sync.pair.id)[0].rejected == 1
    assert sync.rt.stores.subscriptions.of_pair("wrong-secret") == []  # quarantined for its credentials: none

    for route in ("/api/pairs", f"/api/pairs/{sync.pair.id}"):
        outputs.append(sync.host.call_http("GET", route).body.decode())
    outputs.append(sync.host.call_http("POST", f"/api/pairs/{sync.pair.id}/resync", {"full": "true"}).body.decode())
    sync.drain()
    cli.main(["status", "--json"], runtime=lambda: sync.rt)
    cli.main(["pairs", "list", "--json"], runtime=lambda: sync.rt)
    outputs.append(capsys.readouterr().out)

    secrets = {"client secret": [credentials.secret], "wrong client secret": [wrong_secret],
               "private key": _pem_bodies(credentials.private_pem.split(b"-----BEGIN CERTIFICATE-----")[0]),
               "certificate body": _pem_bodies(credentials.certificate_pem), "access token": sorted(set(tokens)),
               "token signature": sorted({t.rsplit(".", 1)[1] for t in tokens}),
               "clientState": [subscription.client_state], "notification key": [NOTIFICATION_KEY],
               "notification path token": [subscription.notification_url.rsplit(".", 1)[1]]}
    assert tokens and secrets["private key"] and secrets["certificate body"]
    # The simulated Graph's own httpx lines name the URL it posts to (Graph's logs, not ours): left out of the check.
    graph_posts = f"HTTP Request: POST {base}/api/notifications/"
    places: dict[str, list[str]] = {
        "log": [_log_text(r) for r in caplog.records if not r.getMessage().startswith(graph_posts)],
        "output": outputs,
        **stored_text(sync.storage_env),
    }
    leaks = [
        f"{what} in {where}: {text[:200]!r}"
        for where, texts in places.items() for text in texts
        for what, values in secrets.items() if any(value in text for value in values)
    ]
    leaks += [f"bearer/JWT in {where}: {text[:200]!r}" for where, texts in places.items() for text in texts
              if JWT.search(text) or BEARER.search(text)]
    assert not leaks, "\n".join(leaks[:10])
    for sub in cloud.subscriptions.all(sync.source.tenant_id):
        cloud.subscriptions.expire(sub.id)
    sync.host.close()
    record(log_records=len(caplog.records), table_rows=sum(len(v) for k, v in places.items() if k.startswith("table")),
           queue_messages=sum(len(v) for k, v in places.items() if k.startswith("queue")),
           tokens_issued=len(set(tokens)), contacts=len(sync.ours()), first_sync_ops=first.completed, leaks=0)
