"""Old against new chatd: bench scripts run for two git revisions, interleaved, in one sitting.

Each round runs every given script twice, once per revision, each time as a subprocess
with BENCH_CHATD_REV=<commit> (a private copy of that revision's chatd/ and
chatd_protocol/; the bench code is this working tree's for both). Within a round the
scripts run in the order given, each as old then new in odd rounds and new then old in
even ones, so a slow drift of the machine over the sitting (other load, heat, caches)
falls on both sides alike. The revisions are resolved to commits once, at the start.

After the last round it reads the JSON lines those runs appended to
results/results.jsonl and prints, per script and headline figure, every run's value for
old and new, each side's median and the new/old ratio of the medians, with a verdict
against --tolerance:

- fanout: server CPU µs per delivery, per chatd setup and rate (lower is better);
- ingest: acks/s, per sync mode and points setting (higher is better);
- idle: KiB per idle connection (lower is better).

The floor's rows (fanout, idle) get no verdict: no chatd revision changes them, so their
ratio shows how far two measurements of the same thing drift apart in this sitting.
The same revision on both sides (--old HEAD --new HEAD) measures that noise for chatd.

The summary is appended to results/<UTC date>.md and one JSON line to results.jsonl,
like every script's. Exit status: 0 if every figure passes, 1 if one fails or a run
gave no result.

    .venv/bin/python bench/interleave.py --old HEAD~1 --new HEAD --rounds 3 fanout ingest idle
    .venv/bin/python bench/interleave.py --old main --new HEAD --args 'ingest=--sync full --points both' ingest
    .venv/bin/python bench/interleave.py --old HEAD~1 --new HEAD --rounds 1 --quick fanout ingest idle
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import benchlib

JSONL = benchlib.RESULTS / "results.jsonl"
CONTROL = "floor"  # the server no revision changes
BUSY = 15.0  # % of a core used by others in a window above which a run is named (the scripts wait for less)


@dataclass(frozen=True)
class Headline:
    """The figure of a script that decides: ``field`` of each of its rows, named by ``label``."""

    what: str
    field: str
    higher_is_better: bool
    label: Callable[[dict[str, Any]], str]


HEADLINES = {
    "fanout": Headline(
        "server µs/delivery", "server_us_per_delivery", False, lambda r: f"{r['server']} {r['target_dps']:,}/s"
    ),
    "ingest": Headline("acks/s", "acks_per_s", True, lambda r: str(r["mode"])),
    "idle": Headline("KiB/conn", "kib_per_conn", False, lambda r: str(r["server"])),
}


@dataclass
class Run:
    round: int
    script: str
    side: str  # "old" | "new"
    commit: str
    argv: list[str]
    rc: int | None = None  # None: stopped after --run-timeout
    seconds: float = 0.0
    record: dict[str, Any] | None = None  # the line it appended to results.jsonl
    problem: str = ""


def git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(benchlib.ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def resolve(rev: str) -> tuple[str, str]:
    """(commit, subject) of ``rev``; SystemExit if it is no commit or has no chatd."""
    try:
        sha = benchlib.chatd_commit(rev)
        git("cat-file", "-e", f"{sha}:chatd/cli.py")
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"{rev}: not a commit of this repository with chatd/cli.py ({e.stderr.strip()})") from e
    subject = git("log", "-1", "--format=%s", sha)
    return sha, subject if len(subject) <= 80 else subject[:77] + "..."


def appended(offset: int) -> list[dict[str, Any]]:
    """The JSON lines added to results.jsonl after byte ``offset``."""
    if not JSONL.exists():
        return []
    with open(JSONL, "rb") as f:
        f.seek(offset)
        data = f.read().decode(errors="replace")
    out = []
    for line in data.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def values(run: Run) -> dict[str, tuple[float, bool]]:
    """label -> (headline value, is a control row) of one run."""
    h = HEADLINES[run.script]
    rows = run.record.get("rows", []) if run.record else []
    return {h.label(r): (float(r[h.field]), r.get("server") == CONTROL) for r in rows if r.get(h.field) is not None}


def others(run: Run) -> float:
    """The highest share of a core other processes used in any window of the run (%)."""
    rows = run.record.get("rows", []) if run.record else []
    return max((float(r.get("other_pct") or 0) for r in rows), default=0.0)


def execute(run: Run, timeout: float) -> None:
    """Run one script for one revision; its servers are its own (it stops them), and if it
    outlives ``timeout`` it is stopped with them."""
    offset = JSONL.stat().st_size if JSONL.exists() else 0
    t0 = time.monotonic()
    env = {"BENCH_CHATD_REV": run.commit}
    proc = benchlib.start_server(run.argv, core=None, name=f"{run.script}-{run.side}", env=env, log=False)
    try:
        run.rc = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        run.problem = f"still running after {timeout:.0f} s: stopped"
    finally:
        benchlib.stop_server(proc, timeout=15)
    run.seconds = time.monotonic() - t0
    mine = [r for r in appended(offset) if r.get("bench") == run.script]
    want = f"git {run.commit[:12]}"
    if mine and mine[-1].get("chatd") != want:
        run.problem = f"measured chatd {mine[-1].get('chatd')!r}, not {want!r}: ignored"
    elif mine:
        run.record = mine[-1]
    elif not run.problem:
        run.problem = f"exit status {run.rc}, no result line"
    got = ", ".join(f"{k} {benchlib.fmt(v)}" for k, (v, _) in values(run).items())
    print(f"  -> {run.script} {run.side}: {got or run.problem} ({run.seconds:.0f} s)", flush=True)


def verdict(h: Headline, ratio: float, tolerance: float) -> str:
    ok = ratio >= 1 - tolerance if h.higher_is_better else ratio <= 1 + tolerance
    return "pass" if ok else "FAIL"


def summarize(runs: list[Run], scripts: list[str], tolerance: float) -> list[dict[str, Any]]:
    """One entry per script and row label: every run's value per side, medians, ratio, verdict."""
    figures: dict[tuple[str, str], dict[str, Any]] = {}
    for script in scripts:  # in the order given, each script's rows in the order they were measured
        h = HEADLINES[script]
        for run in sorted((r for r in runs if r.script == script), key=lambda r: r.round):
            for label, (v, control) in values(run).items():
                f = figures.setdefault(
                    (script, label),
                    {
                        "script": script,
                        "row": label,
                        "figure": h.what,
                        "field": h.field,
                        "higher_is_better": h.higher_is_better,
                        "control": control,
                        "old": [],
                        "new": [],
                    },
                )
                f[run.side].append(v)
    out = []
    for (script, _), f in figures.items():
        old_m = statistics.median(f["old"]) if f["old"] else None
        new_m = statistics.median(f["new"]) if f["new"] else None
        ratio = new_m / old_m if old_m and new_m is not None else None
        if ratio is None:
            said = "no data"
        elif f["control"]:
            said = "control"
        else:
            said = verdict(HEADLINES[script], ratio, tolerance)
        out.append({**f, "old_median": old_m, "new_median": new_m, "ratio": ratio, "verdict": said})
    return out


