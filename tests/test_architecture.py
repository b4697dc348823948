"""docs/architecture.md, its "Project layout" included (moved there from the README), stays in step with the code:
every package and module it names exists, every package and module of sync/ is named, every function the data paths
name can be imported, and every "invariant N" a comment cites is one of the seven the document defines."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import io
import re
import tokenize
from collections.abc import Callable
from pathlib import Path

import pytest

from sync.core.plan import plan_pair

ROOT = Path(__file__).resolve().parent.parent
SYNC = ROOT / "sync"
ARCHITECTURE = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
# The prose only: a fenced block (the floors diagram) would pair its backticks with the text's.
ARCHITECTURE_PROSE = re.sub(r"^```.*?^```$", "", ARCHITECTURE, flags=re.MULTILINE | re.DOTALL)
INVARIANTS = list(range(1, 8))

BACKTICKED = re.compile(r"`([^`]+)`")
DOTTED_NAME = re.compile(r"`((?:sync|function_app)(?:\.(?!py`)\w+)+)`")  # a name, not a file such as function_app.py
REPO_PATH = re.compile(r"\b(?:sync|sim|tests|docs|infra|scripts|benchmarks)/[\w./*-]*")
TEST_NAME = re.compile(r"`(test_\w+)`")
NUMBERED_ITEM = re.compile(r"^(\d+)\. \*\*", re.MULTILINE)
CITATION = re.compile(r"\binvariants?\s+(\d+(?:\s*(?:,|and|or)\s*\d+)*)", re.IGNORECASE)


def section(text: str, title: str) -> str:
    """The body of `## title`, up to the next `## ` heading."""
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def sync_packages() -> list[str]:
    """Every package directory under sync/ ("sync/core/"), found on disk."""
    return sorted(f"{path.parent.relative_to(ROOT).as_posix()}/" for path in SYNC.rglob("__init__.py") if path.parent != SYNC)


def sync_modules() -> list[str]:
    """Every module of sync/ as a dotted name ("sync.core.plan"), leaving out package and __main__ files."""
    return sorted(
        ".".join(path.relative_to(ROOT).with_suffix("").parts)
        for path in SYNC.rglob("*.py")
        if path.name not in ("__init__.py", "__main__.py")
    )


def layout_paths() -> list[str]:
    """The paths in the first column of the "Project layout" table (docs/architecture.md)."""
    paths = []
    for line in section(ARCHITECTURE, "Project layout").splitlines():
        cells = line.split("|")
        if len(cells) < 3 or set(cells[1].strip()) <= {"-"} or cells[1].strip() == "path":
            continue
        paths += BACKTICKED.findall(cells[1])
    return paths


def resolve(dotted: str) -> object:
    """Import the longest module prefix of `dotted`, then follow attributes (dataclass fields count)."""
    parts = dotted.split(".")
    for split in range(len(parts), 0, -1):
        try:
            found: object = importlib.import_module(".".join(parts[:split]))
        except ModuleNotFoundError:
            continue
        for name in parts[split:]:
            fields = {field.name for field in dataclasses.fields(found)} if dataclasses.is_dataclass(found) else set()
            if not hasattr(found, name) and name not in fields:
                raise AttributeError(f"{dotted}: {name!r} not found")
            found = getattr(found, name, found)
        return found
    raise ModuleNotFoundError(dotted)


def cited_invariants(source: str) -> list[int]:
    """Invariant numbers cited in the comments and strings (docstrings) of one Python source."""
    cited = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING):
            for match in CITATION.finditer(token.string):
                cited += [int(number) for number in re.findall(r"\d+", match.group(1))]
    return cited


def test_every_path_in_the_project_layout_exists() -> None:
    paths = layout_paths()
    assert "sync/core/" in paths and "function_app.py" in paths  # the table was found and read
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert missing == [], f"docs/architecture.md 'Project layout' names paths that do not exist: {missing}"


def test_every_sync_package_is_in_the_project_layout() -> None:
    named = set(layout_paths())
    unnamed = [package for package in sync_packages() if package not in named]
    assert unnamed == [], f"add these packages to the 'Project layout' table of docs/architecture.md: {unnamed}"


def test_architecture_names_every_sync_package_and_module() -> None:
    named = set(BACKTICKED.findall(ARCHITECTURE_PROSE))
    packages = [package.rstrip("/").replace("/", ".") for package in sync_packages()]
    unnamed = [name for name in packages + sync_modules() if name not in named]
    assert unnamed == [], f"give these a line in docs/architecture.md ('What lives where'): {unnamed}"


def test_every_sync_name_in_architecture_can_be_imported() -> None:
    names = sorted(set(DOTTED_NAME.findall(ARCHITECTURE_PROSE)))
    assert "sync.app.planner.run.run_pair" in names and "function_app.apply_contact_op" in names
    broken = []
    for name in names:
        try:
            resolve(name)
        except (ImportError, AttributeError) as error:
            broken.append(f"{name} ({error})")
    assert broken == [], f"docs/architecture.md names what the code does not have: {broken}"


def test_every_path_and_test_in_architecture_exists() -> None:
    paths = sorted({path.rstrip(".") for path in REPO_PATH.findall(ARCHITECTURE)})  # a sentence may end on one
    assert "tests/reliability/test_poison.py" in paths
    missing = [path for path in paths if not any(ROOT.glob(path.rstrip("/")))]
    assert missing == [], f"docs/architecture.md names paths that do not exist: {missing}"
    tests = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").rglob("test_*.py"))
    gone = [name for name in sorted(set(TEST_NAME.findall(ARCHITECTURE))) if f"def {name}(" not in tests]
    assert gone == [], f"docs/architecture.md cites tests that do not exist: {gone}"


def test_architecture_defines_the_seven_invariants_in_order() -> None:
    numbers = [int(number) for number in NUMBERED_ITEM.findall(section(ARCHITECTURE, "The invariants"))]
    assert numbers == INVARIANTS


def test_every_invariant_cited_in_the_code_is_defined() -> None:
    citations = {
        path.relative_to(ROOT).as_posix(): cited_invariants(path.read_text(encoding="utf-8"))
        for path in [*SYNC.rglob("*.py"), ROOT / "function_app.py"]
    }
    assert sum(map(len, citations.values())) >= 5  # the comments that cite invariants were found and read
    undefined = {path: numbers for path, numbers in citations.items() if set(numbers) - set(INVARIANTS)}
    assert undefined == {}, f"comments cite invariants that docs/architecture.md does not define: {undefined}"


def test_citations_are_read_from_comments_and_strings_not_names() -> None:
    source = '"""Keeps invariant 4."""\nx = 1  # Invariant 12 and 3\ninvariant_9 = "invariants 2, 5 or 7"\n'
    assert cited_invariants(source) == [4, 12, 3, 2, 5, 7]


def test_names_resolve_through_modules_attributes_and_dataclass_fields() -> None:
    assert resolve("sync.core.plan.plan_pair") is plan_pair
    assert resolve("sync.app.wiring.runtime.Runtime.open_source") is not None  # a dataclass field without a default
    with pytest.raises(AttributeError):
        resolve("sync.core.plan.no_such_function")
    with pytest.raises(AttributeError):
        resolve("sync.no_such_package.module")


MAX_PARAMETERS = 8  # issue 21: a longer list is grouped into small context objects (frozen dataclasses)


def parameter_count(function: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Every parameter a caller may pass (positional, keyword-only, *args, **kwargs), a leading self or cls aside."""
    arguments = function.args
    positional = [*arguments.posonlyargs, *arguments.args]
    if positional and positional[0].arg in ("self", "cls"):
        positional = positional[1:]
    return len(positional) + len(arguments.kwonlyargs) + (arguments.vararg is not None) + (arguments.kwarg is not None)


