"""Composition root: config -> store, pipeline, hub, directory, server.

Everything is built here with constructor injection; feature modules never
build their own collaborators.
"""

from __future__ import annotations

import logging

from .config import Config
from .directory import Directory
from .hub import Hub
from .interactions import Interactions
from .metrics import Metrics
from .output import Output
from .pipeline import Pipeline
from .server import SocketServer
from .services import Services
from .store import Store
from .store.messages import head

log = logging.getLogger("chatd.app")


class App:
    def __init__(self, config: Config) -> None:
        config.check()
        self.config = config
        metrics = Metrics()
        store = Store(config.db_path, sync=config.sync)
        output = Output()
        self.svc = Services(
            config=config,
            store=store,
            pipeline=Pipeline(store, metrics, output, config.max_batch),
            hub=Hub(metrics),
            directory=Directory(store),
            metrics=metrics,
            interactions=Interactions(metrics),
            output=output,
        )
        self.server = SocketServer(self.svc)
        self.port = 0

    async def start(self) -> None:
        await self.svc.store.open()
        self.svc.pipeline.head = await head(self.svc.store)
        self.svc.pipeline.start()
        self.port = await self.server.start()
        log.info("chatd listening on ws://%s:%d/ (db %s)", self.config.host, self.port, self.config.db_path)

    async def stop(self) -> None:
        await self.server.drain()
        await self.svc.pipeline.stop()
        await self.svc.store.close()
        log.info("chatd stopped")
