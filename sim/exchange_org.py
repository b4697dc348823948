"""The target tenant's Exchange organisation: recipients as flat property bags, and the mail-contact cmdlets.

Rules enforced as Exchange enforces them: unique Name and Alias among live recipients, unique proxy addresses across
ALL recipients (soft-deleted ones too), Name/Alias ≤ 64, DisplayName ≤ 256, CustomAttributeN ≤ 1024, Alias
characters, SMTP validity, CountryOrRegion (ISO alpha-2 or English short name), Manager must resolve, no empty
Identity, no unknown parameter. Failures raise `CmdletError`, which sim.exchange renders in the reference's envelopes.

    org.add_recipient(kind="UserMailbox", name="adele", address="adele@fabrikam.com", DisplayName="Adele Vance")
    org.contacts(); org.recipients(); org.get(guid)
    org.replication_lag = 2.0     # a fresh object answers NotFound by Identity for this many seconds
    org.page_size = 1000          # server page size (the client's Prefer: odata.maxpagesize can lower it)
    org.errors_in_200 = False     # True: every cmdlet failure comes back as 200 + "@adminapi.errors"
    org.limits                    # latency, concurrency cap, budget, creation quota (sim.exchange_limits)
"""

from __future__ import annotations

import copy
import re
import threading
import time
import uuid
from typing import Any

from sim.countries import country_code, country_name
from sim.exchange_limits import ExchangeLimits
from sim.opath import FilterError, compile_filter, equality_terms

KINDS = {  # kind -> (RecipientType, RecipientTypeDetails, soft-deleted?)
    "UserMailbox": ("UserMailbox", "UserMailbox", False),
    "SharedMailbox": ("UserMailbox", "SharedMailbox", False),
    "GuestMailUser": ("MailUser", "GuestMailUser", False),
    "MailUser": ("MailUser", "MailUser", False),
    "MailContact": ("MailContact", "MailContact", False),
    "MailUniversalDistributionGroup": ("MailUniversalDistributionGroup", "MailUniversalDistributionGroup", False),
    "SoftDeletedMailbox": ("UserMailbox", "UserMailbox", True),
    "SoftDeletedMailUser": ("MailUser", "MailUser", True),
}
CUSTOM = tuple(f"CustomAttribute{n}" for n in range(1, 16))
CONTACT_TEXT = (
    "FirstName", "LastName", "Initials", "Company", "Department", "Title", "Office", "Phone", "MobilePhone",
    "HomePhone", "Fax", "StreetAddress", "City", "StateOrProvince", "PostalCode", "Notes",
)
COMMON = {"Confirm", "ErrorAction", "WarningAction", "Verbose", "Debug"}
PARAMETERS = {
    "New-MailContact": {"Name", "ExternalEmailAddress", "Alias", "DisplayName", "FirstName", "LastName", "Initials",
                        "OrganizationalUnit"},
    "Set-MailContact": {"Identity", "Name", "DisplayName", "ExternalEmailAddress", "Alias", "EmailAddresses",
                        "HiddenFromAddressListsEnabled", "MailTip", "PrimarySmtpAddress", *CUSTOM,
                        *(f"ExtensionCustomAttribute{n}" for n in range(1, 6))},
    "Set-Contact": {"Identity", "Name", "DisplayName", "CountryOrRegion", "Manager", *CONTACT_TEXT},
    "Remove-MailContact": {"Identity"},
    "Get-MailContact": {"Identity", "Filter", "ResultSize", "Anr"},
    "Get-Recipient": {"Identity", "Filter", "ResultSize", "RecipientTypeDetails", "Anr"},
    "Get-Contact": {"Identity", "Filter", "ResultSize", "RecipientTypeDetails", "Anr"},
}
# What each Get-* cmdlet returns of a recipient, as Exchange Online answers (the documented property sets): Get-Recipient
# the reduced recipient (the mail side and most Set-Contact properties, but not Initials, MobilePhone, HomePhone, Fax,
# StreetAddress, nor MailTip), Get-MailContact Set-MailContact's properties (none of Set-Contact's), Get-Contact
# Set-Contact's (no custom attributes, addresses, alias or visibility). New-MailContact answers the mail contact;
# other cmdlets return nothing. A module-level mapping, so a recorded tenant profile can replace an entry.
_EXTENSION = tuple(f"ExtensionCustomAttribute{n}" for n in range(1, 6))
_IDENTITY = frozenset({"Guid", "ExchangeObjectId", "Name", "Identity", "Id", "DisplayName", "DistinguishedName",
                       "RecipientType", "RecipientTypeDetails", "WhenCreated", "WhenChanged"})
