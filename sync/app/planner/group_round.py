"""Group scoping in a planning run: keep the pair's membership graph current and give planning each user's groups.

Per run of a pair with `scope.include_groups` / `scope.exclude_groups`:
- incremental: one `groups/delta` request per batch of up to 50 tracked groups, from the stored deltaLinks; a group
  newly nested under a tracked one is read at once (`transitiveMembers` for what lies below it, then a first
  `groups/delta` round of those groups, which becomes a new batch);
- full (first run, `--full`, an expired users or groups token, a changed pair): `transitiveMembers` of every scope
  group finds every nested group, then a first `groups/delta` round of all of them (50 per batch) rebuilds the graph.

Users whose scope groups changed but who are not in the users round (membership changed, attributes did not) are
read by id (50 per request) and added to the round, so joining or leaving a group creates or removes the contact.
Leavers that never had a contact are not read. The new graph and deltaLinks become current only after the round's
ops are queued (invariant 4).

A streamed round (sync.app.planner.rounds) reads its groups once, when it starts (`begin`): the new graph is saved as the
round's pending graph, so every invocation of the round plans with the same memberships, and the membership-only
users are read after its last page (`membership_only_users`), leaving out the users its pages showed. `promote`
makes the pending graph current once the last page is queued. The dry run reads the same way and saves nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from sync.contract.pairs import TenantPair
from sync.contract.summaries import StateSummary
from sync.core.group_graph import (
    GroupGraph,
    GroupNode,
    GroupsDeltaRound,
    Memberships,
    Transitive,
    changed_users,
    scope_groups,
)
from sync.core.source import DeltaRound, Source, SourceUser
from sync.errors import DeltaTokenExpired, SourceError
from sync.state.groups import DeltaBatch, GroupScopeState, GroupStore

log = logging.getLogger("ctcs.groups")

BATCH = 50  # group ids per groups/delta request
MAX_NESTING_PASSES = 10  # discovery passes per run; deeper chains finish on the next run


class GroupReader(Protocol):
    requests: int

    def read_groups_delta(self, link: str | None, group_ids: Sequence[str]) -> GroupsDeltaRound: ...

    def transitive_members(self, group_ids: Iterable[str]) -> dict[str, Transitive]: ...

    def users_by_id(self, user_ids: Iterable[str], select: tuple[str, ...]) -> DeltaRound: ...


@runtime_checkable
class GroupCapableSource(Protocol):
    def group_reader(self) -> GroupReader: ...


def uses_groups(pair: TenantPair) -> bool:
    return bool(pair.scope.include_groups or pair.scope.exclude_groups)


def load(store: GroupStore, pair: TenantPair) -> GroupScopeState | None:
    return store.load(pair.id) if uses_groups(pair) else None


def needs_full_round(pair: TenantPair, stored: GroupScopeState | None) -> bool:
    """Without a graph for exactly these scope groups, users that left a group meanwhile cannot be told apart."""
    if not uses_groups(pair):
        return False
    return stored is None or stored.roots != scope_groups(pair.scope.include_groups, pair.scope.exclude_groups)


def stored_memberships(store: GroupStore, pair: TenantPair) -> Memberships | None:
    """Each user's scope groups as of the last planned run (no Graph call), for `explain`; None without groups."""
    stored = load(store, pair)
    if stored is None:
        return None
    return _spelled(pair, stored.graph.memberships(scope_groups(pair.scope.include_groups, pair.scope.exclude_groups)))


def _incremental(reader: GroupReader, stored: GroupScopeState, roots: tuple[str, ...]) -> tuple[GroupScopeState, set[str]]:
    graph = stored.graph.copy()
    changed: set[str] = set()
    batches = []
    for batch in stored.batches:
        delta = reader.read_groups_delta(batch.link, batch.group_ids)
        for group_id, group in delta.groups.items():
            if group_id in graph.nodes and graph.apply(group):
                changed.add(group_id)
        batches.append(DeltaBatch(batch.group_ids, delta.delta_link))
    batches += _read_new_groups(reader, graph, roots, changed)
    graph.prune(roots)
    batches = [batch for batch in batches if any(group_id in graph.nodes for group_id in batch.group_ids)]
    return GroupScopeState(roots, graph, batches, dict(stored.generations), stored.rebuilt_at), changed


def _rebuild(reader: GroupReader, roots: tuple[str, ...]) -> GroupScopeState:
    nested = set().union(*(found.groups for found in reader.transitive_members(roots).values()))
    graph = GroupGraph()
    batches = _read_groups(reader, graph, sorted(set(roots) | nested))
    batches += _read_new_groups(reader, graph, roots, set())  # nested into the graph between the two reads
    graph.prune(roots)
    return GroupScopeState(roots, graph, batches)


def _read_new_groups(reader: GroupReader, graph: GroupGraph, roots: tuple[str, ...], changed: set[str]) -> list[DeltaBatch]:
    """Read groups a tracked group now nests but the graph does not know yet, and everything below them."""
    batches: list[DeltaBatch] = []
    for _ in range(MAX_NESTING_PASSES):
        missing = sorted(graph.reachable(roots) - set(graph.nodes))
        if not missing:
            break
        below = set().union(*(found.groups for found in reader.transitive_members(missing).values()))
        new = sorted((set(missing) | below) - set(graph.nodes))
        batches += _read_groups(reader, graph, new)
        changed.update(new)
    return batches


