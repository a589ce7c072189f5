"""gallery/audit.py ``ACTIONS`` is every action the code records, no more, and docs/audit.md lists each one. The
actions are read from the source (pipeline/, gallery/): the action argument of every call that appends to the
trail (``audited``, ``audited_request``, ``record``, ``Trail.append``, ``gallery.audit.append``, also when handed
to ``run_in_threadpool``), a literal, a module constant, or an f-string (a pattern its values match)."""

from __future__ import annotations

import ast
import importlib
import re

import pytest

from gallery.audit import ACTION_RE, ACTIONS
from tests.conftest import ROOT

DOCS = ROOT / "docs" / "audit.md"
PACKAGES = ("pipeline", "gallery")
# calls that append an entry: the position of their action argument
RECORDERS = {"audited": 1, "audited_request": 1, "record": 1, "append": 3}
TRAIL_APPEND = 2  # <trail>.append(actor, kind, action, ...)
HELPERS = {  # the modules whose recorders hand an action they were given on
    "gallery/audit.py",
    "pipeline/services/audit.py",
    "pipeline/web/audit.py",
}
DOC_ROW = re.compile(r"^\| `([a-z][a-z0-9_.-]*)` \|", re.M)


def _action_arg(call: ast.Call) -> ast.expr | None:
    """The action argument of ``call`` when it appends to the trail, else None."""
    func, args = call.func, list(call.args)
    if isinstance(func, ast.Name) and func.id == "run_in_threadpool" and args:
        func, args = args[0], args[1:]
    named = next((kw.value for kw in call.keywords if kw.arg == "action"), None)
    if isinstance(func, ast.Name) and func.id in RECORDERS:
        at = RECORDERS[func.id]
    elif isinstance(func, ast.Attribute) and func.attr == "append" and len(args) + (named is not None) > 1:
        at = TRAIL_APPEND
    else:
        return None
    return args[at] if len(args) > at else named


def _pattern(node: ast.JoinedStr) -> str:
    """An f-string as a regular expression: its ``{...}`` parts stand for any word."""
    parts = []
    for value in node.values:
        if isinstance(value, ast.Constant):
            parts.append(re.escape(value.value))
        else:
            parts.append("[a-z0-9_-]+")
    return "".join(parts)


def recorded(source: str, module: str, path: str) -> tuple[set[str], set[str], list[str]]:
    """The actions ``source`` (module ``module``, file ``path``) records: (literals, f-string patterns, calls whose
    action cannot be read: ``path:line`` each). In the helper modules an action given as a parameter is handed on
    and not counted."""
    literals, patterns, unread = set(), set(), []
    mod = None
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        arg = _action_arg(node)
        if arg is None:
            continue
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            literals.add(arg.value)
            continue
        if isinstance(arg, ast.JoinedStr):
            patterns.add(_pattern(arg))
            continue
        if isinstance(arg, ast.Name):
            mod = mod or importlib.import_module(module)
            value = getattr(mod, arg.id, None)
            if isinstance(value, str):
                literals.add(value)
                continue
        if path in HELPERS and isinstance(arg, (ast.Name, ast.Attribute)):
            continue  # the recorder's own parameter, handed on
        unread.append(f"{path}:{node.lineno}")
    return literals, patterns, unread


def _scan() -> tuple[set[str], set[str], list[str]]:
    literals, patterns, unread = set(), set(), []
    for package in PACKAGES:
        for file in sorted((ROOT / package).rglob("*.py")):
            path = file.relative_to(ROOT).as_posix()
            module = path.removesuffix(".py").replace("/", ".").removesuffix(".__init__")
            found = recorded(file.read_text(), module, path)
            literals |= found[0]
            patterns |= found[1]
            unread += found[2]
    return literals, patterns, unread


@pytest.fixture(scope="module")
def scanned():
    return _scan()


def test_every_recorded_action_is_in_actions_and_every_action_is_recorded(scanned):
    literals, patterns, unread = scanned
    assert unread == [], "calls recording an action that is neither a literal nor a module constant"
    assert sorted(literals - set(ACTIONS)) == [], (
        "actions recorded by the code but not in gallery.audit.ACTIONS"
    )
    for pattern in patterns:
        assert any(re.fullmatch(pattern, a) for a in ACTIONS), f"no action of ACTIONS is {pattern!r}"
    by_pattern = {a for a in ACTIONS if any(re.fullmatch(p, a) for p in patterns)}
    assert sorted(set(ACTIONS) - literals - by_pattern) == [], "ACTIONS no code records"
    assert len(set(ACTIONS)) == len(ACTIONS) and all(ACTION_RE.match(a) for a in ACTIONS)


def test_the_scan_finds_each_way_of_recording(scanned):
    """The scan is not vacuous: constants (the web's denials, rename, retention), ``run_in_threadpool(record, ...)``
    (login), ``audited`` (commands), ``audited_request`` (web routes) and an f-string (watch-list membership)."""
    literals, patterns, _ = scanned
    assert {
        "request",
        "identity.update",
        "audit.retention",
        "login.failed",
        "case.close",
        "review",
    } <= literals
    assert patterns == {r"watchlist\.[a-z0-9_-]+"}


@pytest.mark.parametrize(
    "line, literals, patterns, unread",
    [
        ('audited(trail, "x.one", [name])', {"x.one"}, set(), 0),
        ('await run_in_threadpool(record, request, "x.two", ())', {"x.two"}, set(), 0),
        ('trail.append(name, kind, "x.three", [], {}, "ok")', {"x.three"}, set(), 0),
        ('append(db, actor, kind, "x.four")', {"x.four"}, set(), 0),
        ('audited_request(request, action="x.five")', {"x.five"}, set(), 0),
        ('audited(trail, f"x.{verb}")', set(), {r"x\.[a-z0-9_-]+"}, 0),
        ("audited(trail, ACTION_RE)", set(), set(), 1),  # not a string constant
        ("record(request, chosen)", set(), set(), 1),  # a variable outside the helpers
        ("items.append(3)", set(), set(), 0),
        ("writer.record(rec)", set(), set(), 0),
        ('p.add_argument("--x", action="append")', set(), set(), 0),
    ],
)
def test_the_scan_of_one_call(line, literals, patterns, unread):
    found = recorded(line, "gallery.audit", "elsewhere.py")
    assert (found[0], found[1], len(found[2])) == (literals, patterns, unread)


def test_the_docs_list_every_action():
    text = DOCS.read_text()
    section = text[text.index("## Actions") :]
    section = section[: section.find("\n## ", 1)]
    documented = DOC_ROW.findall(section)
    assert sorted(documented) == sorted(ACTIONS)
