"""The session state table (chatd/edge/state.py): which transitions exist, and
what each state lets the session do."""

from __future__ import annotations

import itertools

import pytest

from chatd.edge.state import TRANSITIONS, BadTransition, Event, SessionState, State

S, E = State, Event

ALLOWED = {
    (S.CONNECTING, E.AUTH): S.AUTHENTICATING,
    (S.AUTHENTICATING, E.AUTHENTICATED): S.OPEN,
    (S.CONNECTING, E.CLOSE): S.CLOSING,
    (S.AUTHENTICATING, E.CLOSE): S.CLOSING,
    (S.OPEN, E.CLOSE): S.CLOSING,
    (S.CONNECTING, E.GONE): S.CLOSED,
    (S.AUTHENTICATING, E.GONE): S.CLOSED,
    (S.OPEN, E.GONE): S.CLOSED,
    (S.CLOSING, E.GONE): S.CLOSED,
    (S.CLOSED, E.GONE): S.CLOSED,
}

# the shortest way from CONNECTING to each state
PATHS: dict[State, tuple[Event, ...]] = {
    S.CONNECTING: (),
    S.AUTHENTICATING: (E.AUTH,),
    S.OPEN: (E.AUTH, E.AUTHENTICATED),
    S.CLOSING: (E.CLOSE,),
    S.CLOSED: (E.GONE,),
}


def at(state: State) -> SessionState:
    s = SessionState()
    for event in PATHS[state]:
        s.to(event)
    assert s.state is state
    return s


def test_the_table_is_exactly_the_documented_one() -> None:
    assert TRANSITIONS == ALLOWED


@pytest.mark.parametrize(("start", "event"), list(ALLOWED), ids=lambda x: x.value)
def test_every_allowed_transition(start: State, event: Event) -> None:
    s = at(start)
    assert s.may(event)
    assert s.to(event) is ALLOWED[(start, event)]
    assert s.state is ALLOWED[(start, event)]


DISALLOWED = [pair for pair in itertools.product(State, Event) if pair not in ALLOWED]


@pytest.mark.parametrize(("start", "event"), DISALLOWED, ids=lambda x: x.value)
def test_every_other_transition_raises_and_changes_nothing(start: State, event: Event) -> None:
    s = at(start)
    assert not s.may(event)
    with pytest.raises(BadTransition, match=f"{event.value} in state {start.value}"):
        s.to(event)
    assert s.state is start


def test_disallowed_includes_the_obvious_bugs() -> None:
    # a second auth, an auth after open, reopening a closing session
    assert (S.AUTHENTICATING, E.AUTH) in DISALLOWED
    assert (S.OPEN, E.AUTH) in DISALLOWED
    assert (S.CLOSING, E.AUTHENTICATED) in DISALLOWED
    assert (S.CONNECTING, E.AUTHENTICATED) in DISALLOWED
    assert (S.CLOSING, E.CLOSE) in DISALLOWED


def test_a_new_session_takes_input_and_serves_nothing() -> None:
    s = SessionState()
    assert s.state is S.CONNECTING
    assert s.taking_input and not s.serving and not s.opened


def test_authenticating_takes_input_but_does_not_serve() -> None:
    s = at(S.AUTHENTICATING)
    assert s.taking_input and not s.serving and not s.opened


def test_open_takes_input_and_serves() -> None:
    s = at(S.OPEN)
    assert s.taking_input and s.serving and s.opened


def test_closing_after_open_still_serves_what_was_accepted() -> None:
    s = at(S.OPEN)
    s.to(E.CLOSE)
    assert s.state is S.CLOSING
    assert not s.taking_input
    assert s.serving and s.opened


@pytest.mark.parametrize("start", [S.CONNECTING, S.AUTHENTICATING])
def test_closing_before_open_serves_nothing(start: State) -> None:
    s = at(start)
    s.to(E.CLOSE)
    assert s.state is S.CLOSING
    assert not s.taking_input and not s.serving and not s.opened


@pytest.mark.parametrize("start", [S.CONNECTING, S.AUTHENTICATING, S.OPEN, S.CLOSING])
def test_closed_takes_nothing_and_serves_nothing(start: State) -> None:
    s = at(start)
    s.to(E.GONE)
    assert s.state is S.CLOSED
    assert not s.taking_input and not s.serving
    # gone again (the socket's close and a slow consumer both report it) is harmless
    assert s.to(E.GONE) is S.CLOSED


def test_opened_stays_true_once_reached() -> None:
    s = at(S.OPEN)
    s.to(E.CLOSE)
    s.to(E.GONE)
    assert s.opened
