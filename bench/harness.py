"""Shared benchmark plumbing: fast WAV inputs, fresh-interpreter workers, sandbox counters.

Every contender runs in its own subprocess (``python -m bench.workers ...``) so its wall time
and peak RSS are its own; the sandbox runs in the driver process, in a thread.
"""

from __future__ import annotations

import csv
import json
import os
import resource
import struct
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results"
ENDPOINTS = ("token", "presign", "upload", "status")
RATE = 16000


def peak_rss_mb() -> float:
    """This process's peak resident set size (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def proc_status(field: str) -> int:
    """A numeric field of /proc/self/status (``VmRSS`` in KiB, ``Threads``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def current_rss_mb() -> float:
    """This process's resident set size now."""
    return proc_status("VmRSS") / 1024


def wav_header(data_bytes: int, rate: int = RATE) -> bytes:
    """A 44-byte RIFF header for mono 16-bit PCM carrying ``data_bytes`` of samples."""
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        1,
        rate,
        rate * 2,
        2,
        16,
        b"data",
        data_bytes,
    )


def write_wav(path: Path, samples: np.ndarray[Any, np.dtype[np.int16]]) -> None:
    """Header plus raw little-endian samples: far faster than an encoder for 10,000 files."""
    data = samples.astype("<i2").tobytes()
    path.write_bytes(wav_header(len(data)) + data)


def write_manifest(folder: Path, names: Iterable[str]) -> Path:
    """A CSV manifest naming each WAV (file_id = its stem)."""
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["audio_path", "file_id"])
        writer.writerows([name, name.removesuffix(".wav")] for name in names)
    return manifest


def make_wavs(folder: Path, durations_s: Iterable[float], seed: int, prefix: str) -> Path:
    """Distinct noise WAVs of the given durations in ``folder``, and their manifest."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = []
    for n, seconds in enumerate(durations_s):
        name = f"{prefix}{n:05d}.wav"
        write_wav(folder / name, rng.integers(-3000, 3000, int(RATE * seconds), dtype=np.int16))
        names.append(name)
    return write_manifest(folder, names)


def worker_env(base_url: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment of a worker: pointed at the sandbox, Prefect state in the project."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOX_")}
    env |= {
        "INVOX_BASE_URL": base_url,
        "INVOX_APP_ID": "sandbox-app",
        "INVOX_API_KEY": "sandbox-key",
        "PREFECT_HOME": os.environ.get("PREFECT_HOME", str(ROOT / ".prefect")),
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "60",
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    return env | dict(extra or {})


def run_worker(args: list[str], env: Mapping[str, str]) -> dict[str, Any]:
    """``python -m bench.workers <args>`` in a fresh interpreter; its last stdout line as JSON."""
    command = [sys.executable, "-m", "bench.workers", *args]
    done = subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"worker {args[0]} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


class SandboxProbe:
    """Reads the sandbox's control plane: request counters, responses, timings."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = httpx.Client(base_url=base_url, timeout=30)

    def stats(self) -> dict[str, Any]:
        """The whole ``/_sandbox/stats`` document."""
        return dict(self.http.get("/_sandbox/stats").json())

    def requests(self) -> dict[str, int]:
        """API requests per endpoint so far."""
        return dict(self.stats()["requests"])

    def reset(self) -> None:
        """Forget jobs, stats and uploads."""
        self.http.post("/_sandbox/reset").raise_for_status()

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self.http.close()


def calls_since(before: Mapping[str, int], after: Mapping[str, int]) -> dict[str, int]:
    """API requests per endpoint between two counter snapshots."""
    return {e: after.get(e, 0) - before.get(e, 0) for e in ENDPOINTS}


def print_run(label: str, files: int, wall_s: float, calls: Mapping[str, int]) -> None:
    """One line per contender run: wall time and API calls per file."""
    per_file = sum(calls.values()) / files if files else 0.0
    print(f"  {label:32s} wall {wall_s:8.2f} s   API calls/file {per_file:6.2f}   {dict(calls)}")
