"""Status calls per file and wall time, poll mode vs callback mode, on a small generated batch.

``python -m bench.callback_vs_poll --files 20``: each mode runs ``invox-batch run`` in its own
process against its own embedded instant-mode sandbox with the sandbox's default processing
delay (1.5 to 2.5 s), so polling has something to wait for.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf

ROOT = Path(__file__).resolve().parent.parent
MODES = {
    "poll": [],
    "callback": ["--completion", "callback", "--callback-listen", "127.0.0.1:0"],
}


def make_manifest(folder: Path, files: int, seconds: float) -> Path:
    """``files`` distinct WAVs of ``seconds`` each and a CSV manifest naming them."""
    lines = ["audio_path,file_id"]
    for n in range(files):
        samples = np.random.default_rng(n).standard_normal(int(16000 * seconds)) * 0.1
        sf.write(folder / f"a{n:03d}.wav", samples.astype(np.float32), 16000, subtype="PCM_16")
        lines.append(f"a{n:03d}.wav,a{n:03d}")
    manifest = folder / "manifest.csv"
    manifest.write_text("\n".join(lines) + "\n")
    return manifest


def run_mode(manifest: Path, out: Path, extra: list[str]) -> dict[str, Any]:
    """One CLI run; its run summary."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("INVOX_")}
    env |= {"INVOX_SANDBOX_PROCESSING": "instant", "PREFECT_LOGGING_LEVEL": "WARNING"}
    env.setdefault("PREFECT_HOME", str(ROOT / ".prefect"))
    command = [sys.executable, "-m", "invox_batch", "run", str(manifest), "--out", str(out)]
    subprocess.run([*command, *extra], check=True, env=env, cwd=ROOT, capture_output=True)
    summary = next((out / "runs").glob("*.json"))
    return dict(json.loads(summary.read_text()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--files", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        manifest = make_manifest(Path(tmp), args.files, args.seconds)
        for mode, extra in MODES.items():
            summary = run_mode(manifest, Path(tmp) / mode, extra)
            calls = summary["api_calls"]
            print(
                f"{mode:8s} completed={summary['completed']}/{summary['rows']} "
                f"status calls per file={calls['status'] / args.files:.2f} "
                f"uploads={calls['upload']} wall_s={summary['wall_s']}"
            )


if __name__ == "__main__":
    main()
