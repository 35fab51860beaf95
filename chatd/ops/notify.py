"""A user's offline-notification settings: a global mute, quiet hours, a mute
per conversation (``chatd/notify`` reads them when it plans)."""

from __future__ import annotations

from chatd_protocol import Err, RequestError

from ..core.caller import Caller
from ..core.directory import Directory
from ..store.base import Notifications
from ..store.records import NotifyPrefs
from .base import Args, Commit, Reply, member_state

QUIET = ("quiet_from", "quiet_to", "utc_offset")


def _wire(prefs: NotifyPrefs) -> Reply:
    out: Reply = {"muted_until": prefs.muted_until}
    if prefs.quiet_from is not None and prefs.quiet_to is not None:
        out["quiet"] = {"from": prefs.quiet_from, "to": prefs.quiet_to, "utc_offset": prefs.utc_offset}
    return out


class NotifyOps:
    def __init__(self, commit: Commit, repo: Notifications, directory: Directory) -> None:
        self.commit = commit
        self.repo = repo
        self.directory = directory

    async def get(self, caller: Caller, d: Args) -> Reply:
        out = _wire(await self.repo.prefs(caller.user))
        conv = d.get("conv")
        if conv is not None:
            await member_state(self.directory, caller, conv)
            out.update(conv=conv, conv_muted_until=await self.repo.conv_mute(caller.user, conv))
        return out

    async def set_(self, caller: Caller, d: Args) -> Reply:
        conv = d.get("conv")
        if conv is not None:
            if set(d) != {"conv", "muted_until"}:
                raise RequestError(Err.BAD_REQUEST, "with conv, notify.set takes muted_until alone")
            await member_state(self.directory, caller, conv)
            until = await self.commit(self.repo.set_conv_mute(caller.user, conv, d["muted_until"]))
            return {**_wire(await self.repo.prefs(caller.user)), "conv": conv, "conv_muted_until": until}
        given = [k for k in QUIET if k in d]
        if given and len(given) != len(QUIET):
            raise RequestError(Err.BAD_REQUEST, "quiet_from, quiet_to and utc_offset go together")
        if given and d.get("quiet_off"):
            raise RequestError(Err.BAD_REQUEST, "quiet_off cannot come with quiet hours")
        if given and d["quiet_from"] == d["quiet_to"]:
            raise RequestError(Err.BAD_REQUEST, "quiet_from and quiet_to must differ (quiet_off clears them)")
        if not d:
            raise RequestError(Err.BAD_REQUEST, "nothing to set")
        quiet = (d["quiet_from"], d["quiet_to"], d["utc_offset"]) if given else None
        prefs = await self.commit(
            self.repo.set_prefs(caller.user, d.get("muted_until"), quiet, bool(d.get("quiet_off")))
        )
        return _wire(prefs)
