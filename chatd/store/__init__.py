"""The embedded store: SQLite in WAL mode, one writer thread, aiosqlite readers.

Layout (one module per aggregate, synapse's ``runInteraction`` idea without mixins):

* ``engine``        opening, migrations, the writer thread, batched transactions
* ``schema``        versioned migrations
* ``messages``      message rows <-> wire dicts; append / recall / history / sync
* ``conversations`` conversations, members, blocks
"""

from .engine import Store, StoreUnavailable

__all__ = ["Store", "StoreUnavailable"]
