"""The operator reference must match the code: every setting, every CLI command and option, every skip reason.

The reference was the README's; it now lives in docs/, one page per reader's question (issue 21), and each check
reads the page its section moved to. The README stays short and links every page."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

from sync.cli.main import build_parser
from sync.core.scope import SKIP_REASONS
from sync.settings import SETTINGS

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text(encoding="utf-8")


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def page(name: str) -> str:
    """A page of docs/: the whole page is the README section that moved there (`settings.md` was "## Settings")."""
    return (ROOT / "docs" / name).read_text(encoding="utf-8")


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> dict[str, set[str]]:
    """'pairs add' → {'--replace'}: every runnable command with its options."""
    commands: dict[str, set[str]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                commands.update(leaf_commands(sub, (*prefix, name)))
    if not commands and prefix:
        options = {opt for a in parser._actions for opt in a.option_strings if opt.startswith("--") and opt != "--help"}
        commands[" ".join(prefix)] = options
    return commands


def test_settings_table_matches_the_registry() -> None:
    rows = re.findall(r"^\| `([A-Za-z_]+)` \|\s*`?([^|`]*?)`?\s*\|", page("settings.md"), flags=re.MULTILINE)
    documented = {name: default.strip() for name, default in rows}
    declared = {setting.name: setting.default or "" for setting in SETTINGS}
    assert documented == declared


def test_every_cli_command_and_option_is_documented_and_nothing_else() -> None:
    commands = leaf_commands(build_parser())
    lines = re.findall(r"^\| `python -m sync ([^`]+)` \|", page("cli.md"), flags=re.MULTILINE)
    documented: dict[str, set[str]] = {}
    for line in lines:
        words = [w for w in re.split(r"[\s\[\]]+", line) if w]
        name = " ".join(w for w in words if re.fullmatch(r"[a-z-]+", w) and not w.startswith("-"))
        # A command may have a row per form (`run --pair ID` and `run --pair ID --user USER`): their options add up.
        documented.setdefault(name, set()).update(w for w in words if w.startswith("--"))
    assert documented == commands


def test_exit_codes_are_documented() -> None:
    from sync.cli import main as cli

    text = page("cli.md")
    codes = {value for name, value in vars(cli).items() if name.startswith("EXIT_") and isinstance(value, int)}
    assert codes >= {0, 1, 2, 3, 4, 130}
    for code in codes:
        assert f"**{code}**" in text


def test_every_skip_reason_is_explained() -> None:
    text = page("status-and-failures.md")
    for reason in SKIP_REASONS:
        assert f"`{reason}`" in text


def test_the_two_quickstart_commands_exist() -> None:
    text = section("Try it: two commands")
    assert "python3 dev.py demo" in text and "python3 dev.py test" in text
    dev = (Path(__file__).resolve().parent.parent / "dev.py").read_text()
    assert '"demo"' in dev and '"test"' in dev


def test_every_http_route_is_documented() -> None:
    app_source = (Path(__file__).resolve().parent.parent / "function_app.py").read_text(encoding="utf-8")
    routes = set(re.findall(r'route="([^"]+)", methods=\[func\.HttpMethod\.(\w+)\]', app_source))
    assert routes, "no routes found in function_app.py"
    documented = {
        (path.split("?")[0].split("[")[0].removeprefix("/api/"), method)
        for method, path in re.findall(r"^\| `(GET|POST|PUT|PATCH|DELETE) (/api/[^` ]+)", page("http-api.md"), re.MULTILINE)
    }
    assert documented == {(path, method) for path, method in routes}
