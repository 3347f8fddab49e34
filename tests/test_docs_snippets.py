"""Every ```python block of the documentation is checked; none is just prose that happens to be code.

Pages are ``docs/**/*.md`` and the Markdown files they include with ``--8<--``
(``bench/README.md``, ``adapters/redis/README.md``). A block is one of two kinds:

- **an include** (only ``--8<-- "examples/FILE.py[:section]"`` lines): the file must be in
  ``examples/``, which ``tests/test_examples.py`` runs, and a named section must exist in it.
  When the block is followed by "This prints:" and an output block, every line shown there
  must appear in what the example prints;
- **a fragment**, shown for its shape. It must compile (top-level ``await`` allowed, as in an
  ``async def``), every ``superline_zmq``/``superline_zmq_redis`` import in it must resolve, and
  every name it uses must be bound by it or an earlier block of its page, be a builtin, be a
  public name of ``superline_zmq`` (pages assume ``from superline_zmq import ...``), or be one
  of the stand-ins of :data:`CONTEXT` (``srv``, ``api``, ...). Attributes read from the
  well-known stand-ins (``srv.cluster.by_user``, ``conn.emit``, ``client.call``, ...) must exist
  on the types they stand for. A fragment preceded by ``<!-- snippet: run -->`` is also
  executed, in a namespace shared by the page's run blocks.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import inspect
import re
import subprocess
import sys
import textwrap
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import superline_zmq
from superline_zmq.client import Client
from superline_zmq.metrics import Metrics
from superline_zmq.server import BusMeta, ClusterView, Conn, LocalView, SocketServer
from superline_zmq.testing import LocalCluster

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
EXAMPLES = ROOT / "examples"

#: Names a fragment may use without binding them: what the surrounding prose sets up.
CONTEXT: dict[str, object] = {
    # the objects every page talks about
    "srv": SocketServer,
    "conn": Conn,
    "client": Client,
    "cluster": LocalCluster,
    "m": Metrics,
    "meta": BusMeta,
    "api": None,
    "adapter": None,
    "url": None,
    "host": None,
    "port": None,
    "conn_id": None,
    "tls_context": None,
    "sessions": None,
    "authenticate": None,
    "Session": None,
    "UserState": None,
    "echo": None,
    "whoami": None,
    "audited_echo": None,
    "status": None,
    "log_lobby": None,
    "MyCluster": None,
    "Notice": None,
    "Question": None,
    "Answer": None,
    # modules and typing names pages assume imported
    "asyncio": None,
    "msgspec": None,
    "time": None,
    "contextlib": None,
    "Callable": None,
    "Awaitable": None,
    "Mapping": None,
    "Protocol": None,
}
#: Types of attributes the stand-ins' types declare only as instance attributes or loosely.
KNOWN_ATTRS: dict[tuple[type, str], object] = {
    (SocketServer, "cluster"): ClusterView,
    (SocketServer, "local"): LocalView,
}

FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>\w*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.S | re.M)
INCLUDE = re.compile(r'^\s*--8<--\s+"(?P<path>[^":]+)(?::(?P<section>[A-Za-z_][\w-]*))?"\s*$')
RUN_MARK = "<!-- snippet: run -->"


@dataclass
class Block:
    page: Path
    line: int
    code: str
    run: bool
    output: str | None  # the "This prints:" block after it, if any

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def _pages() -> list[Path]:
    pages = sorted(DOCS.rglob("*.md"))
    included: list[Path] = []
    for page in pages:
        for line in page.read_text().splitlines():
            m = INCLUDE.match(line)
            if m and m.group("path").endswith(".md"):
                included.append(ROOT / m.group("path"))
    return pages + sorted(set(included))


def _blocks(page: Path) -> Iterator[Block]:
    text = page.read_text()
    fences = list(FENCE.finditer(text))
    for i, m in enumerate(fences):
        if m.group("lang") != "python":
            continue
        before = text[: m.start()].rstrip().splitlines()
        output = None
        if i + 1 < len(fences):
            between = text[m.end() : fences[i + 1].start()].strip()
            if between == "This prints:":
                output = fences[i + 1].group("body")
        yield Block(
            page,
            text[: m.start()].count("\n") + 1,
            textwrap.dedent(m.group("body")),
            run=bool(before) and before[-1].strip() == RUN_MARK,
            output=output,
        )


BLOCKS = [b for page in _pages() for b in _blocks(page)]
PUBLIC = set(superline_zmq.__all__)


def _is_include(block: Block) -> bool:
    lines = [ln for ln in block.code.splitlines() if ln.strip()]
    return bool(lines) and all(INCLUDE.match(ln) for ln in lines)


def test_the_docs_have_both_kinds_of_block() -> None:
    """Guards the parser: if it found no includes or no fragments, every test below would pass vacuously."""
    assert sum(_is_include(b) for b in BLOCKS) >= 5
    assert sum(not _is_include(b) for b in BLOCKS) >= 20
    assert any(b.run for b in BLOCKS) and any(b.output for b in BLOCKS)


INCLUDES = [b for b in BLOCKS if _is_include(b)]
FRAGMENTS = [b for b in BLOCKS if not _is_include(b)]


@pytest.mark.parametrize("block", INCLUDES, ids=lambda b: b.where)
def test_an_included_snippet_is_a_tested_example(block: Block) -> None:
    for line in block.code.splitlines():
        m = INCLUDE.match(line)
        if m is None:
            continue
        path = ROOT / m.group("path")
        assert path.parent == EXAMPLES and path.suffix == ".py", (
            f"{block.where}: Python may be included only from examples/ (which tests/test_examples.py runs)"
        )
        assert path.is_file(), f"{block.where}: {path} does not exist"
        section = m.group("section")
        if section:
            source = path.read_text()
            for edge in ("start", "end"):
                assert f"# --8<-- [{edge}:{section}]" in source, f"{block.where}: no [{edge}:{section}] in {path.name}"


@pytest.mark.parametrize("block", [b for b in INCLUDES if b.output], ids=lambda b: b.where)
def test_an_included_example_prints_what_the_page_says(block: Block) -> None:
    m = INCLUDE.match(block.code.strip().splitlines()[0])
    assert m is not None
    done = subprocess.run(
        [sys.executable, m.group("path")], cwd=ROOT, capture_output=True, text=True, timeout=60
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    printed = done.stdout.splitlines()
    assert block.output is not None
    for line in block.output.strip().splitlines():
        assert line in printed, f"{block.where} says the example prints {line!r}; it printed:\n{done.stdout}"


def _compile(block: Block) -> ast.Module:
    try:
        tree = compile(block.code, block.where, "exec", flags=ast.PyCF_ONLY_AST | ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
        compile(tree, block.where, "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    except SyntaxError as exc:
        pytest.fail(f"{block.where}: the snippet does not compile: {exc}")
    assert isinstance(tree, ast.Module)
    return tree


def _bound(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
            if not isinstance(node, ast.ClassDef):
                a = node.args
                names.update(x.arg for x in [*a.posonlyargs, *a.args, *a.kwonlyargs])
                names.update(x.arg for x in (a.vararg, a.kwarg) if x is not None)
        elif isinstance(node, ast.Lambda):
            names.update(x.arg for x in [*node.args.args, *node.args.kwonlyargs])
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names.update((alias.asname or alias.name).split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names


def _check_imports(block: Block, tree: ast.AST) -> None:
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0].startswith("superline_zmq"):
            module = importlib.import_module(node.module)
            for alias in node.names:
                exists = hasattr(module, alias.name)
                if not exists:
                    try:
                        importlib.import_module(f"{node.module}.{alias.name}")
                        exists = True
                    except ImportError:
                        pass
                assert exists, f"{block.where}: `from {node.module} import {alias.name}`: no such name"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0].startswith("superline_zmq"):
                    importlib.import_module(alias.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id == "superline_zmq"
            and not hasattr(superline_zmq, node.attr)
        ):
            pytest.fail(f"{block.where}: superline_zmq.{node.attr} does not exist")


def _hints(obj: Any) -> dict[str, Any]:
    """``typing.get_type_hints``, or {} when an annotation names something imported only for type checkers."""
    try:
        return typing.get_type_hints(obj)
    except NameError:
        return {}


def _next_type(owner: Any, attr: str, called: bool) -> Any:
    """What ``owner.attr`` (``owner.attr(...)`` when ``called``) is, as far as annotations tell; None: unknown."""
    if (owner, attr) in KNOWN_ATTRS:
        return KNOWN_ATTRS[(owner, attr)]
    found = inspect.getattr_static(owner, attr, None)
    hint: Any = None
    if isinstance(found, property) and found.fget is not None:
        hint = _hints(found.fget).get("return")
    elif callable(found) and called:
        hint = _hints(found).get("return")
    elif found is None:
        hint = _hints(owner).get(attr)
    origin = typing.get_origin(hint)
    if inspect.isclass(hint) and origin is None:
        return hint
    return None


def _has(owner: type, attr: str) -> bool:
    if (owner, attr) in KNOWN_ATTRS or hasattr(owner, attr):
        return True
    declared = {*_hints(owner), *getattr(owner, "__annotations__", {}), *getattr(owner, "__slots__", ())}
    if attr in declared:
        return True
    # an instance attribute set in __init__
    return re.search(rf"\bself\.{attr}\b\s*(:[^=]*)?=", inspect.getsource(owner)) is not None


def _check_attributes(block: Block, tree: ast.AST) -> None:
    """``srv.a.b(...).c``: each link must exist on the type the previous one is annotated to be."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Attribute) or not isinstance(node.ctx, ast.Load):
            continue
        chain: list[tuple[str, bool]] = []
        cur: ast.expr = node
        while True:
            if isinstance(cur, ast.Attribute):
                chain.append((cur.attr, False))
                cur = cur.value
            elif isinstance(cur, ast.Call) and isinstance(cur.func, ast.Attribute):
                chain.append((cur.func.attr, True))
                cur = cur.func.value
            else:
                break
        if not isinstance(cur, ast.Name) or not inspect.isclass(CONTEXT.get(cur.id)):
            continue
        owner: Any = CONTEXT[cur.id]
        path = cur.id
        for attr, called in reversed(chain):
            assert _has(owner, attr), f"{block.where}: {path}.{attr}: {owner.__name__} has no attribute {attr!r}"
            path += f".{attr}" + ("(...)" if called else "")
            owner = _next_type(owner, attr, called)
            if owner is None:
                break


