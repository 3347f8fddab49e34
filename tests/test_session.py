"""The server session (pure): literal frames and a float clock in, decisions and bytes out.

No sockets and no event loop: every protocol rule of one connection is checked here in
microseconds; the driver tests (test_server_*) check that the I/O around it is carried out.
"""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest

from superline_zmq import define_contract, event, request, server_request, topic, wire
from superline_zmq.errors import SocketError
from superline_zmq.requests import PendingTable
from superline_zmq.session import (
    TRANSITIONS,
    Answered,
    Backpressure,
    BadFrame,
    Call,
    Reply,
    Route,
    ServerSession,
    ServerStats,
    SessionState,
    SessionStateError,
    Subscribe,
    Unsubscribe,
)


class Text(msgspec.Struct):
    text: str


class Ok(msgspec.Struct):
    ok: bool


api = define_contract(
    shared={
        "client_to_server": {"echo": request(Text, Text), "nohandler": request(None, None)},
        "server_to_client": {"notice": event(Text), "ticks": topic(Text), "confirm": server_request(Text, Ok)},
    },
    roles={
        "user": {"server_to_client": {"secret": topic(Text)}},
        "admin": {"client_to_server": {"kick": request(Text, None)}},
    },
)
JSON = wire.JsonSerializer()


def handler(value: Any, ctx: Any, conn: Any) -> Any:
    return value


def make(
    role: str = "user",
    now: float = 100.0,
    table: PendingTable[Any] | None = None,
    *,
    serializer: wire.Serializer = JSON,
    opened: bool = True,
) -> ServerSession:
    routes = {"echo": Route(serializer.decoder(Text), handler)}
    if role == "admin":
        routes["kick"] = Route(serializer.decoder(Text), handler)
    s = ServerSession(
        role=role,
        surface=api.surface(role),
        routes=routes,
        serializer=serializer,
        frame_decoder=serializer.decoder(wire.ClientFrame),
        decoders=wire.DecoderCache(serializer),
        table=table if table is not None else PendingTable(),
        stats=ServerStats(),
        now=now,
    )
    if opened:
        s.opened()
    return s


def frame(b: bytes) -> Any:
    return json.loads(b)


def stats(s: ServerSession) -> ServerStats:
    return s._stats


# ---------------------------------------------------------------- lifecycle
def test_a_session_greets_with_env_and_reads_nothing_until_opened() -> None:
    s = make(now=1.0, opened=False)
    assert s.state is SessionState.OPENING and s.writable
    assert frame(s.greeting()) == {"t": "env", "d": None}
    assert s.receive(b'{"t":"req","i":1,"m":"echo","d":{"text":"x"}}', 2.0) is None
    assert stats(s).frames_in == 0


def test_illegal_moves_raise() -> None:
    s = make()
    with pytest.raises(SessionStateError, match="OPEN to OPEN"):
        s.opened()
    assert s.closing() and not s.closing()  # a second close request is a no-op, not an error
    s.closed(1000)
    with pytest.raises(SessionStateError, match="CLOSED to OPEN"):
        s.opened()
    assert s.closed(1000) == []  # idempotent


def test_the_transition_table_is_total_and_closed_is_final() -> None:
    assert set(TRANSITIONS) == set(SessionState)
    assert TRANSITIONS[SessionState.CLOSED] == frozenset()
    assert all(SessionState.CLOSED in moves for st, moves in TRANSITIONS.items() if st is not SessionState.CLOSED)


def test_a_closing_session_takes_no_new_work() -> None:
    s = make()
    s.closing()
    assert not s.writable
    assert s.receive(b'{"t":"req","i":1,"m":"echo","d":{"text":"x"}}', 1.0) is None


# ---------------------------------------------------------------- dispatch
def test_a_known_request_becomes_a_call() -> None:
    s = make()
    ev = s.receive(b'{"t":"req","i":7,"m":"echo","d":{"text":"hi"}}', 1.0)
    assert isinstance(ev, Call) and ev.frame.i == 7 and ev.frame.m == "echo"
    assert ev.route.decoder.decode(bytes(ev.frame.d)) == Text("hi")  # type: ignore[arg-type]
    assert stats(s).requests == 1 and stats(s).frames_in == 1


@pytest.mark.parametrize(
    ("msg", "reply"),
    [
        # another role's request and a declared-but-unimplemented one are both NOT_FOUND, never FORBIDDEN
        (
            b'{"t":"req","i":2,"m":"kick","d":{"text":"x"}}',
            {"t": "err", "i": 2, "code": "NOT_FOUND", "m": "Unknown message: kick"},
        ),
        (
            b'{"t":"req","i":3,"m":"nohandler"}',
            {"t": "err", "i": 3, "code": "NOT_FOUND", "m": "Unknown message: nohandler"},
        ),
        (b'{"t":"sub","i":4,"c":"nope"}', {"t": "err", "i": 4, "code": "NOT_FOUND", "m": "Unknown topic: nope"}),
    ],
)
def test_unknown_names_are_not_found_before_anything_runs(msg: bytes, reply: dict[str, Any]) -> None:
    ev = make().receive(msg, 1.0)
    assert isinstance(ev, Reply) and frame(ev.frame) == reply


