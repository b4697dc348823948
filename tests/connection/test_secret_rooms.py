"""Secrets stay in their room (issue 22): a pair row cannot make ctcs read another app setting or file, send a
managed identity's assertion to a foreign authority, or use an unlisted custom cloud in Azure; and a secret that is
missing only on the machine running the CLI fails that command there, never quarantining the pair for the
deployment."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from sync.cli import main as cli
from tests.support.factories import merged

from .conftest import SECRET, SECRET_ENV, Setup


def write(tmp_path: Path, definition: dict[str, Any]) -> str:
    path = tmp_path / f"{definition['id']}.json"
    path.write_text(json.dumps(definition))
    return str(path)


def test_pairs_add_refuses_references_and_clouds_a_row_may_not_reach(
    setup: Setup, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    definition = setup.pair(store=False).definition
    authority = definition["target"]["cloud"]["authority"].removeprefix("https://")
    refused = {
        "source.credential.secret: env:PATH is not allowed: env: references must start with CTCS_SECRET_ "
        "(setting CTCS_SECRET_ENV_PREFIX)": {"source": {"credential": {"type": "client_secret", "secret": "env:PATH"}}},
        "target.credential.certificate: file:/etc/hostname is not allowed: file: references must lie under":
            {"target": {"credential": {"type": "certificate", "certificate": "file:/etc/hostname"}}},
        f"target.credential: managed_identity_federation is not allowed with the token authority {authority}":
            {"target": {"credential": {"type": "managed_identity_federation"}}},
    }
    for message, change in refused.items():
        assert cli.main(["pairs", "add", write(tmp_path, merged(definition, change))]) == cli.EXIT_USAGE
        err = capsys.readouterr().err
        assert message in err, err
        assert "/usr/bin" not in err  # the value of PATH is never read, let alone shown

    monkeypatch.setenv("WEBSITE_INSTANCE_ID", "0123abcd")  # as under the Functions host in Azure
    assert cli.main(["pairs", "add", "--no-test", write(tmp_path, definition)]) == cli.EXIT_USAGE
    assert "source.cloud.authority: 127.0.0.1 is not allowed: a custom cloud in Azure must list each of its hosts " \
           "in the app setting CTCS_ALLOWED_CLOUD_HOSTS" in capsys.readouterr().err
    assert setup.rt.stores.pairs.list() == []
    monkeypatch.setenv("CTCS_ALLOWED_CLOUD_HOSTS", "127.0.0.1")
    assert cli.main(["pairs", "add", "--no-test", write(tmp_path, definition)]) == cli.EXIT_OK


def test_a_stored_row_written_before_the_rules_is_refused_at_use(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CTCS_SECRET_SNEAKY", SECRET)
    monkeypatch.setenv("AzureWebJobsStorageLookalike", SECRET)
    made = setup.pair(source={"credential": {"type": "client_secret", "secret": "env:AzureWebJobsStorageLookalike"}})
    setup.add_users(made, 2)
    setup.host.fire_timer()
    setup.host.drain_queue(deadline_seconds=30)
    state = setup.rt.stores.pair_state.get(made.pair.id)
    assert state.credentials_quarantined
    assert "env:AzureWebJobsStorageLookalike is not allowed: env: references must start with CTCS_SECRET_" \
           in state.quarantine_reason
    assert state.quarantine_reason.startswith("source: ")
    assert SECRET not in state.quarantine_reason
    assert [c for c in made.target.exchange.contacts() if c.get("CustomAttribute15")] == []


@pytest.mark.parametrize("missing", ["environment variable", "certificate file"])
def test_a_secret_missing_on_the_cli_machine_fails_the_command_there(
    setup: Setup, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing: str,
) -> None:
    made = setup.pair()
    setup.add_users(made, 3)
    if missing == "environment variable":
        monkeypatch.delenv(SECRET_ENV)
        expected = f"source.credential.secret: secret reference env:{SECRET_ENV}: environment variable {SECRET_ENV} " \
                   "is not set or empty"
    else:
        setup.key_file.unlink()
        expected = f"target.credential.certificate: secret reference file:{setup.key_file}: cannot read the file"

    assert cli.main(["run", "--pair", made.pair.id]) == cli.EXIT_USAGE  # python -m sync run --pair ...
    err = capsys.readouterr().err
    assert expected in err, err
    assert "nothing was run" in err and "the pair is not quarantined" in err
    state = setup.rt.stores.pair_state.get(made.pair.id)
    assert not state.quarantined, state.quarantine_reason
    assert setup.rt.stores.parked.approximate_count() == 0 and setup.rt.stores.ops.approximate_count() == 0
    assert SECRET not in err
