"""Who gets a contact: every skip reason, and the settings that lift them."""

from __future__ import annotations

import pytest

from sync.contract.pairs import TenantPair
from sync.core.scope import SKIP_REASONS, decide_scope, mail_address
from tests.support.factories import make_pair, make_user, pair_definition


@pytest.mark.parametrize(
    ("user_fields", "scope", "reason"),
    [
        ({"userType": "Guest"}, {}, "guest"),
        ({"userPrincipalName": "bob_gmail.com#EXT#@contoso.onmicrosoft.com"}, {}, "guest"),
        ({"accountEnabled": False}, {}, "disabled"),
        ({"showInAddressList": False}, {}, "hidden_from_gal"),
        ({"mail": None, "proxyAddresses": []}, {}, "no_mail"),
        ({"mail": None, "proxyAddresses": ["smtp:secondary@contoso.com"]}, {}, "no_mail"),
        ({"mail": "not an address"}, {}, "invalid_mail"),
        ({"mail": "a@b"}, {}, "invalid_mail"),
        ({"mail": "a@partner.com"}, {"exclude_domains": ["partner.com"]}, "domain_excluded"),
        ({"mail": "a@partner.com"}, {"include_domains": ["contoso.com"]}, "domain_not_included"),
        ({"mail": "a@Partner.COM"}, {"exclude_domains": ["PARTNER.com"]}, "domain_excluded"),
    ],
)
def test_every_skip_reason(user_fields: dict[str, object], scope: dict[str, object], reason: str) -> None:
    decision = decide_scope(make_pair(scope=scope), make_user(**user_fields))
    assert (decision.in_scope, decision.reason) == (False, reason)
    assert reason in SKIP_REASONS


@pytest.mark.parametrize(
    ("user_fields", "scope"),
    [
        ({"userType": "Guest"}, {"include_guests": True}),
        ({"accountEnabled": False}, {"include_disabled": True}),
        ({"showInAddressList": False}, {"honor_hidden_from_gal": False}),
        ({"mail": "a@contoso.com"}, {"include_domains": ["contoso.com"]}),
        ({"accountEnabled": None, "userType": None}, {}),
    ],
)
def test_settings_that_bring_users_in(user_fields: dict[str, object], scope: dict[str, object]) -> None:
    assert decide_scope(make_pair(scope=scope), make_user(**user_fields)).in_scope


def test_primary_proxy_address_is_the_fallback_for_missing_mail() -> None:
    user = make_user(mail=None, proxyAddresses=["smtp:old@contoso.com", "SMTP:Primary@contoso.com"])
    assert mail_address(user) == "Primary@contoso.com"
    decision = decide_scope(make_pair(), user)
    assert decision.in_scope and decision.address == "Primary@contoso.com"


def group_pair(**scope: object) -> TenantPair:
    # Built without parse_pair's release gate, so the rule can be tested on its own.
    return TenantPair.model_validate(pair_definition(scope=scope))


GROUP_A, GROUP_B = "aaaaaaaa-0000-0000-0000-00000000000a", "bbbbbbbb-0000-0000-0000-00000000000b"


@pytest.mark.parametrize(
    ("scope", "groups", "reason"),
    [
        ({"include_groups": [GROUP_A]}, frozenset(), "not_in_group"),
        ({"include_groups": [GROUP_A]}, frozenset({GROUP_B}), "not_in_group"),
        ({"include_groups": [GROUP_A]}, frozenset({GROUP_A}), None),
        ({"exclude_groups": [GROUP_B]}, frozenset({GROUP_B}), "excluded_by_group"),
        ({"include_groups": [GROUP_A], "exclude_groups": [GROUP_B]}, frozenset({GROUP_A, GROUP_B}), "excluded_by_group"),
        ({"exclude_groups": [GROUP_B]}, frozenset(), None),
    ],
)
def test_group_scope_exclude_wins(scope: dict[str, object], groups: frozenset[str], reason: str | None) -> None:
    decision = decide_scope(group_pair(**scope), make_user(), groups)
    assert (decision.in_scope, decision.reason) == (reason is None, reason)
