"""A tenant's recorded behaviour as the simulator's profile: `CTCS_SIM_PROFILE=FILE`, where FILE is the redacted
record `python -m sync pairs test ID --deep --record FILE` wrote against a real tenant (or against the simulator).

    CTCS_SIM_PROFILE=record.json python3 dev.py test tests/connection   # the suite against what a tenant showed
    SimCloud(profile=SimProfile.load("record.json"))                    # the same, in code

What a record switches (each only when the record says it):
- the `Rate-Limit-Reset` format: `iso-8601` → "iso", `seconds` → "seconds" (`ExchangeProfile.rate_limit_reset_format`);
- the concurrency headers: `absent` in the record → none sent (`ExchangeProfile.concurrency_headers`);
- each Get-* cmdlet's property set: a property ctcs asked for and the tenant did not return is dropped from what the
  simulated cmdlet returns (`sim.exchange_org.CMDLET_PROPERTIES`, restored when the cloud stops).

A SimCloud reads the variable when it is made; every tenant it makes afterwards gets the profile.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sim import exchange_org
from sim.exchange_limits import ExchangeProfile

PROFILE_FILE_VARIABLE = "CTCS_SIM_PROFILE"
RESET_FORMATS = {"iso-8601": "iso", "seconds": "seconds"}
CONCURRENCY_HEADERS = ("X-Concurrencycount", "X-Combinedapponlyconcurrencycount")


class ProfileError(ValueError):
    """A profile file that is not a deep-test record (the message names the file and the field)."""


@dataclass(frozen=True)
class SimProfile:
    """What a record tells the simulator to do differently; None / empty: keep the simulator's own behaviour."""

    rate_limit_reset_format: str | None = None
    concurrency_headers: bool | None = None
    missing_properties: Mapping[str, frozenset[str]] = field(default_factory=dict)  # per cmdlet

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> SimProfile:
        path = (os.environ if environ is None else environ).get(PROFILE_FILE_VARIABLE, "").strip()
        return cls.load(path) if path else cls()

    @classmethod
    def load(cls, path: str | Path) -> SimProfile:
        try:
            record = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            raise ProfileError(f"{PROFILE_FILE_VARIABLE}={path}: not a readable JSON file ({error})") from None
        return cls.from_record(record, where=str(path))

    @classmethod
    def from_record(cls, record: Any, *, where: str = "record") -> SimProfile:
        if not isinstance(record, dict) or "ctcs_deep_record" not in record:
            raise ProfileError(f"{where}: not a ctcs deep-test record (no ctcs_deep_record field)")
        exchange = _mapping(record.get("exchange"))
        headers = _mapping(exchange.get("headers"))
        reset = RESET_FORMATS.get(str(headers.get("Rate-Limit-Reset", "")))
        concurrency = {str(headers.get(name, "")) for name in CONCURRENCY_HEADERS} - {""}
        missing: dict[str, frozenset[str]] = {}
        cmdlets = _mapping(exchange.get("cmdlets"))
        for cmdlet, seen in cmdlets.items():
            if not isinstance(seen, dict) or "properties" not in seen:
                continue  # no row was read: the record says nothing about the property set
            asked, returned = seen.get("asked"), seen.get("properties")
            if not isinstance(asked, list) or not isinstance(returned, list):
                raise ProfileError(f"{where}: exchange.cmdlets.{cmdlet}: asked and properties must be lists")
            if gone := frozenset(map(str, asked)) - frozenset(map(str, returned)):
                missing[str(cmdlet)] = gone
        return cls(reset, (concurrency != {"absent"}) if concurrency else None, missing)

    def exchange_profile(self, base: ExchangeProfile) -> ExchangeProfile:
        """`base` with the record's header behaviour (only the switches this simulator has)."""
        known = {f.name for f in dataclasses.fields(base)}
        changes: dict[str, Any] = {name: value for name, value in (("rate_limit_reset_format", self.rate_limit_reset_format),
                                                   ("concurrency_headers", self.concurrency_headers))
                   if value is not None and name in known}
        return dataclasses.replace(base, **changes) if changes else base

    def apply_properties(self) -> dict[str, frozenset[str]]:
        """Drop the record's missing properties from the cmdlets' property sets; returns the entries it replaced
        (for `restore_properties`)."""
        table: dict[str, frozenset[str]] = exchange_org.CMDLET_PROPERTIES
        replaced: dict[str, frozenset[str]] = {}
        for cmdlet, gone in self.missing_properties.items():
            if cmdlet in table:
                replaced[cmdlet] = table[cmdlet]
                table[cmdlet] = table[cmdlet] - gone
        return replaced

    @staticmethod
    def restore_properties(replaced: Mapping[str, frozenset[str]]) -> None:
        exchange_org.CMDLET_PROPERTIES.update(replaced)


def _mapping(value: object) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
