"""The package's layout keeps its promises: one stage registry the CLI is built from, no
import circle, Ray only at the edges, one error hierarchy fully mapped to HTTP, logging
instead of print."""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import antssl
from antssl import errors
from antssl.cli import build_parser
from antssl.stages import PIPELINE, STAGES

PKG = Path(antssl.__file__).parent
# The modules that may import Ray: the stages that run on it, the data stream, the runtime
# helper and the Serve app (the antssl.serve package).
RAY_MODULES = {
    "antssl.stages.tiles",
    "antssl.stages.cache",
    "antssl.stages.pretrain",
    "antssl.stages.embed",
    "antssl.stages.cluster",
    "antssl.stages.index",  # the sharded ivfpq build: one Ray task per shard
    "antssl.data",
    "antssl.runtime",
}


def _may_import_ray(module: str) -> bool:
    return module in RAY_MODULES or module.startswith("antssl.serve.")


# print() only for a command's final output: the CLI and the query client's tables.
PRINT_MODULES = {"antssl.cli", "antssl.client"}


def _modules() -> dict[str, ast.Module]:
    out = {}
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG.parent).with_suffix("")
        name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
        out[name] = ast.parse(path.read_text(), str(path))
    return out


MODULES = _modules()


def _resolve(name: str, node: ast.ImportFrom, module: str) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    is_pkg = (PKG.parent / Path(*base) / "__init__.py").exists()
    base = base[: len(base) - node.level + (1 if is_pkg else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.Module) -> set[str]:
    """Every module this one imports (at any depth in the file)."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            src = _resolve(module, node, module)
            found.add(src)
            found |= {f"{src}.{a.name}" for a in node.names if f"{src}.{a.name}" in MODULES}
    return found


def test_no_import_circle_in_antssl() -> None:
    graph = {m: {i for i in _imports(m, t) if i in MODULES and i != m} for m, t in MODULES.items()}
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(m: str, path: list[str]) -> None:
        state[m] = 1
        for n in sorted(graph[m]):
            if state.get(n) == 1:
                cycle = [*path[path.index(n) :], n] if n in path else [m, n]
                raise AssertionError("import circle: " + " -> ".join(cycle))
            if n not in state:
                visit(n, [*path, n])
        state[m] = 2

    for m in sorted(graph):
        if m not in state:
            visit(m, [m])


def test_ray_is_imported_only_at_the_edges() -> None:
    uses_ray = {
        m for m, t in MODULES.items() if any(i.split(".")[0] == "ray" for i in _imports(m, t))
    }
    assert all(_may_import_ray(m) for m in uses_ray), sorted(
        m for m in uses_ray if not _may_import_ray(m)
    )


def test_the_pure_packages_load_without_ray() -> None:
    code = (
        "import sys\n"
        "import antssl.search, antssl.search.ann, antssl.search.manifest, antssl.search.service\n"
        "import antssl.search.shards\n"
        "import antssl.ssl, antssl.kmeans, antssl.evaluate.metrics, antssl.encoder\n"
        "import antssl.scenes, antssl.catalog, antssl.stages, antssl.cli\n"
        "assert 'ray' not in sys.modules, sorted(m for m in sys.modules if m.startswith('ray'))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_every_error_class_lives_in_errors_and_has_an_http_status() -> None:
    for m in MODULES:
        importlib.import_module(m)
    from antssl.serve.errors import STATUS, status_of

    def subclasses(cls: type) -> set[type]:
        out = set(cls.__subclasses__())
        for c in list(out):
            out |= subclasses(c)
        return out

    mine = {c for c in subclasses(errors.AntsslError) if c.__module__.startswith("antssl")}
    assert {c.__module__ for c in mine} == {"antssl.errors"}, sorted(
        f"{c.__module__}.{c.__name__}" for c in mine if c.__module__ != "antssl.errors"
    )
    defined = {
        obj
        for _, obj in inspect.getmembers(errors, inspect.isclass)
        if issubclass(obj, errors.AntsslError) and obj is not errors.AntsslError
    }
    assert mine == defined
    for cls in defined:
        code = status_of(cls("x"))
        assert 400 <= code < 600 and code != 500, (cls.__name__, code)
    assert {cls for cls, _ in STATUS} == defined


def test_print_only_for_final_output() -> None:
    printing = {
        m
        for m, t in MODULES.items()
        for node in ast.walk(t)
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "print"
    }
    assert printing <= PRINT_MODULES, sorted(printing - PRINT_MODULES)


def test_the_cli_offers_every_registered_stage_with_force() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    commands = set(sub.choices)  # type: ignore[attr-defined]
    assert {s.name for s in STAGES} <= commands
    for s in STAGES:
        args = parser.parse_args([s.name, "--config", "c.yaml", "--force"])
        assert args.force is True
        mod = importlib.import_module(s.module)
        sig = inspect.signature(mod.run)
        assert list(sig.parameters)[:2] == ["config", "force"], s.name
        assert sig.parameters["force"].default is False
    assert [s.name for s in PIPELINE] == [
        "tiles",
        "cache",
        "pretrain",
        "embed",
        "cluster",
        "maps",
        "index",
    ]
    assert parser.parse_args(["pipeline", "--config", "c.yaml", "--force"]).force is True


@pytest.mark.parametrize("name", [m.name for m in pkgutil.iter_modules([str(PKG / "stages")])])
def test_each_stage_module_is_registered(name: str) -> None:
    assert name in {s.name for s in STAGES}