@pytest.mark.parametrize("block", FRAGMENTS, ids=lambda b: b.where)
def test_a_fragment_compiles_and_names_only_what_exists(block: Block) -> None:
    tree = _compile(block)
    _check_imports(block, tree)
    earlier: set[str] = set()
    for other in FRAGMENTS:
        if other.page == block.page and other.line < block.line:
            try:
                earlier |= _bound(ast.parse(other.code))
            except SyntaxError:
                pass  # that block fails its own test
    bound = _bound(tree) | earlier
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            name = node.id
            assert name in bound or hasattr(builtins, name) or name in PUBLIC or name in CONTEXT, (
                f"{block.where}: {name!r} is not defined by the snippet or its page, and is neither a public "
                "name of superline_zmq nor a stand-in the docs assume (CONTEXT in this test)"
            )
    _check_attributes(block, tree)


@pytest.mark.parametrize("page", sorted({b.page for b in FRAGMENTS if b.run}), ids=lambda p: p.name)
def test_run_blocks_execute(page: Path) -> None:
    namespace: dict[str, Any] = {"__name__": f"docs_{page.stem}"}
    for block in (b for b in FRAGMENTS if b.page == page and b.run):
        try:
            exec(compile(block.code, block.where, "exec"), namespace)
        except Exception as exc:
            pytest.fail(f"{block.where}: the snippet raised {exc!r}")


def test_the_checks_catch_a_misnamed_api() -> None:
    """The checks above can fail: a renamed function, a missing attribute, a syntax error."""
    fake = Block(DOCS / "index.md", 10**6, "srv = create_server(api)\n", run=False, output=None)
    with pytest.raises(AssertionError, match="create_server"):
        test_a_fragment_compiles_and_names_only_what_exists(fake)
    fake = Block(DOCS / "index.md", 10**6, "await srv.cluster.by_username('u42')\n", run=False, output=None)
    with pytest.raises(AssertionError, match="by_username"):
        test_a_fragment_compiles_and_names_only_what_exists(fake)
    fake = Block(DOCS / "index.md", 10**6, "from superline_zmq import Sever\n", run=False, output=None)
    with pytest.raises(AssertionError, match="Sever"):
        test_a_fragment_compiles_and_names_only_what_exists(fake)
    fake = Block(DOCS / "index.md", 10**6, "def f(:\n", run=False, output=None)
    with pytest.raises(pytest.fail.Exception, match="does not compile"):
        test_a_fragment_compiles_and_names_only_what_exists(fake)
