"""Open a pair's source and target: the real Graph and Exchange edges with the pair's credentials and cloud.

Credentials come from a process-wide `CredentialCache` (tokens survive between runs of a Functions worker);
pass `credentials=` to use another cache (tests, a CLI run that wants fresh ones).
"""

from __future__ import annotations

from sync.contract.pairs import TenantPair
from sync.exchange.client import AdminApiClient
from sync.exchange.contacts import ExchangeTarget
from sync.exchange.lookup import MAX_KEYS
from sync.exchange.pacing import OrgPacer
from sync.exchange.visibility import SourceVisibility
from sync.graph.subscriptions import GraphSubscriptions
from sync.graph.users import GraphSource
from sync.identity.credentials import CredentialCache, shared_credentials
from sync.identity.secrets import SecretResolver


def open_source(pair: TenantPair, resolver: SecretResolver, *, credentials: CredentialCache | None = None) -> GraphSource:
    """The pair's source tenant as a `Source` (Graph users/delta)."""
    # Not `or`: an empty cache is falsy (it has a length).
    cache = credentials if credentials is not None else shared_credentials
    return GraphSource(cache.for_source(pair, resolver), graph_endpoint=pair.source.endpoints.graph)


def open_subscriptions(pair: TenantPair, resolver: SecretResolver, *,
                       credentials: CredentialCache | None = None) -> GraphSubscriptions:
    """The source tenant's change-notification subscriptions, with the pair's source credential."""
    cache = credentials if credentials is not None else shared_credentials
    return GraphSubscriptions(cache.for_source(pair, resolver), graph_endpoint=pair.source.endpoints.graph)


def open_target(
    pair: TenantPair, resolver: SecretResolver, *, credentials: CredentialCache | None = None,
    pacer: OrgPacer | None = None, lookup_batch: int = MAX_KEYS,
) -> ExchangeTarget:
    """The pair's target organisation as a `Target` (Exchange admin API), its calls paced by `pacer` (shared by
    every pair of the same organisation) and its look-ups shared `lookup_batch` at a time. Close it when done."""
    # Not `or`: an empty cache is falsy (it has a length).
    cache = credentials if credentials is not None else shared_credentials
    target = pair.target
    api = AdminApiClient(
        cache.for_target(pair, resolver),
        exchange_endpoint=target.endpoints.exchange,
        tenant=target.tenant_id,
        organization=target.organization,
        pacer=pacer,
    )
    return ExchangeTarget(api, lookup_batch=lookup_batch)


def open_source_visibility(
    pair: TenantPair, resolver: SecretResolver, *, credentials: CredentialCache | None = None
) -> SourceVisibility | None:
    """The source's own Exchange, read-only, when the pair grants it (`source.exchange`); else None."""
    source, grant = pair.source, pair.source.exchange
    if grant is None or not pair.scope.honor_hidden_from_gal:
        return None
    cache = credentials if credentials is not None else shared_credentials
    credential = cache.credential(
        tenant_id=source.tenant_id, client_id=source.client_id, cloud=source.cloud,
        definition=grant.credential, resolver=resolver, field="source.exchange.credential",
    )
    reader = AdminApiClient(
        credential, exchange_endpoint=source.endpoints.exchange, tenant=source.tenant_id,
        organization=grant.organization,
    )
    return SourceVisibility(reader)