def report(
    figures: list[dict[str, Any]], runs: list[Run], sides: dict[str, tuple[str, str, str]], args: argparse.Namespace
) -> str:
    head = [
        f"old = {sides['old'][0]} = git {sides['old'][1][:12]} ({sides['old'][2]})",
        f"new = {sides['new'][0]} = git {sides['new'][1][:12]} ({sides['new'][2]})",
        f"{args.rounds} round(s), each script old then new in odd rounds, new then old in even ones; "
        f"tolerance {100 * args.tolerance:g}%; "
        + "; ".join(f"{s} {shlex.join(args.script_args[s]) or '(defaults)'}" for s in args.scripts),
    ]
    rows = [
        {
            "script": f["script"],
            "row": f["row"],
            "figure": f["figure"] + (" ↑" if f["higher_is_better"] else " ↓"),
            "old_runs": ", ".join(benchlib.fmt(v) for v in f["old"]) or None,
            "old_median": f["old_median"],
            "new_runs": ", ".join(benchlib.fmt(v) for v in f["new"]) or None,
            "new_median": f["new_median"],
            "ratio": None if f["ratio"] is None else f"{f['ratio']:.3f}",
            "verdict": f["verdict"],
        }
        for f in figures
    ]
    cols = [
        ("script", "script"),
        ("row", "row"),
        ("figure (↓ lower / ↑ higher is better)", "figure"),
        ("old runs", "old_runs"),
        ("old median", "old_median"),
        ("new runs", "new_runs"),
        ("new median", "new_median"),
        ("new/old", "ratio"),
        ("verdict", "verdict"),
    ]
    judged = [f for f in figures if f["verdict"] in ("pass", "FAIL")]
    fails = [f for f in judged if f["verdict"] == "FAIL"]
    lines = [
        f"- {len(judged)} figure(s) judged: {len(judged) - len(fails)} pass, {len(fails)} fail"
        + (" (" + "; ".join(f"{f['script']} {f['row']} {f['ratio']:.3f}" for f in fails) + ")" if fails else "")
    ]
    controls = [f["ratio"] for f in figures if f["verdict"] == "control"]
    if controls:
        lines.append(
            f"- floor (control, the same server on both sides): new/old {min(controls):.3f} to {max(controls):.3f}"
        )
    for r in runs:
        if r.record is None:
            lines.append(f"- round {r.round} {r.script} {r.side}: {r.problem}")
        elif others(r) > BUSY:
            lines.append(
                f"- round {r.round} {r.script} {r.side}: others used up to {others(r):.0f}% of a core: distrust"
            )
    if args.rounds < 3:
        lines.append(f"- {args.rounds} round(s) only: a median of fewer than 3 runs is no more than those runs")
    return "\n".join(head) + "\n\n" + benchlib.md_table(rows, cols) + "\n\n" + "\n".join(lines) + "\n"


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--old", required=True, help="git revision of the old chatd")
    ap.add_argument("--new", required=True, help="git revision of the new chatd")
    ap.add_argument("--rounds", type=int, default=3, help="rounds (3)")
    ap.add_argument("--tolerance", type=float, default=0.05, help="how much worse new may be, as a fraction (0.05)")
    ap.add_argument(
        "--args",
        action="append",
        default=[],
        metavar="SCRIPT=ARGS",
        help="arguments for one script instead of its defaults, e.g. 'ingest=--sync full --points both' (repeatable)",
    )
    ap.add_argument("--quick", action="store_true", help="pass --quick to every script (a functional check)")
    ap.add_argument(
        "--run-timeout", type=float, default=600, help="s one script run may take before it is stopped (600)"
    )
    ap.add_argument("scripts", nargs="+", metavar="SCRIPT", help=f"bench scripts: {', '.join(HEADLINES)}")
    args = ap.parse_args()
    args.scripts = [s.removeprefix("bench/").removesuffix(".py") for s in args.scripts]
    unknown = [s for s in args.scripts if s not in HEADLINES]
    if unknown:
        ap.error(f"no headline figure for {', '.join(unknown)} (known: {', '.join(HEADLINES)})")
    if len(set(args.scripts)) < len(args.scripts):
        ap.error("a script is given twice")
    if args.rounds < 1:
        ap.error("--rounds must be at least 1")
    args.script_args = {s: [] for s in args.scripts}
    for a in args.args:
        script, sep, rest = a.partition("=")
        if not sep or script not in args.script_args:
            ap.error(f"--args {a!r}: want SCRIPT=ARGS with SCRIPT one of {', '.join(args.scripts)}")
        args.script_args[script] = shlex.split(rest)
    if args.quick:
        for s in args.scripts:
            if "--quick" not in args.script_args[s]:
                args.script_args[s].append("--quick")
    return args


