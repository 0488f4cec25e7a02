"""An environment holding antssl and only its runtime dependencies (no extras), built in
seconds from an existing one, to prove that `pip install antssl` without extras runs.

    python tools/runtime_env.py DEST [--source-venv-python PYTHON]

The closure starts at ``[project].dependencies`` of pyproject.toml (the declared runtime
requirements, as the Dockerfile installs them; not the installed antssl's metadata, which an
editable install freezes at install time) and follows each distribution's ``Requires-Dist``
with only the extras a requirement names (``ray[data,train,serve]``) and the markers of this
interpreter. DEST is a ``python -m venv --without-pip`` environment whose site-packages
holds symlinks to those distributions' files in the source environment (nothing is
downloaded or copied), the ``antssl`` package of this checkout, and the ``antssl`` console
script. A module the package imports from a test-only distribution is then missing there.

Run it with the interpreter of the environment to take distributions from (it reads its
own ``importlib.metadata``); tests/test_packaging.py does.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import sysconfig
import tomllib
from collections.abc import Iterable
from importlib.metadata import Distribution, distributions
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parent.parent


def canonical(name: str) -> str:
    """PEP 503 normalised distribution name."""
    return re.sub(r"[-_.]+", "-", name).lower()


def declared_requirements(pyproject: Path = ROOT / "pyproject.toml") -> list[Requirement]:
    """``[project].dependencies`` of ``pyproject`` (no optional dependencies)."""
    project = tomllib.loads(pyproject.read_text())["project"]
    return [Requirement(r) for r in project["dependencies"]]


def installed(site_dirs: Iterable[str] | None = None) -> dict[str, Distribution]:
    """The distributions installed in ``site_dirs`` (default: this interpreter's
    site-packages only, so a stale ``*.egg-info`` in the working directory is not read),
    by canonical name."""
    paths = list(site_dirs or {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    out: dict[str, Distribution] = {}
    for dist in distributions(path=paths):
        out.setdefault(canonical(dist.metadata["Name"]), dist)
    return out


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    env: dict[str, str] = {k: str(v) for k, v in default_environment().items()}
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def closure(
    roots: Iterable[Requirement], dists: dict[str, Distribution], skip: Iterable[str] = ("antssl",)
) -> dict[str, Distribution]:
    """Every distribution ``roots`` need at run time, transitively: each requirement's own
    ``Requires-Dist`` whose marker holds for this interpreter with the extras asked of it
    (and no others). Raises LookupError naming a requirement that is not installed."""
    wanted: dict[str, set[str]] = {}
    todo = [(r, "pyproject.toml") for r in roots if _applies(r, set())]
    skipped = {canonical(s) for s in skip}
    while todo:
        req, parent = todo.pop()
        name = canonical(req.name)
        if name in skipped:
            continue
        if name not in dists:
            raise LookupError(f"{req} (required by {parent}) is not installed")
        extras = {canonical(e) for e in req.extras}
        seen = wanted.get(name)
        if seen is not None and extras <= seen:
            continue
        wanted[name] = (seen or set()) | extras
        for sub in dists[name].requires or []:
            r = Requirement(sub)
            if _applies(r, wanted[name]):
                todo.append((r, name))
    return {n: dists[n] for n in sorted(wanted)}


def _top_entries(dist: Distribution) -> dict[str, list[str]]:
    """First path component of each file a distribution installed inside site-packages
    (scripts, ``../../bin/…``, left out) → its files' relative paths."""
    if dist.files is None:
        raise LookupError(f"{dist.metadata['Name']} lists no files (no RECORD): cannot link it")
    out: dict[str, list[str]] = {}
    for f in dist.files:
        parts = Path(str(f)).parts
        if parts and parts[0] != ".." and parts[0] != "__pycache__":
            out.setdefault(parts[0], []).append(str(f))
    return out


def build(
    dest: Path,
    keep: dict[str, Distribution],
    dists: dict[str, Distribution],
    source: Path = ROOT,
    python: str = sys.executable,
) -> Path:
    """Create the environment at ``dest``; returns its interpreter.

    ``keep``: the distributions to expose (:func:`closure`); ``dists``: every installed
    one, so that a top-level folder shared with a distribution not kept (a namespace
    package such as ``google/``) is linked file by file rather than whole."""
    subprocess.run([python, "-m", "venv", "--without-pip", "--symlinks", str(dest)], check=True)
    bindir = dest / "bin"
    site = Path(
        subprocess.run(
            [
                str(bindir / "python"),
                "-c",
                "import sysconfig; print(sysconfig.get_paths()['purelib'])",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    owners: dict[str, set[str]] = {}
    entries: dict[str, dict[str, list[str]]] = {}
    for name, dist in dists.items():
        if name == "antssl":
            continue
        try:
            entries[name] = _top_entries(dist)
        except LookupError:
            if name in keep:
                raise
            continue
        for top in entries[name]:
            owners.setdefault(top, set()).add(name)
    for name, dist in keep.items():
        for top, files in entries[name].items():
            target = site / top
            if owners[top] <= set(keep):
                if not target.exists():
                    target.symlink_to(Path(str(dist.locate_file(top))))
                continue
            for rel in files:  # shared with a distribution left out: only this one's files
                link = site / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    link.symlink_to(Path(str(dist.locate_file(rel))))
    (site / "antssl").symlink_to(source / "antssl")
    project = tomllib.loads((source / "pyproject.toml").read_text())["project"]
    for script, ref in project.get("scripts", {}).items():
        module, func = ref.split(":")
        path = bindir / script
        path.write_text(
            f"#!{bindir / 'python'}\nimport sys\nfrom {module} import {func}\nsys.exit({func}())\n"
        )
        path.chmod(0o755)
    return bindir / "python"


def runtime_env(dest: Path, source: Path = ROOT) -> Path:
    """:func:`build` with the closure of ``source``'s declared dependencies; the interpreter."""
    dists = installed()
    keep = closure(declared_requirements(source / "pyproject.toml"), dists)
    return build(dest, keep, dists, source)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    p.add_argument("dest", type=Path, help="folder for the new environment (must not exist)")
    args = p.parse_args(argv)
    if args.dest.exists():
        p.error(f"{args.dest} exists")
    python = runtime_env(args.dest)
    print(python)
    return 0


if __name__ == "__main__":
    sys.exit(main())
