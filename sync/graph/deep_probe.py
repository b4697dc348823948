"""`GraphDeepProbe`: the read-only Graph reads of the deep connection test (`sync.app.admin.deep_test`).

    first_delta_page(select)   GET /users/delta?$select=...: the first page only (its size, its next or delta link)
    subscriptions()            GET /subscriptions: this app's subscriptions in the source tenant (the headroom)
    directory_quota()          GET /organization?$select=directorySizeQuota: used and total, where Graph shows it

Nothing here follows a delta round to its end or creates anything: the probe reads one page of each.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from msgraph.graph_service_client import GraphServiceClient

from sync.core.retry import RetryBudget
from sync.errors import SourceError
from sync.graph.connection import run_sync
from sync.graph.probe import RELATIONSHIPS, GraphProbe


class GraphDeepProbe(GraphProbe):
    """One page of users/delta, the app's subscriptions and the directory quota."""

    def first_delta_page(self, select: tuple[str, ...]) -> dict[str, Any]:
        fields = quote(",".join(name for name in select if name not in RELATIONSHIPS), safe=",")
        url = f"{self.graph_endpoint}/v1.0/users/delta?$select={fields}"

        async def read(client: GraphServiceClient) -> dict[str, Any] | None:
            return await self.get_json(
                client, lambda: client.users.delta.with_url(url).to_get_request_information(), RetryBudget(self.retry),
                what="users/delta", permission="User.Read.All", count=self._count,
            )

        page: dict[str, Any] | None = run_sync(self._with_client(read))
        return page or {}

    def subscriptions(self) -> list[dict[str, Any]]:
        url = f"{self.graph_endpoint}/v1.0/subscriptions"

        async def read(client: GraphServiceClient) -> dict[str, Any] | None:
            return await self.get_json(
                client, lambda: client.subscriptions.with_url(url).to_get_request_information(),
                RetryBudget(self.retry), what="subscriptions", permission="User.Read.All", count=self._count,
            )

        page: dict[str, Any] | None = run_sync(self._with_client(read))
        values = (page or {}).get("value")
        return [value for value in values if isinstance(value, dict)] if isinstance(values, list) else []

    def directory_quota(self) -> dict[str, Any] | None:
        """`directorySizeQuota` ({"used": n, "total": n}) of the source tenant; None where Graph does not show it
        (no such route, or a permission ctcs does not ask for)."""
        url = f"{self.graph_endpoint}/v1.0/organization?$select=id,directorySizeQuota"

        async def read(client: GraphServiceClient) -> dict[str, Any] | None:
            return await self.get_json(
                client, lambda: client.organization.with_url(url).to_get_request_information(),
                RetryBudget(self.retry), what="organization", permission="Organization.Read.All", count=self._count,
                missing_ok=True,
            )

        try:
            page: dict[str, Any] | None = run_sync(self._with_client(read))
        except SourceError:
            return None
        values = (page or {}).get("value")
        first = values[0] if isinstance(values, list) and values and isinstance(values[0], dict) else {}
        quota = first.get("directorySizeQuota")
        return quota if isinstance(quota, dict) else None
