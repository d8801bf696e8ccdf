"""Whatever JSON the server sends (or whatever bytes, with whatever status), the client answers
with a typed model or an ``InvoxError`` carrying a short, value-free message; in the flow such a
reply becomes a clear failed row, never a crash."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from invox import (
    InvoxError,
    PresignedUpload,
    ResponseFormatError,
    Transcription,
)
from invox._auth import parse_token_response
from invox._exceptions import error_from_response
from invox._models import parse_presigned_upload, parse_transcription
from invox_batch.dataset import read_files
from invox_batch.manifest import ManifestError, read_manifest

from ..flow_helpers import audio_set, files_of_run, run_flow, write_csv_manifest
from ..helpers import SandboxControl

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=20,
)
KEYS = (
    "processingStatus",
    "transcriptionStatus",
    "transcription",
    "vttTranscription",
    "errorMessage",
    "presignedUrl",
    "requestId",
    "accessToken",
    "access_token",
    "expiresIn",
    "expires_in",
)
# Bodies shaped like the contract's, with any value under the keys the parsers read.
STATUSES = st.sampled_from(["PENDING", "COMPLETED", "ERROR", "completed ", "DONE", ""])
segments = st.lists(
    st.fixed_dictionaries(
        {}, optional={"text": json_values, "start": json_values, "end": json_values}
    ),
    max_size=3,
)
plausible = st.dictionaries(
    st.sampled_from(KEYS), json_values | STATUSES | segments, max_size=len(KEYS)
)
bodies = json_values | plausible
plausible_rows = st.dictionaries(
    st.sampled_from(["audio_path", "file_id", "mime_type", "note"]), json_values, max_size=4
)


def _message_is_clean(error: InvoxError, body: Any) -> None:
    """One line, bounded, and no string value of the body echoed back (it may be PHI)."""
    assert "\n" not in error.message and len(error.message) <= 400
    strings = [v for v in (body.values() if isinstance(body, dict) else []) if isinstance(v, str)]
    assert not [s for s in strings if len(s) >= 8 and s in error.message]


@FUZZ
@given(body=bodies)
def test_get_transcription_bodies(body: Any) -> None:
    try:
        result = parse_transcription("req-1", body)
    except ResponseFormatError as exc:
        _message_is_clean(exc, body)
    else:
        assert isinstance(result, Transcription) and result.status in (
            "PENDING",
            "COMPLETED",
            "ERROR",
        )


@FUZZ
@given(body=bodies)
def test_presign_bodies(body: Any) -> None:
    try:
        result = parse_presigned_upload(body)
    except ResponseFormatError as exc:
        _message_is_clean(exc, body)
    else:
        assert isinstance(result, PresignedUpload)


@FUZZ
@given(body=bodies)
def test_token_bodies(body: Any) -> None:
    try:
        token, ttl = parse_token_response(body, 7200.0)
    except ResponseFormatError as exc:
        _message_is_clean(exc, body)
    else:
        assert token.get_secret_value() and ttl > 0


@FUZZ
@given(
    status=st.integers(min_value=400, max_value=599),
    content=st.binary(max_size=200) | bodies.map(lambda b: json.dumps(b).encode()),
    retry_after=st.none() | st.text(max_size=20),
    upload=st.booleans(),
)
def test_error_answers_of_any_shape(
    status: int, content: bytes, retry_after: str | None, upload: bool
) -> None:
    headers = {"Retry-After": retry_after} if retry_after and retry_after.isprintable() else {}
    try:
        response = httpx.Response(status, content=content, headers=headers)
    except (UnicodeEncodeError, ValueError):
        return  # not a response any server could send
    error = error_from_response(response, operation="get-transcription", upload=upload)
    assert isinstance(error, InvoxError) and error.error_type and error.status_code == status
    assert "\n" not in error.message


@pytest.mark.usefixtures("prefect_harness", "invox_env")
def test_malformed_answers_become_failed_rows_not_a_crash(
    sandbox: SandboxControl, tmp_path: Path
) -> None:
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 3))
    sandbox.faults(malformed_rate={"status": 1.0})

    run = run_flow(sandbox, manifest, tmp_path / "out")

    rows = files_of_run(read_files(tmp_path / "out"), run.flow_run_id)
    assert run.state.is_failed() and len(rows) == 3
    assert {(r["status"], r["error_type"]) for r in rows} == {("failed", "bad_response")}
    assert all(r["request_id"] and "get-transcription response" in r["error_message"] for r in rows)


@FUZZ
@given(lines=st.lists(json_values | plausible_rows, max_size=5))
def test_jsonl_manifests_of_any_json_lines(lines: list[Any], tmp_path_factory: Any) -> None:
    """test_manifest fuzzes raw bytes; this feeds well-formed JSON of every shape, line by line."""
    path = tmp_path_factory.mktemp("jsonl") / "m.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines))
    try:
        manifest = read_manifest(str(path))
    except ManifestError as exc:
        assert str(exc) and "Traceback" not in str(exc)
    else:
        assert all(row.file_id for row in manifest.rows)
