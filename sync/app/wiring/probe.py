"""The edges a connection test talks through: fresh credentials and clients for one pair, closed after the test.

Fresh on purpose: a test must see what an admin just fixed (a certificate replaced in Key Vault, consent granted a
minute ago), so it never reuses the process's cached credentials, Key Vault reads or tokens.
"""

from __future__ import annotations

from azure.core.credentials import TokenCredential

from sync.contract.pairs import TenantPair
from sync.core.diagnosis import Side, Subject
from sync.exchange.client import AdminApiClient
from sync.exchange.contacts import ExchangeTarget
from sync.graph.deep_probe import GraphDeepProbe
from sync.graph.probe import GraphProbe
from sync.identity.credentials import CredentialCache
from sync.identity.secrets import SecretResolver


class ConnectionProbe:
    """One pair's sign-ins and cheapest calls, each side on demand."""

    def __init__(self, pair: TenantPair, *, resolver: SecretResolver, credentials: CredentialCache) -> None:
        self.pair = pair
        self._resolver = resolver
        self._credentials = credentials
        self._targets: list[ExchangeTarget] = []

    def close(self) -> None:
        for target in self._targets:
            target.close()

    def subject(self, side: Side) -> Subject:
        tenant = self.pair.target if side is Side.TARGET else self.pair.source
        return Subject(side, tenant.tenant_id, tenant.client_id, tenant.endpoints.authority)

    def credential(self, side: Side) -> TokenCredential:
        """The side's credential, built now; `CredentialUnusable` when its secret or certificate cannot be read."""
        if side is Side.SOURCE:
            return self._credentials.for_source(self.pair, self._resolver)
        if side is Side.TARGET:
            return self._credentials.for_target(self.pair, self._resolver)
        source, grant = self.pair.source, self.pair.source.exchange
        assert grant is not None
        return self._credentials.credential(
            tenant_id=source.tenant_id, client_id=source.client_id, cloud=source.cloud, definition=grant.credential,
            resolver=self._resolver, field="source.exchange.credential",
        )

    def scope(self, side: Side) -> str:
        endpoints = self.pair.target.endpoints if side is Side.TARGET else self.pair.source.endpoints
        return endpoints.graph_scope if side is Side.SOURCE else endpoints.exchange_scope

    def graph(self) -> GraphProbe:
        return GraphProbe(self.credential(Side.SOURCE), graph_endpoint=self.pair.source.endpoints.graph)

    def graph_deep(self) -> GraphDeepProbe:
        """The deep connection test's Graph reads (one delta page, the subscriptions, the directory quota)."""
        return GraphDeepProbe(self.credential(Side.SOURCE), graph_endpoint=self.pair.source.endpoints.graph)

    def exchange(self, side: Side) -> ExchangeTarget:
        if side is Side.TARGET:
            tenant, organization = self.pair.target, self.pair.target.organization
            endpoint = tenant.endpoints.exchange
        else:
            assert self.pair.source.exchange is not None
            tenant, organization = self.pair.source, self.pair.source.exchange.organization  # type: ignore[assignment]
            endpoint = self.pair.source.endpoints.exchange
        api = AdminApiClient(self.credential(side), exchange_endpoint=endpoint, tenant=tenant.tenant_id,
                             organization=organization)
        target = ExchangeTarget(api)
        self._targets.append(target)
        return target


def open_probe(pair: TenantPair, *, environ: dict[str, str] | None = None) -> ConnectionProbe:
    """A probe with credentials and Key Vault reads of its own."""
    return ConnectionProbe(pair, resolver=SecretResolver(environ=environ), credentials=CredentialCache(environ=environ))
