"""Endpoints of the Microsoft clouds a tenant can live in."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CloudEndpoints:
    authority: str  # token authority host, e.g. https://login.microsoftonline.com
    graph: str  # Microsoft Graph, e.g. https://graph.microsoft.com
    exchange: str  # Exchange Online admin API host, e.g. https://outlook.office365.com

    @property
    def graph_scope(self) -> str:
        return f"{self.graph}/.default"

    @property
    def exchange_scope(self) -> str:
        return f"{self.exchange}/.default"


NAMED_CLOUDS: dict[str, CloudEndpoints] = {
    "global": CloudEndpoints(
        "https://login.microsoftonline.com", "https://graph.microsoft.com", "https://outlook.office365.com"
    ),
    "usgov": CloudEndpoints("https://login.microsoftonline.us", "https://graph.microsoft.us", "https://outlook.office365.us"),
    "usgovdod": CloudEndpoints("https://login.microsoftonline.us", "https://dod-graph.microsoft.us", "https://webmail.apps.mil"),
    "china": CloudEndpoints(
        "https://login.chinacloudapi.cn", "https://microsoftgraph.chinacloudapi.cn", "https://partner.outlook.cn"
    ),
}
