"""The package's shape (issue 15): no import cycle, one place that creates batches, one URI
redaction, an emulator that imports nothing of the provider, no dev tooling in the wheel."""

from __future__ import annotations

import ast
import re
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "airflow_batch_provider"
NAME = "airflow_batch_provider"


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package ``__init__``)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        out[".".join(parts[:-1] if is_package else parts)] = (path, is_package)
    return out


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imported_names(tree: ast.AST, package: str) -> Iterator[str]:
    """Every import (module level and inside functions), ``if TYPE_CHECKING:`` blocks aside."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                yield from _imported_names(ast.Module(body=[child], type_ignores=[]), package)
            continue
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            yield module
            yield from (f"{module}.{alias.name}" for alias in node.names)
        else:
            yield from _imported_names(node, package)


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (the ``__init__`` of a package counts as
    the package; a submodule's own parent packages do not, Python imports them first)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, (path, is_package) in modules.items():
        package = name if is_package else name.rpartition(".")[0]
        edges: set[str] = set()
        for imported in _imported_names(ast.parse(path.read_text(encoding="utf-8")), package):
            parts = imported.split(".")
            while parts and ".".join(parts) not in modules:
                parts.pop()
            target = ".".join(parts)
            if not target or target == name:
                continue
            edges.add(target)
            # Importing a.b.c runs a.b's __init__ too (unless it is an ancestor of the importer).
            for i in range(2, len(parts)):
                parent = ".".join(parts[:i])
                if parent in modules and not name.startswith(parent + "."):
                    edges.add(parent)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_graph_sees_function_level_imports() -> None:
    graph = import_graph()
    # batch_monitor imports the app lazily (only the api-server serves pages): still an edge.
    assert f"{NAME}.plugins.app" in graph[f"{NAME}.plugins.batch_monitor"]
    assert f"{NAME}.batch_file.lines" in graph[f"{NAME}.batch_file.templates"]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_in_the_package() -> None:
    assert cycles(import_graph()) == []


def _calls(attribute: str) -> dict[str, int]:
    """Module -> how many ``.<attribute>(`` calls it makes."""
    out = {}
    for name, (path, _) in _modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        count = sum(
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == attribute
            for node in ast.walk(tree)
        )
        if count:
            out[name] = count
    return out


def test_outside_the_hook_one_module_creates_batches() -> None:
    """Never paying twice is decided in one place: submission/service.py."""
    creators = {
        name: n
        for attribute in ("create_batch", "acreate_batch")
        for name, n in _calls(attribute).items()
        if not name.startswith(f"{NAME}.hooks.")
    }
    assert creators == {f"{NAME}.submission.service": 1}


def test_one_uri_redaction() -> None:
    defined = [
        name
        for name, (path, _) in _modules().items()
        if re.search(r"^def (public_uri|strip_userinfo)\(", path.read_text(encoding="utf-8"), re.M)
    ]
    assert defined == [f"{NAME}.storage"]


def test_the_emulator_imports_nothing_of_the_provider() -> None:
    """The emulator stands apart: it runs without the provider (and its Airflow)."""
    emulator = f"{NAME}.emulator"
    graph = import_graph()
    outside = {
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name == emulator or name.startswith(emulator + ".")
        for target in targets
        if not (target == emulator or target.startswith(emulator + ".")) and target != NAME
    }
    assert not outside, sorted(outside)
    airflow_imports = {
        name
        for name, (path, is_package) in _modules().items()
        if name.startswith(emulator)
        for imported in _imported_names(ast.parse(path.read_text(encoding="utf-8")), name)
        if imported == "airflow" or imported.startswith("airflow.")
    }
    assert not airflow_imports, sorted(airflow_imports)


# ---- what the wheel carries ----------------------------------------------------------------


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def test_the_wheel_ships_the_package_and_no_dev_tooling() -> None:
    from setuptools import find_packages

    setuptools_cfg = _pyproject()["tool"]["setuptools"]
    packages = find_packages(where=str(ROOT), **setuptools_cfg["packages"]["find"])
    assert NAME in packages and f"{NAME}.emulator" in packages
    assert all(p == NAME or p.startswith(f"{NAME}.") for p in packages), packages
    assert (ROOT / "devtools" / "demo.py").is_file() and (ROOT / "devtools" / "devstack.py").is_file()
    assert not list(PACKAGE.rglob("demo.py")) and not list(PACKAGE.rglob("devstack.py"))
    # Every package-data pattern names files that exist.
    for pattern in setuptools_cfg["package-data"][NAME]:
        assert list(PACKAGE.glob(pattern)), f"package-data {pattern!r} matches nothing"


@pytest.mark.parametrize("extra", ["devtools/demo.py", "airflow_batch_provider/devstack.py"])
def test_check_wheel_refuses_dev_tooling(tmp_path: Path, extra: str) -> None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import check_wheel
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    wheel = tmp_path / "airflow_batch_provider-1.0-py3-none-any.whl"
    info = "airflow_batch_provider-1.0.dist-info"
    with zipfile.ZipFile(wheel, "w") as zf:
        for name in ("__init__.py", "py.typed", "get_provider_info.py", "plugins/static/icon.svg"):
            zf.writestr(f"{NAME}/{name}", "")
        zf.writestr(f"{info}/METADATA", "Name: x\nVersion: 1.0\n")
        zf.writestr(
            f"{info}/entry_points.txt", "[apache_airflow_provider]\n[airflow.plugins]\n[console_scripts]\n"
        )
    assert check_wheel.main(str(wheel), "1.0") == 0
    with zipfile.ZipFile(wheel, "a") as zf:
        zf.writestr(extra, "")
    assert check_wheel.main(str(wheel), "1.0") == 1


def test_airflow_version_shims_live_in_compat() -> None:
    """No ``try: from airflow... except ImportError`` outside ``_compat.py`` (an optional
    provider, ``airflow.providers.*``, is not a version difference)."""

    def is_core(module: str) -> bool:
        return module.split(".")[0] == "airflow" and not module.startswith("airflow.providers.")

    def imports_airflow(nodes: list[ast.stmt]) -> bool:
        return any(
            (isinstance(n, ast.ImportFrom) and is_core(n.module or ""))
            or (isinstance(n, ast.Import) and any(is_core(a.name) for a in n.names))
            for node in nodes
            for n in ast.walk(node)
        )

    shims = []
    for name, (path, _) in _modules().items():
        if name == f"{NAME}._compat" or name.startswith(f"{NAME}.emulator"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Try) and imports_airflow(node.body):
                caught = {ast.unparse(h.type) for h in node.handlers if h.type is not None}
                if caught & {"ImportError", "ModuleNotFoundError"}:
                    shims.append(f"{name}:{node.lineno}")
    assert not shims, shims