def findings_in(folder: Path, find: Callable[[str, str], list[str]]) -> list[str]:
    """What `find` (source, path) reports for every module under `folder`, by repository path."""
    return [finding for path in sorted(folder.rglob("*.py"))
            for finding in find(path.read_text(encoding="utf-8"), path.relative_to(ROOT).as_posix())]


def long_parameter_lists(source: str, path: str) -> list[str]:
    return [
        f"{path}:{node.lineno} {node.name} ({parameter_count(node)})"
        for node in ast.walk(ast.parse(source, filename=path))
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and parameter_count(node) > MAX_PARAMETERS
    ]


def test_no_function_in_sync_takes_more_than_eight_parameters() -> None:
    found = findings_in(SYNC, long_parameter_lists)
    assert found == [], f"group these parameters into a small context object (at most {MAX_PARAMETERS}): {found}"


def test_the_parameter_count_leaves_out_self_and_counts_the_rest() -> None:
    source = (
        "class C:\n    def m(self, a, b, /, c, *args, d, **kwargs): ...\n"
        "def f(a, b, c, d, e, f, g, h, i): ...\n"
        "def g(self_, a): ...\n"
    )
    assert long_parameter_lists(source, "x.py") == ["x.py:3 f (9)"]
    functions = [node for node in ast.walk(ast.parse(source)) if isinstance(node, ast.FunctionDef)]
    assert {node.name: parameter_count(node) for node in functions} == {"m": 6, "f": 9, "g": 2}


