"""Live Q&A sessions (issue 12): lifecycle, viewers and their snapshot, questions,
votes and the coalesced ranking, moderation, answers and pins, audience chat with
slow mode and mutes, polls with weighting, attendance and the archive. Real
server, real SQLite file, real sockets; the server's clock is a FakeClock that
the tests move where time matters."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from support import FakeClock, admin_call, read_db, write_db


@pytest.fixture
async def app(make_server: Any, fake_clock: FakeClock) -> Any:
    return await make_server(admin_port=0, clock=fake_clock)


async def session(host: Any, **kw: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"cid": "s1", "title": "用户面对面", "moderators": ["mod"]}
    spec.update(kw)
    return await host.call("live.create", **spec)


async def people(app: Any, clients: Any, **kw: Any) -> tuple[Any, Any, str]:
    host = await clients(app, "ceo", "staff", roles=["exec"])
    mod = await clients(app, "mod", "staff", roles=["moderator"])
    s = await session(host, **kw)
    await host.call("live.state", session=s["session"], state="live")
    return host, mod, s["session"]


async def pushes_of(c: Any, kind: str, wait: float = 0.3) -> list[dict[str, Any]]:
    out = []
    while True:
        try:
            p = await c.next_push(wait, kind)
        except TimeoutError:
            return out
        out.append(p.d)


async def test_a_session_goes_through_its_states_and_followers_hear_it_go_live(app: Any, clients: Any) -> None:
    host = await clients(app, "ceo", "staff", roles=["exec"])
    fan = await clients(app, "fan1", "fan")
    s = await session(host, rooms=["shanghai", "beijing"], starts_ts=1_800_000_000_000)
    sid = s["session"]
    assert s["state"] == "scheduled" and s["rooms"] == ["main", "shanghai", "beijing"] and s["dup"] is False
    assert s["roles"] == {"ceo": "host", "mod": "moderator"}
    again = await session(host, rooms=["shanghai", "beijing"])
    assert again["session"] == sid and again["dup"] is True
    assert (await fan.call("live.follow", session=sid))["following"] is True
    listed = await fan.call("live.list", state="scheduled")
    assert [x["session"] for x in listed["sessions"]] == [sid]
    started = await host.call("live.state", session=sid, state="live")
    assert started["state"] == "live" and started["changed"] is True
    note = await fan.next_push(kind="live.started")
    assert note.d == {"session": sid, "title": "用户面对面", "state": "live"}
    assert (await host.call("live.state", session=sid, state="live"))["changed"] is False
    await host.fail("live.state", "conflict", session=sid, state="archived")  # not ended yet
    await fan.fail("live.state", "forbidden", session=sid, state="ended")
    await host.call("live.state", session=sid, state="ended")
    await fan.fail("live.join", "conflict", session=sid)
    await host.call("live.state", session=sid, state="archived")
    await fan.fail("live.state", "not_found", session="l:999", state="ended")


async def test_staff_without_the_role_and_users_cannot_make_sessions_but_a_backend_can(
    app: Any, clients: Any
) -> None:
    staff = await clients(app, "eng", "staff", roles=["engineer"])
    await staff.fail("live.create", "forbidden", cid="x", title="t")
    owner = await clients(app, "olivia", "owner")
    await owner.fail("live.create", "forbidden", cid="x", title="t")
    status, reply = await admin_call(app, "live.create", {"cid": "b1", "title": "NIO Day", "hosts": ["ceo"]})
    assert status == 200 and reply["ok"]["roles"] == {"ceo": "host"}


async def test_a_viewer_gets_a_snapshot_then_live_updates_only(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    _host, mod, sid = await people(app, clients, anonymous=True)
    a = await clients(app, "alice", "owner", badges=["ES8"])
    b = await clients(app, "bob", "fan")
    q1 = (await a.call("live.ask", session=sid, cid="q1", text="什么时候换电站到县城?"))["question"]
    assert q1["asker"] == "alice" and q1["author"]["badges"] == ["ES8"] and q1["state"] == "open"
    await b.call("live.vote", session=sid, id=q1["id"])
    await b.call("live.chat", session=sid, cid="l1", text="大家好")
    snap = await b.call("live.join", session=sid)
    assert snap["session"]["state"] == "live" and snap["room"] == "main" and snap["role"] is None
    assert [(q["id"], q["votes"]) for q in snap["questions"]] == [(q1["id"], 1)]
    assert snap["my_votes"] == [q1["id"]] and snap["viewers"] == 1 and snap["pinned"] is None
    assert [line["text"] for line in snap["lines"]] == ["大家好"]
    assert snap["hosts"] == ["ceo"] and snap["moderators"] == ["mod"]
    # an anonymous question: the audience does not see who asked, moderators do
    await mod.call("live.join", session=sid)
    fake_clock.advance(61)
    anon = await a.call("live.ask", session=sid, cid="q2", text="电池租用价格会降吗", anonymous=True)
    assert anon["question"]["asker"] == "alice"  # the asker sees their own
    seen = await b.next_push(kind="live.question")
    assert seen.d["asker"] is None and seen.d["author"] is None and seen.d["anonymous"] is True
    staff_view = await mod.next_push(kind="live.mod")
    assert staff_view.d["asker"] == "alice"
    # viewer counts are pushed at most once a second
    await pushes_of(b, "live.viewers")
    await (await clients(app, "carol", "fan")).call("live.join", session=sid)
    fake_clock.advance(1.0)
    counted = await pushes_of(b, "live.viewers")
    assert counted == [{"session": sid, "viewers": 3}]
    # leaving: no more pushes
    await b.call("live.leave", session=sid)
    fake_clock.advance(61)
    await a.call("live.ask", session=sid, cid="q3", text="第三个问题", anonymous=False)
    assert await pushes_of(b, "live.question") == []


async def test_a_vote_storm_gives_at_most_four_rank_pushes_a_second_and_the_last_is_exact(
    app: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    _host, _mod, sid = await people(app, clients)
    asker = await clients(app, "asker", "owner")
    viewer = await clients(app, "viewer", "fan")
    ids = []
    for i in range(3):
        fake_clock.advance(61)  # one open question per user a minute: different askers in effect
        q = await asker.call("live.ask", session=sid, cid=f"q{i}", text=f"问题 {i}")
        ids.append(q["question"]["id"])
    snap = await viewer.call("live.join", session=sid)
    votes = {q["id"]: q["votes"] for q in snap["questions"]}
    voters = [await clients(app, f"v{i}", "fan") for i in range(12)]
    # a burst from many sockets at once: every voter votes for two questions
    await asyncio.gather(*(
        v.call("live.vote", session=sid, id=qid) for i, v in enumerate(voters) for qid in (ids[i % 3], ids[(i + 1) % 3])
    ))
    # and some withdraw, concurrently with others voting again (once only counts)
    await asyncio.gather(
        *(v.call("live.vote", session=sid, id=ids[i % 3], on=False) for i, v in enumerate(voters[:4])),
        *(v.call("live.vote", session=sid, id=ids[(i + 1) % 3]) for i, v in enumerate(voters[4:])),
    )
    # within one second of server time, at most 4 ranking pushes
    got: list[dict[str, Any]] = []
    for _ in range(4):
        fake_clock.advance(0.25)
        got += await pushes_of(viewer, "live.rank", 0.2)
    assert 1 <= len(got) <= 4
    for push in got:
        for qid, n in push["votes"]:
            votes[qid] = n
    stored = dict(read_db(db_path, "SELECT id, votes FROM live_questions WHERE session = ?", (sid,)))
    counted = dict(read_db(db_path, "SELECT question, COUNT(*) FROM live_votes GROUP BY question"))
    assert votes == stored == counted
    # the snapshot agrees with what the pushes said
    again = await (await clients(app, "late", "fan")).call("live.join", session=sid)
    assert {q["id"]: q["votes"] for q in again["questions"]} == votes
    assert [q["id"] for q in again["questions"]] == sorted(votes, key=lambda q: (-votes[q], q))


async def test_approval_mode_hides_questions_until_a_moderator_approves_and_merge_keeps_votes(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    _host, mod, sid = await people(app, clients, approval=True)
    a = await clients(app, "alice", "owner")
    b = await clients(app, "bob", "owner")
    viewer = await clients(app, "viewer", "fan")
    await viewer.call("live.join", session=sid)
    await mod.call("live.join", session=sid)
    q1 = (await a.call("live.ask", session=sid, cid="a1", text="换电站什么时候到县城"))["question"]
    q2 = (await b.call("live.ask", session=sid, cid="b1", text="县城什么时候有换电站"))["question"]
    assert q1["state"] == q2["state"] == "pending"
    assert await pushes_of(viewer, "live.question") == []  # nothing shown to the audience yet
    queue = await mod.call("live.queue", session=sid)
    assert [q["id"] for q in queue["questions"]] == [q1["id"], q2["id"]]
    await viewer.fail("live.queue", "forbidden", session=sid)
    await viewer.fail("live.moderate", "forbidden", session=sid, id=q1["id"], action="approve")
    await viewer.fail("live.vote", "conflict", session=sid, id=q1["id"])  # pending: not votable yet
    for q in (q1, q2):
        assert (await mod.call("live.moderate", session=sid, id=q["id"], action="approve"))["changed"]
    shown = await pushes_of(viewer, "live.question")
    assert [(p["id"], p["state"]) for p in shown] == [(q1["id"], "open"), (q2["id"], "open")]
    voters = [await clients(app, f"v{i}", "fan") for i in range(3)]
    await voters[0].call("live.vote", session=sid, id=q1["id"])
    await voters[1].call("live.vote", session=sid, id=q2["id"])
    await voters[2].call("live.vote", session=sid, id=q1["id"])
    await voters[2].call("live.vote", session=sid, id=q2["id"])
    merged = await mod.call("live.merge", session=sid, id=q2["id"], into=q1["id"])
    # the union of voters, plus the duplicate's asker: v0, v1, v2, bob
    assert merged["into"]["votes"] == 4 and merged["question"]["state"] == "merged"
    assert (await mod.call("live.merge", session=sid, id=q2["id"], into=q1["id"]))["changed"] is False
    await mod.fail("live.merge", "bad_request", session=sid, id=q1["id"], into=q1["id"])
    # hide and unhide; reject
    await pushes_of(viewer, "live.question")
    await mod.call("live.moderate", session=sid, id=q1["id"], action="hide")
    hidden = await viewer.next_push(kind="live.question")
    assert hidden.d == {"id": q1["id"], "session": sid, "state": "hidden"}  # no text left for the audience
    await mod.call("live.moderate", session=sid, id=q1["id"], action="unhide")
    fake_clock.advance(61)
    q3 = (await a.call("live.ask", session=sid, cid="a2", text="spam"))["question"]
    assert (await mod.call("live.moderate", session=sid, id=q3["id"], action="reject"))["question"]["state"] == "rejected"


async def test_hosts_answer_pin_dismiss_and_reopen_and_the_audience_hears_it_at_once(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    host, mod, sid = await people(app, clients)
    a = await clients(app, "alice", "owner")
    viewer = await clients(app, "viewer", "fan")
    q = (await a.call("live.ask", session=sid, cid="a1", text="ET9 什么时候交付"))["question"]
    await viewer.call("live.join", session=sid)
    await mod.fail("live.answer", "forbidden", session=sid, id=q["id"], text="x")  # moderators do not answer
    pinned = await host.call("live.mark", session=sid, id=q["id"], action="pin")
    assert pinned["pinned"] is True
    assert (await viewer.next_push(kind="live.pin")).d == {"session": sid, "pinned": q["id"]}
    answered = await host.call("live.answer", session=sid, id=q["id"], text="明年第一季度")
    push = await viewer.next_push(kind="live.question")
    assert push.d["state"] == "answered" and push.d["answer"] == "明年第一季度" and push.d["answered_by"] == "ceo"
    assert answered["changed"] and not (await host.call("live.answer", session=sid, id=q["id"]))["changed"]
    snap = await (await clients(app, "late", "fan")).call("live.join", session=sid)
    assert [x["id"] for x in snap["answered"]] == [q["id"]] and snap["pinned"]["id"] == q["id"]
    assert snap["questions"] == []
    await host.call("live.mark", session=sid, id=q["id"], action="reopen")
    await host.call("live.mark", session=sid, id=q["id"], action="dismiss")
    await host.fail("live.vote", "conflict", session=sid, id=q["id"])  # dismissed: closed to votes
    await host.call("live.answer", session=sid, id=q["id"], live=True)
    row = (await mod.call("live.queue", session=sid, state="answered"))["questions"][0]
    assert row["answered_live"] is True and row["answer"] is None


async def test_asking_has_a_length_limit_an_interval_and_is_idempotent(
    app: Any, clients: Any, fake_clock: FakeClock
) -> None:
    _host, _mod, sid = await people(app, clients, ask_interval_s=120)
    a = await clients(app, "alice", "owner")
    await a.fail("live.ask", "too_long", session=sid, cid="x", text="长" * 301)
    await a.fail("live.ask", "forbidden", session=sid, cid="x", text="anon?", anonymous=True)
    first = await a.call("live.ask", session=sid, cid="a1", text="一")
    assert (await a.call("live.ask", session=sid, cid="a1", text="一"))["dup"] is True
    refused = await a.fail("live.ask", "rate_limited", session=sid, cid="a2", text="二")
    assert refused.retry_after_ms == 120_000
    await a.fail("live.vote", "forbidden", session=sid, id=first["question"]["id"])  # not for one's own
    fake_clock.advance(120)
    await a.call("live.ask", session=sid, cid="a2", text="二")
    await a.fail("live.ask", "not_found", session="l:77", cid="a3", text="三")
    await a.fail("live.ask", "not_found", session=sid, cid="a3", text="三", room="nowhere")


async def test_audience_chat_has_slow_mode_mutes_and_role_marks(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    _host, mod, sid = await people(app, clients, slow_s=10, rooms=["hefei"])
    a = await clients(app, "alice", "owner")
    viewer = await clients(app, "viewer", "fan")
    await viewer.call("live.join", session=sid, room="hefei")
    await a.call("live.join", session=sid, room="hefei")
    sent = await a.call("live.chat", session=sid, cid="c1", text="合肥的朋友们好")
    assert sent["conv"] == f"{sid}.hefei" and sent["dup"] is False
    line = await viewer.next_push(kind="msg")
    assert line.d["text"] == "合肥的朋友们好" and line.d["conv"] == f"{sid}.hefei"
    assert (await a.call("live.chat", session=sid, cid="c1", text="合肥的朋友们好"))["dup"] is True
    slow = await a.fail("live.chat", "rate_limited", session=sid, cid="c2", text="again")
    assert slow.retry_after_ms == 10_000
    # hosts and moderators are not slowed, and their lines say their role
    await mod.call("live.chat", session=sid, room="hefei", cid="m1", text="请文明发言")
    await mod.call("live.chat", session=sid, room="hefei", cid="m2", text="谢谢")
    marked = [p for p in await pushes_of(viewer, "msg") if p["from"] == "mod"]
    assert [m["author"]["live_role"] for m in marked] == ["moderator", "moderator"]
    # the main room does not hear the hefei room
    main = await clients(app, "mainviewer", "fan")
    await main.call("live.join", session=sid)
    fake_clock.advance(10)
    await a.call("live.chat", session=sid, cid="c3", text="hi")
    assert await pushes_of(main, "msg") == []
    await viewer.fail("live.mute", "forbidden", session=sid, user="alice", seconds=60)
    await mod.fail("live.mute", "forbidden", session=sid, user="ceo", seconds=60)
    muted = await mod.call("live.mute", session=sid, user="alice", seconds=60)
    assert muted["muted_until"] > 0
    fake_clock.advance(11)
    await a.fail("live.chat", "muted", session=sid, cid="c4", text="hi")
    await a.fail("live.ask", "muted", session=sid, cid="q", text="hi")
    fake_clock.advance(60)
    await a.call("live.chat", session=sid, cid="c5", text="back")
    await a.fail("live.chat", "too_long", session=sid, cid="c6", text="x" * 501)
    # viewers are not members: the room is in nobody's conversation list or sync
    convs = await a.call("convs")
    assert all(not c["conv"].startswith("l:") for c in convs["convs"])


async def test_polls_weighted_by_contribution_value_broken_down_by_identity_type(
    app: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    _host, mod, sid = await people(app, clients)
    owner = await clients(app, "olivia", "owner")
    fan = await clients(app, "fan1", "fan")
    viewer = await clients(app, "viewer", "deposit")
    await viewer.call("live.join", session=sid)
    # olivia has earned 99 cv: her weighted vote counts 1 + floor(sqrt(99)) = 10
    write_db(db_path, "INSERT INTO balances(user, currency, amount) VALUES ('olivia', 'cv', 99)")
    closes = fake_clock.wall_ms() + 600_000
    await owner.fail("poll.create", "forbidden", conv=sid, cid="p", question="?", options=["a", "b"],
                     closes_ts=closes)
    poll = await mod.call("poll.create", conv=sid, cid="p1", question="NIO Day 在哪个城市?",
                          options=["合肥", "成都", "上海"], closes_ts=closes, weighted=True)
    assert (await viewer.next_push(kind="poll")).d["poll"] == poll["poll"]
    pid = poll["poll"]
    assert (await owner.call("poll.vote", poll=pid, options=[0]))["weight"] == 10
    assert (await fan.call("poll.vote", poll=pid, options=[1]))["weight"] == 1
    await fan.fail("poll.vote", "bad_request", poll=pid, options=[0, 1])  # single choice
    await fan.fail("poll.vote", "bad_request", poll=pid, options=[7])
    assert (await fan.call("poll.vote", poll=pid, options=[0]))["weight"] == 1  # changed until it closes
    fake_clock.advance(1.0)
    results = (await viewer.next_push(kind="poll.results")).d["results"]
    assert results[0]["votes"] == 2 and results[0]["weight"] == 11 and results[1]["votes"] == 0
    assert results[0]["by_type"] == {"owner": {"votes": 1, "weight": 10}, "fan": {"votes": 1, "weight": 1}}
    closed = await mod.call("poll.close", poll=pid)
    assert closed["closed"] is True and closed["changed"] is True
    await fan.fail("poll.vote", "conflict", poll=pid, options=[2])
    got = await fan.call("poll.get", poll=pid)
    assert got["results"][0]["weight"] == 11
    await fan.fail("poll.get", "not_found", poll=pid + 100)


async def test_polls_in_circles_are_for_members_and_run_by_admins(app: Any, clients: Any, fake_clock: FakeClock) -> None:
    owner = await clients(app, "olivia", "owner")
    member = await clients(app, "mia", "owner")
    outsider = await clients(app, "otto", "fan")
    c = await owner.call("circle.create", name="ES8 车主", category="interest")
    conv = c["conv"]
    await member.call("circle.join", conv=conv)
    closes = fake_clock.wall_ms() + 60_000
    await member.fail("poll.create", "forbidden", conv=conv, cid="p", question="?", options=["a", "b"],
                      closes_ts=closes)
    poll = await owner.call("poll.create", conv=conv, cid="p1", question="周末活动?", options=["骑行", "露营"],
                            multi=True, closes_ts=closes)
    announced = [p for p in await pushes_of(member, "msg") if p.get("event", {}).get("type") == "poll"]
    assert [p["event"]["poll"] for p in announced] == [poll["poll"]]
    assert (await member.call("poll.vote", poll=poll["poll"], options=[0, 1]))["options"] == [0, 1]
    await outsider.fail("poll.vote", "not_member", poll=poll["poll"], options=[0])
    await outsider.fail("poll.get", "not_found", poll=poll["poll"])
    fake_clock.advance(61)
    await member.fail("poll.vote", "conflict", poll=poll["poll"], options=[0])  # closed by its time
    await owner.fail("poll.create", "bad_request", conv=conv, cid="p2", question="?", options=["a", "b"],
                     closes_ts=fake_clock.wall_ms() - 1)


async def test_points_events_attendance_and_the_archive(
    make_server: Any, clients: Any, fake_clock: FakeClock, db_path: Any
) -> None:
    app = await make_server(admin_port=0, clock=fake_clock, live_attend_s=60)
    host, _mod, sid = await people(app, clients)
    a = await clients(app, "alice", "owner")
    b = await clients(app, "bob", "fan")
    await b.call("live.join", session=sid)
    q = (await a.call("live.ask", session=sid, cid="a1", text="问题"))["question"]
    await b.call("live.vote", session=sid, id=q["id"])
    await b.call("live.vote", session=sid, id=q["id"], on=False)
    await b.call("live.vote", session=sid, id=q["id"])  # voting again earns the asker nothing more
    await host.call("live.answer", session=sid, id=q["id"], text="好问题")
    await a.fail("live.archive", "conflict", session=sid)  # not ended
    for _ in range(61):
        fake_clock.advance(1.0)
        await asyncio.sleep(0.005)
    await asyncio.sleep(0.2)
    events = read_db(db_path, "SELECT kind, user, data FROM events WHERE kind LIKE 'question.%' OR kind LIKE 'live.%'")
    kinds = sorted((k, u) for k, u, _ in events)
    assert kinds == [("live.attended", "bob"), ("question.answered", "alice"), ("question.asked", "alice"),
                     ("question.upvoted", "bob")]
    await host.call("live.state", session=sid, state="ended")
    arch = await a.call("live.archive", session=sid)
    assert [x["text"] for x in arch["answered"]] == ["问题"] and arch["answered"][0]["answer"] == "好问题"
    assert arch["figures"]["questions"] == 1 and arch["figures"]["votes"] == 1
    assert arch["figures"]["peak_viewers"] == 1 and arch["figures"]["attended"] == 1
    status, reply = await admin_call(app, "live.archive", {"session": sid})
    assert status == 200 and reply["ok"]["figures"] == arch["figures"]


async def test_a_viewer_that_stops_reading_is_dropped_and_rejoins_with_a_snapshot(
    make_server: Any, clients: Any, fake_clock: FakeClock
) -> None:
    from .test_slow_consumer import stalled_client

    app = await make_server(clock=fake_clock, out_buffer=64 * 1024, send_rate=1e5, send_burst=10**5,
                            request_rate=1e5, request_burst=10**5)
    _host, mod, sid = await people(app, clients)
    fast = await clients(app, "fast", "fan", encoding="json")
    await fast.call("live.join", session=sid)
    slow = await stalled_client(app, "slow")
    await slow.call("live.join", session=sid)
    slow._reader.cancel()  # stop reading: the server's buffer for it fills
    n = 3000  # lines of 1.5 KB: 13 MB in all, far beyond the socket buffers and the cap
    for i in range(0, n, 50):
        await asyncio.gather(*(mod.call("live.chat", session=sid, cid=f"m{k}", text=f"{k} " + "长" * 490)
                               for k in range(i, i + 50)))
        assert len(await pushes_of(fast, "msg", 0.05)) <= 50  # the reader keeps up
        if "slow" not in app.hub.users:
            break
    assert "slow" not in app.hub.users  # dropped as a slow consumer (4001), not grown without bound
    slow._reader = asyncio.get_running_loop().create_task(slow._read())
    assert await slow.closed() == 4001
    await slow.close()
    again = await clients(app, "slow", "owner")
    snap = await again.call("live.join", session=sid)
    assert len(snap["lines"]) == 50 and snap["lines"][-1]["seq"] > 50


async def test_hiding_the_pinned_question_unpins_it_for_everyone(app: Any, clients: Any) -> None:
    host, mod, sid = await people(app, clients)
    a = await clients(app, "alice", "owner")
    viewer = await clients(app, "viewer", "fan")
    q = (await a.call("live.ask", session=sid, cid="a1", text="?"))["question"]
    await viewer.call("live.join", session=sid)
    await host.call("live.mark", session=sid, id=q["id"], action="pin")
    assert (await viewer.next_push(kind="live.pin")).d["pinned"] == q["id"]
    await mod.call("live.moderate", session=sid, id=q["id"], action="hide")
    assert (await viewer.next_push(kind="live.pin")).d == {"session": sid, "pinned": None}
    snap = await (await clients(app, "late", "fan")).call("live.join", session=sid)
    assert snap["pinned"] is None and snap["session"]["pinned"] is None


async def test_a_moderator_removed_sees_no_more_askers_and_one_added_starts_to(app: Any, clients: Any) -> None:
    host, mod, sid = await people(app, clients, anonymous=True, ask_interval_s=0)
    newmod = await clients(app, "newmod", "staff")
    await mod.call("live.join", session=sid)
    await newmod.call("live.join", session=sid)
    await host.call("live.update", session=sid, moderators=["newmod"])
    a = await clients(app, "alice", "owner")
    await a.call("live.ask", session=sid, cid="q1", text="匿名问题", anonymous=True)
    await asyncio.sleep(0.2)
    old = mod.drain_pushes()
    assert [p.d["asker"] for p in old if p.type == "live.question"] == [None]
    assert [p for p in old if p.type == "live.mod"] == []
    assert [p["asker"] for p in await pushes_of(newmod, "live.mod")] == ["alice"]
    await mod.fail("live.queue", "forbidden", session=sid)