def _read_groups(reader: GroupReader, graph: GroupGraph, group_ids: list[str]) -> list[DeltaBatch]:
    """First `groups/delta` rounds of `group_ids`, 50 per batch; a group Graph does not return has no members."""
    batches = []
    for start in range(0, len(group_ids), BATCH):
        chunk = group_ids[start : start + BATCH]
        delta = reader.read_groups_delta(None, chunk)
        for group_id in chunk:
            graph.nodes[group_id] = GroupNode()
        for group_id, group in delta.groups.items():
            if group_id in graph.nodes:
                graph.apply(group)
        batches.append(DeltaBatch(tuple(chunk), delta.delta_link))
    return batches


def _live(state: Mapping[str, StateSummary], user_id: str) -> bool:
    row = state.get(user_id)
    return row is not None and row.live


def _in_group_scope(pair: TenantPair, groups: frozenset[str]) -> bool:
    """The group rules alone (exclude wins): False means no attribute can bring the user in."""
    if groups & {g.lower() for g in pair.scope.exclude_groups}:
        return False
    return not pair.scope.include_groups or bool(groups & {g.lower() for g in pair.scope.include_groups})


def _spelled(pair: TenantPair, memberships: Memberships) -> Memberships:
    """Group ids as the pair spells them, so scope decisions compare like with like."""
    spelling = {g.lower(): g for g in (*pair.scope.include_groups, *pair.scope.exclude_groups)}
    if all(key == value for key, value in spelling.items()):
        return memberships
    return {user: frozenset(spelling.get(g, g) for g in groups) for user, groups in memberships.items()}


@dataclass
class GroupRound:
    """The group scoping of one streamed round: the graph it plans with and each user's scope groups."""

    pending: GroupScopeState
    changed: set[str] | None  # groups whose membership changed (None: every group, a rebuild)
    memberships: Memberships  # spelled as the pair spells its groups
    requests: int = 0


def pending_key(round_id: str) -> str:
    return f"pending|{round_id}"


def begin(source: Source, pair: TenantPair, stored: GroupScopeState | None, *, full: bool) -> GroupRound | None:
    """Read the groups' changes (or rebuild the graph) at the start of a round; None without group scoping."""
    if not uses_groups(pair):
        return None
    if not isinstance(source, GroupCapableSource):
        raise SourceError("the pair scopes by group but its source cannot read group membership")
    reader = source.group_reader()
    roots = scope_groups(pair.scope.include_groups, pair.scope.exclude_groups)
    pending, changed = None, None
    if not (full or needs_full_round(pair, stored)):
        assert stored is not None
        try:
            pending, changed = _incremental(reader, stored, roots)
        except DeltaTokenExpired as expired:
            log.warning("pair %s: groups delta token no longer valid (%s); rebuilding the membership graph", pair.id, expired)
    if pending is None:
        pending = _rebuild(reader, roots)
    return GroupRound(pending, changed, _spelled(pair, pending.graph.memberships(roots)), reader.requests)


def stash(store: GroupStore, pair_id: str, round_id: str, groups: GroupRound) -> None:
    """Keep the round's graph (not yet current) for the round's later invocations."""
    store.save(pair_id, groups.pending, changed=groups.changed, meta_key=pending_key(round_id))


def resume(store: GroupStore, pair: TenantPair, round_id: str) -> GroupRound | None:
    """The graph a round in progress stashed at its start; None when there is none (then `begin` again)."""
    pending = store.load(pair.id, meta_key=pending_key(round_id))
    if pending is None:
        return None
    roots = scope_groups(pair.scope.include_groups, pair.scope.exclude_groups)
    return GroupRound(pending, None, _spelled(pair, pending.graph.memberships(roots)))


def membership_only_users(
    source: Source, pair: TenantPair, stored: GroupScopeState | None, groups: GroupRound,
    state: Mapping[str, StateSummary], *, seen: set[str], select: tuple[str, ...],
) -> tuple[list[SourceUser], int]:
    """After an incremental round's last page: users whose scope groups changed but whom no page showed, read by id
    (only those who have a contact or whom the groups alone may bring in). Returns them and the requests spent."""
    if stored is None or not isinstance(source, GroupCapableSource):
        return [], 0
    roots = scope_groups(pair.scope.include_groups, pair.scope.exclude_groups)
    after = groups.pending.graph.memberships(roots)
    moved = changed_users(stored.graph.memberships(roots), after) - seen
    wanted = {user for user in moved if _live(state, user) or _in_group_scope(pair, after.get(user, frozenset()))}
    if not wanted:
        return [], 0
    reader = source.group_reader()
    users = list(reader.users_by_id(wanted, select).users.values())
    log.info("pair %s: %d users changed scope groups only; %d read by id", pair.id, len(moved), len(wanted))
    return users, reader.requests


def promote(store: GroupStore, pair: TenantPair, round_id: str) -> None:
    """The round's last page is queued: its graph and groups deltaLinks become current (invariant 4)."""
    if uses_groups(pair):
        store.promote(pair.id, pending_key(round_id))
