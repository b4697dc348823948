"""Entra's free-text `country` → a value Exchange's CountryOrRegion accepts (ISO 3166-1 alpha-2), or None."""

from __future__ import annotations

import unicodedata
from functools import cache, lru_cache

import pycountry

# Spellings admins type into Entra that ISO does not list.
_COMMON_NAMES = {
    "uk": "GB", "u.k.": "GB", "england": "GB", "scotland": "GB", "wales": "GB", "northern ireland": "GB",
    "great britain": "GB", "britain": "GB", "usa": "US", "u.s.": "US", "u.s.a.": "US", "america": "US",
    "united states of america": "US", "south korea": "KR", "korea": "KR", "north korea": "KP", "russia": "RU",
    "vietnam": "VN", "iran": "IR", "syria": "SY", "laos": "LA", "bolivia": "BO", "venezuela": "VE",
    "tanzania": "TZ", "moldova": "MD", "taiwan": "TW", "czech republic": "CZ", "the netherlands": "NL",
    "holland": "NL", "uae": "AE", "ivory coast": "CI", "turkey": "TR", "macedonia": "MK", "brunei": "BN",
    "cape verde": "CV", "swaziland": "SZ", "burma": "MM", "vatican": "VA", "palestine": "PS",
}


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().split())


@cache
def _index() -> dict[str, str]:
    index: dict[str, str] = {}
    for country in pycountry.countries:
        code = country.alpha_2
        for name in (
            code,
            country.alpha_3,
            country.name,
            getattr(country, "official_name", None),
            getattr(country, "common_name", None),
        ):
            if name:
                index.setdefault(_fold(name), code)
    index.update(_COMMON_NAMES)
    return index


@lru_cache(maxsize=4096)
def country_code(value: str | None) -> str | None:
    """ISO alpha-2 code for a country name or code as people write it; None when it is not recognisable."""
    if not value or not value.strip():
        return None
    return _index().get(_fold(value))