STATE_COLUMN_HELPERS = {"int64", "text"}  # sync.state.entities: how a value becomes a table column
FIELD_LEVEL_WRITERS = {"repair", "add_rows"}  # ContactStateStore methods that merge whatever columns they are given


def table_field_building(source: str, path: str) -> list[str]:
    """Where a module builds table fields itself: it imports a column helper of sync.state.entities (or the module
    whole) or calls a store's field-level writer."""
    found = []
    for node in ast.walk(ast.parse(source, filename=path)):
        if isinstance(node, ast.ImportFrom) and node.module == "sync.state.entities":
            found += [f"{path}:{node.lineno} imports {alias.name}" for alias in node.names
                      if alias.name in STATE_COLUMN_HELPERS | {"*"}]
        elif isinstance(node, ast.ImportFrom) and node.module == "sync.state":
            found += [f"{path}:{node.lineno} imports sync.state.entities" for alias in node.names
                      if alias.name == "entities"]
        elif isinstance(node, ast.Import):
            found += [f"{path}:{node.lineno} imports sync.state.entities" for alias in node.names
                      if alias.name == "sync.state.entities"]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in FIELD_LEVEL_WRITERS:
            found.append(f"{path}:{node.lineno} calls .{node.func.attr}()")
    return found


def test_app_code_changes_state_through_named_verbs_not_table_fields() -> None:
    """Issue 21: sync/app passes domain values to named verbs of sync.state (`park_holder`, `correct` with a
    `Correction`, ...); turning them into table fields (Int64 columns, cut text, JSON) is the state floor's job."""
    found = findings_in(SYNC / "app", table_field_building)
    assert found == [], f"use (or add) a verb of sync.state instead of building table fields: {found}"


def test_table_field_building_is_found_however_it_is_spelled() -> None:
    source = (
        "from sync.state.entities import iso, int64\n"
        "from sync.state.entities import text as cut\n"
        "from sync.state import entities\n"
        "import sync.state.entities\n"
        "contacts.repair(row, {'hash': ''})\n"
        "rt.stores.contacts.add_rows('p', [])\n"
        "from sync.state.entities import now_utc\n"
        "contacts.correct(row, correction)\n"
    )
    assert table_field_building(source, "x.py") == [
        "x.py:1 imports int64", "x.py:2 imports text", "x.py:3 imports sync.state.entities",
        "x.py:4 imports sync.state.entities", "x.py:5 calls .repair()", "x.py:6 calls .add_rows()",
    ]
