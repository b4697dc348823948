"""Groups as contacts end to end: the simulator's groups/delta and $batch, the real msgraph-sdk, Azurite, the real
Exchange client; each test plans with `run_pair` and applies with the in-process drain."""

from __future__ import annotations

from .conftest import PAIR_ID, SECRET_ENV, GroupContacts


def test_each_group_kind_becomes_a_contact_with_every_mapped_attribute(gc: GroupContacts) -> None:
    domain = gc.source.domain
    team = gc.unified("Project Falcon", f"falcon@{domain}", description="The Falcon project team")
    sales = gc.distribution("Sales", f"sales@{domain}", description="Everyone in sales")
    admins = gc.mail_security("IT admins", f"itadmins@{domain}")
    plain = gc.source.directory.add_group("No mail security group")
    gc.use_pair(objects=["groups"], groups={"display_name": "{displayName} ({source.name} group)"})

    result = gc.run()

    contacts = gc.contacts()
    assert set(contacts) == {team, sales, admins}
    falcon = contacts[team]
    assert falcon["ExternalEmailAddress"].lower() == f"smtp:falcon@{domain}".lower() or \
        falcon["ExternalEmailAddress"].lower().endswith(f"falcon@{domain}")
    assert falcon["DisplayName"] == "Project Falcon (Contoso group)"
    assert falcon["Notes"] == "The Falcon project team"
    assert falcon["Name"] == f"ctcs-{team.replace('-', '')}"[:64] or falcon["Name"].startswith("ctcs-")
    assert falcon["CustomAttribute15"] == f"ctcs|{gc.source.tenant_id}|{team}"
    assert contacts[sales]["Notes"] == "Everyone in sales"
    assert contacts[admins]["DisplayName"] == "IT admins (Contoso group)"
    counts = result.run.counts
    assert counts["groups_create"] == 3 and counts.get("create", 0) == 0
    assert counts["groups_skipped_no_mail"] == 1
    assert plain not in contacts


def test_rename_mail_change_and_deletion_follow_the_source(gc: GroupContacts) -> None:
    domain = gc.source.domain
    team = gc.unified("Falcon", f"falcon@{domain}")
    sales = gc.distribution("Sales", f"sales@{domain}")
    gc.use_pair(objects=["groups"])
    gc.run()

    gc.source.directory.update_group(team, displayName="Falcon (closed)", description="Archived")
    gc.source.directory.update_group(sales, mail=f"sales-team@{domain}", proxyAddresses=[f"SMTP:sales-team@{domain}"])
    result = gc.run()
    contacts = gc.contacts()
    assert result.run.counts["groups_update"] == 2 and not result.run.full
    assert contacts[team]["DisplayName"] == "Falcon (closed)" and contacts[team]["Notes"] == "Archived"
    assert contacts[sales]["ExternalEmailAddress"].lower().endswith(f"sales-team@{domain}")

    gc.source.directory.delete_group(sales)
    result = gc.run()
    assert result.run.counts["groups_delete"] == 1
    assert set(gc.contacts()) == {team}


def test_a_group_leaving_scope_by_type_or_filter_is_removed(gc: GroupContacts) -> None:
    domain = gc.source.domain
    team = gc.unified("Falcon", f"falcon@{domain}")
    sales = gc.distribution("Sales", f"sales@{domain}", description="keep")
    admins = gc.mail_security("IT admins", f"itadmins@{domain}", description="keep")
    gc.use_pair(objects=["groups"])
    gc.run()
    assert set(gc.contacts()) == {team, sales, admins}

    kind_is_unified = [{"attribute": "kind", "operator": "EQUALS", "value": "unified"}]
    described_keep = [{"attribute": "description", "operator": "EQUALS", "value": "keep"}]
    gc.use_pair(objects=["groups"], groups={"include_types": ["unified", "distribution"],
                                            "filters": [kind_is_unified, described_keep]})
    result = gc.run()
    assert result.run.full  # a changed groups section reads every group again
    assert set(gc.contacts()) == {team, sales}
    assert result.run.counts["groups_delete"] == 1

    gc.source.directory.update_group(sales, description="drop me")
    result = gc.run()
    assert set(gc.contacts()) == {team}
    assert result.run.counts["groups_delete"] == 1


def test_a_group_hidden_in_the_source_is_removed_and_never_created(gc: GroupContacts) -> None:
    domain = gc.source.domain
    team = gc.unified("Falcon", f"falcon@{domain}")
    secret = gc.unified("Board", f"board@{domain}", hideFromAddressLists=True)
    gc.use_pair(objects=["groups"])
    result = gc.run()
    assert set(gc.contacts()) == {team}
    assert result.run.counts["groups_skipped_hidden_from_gal"] == 1

    # hideFromAddressLists is Exchange's: groups/delta never reports it, a round that reads the group again does.
    gc.source.directory.update_group(team, hideFromAddressLists=True, description="now hidden")
    result = gc.run()
    assert result.run.counts["groups_delete"] == 1
    assert gc.contacts() == {}
    assert secret not in gc.contacts()


