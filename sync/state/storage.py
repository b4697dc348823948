"""The one storage account: tables and queues, by connection string locally or managed identity in Azure.

Every client of the account shares one HTTP connection pool sized for a worker's concurrency (a queue batch runs
up to 24 ops at once, each reading and writing its state row): the SDK's default pool of 10 connections would open
and throw away connections under that load.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from azure.core.credentials import TokenCredential
from azure.core.pipeline.transport import RequestsTransport
from azure.data.tables import TableClient, TableServiceClient
from azure.storage.queue import QueueClient, TextBase64DecodePolicy, TextBase64EncodePolicy
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from sync.errors import ConfigError
from sync.settings import setting

T = TypeVar("T")
POOL_CONNECTIONS = 64


def shared_transport() -> RequestsTransport:
    """One requests session with a pool of POOL_CONNECTIONS, for every client of the account (the SDK retries on
    its own, so the adapter does not)."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=POOL_CONNECTIONS,
                          max_retries=Retry(total=False, redirect=False, raise_on_status=False))
    for scheme in ("http://", "https://"):
        session.mount(scheme, adapter)
    return RequestsTransport(session=session, session_owner=False)


@dataclass
class StorageAccount:
    connection_string: str | None = None
    table_endpoint: str | None = None
    queue_endpoint: str | None = None
    credential: TokenCredential | None = None
    _tables: dict[str, TableClient] = field(default_factory=dict, repr=False)
    _transport: RequestsTransport = field(default_factory=shared_transport, repr=False)

    @classmethod
    def from_settings(cls, environ: Mapping[str, str] | None = None) -> StorageAccount:
        connection_string = setting("AzureWebJobsStorage", environ)
        if connection_string:
            return cls(connection_string=connection_string)
        tables = setting("AzureWebJobsStorage__tableServiceUri", environ)
        queues = setting("AzureWebJobsStorage__queueServiceUri", environ)
        if not tables or not queues:
            raise ConfigError(
                "no storage configured: set AzureWebJobsStorage (a connection string; UseDevelopmentStorage=true for "
                "Azurite) or AzureWebJobsStorage__tableServiceUri and AzureWebJobsStorage__queueServiceUri"
            )
        return cls(table_endpoint=tables, queue_endpoint=queues, credential=_storage_credential(environ))

    def table(self, name: str) -> TableClient:
        """A table client; the table is created on first use."""
        if name not in self._tables:
            if self.connection_string:
                service = _from_connection_string(TableServiceClient.from_connection_string, self.connection_string,
                                                  transport=self._transport)
            else:
                assert self.table_endpoint and self.credential
                service = TableServiceClient(endpoint=self.table_endpoint, credential=self.credential,
                                             transport=self._transport)
            self._tables[name] = service.create_table_if_not_exists(name)
        return self._tables[name]

    def queue(self, name: str) -> QueueClient:
        """A queue client whose messages are base64, as the Functions queue trigger expects."""
        options: dict[str, Any] = {
            "message_encode_policy": TextBase64EncodePolicy(),
            "message_decode_policy": TextBase64DecodePolicy(),
            "transport": self._transport,
        }
        if self.connection_string:
            client = _from_connection_string(QueueClient.from_connection_string, self.connection_string, name, **options)
        else:
            assert self.queue_endpoint and self.credential
            client = QueueClient(self.queue_endpoint, name, credential=self.credential, **options)
        return client


def _from_connection_string(make: Callable[..., T], connection_string: str, *args: Any, **kwargs: Any) -> T:
    try:
        return make(connection_string, *args, **kwargs)
    except ValueError as error:  # the SDK's words: "Connection string is either blank or malformed."
        raise ConfigError(
            f"app setting AzureWebJobsStorage is not a storage connection string ({error}); use "
            "UseDevelopmentStorage=true for Azurite or the account's connection string"
        ) from None


def _storage_credential(environ: Mapping[str, str] | None) -> TokenCredential:
    from azure.identity import DefaultAzureCredential, ManagedIdentityCredential

    if (setting("AzureWebJobsStorage__credential", environ) or "").lower() == "managedidentity":
        return ManagedIdentityCredential(client_id=setting("AzureWebJobsStorage__clientId", environ))
    return DefaultAzureCredential()
