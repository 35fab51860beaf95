"""Shared helpers of the chatd benchmarks, one concept per module:

- ``paths``: where the bench folder, the repository (and its revision), the results and the venv are;
- ``procs``: server processes: start them pinned, wait for them, stop them, the watchdog,
  the generator pinned to core 1 (``run_pinned``);
- ``readings``: /proc readings (CPU, context switches, RSS), the others' load on the machine,
  a measured ``Window``;
- ``servers``: the servers under test: which chatd (``BENCH_CHATD_REV``), starting it, tokens,
  clients, /metrics, the floor, a setup's processes together (``Servers``);
- ``redis_server``: a private redis-server (or a Redis Cluster) and its INFO;
- ``profiles``: py-spy and perf during a window;
- ``results``: tables, results/<UTC date>.md and results/results.jsonl.

The bench scripts use the names below as ``benchlib.<name>``.
"""

from .paths import BENCH, RESULTS, ROOT, VENV_BIN, git_rev
from .procs import (
    HOST,
    free_port,
    install_watchdog,
    log_tail,
    on_stop_all,
    pin_self,
    print_log_warnings,
    raise_nofile,
    run_pinned,
    start_server,
    stop_all,
    stop_server,
    wait_healthz,
    wait_tcp,
)
from .profiles import perf_summary, profile_summary, py_spy_bin, start_perf, start_profile
from .readings import OtherLoad, Window, cpu_times, ctx_switches, machine_cpu, proc_tree, rss_kb, wait_quiet
from .redis_server import (
    redis_cmdstats,
    redis_cmdstats_sum,
    redis_command,
    redis_info,
    start_redis,
    start_redis_cluster,
)
from .results import fmt, machine, md_table, save_result
from .servers import (
    Servers,
    Tokens,
    chatd_available,
    chatd_client,
    chatd_commit,
    chatd_help,
    chatd_label,
    chatd_source,
    check_reply,
    scrape_metrics,
    start_chatd,
)

__all__ = [
    "BENCH",
    "HOST",
    "RESULTS",
    "ROOT",
    "VENV_BIN",
    "OtherLoad",
    "Servers",
    "Tokens",
    "Window",
    "chatd_available",
    "chatd_client",
    "chatd_commit",
    "chatd_help",
    "chatd_label",
    "chatd_source",
    "check_reply",
    "cpu_times",
    "ctx_switches",
    "fmt",
    "free_port",
    "git_rev",
    "install_watchdog",
    "log_tail",
    "machine",
    "machine_cpu",
    "md_table",
    "on_stop_all",
    "perf_summary",
    "pin_self",
    "print_log_warnings",
    "proc_tree",
    "profile_summary",
    "py_spy_bin",
    "raise_nofile",
    "redis_cmdstats",
    "redis_cmdstats_sum",
    "redis_command",
    "redis_info",
    "rss_kb",
    "run_pinned",
    "save_result",
    "scrape_metrics",
    "start_chatd",
    "start_perf",
    "start_profile",
    "start_redis",
    "start_redis_cluster",
    "start_server",
    "stop_all",
    "stop_server",
    "wait_healthz",
    "wait_quiet",
    "wait_tcp",
]
