"""A real local Prefect stack: server, `process` work pool, deployments, workers, sandbox.

Used by ``make serve`` / ``make stop`` (``python -m invox_batch.cli.stack serve|stop``) and by
the tests in ``tests/server/``. Every process is started in its own session and stopped by its
pid (its process group: a worker's flow-run subprocesses go with it), never by name.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from sandbox.server import port_free
from tasks.limits import API_LIMIT

__all__ = [
    "POOL",
    "ROOT",
    "Stack",
    "free_port",
    "local_config",
    "main",
    "stop_pids",
]

ROOT = Path(__file__).resolve().parents[2]
POOL = "invox-batch"
PREFECT_YAML = ROOT / "deployments" / "prefect.yaml"
API_LIMIT_SLOTS = 16  # files in flight across every run; `prefect gcl update invox-api --limit N`
SAMPLE_MANIFEST = ROOT / "data" / "sample" / "manifest.csv"
BIN = Path(sys.executable).parent


def local_config(prefect_yaml: Path) -> dict[str, Any]:
    """The shipped deployments with this checkout as every run's working folder: the shared
    checkout form of the pull step, for a stack whose workers run on this machine."""
    config: dict[str, Any] = yaml.safe_load(prefect_yaml.read_text())
    config["pull"] = [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    return config


def free_port() -> int:
    """A loopback port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Stack:
    """The processes of one local stack, their logs and the environment they share."""

    home: Path
    port: int
    logs: Path
    pids: dict[str, int] = field(default_factory=dict)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def ui_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self, **extra: str) -> dict[str, str]:
        """Prefect pointed at this server and home; nothing inherited that points elsewhere."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        env.update(
            PREFECT_HOME=str(self.home),
            PREFECT_API_URL=self.api_url,
            PREFECT_SERVER_ANALYTICS_ENABLED="false",
            PREFECT_WORKER_QUERY_SECONDS="1",
            PREFECT_WORKER_PREFETCH_SECONDS="5",
        )
        env.update(extra)
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, str], cwd: Path = ROOT) -> int:
        """Start one long-running process in its own session, logging to ``<logs>/<name>.log``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / f"{name}.log").open("ab") as log:
            proc = subprocess.Popen(
                args,
                cwd=cwd,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs[name] = proc
        self.pids[name] = proc.pid
        return proc.pid

    def start_server(self, timeout_s: float = 120.0) -> float:
        """``prefect server start`` on loopback; returns the seconds until /api/health answered."""
        started = time.monotonic()
        args = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1"]
        self.spawn("server", [*args, "--port", str(self.port)], self.env())
        deadline = started + timeout_s
        while time.monotonic() < deadline:
            if self.procs["server"].poll() is not None:
                raise RuntimeError(f"prefect server exited; see {self.logs / 'server.log'}")
            try:
                if httpx.get(f"{self.api_url}/health", timeout=2.0).status_code == 200:
                    return time.monotonic() - started
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"prefect server not healthy after {timeout_s}s; see the server log")

    def wait_for_sandbox(self, port: int, timeout_s: float = 60.0) -> None:
        """The sandbox we started answers on its port (not someone else's, not a dead pid)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.procs["sandbox"].poll() is not None:
                raise RuntimeError(f"the sandbox exited; see {self.logs / 'sandbox.log'}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/_sandbox/stats", timeout=2.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.25)
        raise RuntimeError(f"the sandbox did not answer on port {port}; see the sandbox log")

    def prefect(self, *args: str) -> str:
        """One ``prefect`` CLI command against this server; its output, or an error with it."""
        done = subprocess.run(
            [str(BIN / "prefect"), "--no-prompt", *args],
            cwd=ROOT,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise RuntimeError(f"prefect {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}")
        return done.stdout

    def deploy(self, invox_env: dict[str, str]) -> None:
        """The ``process`` pool (if missing), the Variables the deployments read, and every
        deployment of deployments/prefect.yaml, run from this checkout (see ``local_config``)."""
        try:
            self.prefect("work-pool", "inspect", POOL)
        except RuntimeError:
            self.prefect("work-pool", "create", POOL, "--type", "process")
        self.set_variable("invox_base_url", invox_env["INVOX_BASE_URL"])
        self.set_variable("invox_app_id", invox_env["INVOX_APP_ID"])
        self.set_variable("invox_batch_manifest", str(SAMPLE_MANIFEST), overwrite=False)
        self.set_variable("invox_batch_out", str(ROOT / "out" / "nightly"), overwrite=False)
        local = self.home / "prefect.local.yaml"
        local.write_text(yaml.safe_dump(local_config(PREFECT_YAML), sort_keys=False))
        self.prefect("deploy", "--all", "--prefect-file", str(local))

    def set_variable(self, name: str, value: str, overwrite: bool = True) -> None:
        """A Prefect Variable on this server (kept as it is when it exists and not ``overwrite``)."""
        made = httpx.post(f"{self.api_url}/variables/", json={"name": name, "value": value})
        if made.status_code == 409 and overwrite:
            httpx.patch(f"{self.api_url}/variables/name/{name}", json={"value": value})
        elif made.status_code != 409:
            made.raise_for_status()

    def api_limit(self, slots: int = API_LIMIT_SLOTS) -> None:
        """The ``invox-api`` global concurrency limit (if missing): files in flight across runs."""
        try:
            self.prefect("global-concurrency-limit", "inspect", API_LIMIT)
        except RuntimeError:
            self.prefect("global-concurrency-limit", "create", API_LIMIT, "--limit", str(slots))

    def start_worker(
        self,
        name: str,
        invox_env: dict[str, str],
        limit: int | None = None,
        queues: tuple[str, ...] = (),
    ) -> int:
        """A ``process`` worker named ``name`` (its runs record it as their host); every queue of
        the pool unless ``queues`` names some.

        No ``--limit`` by default: a 3.8.8 worker with one crashes ("this borrower is already
        holding one of this CapacityLimiter's tokens") when a run it has not reaped yet is retried.
        """
        args = [str(BIN / "prefect"), "worker", "start", "--pool", POOL, "--name", name]
        args += [arg for queue in queues for arg in ("--work-queue", queue)]
        args += ["--limit", str(limit)] if limit else []
        env = {k: v for k, v in self.env().items() if not k.startswith("INVOX_")}
        env.update(INVOX_BATCH_WORKER_NAME=name, **invox_env)
        return self.spawn(name, args, env)

    def save_secret(self, value: str, name: str = "invox-api-key") -> None:
        """The API key as a Prefect Secret block on this server (value passed by environment)."""
        code = (
            "import os; from prefect.blocks.system import Secret; "
            f"Secret(value=os.environ['INVOX_SECRET_VALUE']).save({name!r}, overwrite=True)"
        )
        done = subprocess.run(
            [sys.executable, "-c", code],
            cwd=ROOT,
            env=self.env(INVOX_SECRET_VALUE=value),
            capture_output=True,
            text=True,
            timeout=120,
        )
        if done.returncode:
            raise RuntimeError(f"could not save the Secret block {name!r}:\n{done.stderr[-2000:]}")

    def save_pids(self) -> Path:
        """``<logs>/pids.json``: what ``stop`` will stop."""
        path = self.logs / "pids.json"
        path.write_text(json.dumps(self.pids, indent=2))
        return path

    def stop(self) -> None:
        """Stop everything this stack started, workers first, server last."""
        stop_pids(self.pids)


def stop_pids(pids: dict[str, int], timeout_s: float = 15.0) -> list[str]:
    """SIGTERM each process group we started (server last), SIGKILL what outlives the deadline."""
    order = sorted(pids, key=lambda name: name == "server")
    stopped = []
    for name in order:
        if _signal_group(pids[name], signal.SIGTERM):
            stopped.append(name)
    deadline = time.monotonic() + timeout_s
    for name in order:
        while _alive(pids[name]) and time.monotonic() < deadline:
            time.sleep(0.1)
        if _alive(pids[name]):
            _signal_group(pids[name], signal.SIGKILL)
    return stopped


def _signal_group(pid: int, sig: signal.Signals) -> bool:
    """Signal the session leader's group; False if it is already gone."""
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        return False
    return True


def _alive(pid: int) -> bool:
    """Whether our child (or a process with that pid) still runs; reaps it if it is ours."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _serve() -> int:
    """``make serve``: server, pool, deployments, one worker and the sandbox, then instructions."""
    home = Path(os.environ.get("PREFECT_HOME", ROOT / ".prefect"))
    logs = home / "serve"
    if (logs / "pids.json").exists():
        print(f"already serving (see {logs / 'pids.json'}); run `make stop` first")
        return 1
    port = int(os.environ.get("INVOX_BATCH_SERVE_PORT", "4200"))
    sandbox_port = int(os.environ.get("INVOX_BATCH_SANDBOX_PORT", "8765"))
    for number, variable in (
        (port, "INVOX_BATCH_SERVE_PORT"),
        (sandbox_port, "INVOX_BATCH_SANDBOX_PORT"),
    ):
        if not port_free("127.0.0.1", number):
            print(f"error: port {number} is in use (someone else's server?); set {variable}")
            return 2
    stack = Stack(home=home, port=port, logs=logs)
    try:
        sandbox = [str(BIN / "invox-batch"), "sandbox", "--port", str(sandbox_port)]
        stack.spawn("sandbox", sandbox, stack.env())
        print(f"starting the Prefect server (logs in {logs}) ...", flush=True)
        seconds = stack.start_server()
        stack.wait_for_sandbox(sandbox_port)
        stack.save_pids()
        stack.deploy(_sandbox_env(sandbox_port))
        stack.api_limit()
        stack.start_worker("worker-1", _sandbox_env(sandbox_port))
        stack.save_pids()
    except Exception as exc:
        stack.stop()
        (logs / "pids.json").unlink(missing_ok=True)
        print(f"error: {exc}")
        return 1
    print(f"Prefect server up in {seconds:.1f} s; worker `worker-1` on pool `{POOL}`")
    print(f"Global concurrency limit `{API_LIMIT}`: {API_LIMIT_SLOTS} files in flight across runs")
    print(f"UI:      {stack.ui_url}")
    print(f"Sandbox: http://127.0.0.1:{sandbox_port} (the worker's INVOX_BASE_URL)")
    print("Trigger a run:")
    print(
        f"  PREFECT_API_URL={stack.api_url} .venv/bin/prefect deployment run 'transcribe-batch/nightly'"
    )
    print("Stop everything: make stop")
    return 0


def _sandbox_env(port: int) -> dict[str, str]:
    """INVOX_* for a worker talking to the local sandbox with its default credential."""
    from sandbox.settings import SandboxSettings

    defaults = SandboxSettings()
    return {
        "INVOX_BASE_URL": f"http://127.0.0.1:{port}",
        "INVOX_APP_ID": defaults.app_id,
        "INVOX_API_KEY": defaults.api_key,
    }


def _stop() -> int:
    """``make stop``: stop exactly the pids ``make serve`` recorded."""
    home = Path(os.environ.get("PREFECT_HOME", ROOT / ".prefect"))
    path = home / "serve" / "pids.json"
    if not path.exists():
        print("nothing to stop (no .prefect/serve/pids.json)")
        return 0
    pids: dict[str, int] = json.loads(path.read_text())
    stopped = stop_pids(pids)
    path.unlink()
    print(f"stopped: {', '.join(stopped) or 'nothing was still running'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``serve`` or ``stop``."""
    command = (argv if argv is not None else sys.argv[1:]) or ["serve"]
    if command[0] == "serve":
        return _serve()
    if command[0] == "stop":
        return _stop()
    print("usage: python -m invox_batch.cli.stack serve|stop", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
