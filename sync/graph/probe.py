"""`GraphProbe`: the cheapest real reads of a source tenant, for the connection test.

`one_user` is `GET /users?$top=1&$select=<the pair's select>`: it proves the token, the `User.Read.All` permission
and that every property the pair reads exists. `group` is `GET /groups/{id}?$select=id,displayName` for a pair that
scopes by group (`GroupMember.Read.All`). Both follow `GraphConnection`'s error mapping: 401/403 and a failed
sign-in raise `SourceAuthError`.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from msgraph.graph_service_client import GraphServiceClient

from sync.core.retry import RetryBudget
from sync.graph.connection import GraphConnection, run_sync

RELATIONSHIPS = frozenset({"manager"})


class GraphProbe(GraphConnection):
    """Reads one user or one group; `requests` counts HTTP attempts."""

    requests = 0

    def __repr__(self) -> str:
        return f"<GraphProbe {self.graph_endpoint}>"

    def _count(self) -> None:
        self.requests += 1

    def one_user(self, select: tuple[str, ...]) -> dict[str, Any] | None:
        """The first user of the tenant with the pair's `$select` (None: the tenant has no user)."""
        # Relationships (manager) come only from delta as annotations; /users takes properties.
        fields = quote(",".join(name for name in select if name not in RELATIONSHIPS), safe=",")
        url = f"{self.graph_endpoint}/v1.0/users?$top=1&$select={fields}"

        async def read(client: GraphServiceClient) -> dict[str, Any] | None:
            page = await self.get_json(
                client, lambda: client.users.with_url(url).to_get_request_information(), RetryBudget(self.retry),
                what="users", permission="User.Read.All", count=self._count,
            )
            values = (page or {}).get("value")
            return values[0] if isinstance(values, list) and values and isinstance(values[0], dict) else None

        result: dict[str, Any] | None = run_sync(self._with_client(read))
        return result

    def group(self, group_id: str) -> dict[str, Any] | None:
        """One scope group by id (None: Graph has no such group)."""
        url = f"{self.graph_endpoint}/v1.0/groups/{quote(group_id, safe='')}?$select=id,displayName"

        async def read(client: GraphServiceClient) -> dict[str, Any] | None:
            return await self.get_json(
                client, lambda: client.groups.with_url(url).to_get_request_information(), RetryBudget(self.retry),
                what="a scope group", permission="GroupMember.Read.All", count=self._count, missing_ok=True,
            )

        result: dict[str, Any] | None = run_sync(self._with_client(read))
        return result