def test_an_address_held_by_a_target_recipient_is_a_conflict_left_alone(gc: GroupContacts) -> None:
    domain = gc.source.domain
    sales = gc.distribution("Sales", f"sales@{domain}")
    gc.target.exchange.add_recipient(kind="UserMailbox", name="sales-mbx", address=f"sales@{domain}",
                                     DisplayName="Sales mailbox")
    gc.use_pair(objects=["groups"])
    gc.run()
    assert sales not in gc.contacts()
    row = gc.rt.stores.contacts.get("group-contacts", sales)
    assert row.status == "conflict" and row.kind == "group"
    assert gc.rt.stores.contacts.status_counts("group-contacts")["groups_conflict"] == 1
    gc.cloud.reset_counts()
    result = gc.run()  # left alone until something changes: no op, no Exchange call
    assert result.queued == 0 and gc.cloud.counts["exchange"] == 0
    gc.source.directory.update_group(sales, displayName="Sales team")
    result = gc.run()  # the group changed: still held by the mailbox, still a conflict, never overwritten
    assert sales not in gc.contacts() and gc.rt.stores.contacts.get("group-contacts", sales).status == "conflict"
    assert [r for r in gc.target.exchange.recipients() if "sales-mbx" in str(r.get("Name"))]


def test_an_expired_groups_delta_link_reads_every_group_and_sweeps_the_vanished(gc: GroupContacts) -> None:
    domain = gc.source.domain
    team = gc.unified("Falcon", f"falcon@{domain}")
    sales = gc.distribution("Sales", f"sales@{domain}")
    gc.use_pair(objects=["groups"])
    gc.run()
    gc.source.directory.delete_group(sales)
    gc.source.directory.expire_tokens()
    gc.cloud.reset_counts()
    result = gc.run()
    assert result.outcome in ("planned", "applied")
    assert set(gc.contacts()) == {team}
    assert result.run.counts["groups_delete"] == 1 and result.run.counts["groups_unchanged"] == 1


def test_users_and_groups_in_one_run_and_an_idle_run_costs_two_graph_requests(gc: GroupContacts) -> None:
    domain = gc.source.domain
    adele = gc.user("adele")
    team = gc.unified("Falcon", f"falcon@{domain}")
    gc.use_pair(objects=["users", "groups"])
    result = gc.run()
    assert set(gc.contacts()) == {adele, team}
    assert result.run.counts["create"] == 1 and result.run.counts["groups_create"] == 1
    counts = gc.rt.stores.contacts.status_counts("group-contacts")
    assert counts["ok"] == 1 and counts["groups_ok"] == 1

    gc.source.directory.update_user(adele, department="Sales")
    gc.source.directory.update_group(team, displayName="Falcon team")
    result = gc.run()
    assert result.run.counts["update"] == 1 and result.run.counts["groups_update"] == 1
    assert gc.contacts()[team]["DisplayName"] == "Falcon team"

    gc.cloud.reset_counts()
    result = gc.run()
    assert result.outcome == "no_changes"
    assert gc.cloud.counts["graph"] <= 2 and gc.cloud.counts["exchange"] == 0
    assert gc.cloud.counts[("graph", "users/delta")] == 1 and gc.cloud.counts[("graph", "groups/delta")] == 1
    assert result.run.graph_requests == 2


def test_a_distribution_list_hidden_in_the_source_exchange_loses_its_contact(gc: GroupContacts) -> None:
    domain = gc.source.domain
    sales = gc.distribution("Sales", f"sales@{domain}")
    team = gc.unified("Falcon", f"falcon@{domain}")
    guid = gc.source.exchange.add_recipient("MailUniversalDistributionGroup", "sales", f"sales@{domain}",
                                            ExternalDirectoryObjectId=sales, HiddenFromAddressListsEnabled=False)
    grant = {"exchange": {"organization": domain, "credential": {"type": "client_secret", "secret": f"env:{SECRET_ENV}"}}}
    gc.use_pair(objects=["groups"], source=grant)
    gc.run()
    assert set(gc.contacts()) == {sales, team}

    # Hidden in the source's Exchange: nothing Graph reports, yet the next run removes the contact.
    gc.source.exchange.set_recipient(guid, HiddenFromAddressListsEnabled=True)
    result = gc.run()
    assert result.run.counts["groups_delete"] == 1
    assert set(gc.contacts()) == {team}
    assert gc.rt.stores.contacts.get(PAIR_ID, sales).last_op == "delete:deleted"
