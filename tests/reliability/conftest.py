"""Reliability suite: its own sandboxes (never reset mid-suite) and CLI subprocesses that reuse
the session's Prefect API instead of starting one each."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from sandbox.server import SandboxServer
from sandbox.settings import SandboxSettings

from ..helpers import SandboxControl

FULL_ENV = "INVOX_TEST_ALL"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``crash_matrix_full`` iterations run only under ``make test-all`` (INVOX_TEST_ALL=1)."""
    if os.environ.get(FULL_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"long crash matrix: run `make test-all` ({FULL_ENV}=1)")
    for item in items:
        if "crash_matrix_full" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module")
def own_sandbox() -> Iterator[SandboxServer]:
    """An instant sandbox for one module, never reset: its stats span every iteration."""
    with SandboxServer(SandboxSettings(processing="instant")) as server:
        yield server


@pytest.fixture
def own_api(own_sandbox: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> SandboxControl:
    """This process's INVOX_* pointed at the module's sandbox, reset; its control plane."""
    control = SandboxControl(own_sandbox.base_url)
    control.reset()
    monkeypatch.setenv("INVOX_BASE_URL", own_sandbox.base_url)
    monkeypatch.setenv("INVOX_APP_ID", own_sandbox.settings.app_id)
    monkeypatch.setenv("INVOX_API_KEY", own_sandbox.settings.api_key)
    monkeypatch.delenv("INVOX_CACHE_NAMESPACE", raising=False)
    return control


@pytest.fixture(scope="module")
def prefect_api_url(prefect_harness: None) -> str:
    """The session harness's API, for subprocesses (no ephemeral server per run)."""
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    assert url, "the Prefect test harness did not set PREFECT_API_URL"
    return str(url)


def subprocess_env(
    server: SandboxServer, prefect_api_url: str, prefect_home: Path, **extra: str
) -> dict[str, str]:
    """A clean environment for ``python -m invox_batch run`` against ``server``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INVOX_", "PREFECT_"))}
    env.update(
        {
            "INVOX_BASE_URL": server.base_url,
            "INVOX_APP_ID": server.settings.app_id,
            "INVOX_API_KEY": server.settings.api_key,
            "PREFECT_API_URL": prefect_api_url,
            "PREFECT_HOME": str(prefect_home),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            **extra,
        }
    )
    return env
