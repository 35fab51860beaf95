"""Where the benchmarks live: the bench folder, the repository and its revision, the results, the venv."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent
ROOT = BENCH.parent
# BENCH_RESULTS=DIR writes a run's .md and .jsonl elsewhere (a smoke run that must not land in the record)
RESULTS = Path(os.environ["BENCH_RESULTS"]) if os.environ.get("BENCH_RESULTS") else BENCH / "results"
VENV_BIN = Path(sys.executable).parent


def git_rev() -> str:
    try:
        return subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"
