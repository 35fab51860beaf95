"""Server-to-client WebSocket frames built once and written to many sockets.

Server frames are unmasked (RFC 6455 §5.1), so the bytes of one frame are the
same for every recipient: we build them once per encoding and hand the same
``bytes`` object to every transport. This is the websockets ``broadcast()`` idea
minus its per-connection framing.
"""

from __future__ import annotations

import struct

TEXT = 0x1
BINARY = 0x2


def frame(payload: bytes, text: bool) -> bytes:
    """One complete, final, unmasked data frame."""
    head = 0x80 | (TEXT if text else BINARY)
    n = len(payload)
    if n < 126:
        return bytes((head, n)) + payload
    if n < 65536:
        return struct.pack("!BBH", head, 126, n) + payload
    return struct.pack("!BBQ", head, 127, n) + payload
