"""Names on both sides of the mapping: Graph user properties and Exchange contact parameters."""

from __future__ import annotations

from sync.contract.contact_params import NEW_MAIL_CONTACT_PARAMS, SET_CONTACT_PARAMS, SET_MAIL_CONTACT_PARAMS

# Graph user properties a template or the default mapping may read (each is valid in users/delta $select).
SOURCE_ATTRIBUTES = frozenset(
    {
        "id", "displayName", "givenName", "surname", "mail", "mailNickname", "proxyAddresses", "userPrincipalName",
        "userType", "accountEnabled", "showInAddressList", "companyName", "department", "jobTitle", "officeLocation",
        "businessPhones", "mobilePhone", "faxNumber", "streetAddress", "city", "state", "postalCode", "country",
        "usageLocation", "employeeId", "employeeType", "preferredLanguage", "onPremisesExtensionAttributes",
        "onPremisesSamAccountName", "onPremisesUserPrincipalName", "otherMails", "creationType",
    }
)

# What the default mapping, scope and anchor need from every user. `manager` is a relationship, not a template
# attribute: Graph reports it as `manager@delta` (see sync.core.managers).
BASE_SELECT = (
    "id", "displayName", "givenName", "surname", "mail", "proxyAddresses", "userPrincipalName", "userType",
    "accountEnabled", "showInAddressList", "companyName", "department", "jobTitle", "officeLocation", "businessPhones",
    "mobilePhone", "faxNumber", "streetAddress", "city", "state", "postalCode", "country", "manager",
)

# Contact parameters a pair's `contact.attributes` may set. Name and Alias are derived from the source object id,
# and never from source data, so they are not mappable.
CONTACT_PARAMETERS = frozenset(
    (NEW_MAIL_CONTACT_PARAMS | SET_MAIL_CONTACT_PARAMS | SET_CONTACT_PARAMS) - {"Name", "Alias", "EmailAddresses"}
)
