"""The user generator is deterministic, hostile enough, and its users load into the directory."""

from __future__ import annotations

import random

from sim import SimCloud
from sim.generator import generate_users, mutate


def test_same_seed_same_users() -> None:
    assert generate_users(50, seed=3, domain="contoso.com") == generate_users(50, seed=3, domain="contoso.com")
    assert generate_users(50, seed=3) != generate_users(50, seed=4)


def test_hostile_variety() -> None:
    users = generate_users(400, seed=1, domain="contoso.com")
    names = " ".join(u["displayName"] for u in users)
    assert any("\u0400" <= c <= "\u04ff" for c in names)  # Cyrillic
    assert any("\u4e00" <= c <= "\u9fff" for c in names)  # CJK
    assert any("\u0600" <= c <= "\u06ff" for c in names)  # Arabic
    assert "'" in names and '"' in names
    assert any(len(u.get("jobTitle", "")) == 300 for u in users)
    assert any("mail" not in u and u["proxyAddresses"] for u in users)
    assert any("mail" not in u and not u["proxyAddresses"] for u in users)
    assert any(u["userType"] == "Guest" and "#EXT#" in u["userPrincipalName"] for u in users)
    assert any(not u["accountEnabled"] for u in users)
    assert {"Deutschland", "UK", "Narnia"} <= {u.get("country") for u in users}
    assert any(len(u["businessPhones"]) > 1 for u in users)
    assert any("onPremisesExtensionAttributes" in u for u in users)
    assert any(u.get("mail", "").endswith("@contoso-eu.com") for u in users)
    assert len({u["id"] for u in users}) == 400


def test_mutate_applies_and_reports(cloud: SimCloud) -> None:
    tenant = cloud.add_tenant()
    for user in generate_users(30, seed=2, domain=tenant.domain):
        tenant.directory.add_user(user)
    before = tenant.directory.sequence
    done = mutate(tenant.directory, random.Random(5), n_changes=40)
    assert len(done) == 40
    assert tenant.directory.sequence == before + 40
    assert {what for what, _ in done} >= {"rename", "delete", "hire"}
    again = cloud.add_tenant()
    for user in generate_users(30, seed=2, domain=tenant.domain):
        again.directory.add_user(user)
    assert [w for w, _ in mutate(again.directory, random.Random(5), n_changes=40)] == [w for w, _ in done]
