"""What a run leaves behind: a markdown table, a section of results/<UTC date>.md and one
JSON line (with machine, git revision and command) in results/results.jsonl."""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

from .paths import RESULTS, git_rev
from .servers import chatd_label


def machine() -> dict[str, Any]:
    cpu = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import websockets

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "python": platform.python_version(),
        "websockets": websockets.__version__,
    }


def save_result(res: dict[str, Any], title: str, table: str = "", chatd: bool = False) -> Path:
    """Append a JSON line to results/results.jsonl and a section to results/<date>.md."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    now = _dt.datetime.now(_dt.UTC)
    rec = {
        "time": now.isoformat(timespec="seconds"),
        "git": git_rev(),
        "cmd": shlex.join([Path(sys.executable).name, *sys.argv]),
        "machine": machine(),
        **({"chatd": chatd_label()} if chatd else {}),
        **res,
    }
    with open(RESULTS / "results.jsonl", "a") as f:
        f.write(json.dumps(rec) + "\n")
    md = RESULTS / f"{now.date().isoformat()}.md"
    with open(md, "a") as f:
        f.write(f"\n## {title} — {rec['time']} (git {rec['git']})\n\n")
        f.write(f"`{rec['cmd']}` on {rec['machine']['cpu']}, {rec['machine']['cores']} cores")
        f.write(f"; chatd: {rec['chatd']}\n\n" if chatd else "\n\n")
        if table:
            f.write(table.rstrip() + "\n")
        else:
            f.write("```json\n" + json.dumps(res, indent=1) + "\n```\n")
    print(f"  saved to {RESULTS / 'results.jsonl'} and {md}")
    return md


def md_table(rows: list[dict[str, Any]], cols: list[tuple[str, str]]) -> str:
    head = "| " + " | ".join(h for h, _ in cols) + " |"
    sep = "|" + "|".join("---" for _ in cols) + "|"
    body = ["| " + " | ".join(fmt(r.get(k)) for _, k in cols) + " |" for r in rows]
    return "\n".join([head, sep, *body])


def fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        if v != v:  # nan
            return "—"
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)
