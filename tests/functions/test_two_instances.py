"""Two worker instances (two copies of the Function App, each with its own Runtime and pacer) apply one queue into a
target whose Exchange caps concurrent calls: they share the tenant's pace through TargetState, find the cap, and
keep the share of calls refused with 429 under 1% while finishing the load."""

from __future__ import annotations

import threading

from sim.host import HostReport, LocalHost, worker_instance

from .conftest import PAIR_ID, Sync


def test_two_instances_against_a_capped_tenant_stay_under_one_percent_429s(sync: Sync) -> None:
    limits = sync.target.exchange.limits
    limits.configure(concurrency_cap=5, latency={"*": 0.02, "New-MailContact": 0.04})
    users = sync.add_users(300)
    sync.host.fire_timer()
    instances = [LocalHost(app_module=worker_instance(), visibility_timeout=0) for _ in range(2)]
    reports: list[HostReport] = []
    lock = threading.Lock()

    def work(host: LocalHost) -> None:
        report = host.drain_queue(deadline_seconds=240)
        with lock:
            reports.append(report)

    threads = [threading.Thread(target=work, args=(host,)) for host in instances]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)

    calls, refused = sync.cloud.counts["exchange"], sync.cloud.counts[("limits", "concurrency")]
    assert refused < 0.01 * calls, f"{refused} of {calls} calls refused"
    assert all(report.completed > 0 and report.poisoned == 0 for report in reports), "both instances did work"
    assert limits.stats.peak_in_flight >= 4, "the limit found the cap instead of staying at the cautious start"
    assert sync.anchors() == sync.expected_anchors() and len(sync.target.exchange.contacts()) == len(users)
    assert sync.rt.stores.contacts.status_counts(PAIR_ID) == {"ok": len(users)}
    pace, members = sync.rt.stores.targets.pace(sync.target.domain)
    assert pace is not None and 4 <= pace.limit <= 6 and len(members) == 2
    lookups, creates = sync.cloud.counts[("exchange", "Get-Recipient")], sync.cloud.counts[("exchange", "New-MailContact")]
    assert lookups * 4 <= creates, "creates shared their look-ups"
