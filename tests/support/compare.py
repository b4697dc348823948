"""Compare a desired contact with what the simulated Exchange holds (tests, the reliability suite, benchmarks)."""

from __future__ import annotations

from typing import Any

from sim.countries import country_code


def contact_differences(desired: dict[str, Any], actual: dict[str, Any]) -> list[str]:
    """Every parameter of the desired contact that the Exchange object does not hold, read as Exchange answers:
    `ExternalEmailAddress` with its `SMTP:` prefix and `CountryOrRegion` as the country's English name."""
    problems = []
    for name, want in desired.items():
        have = actual.get(name)
        if name == "ExternalEmailAddress":
            have = str(have or "")
            have = have[5:] if have[:5].lower() == "smtp:" else have
        elif name == "CountryOrRegion":
            have = country_code(str(have)) if have else ""
        elif name == "HiddenFromAddressListsEnabled":
            if bool(have) is not bool(want):
                problems.append(f"{name} is {have!r}, expected {want!r}")
            continue
        if str(have or "") != str(want or ""):
            problems.append(f"{name} is {str(have)[:80]!r}, expected {str(want)[:80]!r}")
    return problems