def test_the_admin_role_sees_its_own_request() -> None:
    assert isinstance(make("admin").receive(b'{"t":"req","i":1,"m":"kick","d":{"text":"x"}}', 1.0), Call)


@pytest.mark.parametrize(
    ("msg", "code"),
    [
        (b"not json", None),
        (b"null", None),
        (b"[1,2]", None),
        (b'{"t":"what","i":5}', "BAD_REQUEST"),
        (b'{"t":"req","i":6}', "BAD_REQUEST"),  # no m
        (b'{"t":"req","i":"x","m":"echo"}', None),  # i not an int: no id to answer
        (b'{"t":"csub","i":9,"c":"docs"}', "NOT_FOUND"),  # collections are not supported
    ],
)
def test_bad_frames_are_counted_and_answered_when_they_carry_an_id(msg: bytes, code: str | None) -> None:
    s = make()
    ev = s.receive(msg, 1.0)
    assert isinstance(ev, BadFrame)
    assert stats(s).bad_frames == 1
    if code is None:
        assert ev.reply is None
    else:
        assert ev.reply is not None and frame(ev.reply)["code"] == code


def test_a_text_frame_under_msgpack_is_a_bad_frame_not_a_crash() -> None:
    s = make(serializer=wire.MsgpackSerializer())
    assert isinstance(s.receive('{"t":"pong"}', 1.0), BadFrame)


def test_a_client_ping_is_ignored() -> None:
    assert make().receive(b'{"t":"ping"}', 1.0) is None


# ---------------------------------------------------------------- the sub/unsub race
def test_subscribe_then_authorized_joins() -> None:
    s = make()
    sub = s.receive(b'{"t":"sub","i":3,"c":"ticks"}', 1.0)
    assert sub == Subscribe(3, "ticks", "t:shared:ticks", 0)
    assert s.authorized(sub) == "join"
    assert s.topics == {"ticks"}
    assert frame(s.result(3, None)) == {"t": "res", "i": 3, "d": None}


def test_a_role_topic_rides_its_roles_channel() -> None:
    sub = make().receive(b'{"t":"sub","i":1,"c":"secret"}', 1.0)
    assert isinstance(sub, Subscribe) and sub.channel == "t:user:secret"


def test_an_unsub_during_authorization_wins_the_race() -> None:
    s = make()
    sub = s.receive(b'{"t":"sub","i":3,"c":"ticks"}', 1.0)
    assert isinstance(sub, Subscribe)
    assert s.receive(b'{"t":"unsub","c":"ticks"}', 1.1) is None  # not joined yet: nothing to leave
    assert s.authorized(sub) == "ack"  # acked, not joined
    assert s.topics == set()


def test_a_sub_after_an_unsub_is_a_fresh_ticket() -> None:
    s = make()
    s.receive(b'{"t":"unsub","c":"ticks"}', 1.0)
    sub = s.receive(b'{"t":"sub","i":4,"c":"ticks"}', 1.1)
    assert isinstance(sub, Subscribe) and s.authorized(sub) == "join"


def test_unsub_of_a_joined_topic_leaves_its_channel() -> None:
    s = make()
    sub = s.receive(b'{"t":"sub","i":3,"c":"ticks"}', 1.0)
    assert isinstance(sub, Subscribe)
    s.authorized(sub)
    assert s.receive(b'{"t":"unsub","c":"ticks"}', 2.0) == Unsubscribe("ticks", "t:shared:ticks")
    assert s.receive(b'{"t":"unsub","c":"ticks"}', 2.0) is None  # already gone


def test_an_authorization_that_ends_after_close_is_dropped() -> None:
    s = make()
    sub = s.receive(b'{"t":"sub","i":3,"c":"ticks"}', 1.0)
    assert isinstance(sub, Subscribe)
    s.closing()
    assert s.authorized(sub) == "gone"


# ---------------------------------------------------------------- server requests and late replies
def test_a_server_request_is_answered_and_validated() -> None:
    s = make()
    entry, data = s.server_request("confirm", Text("ready?"), waiter="w", deadline=130.0)
    assert frame(data) == {"t": "sreq", "i": entry.id, "m": "confirm", "d": {"text": "ready?"}}
    ev = s.receive(json.dumps({"t": "sres", "i": entry.id, "d": {"ok": True}}).encode(), 2.0)
    assert isinstance(ev, Answered) and ev.entry is entry and ev.value == Ok(True) and ev.error is None


def test_an_answer_that_does_not_fit_the_schema_is_validation() -> None:
    s = make()
    entry, _ = s.server_request("confirm", Text("?"), waiter="w", deadline=None)
    ev = s.receive(json.dumps({"t": "sres", "i": entry.id, "d": {"ok": "yes"}}).encode(), 2.0)
    assert isinstance(ev, Answered) and isinstance(ev.error, SocketError)
    assert ev.error.code == "VALIDATION" and "answer to 'confirm'" in ev.error.message


