"""The binding metadata the host indexes: trigger types, settings in `%...%`, queues, routes and auth levels,
and host.json values the code depends on."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

import function_app
from sim.host import QueueSettings
from sync.api.handlers import RESYNC_INLINE_SECONDS
from sync.core.delivery_policy import MAX_DEQUEUE_COUNT
from sync.settings import setting

ROOT = Path(__file__).resolve().parents[2]


def trigger(bindings: dict[str, dict[str, Any]], name: str) -> dict[str, Any]:
    [found] = [b for b in bindings[name]["bindings"] if b["direction"] == "IN"]
    return found


def test_the_app_has_exactly_these_functions(bindings: dict[str, dict[str, Any]]) -> None:
    assert set(bindings) == {
        "sync_timer", "plan_pair_run", "apply_contact_op", "record_poisoned_op", "pairs_resync", "pairs_list",
        "pairs_show", "pairs_test", "pairs_sync_user", "pairs_reconcile",
        "graph_notifications",
    }
    assert {b["scriptFile"] for b in bindings.values()} == {"function_app.py"}


def test_timer_schedule_comes_from_a_setting_and_never_runs_on_startup(bindings: dict[str, dict[str, Any]]) -> None:
    timer = trigger(bindings, "sync_timer")
    assert timer["type"] == "timerTrigger"
    assert timer["schedule"] == "%SYNC_SCHEDULE%"
    assert timer["runOnStartup"] is False and timer["useMonitor"] is True


@pytest.mark.parametrize(
    ("name", "queue"),
    [("plan_pair_run", "%CTCS_PAIR_RUNS_QUEUE%"), ("apply_contact_op", "%CTCS_OPS_QUEUE%"),
     ("record_poisoned_op", "%CTCS_OPS_QUEUE%-poison")],
)
def test_queue_triggers_name_their_queue_and_connection_by_setting(
    bindings: dict[str, dict[str, Any]], name: str, queue: str
) -> None:
    binding = trigger(bindings, name)
    assert binding["type"] == "queueTrigger"
    assert binding["queueName"] == queue
    assert binding["connection"] == "AzureWebJobsStorage"


@pytest.mark.parametrize(
    ("name", "route", "method"),
    [("pairs_resync", "pairs/{id}/resync", "POST"), ("pairs_list", "pairs", "GET"), ("pairs_show", "pairs/{id}", "GET"),
     ("pairs_test", "pairs/{id}/test", "POST"), ("pairs_sync_user", "pairs/{id}/users/{user}/sync", "POST"),
     ("pairs_reconcile", "pairs/{id}/reconcile", "POST")],
)
def test_http_routes_need_a_function_key(bindings: dict[str, dict[str, Any]], name: str, route: str, method: str) -> None:
    binding = trigger(bindings, name)
    assert binding["type"] == "httpTrigger"
    assert binding["route"] == route and binding["methods"] == [method]
    assert binding["authLevel"] == "FUNCTION"
    assert {"direction": "OUT", "type": "http", "name": "$return"} in bindings[name]["bindings"]


def test_only_the_graph_notification_route_is_anonymous(bindings: dict[str, dict[str, Any]]) -> None:
    """Graph posts to the URL it was given and cannot send a key header: clientState is that route's check."""
    anonymous = {name for name in bindings if trigger(bindings, name).get("authLevel") == "ANONYMOUS"}
    assert anonymous == {"graph_notifications"}
    binding = trigger(bindings, "graph_notifications")
    assert binding["route"] == "notifications/{pair}/{token}" and binding["methods"] == ["POST"]


def test_each_function_builds_again_the_same_way() -> None:
    """The host driver reads bindings through `.build()`; it must not change what the indexer sees."""
    first = function_app.pairs_resync.build().get_function_json()
    assert function_app.pairs_resync.build().get_function_json() == first


def test_the_planner_budget_is_well_under_the_function_timeout() -> None:
    """An invocation stops after the page on which its budget ran out; a page takes seconds, not minutes."""
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    hours, minutes, seconds = host["functionTimeout"].split(":")
    timeout = int(hours) * 3600 + int(minutes) * 60 + int(seconds)
    budget = int(setting("CTCS_PLANNER_BUDGET_SECONDS") or 0)
    assert 0 < budget <= timeout / 2, (budget, timeout)
    assert budget >= RESYNC_INLINE_SECONDS


def test_host_json_queue_settings_match_the_code() -> None:
    host = json.loads((ROOT / "host.json").read_text(encoding="utf-8"))
    queues = host["extensions"]["queues"]
    assert queues["maxDequeueCount"] == MAX_DEQUEUE_COUNT
    assert queues["messageEncoding"] == "base64"  # the storage SDK clients in sync.storage encode base64
    # A batch of creates shares one look-up; the pacer, not the batch, keeps Exchange under its cap (docs/host-settings.md).
    assert queues["batchSize"] == int(str(setting("CTCS_LOOKUP_BATCH", {})))
    instances = int(re.search(r"param maximumInstanceCount int = (\d+)", (ROOT / "infra/main.bicep").read_text())[1])
    in_flight = (queues["batchSize"] + queues["newBatchThreshold"]) * instances
    assert in_flight >= 3 * int(str(setting("CTCS_EXCHANGE_MAX_CONCURRENCY", {}))), "enough ops to keep the slots busy"
    settings = QueueSettings.from_host_json(ROOT / "host.json")
    assert settings.visibility_timeout == 30 and settings.batch_size == queues["batchSize"]
    assert host["extensionBundle"]["id"] == "Microsoft.Azure.Functions.ExtensionBundle"
    assert host["extensionBundle"]["version"].startswith("[4.")
    assert host["logging"]["logLevel"]["default"] == "Warning"
    assert host["logging"]["logLevel"]["Function"] == "Information"
    assert "Request" in host["logging"]["applicationInsights"]["samplingSettings"]["excludedTypes"].split(";")


def test_function_app_imports_only_sync_and_azure_functions() -> None:
    source = (ROOT / "function_app.py").read_text(encoding="utf-8")
    imports = {line.split()[1].split(".")[0] for line in source.splitlines() if line.startswith(("import ", "from "))}
    assert imports <= {"__future__", "logging", "threading", "typing", "azure", "sync"}
    assert len(source.splitlines()) < 190  # each function imports its own part of sync lazily (a line or four each)


def test_indexing_the_app_loads_no_part_of_sync() -> None:
    """The host imports function_app on every cold start: nothing of sync is loaded until a function runs, and the
    notification route loads only its own path (Graph gives it 3 s)."""
    import subprocess
    import sys

    probe = ("import sys, function_app; print(sorted(m for m in sys.modules if m == 'sync' or m.startswith('sync.')))")
    loaded = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=True)
    assert loaded.stdout.strip() == "[]"
