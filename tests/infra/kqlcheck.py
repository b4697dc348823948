"""Offline checks of the KQL the alert rules and the workbook run, and of the fields the code logs.

No Kusto parser runs offline, so `kql_problems` checks what breaks a query in practice: balanced brackets and
quotes, `let` statements ended by `;`, a tabular expression that starts from an Application Insights table, and
only known tabular operators after each pipe. `custom_fields` lists the `customDimensions` fields a query names;
`logged_fields` collects, from the code itself, every field name ctcs passes as `extra=` to a log call (the dict
literals of functions that log with `extra`, and of the functions whose results they spread into it).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TABLES = frozenset({"traces", "requests", "dependencies", "exceptions", "customEvents", "customMetrics"})
OPERATORS = frozenset({
    "where", "summarize", "extend", "project", "project-away", "order", "sort", "top", "take", "limit", "render",
    "count", "distinct", "join", "union", "mv-expand", "make-series", "parse", "as",
})
_FIELD = re.compile(r"customDimensions(?:\.([A-Za-z_][A-Za-z0-9_]*)|\[\s*[\"']([^\"']+)[\"']\s*\])")
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')


def _without_comments(text: str) -> str:
    lines = []
    for line in text.splitlines():
        quoted = _STRING.sub(lambda match: "x" * len(match.group(0)), line)
        cut = quoted.find("//")
        lines.append(line if cut < 0 else line[:cut])
    return "\n".join(lines)


def kql_problems(text: str, where: str = "query") -> list[str]:
    body = _without_comments(text).strip()
    if not body:
        return [f"{where}: empty query"]
    problems = []
    bare = _STRING.sub('""', body)
    if bare.count('"') % 2 or bare.count("'") % 2:
        problems.append(f"{where}: an unterminated string")
    depth = 0
    pairs = {")": "(", "]": "["}
    stack: list[str] = []
    for char in bare:
        if char in "([":
            stack.append(char)
        elif char in ")]" and (not stack or stack.pop() != pairs[char]):
            problems.append(f"{where}: unbalanced {char!r}")
            break
        depth = len(stack)
    if depth:
        problems.append(f"{where}: {depth} bracket(s) left open")
    statements = [part.strip() for part in bare.split(";") if part.strip()]
    for statement in statements[:-1]:
        if not re.match(r"^let\s+[A-Za-z_][A-Za-z0-9_]*\s*=", statement):
            problems.append(f"{where}: only `let` statements may come before the query: {statement[:40]!r}")
    query = statements[-1] if statements else ""
    stages = [stage.strip() for stage in query.split("|")]
    first = stages[0].split()[0] if stages[0] else ""
    if first not in TABLES:
        problems.append(f"{where}: the query must start from an Application Insights table, not {first!r}")
    for stage in stages[1:]:
        operator = stage.split()[0] if stage else ""
        if operator not in OPERATORS:
            problems.append(f"{where}: unknown tabular operator {operator!r}")
    return problems


def custom_fields(text: str) -> set[str]:
    return {one or two for one, two in _FIELD.findall(_without_comments(text))}


def _dict_keys(node: ast.AST) -> set[str]:
    return {key.value for sub in ast.walk(node) if isinstance(sub, ast.Dict)
            for key in sub.keys if isinstance(key, ast.Constant) and isinstance(key.value, str)}


def _logs_with_extra(function: ast.AST) -> bool:
    return any(isinstance(node, ast.Call) and any(kw.arg == "extra" for kw in node.keywords)
               for node in ast.walk(function))


def _called_names(node: ast.AST) -> set[str]:
    return {sub.func.id if isinstance(sub.func, ast.Name) else sub.func.attr
            for sub in ast.walk(node) if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Name | ast.Attribute)}


def logged_fields(paths: list[Path]) -> set[str]:
    """Every field name the code logs as a structured property (see the module docstring)."""
    functions: dict[str, list[ast.AST]] = {}
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                functions.setdefault(node.name, []).append(node)
    fields: set[str] = set()
    helpers: set[str] = set()
    for defs in functions.values():
        for function in defs:
            if _logs_with_extra(function):
                fields |= _dict_keys(function)
                for sub in ast.walk(function):  # `{**op_fields(body), ...}`: the helper's keys are logged too
                    if isinstance(sub, ast.Dict):
                        helpers |= {name for key, value in zip(sub.keys, sub.values, strict=True) if key is None
                                    for name in _called_names(value)}
    for name in helpers:
        for function in functions.get(name, []):
            if not _logs_with_extra(function):
                fields |= _dict_keys(function)
    return fields
