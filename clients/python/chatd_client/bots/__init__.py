"""Three example service-group bots (charging, repairs, purchase policy), each run
with one command::

    python -m chatd_client.bots.charging --url ws://127.0.0.1:8765 --token "$BOT_TOKEN"

The token is a ``typ`` bot token of a user the backend provisioned into the groups
as a bot (``service.provision`` ``bots``). ``CHATD_URL`` and ``CHATD_TOKEN`` work
instead of the flags.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Callable

from ..service_bot import ServiceBot


def main(build: Callable[[str, str], ServiceBot], name: str) -> None:
    ap = argparse.ArgumentParser(prog=f"python -m chatd_client.bots.{name}", description=f"the {name} bot")
    ap.add_argument("--url", default=os.environ.get("CHATD_URL", "ws://127.0.0.1:8765"))
    ap.add_argument("--token", default=os.environ.get("CHATD_TOKEN"))
    args = ap.parse_args()
    if not args.token:
        ap.error("a bot token is needed: --token or CHATD_TOKEN")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        asyncio.run(build(args.url, args.token).run())
    except KeyboardInterrupt:
        pass
