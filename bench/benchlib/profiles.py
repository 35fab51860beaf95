"""Sampling profiles of the servers during a window: py-spy (Python stacks) and perf
(CPU samples by process, library and symbol). Optional tools, not project dependencies."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any


def py_spy_bin(given: str | None = None) -> str:
    """py-spy: ``given``, ``$PY_SPY`` or on PATH (``pip install --target DIR py-spy``
    puts it in ``DIR/bin``; it is not a dependency of the project)."""
    exe = given or os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not exe or not os.path.exists(exe):
        raise SystemExit("py-spy not found: pass --py-spy PATH or set PY_SPY")
    return exe


def start_profile(exe: str, pid: int, seconds: float, out: Path, rate: int = 100) -> subprocess.Popen[bytes]:
    """Sample ``pid``'s Python stacks for ``seconds`` into ``out`` (collapsed stacks,
    one ``frame;frame;... count`` line per stack; idle threads are not sampled).
    py-spy itself runs on core 1 with the generator, so run profiles separately from
    the figures you keep."""
    cmd = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    cmd += [exe, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds))), "--rate", str(rate)]
    cmd += ["--format", "raw", "--output", str(out), "--nonblocking"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _frame_name(frame: str) -> str:
    # "send (chatd/ops/messaging.py:65)" -> "send (chatd/ops/messaging.py)"
    name, _, where = frame.partition(" (")
    path = where.rstrip(")").rsplit(":", 1)[0]
    for cut in ("site-packages/", "/lib/python3."):
        if cut in path:
            path = path.split(cut, 1)[1]
            if cut.startswith("/lib"):
                path = "stdlib/" + path.split("/", 1)[-1]
    if "/chatd/" in path:
        path = "chatd/" + path.rsplit("/chatd/", 1)[1]
    return f"{name} ({path})" if path else name


def profile_summary(path: Path, top: int = 15) -> dict[str, Any]:
    """Self and inclusive sample shares per function of a py-spy raw profile."""
    self_: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return {"samples": 0, "self": [], "inclusive": []}
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_frame_name(f) for f in stack.split(";") if f and not f.startswith("process ")]
        frames = [f for f in frames if not f.startswith("thread (")]
        if not frames:
            continue
        self_[frames[-1]] = self_.get(frames[-1], 0) + count
        for f in set(frames):
            incl[f] = incl.get(f, 0) + count

    def share(d: dict[str, int]) -> list[tuple[str, float]]:
        return [(k, round(100 * v / max(total, 1), 1)) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]

    return {"samples": total, "self": share(self_), "inclusive": share(incl)}


def start_perf(pids: list[int], seconds: float, out: Path) -> subprocess.Popen[bytes]:
    """``perf record`` (cpu-clock, call graphs) of ``pids`` for ``seconds``: CPU time by
    native symbol and by kernel function (Python 3.11 frames show up as the
    interpreter's own). perf runs on core 1 with the generator."""
    cmd = ["taskset", "-c", "1"] if shutil.which("taskset") else []
    cmd += ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-g", "-p", ",".join(map(str, pids))]
    cmd += ["-o", str(out), "--", "sleep", str(seconds)]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def perf_summary(data: Path, top: int = 40) -> str:
    """Shares of CPU samples by process and library, then by symbol."""
    out = []
    for sort, limit in (("comm,dso", "0.5"), ("comm,sym", "0.4")):
        argv = ["perf", "report", "-i", str(data), "--stdio", "--no-children", "-g", "none", "--sort", sort]
        r = subprocess.run(
            [*argv, "--percent-limit", limit],
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [ln for ln in r.stdout.splitlines() if ln.strip() and not ln.startswith("#")]
        out.append(f"by {sort}:\n" + "\n".join(lines[: top if sort == "comm,sym" else 30]))
    return "\n\n".join(out)
