"""Fuzzing chatd's wire protocol: generators of client frames for both codecs, the
outcome protocol/README.md gives each one, and a harness that holds a real server
to it. One copy, used by the property tests (tests/e2e/test_fuzz.py and
tests/protocol/test_fuzzkit.py, driven by hypothesis) and by the long run
(bench/fuzz.py, driven by a seeded ``random.Random``).

Every generator takes a :class:`Source`, which has one method: an integer in a
range. Hypothesis drives it with ``st.integers`` (so a failing example shrinks:
option 0 of every choice is the simplest), the bench with a seeded ``random.Random``.

What is generated, for ``chatd.v1.msgpack`` and ``chatd.v1.json`` alike:

- well-formed requests of every op in ``chatd_protocol.OPS`` (read from the table,
  so a new op is fuzzed without a change here), with each argument of the right
  type and in range (boundaries first), of a wrong type, out of range, oversize;
  required keys missing, unknown keys, keys in any order, ``d`` omitted; and unknown
  ops;
- malformed envelopes: not a map, no or an invalid id (floats, bools, huge ints,
  bin), a non-string op, ``d`` not a map, unknown envelope keys, nesting deep past
  the decoders' limits, invalid UTF-8 (a text frame, a msgpack str), JSON's lone
  surrogates and what JSON does not allow, truncated or trailing bytes, msgpack map
  keys that are not strings, the wrong frame type, frames of exactly the size
  limit and one byte over it.

Each frame carries what the spec says of it (:func:`expect`): answered (with which
error codes, or any the spec documents) or closed (with which close codes). The
documented codes are read from protocol/README.md (:func:`load_spec`), not copied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import msgpack
from chatd_protocol import CODECS, JSON, MSGPACK, OPS, RULES, Scope
from chatd_protocol.frames import MAX_ID, MAX_ID_STR
from chatd_protocol.ops import Field
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, WebSocketException
from websockets.typing import Subprotocol

T = TypeVar("T")
SPEC_PATH = Path(__file__).resolve().parent.parent / "protocol" / "README.md"
CODEC_NAMES = (MSGPACK, JSON)
USER_TYPES = ("owner", "fan", "deposit", "staff", "bot")

# -- the spec's codes, read from protocol/README.md ----------------------------------


@dataclass(frozen=True)
class Spec:
    errors: dict[str, bool]  # error code -> temporary (§7)
    closes: frozenset[int]  # close codes (§8)
    pushes: frozenset[str]  # push types (§6)
    op_errors: dict[str, frozenset[str]]  # the codes an op's row in §5 names, and the not_member list


def _section(text: str, number: int) -> list[str]:
    lines = text.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith(f"## {number}."))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
    return lines[start + 1 : end]


def _cells(row: str) -> list[str]:
    return [c.strip() for c in row.strip().strip("|").split("|")]


def load_spec(path: Path = SPEC_PATH) -> Spec:
    text = path.read_text()
    errors: dict[str, bool] = {}
    for row in _section(text, 7):
        m = re.match(r"^\| `([a-z_]+)` \| (yes|no) \|", row)
        if m:
            errors[m.group(1)] = m.group(2) == "yes"
    closes: set[int] = set()
    for row in _section(text, 8):
        m = re.match(r"^\| ([0-9][0-9, ]*) \|", row)
        if m:
            closes.update(int(c) for c in m.group(1).split(","))
    pushes = {m.group(1) for row in _section(text, 6) if (m := re.match(r"^\| `([a-z._]+)` \|", row))}
    op_errors: dict[str, set[str]] = {}
    requests = _section(text, 5)
    for row in requests:
        if not row.startswith("| `"):
            continue
        cells = _cells(row)
        codes = {c for c in re.findall(r"`([a-z_]+)`", cells[-1]) if c in errors}
        for op in re.findall(r"`([a-z._]+)`", cells[0]):
            op_errors.setdefault(op, set()).update(codes)
    para = " ".join(ln for ln in requests if ln and not ln.startswith("|"))
    m = re.search(r"`not_member` answers these ops(.*?)\. For", para)
    for op in re.findall(r"`([a-z._]+)`", m.group(1) if m else ""):
        op_errors.setdefault(op, set()).add("not_member")
    assert errors and closes and pushes and op_errors, f"{path}: could not read the code tables"
    return Spec(errors, frozenset(closes), frozenset(pushes), {k: frozenset(v) for k, v in op_errors.items()})


# -- where choices come from -------------------------------------------------------------


class Source(Protocol):
    def integer(self, lo: int, hi: int) -> int:
        """An integer in [lo, hi]; ``lo`` is the simplest choice (what shrinking goes to)."""
        ...


class RandomSource:
    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def integer(self, lo: int, hi: int) -> int:
        return min(hi, lo + int(self.rng.random() * (hi - lo + 1)))  # randint at a third of the cost


class HypothesisSource:
    """Choices drawn by hypothesis (a composite's ``draw`` or ``st.data().draw``):
    a failing example shrinks to the first option of every choice."""

    def __init__(self, draw: Callable[[st.SearchStrategy[int]], int]) -> None:
        self.draw = draw

    def integer(self, lo: int, hi: int) -> int:
        return self.draw(st.integers(lo, hi))


def pick(src: Source, options: Sequence[T]) -> T:
    return options[src.integer(0, len(options) - 1)]


def chance(src: Source, one_in: int) -> bool:
    """True one time in ``one_in`` (False is the simple side)."""
    return src.integer(0, one_in - 1) == one_in - 1


def size(src: Source, lo: int, hi: int, extra: Sequence[int] = ()) -> int:
    """A length or number in [lo, hi]: the bounds and ``extra`` boundaries often, else anything."""
    bounds = [b for b in (lo, hi, lo + 1, hi - 1, *extra) if lo <= b <= hi]
    mode = src.integer(0, 3)
    if mode == 0:
        return lo
    if mode == 1:
        return pick(src, bounds)
    if mode == 2:
        return src.integer(lo, min(hi, lo + 8))
    return src.integer(lo, hi)


ALPHABETS = (
    "abcdefghijklmnopqrstuvwxyz",
    "ABCXYZ0123456789_.@-:",
    ' "\\/\b\f\n\r\t\x00\x01\x1f\x7f{}[],:',  # what JSON escapes, and its punctuation
    "\u00e9\u00fc\u4f60\u597d\u00df\u03a9e\u0301\u200d\u2028\u2029\ufeff\ufffd\uffff\u00a0",  # BMP
    "\U0001f600\U0001f44d\U0001f3fd\U0001f1eb\U0001f1f7\U0010ffff\U00020000",  # astral: 2 UTF-16 units each
)
USER_CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.@-"
CONV_CHARS = USER_CHARS + ":"


def text(src: Source, n: int, alphabet: str | None = None) -> str:
    """A string of exactly ``n`` code points (built from a short repeated chunk, so a
    64 KiB string costs a few draws)."""
    if n <= 0:
        return ""
    alphabet = alphabet or pick(src, ALPHABETS)
    k = src.integer(1, min(n, 8))
    chunk = "".join(pick(src, alphabet) for _ in range(k))
    return (chunk * (n // k + 1))[:n]


# -- the server under test, as the generators know it ----------------------------------


@dataclass
class World:
    """What the generators draw real values from: users, conversations and tokens
    of the server under test, and its limits (from the auth reply)."""

    user: str
    tokens: dict[str, str]  # the fuzzing user's token per user type
    other_token: str  # a valid token of another user
    control_token: str  # the control client's
    users: list[str]
    convs: list[str]
    max_frame: int
    max_text: int

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' report: no tokens
        printer.text(f"<World of {self.user}: convs {self.convs}, max_frame {self.max_frame}>")


@dataclass(frozen=True, slots=True)
class Planned:
    """One frame to send, and what it is."""

    data: bytes | str
    text: bool  # sent as a text frame
    kind: str  # request | envelope | deep | closer
    rid: Any = None  # the id a reply must echo (a valid id), or None
    op: Any = None  # the op, when the envelope has one
    args_ok: bool = False  # request: d passes the op table
    close: frozenset[int] = frozenset()  # closer: the codes it closes with
    token_ok: bool = False  # the token argument is one the server accepts
    what: str = ""

    @property
    def nbytes(self) -> int:
        return len(self.data.encode("utf-8", "surrogatepass") if isinstance(self.data, str) else self.data)

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 160 else self.data[:160]
        more = f" +{len(self.data) - 160}" if len(self.data) > 160 else ""
        return f"<{self.kind} {self.what} rid={self.rid!r} {data!r}{more}>"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:  # hypothesis' report of a failing example
        printer.text(repr(self))


@dataclass(frozen=True, slots=True)
class Case:
    """Frames sent on one socket without waiting: answerable ones, then at most one
    that may close it. ``pipelined``: sent right behind the auth, before its reply."""

    codec: str
    user_type: str
    pipelined: bool
    frames: tuple[Planned, ...]


# -- values for the op table's fields ----------------------------------------------------

BIG_JSON_INTS = (10**20, -(10**20), 2**64)  # JSON only: past 64 bits, orjson reads them as floats


def _others(codec: str) -> list[Any]:
    """Values of every type, for a field that wants another one."""
    out: list[Any] = [
        None,
        True,
        False,
        0,
        -1,
        1,
        1.0,
        1.5,
        -0.0,
        1e308,
        "",
        "x",
        "1",
        [],
        ["a"],
        [1, [2]],
        {},
        {"k": 1},
    ]
    out += [2**53, 2**63 - 1, -(2**63)]
    if codec == MSGPACK:
        out += [b"", b"bytes, not str", msgpack.ExtType(5, b"ext"), msgpack.Timestamp(0, 0), 2**64 - 1]
    else:
        out += list(BIG_JSON_INTS)
    return out


def _user_id(src: Source, world: World) -> str:
    if chance(src, 3):
        return text(src, size(src, 1, 64), USER_CHARS)
    return pick(src, world.users)


def _conv_id(src: Source, world: World) -> str:
    mode = src.integer(0, 3)
    if mode == 3:
        return text(src, size(src, 1, 140), CONV_CHARS)
    if mode == 2:
        return pick(src, ("c:" + str(src.integer(0, 2**40)), f"dm:{world.user}:{_user_id(src, world)}", "c:0", "c:-1"))
    return pick(src, world.convs)


def valid_value(src: Source, world: World, name: str, f: Field) -> tuple[Any, bool]:
    """(a value the op table accepts for ``f``, whether it is a token the server accepts)."""
    kind = f.kind
    if kind == "str":
        if name == "token" and not chance(src, 3):
            return (world.other_token, True) if chance(src, 4) else (pick(src, list(world.tokens.values())), True)
        return text(src, size(src, f.min, f.max, (world.max_text, world.max_text + 1))), False
    if kind == "int":
        return size(src, f.min, f.max), False
    if kind == "bool":
        return chance(src, 2), False
    if kind == "enum":
        return pick(src, f.choices), False
    if kind == "user":
        return _user_id(src, world), False
    if kind == "conv":
        return _conv_id(src, world), False
    if kind == "users":
        return [_user_id(src, world) for _ in range(size(src, f.min, f.max))], False
    if kind == "team":  # distinct members, some with badges
        users = list(dict.fromkeys(_user_id(src, world) for _ in range(size(src, 0, min(f.max, 5)))))
        return [{"user": u, **({"badges": ["Engineer"]} if chance(src, 2) else {})} for u in users], False
    if kind == "tags":
        return pick(src, ({}, {"city": "Shanghai"}, {"city": "上海", "model": "ES8"})), False
    if kind == "card":
        return pick(src, ({"type": "delivery", "title": "交付完成"}, {"type": "service_order", "title": "t",
                          "fields": [{"label": "Order", "value": "SO-1"}], "actions": [{"id": "a", "label": "A"}]})), False
    if kind == "room":
        return pick(src, ("main", "hefei", "sub_1")), False
    if kind == "rooms":
        return pick(src, ([], ["hefei"], ["hefei", "chengdu", "main"])), False
    if kind == "options":
        return pick(src, (["合肥", "成都"], ["yes", "no", "maybe"])), False
    if kind == "choices":
        return pick(src, ([0], [1, 0], [2])), False
    raise AssertionError(f"the fuzzer does not know field kind {kind!r}: teach valid_value and wrong_value")


def wrong_value(src: Source, world: World, codec: str, f: Field) -> Any:
    """A value the op table refuses for ``f``: another type, out of range, oversize."""
    kind = f.kind
    if src.integer(0, 1) == 0:  # another type
        pool = [v for v in _others(codec) if not _same_type(kind, v)]
        return pick(src, pool)
    if kind == "str":
        over = [f.max + 1 + src.integer(0, 2)] + ([f.min - 1] if f.min > 0 else [])
        return text(src, pick(src, over))
    if kind == "int":
        pool = [f.min - 1, f.max + 1, -(2**63), 2**63 - 1, MAX_ID + 1, -1, 2**53]
        if codec == JSON:
            pool += list(BIG_JSON_INTS)
        return pick(src, [v for v in pool if not f.min <= v <= f.max])
    if kind == "bool":
        return pick(src, (0, 1, "true", "false", None))
    if kind == "enum":
        c = pick(src, f.choices)
        v = pick(src, ("", c.upper(), c + " ", " " + c, c + "\x00", "x" + c, text(src, size(src, 1, 100))))
        return v + "?" if v in f.choices else v
    if kind in ("user", "conv"):
        limit = 64 if kind == "user" else 140
        good = USER_CHARS if kind == "user" else CONV_CHARS
        bad = pick(src, (" ", "/", "\u00e9", "\x00", "#", "\U0001f600", "\n", "*"))
        return pick(src, ("", text(src, limit + 1, good), text(src, size(src, 0, 10), good) + bad, bad * 3))
    if kind == "users":
        ok = [_user_id(src, world) for _ in range(size(src, max(f.min, 1), min(f.max, 5)))]
        bad = [ok * (f.max // len(ok) + 1), [*ok, ""], [*ok, 1], [None], [*ok, "a b"]] + ([[]] if f.min else [])
        return pick(src, bad)[: f.max + 1]
    if kind == "team":
        return pick(src, (["eng1"], [{"user": 1}], [{"user": "a", "x": 1}], [{"user": "a"}, {"user": "a"}],
                          [{"user": "a", "badges": "b"}], [{"user": "a", "role": "owner"}], [{}],
                          [{"user": f"u{i}"} for i in range(f.max + 1)]))
    if kind == "tags":
        return pick(src, ({"City": "x"}, {"city": ""}, {"city": 1}, {f"t{i}": "v" for i in range(17)}, {"": "x"}))
    if kind == "card":
        return pick(src, ({"type": "delivery"}, {"title": "t"}, {"type": "Bad!", "title": "t"},
                          {"type": "d", "title": "t", "html": "<b>"}, {"type": "d", "title": ""},
                          {"type": "d", "title": "t", "actions": [{"id": "a", "label": "A", "url": "javascript:x"}]}))
    if kind == "room":
        return pick(src, ("", "Main", "a b", "x" * 33, "hall.1", "大厅"))
    if kind == "rooms":
        return pick(src, (["Main"], ["a", "a"], "main", [1], [f"r{i}" for i in range(f.max + 1)]))
    if kind == "options":
        return pick(src, (["only"], ["a", "a"], ["", "b"], [1, 2], ["x" * 81, "b"], [f"o{i}" for i in range(f.max + 1)]))
    if kind == "choices":
        return pick(src, ([], [0, 0], [-1], [10], ["0"], [True], [0.0], list(range(f.max + 1))))
    raise AssertionError(f"the fuzzer does not know field kind {kind!r}")


def _same_type(kind: str, v: Any) -> bool:
    if kind in ("str", "user", "conv", "enum"):
        return isinstance(v, str)
    if kind == "int":
        return isinstance(v, int) and not isinstance(v, bool)
    if kind == "bool":
        return isinstance(v, bool)
    if kind in ("tags", "card"):
        return isinstance(v, dict)
    return isinstance(v, list)  # users, team


# -- encodings ---------------------------------------------------------------------------------


def encode(src: Source, codec: str, obj: Any, trailing: bool = True) -> bytes | str:
    """One frame as the codec's client would write it, with what the format allows
    varied: JSON's escapes, spacing and surrounding whitespace; msgpack's float32."""
    if codec == MSGPACK:
        single = chance(src, 4)
        try:
            return bytes(msgpack.packb(obj, use_bin_type=True, use_single_float=single))
        except OverflowError:  # a float32 cannot hold it
            return bytes(msgpack.packb(obj, use_bin_type=True))
    seps = pick(src, ((",", ":"), (", ", ": "), (" ,\n", " :\t")))
    out = json.dumps(obj, ensure_ascii=chance(src, 3), separators=seps, allow_nan=False)
    if trailing and chance(src, 4):
        out = pick(src, (" ", "\n", "\r\n\t ")) + out + pick(src, ("", " ", "\n"))
    return out


def _planned(codec: str, data: bytes | str, kind: str, **kw: Any) -> Planned:
    text_frame = isinstance(data, str)
    if codec == JSON and isinstance(data, bytes):  # invalid UTF-8, still sent as a text frame
        text_frame = True
    return Planned(data, text_frame, kind, **kw)


def _finish(p: Planned, world: World) -> Planned:
    """Over the frame size limit, a frame is refused by the WebSocket layer: 1009."""
    if p.nbytes > world.max_frame:
        return Planned(p.data, p.text, "closer", close=frozenset({1009}), what=f"{p.nbytes} bytes, over max_frame")
    return p


# -- ids -------------------------------------------------------------------------------------


class Ids:
    """Valid request ids for one case, each used once (keys as replies are matched);
    the harness's own ids are never drawn."""

    def __init__(self) -> None:
        self.used: set[tuple[bool, Any]] = {id_key(rid) for rid in HARNESS_IDS}

    def draw(self, src: Source) -> int | str:
        mode = src.integer(0, 3)
        rid: int | str
        if mode == 0:
            rid = len(self.used) - len(HARNESS_IDS) + 1
        elif mode == 1:
            rid = pick(src, (0, MAX_ID, MAX_ID - 1, 2**31, 2**32 + 1))
        else:
            rid = text(src, size(src, 1, MAX_ID_STR))
        while id_key(rid) in self.used:
            rid = 1000 + len(self.used) + src.integer(0, 10**6)
        self.used.add(id_key(rid))
        return rid


HARNESS_IDS = ("auth", "fuzz-barrier")


def id_key(rid: Any) -> tuple[bool, Any]:
    """A reply id as a dict key: ``1`` and ``"1"`` stay apart (and so do ``1`` and ``True``)."""
    return (isinstance(rid, str), rid if isinstance(rid, str | int) and not isinstance(rid, bool) else repr(rid))


BAD_IDS: tuple[Any, ...] = (None, True, False, -1, MAX_ID + 1, 2**63 - 1, 1.0, 0.0, 1.5, "", "x" * 65, [], {}, [1])
UNKNOWN_OPS = ("", "Ping", "ping ", " ping", "ping\x00", "PING", "auth2", "send.", ".", "circle", "__class__",
               "constructor", "toString", "hasOwnProperty", "x" * 65, "\u00e9", "push")  # fmt: skip
EXTRA_KEYS = ("zzz", "", "Conv", "conv ", "id", "op", "d", "__proto__", "constructor", "D", "\U0001f600")
OP_NAMES = sorted(OPS)


# -- frames ----------------------------------------------------------------------------------


def gen_args(src: Source, world: World, codec: str, op: str) -> tuple[dict[Any, Any], bool, bool, list[str]]:
    """``d`` for a known op: (d, valid, token accepted, notes)."""
    schema = OPS[op]
    items: list[tuple[Any, Any]] = []
    valid, token_ok, notes = True, False, []
    for name, f in schema.items():
        mode = src.integer(0, 15)  # 0-12 valid (an optional one left out from 6 on), 13 left out, 14-15 wrong
        if mode == 13 or (not f.required and 6 <= mode <= 12):
            if f.required:
                valid = False
                notes.append(f"{name} missing")
            continue
        if mode >= 14:
            items.append((name, wrong_value(src, world, codec, f)))
            valid = False
            notes.append(f"{name} wrong")
        else:
            value, tok = valid_value(src, world, name, f)
            items.append((name, value))
            token_ok = token_ok or tok
    if chance(src, 6):  # an unknown key
        names = [n for n in (*EXTRA_KEYS, *(k for fs in OPS.values() for k in fs)) if n not in schema]
        key: Any = pick(src, names)
        if codec == MSGPACK and chance(src, 3):
            key = pick(src, (b"conv", b"", b"zzz", b"limit"))
        items.append((key, pick(src, _others(codec))))
        valid = False
        notes.append(f"unknown key {key!r}")
    if len(items) > 1 and chance(src, 3):  # keys in any order
        for i in range(len(items) - 1, 0, -1):
            j = src.integer(0, i)
            items[i], items[j] = items[j], items[i]
    return dict(items), valid, token_ok, notes


def gen_request(src: Source, world: World, codec: str, ids: Ids) -> Planned:
    """A well-formed envelope: a known op (its arguments right or wrong) or an unknown one."""
    rid = ids.draw(src)
    if chance(src, 10):
        op = pick(src, UNKNOWN_OPS) if chance(src, 2) else text(src, size(src, 1, 300))
        if op in OPS:
            op += "?"
        d: dict[Any, Any] = {"x": 1} if chance(src, 2) else {}
        valid, token_ok, notes = False, False, ["unknown op"]
    else:
        op = pick(src, OP_NAMES)
        d, valid, token_ok, notes = gen_args(src, world, codec, op)
    env: dict[str, Any] = {"id": rid, "op": op, "d": d}
    if not d and chance(src, 2):
        del env["d"]  # d may be left out when there are no arguments
    if chance(src, 4):
        env = dict(reversed(list(env.items())))
    what = f"{op[:40]!r} " + (", ".join(notes) or "valid")
    p = _planned(codec, encode(src, codec, env), "request", rid=rid, op=op, args_ok=valid, token_ok=token_ok, what=what)
    return _finish(p, world)


def gen_envelope(src: Source, world: World, codec: str, ids: Ids) -> Planned:
    """A map with a valid id and something else wrong in the envelope."""
    rid = ids.draw(src)
    op: Any = pick(src, OP_NAMES)
    env: dict[Any, Any] = {"id": rid, "op": op, "d": {}}
    mode = src.integer(0, 3)
    if mode == 0:
        env["op"] = op = pick(src, [v for v in _others(codec) if not isinstance(v, str)])
        what = f"op is {op!r}"
    elif mode == 1:
        del env["op"]
        op, what = None, "no op"
    elif mode == 2:
        env["d"] = pick(src, [v for v in _others(codec) if not isinstance(v, dict)])
        what = f"d is {env['d']!r}"
    else:
        key = pick(src, ("ID", "Op", "error", "push", "d2", "", "extra", "\u00e9"))
        env[key] = pick(src, _others(codec))
        what = f"envelope key {key!r}"
    if chance(src, 3):
        items = list(env.items())
        env = dict(items[1:] + items[:1])
    p = _planned(codec, encode(src, codec, env), "envelope", rid=rid, op=op, what=what)
    return _finish(p, world)


def gen_either(src: Source, world: World, codec: str, ids: Ids) -> Planned:
    """A frame with a valid id that the codec may not decode: an argument nested
    ``depth`` levels (past the decoders' depth limit), or a msgpack map key that is
    not a string. The spec answers what decodes (bad_request) and closes with 4200
    what does not; it does not say where a decoder stops."""
    rid = ids.draw(src)
    op = pick(src, OP_NAMES)
    if codec == MSGPACK and chance(src, 4):
        key = pick(src, (b"\x01", b"\xc0", b"\xcb\x3f\xf0\x00\x00\x00\x00\x00\x00", b"\xc3", b"\x90", b"\xd0\xff"))
        head = b"\x83" + _pack("id") + _pack(rid) + _pack("op") + _pack(op)
        if chance(src, 2):
            return _planned(codec, head + key + b"\x01", "either", rid=rid, op=op, what=f"envelope key {key!r}")
        data = head + _pack("d") + b"\x81" + key + b"\x01"
        return _finish(_planned(codec, data, "either", rid=rid, op=op, what=f"{op} d key {key!r}"), world)
    key = pick(src, [*OPS[op], "x"])
    if codec == JSON and chance(src, 4):  # a number past what a double holds
        num = pick(src, ("1" + "0" * 400, "-1e400", "1e999", "9" * 310, "1" * 5000))
        data = '{"id":' + json.dumps(rid) + ',"op":' + json.dumps(op) + ',"d":{' + json.dumps(key) + ":" + num + "}}"
        return _finish(_planned(codec, data, "either", rid=rid, op=op, what=f"{op} {key} = {num[:12]}..."), world)
    depth = pick(src, (1, 2, 10, 100, 500, 1000, 1020, 1023, 1024, 1025, 1100, 5000, 20000))
    maps = chance(src, 2)
    if codec == MSGPACK:
        head = b"\x83" + _pack("id") + _pack(rid) + _pack("op") + _pack(op)
        level = b"\x81\xa1a" if maps else b"\x91"
        data_: bytes | str = head + _pack("d") + b"\x81" + _pack(key) + level * depth + b"\x90"
    else:
        opening, closing = ('{"a":', "}") if maps else ("[", "]")
        head_j = '{"id":' + json.dumps(rid) + ',"op":' + json.dumps(op)
        data_ = head_j + ',"d":{' + json.dumps(key) + ":" + opening * depth + "[]" + closing * depth + "}}"
    what = f"{op} {key} nested {depth} {'maps' if maps else 'arrays'}"
    return _finish(_planned(codec, data_, "either", rid=rid, op=op, what=what), world)


def _pack(obj: Any) -> bytes:
    return bytes(msgpack.packb(obj, use_bin_type=True))


def gen_sized(src: Source, world: World, codec: str, ids: Ids) -> Planned:
    """A valid ``send`` padded to the frame size limit, one byte under it or one over."""
    rid = ids.draw(src)
    target = world.max_frame + pick(src, (0, -1, 1))
    d = {"conv": pick(src, world.convs), "cid": "pad", "text": "a"}
    n = 1
    data: bytes | str = b""
    for _ in range(6):
        d["text"] = "a" * n
        data = encode(src, codec, {"id": rid, "op": "send", "d": d}, trailing=False)
        got = len(data.encode() if isinstance(data, str) else data)
        if got == target:
            break
        n = max(1, n + target - got)
    p = _planned(codec, data, "request", rid=rid, op="send", args_ok=True, what=f"send padded to {target} bytes")
    return _finish(p, world)


def gen_closer(src: Source, world: World, codec: str) -> Planned:
    """A frame the spec says closes the socket (4200, 4201, 1009)."""
    mode = src.integer(0, 9)
    if mode == 0:  # not a map
        obj = pick(src, [v for v in _others(codec) if not isinstance(v, dict)])
        return _closer(world, codec, encode(src, codec, obj), 4200, f"not a map: {obj!r}")
    if mode == 1:  # no id, or an invalid one
        env: dict[Any, Any] = {"op": pick(src, OP_NAMES), "d": {}}
        bad = list(BAD_IDS) + ([b"1", msgpack.ExtType(1, b"x")] if codec == MSGPACK else list(BIG_JSON_INTS[:1]))
        if chance(src, 4):
            if codec == MSGPACK:
                env[b"id"] = 1
            what = "no id"
        else:
            env["id"] = rid = pick(src, bad)
            what = f"id {rid!r}"
        return _closer(world, codec, encode(src, codec, env), 4200, what)
    if mode == 2:  # truncated
        op = pick(src, OP_NAMES)
        d = gen_args(src, world, codec, op)[0]
        raw = encode(src, codec, {"id": 1, "op": op, "d": d}, trailing=False)
        cut = src.integer(0, len(raw) - 1)
        return _closer(world, codec, raw[:cut], 4200, f"{op} truncated at {cut} of {len(raw)}")
    if mode == 3:  # trailing bytes
        raw = encode(src, codec, {"id": 1, "op": "ping"}, trailing=False)
        if isinstance(raw, bytes):
            data: bytes | str = raw + pick(src, (b"\xc1", b"\x00", b"\x90", _pack({"id": 2})))
        else:
            data = raw + pick(src, ("x", "{}", ",", "\x00", "]", '{"id":2,"op":"ping"}'))
        return _closer(world, codec, data, 4200, "trailing data")
    if mode == 4:  # invalid UTF-8: in a text frame (JSON) or in a msgpack str
        bad_utf8 = pick(
            src, (b"\xff", b"\xfe\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xe4\xbd", b"\xf4\x90\x80\x80", b"\x80")
        )
        marker = "MRKX"
        obj: dict[str, Any] = {"id": 1, "op": "send", "d": {"conv": "c:1", "cid": "u", "text": marker}}
        where = pick(src, ("text", "op", "key", "id"))
        if where == "op":
            obj["op"] = marker
        elif where == "key":
            obj["d"] = {marker: 1}
        elif where == "id":
            obj["id"] = marker
        raw = encode(src, codec, obj, trailing=False)
        raw_b = raw.encode() if isinstance(raw, str) else raw
        # msgpack: the same length, so the str header still fits
        data = raw_b.replace(marker.encode(), (bad_utf8 * 4)[:4] if codec == MSGPACK else bad_utf8)
        return _closer(world, codec, data, 4200, f"invalid UTF-8 {bad_utf8!r} in {where}")
    if mode == 5:  # not JSON: no JSON text, a lone surrogate; msgpack: never-used bytes
        if codec == JSON:
            data = pick(src, NOT_JSON)
        else:
            data = pick(src, (b"\xc1", b"\xd4", b"\xc4\x05ab", b"\xdc\x00", b"\xde\x00\x01", b"\xa5ab", b"\xcf\x00"))
        return _closer(world, codec, data, 4200, "not JSON" if codec == JSON else "not msgpack")
    if mode == 6:  # the wrong frame type
        other = JSON if codec == MSGPACK else MSGPACK
        raw = CODECS[other].dumps({"id": 1, "op": "ping"})
        if codec == MSGPACK:
            return Planned(raw.decode(), True, "closer", close=frozenset({4201}), what="text frame on msgpack")
        return Planned(raw, False, "closer", close=frozenset({4201}), what="binary frame on json")
    if mode == 7:  # over the size limit
        pad = text(src, world.max_frame + 1, pick(src, ALPHABETS))
        return _closer(world, codec, encode(src, codec, {"id": 1, "op": "ping", "d": {"x": pad}}), 1009, "oversize")
    if mode == 8:
        return _closer(world, codec, b"" if codec == MSGPACK else pick(src, ("", " ", "\n")), 4200, "empty frame")
    obj = {"id": 1, "op": "ping", "d": {}}
    return _closer(world, codec, encode(src, codec, obj)[: src.integer(0, 5)], 4200, "a few bytes of a frame")


NOT_JSON = (
    '{"id":1,"op":"ping","d":{"x":"\\ud800"}}',  # §4: a lone surrogate is no text
    '{"id":"\\udfff","op":"ping"}',
    '{"id":1,"op":"p\\udc00ing"}',
    '{"id":1,"op":"ping","d":{"x":"a\\ud83d"}}',
    '{"id":1,"op":"ping","d":{"x":NaN}}',
    '{"id":1,"op":"ping","d":{"x":Infinity}}',
    "{'id':1,'op':'ping'}",
    '{"id":1,"op":"ping",}',
    '\ufeff{"id":1,"op":"ping"}',
    '{"id":01,"op":"ping"}',
    '{"id":1,"op":"ping"/*c*/}',
    '{"id":0x1,"op":"ping"}',
    '{"id":+1,"op":"ping"}',
    '{"id":1 "op":"ping"}',
    '{"id":1,"op":"ping","d":{"x":"\x01"}}',  # a raw control character in a string
    "null",
)


def _closer(world: World, codec: str, data: bytes | str, code: int, what: str) -> Planned:
    return _finish(_planned(codec, data, "closer", close=frozenset({code}), what=what), world)


def gen_answerable(src: Source, world: World, codec: str, ids: Ids) -> Planned:
    """A frame the spec answers (it may still turn out over the size limit)."""
    mode = src.integer(0, 19)
    if mode < 16:
        return gen_request(src, world, codec, ids)
    if mode < 19:
        return gen_envelope(src, world, codec, ids)
    return gen_sized(src, world, codec, ids)


def gen_case(
    src: Source, world: World, codec: str | None = None, max_frames: int = 6, close_one_in: int = 4,
    pipelined_one_in: int = 4,
) -> Case:  # fmt: skip
    """A few answerable frames pipelined on an authenticated socket and, one time in
    ``close_one_in``, one last that closes it (or may). A frame that turns out to
    close the socket (over the size limit) ends the case. One case in
    ``pipelined_one_in`` goes right behind the auth."""
    codec = codec or pick(src, CODEC_NAMES)
    ids = Ids()
    frames = [gen_answerable(src, world, codec, ids) for _ in range(src.integer(1, max_frames))]
    if chance(src, close_one_in):
        frames.append(gen_closer(src, world, codec) if chance(src, 2) else gen_either(src, world, codec, ids))
    end = next((i + 1 for i, p in enumerate(frames) if expect(p).close), len(frames))
    return Case(codec, pick(src, USER_TYPES), chance(src, pipelined_one_in), tuple(frames[:end]))


def gen_first(src: Source, world: World, codec: str) -> Planned:
    """The first frame of a socket that has not authenticated."""
    ids = Ids()
    mode = src.integer(0, 7)
    if mode == 0:  # an auth, its token right or wrong
        rid = ids.draw(src)
        d, valid, token_ok, notes = gen_args(src, world, codec, "auth")
        raw = encode(src, codec, {"id": rid, "op": "auth", "d": d})
        what = "auth " + (", ".join(notes) or "valid")
        p = _planned(codec, raw, "request", rid=rid, op="auth", args_ok=valid, token_ok=token_ok, what=what)
        return _finish(p, world)
    if mode < 3:
        return gen_request(src, world, codec, ids)
    if mode < 4:
        return gen_envelope(src, world, codec, ids)
    if mode < 5:
        return gen_either(src, world, codec, ids)
    return gen_closer(src, world, codec)


#: hypothesis settings of the fuzz properties: reproducible (derandomized, no example
#: database), no deadline (an example is network round trips)
SETTINGS = settings(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


def cases(world: World, codec: str) -> st.SearchStrategy[Case]:
    """Hypothesis' strategy of :func:`gen_case`."""
    return st.composite(lambda draw: gen_case(HypothesisSource(draw), world, codec))()


def first_frames(world: World, codec: str) -> st.SearchStrategy[Planned]:
    """Hypothesis' strategy of :func:`gen_first`."""
    return st.composite(lambda draw: gen_first(HypothesisSource(draw), world, codec))()


# -- what the spec says of a frame ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Expect:
    reply: bool  # an answer (reply or error reply) with the frame's id is right
    ok: bool = False  # a reply (not an error) is right
    codes: frozenset[str] | None = None  # error codes that are right; None: any the spec documents
    close: frozenset[int] = frozenset()  # closing the socket is right, with one of these codes


BAD_REQUEST = frozenset({"bad_request"})


def _holds(scope: Scope, user_type: str) -> bool:
    """Whether a fuzzed token of ``user_type`` holds ``scope`` (none holds admin)."""
    if scope is Scope.ADMIN:
        return False
    if scope is Scope.STAFF:
        return user_type == "staff"
    if scope is Scope.BOT:
        return user_type == "bot"
    return True


def expect(p: Planned, first: bool = False, user_type: str = "owner") -> Expect:
    """What protocol/README.md says the server does with ``p``: on an authenticated
    socket of a user of ``user_type`` (or pipelined behind the auth), or as a
    socket's ``first`` frame."""
    if p.kind == "closer":  # §1 (1009, 4201), §2 (4200), §4 (a lone surrogate)
        return Expect(False, close=p.close)
    if first:  # §3.1
        if p.kind == "envelope":  # a map with a valid id that is not a well-formed request
            return Expect(False, close=frozenset({4200}))
        if p.kind == "either":
            return Expect(False, close=frozenset({4200, 4101 if p.op == "auth" else 4103}))
        if p.op != "auth":
            return Expect(False, close=frozenset({4103}))
        if p.args_ok and p.token_ok:
            return Expect(True, ok=True, codes=frozenset())
        return Expect(False, close=frozenset({4101}))  # §3.3: a malformed or forged token
    if p.kind == "envelope":  # §2: answered, the socket stays open
        unknown = isinstance(p.op, str) and p.op not in OPS
        return Expect(True, codes=BAD_REQUEST | ({"unknown_op"} if unknown else set()))
    if p.kind == "either":
        scoped = isinstance(p.op, str) and p.op in RULES and not _holds(RULES[p.op].scope, user_type)
        return Expect(True, codes=BAD_REQUEST | ({"forbidden"} if scoped else set()), close=frozenset({4200}))
    if p.op not in OPS:
        return Expect(True, codes=frozenset({"unknown_op"}))
    if not _holds(RULES[p.op].scope, user_type):  # §3, §5: the scope is checked first
        return Expect(True, codes=frozenset({"forbidden"}))
    if not p.args_ok:  # §2, §7: a field missing, unknown, of the wrong type or out of range
        return Expect(True, codes=BAD_REQUEST)
    if p.op == "auth":
        return Expect(True, codes=frozenset({"already_authenticated"}))
    return Expect(True, ok=True)


# -- the harness ---------------------------------------------------------------------------


@dataclass
class Tally:
    """What a run saw; ``problems`` are departures from the spec (each a category and
    a line saying what was sent and what came back)."""

    sent: int = 0
    replies: int = 0
    pushes: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    op_errors: Counter[tuple[str, str]] = field(default_factory=Counter)
    closes: Counter[int] = field(default_factory=Counter)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def problem(self, category: str, line: str) -> None:
        self.problems.append((category, line))

    def add(self, other: Tally) -> None:
        self.sent += other.sent
        self.replies += other.replies
        self.pushes += other.pushes
        self.errors.update(other.errors)
        self.op_errors.update(other.op_errors)
        self.closes.update(other.closes)
        self.problems += other.problems


class Conn:
    """A socket to the server: replies matched to ids, every server frame checked
    against the spec's shapes, the close code kept."""

    def __init__(self, ws: ClientConnection, spec: Spec, tally: Tally) -> None:
        self.ws = ws
        self.codec = CODECS[ws.subprotocol or ""]
        self.spec = spec
        self.tally = tally
        self.waiting: dict[tuple[bool, Any], asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def open(cls, url: str, codec: str, spec: Spec, tally: Tally, wait: float) -> Conn:
        ws = await connect(
            url,
            subprotocols=[Subprotocol(codec)],
            compression=None,
            max_size=None,
            ping_interval=None,
            open_timeout=wait,
            close_timeout=2,
        )
        return cls(ws, spec, tally)

    async def _read(self) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for data in self.ws:
                self._on_frame(data)

    def _on_frame(self, data: bytes | str) -> None:
        tally = self.tally
        if isinstance(data, str) is not self.codec.text:
            tally.problem("shape", f"server sent a {'text' if isinstance(data, str) else 'binary'} frame")
            return
        try:
            obj = self.codec.loads(data)
        except Exception as exc:
            tally.problem("shape", f"server frame does not decode ({exc}): {data[:100]!r}")
            return
        bad = server_frame_problem(obj, self.spec)
        if bad:
            tally.problem("shape", f"{bad}: {obj!r:.300}")
            return
        if "push" in obj:
            tally.pushes += 1
            return
        tally.replies += 1
        fut = self.waiting.pop(id_key(obj["id"]), None)
        if fut is None or fut.done():
            tally.problem("duplicate", f"a reply to an id not waiting for one (a second reply?): {obj!r:.300}")
        else:
            fut.set_result(obj)

    def expect_reply(self, rid: Any) -> asyncio.Future[dict[str, Any]]:
        fut: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[id_key(rid)] = fut
        return fut

    async def send(self, p: Planned) -> bool:
        try:
            await self.ws.send(p.data, text=p.text)
        except (ConnectionClosed, WebSocketException):
            return False
        self.tally.sent += 1
        return True

    async def request(self, op: str, d: dict[str, Any], rid: Any, wait: float) -> dict[str, Any]:
        """A request of the harness itself (auth, a barrier ping, set-up); TimeoutError after ``wait`` s."""
        fut = self.expect_reply(rid)
        data = self.codec.dumps({"id": rid, "op": op, "d": d})
        await self.ws.send(data.decode() if self.codec.text else data)
        return await asyncio.wait_for(fut, wait)

    async def call(self, op: str, wait: float, **d: Any) -> dict[str, Any]:
        reply = await self.request(op, d, f"call-{op}-{id(d)}", wait)
        if "error" in reply:
            raise AssertionError(f"{op} {d!r}: {reply['error']}")
        return dict(reply["d"])

    @property
    def open_(self) -> bool:
        return not self.reader.done()

    async def closed(self, wait: float) -> int | None:
        """The close code once the server has closed the socket; None if it did not within ``wait`` s."""
        try:
            await asyncio.wait_for(asyncio.shield(self.reader), wait)
        except TimeoutError:
            return None
        return self.ws.close_code if self.ws.close_code is not None else 1006

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        self.reader.cancel()
        with contextlib.suppress(BaseException):
            await self.reader


def server_frame_problem(obj: Any, spec: Spec) -> str | None:
    """What is wrong with a server frame's shape (§2), if anything."""
    if not isinstance(obj, dict):
        return "server frame is not a map"
    if "push" in obj:
        if set(obj) - {"push", "d"} or not isinstance(obj.get("d"), dict):
            return "malformed push"
        return None if obj["push"] in spec.pushes else f"undocumented push {obj['push']!r}"
    if "error" in obj:
        err = obj["error"]
        if set(obj) != {"id", "error"} or not isinstance(err, dict):
            return "malformed error reply"
        if not isinstance(err.get("code"), str) or not isinstance(err.get("message"), str) or not err["message"]:
            return "error reply without a code and a message"
        if set(err) - {"code", "message", "temporary", "retry_after_ms"} or not isinstance(err.get("temporary"), bool):
            return "malformed error reply"
        retry = err.get("retry_after_ms")
        if retry is not None and (not isinstance(retry, int) or isinstance(retry, bool) or retry < 0):
            return "retry_after_ms is not a count of ms"
        if err["code"] in spec.errors and err["temporary"] is not spec.errors[err["code"]]:
            return f"{err['code']} with temporary={err['temporary']}, the spec says {spec.errors[err['code']]}"
        return None
    if set(obj) != {"id", "d"} or not isinstance(obj["d"], dict):
        return "malformed reply"
    return None


def judge(p: Planned, exp: Expect, reply: dict[str, Any], tally: Tally) -> None:
    """Hold one answer to what the spec says of the frame."""
    op = p.op if isinstance(p.op, str) and p.op in OPS else "-"
    if "error" in reply:
        code = reply["error"]["code"]
        tally.errors[code] += 1
        tally.op_errors[(op, code)] += 1
        if code not in SPEC.errors:
            tally.problem("undocumented-error", f"{p!r} -> {code}")
        elif code == "internal":
            tally.problem("internal", f"{p!r} -> internal (a server bug)")
        elif not exp.reply or (exp.codes is not None and code not in exp.codes):
            tally.problem("wrong-answer", f"{p!r} -> {code}, the spec says {_said(exp)}")
    else:
        tally.op_errors[(op, "ok")] += 1
        if not exp.ok:
            tally.problem("wrong-answer", f"{p!r} -> a reply, the spec says {_said(exp)}")


def _said(exp: Expect) -> str:
    parts = []
    if exp.reply:
        parts.append("a reply" if exp.ok and exp.codes is None else "")
        if exp.codes:
            parts.append("error " + "/".join(sorted(exp.codes)))
    if exp.close:
        parts.append("close " + "/".join(map(str, sorted(exp.close))))
    return " or ".join(x for x in parts if x) or "nothing"


SPEC = load_spec()


async def play(conn: Conn, case: Case, world: World, wait: float, auth: Planned | None = None) -> None:
    """Send ``case``'s frames on ``conn`` (authenticated, or with ``auth`` sent first
    without waiting), then hold every answer and the close to the spec. Leaves
    ``conn`` open when no frame closed it."""
    tally = conn.tally
    loop = asyncio.get_running_loop()
    plan: list[tuple[Planned, Expect, asyncio.Future[dict[str, Any]] | None]] = []
    for p in ((auth,) if auth is not None else ()) + case.frames:
        exp = expect(p, first=p is auth, user_type=case.user_type)
        fut = conn.expect_reply(p.rid) if exp.reply and p.rid is not None else None
        plan.append((p, exp, fut))
        if not await conn.send(p):
            break
    last, last_exp, last_fut = plan[-1]
    deadline = loop.time() + wait
    # every answer, or the close (after which no answer comes)
    pending = {f for _, _, f in plan if f is not None and not f.done()}
    while pending and not conn.reader.done() and (left := deadline - loop.time()) > 0:
        await asyncio.wait([*pending, conn.reader], timeout=left, return_when=asyncio.FIRST_COMPLETED)
        pending = {f for f in pending if not f.done()}
    code: int | None = None
    if conn.reader.done() or (last_exp.close and not (last_fut is not None and last_fut.done())):
        code = await conn.closed(max(0.1, deadline - loop.time()))
    if code is not None:
        tally.closes[code] += 1
    # A frame the spec answers must be answered, unless the socket closed as the last
    # frame says and the WebSocket layer closed it (1009: what was still to be written
    # is dropped) or the auth went down with it (frames pipelined behind the auth).
    lossy = code is not None and (code == 1009 or auth is not None)
    for p, exp, fut in plan:
        if fut is None:
            continue
        if fut.done():
            judge(p, exp, fut.result(), tally)
            continue
        conn.waiting.pop(id_key(p.rid), None)
        fut.cancel()
        if p is last and code in exp.close:
            continue  # closed instead of answered, as the spec allows for this frame
        if code is None:
            tally.problem("hang", f"{p!r}: no answer within {wait} s and the socket is still open")
        elif not lossy:
            tally.problem("lost-answer", f"{p!r}: not answered before the close {code}")
    if code is None:
        if last_exp.close and not last_exp.reply:
            tally.problem("no-close", f"{last!r}: the spec says {_said(last_exp)}; still open after {wait} s")
        return
    if code == 1011:
        tally.problem("1011", f"closed 1011 after {last!r}")
    if code not in SPEC.closes:
        tally.problem("undocumented-close", f"closed {code} after {last!r}")
    elif code not in last_exp.close:
        tally.problem("wrong-close", f"closed {code} after {last!r}, the spec says {_said(last_exp)}")


def auth_frame(case: Case, world: World) -> Planned:
    tok = world.tokens[case.user_type]
    data = CODECS[case.codec].dumps({"id": "auth", "op": "auth", "d": {"token": tok}})
    raw = data.decode() if case.codec == JSON else data
    return Planned(raw, case.codec == JSON, "request", rid="auth", op="auth", args_ok=True, token_ok=True, what="auth")


async def open_for(url: str, case: Case, world: World, tally: Tally, wait: float) -> Conn:
    """A socket for ``case``: authenticated, or (pipelined) not yet."""
    conn = await Conn.open(url, case.codec, SPEC, tally, wait)
    if not case.pipelined:
        reply = await conn.request("auth", {"token": world.tokens[case.user_type]}, "auth", wait)
        assert "d" in reply, f"auth refused: {reply!r}"
    return conn


async def run_case(url: str, case: Case, world: World, tally: Tally, wait: float) -> None:
    """One case on a socket of its own; when it stays open, a ping must still be answered."""
    conn = await open_for(url, case, world, tally, wait)
    try:
        await play(conn, case, world, wait, auth_frame(case, world) if case.pipelined else None)
        if conn.open_:
            try:
                await conn.request("ping", {}, "fuzz-barrier", wait)
            except TimeoutError:
                tally.problem("hang", "the socket stayed open but a ping after the case was not answered")
            except (ConnectionClosed, WebSocketException):
                tally.problem("unexpected-close", f"closed {conn.ws.close_code} after the case, before a ping")
    finally:
        await conn.close()


async def run_first(url: str, codec: str, p: Planned, world: World, tally: Tally, wait: float) -> None:
    """``p`` as the first frame of a new socket."""
    conn = await Conn.open(url, codec, SPEC, tally, wait)
    try:
        await play(conn, Case(codec, "owner", False, ()), world, wait, auth=p)
    finally:
        await conn.close()


async def control(url: str, world: World, tally: Tally, wait: float) -> bool:
    """A fresh client authenticates and gets a ping answered within ``wait`` s."""
    conn: Conn | None = None
    try:
        async with asyncio.timeout(wait):
            conn = await Conn.open(url, MSGPACK, SPEC, tally, wait)
            await conn.request("auth", {"token": world.control_token}, 1, wait)
            reply = await conn.request("ping", {}, 2, wait)
        if "d" not in reply:
            tally.problem("control", f"control ping refused: {reply!r}")
            return False
        return True
    except (TimeoutError, OSError, WebSocketException) as exc:
        tally.problem("control", f"a fresh control client got no round trip in {wait} s: {exc!r}")
        return False
    finally:
        if conn is not None:
            await conn.close()


def log_problems(path: Path, offset: int) -> tuple[int, list[str]]:
    """Lines of the server's log from ``offset`` on that say a bug happened: a
    traceback, an ERROR line. Returns the new offset and the lines."""
    with open(path, "rb") as f:
        f.seek(offset)
        chunk = f.read()
    lines = chunk.decode("utf-8", "replace").splitlines()
    bad = [ln for ln in lines if "Traceback" in ln or " ERROR " in ln or " CRITICAL " in ln]
    return offset + len(chunk), bad


async def make_world(url: str, mint: Callable[[str, str], str], wait: float = 10.0) -> World:
    """Users, circles and a DM on the server under test for the generators to aim at:
    a circle the fuzzing user owns, one it joined, one it is not in, a DM with a message."""
    tally = Tally()
    user = "fuzz"
    tokens = {t: mint(user, t) for t in USER_TYPES}
    conns = {}
    for u in (user, "peer1", "peer2", "fuzz-ctl"):
        c = conns[u] = await Conn.open(url, MSGPACK, SPEC, tally, wait)
        d = await c.call("auth", wait, token=tokens["owner"] if u == user else mint(u, "owner"))
        limits = d["limits"]
    me, p1, p2 = conns[user], conns["peer1"], conns["peer2"]
    joined = (await p1.call("circle.create", wait, name="joined", category="city"))["conv"]
    await me.call("circle.join", wait, conv=joined)
    own = (await me.call("circle.create", wait, name="own", category="interest"))["conv"]
    await p2.call("circle.join", wait, conv=own)
    other = (await p2.call("circle.create", wait, name="other", category="family"))["conv"]
    dm = (await me.call("dm.open", wait, user="peer1"))["conv"]
    for conv in (joined, own, dm):
        await me.call("send", wait, conv=conv, cid=f"seed-{conv}", text="hello @peer1", mentions=["peer1"])
    await p1.call("send", wait, conv=joined, cid="seed-p1", text="from peer1")
    for c in conns.values():
        await c.close()
    assert not tally.problems, tally.problems
    return World(
        user=user,
        tokens=tokens,
        other_token=mint("peer2", "owner"),
        control_token=mint("fuzz-ctl", "owner"),
        users=[user, "peer1", "peer2", "fuzz-ctl", "nobody"],
        convs=[own, joined, other, dm, "c:999999", f"dm:{user}:nobody"],
        max_frame=int(limits["max_frame"]),
        max_text=int(limits["max_text"]),
    )


#: ``chatd serve`` flags of a server under fuzz: no rate limit or quota stands between
#: a frame and the answer the spec gives it (those have tests of their own)
SERVE_ARGS = ("--request-rate", "1000000", "--request-burst", "1000000", "--send-rate", "1000000",
              "--send-burst", "1000000", "--circles-per-hour", "0", "--new-dms-per-hour", "0")  # fmt: skip
