"""The Prefect UI itself, in headless Debian chromium: the deployment and a run's artifacts."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from invox_batch.cli.stack import Stack

from ..flow_helpers import audio_set, write_csv_manifest
from ..helpers import SandboxControl
from .client import ServerClient
from .test_reruns import FAST, NIGHTLY

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

pytestmark = pytest.mark.skipif(
    not Path(CHROMIUM).exists(), reason="Debian chromium is not installed (/usr/bin/chromium)"
)


def test_the_ui_lists_the_deployment_and_shows_a_runs_artifacts(
    prefect_stack: Stack, server: ServerClient, sandbox: SandboxControl, tmp_path: Path
) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    manifest = write_csv_manifest(tmp_path / "m.csv", audio_set(tmp_path, 1, first_seed=700))
    run = server.wait(server.run(NIGHTLY, manifest=str(manifest), out=str(tmp_path / "o"), **FAST))
    assert run.state is not None and run.state.is_completed(), run.state

    deployment_id = server.deployment_id(NIGHTLY)  # before playwright runs its own event loop
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page()
            page.set_default_timeout(60_000)
            page.goto(f"{prefect_stack.ui_url}/deployments")
            page.get_by_text("nightly", exact=True).first.wait_for()
            page.get_by_text("shard", exact=True).first.wait_for()

            page.goto(f"{prefect_stack.ui_url}/runs/flow-run/{run.id}")
            page.get_by_text(run.name).first.wait_for()
            page.get_by_role("button", name="Retry").first.wait_for()
            page.get_by_text("Artifacts", exact=True).first.click()
            page.get_by_text("Run summary").first.wait_for()
            page.get_by_text("Per-file outcomes").first.wait_for()

            # The custom-run form shows the parameter groups as sections of their own.
            page.goto(f"{prefect_stack.ui_url}/deployments/deployment/{deployment_id}/run")
            page.get_by_text("Max Concurrency").first.wait_for()
            for group in ("spend", "polling", "retrying", "callbacks", "captions", "scale"):
                page.get_by_text(f"{group} (Optional)", exact=True).first.wait_for()
            page.screenshot(path=str(tmp_path / "custom-run.png"), full_page=True)
        finally:
            browser.close()
