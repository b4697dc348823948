"""Who the source hides from its own address lists, read from the source's Exchange (authoritative).

Graph's `showInAddressList` is documented as unreliable; when a pair grants read access to the source's
Exchange (`source.exchange`), one `Get-Recipient -Filter "HiddenFromAddressListsEnabled -eq 'True'"` listing per
run gives the Entra object ids of every hidden recipient instead.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

HIDDEN_FILTER = "HiddenFromAddressListsEnabled -eq 'True'"
HIDDEN_SELECT = ("ExternalDirectoryObjectId", "HiddenFromAddressListsEnabled")  # what the listing reads


class RecipientReader(Protocol):
    def iter_rows(
        self, cmdlet: str, parameters: dict[str, Any], *, select: tuple[str, ...] = (), retry_not_found: bool = False
    ) -> Iterable[dict[str, Any]]: ...


class SourceVisibility:
    """Reads the hidden recipients of a source organisation (any object with the Exchange target's `iter_rows`)."""

    def __init__(self, reader: RecipientReader) -> None:
        self.reader = reader

    def hidden_ids(self) -> frozenset[str]:
        rows = self.reader.iter_rows(
            "Get-Recipient",
            {"Filter": HIDDEN_FILTER, "ResultSize": "Unlimited"},
            select=HIDDEN_SELECT,
        )
        return frozenset(
            str(row["ExternalDirectoryObjectId"]).lower()
            for row in rows
            if row.get("ExternalDirectoryObjectId") and row.get("HiddenFromAddressListsEnabled") in (True, "True", "true")
        )
