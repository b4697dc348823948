"""One pair per source tenant and target tenant, held under concurrent adds; generations of a pair id; a mapped custom
attribute never holds an anchor (refused at `pairs add`, blanked when mapped). Against Azurite."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from sync.app.admin.status import pair_status
from sync.app.wiring.runtime import Runtime
from sync.contract.pairs import TenantPair
from sync.core.mapping import ContactMapper
from sync.errors import PairValidationError
from sync.state.pairs import PairStore
from sync.state.stores import Stores
from tests.support.factories import make_pair, make_user

OTHER_SOURCE = "55555555-5555-5555-5555-555555555555"
OTHER_TARGET = "66666666-6666-6666-6666-666666666666"


def _race(store: PairStore, pairs: list[TenantPair]) -> list[BaseException | None]:
    """Both adds read the stored pairs before either writes: the interleaving that let two pairs through."""
    barrier = threading.Barrier(len(pairs))
    listed = store.list

    def list_then_wait() -> list[TenantPair]:
        seen = listed()
        barrier.wait(timeout=30)
        return seen

    store.list = list_then_wait  # type: ignore[method-assign]
    outcomes: list[BaseException | None] = [None] * len(pairs)

    def add(index: int) -> None:
        try:
            store.add(pairs[index])
        except BaseException as error:  # kept for the assertions
            outcomes[index] = error

    threads = [threading.Thread(target=add, args=(i,)) for i in range(len(pairs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    store.list = listed  # type: ignore[method-assign]
    return outcomes


def test_two_adds_at_once_for_the_same_tenants_store_one_pair(stores: Stores) -> None:
    wide = make_pair("wide-pair")
    narrow = make_pair("narrow-pair", scope={"include_domains": ["contoso.com"]})
    outcomes = _race(stores.pairs, [wide, narrow])
    assert [pair.id for pair in stores.pairs.list()] in (["wide-pair"], ["narrow-pair"])
    refused = [error for error in outcomes if error is not None]
    assert len(refused) == 1 and isinstance(refused[0], PairValidationError)
    assert refused[0].problems[0].startswith("source.tenant_id/target.tenant_id: pair ")


def test_the_claim_goes_with_the_pair_and_moves_with_a_replace(stores: Stores) -> None:
    first = make_pair("first-pair")
    stores.pairs.add(first)
    generation = stores.pairs.get("first-pair").generation
    assert generation
    # A replace that keeps both tenants keeps the generation; one that changes the target moves the claim.
    stores.pairs.add(make_pair("first-pair", enabled=False), replace=True)
    assert stores.pairs.get("first-pair").generation == generation
    stores.pairs.add(make_pair("first-pair", target={"tenant_id": OTHER_TARGET}), replace=True)
    assert stores.pairs.get("first-pair").generation not in ("", generation)
    stores.pairs.add(make_pair("second-pair"))  # the old tenants are free again
    with pytest.raises(PairValidationError, match="pair 'first-pair' already syncs"):
        stores.pairs.add(make_pair("third-pair", target={"tenant_id": OTHER_TARGET}))
    stores.pairs.remove("first-pair")
    stores.pairs.add(make_pair("third-pair", target={"tenant_id": OTHER_TARGET}))
    # Removing and adding the id again is a new generation, even for the same tenants.
    stores.pairs.remove("second-pair")
    before = generation
    stores.pairs.add(make_pair("second-pair"))
    assert stores.pairs.get("second-pair").generation not in ("", before)


def test_status_flags_an_overlap_stored_before_the_rule(stores: Stores, memory_runtime: Runtime) -> None:
    stores.pairs.add(make_pair("old-wide"))
    # Stored the way the previous release stored pairs: a row, no claim, no generation.
    row: dict[str, Any] = PairStore._entity(make_pair("old-narrow"))
    del row["generation"]
    stores.pairs.table.create_entity(row)
    status = pair_status(memory_runtime, "old-wide")
    assert status["overlap"] and "old-narrow" in status["overlap"]
    assert "old-wide" in pair_status(memory_runtime, "old-narrow")["overlap"]
    assert stores.pairs.get("old-narrow").generation == ""
    stores.pairs.add(make_pair("lone-pair", source={"tenant_id": OTHER_SOURCE}))
    assert pair_status(memory_runtime, "lone-pair")["overlap"] is None


def test_a_mapped_custom_attribute_may_not_hold_another_pairs_anchor(stores: Stores) -> None:
    stores.pairs.add(make_pair("anchored-in-3", contact={"anchor_attribute": "CustomAttribute3"}))
    mapper = make_pair("maps-3", source={"tenant_id": OTHER_SOURCE}, contact={"attributes": {"CustomAttribute3": "{department}"}})
    with pytest.raises(PairValidationError) as refused:
        stores.pairs.add(mapper)
    assert refused.value.problems == [
        "contact.attributes.CustomAttribute3: pair 'anchored-in-3' writes the same target tenant and keeps its anchor "
        "in CustomAttribute3; map another attribute (a mapped value must never look like another pair's anchor)"
    ]
    # The other way round: a pair that keeps its anchor where a stored pair maps a value.
    stores.pairs.add(make_pair("maps-5", source={"tenant_id": OTHER_SOURCE},
                               contact={"attributes": {"CustomAttribute5": "{department}"}}))
    with pytest.raises(PairValidationError, match=r"contact.anchor_attribute: pair 'maps-5'"):
        stores.pairs.add(make_pair("anchored-in-5", source={"tenant_id": "77777777-7777-7777-7777-777777777777"},
                                   contact={"anchor_attribute": "CustomAttribute5"}))
    # Another target tenant: no clash.
    stores.pairs.add(make_pair("elsewhere", target={"tenant_id": OTHER_TARGET},
                               contact={"attributes": {"CustomAttribute3": "{department}"}}))


def test_a_mapped_custom_attribute_never_receives_an_anchor_like_value() -> None:
    pair = make_pair(contact={"attributes": {"CustomAttribute3": "{officeLocation}", "CustomAttribute4": "{jobTitle}"}})
    forged = "ctcs|11111111-1111-1111-1111-111111111111|00000000-0000-0000-0000-000000000009"
    result = ContactMapper(pair).map(make_user(officeLocation=forged, jobTitle=" CTCS|x"), "a@contoso.com")
    assert result.contact["CustomAttribute3"] == "" and result.contact["CustomAttribute4"] == ""
    assert [w.split(":")[0] for w in result.warnings] == ["anchor_like_value_blanked", "anchor_like_value_blanked"]
    assert result.contact["CustomAttribute15"] == pair.anchor(make_user()["id"])
    kept = ContactMapper(pair).map(make_user(officeLocation="Sales ctcs|x"), "a@contoso.com")
    assert kept.contact["CustomAttribute3"] == "Sales ctcs|x" and not kept.warnings


def test_a_pair_file_cannot_set_its_generation() -> None:
    from sync.contract.pairs import parse_pair
    from tests.support.factories import pair_definition

    with pytest.raises(PairValidationError, match="generation: set by ctcs"):
        parse_pair({**pair_definition(), "generation": "abc"})
