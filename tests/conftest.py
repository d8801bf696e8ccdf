"""Shared fixtures: one instant-mode sandbox per session, reset before each test that uses it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Prefect state stays inside the project and quiet offline (set before anything imports prefect).
os.environ.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "60")
# Sandboxes in tests (and the CLI subprocesses they start) finish jobs without the ~2 s default.
os.environ.setdefault("INVOX_SANDBOX_FAULTS__PROCESSING_DELAY_S", "[0, 0]")

import pytest  # noqa: E402
from pydantic import SecretStr  # noqa: E402

from invox import InvoxSettings  # noqa: E402
from sandbox.server import SandboxServer  # noqa: E402
from sandbox.settings import SandboxSettings  # noqa: E402

from .helpers import CallbackReceiver, SandboxControl, clear_env  # noqa: E402
from .postgres import PostgresServer, PostgresUnavailable  # noqa: E402

SAMPLES = ROOT / "data" / "sample"


def client_settings_for(server: SandboxServer, **overrides: object) -> InvoxSettings:
    """Client settings that talk to a given sandbox with its credentials."""
    values: dict[str, object] = {
        "base_url": server.base_url,
        "app_id": server.settings.app_id,
        "api_key": SecretStr(server.settings.api_key),
        "callback_secret": SecretStr(server.settings.callback_secret),
        "callback_api_key": SecretStr(server.settings.callback_api_key),
    }
    return InvoxSettings(**{**values, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def sandbox_server() -> Iterator[SandboxServer]:
    """The instant-mode sandbox every client test talks to over loopback."""
    settings = SandboxSettings(
        processing="instant", callback_backoff_s=0.05, callback_timeout_s=2.0
    )
    with SandboxServer(settings) as server:
        yield server


@pytest.fixture(scope="session")
def asr_sandbox_server() -> Iterator[SandboxServer]:
    """A sandbox doing real pocketsphinx recognition with the clinical model."""
    with SandboxServer(SandboxSettings(processing="asr")) as server:
        yield server


@pytest.fixture
def sandbox(sandbox_server: SandboxServer) -> SandboxControl:
    """The session sandbox, reset to a clean state with no faults."""
    control = SandboxControl(sandbox_server.base_url)
    control.reset()
    return control


@pytest.fixture
def settings(sandbox_server: SandboxServer, sandbox: SandboxControl) -> InvoxSettings:
    """Client settings for the (freshly reset) session sandbox."""
    return client_settings_for(sandbox_server)


@pytest.fixture
def callback_receiver() -> Iterator[CallbackReceiver]:
    """A loopback endpoint collecting the sandbox's callbacks."""
    receiver = CallbackReceiver()
    yield receiver
    receiver.close()


@pytest.fixture(scope="session")
def prefect_harness() -> Iterator[None]:
    """One temporary Prefect API (SQLite) for the whole session: it takes 10-15 s to start."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


@pytest.fixture
def invox_env(sandbox_server: SandboxServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """INVOX_* variables pointing flows at the session sandbox (restored after the test)."""
    clear_env(monkeypatch, "INVOX_API_VERSION", "INVOX_CACHE_NAMESPACE")
    monkeypatch.setenv("INVOX_BASE_URL", sandbox_server.base_url)
    monkeypatch.setenv("INVOX_APP_ID", sandbox_server.settings.app_id)
    monkeypatch.setenv("INVOX_API_KEY", sandbox_server.settings.api_key)


@pytest.fixture(scope="session")
def subprocess_prefect_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One PREFECT_HOME for CLI subprocesses, so its database is migrated only once."""
    return tmp_path_factory.mktemp("prefect-home")


@pytest.fixture
def umask_022() -> Iterator[None]:
    """A known umask, so default-permission expectations are exact."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL for the session (Debian's, run as the postgres user), stopped at the end."""
    try:
        server = PostgresServer()
        server.__enter__()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL for the shared-ledger tests: {exc}")
    try:
        yield server
    finally:
        server.__exit__(None, None, None)
