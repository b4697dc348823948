"""The README stays a newcomer's page and the docs stay inside the repository (issue 21).

The README is at most 250 lines and links every page of docs/; every relative link of the README and of docs/
leads to a file (and heading) that exists; nothing in the code or the docs cites a file outside the repository (the
design contract is docs/design.md); and every package of sync/ says in its docstring what it is for and which
floors it may import, exactly as pyproject.toml's import contracts allow.
"""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SYNC = ROOT / "sync"
DOCS = ROOT / "docs"
README = ROOT / "README.md"
README_MAX_LINES = 250

LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")  # [text](target)
FENCE = re.compile(r"^```.*?^```$", re.MULTILINE | re.DOTALL)
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.MULTILINE)
DESIGN_CITATION = re.compile(r"[\w./-]*\bdesign\.md", re.IGNORECASE)
MAY_IMPORT = re.compile(r"May import:((?:`[^`]*`|[^`.])*)\.")  # up to the sentence's end (a dot outside backticks)
NEVER_IMPORTS = re.compile(r"Never imports:((?:`[^`]*`|[^`.])*)")
BACKTICKED = re.compile(r"`([^`]+)`")


def markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(heading) for heading in HEADING.findall(FENCE.sub("", page.read_text(encoding="utf-8")))}


def relative_links(page: Path) -> list[str]:
    text = FENCE.sub("", page.read_text(encoding="utf-8"))
    return [target for target in LINK.findall(text) if not re.match(r"[a-z]+:", target)]


# --- the README -------------------------------------------------------------------------------------------------------


def test_the_readme_is_at_most_250_lines() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines; move reference text to docs/"


def test_the_readme_links_every_docs_page_and_each_exists() -> None:
    linked = {target.split("#")[0] for target in relative_links(README) if target.startswith("docs/")}
    assert "docs/settings.md" in linked  # the links were found and read
    missing = sorted(path for path in linked if not (ROOT / path).is_file())
    assert missing == [], f"README.md links docs pages that do not exist: {missing}"
    pages = sorted(page.relative_to(ROOT).as_posix() for page in DOCS.glob("*.md"))
    unlinked = [page for page in pages if page not in linked]
    assert unlinked == [], f"add these pages to the README's 'Where to read next': {unlinked}"


@pytest.mark.parametrize("page", markdown_pages(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_leads_to_a_file_and_heading_that_exist(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        missing_heading = bool(anchor) and linked.suffix == ".md" and linked.exists() and anchor not in anchors(linked)
        if not linked.exists() or missing_heading:
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)} links to what does not exist: {broken}"


def test_anchors_are_read_as_github_makes_them() -> None:
    assert slug("Reconcile (self-healing)") == "reconcile-self-healing"
    assert slug("The rooms of sync.app") == "the-rooms-of-syncapp"
    assert slug("2. Deploy the Azure resources: `azd up`") == "2-deploy-the-azure-resources-azd-up"


# --- citations stay inside the repository -----------------------------------------------------------------------------


def cited_files() -> list[Path]:
    return [*sorted(SYNC.rglob("*.py")), ROOT / "function_app.py", *markdown_pages()]


def outside_citations(path: Path, text: str) -> list[str]:
    """What `text` (the content of `path`) cites outside the repository: ../shared, or a design.md that is not ours."""
    found = [line.strip() for line in text.splitlines() if "../shared" in line or "shared/DESIGN" in line]
    design = (DOCS / "design.md").resolve()
    for cited in DESIGN_CITATION.findall(text):
        # A citation names the file from the repository's root ("docs/design.md") or, in a page, relative to it.
        if design not in {(ROOT / cited).resolve(), (path.parent / cited).resolve()} or not cited.endswith("design.md"):
            found.append(cited)
    return found


def test_the_design_contract_is_in_the_repository() -> None:
    assert (DOCS / "design.md").is_file()


@pytest.mark.parametrize("path", cited_files(), ids=lambda path: path.relative_to(ROOT).as_posix())
def test_nothing_cites_a_file_outside_the_repository(path: Path) -> None:
    assert outside_citations(path, path.read_text(encoding="utf-8")) == []


def test_outside_citations_are_found() -> None:
    module = SYNC / "contract" / "pairs.py"
    page = DOCS / "deploy.md"
    assert outside_citations(module, '"""The JSON contract of DESIGN.md."""') == ["DESIGN.md"]
    assert outside_citations(module, "# see ../shared/reference/graph-delta.md") != []
    assert outside_citations(module, '"""The JSON contract of docs/design.md."""') == []
    assert outside_citations(page, "[the contract](design.md)") == []
    assert outside_citations(page, "[the contract](../DESIGN.md)") == ["../DESIGN.md"]


# --- every package says what it is for and which floors it may import --------------------------------------------------


def import_rules() -> tuple[dict[str, set[str]], set[str]]:
    """From pyproject.toml's import contracts: package → what else of sync it may import; what sync never imports."""
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]["contracts"]

    def floors(contract: dict[str, list[str]], prefix: str) -> list[list[str]]:
        return [[prefix + name.strip() for name in layer.split("|")] for layer in contract["layers"]]

    (top,) = [c for c in contracts if c["type"] == "layers" and "containers" not in c]
    rooms = [c for c in contracts if c["type"] == "layers" and "containers" in c]  # outer containers first
    (forbidden,) = [c for c in contracts if c["type"] == "forbidden"]
    allowed: dict[str, set[str]] = {}

    def below(layers: list[list[str]], index: int) -> set[str]:
        return {name for layer in layers[index + 1 :] for name in layer}

    top_floors = floors(top, "")
    for index, layer in enumerate(top_floors):
        for name in layer:
            allowed[name] = below(top_floors, index)
    for contract in sorted(rooms, key=lambda contract: len(contract["containers"][0])):
        (container,) = contract["containers"]
        room_floors = floors(contract, container + ".")
        for index, layer in enumerate(room_floors):
            for name in layer:
                allowed[name] = below(room_floors, index) | allowed[container]
    allowed["sync"] = {name for layer in top_floors for name in layer}
    return allowed, set(forbidden["forbidden_modules"])


