"""With change notifications on, the Bicep keeps one instance of the HTTP functions always ready: Graph gives a
notification 3 seconds, and a cold start of the app can take longer than that (docs/deploy.md says what it costs)."""

from __future__ import annotations

import re

from infracheck import INFRA, MAIN_BICEP

FUNCTION_BICEP = INFRA / "app" / "function.bicep"
ROOT = INFRA.parent


def _block(text: str, opening: str) -> str:
    """The text of the `{...}` or `[...]` that starts at `opening` (brackets counted)."""
    start = text.index(opening)
    depth = 0
    for at in range(start, len(text)):
        depth += 1 if text[at] in "{[" else -1 if text[at] in "}]" else 0
        if depth == 0 and text[at] in "}]":
            return text[start : at + 1]
    raise AssertionError(f"{opening!r} is not closed")


def test_one_always_ready_http_instance_when_notifications_are_on() -> None:
    site = FUNCTION_BICEP.read_text(encoding="utf-8")
    scale = _block(site, "scaleAndConcurrency: {")
    ready = re.search(r"alwaysReady:\s*(\w+)\s*\?\s*\[(.*?)\]\s*:\s*\[\s*\]", scale, re.DOTALL)
    assert ready is not None, "alwaysReady is a list, empty unless the parameter asks for it"
    parameter, entries = ready.groups()
    assert re.search(r"name:\s*'http'", entries) and re.search(r"instanceCount:\s*1\b", entries)
    assert re.search(rf"^param {parameter} bool = false$", site, re.MULTILINE), "off unless main.bicep turns it on"
    main = MAIN_BICEP.read_text(encoding="utf-8")
    assert re.search(rf"^\s*{parameter}:\s*changeNotifications != 'off'$", main, re.MULTILINE), \
        "on whenever notifications can be (auto is on in Azure)"


def test_the_deployment_guide_says_what_the_always_ready_instance_costs() -> None:
    guide = (ROOT / "docs" / "deploy.md").read_text(encoding="utf-8")
    section = guide[guide.index("**Always ready for notifications.**"):]
    paragraph = section.split("\n\n", 1)[0]
    assert "GB-s" in paragraph and "changeNotifications" in paragraph and "http" in paragraph
