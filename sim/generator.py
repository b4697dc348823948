"""Realistic and hostile source users, and realistic churn, for tests and the demo (deterministic per seed).

    users = generate_users(500, seed=7, domain="contoso.com")
    for user in users: tenant.directory.add_user(user)
    load_users(tenant.directory, 100_000, seed=7, managers=True)   # bulk: no copies, about 3 s per 100,000 users
    done = mutate(tenant.directory, random.Random(1), n_changes=20)   # [("rename", id), ("delete", id), ...]

Hostile on purpose: diacritics, Cyrillic/CJK/Arabic names, apostrophes and quotes, 300-character titles, no mail (with
and without a proxyAddresses fallback), disabled accounts, guests with #EXT# UPNs, secondary domains, free-text
countries ("Deutschland", "UK", "Narnia"), several business phones, extension attributes.
"""

from __future__ import annotations

import random
import unicodedata
import uuid
from typing import Any

from sim.directory import Directory

GIVEN = ["Adele", "Zoë", "José", "François", "Søren", "Łukasz", "Ólafur", "Siobhán", "Bob", "Ærin", "Mary-Jane",
         "Иван", "Анна", "太郎", "美咲", "محمد", "فاطمة", "Nguyễn", "Chloé", "Björn"]
SURNAMES = ["Vance", "O'Brien", "Müller", "García", "Dvořák", "Ng", "Петров", "山田", "العلي", "D'Angelo",
            "van der Berg", "Smith", "Øster", "Núñez", "Kowalski", "Schröder"]
DEPARTMENTS = ["Sales", "Marketing", "R&D", "Finance", "Legal", "IT", "Human Resources", "Support", "Operations"]
TITLES = ["Engineer", "Senior Engineer", "Manager", "Director", "Account Executive", "Analyst", "Intern"]
COUNTRIES = ["United States", "US", "Germany", "Deutschland", "UK", "United Kingdom", "France", "FR", "Japan",
             "Narnia", "Brasil", "España", "", "Netherlands"]
CITIES = ["Seattle", "München", "London", "Paris", "東京", "São Paulo", "Zürich", "Kraków"]


def _ascii(text: str) -> str:
    folded = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    return "".join(c for c in folded.lower() if c.isalnum())


def _user(rng: random.Random, index: int, domain: str, secondary: str) -> dict[str, Any]:
    given, surname = rng.choice(GIVEN), rng.choice(SURNAMES)
    local = f"{_ascii(given) or 'user'}.{_ascii(surname) or 'x'}{index}"
    mail_domain = secondary if rng.random() < 0.15 else domain
    user: dict[str, Any] = {
        "id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "displayName": f"{given} {surname}",
        "givenName": given,
        "surname": surname,
        "userPrincipalName": f"{local}@{domain}",
        "mail": f"{local}@{mail_domain}",
        "proxyAddresses": [f"SMTP:{local}@{mail_domain}", f"smtp:{local}@{domain.split('.')[0]}.onmicrosoft.com"],
        "userType": "Member",
        "accountEnabled": rng.random() > 0.08,
        "showInAddressList": rng.random() > 0.05,
        "companyName": rng.choice(["Contoso", "Contoso Ltd.", "Contoso \"Labs\"", None]),
        "department": rng.choice(DEPARTMENTS),
        "jobTitle": rng.choice(TITLES),
        "officeLocation": f"Building {rng.randint(1, 40)}",
        "businessPhones": [f"+1 425 555 {rng.randint(1000, 9999)}" for _ in range(rng.choice([0, 1, 1, 2]))],
        "mobilePhone": f"+1 206 555 {rng.randint(1000, 9999)}" if rng.random() < 0.6 else None,
        "city": rng.choice(CITIES),
        "country": rng.choice(COUNTRIES),
        "postalCode": str(rng.randint(10000, 99999)),
        "streetAddress": f"{rng.randint(1, 300)} Main St.",
        "employeeId": str(100000 + index),
    }
    roll = rng.random()
    if roll < 0.05:
        user["jobTitle"] = ("Principal " + "Very Long Title " * 20)[:300]
    elif roll < 0.10:
        del user["mail"]  # no mail, but proxyAddresses hold the primary SMTP
    elif roll < 0.13:
        del user["mail"]
        user["proxyAddresses"] = []  # nothing to sync to
    elif roll < 0.20:
        home = rng.choice(["fabrikam.com", "gmail.com", "outlook.com"])
        user["userType"] = "Guest"
        user["userPrincipalName"] = f"{local}_{home.replace('.', '_')}#EXT#@{domain.split('.')[0]}.onmicrosoft.com"
        user["mail"] = f"{local}@{home}"
        user["proxyAddresses"] = [f"SMTP:{local}@{home}"]
    elif roll < 0.25:
        user["displayName"] = f"\"{given}\" {surname}"
    elif roll < 0.30:
        user["mail"] = f"shared.{local}@{domain}"
        user["displayName"] = f"Shared {given}"
    if rng.random() < 0.2:
        user["onPremisesExtensionAttributes"] = {
            f"extensionAttribute{n}": (f"value{n}-{index}" if n in (1, 7, 15) else None) for n in range(1, 16)
        }
    return {k: v for k, v in user.items() if v is not None and v != ""}


def generate_users(n: int, seed: int = 0, domain: str = "contoso.com", *, managers: bool = False) -> list[dict[str, Any]]:
    """`n` Graph-shaped users, the same for the same seed and domain. With `managers`, every user but the first
    reports to an earlier one (a tree eight wide), as in an organisation chart."""
    rng = random.Random(seed)
    secondary = f"{domain.split('.')[0]}-eu.{'.'.join(domain.split('.')[1:]) or 'com'}"
    users = [_user(rng, index, domain, secondary) for index in range(n)]
    if managers:
        for index in range(1, n):
            users[index]["manager"] = users[(index - 1) // 8]["id"]
    return users


def load_users(directory: Directory, n: int, seed: int = 0, *, managers: bool = False) -> list[str]:
    """Generate `n` users for the directory's domain and add them in one go (no copies); returns their ids."""
    return directory.add_users(generate_users(n, seed=seed, domain=directory.domain, managers=managers), copy=False)


def mutate(directory: Directory, rng: random.Random, n_changes: int) -> list[tuple[str, str]]:
    """Apply `n_changes` realistic changes; returns (what, user id) for each, in order."""
    done: list[tuple[str, str]] = []
    for _ in range(n_changes):
        users = directory.users
        deleted = directory.deleted_users
        action = rng.choice(["rename", "move", "title", "delete", "restore", "hire", "disable", "purge"])
        if action == "restore" and not deleted:
            action = "hire"
        if action in ("rename", "move", "title", "delete", "disable", "purge") and not users:
            action = "hire"
        if action == "hire":
            fresh = _user(rng, rng.randint(10**6, 10**7), directory.domain, directory.domain)
            done.append(("hire", directory.add_user(fresh)))
            continue
        if action == "restore":
            uid = rng.choice(deleted)["id"]
            directory.restore_user(uid)
        else:
            uid = rng.choice(users)["id"]
            if action == "rename":
                directory.update_user(uid, displayName=f"{rng.choice(GIVEN)} {rng.choice(SURNAMES)}")
            elif action == "move":
                directory.update_user(uid, department=rng.choice(DEPARTMENTS))
            elif action == "title":
                directory.update_user(uid, jobTitle=rng.choice(TITLES))
            elif action == "disable":
                directory.update_user(uid, accountEnabled=False)
            elif action == "delete":
                directory.delete_user(uid)
            else:
                directory.delete_user(uid, permanent=True)
        done.append((action, uid))
    return done
