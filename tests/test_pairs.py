"""The pair definition contract: validation with field paths, secret references only, unsupported fields refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sync.cli.main import main
from sync.contract.pairs import load_pair_file, parse_pair
from sync.errors import PairValidationError
from tests.support.factories import pair_definition


def problems_of(definition: object) -> list[str]:
    with pytest.raises(PairValidationError) as caught:
        parse_pair(definition)
    return caught.value.problems


def test_the_design_example_is_valid() -> None:
    pair = parse_pair(pair_definition())
    assert pair.contact.anchor_attribute == "CustomAttribute15"
    assert pair.deletion.max_deletes == 50
    assert pair.anchor("ABC") == "ctcs|11111111-1111-1111-1111-111111111111|abc"


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"id": "Bad_Id"}, "id: does not match"),
        ({"id": "ab"}, "id: does not match"),
        ({"colour": "blue"}, "colour: unknown key"),
        ({"source": {"tenant_id": "not-a-guid"}}, "source.tenant_id: must be a GUID"),
        ({"target": {"organization": "no spaces allowed.com "[:-1] + " x"}}, "target.organization"),
        ({"target": {"credential": {"type": "password", "secret": "env:X"}}}, "target.credential"),
        ({"source": {"credential": {"type": "client_secret"}}}, "source.credential.secret: is required"),
        ({"deletion": {"mode": "shred"}}, "deletion.mode: must be one of"),
        ({"deletion": {"max_delete_percent": 150}}, "deletion.max_delete_percent"),
        ({"conflicts": "overwrite"}, "conflicts: must be one of"),
        ({"contact": {"anchor_attribute": "CustomAttribute16"}}, "contact.anchor_attribute"),
        ({"contact": {"display_name": "{nope}"}}, "contact.display_name: names {nope}"),
        ({"contact": {"attributes": {"Colour": "{department}"}}}, "contact.attributes"),
        ({"contact": {"attributes": {"CustomAttribute15": "{department}"}}}, "CustomAttribute15: it holds the ctcs anchor"),
        ({"source": {"cloud": "mars"}}, "source.cloud"),
        ({"source": {"cloud": {"authority": "http://login.example.com", "graph": "https://g", "exchange": "https://e"}}},
         "https:// URL"),
    ],
)
def test_each_mistake_names_its_field(change: dict[str, object], expected: str) -> None:
    problems = problems_of(pair_definition(**change))
    assert any(expected in problem for problem in problems), problems


@pytest.mark.parametrize(
    "change",
    [
        {"scope": {"include_groups": ["55555555-5555-5555-5555-555555555555"]}},
        {"scope": {"exclude_groups": ["55555555-5555-5555-5555-555555555555"]}},
        {"scope": {"include_groups": ["55555555-5555-5555-5555-555555555555"],
                   "exclude_groups": ["66666666-6666-6666-6666-666666666666"]}},
    ],
)
def test_group_scoping_is_accepted(change: dict[str, object]) -> None:
    """Group scoping shipped: the fields are no longer refused as "not supported yet"."""
    pair = parse_pair(pair_definition(**change))
    assert pair.scope.include_groups or pair.scope.exclude_groups


def test_a_group_id_must_be_a_guid() -> None:
    assert any(p.startswith("scope.include_groups") for p in problems_of(pair_definition(scope={"include_groups": ["Sales"]})))


def test_a_secret_value_is_refused_and_never_echoed() -> None:
    leaked = "Xy8Q~verysecretvalue.abc"
    problems = problems_of(pair_definition(source={"credential": {"type": "client_secret", "secret": leaked}}))
    assert problems == [
        "source.credential.secret: must be a secret reference (kv:<name>, env:<NAME> or file:<path>), never the secret itself"
    ]
    with pytest.raises(PairValidationError) as caught:
        parse_pair(pair_definition(source={"credential": {"type": "client_secret", "secret": leaked}}))
    assert leaked not in str(caught.value) and leaked not in repr(caught.value.problems)


@pytest.mark.parametrize("reference", ["kv:fabrikam-exo-cert", "env:EXO_CERT", "file:/etc/ctcs/cert.pem"])
def test_every_reference_form_is_accepted(reference: str) -> None:
    pair = parse_pair(pair_definition(target={"credential": {"type": "certificate", "certificate": reference}}))
    assert pair.target.credential.certificate == reference  # type: ignore[union-attr]


def test_federation_needs_no_secret_at_all() -> None:
    pair = parse_pair(pair_definition(target={"credential": {"type": "managed_identity_federation"}}))
    assert pair.target.credential.type == "managed_identity_federation"


def test_a_file_with_three_mistakes_reports_all_three(tmp_path: Path) -> None:
    definition = pair_definition(id="X", conflicts="maybe")
    definition["source"]["tenant_id"] = "nope"
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(definition))
    with pytest.raises(PairValidationError) as caught:
        load_pair_file(path)
    assert sorted(p.split(":")[0] for p in caught.value.problems) == ["conflicts", "id", "source.tenant_id"]


def test_cli_add_with_three_mistakes_prints_all_and_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    definition = pair_definition(id="X", conflicts="maybe")
    definition["target"]["client_id"] = "nope"
    path = tmp_path / "pair.json"
    path.write_text(json.dumps(definition))
    assert main(["pairs", "add", str(path)]) == 2
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    for field in ("  - id:", "  - conflicts:", "  - target.client_id:"):
        assert field in err


def test_not_json_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "pair.json"
    path.write_text('{\n  "id": "a-b-c",\n  oops\n}')
    with pytest.raises(PairValidationError) as caught:
        load_pair_file(path)
    assert "line 3, column 3" in str(caught.value)


def test_top_level_must_be_an_object() -> None:
    assert problems_of([1, 2]) == ["(top level): must be a JSON object"]
