"""The fixed cost per message against the cost per delivery (issue 13, item 1).

The same delivery rate (``--rate``, 20,000/s) and about the same number of connections
(``--conns``, 5,000), in circles of 10, 100 and 1,000 members: 500 x 10, 50 x 100,
5 x 1,000, so 2,000, 200 and 20 messages a second. For every server (the two floors and
chatd) the server CPU per message is fitted, by least squares, to

    CPU per message = fixed + per_delivery x members

``fixed`` is what a message costs whatever its audience (chatd: the request, the durable
commit, the ack, points, the bus; a floor: reading the frame), ``per_delivery`` what each
recipient adds (the write). Reported with the fit's worst relative residual; user and
kernel time are fitted apart as well.

    .venv/bin/python bench/fixedcost.py            # 3 servers x 3 sizes, ~4 min
    .venv/bin/python bench/fixedcost.py --quick    # 1,000 connections, ~2 min
"""

from __future__ import annotations

import argparse
from typing import Any

import benchlib
import fanout


def fit(points: list[tuple[float, float]]) -> tuple[float, float, float]:
    """Least squares y = a + b x: (a, b, the largest |residual| / y)."""
    n = len(points)
    mx = sum(x for x, _ in points) / n
    my = sum(y for _, y in points) / n
    sxx = sum((x - mx) ** 2 for x, _ in points)
    b = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    a = my - b * mx
    worst = max((abs(y - (a + b * x)) / y for x, y in points if y), default=0.0)
    return a, b, worst


async def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for members in args.members:
        sub = argparse.Namespace(**vars(args))
        sub.circles, sub.members, sub.rates = max(1, args.conns // members), members, [args.rate]
        print(f"-- {sub.circles} circles x {members} members at {args.rate:,} deliveries/s", flush=True)
        for r in await fanout.run(sub):
            rows.append({**r, "members": members, "circles": sub.circles})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rate", type=int, default=20_000)
    ap.add_argument("--conns", type=int, default=5_000)
    ap.add_argument("--members", type=lambda s: [int(x) for x in s.split(",")], default=[10, 100, 1000])
    ap.add_argument("--target", choices=["both", "chatd", "floors"], default="both",
                    help="both = floor + node + chatd")
    ap.add_argument("--warmup", type=float, default=3.0)
    ap.add_argument("--window", type=float, default=10.0)
    ap.add_argument("--size", type=int, default=120)
    ap.add_argument("--proto", choices=["json", "msgpack"], default="json")
    ap.add_argument("--chatd-arg", action="append", default=[])
    args = ap.parse_args()
    if args.quick:
        args.conns, args.rate, args.warmup, args.window = 1_000, 10_000, 1.0, 4.0
    args.targets = {"both": ["floor", "node", "chatd"], "chatd": ["chatd"], "floors": ["floor", "node"]}[args.target]
    args.split, args.profile, args.perf, args.py_spy = "member", None, None, None
    rows = benchlib.run_pinned(run(args), watchdog=1800, fds=args.conns + 1100)
    for r in rows:
        r["us_per_msg"] = round(r["server_us_per_delivery"] * r["members"], 1)
    fits = []
    for server in args.targets:
        mine = [r for r in rows if r["server"] == server]
        if len(mine) < 2:
            continue
        out: dict[str, Any] = {"server": server}
        for key, col in (("all", "server_us_per_delivery"), ("user", "server_user_us"), ("sys", "server_sys_us")):
            a, b, worst = fit([(r["members"], r[col] * r["members"]) for r in mine])
            out[f"{key}_fixed_us"], out[f"{key}_per_delivery_us"] = round(a, 1), round(b, 2)
            if key == "all":
                out["worst_residual_pct"] = round(100 * worst, 1)
        fits.append(out)
    table = benchlib.md_table(rows, [("server", "server"), ("members", "members"), ("circles", "circles"),
                                     ("achieved/s", "achieved_dps"), ("p99 ms", "p99_ms"),
                                     ("µs/delivery", "server_us_per_delivery"), ("user µs", "server_user_us"),
                                     ("sys µs", "server_sys_us"), ("µs/message", "us_per_msg")])
    fit_table = benchlib.md_table(fits, [("server", "server"), ("fixed µs/msg", "all_fixed_us"),
                                         ("µs/delivery", "all_per_delivery_us"), ("user fixed", "user_fixed_us"),
                                         ("user /delivery", "user_per_delivery_us"), ("sys fixed", "sys_fixed_us"),
                                         ("sys /delivery", "sys_per_delivery_us"),
                                         ("worst residual %", "worst_residual_pct")])
    text = (f"{args.rate:,} deliveries/s, ~{args.conns:,} connections in circles of {args.members} members, "
            f"{args.size}-byte texts, server on core 0, generator on core 1\n\n{table}\n\n"
            f"CPU per message = fixed + per delivery x members (least squares):\n\n{fit_table}\n")
    print("\n" + text)
    benchlib.save_result({"bench": "fixedcost", "rows": rows, "fits": fits}, "fixed cost per message (bench/fixedcost.py)",
                         text, chatd=True)


if __name__ == "__main__":
    main()
