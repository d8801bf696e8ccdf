"""Everything checkable is refused before paying: one line, exit 2, no API call, no traceback."""

from __future__ import annotations

import asyncio
import math
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from invox import InvoxSettings
from invox_batch.cli import app
from invox_batch.files import PRIVATE_FILES_ENV
from sandbox.settings import Faults, SandboxSettings

from ..flow_helpers import audio_set, write_csv_manifest
from ..helpers import SandboxControl

runner = CliRunner()
CALLS = ("token", "presign", "upload", "status")


def no_calls(sandbox: SandboxControl) -> bool:
    return all(sandbox.requests(endpoint) == 0 for endpoint in CALLS)


def one_error_line(done: Result) -> str:
    """The output of a refusal: exit 2 and a single ``error:`` line, no traceback."""
    assert done.exit_code == 2, done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), done.exception
    lines = [line for line in done.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), done.output
    return lines[0]


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 2))


@pytest.fixture
def under_a_file(tmp_path: Path) -> Path:
    """A folder that can never be created, even by root: its parent is a regular file."""
    (tmp_path / "afile").write_text("")
    return tmp_path / "afile" / "sub"


@pytest.fixture
def read_only_dir(tmp_path: Path) -> Iterator[Path]:
    """A read-only bind mount (root ignores chmod, not a read-only mount); skipped without one."""
    target = tmp_path / "ro"
    target.mkdir()
    mounted = subprocess.run(["mount", "--bind", str(target), str(target)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot bind-mount here (needs root)")
    try:
        subprocess.run(
            ["mount", "-o", "remount,bind,ro", str(target)], check=True, capture_output=True
        )
        yield target
    finally:
        subprocess.run(["umount", str(target)], check=True)


@pytest.mark.usefixtures("invox_env")
def test_an_output_that_cannot_be_created_exits_2_before_any_call(
    sandbox: SandboxControl, manifest: Path, under_a_file: Path, tmp_path: Path
) -> None:
    args = ["run", str(manifest), "--result-storage", str(tmp_path / "state")]
    line = one_error_line(runner.invoke(app, [*args, "--out", str(under_a_file)]))
    assert line.startswith(f"error: cannot write to the output folder {under_a_file}")
    assert no_calls(sandbox)


@pytest.mark.usefixtures("invox_env")
def test_a_read_only_output_mount_exits_2_before_any_call(
    sandbox: SandboxControl, manifest: Path, read_only_dir: Path, tmp_path: Path
) -> None:
    args = ["run", str(manifest), "--result-storage", str(tmp_path / "state")]
    line = one_error_line(runner.invoke(app, [*args, "--out", str(read_only_dir / "out")]))
    assert "cannot write to the output folder" in line and "Read-only file system" in line
    assert no_calls(sandbox) and not (tmp_path / "state").exists()


@pytest.mark.usefixtures("invox_env")
def test_an_unwritable_state_location_exits_2_before_any_call(
    sandbox: SandboxControl, manifest: Path, under_a_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    args = ["run", str(manifest), "--out", str(out), "--result-storage", str(under_a_file)]
    line = one_error_line(runner.invoke(app, args))
    assert line.startswith(f"error: cannot write to the state folder {under_a_file}")
    assert no_calls(sandbox) and not out.exists()


@pytest.mark.usefixtures("invox_env")
def test_a_remote_result_storage_is_refused_and_never_becomes_a_local_folder(
    sandbox: SandboxControl, manifest: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    args = ["run", str(manifest), "--out", str(tmp_path / "out")]
    line = one_error_line(runner.invoke(app, [*args, "--result-storage", "s3://bucket/state"]))
    assert line.startswith("error: --result-storage: ") and "not a s3:// URI" in line
    assert no_calls(sandbox) and not (tmp_path / "s3:").exists()


@pytest.mark.usefixtures("invox_env")
def test_a_remote_out_without_a_named_ledger_exits_2_before_any_call(
    sandbox: SandboxControl, manifest: Path
) -> None:
    line = one_error_line(runner.invoke(app, ["run", str(manifest), "--out", "memory://b/o"]))
    assert "--result-storage PATH" in line and "--local-ledger" in line
    assert no_calls(sandbox)


def test_an_empty_out_is_refused(manifest: Path) -> None:
    for empty in ("", "  "):
        assert "--out is empty" in one_error_line(
            runner.invoke(app, ["run", str(manifest), "--out", empty])
        )


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_the_flow_itself_refuses_an_unwritable_output_before_any_call(
    sandbox: SandboxControl, manifest: Path, under_a_file: Path
) -> None:
    """A deployment run (no CLI in front) fails at once with the same one line."""
    from flows.transcribe_batch import transcribe_batch

    state: Any = asyncio.run(
        transcribe_batch(manifest=str(manifest), out=str(under_a_file), return_state=True)
    )
    assert state.is_failed() and "cannot write to the output folder" in str(state.message)
    assert no_calls(sandbox)


# ---- fuzz: no INVOX_* value and no CLI value may produce a traceback -------------------------

_ENV_NAMES = sorted(
    {f"INVOX_{name.upper()}" for name in InvoxSettings.model_fields}
    | {f"INVOX_SANDBOX_{name.upper()}" for name in SandboxSettings.model_fields}
    | {f"INVOX_SANDBOX_FAULTS__{name.upper()}" for name in Faults.model_fields}
    | {PRIVATE_FILES_ENV}
)
_JUNK = st.one_of(
    st.sampled_from(["", "notjson", "{", "[]", '{"a": 1}', "-1", "0", "nan", "inf", "1e400"]),
    st.sampled_from(["true", "http://", "http://127.0.0.1:1", "/x", "0.5", "{}", "null"]),
    st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=12),
)


def _clean_env(**changes: str) -> dict[str, str | None]:
    """Every INVOX_* of this process unset, a complete fake credential, then ``changes``."""
    env: dict[str, str | None] = {k: None for k in os.environ if k.startswith("INVOX_")}
    env.update(INVOX_APP_ID="app", INVOX_API_KEY="key", INVOX_SANDBOX_PROCESSING="instant")
    env.update(changes)
    return env


def _assert_tidy(done: Result) -> None:
    """Exit 0, 1 or 2 with no traceback; a refusal says what is wrong in a line or two."""
    assert done.exit_code in (0, 1, 2), done.output
    assert done.exception is None or isinstance(done.exception, SystemExit), repr(done.exception)
    assert "Traceback" not in done.output
    if done.exit_code == 2:
        assert len([line for line in done.output.splitlines() if line.strip()]) <= 3, done.output


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(name=st.sampled_from(_ENV_NAMES), value=_JUNK)
def test_no_invox_variable_value_gives_a_traceback(
    manifest: Path, under_a_file: Path, name: str, value: str
) -> None:
    env = _clean_env(**{name: value})
    _assert_tidy(runner.invoke(app, ["validate", str(manifest)], env=env))
    # run reads the sandbox's settings too; the unwritable output stops it before anything starts
    done = runner.invoke(app, ["run", str(manifest), "--out", str(under_a_file)], env=env)
    _assert_tidy(done)
    assert done.exit_code == 2


def _finite(low: float, high: float = math.inf, *, strict: bool = False) -> Any:
    return lambda v: math.isfinite(v) and (v > low if strict else v >= low) and v <= high


_INTS = st.one_of(st.integers(-(10**6), 10**6), st.sampled_from([0, 1, 10, 11, 256, 257]))
_FLOATS = st.one_of(st.floats(), st.sampled_from([0.0, 1.0, 0.5, -0.0, 1e300]))
_FLAGS: dict[str, tuple[Any, Any]] = {
    "--concurrency": (_INTS, lambda v: 1 <= v <= 256),
    "--max-resubmits": (_INTS, lambda v: 0 <= v <= 10),
    "--poll-timeout": (_FLOATS, _finite(1)),
    "--callback-grace": (_FLOATS, _finite(0)),
    "--max-audio-hours": (_FLOATS, _finite(0, strict=True)),
}


@pytest.mark.parametrize("flag", sorted(_FLAGS))
def test_no_cli_value_gives_a_traceback_or_starts_a_run_when_refused(
    flag: str, manifest: Path, under_a_file: Path
) -> None:
    """A bad value is refused naming its flag; a good one gets as far as the output check."""
    strategy, valid = _FLAGS[flag]

    @settings(max_examples=25, deadline=None)
    @given(value=st.one_of(strategy, st.sampled_from(["", "abc", "1.5.0"])))
    def check(value: Any) -> None:
        args = ["run", str(manifest), "--out", str(under_a_file), f"{flag}={value}"]
        done = runner.invoke(app, args, env=_clean_env())
        _assert_tidy(done)
        assert done.exit_code == 2
        if not isinstance(value, str) and valid(value):
            assert "cannot write to the output folder" in done.output, done.output
        else:
            assert flag in done.output, done.output

    check()
