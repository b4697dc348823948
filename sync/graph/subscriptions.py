"""`GraphSubscriptions`: the source tenant's change-notification subscriptions (`/subscriptions`), on msgraph-sdk.

Create (`POST`; Graph first calls the notification URL with a `validationToken` and creates nothing unless it is
echoed within about 10 seconds), renew (`PATCH` with a new `expirationDateTime`; 404 when Graph no longer has it:
it expired or was removed, so the caller makes a new one), read (`GET`, which confirms a lifecycle event) and
delete. A subscription on `users` needs `User.Read.All`, one on `groups` `Group.Read.All`, like the reads
themselves. Requests go through `GraphConnection.get_json`: our retries within a budget, 401/403 as
`SourceAuthError` naming the permission.

The `clientState` secret passes through `create` to Graph and nowhere else: it is not in any error text.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from msgraph.generated.models.subscription import Subscription as SubscriptionModel
from msgraph.graph_service_client import GraphServiceClient

from sync.core.retry import RetryBudget
from sync.errors import SourceError
from sync.graph.connection import GraphConnection, run_sync

# Graph's documented maximum for directory resources (user, group): 41,760 minutes, just under 29 days.
MAX_DIRECTORY_LIFETIME_MINUTES = 41_760
PERMISSIONS = {"users": "User.Read.All", "groups": "Group.Read.All"}
CHANGE_TYPE = "updated,deleted"  # directory objects: creation and soft deletion arrive as `updated`


@dataclass(frozen=True)
class Subscription:
    id: str
    resource: str
    expires_at: datetime


class GraphSubscriptions(GraphConnection):
    """Subscriptions of one source tenant's Graph, made with the pair's source credential."""

    requests = 0

    def _count(self) -> None:
        self.requests += 1

    def create(self, resource: str, *, notification_url: str, lifecycle_url: str, client_state: str,
               expires_at: datetime) -> Subscription:
        body = SubscriptionModel(
            change_type=CHANGE_TYPE, notification_url=notification_url, lifecycle_notification_url=lifecycle_url,
            resource=resource, expiration_date_time=expires_at, client_state=client_state,
        )

        async def work(client: GraphServiceClient) -> dict[str, Any] | None:
            return await self._send(client, lambda: client.subscriptions.to_post_request_information(body),
                                    resource, f"create a subscription on {resource}")

        return _subscription(run_sync(self._with_client(work)), resource)

    def renew(self, subscription_id: str, resource: str, *, expires_at: datetime) -> Subscription | None:
        """The renewed subscription, or None when Graph no longer has it."""
        body = SubscriptionModel(expiration_date_time=expires_at)

        async def work(client: GraphServiceClient) -> dict[str, Any] | None:
            item = client.subscriptions.by_subscription_id(subscription_id)
            return await self._send(client, lambda: item.to_patch_request_information(body), resource,
                                    f"renew the subscription on {resource}", missing_ok=True)

        answer = run_sync(self._with_client(work))
        return None if answer is None else _subscription(answer, resource)

    def get(self, subscription_id: str, resource: str) -> Subscription | None:
        """The subscription as Graph has it now, or None when Graph no longer has it: what confirms a lifecycle
        event before ctcs acts on it (the event itself arrives at an anonymous route)."""

        async def work(client: GraphServiceClient) -> dict[str, Any] | None:
            item = client.subscriptions.by_subscription_id(subscription_id)
            return await self._send(client, item.to_get_request_information, resource,
                                    f"read the subscription on {resource}", missing_ok=True)

        answer = run_sync(self._with_client(work))
        return None if answer is None else _subscription(answer, resource)

    def delete(self, subscription_id: str, resource: str) -> bool:
        """False when Graph had no such subscription (it expired or was removed already)."""

        async def work(client: GraphServiceClient) -> dict[str, Any] | None:
            item = client.subscriptions.by_subscription_id(subscription_id)
            return await self._send(client, item.to_delete_request_information, resource,
                                    f"delete the subscription on {resource}", missing_ok=True)

        return run_sync(self._with_client(work)) is not None

    async def _send(self, client: GraphServiceClient, build: Any, resource: str, what: str, *,
                    missing_ok: bool = False) -> dict[str, Any] | None:
        return await self.get_json(client, build, RetryBudget(self.retry), what=what,
                                   permission=PERMISSIONS.get(resource, "User.Read.All"), count=self._count,
                                   missing_ok=missing_ok)


def _subscription(answer: dict[str, Any] | None, resource: str) -> Subscription:
    answer = answer or {}
    sub_id, expires = answer.get("id"), answer.get("expirationDateTime")
    if not isinstance(sub_id, str) or not sub_id or not isinstance(expires, str):
        raise SourceError(f"Graph answered a subscription on {resource} without an id or expirationDateTime")
    try:
        expires_at = datetime.fromisoformat(expires.replace("Z", "+00:00"))
    except ValueError:
        raise SourceError(f"Graph answered a subscription on {resource} with expirationDateTime {expires!r}") from None
    return Subscription(sub_id, resource, expires_at)
