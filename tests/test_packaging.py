"""Every third-party module the package imports is a declared runtime dependency (not only
in the test extra), so `pip install antssl` without extras runs every command."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import antssl

ROOT = Path(antssl.__file__).parent.parent
# Imported through a declared dependency that owns them (the reason, not a guess):
PROVIDED_BY = {
    "fastapi": "ray",  # ray[serve]
    "starlette": "ray",  # ray[serve], via fastapi
    "affine": "rasterio",  # rasterio's transform type
}


def _requirement_name(req: str) -> str:
    return re.split(r"[\s\[<>=!~;]", req, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_level() -> set[str]:
    found: set[str] = set()
    for path in (ROOT / "antssl").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                found.add(node.module.split(".")[0])
    return {m for m in found if m not in sys.stdlib_module_names and m not in {"antssl"}}


def test_every_imported_package_is_a_runtime_dependency() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    declared = {_requirement_name(r) for r in project["dependencies"]}
    dists = packages_distributions()
    missing = {}
    for module in sorted(_imported_top_level()):
        owners = {d.lower().replace("_", "-") for d in dists.get(module, [])}
        if module in PROVIDED_BY:
            assert PROVIDED_BY[module] in declared, module
            continue
        if not owners & declared:
            missing[module] = sorted(owners)
    assert not missing, f"imported but not in [project].dependencies: {missing}"
    test_only = {_requirement_name(r) for r in project["optional-dependencies"]["test"]}
    assert "httpx" in declared and "httpx" not in test_only  # the CLI imports the client


def _commands(python: str = sys.executable) -> list[list[str]]:
    """`antssl --help`, each subcommand's --help, each jobs/*.py --help (as the Dockerfile's
    smoke test runs them), with the interpreter ``python`` and its environment's script."""
    import argparse

    from antssl.cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    antssl_bin = str(Path(python).parent / "antssl")
    out = [[antssl_bin, "--help"]] + [[antssl_bin, name, "--help"] for name in sub.choices]
    jobs = sorted((ROOT / "jobs").glob("*.py"))
    assert jobs
    return out + [[python, str(job), "--help"] for job in jobs]


def test_every_command_and_job_entrypoint_answers_help() -> None:
    """Each in its own interpreter: an import that fails at start-up (a missing runtime
    dependency, a broken module) fails here, not at the first `ray job submit`."""
    _assert_all_answer_help(_commands(), cwd=ROOT)


def _assert_all_answer_help(
    commands: list[list[str]], cwd: Path, env: dict[str, str] | None = None
) -> None:
    import subprocess
    from concurrent.futures import ThreadPoolExecutor

    def run(cmd: list[str]) -> tuple[list[str], subprocess.CompletedProcess[str]]:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=cwd, env=env)
        return cmd, proc

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(run, commands))
    assert len(results) >= 1 + 9 + 8
    for cmd, proc in results:
        where = " ".join(Path(c).name if i == 0 else c for i, c in enumerate(cmd))
        assert proc.returncode == 0, f"{where}: {proc.stderr[-2000:]}"
        assert proc.stdout.startswith("usage:"), where
        assert not proc.stderr.strip(), f"{where} wrote to stderr: {proc.stderr[-1000:]}"
        if cmd[1].endswith(".py"):
            stage = Path(cmd[1]).stem  # a job's help is its stage's
            assert f"antssl {stage}" in proc.stdout, where


def _runtime_env_tool():  # tools/ is not a package: load tools/runtime_env.py by path
    import importlib.util

    spec = importlib.util.spec_from_file_location("runtime_env", ROOT / "tools" / "runtime_env.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("runtime_env", module)
    spec.loader.exec_module(module)
    return module


def test_runtime_closure_follows_named_extras_and_leaves_test_only_packages_out() -> None:
    tool = _runtime_env_tool()
    keep = tool.closure(tool.declared_requirements(ROOT / "pyproject.toml"), tool.installed())
    # declared, and reached through ray[serve] (fastapi) or a dependency's own requirements
    assert {"torch", "ray", "httpx", "rasterio", "fastapi", "uvicorn", "numpy"} <= set(keep)
    test_only = {"pytest", "pytest-timeout", "moto", "selenium", "schemathesis", "ruff", "mypy"}
    assert not test_only & set(keep), test_only & set(keep)
    assert "antssl" not in keep  # linked from the checkout, not from the installed metadata
    # a dependency left out of pyproject.toml is left out of the closure (what the next test
    # then notices): httpx is reached only through the declaration
    roots = [r for r in tool.declared_requirements() if tool.canonical(r.name) != "httpx"]
    assert "httpx" not in tool.closure(roots, tool.installed())


def test_commands_answer_help_with_only_the_runtime_dependencies(tmp_path: Path) -> None:
    """The same commands in an environment holding antssl and the closure of its declared
    runtime dependencies only (no test extra, nothing else from .venv): what `pip install
    antssl` gives a user. A module imported at start-up from an undeclared (or test-only)
    distribution fails here. Built in seconds with symlinks (tools/runtime_env.py)."""
    import os
    import subprocess

    python = str(_runtime_env_tool().runtime_env(tmp_path / "env", ROOT))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env["PATH"] = f"{Path(python).parent}{os.pathsep}{env.get('PATH', '')}"
    # the environment is isolated: the test extra is not importable there
    proc = subprocess.run([python, "-c", "import pytest"], capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "No module named 'pytest'" in proc.stderr, proc.stderr
    _assert_all_answer_help(_commands(python), cwd=tmp_path, env=env)