def package_docstrings() -> dict[str, str]:
    """Every package of sync/ by dotted name, with its __init__.py docstring ("" when it has none)."""
    return {
        ".".join(path.parent.relative_to(ROOT).parts): ast.get_docstring(ast.parse(path.read_text(encoding="utf-8"))) or ""
        for path in sorted(SYNC.rglob("__init__.py"))
    }


def may_import(docstring: str) -> set[str] | None:
    match = MAY_IMPORT.search(docstring)
    return set(BACKTICKED.findall(match.group(1))) if match else None


@pytest.mark.parametrize("package", sorted(package_docstrings()))
def test_every_package_says_what_it_is_for_and_what_it_may_import(package: str) -> None:
    docstring = package_docstrings()[package]
    allowed, forbidden = import_rules()
    assert docstring, f"{package}/__init__.py needs a docstring: what the package is for and what it may import"
    assert docstring.split("May import:")[0].strip(), f"{package}: say what the package is for before what it imports"
    named = may_import(docstring)
    assert named is not None, f'{package}: name the floors it may import in a "May import: `...`." sentence'
    names_of_sync = {name for name in named if name.split(".")[0] == "sync"}
    expected = allowed.get(package, allowed.get(package.rsplit(".", 1)[0], set()))
    assert names_of_sync == expected, f"{package}: pyproject.toml allows {sorted(expected)}; the docstring: {sorted(named)}"
    if package == "sync":
        never = NEVER_IMPORTS.search(docstring)
        assert never is not None and set(BACKTICKED.findall(never.group(1))) == forbidden


def test_the_import_rules_are_read_from_pyproject() -> None:
    allowed, forbidden = import_rules()
    assert forbidden == {"sim", "tests"}
    assert allowed["sync.core"] == {"sync.contract", "sync.settings", "sync.errors"}
    assert "sync.graph" not in allowed["sync.state"]  # siblings on one floor
    assert "sync.app.worker" not in allowed["sync.app.planner"] and "sync.app.wiring" in allowed["sync.app.planner"]
    assert "sync.app.wiring.runtime" in allowed["sync.app.wiring.quarantine"]
    assert "sync.app.wiring.quarantine" not in allowed["sync.app.wiring.runtime"]
    assert {"sync.app.planner", "sync.app.worker", "sync.core"} <= allowed["sync.app.admin"]
    assert may_import("For this. May import: `sync.errors` (below). Never `sync.core`.") == {"sync.errors"}
