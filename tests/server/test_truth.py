"""Issue 14 on a real Prefect server: what the UI shows is the files' truth, events reach an
automation, artifacts are keyed, bad parameters fail in one line, and a worker elsewhere pulls."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
import yaml

from invox_batch.cli.stack import POOL, PREFECT_YAML, ROOT, Stack, stop_pids
from sandbox.server import SandboxServer

from ..flow_helpers import ARTIFACT_KINDS, by_kind, invox_events, transcripts_of
from ..helpers import CallbackReceiver, SandboxControl, wait_until
from .client import ServerClient
from .test_reruns import FAST, NIGHTLY, _batch

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
AUTOMATIONS = ROOT / "deployments" / "automations.yaml"
PLACEHOLDER = "00000000-0000-0000-0000-000000000000"


@contextmanager
def against(stack: Stack) -> Iterator[None]:
    """Prefect's client settings pointed at the stack's server for the block."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: stack.api_url}):
        yield


def _task_runs(server: ServerClient, flow_run_id: UUID) -> list[Any]:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    only = FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id]))
    return server._call(lambda c: c.read_task_runs(flow_run_filter=only))


def _logs(server: ServerClient, flow_run_id: UUID) -> list[str]:
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    only = LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run_id]))
    return [log.message for log in server._call(lambda c: c.read_logs(only))]


def _notify_to(stack: Stack, receiver: CallbackReceiver, folder: Path) -> None:
    """A webhook notification block aimed at ``receiver``, and the shipped automation loaded
    with ``prefect automation create --from-file`` (its block id set to that block's)."""
    from prefect.blocks.notifications import CustomWebhookNotificationBlock

    block = CustomWebhookNotificationBlock(
        name="invox-batch-test",
        url=receiver.url,
        json_data={"subject": "{{subject}}", "body": "{{body}}"},
        allow_private_urls=True,
    )
    with against(stack):
        block_id = block.save("invox-batch-test", overwrite=True)
    automation = folder / "automations.yaml"
    automation.write_text(AUTOMATIONS.read_text().replace(PLACEHOLDER, str(block_id)))
    stack.prefect("automation", "create", "--from-file", str(automation))


def test_a_run_with_a_failed_file_shows_it_in_task_runs_events_artifacts_and_the_ui(
    prefect_stack: Stack,
    server: ServerClient,
    sandbox: SandboxControl,
    sandbox_server: SandboxServer,
    tmp_path: Path,
) -> None:
    receiver = CallbackReceiver()
    try:
        _notify_to(prefect_stack, receiver, tmp_path)
        manifest, shas = _batch(tmp_path / "audio", 3, first_seed=1600)
        sandbox.faults(job_error_sha256=[shas[1]])
        out = tmp_path / "out"
        run = server.wait(server.run(NIGHTLY, manifest=str(manifest), out=str(out), **FAST))
        assert run.state is not None and run.state.is_failed(), run.state
        assert run.state.message == "1 of 3 files failed (provider_error=1)"  # as before

        # The failed task runs name exactly the failed file, with its error_type.
        tasks = {t.name: t.state for t in _task_runs(server, run.id)}
        failed = {name: str(s.message) for name, s in tasks.items() if s and s.is_failed()}
        assert failed == {"settle[f1601]": "1 of 1 files failed: f1601 (provider_error)"}
        assert tasks["settle[f1600]"].is_completed() and tasks["settle[f1602]"].is_completed()

        # Events: one per failed file, labelled; the run's end; nothing secret or spoken.
        with against(prefect_stack):
            events = asyncio.run(invox_events(str(run.id)))
        per_file = [e for e in events if e.event == "invox-batch.file.failed"]
        assert [(e.resource.id, e.resource["error_type"]) for e in per_file] == [
            ("invox-batch.file.f1601", "provider_error")
        ]
        assert per_file[0].resource["deployment"] == "nightly"
        texts = [r["text"] for r in transcripts_of(out).values() if r["text"]]
        dumped = json.dumps([e.model_dump(mode="json") for e in events])
        secrets = [sandbox_server.settings.api_key, *texts]
        assert len(texts) == 2 and not [s for s in secrets if s in dumped]

        # Keyed artifacts, named after the deployment.
        found = by_kind(server.artifacts_of(run.id))
        assert {k: a.key for k, a in found.items()} == {
            k: f"transcribe-batch-nightly-{k}" for k in ARTIFACT_KINDS
        }
        assert "| f1601 | provider_error |" in str(found["failed-files"].data)

        # The shipped automation noticed and notified.
        wait_until(lambda: bool(receiver.received), timeout_s=60)
        body = receiver.received[0]["body"]
        assert "1 of 3 files failed" in body["subject"] and str(run.id) in body["body"]
    finally:
        receiver.close()

    if not Path(CHROMIUM).exists():
        pytest.skip("Debian chromium is not installed (/usr/bin/chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.set_default_timeout(60_000)
            page.goto(f"{prefect_stack.ui_url}/runs/flow-run/{run.id}")
            page.get_by_text("Task Runs", exact=True).first.click()
            name = page.get_by_text("settle[f1601]", exact=True).first
            name.wait_for()
            # The smallest block around the failed task run's name that says Failed is its own
            # row: it names no other task run.
            row = name.locator("xpath=ancestor::*[contains(normalize-space(.), 'Failed')][1]")
            text = row.inner_text()
            page.screenshot(path=str(tmp_path / "failed-task-run.png"), full_page=True)
            (tmp_path / "failed-task-run.html").write_text(page.content())
            assert "settle[f1600]" not in text and "settle[f1602]" not in text, text
        finally:
            browser.close()
    assert (tmp_path / "failed-task-run.png").stat().st_size > 10_000


def test_a_deployment_run_with_a_missing_manifest_fails_in_one_line(
    server: ServerClient, tmp_path: Path
) -> None:
    missing = tmp_path / "nowhere" / "manifest.csv"
    run = server.wait(server.run(NIGHTLY, manifest=str(missing), out=str(tmp_path / "o")))
    assert run.state is not None and run.state.is_failed()
    line = f"refused before any audio was read or paid for: manifest not found: {missing}"
    assert run.state.message == line

    # The worker ships its logs in batches, after the state: poll for them with a deadline.
    def logs_with_the_line() -> list[str] | None:
        found = _logs(server, run.id)
        return found if line in found else None

    logs = wait_until(logs_with_the_line, timeout_s=30)
    assert not [m for m in logs if "Traceback" in m]


def _far_python(folder: Path) -> Path:
    """A virtual environment without invox-batch that still sees this one's dependencies (a
    ``.pth`` of our site-packages, not its editable install): a worker's machine, offline."""
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(folder)], check=True)
    site = next((folder / "lib").glob("python3*/site-packages"))
    ours = next(p for p in map(Path, sys.path) if p.name == "site-packages" and p.is_dir())
    (site / "our-dependencies.pth").write_text(f"{ours}\n")
    return folder / "bin" / "python"