def main() -> None:
    args = parse_args()
    sides = {side: (rev, *resolve(rev)) for side, rev in (("old", args.old), ("new", args.new))}
    for side, (rev, sha, subject) in sides.items():
        print(f"{side}: {rev} = git {sha[:12]} ({subject})", flush=True)
    n_runs = args.rounds * len(args.scripts) * 2
    # each script has its own watchdog; this one bounds the sitting
    benchlib.install_watchdog(int(60 + n_runs * (args.run_timeout + 30)))
    runs: list[Run] = []
    try:
        for rnd in range(1, args.rounds + 1):
            order = ["old", "new"] if rnd % 2 else ["new", "old"]
            for script in args.scripts:
                for side in order:
                    argv = [sys.executable, str(benchlib.BENCH / f"{script}.py"), *args.script_args[script]]
                    run = Run(rnd, script, side, sides[side][1], argv)
                    print(f"\n== round {rnd}/{args.rounds}, {script}, {side} (git {run.commit[:12]})", flush=True)
                    execute(run, args.run_timeout)
                    runs.append(run)
    finally:
        benchlib.stop_all()
    figures = summarize(runs, args.scripts, args.tolerance)
    text = report(figures, runs, sides, args)
    print("\n" + text)
    benchlib.save_result(
        {
            "bench": "interleave",
            **{side: {"rev": rev, "commit": sha, "subject": subj} for side, (rev, sha, subj) in sides.items()},
            "rounds": args.rounds,
            "tolerance": args.tolerance,
            "scripts": {s: args.script_args[s] for s in args.scripts},
            "figures": figures,
            "runs": [
                {
                    "round": r.round,
                    "script": r.script,
                    "side": r.side,
                    "rc": r.rc,
                    "seconds": round(r.seconds, 1),
                    "time": r.record.get("time") if r.record else None,
                    "max_other_pct": others(r) if r.record else None,
                    "problem": r.problem or None,
                }
                for r in runs
            ],
        },
        f"old vs new chatd, interleaved (bench/interleave.py): {args.old} vs {args.new}",
        text,
    )
    ok = figures and all(f["verdict"] in ("pass", "control") for f in figures) and all(r.record for r in runs)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