_MAIL = frozenset({*CUSTOM, *_EXTENSION, "Alias", "PrimarySmtpAddress", "EmailAddresses", "ExternalEmailAddress",
                   "ExternalDirectoryObjectId", "HiddenFromAddressListsEnabled"})
_REDUCED_PERSON = frozenset({*CONTACT_TEXT, "CountryOrRegion", "Manager"}) - {
    "Initials", "MobilePhone", "HomePhone", "Fax", "StreetAddress"}
CMDLET_PROPERTIES: dict[str, frozenset[str]] = {
    "Get-Recipient": _IDENTITY | _MAIL | _REDUCED_PERSON,
    "Get-MailContact": _IDENTITY | _MAIL | {"MailTip", "WindowsEmailAddress"},
    "Get-Contact": _IDENTITY | {*CONTACT_TEXT, "CountryOrRegion", "Manager", "WindowsEmailAddress"},
}
CMDLET_PROPERTIES["New-MailContact"] = CMDLET_PROPERTIES["Get-MailContact"]
NS = {
    "NotFound": "Microsoft.Exchange.Configuration.Tasks.ManagementObjectNotFoundException",
    "Exists": "Microsoft.Exchange.Data.Directory.ADObjectAlreadyExistsException",
    "Proxy": "Microsoft.Exchange.Data.Directory.ProxyAddressExistsException",
    "Validation": "Microsoft.Exchange.Data.DataValidationException",
    "Binding": "System.Management.Automation.ParameterBindingException",
    "Task": "Microsoft.Exchange.Configuration.Tasks.RecipientTaskException",
    "Ambiguous": "Microsoft.Exchange.Configuration.Tasks.ManagementObjectAmbiguousException",
    "Command": "System.Management.Automation.CommandNotFoundException",
    "Quota": "Microsoft.Exchange.Management.Tasks.RecipientUsageExceededRecentQuotaException",
}
SHAPE_BY_TYPE = {"NotFound": "json", "Exists": "pipe", "Proxy": "pipe", "Validation": "innererror",
                 "Binding": "json", "Task": "pipe", "Ambiguous": "innererror", "Command": "json",
                 "Quota": "pipe"}
STATUS_BY_TYPE = {"NotFound": 404, "Ambiguous": 500}
ALIAS_RE = re.compile(r"^[A-Za-z0-9!#%*+\-/=?^_~]+(\.[A-Za-z0-9!#%*+\-/=?^_~]+)*$")
SMTP_RE = re.compile(r"^[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)+$")
DN_TAIL = "OU=Microsoft Exchange Hosted Organizations,DC=EURPR01A001,DC=PROD,DC=OUTLOOK,DC=COM"
QUOTA_MESSAGE = "You've reached the maximum number of mail users and contacts you can create at this time."


class CmdletError(Exception):
    """A cmdlet failure. `kind` keys NS/SHAPE_BY_TYPE/STATUS_BY_TYPE; `non_terminating` → 200 + @adminapi.errors."""

    def __init__(self, kind: str, message: str, *, non_terminating: bool = False) -> None:
        super().__init__(message)
        self.kind, self.message, self.non_terminating = kind, message, non_terminating
        self.type_name = NS[kind]
        self.status = STATUS_BY_TYPE.get(kind, 400)
        self.shape = SHAPE_BY_TYPE[kind]


def _smtp(value: Any, parameter: str) -> str:
    text = str(value or "").strip()
    address = text[5:] if text.lower().startswith("smtp:") else text
    if not SMTP_RE.match(address):
        raise CmdletError("Binding", f"Cannot process argument transformation on parameter '{parameter}'. "
                                     f"\"{text}\" is not an SMTP e-mail address.")
    return address