def test_a_client_error_answer_keeps_code_message_and_data() -> None:
    s = make()
    entry, _ = s.server_request("confirm", Text("?"), waiter="w", deadline=None)
    ev = s.receive(json.dumps({"t": "serr", "i": entry.id, "code": "NOPE", "m": "no", "d": [1]}).encode(), 2.0)
    assert isinstance(ev, Answered) and ev.error is not None
    assert (ev.error.code, ev.error.message, ev.error.data) == ("NOPE", "no", [1])


def test_late_unknown_and_misdirected_answers_are_counted_and_dropped() -> None:
    table: PendingTable[Any] = PendingTable()
    asked, other = make(table=table), make(table=table)
    entry, _ = asked.server_request("confirm", Text("?"), waiter="w", deadline=10.0)
    # another connection answering someone else's request
    assert other.receive(json.dumps({"t": "sres", "i": entry.id, "d": {"ok": True}}).encode(), 1.0) is None
    assert stats(other).late_replies == 1
    # the request times out (the driver expires the table), then the answer arrives
    assert table.expire(10.0) == [entry]
    assert asked.receive(json.dumps({"t": "sres", "i": entry.id, "d": {"ok": True}}).encode(), 11.0) is None
    assert stats(asked).late_replies == 1
    assert asked.receive(b'{"t":"serr","i":999,"code":"X","m":""}', 11.0) is None  # never asked
    assert stats(asked).late_replies == 2


def test_closing_hands_back_the_requests_still_waiting() -> None:
    table: PendingTable[Any] = PendingTable()
    s, other = make(table=table), make(table=table)
    e1, _ = s.server_request("confirm", Text("1"), waiter="a", deadline=None)
    e2, _ = s.server_request("confirm", Text("2"), waiter="b", deadline=None)
    kept, _ = other.server_request("confirm", Text("3"), waiter="c", deadline=None)
    assert s.closed(1006) == [e1, e2]
    assert s.close_code == 1006 and list(table) == [kept]
    with pytest.raises(SocketError, match="DISCONNECTED"):
        s.server_request("confirm", Text("?"), waiter="d", deadline=None)


def test_a_forwarded_request_sends_raw_input_and_hands_back_the_raw_answer() -> None:
    s = make()
    entry, data = s.server_request("confirm", b'{"text":"raw"}', waiter="w", deadline=None, raw=True)
    assert frame(data)["d"] == {"text": "raw"}
    ev = s.receive(json.dumps({"t": "sres", "i": entry.id, "d": {"ok": "not validated here"}}).encode(), 1.0)
    assert isinstance(ev, Answered) and json.loads(bytes(ev.value)) == {"ok": "not validated here"}


def test_events_and_requests_outside_the_role_are_refused() -> None:
    s = make()
    assert frame(s.event("notice", Text("x"))) == {"t": "evt", "e": "notice", "d": {"text": "x"}}
    with pytest.raises(ValueError, match="not in role 'user'"):
        s.event("nope", None)
    with pytest.raises(ValueError, match="not in role 'user'"):
        s.server_request("nope", None, waiter="w", deadline=None)


def test_error_frames_leave_out_data_that_cannot_be_encoded() -> None:
    s = make()
    data, dropped = s.error_reporting(4, "BAD", "m", object())
    assert frame(data) == {"t": "err", "i": 4, "code": "BAD", "m": "m"} and isinstance(dropped, TypeError)


# ---------------------------------------------------------------- heartbeat
def test_heartbeat_pings_then_reaps_after_max_missed_and_a_pong_resets() -> None:
    s = make()
    assert s.heartbeat(10.0, 2) == "ping" and s.last_ping_at == 10.0
    assert s.heartbeat(20.0, 2) == "ping" and s.missed == 2
    assert s.receive(b'{"t":"pong"}', 21.0) is None
    assert s.missed == 0 and s.last_pong_at == 21.0
    assert s.heartbeat(30.0, 2) == "ping"
    assert s.heartbeat(40.0, 2) == "ping"
    assert s.heartbeat(50.0, 2) == "reap"
    assert stats(s).reaped == 1


def test_without_max_missed_nobody_is_reaped() -> None:
    s = make()
    assert all(s.heartbeat(float(t), None) == "ping" for t in range(100))


def test_a_closing_connection_is_skipped() -> None:
    s = make()
    s.closing()
    assert s.heartbeat(1.0, 1) == "skip"


# ---------------------------------------------------------------- backpressure
@pytest.mark.parametrize(
    ("policy", "buffered", "size", "decision"),
    [
        ("close", 0, 100, "send"),
        ("close", 900, 100, "send"),  # exactly at the limit
        ("close", 901, 100, "close"),
        ("drop", 901, 100, "drop"),
        ("drop", 0, 5000, "drop"),  # one frame bigger than the whole budget
    ],
)
def test_backpressure_decides_per_frame(policy: Any, buffered: int, size: int, decision: str) -> None:
    assert Backpressure(max_buffered_bytes=1000, on_exceed=policy).decide(buffered, size) == decision
