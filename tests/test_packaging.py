"""The sandbox stands beside production: an optional extra, never imported by the library floors."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

from packaging.requirements import Requirement

from invox_batch.cli._sandbox import NO_SANDBOX

from .conftest import ROOT, SAMPLES

SANDBOX_ONLY = {"pocketsphinx", "soxr"}
"""Distributions only the sandbox needs; they come with the ``[sandbox]`` extra alone."""

FORBIDDEN = {"sandbox", *SANDBOX_ONLY}
"""Top-level modules production must not import: the double and its speech recognizer."""

PRODUCTION = ("invox", "invox_batch", "tasks", "flows")
"""The floors that must stand without the sandbox; the CLI (top floor) may start it."""

CLI = {"invox_batch/cli", "invox_batch/__main__.py"}
"""The top floor: the only place allowed to start the embedded sandbox."""

# What each floor must never import: dependencies point down, client <- library <- tasks <- flows.
ABOVE = {
    "invox": {"invox_batch", "tasks", "flows", "sandbox", "prefect"},
    "invox_batch": {"tasks", "flows", "sandbox", "prefect", *SANDBOX_ONLY},
    "tasks": {"flows", "sandbox", *SANDBOX_ONLY},
    "flows": {"sandbox", *SANDBOX_ONLY},
}


def _requirements() -> list[Requirement]:
    """The installed distribution's requirements, as pip would read them."""
    return [Requirement(r) for r in importlib.metadata.requires("invox-batch") or []]


def test_the_speech_recognizer_comes_only_with_the_sandbox_extra() -> None:
    found = {r.name: str(r.marker) for r in _requirements() if r.name in SANDBOX_ONLY}
    assert found == {name: 'extra == "sandbox"' for name in SANDBOX_ONLY}


def test_a_plain_install_and_the_dev_extra_pull_no_speech_recognizer() -> None:
    for extra in ("", "dev"):
        env = {"extra": extra}
        pulled = {r.name for r in _requirements() if r.marker is None or r.marker.evaluate(env)}
        assert pulled, "the distribution metadata lists no requirements"
        assert not pulled & SANDBOX_ONLY, f"extra {extra!r} pulls {pulled & SANDBOX_ONLY}"


def _imported(path: Path) -> set[str]:
    """Top-level names of every absolute import in a file, in functions and TYPE_CHECKING too."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.partition(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.partition(".")[0])
    return names


def _production_files() -> list[str]:
    """Repository-relative paths of the production sources, the CLI floor left out."""
    files = [p.relative_to(ROOT).as_posix() for d in PRODUCTION for p in (ROOT / d).rglob("*.py")]
    return sorted(f for f in files if not any(f == c or f.startswith(f"{c}/") for c in CLI))


def test_production_never_imports_the_sandbox() -> None:
    files = _production_files()
    assert "invox/_client.py" in files and "flows/transcribe_batch.py" in files
    offenders = {f: sorted(_imported(ROOT / f) & FORBIDDEN) for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


def test_arrows_point_only_down() -> None:
    """The client imports nothing of ours, the library no Prefect, tasks no flows."""
    offenders = {
        f: sorted(_imported(ROOT / f) & ABOVE[f.partition("/")[0]]) for f in _production_files()
    }
    assert {f: names for f, names in offenders.items() if names} == {}


def test_the_sandbox_imports_nothing_of_production() -> None:
    """An independent double: a client mistake it shared would pass every test against it."""
    files = sorted(p.relative_to(ROOT).as_posix() for p in (ROOT / "sandbox").rglob("*.py"))
    assert "sandbox/signing.py" in files
    offenders = {f: sorted(_imported(ROOT / f) & set(PRODUCTION)) for f in files}
    assert {f: names for f, names in offenders.items() if names} == {}


# A Python where `pip install .` left the [sandbox] extra out: its recognizer cannot be imported.
WITHOUT_EXTRA = (
    "import runpy, sys\n"
    "sys.modules['pocketsphinx'] = sys.modules['soxr'] = None\n"
    "sys.argv = ['invox-batch', *sys.argv[1:]]\n"
    "runpy.run_module('invox_batch', run_name='__main__')\n"
)


def test_without_the_extra_and_without_a_base_url_one_line_says_how_to_get_it(
    tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    args = [str(SAMPLES / "manifest.csv"), "--out", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOX_")}
    done = subprocess.run(
        [sys.executable, "-c", WITHOUT_EXTRA, "run", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=env,
    )
    assert (done.returncode, done.stdout) == (2, ""), done.stderr
    assert done.stderr == f"error: {NO_SANDBOX}\n"
    assert not out.exists()
