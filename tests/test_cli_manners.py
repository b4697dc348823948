"""An ordinary mistake at the command line is one clear line and an exit code, never a Python traceback."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

from sync.app.wiring.runtime import Runtime
from sync.cli import main as cli
from sync.cli.console import columns, table
from sync.state.stores import Stores
from tests.support.factories import make_pair

REPO = Path(__file__).resolve().parent.parent
UNREACHABLE = (
    "DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
    "AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;"
    "TableEndpoint=http://127.0.0.1:1/devstoreaccount1;QueueEndpoint=http://127.0.0.1:1/devstoreaccount1;"
)


def sync_cli(*args: str, env: dict[str, str], **options: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(  # type: ignore[call-overload,no-any-return]
        [sys.executable, "-m", "sync", *args], cwd=REPO, env={**os.environ, **env}, capture_output=True, text=True,
        timeout=120, check=False, **options,
    )


def one_clean_line(stderr: str) -> str:
    """The one line a mistake prints (progress lines of the planning ticker aside), never a traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip() and not line.startswith("planning ")]
    assert len(lines) == 1, stderr
    return lines[0]


def test_a_malformed_storage_setting_names_the_setting(storage_env: dict[str, str]) -> None:
    result = sync_cli("status", env={**storage_env, "AzureWebJobsStorage": "not a connection string"})
    assert result.returncode == cli.EXIT_USAGE
    assert "app setting AzureWebJobsStorage is not a storage connection string" in one_clean_line(result.stderr)


def test_unreachable_storage_is_one_line(storage_env: dict[str, str]) -> None:
    result = sync_cli("status", env={**storage_env, "AzureWebJobsStorage": UNREACHABLE})
    assert result.returncode == cli.EXIT_FAILED
    assert one_clean_line(result.stderr).startswith("error: storage or Azure service unreachable")


def test_a_worker_concurrency_of_zero_is_refused(storage_env: dict[str, str]) -> None:
    result = sync_cli("status", env={**storage_env, "CTCS_WORKER_CONCURRENCY": "0"})
    assert result.returncode == cli.EXIT_USAGE
    assert "CTCS_WORKER_CONCURRENCY must be at least 1, not 0" in one_clean_line(result.stderr)


def test_output_cut_short_by_a_closed_pipe_is_not_an_error(storage_env: dict[str, str], stores: Stores) -> None:
    for n in range(80):  # enough JSON to outgrow the pipe's buffer
        stores.pairs.add(make_pair(f"pair-{n:03d}", source={"tenant_id": f"00000000-0000-0000-0000-{n:012d}"}))
    process = subprocess.Popen(
        [sys.executable, "-m", "sync", "pairs", "list", "--json"], cwd=REPO, env={**os.environ, **storage_env},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.readline().startswith("[")  # `| head -1`
    process.stdout.close()
    code = process.wait(timeout=60)
    stderr = process.stderr.read()
    assert code == cli.EXIT_OK and stderr == "", stderr


def test_two_v_flags_log_debug(storage_env: dict[str, str]) -> None:
    assert "DEBUG" not in sync_cli("-v", "status", env=storage_env).stderr
    assert "DEBUG" in sync_cli("-vv", "status", env=storage_env).stderr


def test_ctrl_c_during_a_run_says_what_happens_to_the_queued_ops(
    memory_runtime: Runtime, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    memory_runtime.stores.pairs.add(make_pair())

    def interrupted(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "drain", interrupted)
    code = cli.main(["run", "--pair", "contoso-to-fabrikam"], runtime=lambda: memory_runtime)
    assert code == cli.EXIT_INTERRUPTED == 130
    assert "interrupted: ops already queued stay on the queue" in one_clean_line(capsys.readouterr().err)


def test_tables_align_wide_characters() -> None:
    out = io.StringIO()
    table(["name", "count"], [["山田 太郎", 1], ["Ada", 22], ["Zoë Ødegård", 333]], out=out)
    header, rule, *rows = out.getvalue().splitlines()
    count_column = columns(header) - len("count")
    assert columns(rule) == columns(header)
    for row in rows:  # every number ends in the same terminal column
        assert columns(row) == columns(header)
        assert row[-1].isdigit()
    assert count_column > columns("山田 太郎")
    assert columns("山田") == 4