class ExchangeOrg:
    """Recipients of one organisation. Thread-safe through `lock` (the cloud's shared lock)."""

    def __init__(self, *, tenant_id: str, domain: str) -> None:
        self.tenant_id, self.domain = tenant_id, domain
        self.lock: threading.RLock = threading.RLock()
        self._recipients: dict[str, dict[str, Any]] = {}
        self._created: dict[str, float] = {}
        # Lower-cased identity key → Guids holding it, so lookups stay O(1) with thousands of recipients.
        self._index: dict[str, dict[str, dict[str, None]]] = {
            kind: {} for kind in ("name", "alias", "dn", "address", "custom")
        }
        self.replication_lag = 0.0
        self.page_size = 1000
        self.errors_in_200 = False
        self.limits = ExchangeLimits()

    # reading ---------------------------------------------------------------------------------------------------
    def recipients(self, *, include_soft_deleted: bool = False) -> list[dict[str, Any]]:
        with self.lock:
            return [copy.deepcopy(r) for r in self._recipients.values() if include_soft_deleted or not r["_soft"]]

    def contacts(self) -> list[dict[str, Any]]:
        return [r for r in self.recipients() if r["RecipientTypeDetails"] == "MailContact"]

    def get(self, guid: str) -> dict[str, Any] | None:
        with self.lock:
            found = self._recipients.get(guid.lower())
            return copy.deepcopy(found) if found else None

    def set_recipient(self, guid: str, **attrs: Any) -> None:
        """Change a recipient as an admin would in the Exchange admin center (e.g. hide a mailbox)."""
        with self.lock:
            recipient = self._recipients[guid.lower()]
            self._unindex(recipient)
            recipient.update(attrs)
            self._reindex(recipient)

    # seeding ---------------------------------------------------------------------------------------------------
    def add_recipient(self, kind: str, name: str, address: str, **attrs: Any) -> str:
        """Seed any recipient (mailbox, guest, mail user, contact, group, soft-deleted). Returns its Guid."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {sorted(KINDS)}")
        with self.lock:
            recipient = self._new_bag(kind, name, attrs.pop("Alias", None) or re.sub(r"[^A-Za-z0-9]", "", name) or "r",
                                      _smtp(address, "address"), attrs.pop("DisplayName", None) or name)
            extra = [a if ":" in a else f"smtp:{a}" for a in attrs.pop("EmailAddresses", [])]
            recipient["EmailAddresses"] += extra
            recipient.update(attrs)
            self._check_unique(recipient, None)
            self._store(recipient, lag=False)
            return str(recipient["Guid"])

    def _new_bag(self, kind: str, name: str, alias: str, address: str, display: str) -> dict[str, Any]:
        rtype, details, soft = KINDS[kind]
        guid = str(uuid.uuid4())
        bag: dict[str, Any] = {
            "Guid": guid, "ExchangeObjectId": guid, "Name": name, "Identity": name, "Id": name, "Alias": alias,
            "DisplayName": display, "DistinguishedName": f"CN={name},OU={self.domain},{DN_TAIL}",
            "PrimarySmtpAddress": address, "EmailAddresses": [f"SMTP:{address}"],
            "ExternalEmailAddress": f"SMTP:{address}" if rtype in ("MailContact", "MailUser") else None,
            "RecipientType": rtype, "RecipientTypeDetails": details, "HiddenFromAddressListsEnabled": False,
            "CountryOrRegion": None, "Manager": None, "MailTip": None,
            "WhenCreated": time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
            "_soft": soft,
        }
        bag.update(dict.fromkeys(CUSTOM, ""))
        bag.update({f"ExtensionCustomAttribute{n}": [] for n in range(1, 6)})
        bag.update(dict.fromkeys(CONTACT_TEXT, ""))
        return bag

    def _store(self, recipient: dict[str, Any], *, lag: bool) -> None:
        recipient["WhenChanged"] = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime())
        previous = self._recipients.get(recipient["Guid"])
        if previous is not None:
            self._unindex(previous)
        self._recipients[recipient["Guid"]] = recipient
        self._reindex(recipient)
        self._created.setdefault(recipient["Guid"], time.monotonic() if lag else 0.0)

    def _drop(self, guid: str) -> None:
        self._unindex(self._recipients.pop(guid))
        self._created.pop(guid, None)

    @staticmethod
    def _keys(recipient: dict[str, Any]) -> dict[str, list[str]]:
        return {"name": [recipient["Name"].lower()], "alias": [recipient["Alias"].lower()],
                "dn": [recipient["DistinguishedName"].lower()],
                "address": [a.split(":", 1)[-1].lower() for a in recipient["EmailAddresses"]],
                "custom": [f"{n}={recipient[n]}".lower() for n in CUSTOM if isinstance(recipient.get(n), str) and recipient[n]]}

    def _reindex(self, recipient: dict[str, Any]) -> None:
        for kind, keys in self._keys(recipient).items():
            for key in keys:
                self._index[kind].setdefault(key, {})[recipient["Guid"]] = None

    def _unindex(self, recipient: dict[str, Any]) -> None:
        for kind, keys in self._keys(recipient).items():
            for key in keys:
                holders = self._index[kind].get(key)
                if holders is not None:
                    holders.pop(recipient["Guid"], None)
                    if not holders:
                        del self._index[kind][key]

    def _holding(self, kind: str, key: str) -> list[dict[str, Any]]:
        return [self._recipients[guid] for guid in self._index[kind].get(key.lower(), {})]

    # rules -----------------------------------------------------------------------------------------------------
    def _holder_of(self, address: str, exclude: str | None) -> dict[str, Any] | None:
        return next((other for other in self._holding("address", address) if other["Guid"] != exclude), None)

    def _check_unique(self, recipient: dict[str, Any], exclude: str | None) -> None:
        def live(kind: str, key: str) -> list[dict[str, Any]]:
            return [r for r in self._holding(kind, key) if r["Guid"] != exclude and not r["_soft"]]

        if live("name", recipient["Name"]):
            raise CmdletError("Exists", f"The object '{recipient['DistinguishedName']}' already exists.")
        holder = next(iter(live("alias", recipient["Alias"])), None)
        if holder is not None:
            raise CmdletError("Task", f"The alias \"{recipient['Alias']}\" is being used by another recipient object "
                                      f"\"{holder['Name']}\". Please choose another alias.")
        for address in recipient["EmailAddresses"]:
            holder = self._holder_of(address.split(":", 1)[-1], exclude)
            if holder is not None:
                raise CmdletError("Proxy", f"The proxy address \"SMTP:{address.split(':', 1)[-1]}\" is already being "
                                           f"used by the proxy addresses or LegacyExchangeDN of \"{holder['Name']}\". "
                                           "Please choose another proxy address.")

    @staticmethod
    def _check_lengths(params: dict[str, Any]) -> None:
        limits = {"Name": 64, "Alias": 64, "DisplayName": 256, **dict.fromkeys(CUSTOM, 1024)}
        for name, limit in limits.items():
            value = params.get(name)
            if isinstance(value, str) and len(value) > limit:
                raise CmdletError("Validation", f"The length of the property is too long. The maximum length is "
                                                f"{limit} and the length of the value provided is {len(value)}. "
                                                f"Property: {name}.")
        alias = params.get("Alias")
        if alias is not None and not ALIAS_RE.match(str(alias)):
            raise CmdletError("Validation", f"The value \"{alias}\" of property \"Alias\" contains invalid characters.")
        if "Name" in params and not str(params["Name"] or "").strip():
            raise CmdletError("Binding", "Cannot bind argument to parameter 'Name' because it is an empty string.")

    def resolve(self, identity: Any, *, contacts_only: bool, honour_lag: bool = True) -> dict[str, Any]:
        text = str(identity or "").strip()
        if not text:
            raise CmdletError("Binding", "Cannot bind argument to parameter 'Identity' because it is null or empty.")
        key = text.lower()
        now = time.monotonic()
        candidates = {r["Guid"]: r for kind in self._index for r in self._holding(kind, key)}
        if key in self._recipients:
            candidates[key] = self._recipients[key]
        matches = []
        for r in candidates.values():
            if r["_soft"] or (contacts_only and r["RecipientTypeDetails"] != "MailContact"):
                continue
            if honour_lag and now - self._created.get(r["Guid"], 0.0) < self.replication_lag:
                continue
            matches.append(r)
        if not matches:
            raise CmdletError("NotFound", f"The operation couldn't be performed because object '{text}' couldn't be "
                                          f"found on 'AM0PR01A001DC01.EURPR01A001.PROD.OUTLOOK.COM'.")
        if len(matches) > 1:
            raise CmdletError("Ambiguous", f"The operation couldn't be performed because '{text}' matches multiple "
                                           f"entries. There are multiple recipients matching identity \"{text}\".")
        return matches[0]

    # cmdlets ---------------------------------------------------------------------------------------------------
    def run(self, cmdlet: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        """Run a cmdlet; returns the objects for `value` (public copies without internal keys)."""
        if cmdlet not in PARAMETERS:
            raise CmdletError("Command", f"The term '{cmdlet}' is not recognized as a name of a cmdlet.")
        for name in params:
            if name not in PARAMETERS[cmdlet] and name not in COMMON:
                raise CmdletError("Binding", f"A parameter cannot be found that matches parameter name '{name}'.")
        with self.lock:
            handler = getattr(self, "_" + cmdlet.replace("-", "_").lower())
            result: list[dict[str, Any]] = handler(params)
            return [public(r, returned=CMDLET_PROPERTIES.get(cmdlet)) for r in result]

    def _new_mailcontact(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        for required in ("Name", "ExternalEmailAddress"):
            if p.get(required) in (None, ""):
                raise CmdletError("Binding", f"Cannot bind argument to parameter '{required}' because it is null or empty.")
        if not self.limits.creation_allowed():
            raise CmdletError("Quota", QUOTA_MESSAGE)
        self._check_lengths(p)
        address = _smtp(p["ExternalEmailAddress"], "ExternalEmailAddress")
        name = str(p["Name"])
        alias = str(p.get("Alias") or re.sub(r"[^A-Za-z0-9!#%*+\-/=?^_~]", "", name) or "contact")
        bag = self._new_bag("MailContact", name, alias, address, str(p.get("DisplayName") or name))
        for field in ("FirstName", "LastName", "Initials"):
            bag[field] = str(p.get(field) or "")
        self._check_unique(bag, None)
        self._store(bag, lag=True)
        self.limits.count_creation()
        return [bag]

    def _set_mailcontact(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        target = self.resolve(p.get("Identity"), contacts_only=True)
        self._check_lengths(p)
        updated = copy.deepcopy(target)
        for name, value in p.items():
            if name in ("Identity", *COMMON):
                continue
            if name == "ExternalEmailAddress":
                address = _smtp(value, name)
                updated["ExternalEmailAddress"] = f"SMTP:{address}"
                old = updated["PrimarySmtpAddress"].lower()
                updated["EmailAddresses"] = [f"SMTP:{address}"] + [
                    a for a in updated["EmailAddresses"]
                    if a.split(":", 1)[-1].lower() not in (old, address.lower())
                ]
                updated["PrimarySmtpAddress"] = address
            elif name == "EmailAddresses":
                updated["EmailAddresses"] = self._email_addresses(updated["EmailAddresses"], value)
            elif name == "HiddenFromAddressListsEnabled":
                updated[name] = value is True or str(value).lower() == "true"
            elif name.startswith("ExtensionCustomAttribute"):
                updated[name] = list(value or [])
            else:
                updated[name] = "" if value is None else str(value)
        if "Name" in p:
            updated["Identity"] = updated["Id"] = updated["Name"]
            updated["DistinguishedName"] = f"CN={updated['Name']},OU={self.domain},{DN_TAIL}"
        self._check_unique(updated, target["Guid"])
        self._store(updated, lag=False)
        return []

    @staticmethod
    def _email_addresses(current: list[str], value: Any) -> list[str]:
        if isinstance(value, dict):
            if value.get("@odata.type") != "#Exchange.GenericHashTable":
                raise CmdletError("Binding", "Cannot process argument transformation on parameter 'EmailAddresses'. "
                                             "A hashtable parameter needs \"@odata.type\": \"#Exchange.GenericHashTable\".")
            result = list(current)
            removed = {str(a).split(":", 1)[-1].lower() for a in value.get("Remove", [])}
            result = [a for a in result if a.split(":", 1)[-1].lower() not in removed]
            for address in value.get("Add", []):
                plain = _smtp(address, "EmailAddresses")
                result.append(f"smtp:{plain}")
            return result
        addresses = value if isinstance(value, list) else [value]
        result = []
        for raw in addresses:
            plain = _smtp(raw, "EmailAddresses")
            result.append(f"SMTP:{plain}" if str(raw).startswith("SMTP:") else f"smtp:{plain}")
        return result

    def _set_contact(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        target = self.resolve(p.get("Identity"), contacts_only=True)
        self._check_lengths(p)
        updated = copy.deepcopy(target)
        for name, value in p.items():
            if name in ("Identity", *COMMON):
                continue
            if name == "CountryOrRegion":
                if value in (None, ""):
                    updated[name] = None
                    continue
                code = country_code(str(value))
                if code is None:
                    raise CmdletError("Binding", f"Cannot process argument transformation on parameter "
                                                 f"'CountryOrRegion'. The value \"{value}\" isn't a valid country or region.")
                updated[name] = country_name(code)
            elif name == "Manager":
                if value in (None, ""):
                    updated[name] = None
                    continue
                try:
                    manager = self.resolve(value, contacts_only=False, honour_lag=False)
                except CmdletError as exc:
                    # Seen in the wild as a non-terminating error: HTTP 200 with "@adminapi.errors".
                    raise CmdletError("NotFound", exc.message, non_terminating=True) from exc
                updated[name] = manager["Name"]
            else:
                updated[name] = "" if value is None else str(value)
        if "Name" in p:
            updated["Identity"] = updated["Id"] = updated["Name"]
        self._check_unique(updated, target["Guid"])
        self._store(updated, lag=False)
        return []

    def _remove_mailcontact(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        target = self.resolve(p.get("Identity"), contacts_only=True)
        self._drop(target["Guid"])
        return []

    def _indexed(self, text: str) -> list[dict[str, Any]] | None:
        """The recipients an OR of equalities on indexed properties can match (a superset the filter then decides
        on), or None when the filter must be tested against every recipient."""
        terms = equality_terms(text)
        if terms is None:
            return None
        found: dict[str, dict[str, Any]] = {}
        for prop, value in terms:
            if prop == "Name":
                holders = self._holding("name", value)
            elif prop == "EmailAddresses":
                holders = self._holding("address", value.split(":", 1)[-1] if ":" in value else value)
            elif prop in CUSTOM:
                holders = self._holding("custom", f"{prop}={value}")
            elif prop == "Guid":
                holders = [r for r in (self._recipients.get(value.lower()),) if r is not None]
            else:
                return None
            found.update((r["Guid"], r) for r in holders)
        return list(found.values())

    def _get(self, cmdlet: str, p: dict[str, Any], *, contacts_only: bool) -> list[dict[str, Any]]:
        if "Identity" in p:
            return [self.resolve(p["Identity"], contacts_only=contacts_only)]
        candidates = self._indexed(str(p["Filter"])) if p.get("Filter") else None
        pool = [r for r in (self._recipients.values() if candidates is None else candidates)
                if not r["_soft"] and (not contacts_only or r["RecipientTypeDetails"] == "MailContact")]
        if p.get("RecipientTypeDetails"):
            wanted = p["RecipientTypeDetails"]
            wanted = {w.lower() for w in (wanted if isinstance(wanted, list) else [wanted])}
            pool = [r for r in pool if r["RecipientTypeDetails"].lower() in wanted]
        if p.get("Filter"):
            try:
                predicate = compile_filter(str(p["Filter"]), cmdlet)
            except FilterError as exc:
                raise CmdletError("Binding", f"Cannot bind parameter 'Filter' to the target. {exc}") from exc
            pool = [r for r in pool if predicate(r)]
        return sorted(pool, key=lambda r: (r["Name"].lower(), r["Guid"]))

    def _get_mailcontact(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return self._get("Get-MailContact", p, contacts_only=True)

    def _get_recipient(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return self._get("Get-Recipient", p, contacts_only=False)

    def _get_contact(self, p: dict[str, Any]) -> list[dict[str, Any]]:
        return self._get("Get-Contact", p, contacts_only=True)


def public(recipient: dict[str, Any], *, returned: frozenset[str] | None = None) -> dict[str, Any]:
    """The property bag as the API returns it: internal keys and what the cmdlet does not return (all but
    `returned`, when given) dropped, `@odata.type` annotations added."""
    bag = {k: copy.deepcopy(v) for k, v in recipient.items()
           if not k.startswith("_") and (returned is None or k in returned)}
    bag["Guid@odata.type"] = "#Guid"
    if "EmailAddresses" in bag:
        bag["EmailAddresses@odata.type"] = "#Collection(String)"
    for n in range(1, 6):
        if f"ExtensionCustomAttribute{n}" in bag:
            bag[f"ExtensionCustomAttribute{n}@odata.type"] = "#Collection(String)"
    return bag
