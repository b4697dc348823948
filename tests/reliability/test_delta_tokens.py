"""A deltaLink that no longer works (expired, reset, garbled, resync required) starts a full round on its own, and
that round removes the contacts of users deleted while the token was lost (they appear in no delta any more)."""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import parse_qs, quote, urlsplit

import pytest
from azure.data.tables import UpdateMode

from .conftest import SyncPair


def _garble(link: str) -> str:
    token = parse_qs(urlsplit(link).query)["$deltatoken"][0]
    middle = len(token) // 2
    garbled = token[:middle] + ("A" if token[middle] != "A" else "B") + token[middle + 1 :]
    return link.replace(quote(token, safe=".-_"), quote(garbled, safe=".-_"))


@pytest.mark.parametrize("how", ["expired", "reset", "garbled", "resync_required"])
def test_a_lost_delta_token_starts_a_full_round_that_sweeps_users_deleted_meanwhile(
    make_sync: Callable[..., SyncPair], how: str, record: Callable[..., None]
) -> None:
    sync = make_sync(deletion={"max_delete_percent": 25})
    users = sync.add_users(12)
    sync.sync()
    directory = sync.source.directory
    directory.delete_user(users[0])  # soft delete
    directory.delete_user(users[1], permanent=True)
    directory.update_user(users[2], jobTitle="Director")
    hired = sync.add_user("New Hire")
    state = sync.rt.stores.pair_state
    link = state.get(sync.pair.id).delta_link
    if how == "expired":
        directory.expire_tokens()  # 400 syncStateNotFound
    elif how == "reset":
        directory.reset_tokens()  # 410 Gone
    elif how == "garbled":
        state.table.upsert_entity({"PartitionKey": "pair", "RowKey": sync.pair.id, "delta_link": _garble(link)},
                                  mode=UpdateMode.MERGE)
    else:
        sync.cloud.faults.inject("graph", "resync_required")  # 400 resyncRequired
    sync.cloud.reset_counts()

    report = sync.sync()

    run = sync.last_run()
    assert run.outcome == "planned" and run.full, "the lost token made this run a full round"
    assert (run.counts["delete"], run.counts["update"], run.counts["create"]) == (2, 1, 1)
    assert sync.contacts_of(users[0]) == [] and sync.contacts_of(users[1]) == []
    assert len(sync.contacts_of(hired)) == 1 and sync.contacts_of(users[2])[0]["Title"] == "Director"
    assert report.poisoned == 0 and len(sync.ours()) == 11
    new_link = state.get(sync.pair.id).delta_link
    assert new_link and new_link != link
    sync.assert_in_step()

    sync.cloud.reset_counts()
    sync.sync()
    after = sync.last_run()
    assert not after.full and after.outcome == "no_changes", "back to incremental rounds"
    record(graph_requests=run.graph_requests, swept=2, updated=1, created=1, contacts=len(sync.ours()),
           next_run="incremental, no changes")
