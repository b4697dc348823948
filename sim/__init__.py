"""Simulated Microsoft 365 tenants for tests and the demo: a token authority, Graph users/delta and the Exchange
Online admin API, served over loopback HTTPS so the REAL client libraries (azure-identity/MSAL, msgraph-sdk, httpx)
talk to them. `sync` never imports this package.

Start and trust
---------------
    from sim import SimCloud
    from sim.certs import make_client_certificate

    cloud = SimCloud.start()                 # or: with SimCloud.start() as cloud: ...   (cloud.stop() when done)
    cloud.endpoints  # {"authority": "https://127.0.0.1:P1", "graph": "https://127.0.0.1:P2", "exchange": "https://127.0.0.1:P3"}
                     # = the pair file's custom cloud object ({"authority":..., "graph":..., "exchange":...})
    cloud.ca_bundle_path                     # PEM: the simulator's CA + certifi's bundle
    cloud.client_env()  # {"SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "IDENTITY_ENDPOINT", "IDENTITY_HEADER"}
    previous = cloud.apply_client_env()      # same, into os.environ of this process; SimCloud.restore_env(previous)

  httpx 0.28 reads SSL_CERT_FILE when a Client is CREATED (verify=True, trust_env=True); or pass
  `verify=ssl.create_default_context(cafile=cloud.ca_bundle_path)`. requests (azure-identity) reads REQUESTS_CA_BUNDLE.

Tenants and apps
----------------
    t = cloud.add_tenant(tenant_id="<guid>", domain="contoso.onmicrosoft.com", name="Contoso")
    t.register_app(client_id="<guid>", secret="s3cret")                       # client_secret flow
    t.register_app(client_id="<guid>", certificate_pem=cert.cert_pem)         # certificate flow (x5t / x5t#S256 checked)
    t.register_app(client_id="<guid>", federated_subject=cloud.managed_identity.object_id)   # MI federation
    t.register_app(client_id=..., secret=..., roles=["User.Read.All"])        # default roles: User.Read.All,
                                                                              # GroupMember.Read.All, Exchange.ManageAsApp
    cert = make_client_certificate("pw")     # ClientCertificate(pem_bytes=key+cert PEM, pfx_bytes, cert_pem)

Getting tokens with azure-identity 1.27 (authority = the bare base URL; disable_instance_discovery=True is REQUIRED,
else MSAL asks login.microsoftonline.com to validate the authority and fails offline):
    ClientSecretCredential(t.tenant_id, cid, "s3cret", authority=cloud.endpoints["authority"],
                           disable_instance_discovery=True).get_token(cloud.endpoints["graph"] + "/.default")
    CertificateCredential(t.tenant_id, cid, certificate_data=cert.pem_bytes, ...)            # or pfx_bytes + password=
    mi = ManagedIdentityCredential(client_id=cloud.managed_identity.client_id)  # needs IDENTITY_ENDPOINT/HEADER in env
    ClientAssertionCredential(t.tenant_id, cid, lambda: mi.get_token("api://AzureADTokenExchange/.default").token,
                              authority=..., disable_instance_discovery=True)
  Tokens: aud = the service base URL (scope minus "/.default"), tid, appid, roles. Graph/Exchange answer 401 for a
  missing, expired, wrong-audience or other-tenant token, 403 when the app lacks the role.
  `cloud.issue_token(t, cid, "graph", lifetime=-10)` mints tokens directly; `cloud.token_lifetime` sets the lifetime.
  Refusals an admin meets: `app.consented = False` (AADSTS700016), `app.roles = ("User.Read.All",)` (a token
  without Exchange.ManageAsApp), `app.directory_roles = ()` (Exchange RBAC: 401 "User is not allowed to call X";
  `app.role_groups = (frozenset({"Mail Recipient Creation", "Mail Recipients"}),)` is the least-privilege group),
  `app.certificates = []` (AADSTS700027), `cloud.clock_skew = 1200` (AADSTS700024),
  `app.rotate_subjects(new_object_id)` (a recreated managed identity: AADSTS700213).
  `cloud.add_managed_identity(client_id=None, object_id=None)` adds more user-assigned identities.

Source side (Graph)  — see sim.directory / sim.graph
    uid = t.directory.add_user({"displayName": "Adele Vance", "mail": "adele@contoso.com", ...})
    t.directory.update_user(uid, department="Sales"); t.directory.delete_user(uid, permanent=False)
    t.directory.restore_user(uid); t.directory.users            # current users (dicts)
    GET {graph}/v1.0/users/delta  (also /users/delta() and /users/microsoft.graph.delta())
    t.directory.page_size = 200; t.directory.replay_next_round = True   # re-send earlier changes once
    gid = t.directory.add_group("Sales", mail="sales@contoso.com", mailEnabled=True, securityEnabled=False,
                                groupTypes=["Unified"], description="...", hideFromAddressLists=False)
    t.directory.update_group(gid, displayName="Sales EMEA"); t.directory.delete_group(gid)
    GET {graph}/v1.0/groups/delta ($select of group properties: groups as contacts; displayName,members: membership)
    GET {graph}/v1.0/groups/{id}?$select=id,hideFromAddressLists   POST {graph}/v1.0/$batch (up to 20 of those)
    (group mail properties need Group.Read.All: register_app(..., roles=["User.Read.All", "Group.Read.All"]))
    SimCloud.start(realistic_graph=True)     # every Graph answer as slow as Microsoft's (or CTCS_SIM_REALISTIC_GRAPH=1)

Target side (Exchange) — see sim.exchange_org / sim.exchange
    POST {exchange}/adminapi/beta/{tenant id or domain}/InvokeCommand
    t.exchange.add_recipient(kind="UserMailbox", name="adele", address="adele@fabrikam.com", DisplayName="Adele")
    t.exchange.contacts(); t.exchange.recipients(); t.exchange.get(guid)
    t.exchange.replication_lag = 2.0        # seconds during which a fresh object answers NotFound by Identity
    POST {exchange}/adminapi/beta/{tenant}/$batch                  # up to 10 InvokeCommand sub-requests
    -Filter as strict as Exchange Online: each Get-* cmdlet only on its own properties (sim.opath.FILTERABLE_BY), '*'
    only as a suffix; each Get-* returns its documented property set (sim.exchange_org.CMDLET_PROPERTIES)

Exchange as hard as the real one — see sim.exchange_limits (everything off by default: the suite stays fast)
    SimCloud.start(exchange_profile=ExchangeProfile.realistic(scale=0.1))   # or CTCS_SIM_EXCHANGE_PROFILE=realistic
    t.exchange.limits.configure(latency={"New-MailContact": 0.12, "*": 0.06}, concurrency_cap=10,
                                budget=1000, budget_window=60, creation_quota=600, quota_cooldown=3600, batch=True)
    t.exchange.limits.stats                  # peak in flight, 429s served, quota refusals and windows
    cloud.counts[("limits", "concurrency")], cloud.counts[("limits", "budget")], cloud.counts[("limits", "quota")]

A real tenant's recorded behaviour — see sim.profile
    CTCS_SIM_PROFILE=record.json             # a `pairs test ID --deep --record` file: its Rate-Limit-Reset format,
                                             # concurrency headers and Get-* property sets, for every new tenant

Faults and counters — see sim.faults
    cloud.faults.inject("graph", "throttle", times=2, retry_after="0.249")
    cloud.faults.inject("exchange", "server_busy", operation="New-MailContact", probability=0.3)
    cloud.faults.inject("graph", "batch_throttle", times=4)   # 4 sub-requests of Graph $batches: 429 inside a 200
    cloud.counts["graph"], cloud.counts["exchange"], cloud.counts["token"], cloud.counts[("exchange", "New-MailContact")]
    cloud.reset_counts()

Command line: `python -m sim serve` prints the endpoints and the CA bundle path and runs until Ctrl-C.
"""

from sim.certs import ClientCertificate, make_client_certificate
from sim.cloud import ManagedIdentity, SimCloud
from sim.tenant import Tenant

__all__ = ["ClientCertificate", "ManagedIdentity", "SimCloud", "Tenant", "make_client_certificate"]
