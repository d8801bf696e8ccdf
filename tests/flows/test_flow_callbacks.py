"""The flow's callback mode: real signed callbacks from the sandbox, a real receiver, real Parquet.

Valid callbacks settle each file with one status call; dropped ones fall back to polling; forged
ones (tampered by a proxy between the sandbox and the receiver) never change a result.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from invox_batch.callbacks import CallbackStore, ReceiverConfig, running_receiver
from invox_batch.dataset import read_files
from sandbox.server import SandboxServer

from ..flow_helpers import audio_set, files_of_run, run_flow, transcripts_of, write_csv_manifest
from ..helpers import SandboxControl

pytestmark = pytest.mark.usefixtures("prefect_harness", "invox_env")

FILES = 5


@pytest.fixture
def verifying(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> ReceiverConfig:
    """INVOX_* set so the flow's receiver checks the sandbox's signatures."""
    monkeypatch.setenv("INVOX_VERIFY_CALLBACK_SIGNATURES", "true")
    monkeypatch.setenv("INVOX_CALLBACK_SECRET", sandbox_server.settings.callback_secret)
    monkeypatch.setenv("INVOX_CALLBACK_API_KEY", sandbox_server.settings.callback_api_key)
    return ReceiverConfig(
        "hmac-sha256",
        300.0,
        sandbox_server.settings.callback_secret,
        sandbox_server.settings.callback_api_key,
    )


@pytest.fixture
def manifest(tmp_path: Path) -> Path:
    return write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, FILES, first_seed=500))


def records(store: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_text()) for p in store.glob("*.json")]


def test_verified_callbacks_settle_each_file_with_one_status_call(
    sandbox: SandboxControl, verifying: ReceiverConfig, manifest: Path, tmp_path: Path
) -> None:
    sandbox.faults(processing_delay_s=[0.3, 0.6])
    out = tmp_path / "out"
    run = run_flow(
        sandbox,
        manifest,
        out,
        completion="callback",
        callback_listen="127.0.0.1:0",
        callback_grace_s=30.0,
    )
    assert run.state.is_completed(), run.state.message
    assert run.calls == {"token": 1, "presign": FILES, "upload": FILES, "status": FILES}
    stored = records(out / ".state" / "callbacks")
    rows = files_of_run(read_files(out), run.flow_run_id)
    assert {r["request_id"] for r in rows} == {r["requestId"] for r in stored}
    texts = transcripts_of(out)
    assert all(r["status"] == "completed" and texts[r["file_id"]]["text"] for r in rows)
    assert all(r["scheme"] == "hmac-sha256" for r in stored)

    again = run_flow(sandbox, manifest, out, completion="callback", callback_listen="127.0.0.1:0")
    assert again.calls == {"token": 0, "presign": 0, "upload": 0, "status": 0}


def test_dropped_callbacks_fall_back_to_polling_and_every_row_completes(
    sandbox: SandboxControl, verifying: ReceiverConfig, manifest: Path, tmp_path: Path
) -> None:
    sandbox.faults(drop_callback_rate=0.5, seed=7)
    out = tmp_path / "out"
    run = run_flow(
        sandbox,
        manifest,
        out,
        completion="callback",
        callback_listen="127.0.0.1:0",
        callback_grace_s=0.5,
    )
    assert run.state.is_completed(), run.state.message
    dropped = sandbox.stats()["callbacks"]["dropped"]
    assert 0 < dropped < FILES
    assert len(records(out / ".state" / "callbacks")) == FILES - dropped
    assert run.summary["completed"] == FILES and run.calls["upload"] == FILES


class TamperingProxy:
    """Sits where the provider posts: rewrites each transcript, then forwards to the receiver."""

    def __init__(self, target: str) -> None:
        forwarded: list[int] = []
        self.forwarded = forwarded

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                for segment in body["transcription"]:
                    segment["text"] = "FORGED"
                answer = httpx.post(target, content=json.dumps(body).encode(), timeout=10)
                forwarded.append(answer.status_code)
                self.send_response(answer.status_code)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                """Quiet."""

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/hook"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def forged_route(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[str, Path]]:
    """A receiver (scheme from the test's parameter) behind a tampering proxy: (proxy URL, store)."""
    store = tmp_path / "store"
    config: ReceiverConfig = request.getfixturevalue(request.param)
    with running_receiver(CallbackStore(store), config) as receiver_url:
        proxy = TamperingProxy(receiver_url)
        yield proxy.url, store
        proxy.close()


@pytest.fixture
def trusting() -> ReceiverConfig:
    """Signatures unchecked: forgeries get recorded, and must still change nothing."""
    return ReceiverConfig("none", 300.0)


@pytest.mark.parametrize(
    ("forged_route", "recorded"), [("trusting", FILES), ("verifying", 0)], indirect=["forged_route"]
)
def test_forged_callbacks_never_change_a_result(
    sandbox: SandboxControl,
    forged_route: tuple[str, Path],
    recorded: int,
    manifest: Path,
    tmp_path: Path,
) -> None:
    proxy_url, store = forged_route
    baseline_out = tmp_path / "baseline"
    baseline = run_flow(sandbox, manifest, baseline_out)
    assert baseline.state.is_completed()
    truth = {f: r["text"] for f, r in transcripts_of(baseline_out).items()}

    out = tmp_path / "out"
    run = run_flow(
        sandbox,
        manifest,
        out,
        completion="callback",
        callback_url=proxy_url,
        callback_store=str(store),
        callback_grace_s=0.5,
    )
    assert run.state.is_completed(), run.state.message
    rows = files_of_run(read_files(out), run.flow_run_id)
    assert {f: r["text"] for f, r in transcripts_of(out).items()} == truth
    assert "FORGED" not in json.dumps(rows, default=str)
    answers = {a["status"] for a in sandbox.callbacks() if a["url"] == proxy_url}
    assert answers == ({200} if recorded else {401})  # every callback went through the forger
    forged = records(store)
    assert len(forged) == recorded  # trusting: recorded as hints; verifying: all refused
    assert {s["text"] for r in forged for s in r["payload"]["transcription"]} <= {"FORGED"}


def test_forget_erases_the_recorded_callbacks_too(
    sandbox: SandboxControl, verifying: ReceiverConfig, manifest: Path, tmp_path: Path
) -> None:
    from invox_batch.forgetting import forget

    out = tmp_path / "out"
    run = run_flow(sandbox, manifest, out, completion="callback", callback_listen="127.0.0.1:0")
    assert run.state.is_completed(), run.state.message
    store = out / ".state" / "callbacks"
    assert len(records(store)) == FILES
    file_id, gone = sorted(transcripts_of(out).items())[0]
    forgot = forget(str(out), [file_id])
    assert forgot.callbacks == 1 and len(records(store)) == FILES - 1
    assert gone["request_id"] not in {r["requestId"] for r in records(store)}
    needle = gone["text"].encode()
    assert not [p for p in out.rglob("*") if p.is_file() and needle in p.read_bytes()]
