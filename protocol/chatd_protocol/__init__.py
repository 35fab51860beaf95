"""chatd protocol v1: frames, codecs, op schemas, error and close codes (sans-I/O)."""

from .codec import (
    CODECS,
    JSON,
    MSGPACK,
    SUBPROTOCOLS,
    Codec,
    codec_for,
    decode_request,
    decode_server_frame,
    encode,
)
from .errors import Close, Err, FrameError, ProtocolError, RequestError, close_action
from .frames import ErrorReply, Frame, Push, Reply, Request, RequestId, ServerFrame
from .ops import ADMIN_API_OPS, OPS, RETRY_SAFE, RULES, Rule, Scope, check_args

__all__ = [
    "ADMIN_API_OPS",
    "CODECS",
    "JSON",
    "MSGPACK",
    "OPS",
    "RETRY_SAFE",
    "RULES",
    "SUBPROTOCOLS",
    "Close",
    "Codec",
    "Err",
    "ErrorReply",
    "Frame",
    "FrameError",
    "ProtocolError",
    "Push",
    "Reply",
    "Request",
    "RequestError",
    "RequestId",
    "Rule",
    "Scope",
    "ServerFrame",
    "check_args",
    "close_action",
    "codec_for",
    "decode_request",
    "decode_server_frame",
    "encode",
]