def test_a_worker_in_another_folder_pulls_the_deployment_from_a_clone(
    prefect_stack: Stack, server: ServerClient, sandbox: SandboxControl, tmp_path: Path
) -> None:
    bare = tmp_path / "invox-batch.git"
    subprocess.run(["git", "init", "--quiet", "--bare", str(bare)], check=True)
    subprocess.run(["git", "-C", str(ROOT), "push", "--quiet", str(bare), "HEAD:refs/heads/main"])
    subprocess.run(["git", "-C", str(bare), "symbolic-ref", "HEAD", "refs/heads/main"], check=True)
    python = _far_python(tmp_path / "far-venv")
    far = tmp_path / "far"
    far.mkdir()
    check = [str(python), "-c", "import invox_batch"]
    absent = subprocess.run(check, cwd=far, check=False, capture_output=True)
    assert absent.returncode != 0  # the worker's Python does not have the project

    # The shipped pull steps and demo deployment, on a pool of their own.
    config = yaml.safe_load(PREFECT_YAML.read_text())
    [demo] = [d for d in config["deployments"] if d["name"] == "demo"]
    demo.update(name="portable")
    demo["work_pool"]["name"] = f"{POOL}-far"
    config["deployments"] = [demo]
    shipped = tmp_path / "prefect.yaml"
    shipped.write_text(yaml.safe_dump(config, sort_keys=False))
    prefect_stack.set_variable("invox_batch_repository", str(bare))
    prefect_stack.prefect("work-pool", "create", f"{POOL}-far", "--type", "process")
    prefect_stack.prefect("deploy", "--all", "--prefect-file", str(shipped))

    env = {k: v for k, v in prefect_stack.env().items() if not k.startswith("INVOX_")}
    env.update(
        PATH=f"{python.parent}:{env['PATH']}",
        INVOX_BATCH_WORKER_NAME="worker-far",
    )
    args = [str(python), "-m", "prefect", "worker", "start", "--pool", f"{POOL}-far"]
    pid = prefect_stack.spawn("worker-far", [*args, "--name", "worker-far"], env, cwd=far)
    try:
        out = tmp_path / "out"
        run = server.wait(
            server.run("transcribe-batch/portable", out=str(out), **FAST), timeout_s=300
        )
        assert run.state is not None and run.state.is_completed(), (
            run.state,
            _logs(server, run.id),
        )
    finally:
        stop_pids({"worker-far": pid})
    logs = _logs(server, run.id)
    assert any("Running 2 deployment pull step(s)" in m for m in logs)
    summary = json.loads(next((out / "runs").glob("*.json")).read_text())
    assert (summary["rows"], summary["completed"], summary["host"]) == (8, 8, "worker-far")
    assert summary["manifest"] == "data/sample/manifest.csv"  # read from the clone
