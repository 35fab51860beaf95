"""Offline notifications: when a message reaches a member with no connected
device, a notification goes to the deployment's hooks (its APNs/FCM bridge),
with per-user mutes, quiet hours and coalescing; exactly once per event.

- ``rules.py``  who is notified, skips, coalescing, quiet hours (pure)
- ``worker.py`` the scheduled job: plan, store, deliver to the hooks
- ``stream.py`` a built-in hook forwarding to a Redis stream
- ``hooks.py``  the hook interface and how hooks are found

docs/design.md ("Offline notifications") has the decisions and why.
"""

from ..store.records import Notification
from .hooks import ENTRY_POINT_GROUP, NotifyHook, load_hooks

__all__ = ["ENTRY_POINT_GROUP", "Notification", "NotifyHook", "load_hooks"]
