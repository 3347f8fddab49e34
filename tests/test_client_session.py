"""The client session (pure): literal superline.v1 frames in, actions out, a float clock.

No sockets and no event loop: waiters are plain strings, ``now`` is a number, and every
test runs in milliseconds.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest
from contract_app import Answer, Confirm, Greet, Greeting, Notice, Price, api

from superline_zmq import SocketError
from superline_zmq.client_session import (
    COUNTERS,
    TRANSITIONS,
    Action,
    Ask,
    ClientSession,
    ClientStateError,
    Deliver,
    Reject,
    Report,
    Resolve,
    Send,
    State,
)

Session = ClientSession[str]
Actions = list[Action[str]]

ROOT = Path(__file__).resolve().parent.parent


def session(**options: Any) -> Session:
    return ClientSession(api, "user", **options)


def opened(**options: Any) -> Session:
    s = session(**options)
    s.connected(0.0)
    return s


def j(frame: Any) -> bytes:
    return json.dumps(frame).encode()


def sent(actions: Actions) -> list[dict[str, Any]]:
    """The frames among ``actions``, decoded (and nothing but frames)."""
    assert all(isinstance(a, Send) for a in actions), actions
    return [json.loads(a.data) for a in actions if isinstance(a, Send)]


def only(actions: Actions) -> Action[str]:
    assert len(actions) == 1, actions
    return actions[0]


def call(s: Session, name: str, input: Any = None, *, now: float = 0.0, timeout: float | None = None) -> int:
    i, _ = s.call(name, input, f"w{name}", now=now, timeout=timeout)
    return i


# ---------------------------------------------------------------- ids and calls
def test_one_id_counter_for_req_and_sub_from_1_never_reset() -> None:
    s = opened()
    i1, out1 = s.call("greet", Greet("a"), "w1", now=0.0, timeout=None)
    assert out1 == [Send(b'{"t":"req","i":1,"m":"greet","d":{"name":"a"}}')]
    ready, out2 = s.subscribe("prices", print, lambda: "ready")
    assert (ready, sent(out2)) == ("ready", [{"t": "sub", "i": 2, "c": "prices"}])
    i3, out3 = s.call("nothing", None, "w3", now=0.0, timeout=None)
    assert (i1, i3) == (1, 3) and sent(out3) == [{"t": "req", "i": 3, "m": "nothing", "d": None}]
    assert [r.waiter for r in s.disconnected() if isinstance(r, Reject)] == ["w1", "w3"]
    # the re-sent sub after reconnect takes the next id: nothing restarts at 1
    assert sent(s.connected(1.0)) == [{"t": "sub", "i": 4, "c": "prices"}]
    i5, _ = s.call("nothing", None, "w5", now=1.0, timeout=None)
    assert i5 == 5


def test_call_converts_a_dict_and_refuses_bad_names_and_inputs() -> None:
    s = opened()
    _, out = s.call("greet", {"name": "d"}, "w", now=0.0, timeout=None)
    assert sent(out) == [{"t": "req", "i": 1, "m": "greet", "d": {"name": "d"}}]
    _, out = s.call(api.shared.requests["nothing"], None, "w", now=0.0, timeout=None)
    assert sent(out)[0]["m"] == "nothing"
    for name, code in [("nope", "NOT_FOUND"), ("assign", "NOT_FOUND")]:  # unknown, another role's
        with pytest.raises(SocketError) as info:
            s.call(name, None, "w", now=0.0, timeout=None)
        assert (info.value.code, info.value.message) == (code, f"Unknown message: {name}")
    with pytest.raises(SocketError) as bad:
        s.call("greet", {"name": 5}, "w", now=0.0, timeout=None)
    assert bad.value.code == "VALIDATION" and "$.name" in bad.value.message
    assert s.statistics()["pending"] == 2


def test_res_resolves_with_the_typed_output_err_rejects() -> None:
    s = opened()
    call(s, "greet", Greet("a"))
    call(s, "nothing")
    call(s, "fail")
    assert s.receive(j({"t": "res", "i": 1, "d": {"text": "hi"}})) == [Resolve("wgreet", Greeting("hi"))]
    assert s.receive(j({"t": "res", "i": 2})) == [Resolve("wnothing", None)]  # no d means null
    (reject,) = s.receive(j({"t": "err", "i": 3, "code": "CONFLICT", "m": "taken", "d": {"n": 3}}))
    assert isinstance(reject, Reject) and reject.waiter == "wfail"
    assert (reject.error.code, reject.error.message, reject.error.data) == ("CONFLICT", "taken", {"n": 3})
    assert s.statistics()["calls_answered"] == 3 and s.statistics()["pending"] == 0


def test_res_that_fails_the_output_schema_rejects_validation() -> None:
    s = opened()
    call(s, "greet", Greet("a"))
    (reject,) = s.receive(j({"t": "res", "i": 1, "d": {"text": 5}}))
    assert isinstance(reject, Reject)
    assert reject.error.code == "VALIDATION" and "output of 'greet'" in reject.error.message
    assert reject.error.data == [{"message": "Expected `str`, got `int`", "path": ["text"]}]


def test_late_unknown_and_duplicate_replies_are_ignored_and_counted() -> None:
    s = opened()
    call(s, "block", timeout=1.0)
    call(s, "nothing")
    assert s.expire(1.0) != []
    assert s.cancel(2) and not s.cancel(2)
    assert s.receive(j({"t": "res", "i": 1})) == []  # after its timeout
    assert s.receive(j({"t": "err", "i": 2, "code": "X", "m": "x"})) == []  # after a cancel
    assert s.receive(j({"t": "res", "i": 99})) == []  # never asked
    assert s.receive(j({"t": "err", "code": "X", "m": "connection-level"})) == []
    stats = s.statistics()
    assert (stats["late_replies"], stats["connection_errors"], stats["calls_cancelled"]) == (3, 1, 1)


def test_a_reply_to_a_call_sent_on_an_earlier_connection_is_late() -> None:
    s = opened()
    call(s, "block")
    (reject,) = s.disconnected()
    assert isinstance(reject, Reject) and reject.error.code == "DISCONNECTED"
    s.connected(1.0)
    assert s.receive(j({"t": "res", "i": 1})) == []
    assert s.statistics()["late_replies"] == 1


# ---------------------------------------------------------------- offline queue
def test_calls_made_offline_queue_and_flush_in_id_order_then_subs() -> None:
    s = session()
    assert s.state is State.CONNECTING
    s.subscribe("prices", print, lambda: "r")  # no id yet: the sub is made at the open
    call(s, "greet", Greet("first"))
    call(s, "nothing")
    assert s.statistics()["queued"] == 2 and s.statistics()["frames_out"] == 0
    assert sent(s.connected(0.5)) == [
        {"t": "req", "i": 1, "m": "greet", "d": {"name": "first"}},
        {"t": "req", "i": 2, "m": "nothing", "d": None},
        {"t": "sub", "i": 3, "c": "prices"},
    ]
    stats = s.statistics()
    assert (stats["queued"], stats["pending"], stats["calls_sent"]) == (0, 2, 2)


def test_drop_rejects_sent_calls_and_keeps_queued_ones() -> None:
    s = opened()
    call(s, "block")
    (reject,) = s.disconnected()
    assert isinstance(reject, Reject) and reject.waiter == "wblock"
    assert (reject.error.code, reject.error.message) == ("DISCONNECTED", "Connection closed")
    assert s.state is State.RECONNECTING
    call(s, "nothing")  # offline: queued
    assert s.expire(100.0) == []  # no deadline
    assert sent(s.connected(1.0)) == [{"t": "req", "i": 2, "m": "nothing", "d": None}]
    assert s.receive(j({"t": "res", "i": 2})) == [Resolve("wnothing", None)]
    stats = s.statistics()
    assert (stats["opens"], stats["reconnects"], stats["disconnects"], stats["calls_disconnected"]) == (2, 1, 1, 1)


def test_the_offline_queue_is_bounded() -> None:
    s = session(max_queued=2)
    call(s, "nothing")
    call(s, "nothing")
    with pytest.raises(SocketError) as info:
        call(s, "greet", Greet("third"))
    assert info.value.code == "DISCONNECTED"
    assert "queue is full (2 calls waiting)" in info.value.message
    assert s.statistics()["calls_queue_full"] == 1 and s.statistics()["queued"] == 2
    assert len(sent(s.connected(0.0))) == 2
    for _ in range(5):  # online the bound does not apply
        call(s, "nothing")
    assert s.statistics()["pending"] == 7


def test_max_queued_zero_fails_offline_calls_at_once() -> None:
    s = session(max_queued=0)
    with pytest.raises(SocketError, match="queue is full"):
        call(s, "nothing")
    with pytest.raises(ValueError, match="max_queued"):
        session(max_queued=-1)


def test_drop_with_reconnect_off_rejects_everything_and_closes() -> None:
    s = opened(reconnect=False)
    call(s, "block")
    (reject,) = s.disconnected()
    assert isinstance(reject, Reject) and reject.error.message == "Connection closed"
    assert s.state is State.CLOSED
    with pytest.raises(SocketError) as info:
        call(s, "nothing")
    assert (info.value.code, info.value.message) == ("DISCONNECTED", "Client closed")


def test_close_rejects_sent_and_queued_calls_once() -> None:
    s = opened()
    call(s, "block")
    s.disconnected()
    call(s, "nothing")
    rejects = s.close()
    assert [(r.waiter, r.error.message) for r in rejects if isinstance(r, Reject)] == [("wnothing", "Client closed")]
    s2 = opened()
    call(s2, "block")
    assert [r.waiter for r in s2.close() if isinstance(r, Reject)] == ["wblock"]
    assert s2.close() == [] and s2.disconnected() == []  # idempotent, and a drop after it is no news


# ---------------------------------------------------------------- timeouts
def test_timeouts_fire_through_expire_and_next_deadline() -> None:
    s = opened()
    assert s.next_deadline() is None
    call(s, "block", now=10.0, timeout=2.0)
    call(s, "nothing", now=10.5, timeout=0.5)
    call(s, "greet", Greet("x"), now=10.5, timeout=None)  # never times out
    call(s, "fail", now=10.5, timeout=0)  # 0 disables too
    assert s.next_deadline() == 11.0
    assert s.expire(10.99) == []
    (r1,) = s.expire(11.0)
    assert isinstance(r1, Reject) and (r1.waiter, r1.error.code) == ("wnothing", "TIMEOUT")
    assert r1.error.message == "Request 'nothing' timed out"
    assert s.next_deadline() == 12.0
    (r2,) = s.expire(50.0)
    assert isinstance(r2, Reject) and r2.waiter == "wblock"
    assert s.next_deadline() is None and s.statistics()["calls_timed_out"] == 2
    assert s.statistics()["pending"] == 2


def test_a_queued_call_times_out_from_the_call_not_the_open() -> None:
    s = session()
    call(s, "block", now=0.0, timeout=1.0)
    call(s, "nothing", now=0.0, timeout=5.0)
    out = s.connected(2.0)  # past the first deadline: rejected, not sent
    assert isinstance(out[0], Reject) and out[0].error.code == "TIMEOUT" and out[0].waiter == "wblock"
    assert sent(out[1:]) == [{"t": "req", "i": 2, "m": "nothing", "d": None}]


# ---------------------------------------------------------------- topics
def test_sub_ack_resolves_ready_once_and_pub_is_delivered() -> None:
    s = opened()
    a: list[Any] = []
    b: list[Any] = []
    ready, out = s.subscribe("prices", a.append, lambda: "ready")
    assert ready == "ready" and sent(out) == [{"t": "sub", "i": 1, "c": "prices"}]
    ready2, out2 = s.subscribe("prices", b.append, lambda: "other")
    assert ready2 == "ready" and out2 == []  # a second local callback shares the sub
    # a pub may come just before the ack (PROTOCOL §6)
    pub = j({"t": "pub", "c": "prices", "d": {"symbol": "A", "price": 1.5}, "nd": "node-1"})
    assert s.receive(pub) == [Deliver((a.append, b.append), Price("A", 1.5))]
    assert s.receive(j({"t": "res", "i": 1, "d": None})) == [Resolve("ready", None)]
    assert s.receive(j({"t": "pub", "c": "alerts", "d": {"level": 1}})) == []  # not subscribed
    assert s.topics == {"prices"}


def test_topics_are_resubscribed_on_every_open_and_acks_forgotten_on_drop() -> None:
    s = opened()
    s.subscribe("prices", print, lambda: "ready")
    s.disconnected()  # the sub (id 1) was never acked
    assert s.statistics()["sub_acks"] == 0
    assert sent(s.connected(1.0)) == [{"t": "sub", "i": 2, "c": "prices"}]
    assert s.receive(j({"t": "res", "i": 1, "d": None})) == []  # the old ack: forgotten
    assert s.receive(j({"t": "res", "i": 2, "d": None})) == [Resolve("ready", None)]
    s.disconnected()
    assert sent(s.connected(2.0)) == [{"t": "sub", "i": 3, "c": "prices"}]
    assert s.receive(j({"t": "res", "i": 3, "d": None})) == []  # ready was settled already
    assert s.statistics()["subs_acked"] == 2


def test_sub_err_rejects_ready_and_drops_the_topic() -> None:
    s = opened()
    s.subscribe("secret", print, lambda: "ready")
    (reject,) = s.receive(j({"t": "err", "i": 1, "code": "FORBIDDEN", "m": "Subscribe denied: secret"}))
    assert isinstance(reject, Reject) and reject.waiter == "ready"
    assert (reject.error.code, reject.error.message) == ("FORBIDDEN", "Subscribe denied: secret")
    assert s.topics == frozenset()
    s.disconnected()
    assert s.connected(1.0) == []  # not retried
    ready, out = s.subscribe("secret", print, lambda: "fresh")
    assert ready == "fresh" and sent(out) == [{"t": "sub", "i": 2, "c": "secret"}]


def test_unsubscribe_sends_unsub_for_the_last_callback_only_when_open() -> None:
    s = opened()
    s.subscribe("prices", print, lambda: "r")
    s.subscribe("prices", repr, lambda: "r")
    assert s.unsubscribe("prices", print) == []
    assert s.unsubscribe("prices", print) == []  # twice: no-op
    assert sent(s.unsubscribe("prices", repr)) == [{"t": "unsub", "c": "prices"}]
    assert s.unsubscribe("nope", repr) == []
    s.subscribe("alerts", print, lambda: "r")
    s.disconnected()
    assert s.unsubscribe("alerts", print) == []  # offline: nothing to send, and not re-sent
    assert s.connected(1.0) == []


def test_an_old_ack_does_not_settle_a_topic_subscribed_again_since() -> None:
    s = opened()
    s.subscribe("prices", print, lambda: "first")
    s.unsubscribe("prices", print)
    ready, out = s.subscribe("prices", print, lambda: "second")
    assert ready == "second" and sent(out) == [{"t": "sub", "i": 2, "c": "prices"}]
    assert s.receive(j({"t": "res", "i": 1, "d": None})) == []
    assert s.receive(j({"t": "res", "i": 2, "d": None})) == [Resolve("second", None)]


def test_subscribe_to_a_topic_outside_the_surface_is_not_found() -> None:
    s = opened()
    for name in ("nope", "tasks"):
        with pytest.raises(SocketError) as info:
            s.subscribe(name, print, lambda: "r")
        assert (info.value.code, info.value.message) == ("NOT_FOUND", f"Unknown topic: {name}")
    assert s.topics == frozenset() and s.statistics()["frames_out"] == 0


# ---------------------------------------------------------------- events, env, ping
def test_events_are_decoded_and_delivered_invalid_ones_dropped_and_counted() -> None:
    s = opened()
    got: list[Any] = []
    assert s.on("notice", got.append) == "notice"
    assert s.receive(j({"t": "evt", "e": "notice", "d": {"text": "hi"}})) == [Deliver((got.append,), Notice("hi"))]
    assert s.receive(j({"t": "evt", "e": "notice", "d": {"text": 1}})) == []
    assert s.statistics()["bad_payloads"] == 1
    s.off("notice", got.append)
    s.off("notice", got.append)
    assert s.receive(j({"t": "evt", "e": "notice", "d": {"text": "hi"}})) == []
    with pytest.raises(ValueError, match="'prices' is not an event of role 'user'"):
        s.on("prices", print)


def test_ping_gets_pong_env_is_kept() -> None:
    s = opened()
    assert s.receive(b'{"t":"ping"}') == [Send(b'{"t":"pong"}')]
    assert s.receive(b'{"t":"pong"}') == []
    assert s.env is None
    assert s.receive(j({"t": "env", "d": {"projectId": "p1"}})) == []
    assert s.env == {"projectId": "p1"}
    s.receive(j({"t": "env", "d": None}))
    assert s.env is None
    assert s.statistics()["pings"] == 1


@pytest.mark.parametrize(
    "message",
    [b"not json", b"null", b'"hello"', b"[1,2]", b'{"t":"bogus"}', b'{"t":"res"}', b'{"i":1}', "{", b"\xff"],
)
def test_undecodable_frames_are_dropped_and_counted(message: bytes | str) -> None:
    s = opened()
    call(s, "nothing")
    assert s.receive(message) == []
    assert s.statistics()["bad_frames"] == 1
    assert s.receive('{"t":"res","i":1}') == [Resolve("wnothing", None)]  # text works as well as bytes


def test_frames_after_close_are_dropped() -> None:
    s = opened()
    s.close()
    assert s.receive(b'{"t":"ping"}') == []
    assert s.statistics()["frames_in"] == 1


# ---------------------------------------------------------------- server requests
def sreq(i: int, m: str, d: Any) -> bytes:
    return j({"t": "sreq", "i": i, "m": m, "d": d})


def ask_of(actions: Actions) -> Ask:
    action = only(actions)
    assert isinstance(action, Ask), action
    return action


def test_sreq_ok_is_answered_with_sres() -> None:
    s = opened()

    def confirm(inp: Confirm) -> Answer:
        return Answer(True)

    s.implement({"confirm": confirm})
    ask = ask_of(s.receive(sreq(3, "confirm", {"q": "ready?"})))
    assert (ask.id, ask.name, ask.handler, ask.value, ask.epoch) == (3, "confirm", confirm, Confirm("ready?"), 1)
    assert s.answer(ask, Answer(True)) == [Send(b'{"t":"sres","i":3,"d":{"ok":true}}')]
    s.implement({"poll": lambda _: 42})
    poll = ask_of(s.receive(sreq(4, "poll", None)))
    assert poll.value is None
    assert s.answer(poll, 42) == [Send(b'{"t":"sres","i":4,"d":42}')]
    assert s.statistics()["answers_sent"] == 2


def test_sreq_without_a_handler_is_not_found() -> None:
    s = opened()
    assert sent(s.receive(sreq(3, "confirm", {"q": "?"}))) == [
        {"t": "serr", "i": 3, "code": "NOT_FOUND", "m": "No handler for confirm"}
    ]
    assert sent(s.receive(sreq(4, "assign", {"ticket": "t"}))) == [  # another role's
        {"t": "serr", "i": 4, "code": "NOT_FOUND", "m": "No handler for assign"}
    ]
    with pytest.raises(ValueError, match="'assign' is not a server request of role 'user'"):
        s.implement({"assign": print})


def test_sreq_with_invalid_input_is_validation() -> None:
    s = opened()
    s.implement({"confirm": print})
    (frame,) = sent(s.receive(sreq(3, "confirm", {"q": 5})))
    assert (frame["t"], frame["i"], frame["code"]) == ("serr", 3, "VALIDATION")
    assert frame["d"] == [{"message": "Expected `str`, got `int`", "path": ["q"]}]


def test_handler_socket_error_is_answered_with_its_code_message_and_data() -> None:
    s = opened()
    s.implement({"confirm": print})
    ask = ask_of(s.receive(sreq(3, "confirm", {"q": "?"})))
    assert sent(s.fail(ask, SocketError("DECLINED", "user said no", {"why": "busy"}))) == [
        {"t": "serr", "i": 3, "code": "DECLINED", "m": "user said no", "d": {"why": "busy"}}
    ]
    # data that cannot be serialized is left out, and reported
    ask = ask_of(s.receive(sreq(4, "confirm", {"q": "?"})))
    report, send = s.fail(ask, SocketError("DECLINED", "no", object()))
    assert isinstance(send, Send) and json.loads(send.data) == {"t": "serr", "i": 4, "code": "DECLINED", "m": "no"}
    assert isinstance(report, Report)


def test_handler_crash_is_internal_and_reported() -> None:
    s = opened()
    s.implement({"confirm": print})
    ask = ask_of(s.receive(sreq(3, "confirm", {"q": "?"})))
    boom = RuntimeError("client secret")
    report, send = s.fail(ask, boom)
    assert report == Report(boom)
    assert sent([send]) == [{"t": "serr", "i": 3, "code": "INTERNAL", "m": "Internal client error"}]
    # an output that cannot be encoded is a crash too
    ask = ask_of(s.receive(sreq(4, "confirm", {"q": "?"})))
    report, send = s.answer(ask, object())
    assert isinstance(report, Report)
    assert sent([send]) == [{"t": "serr", "i": 4, "code": "INTERNAL", "m": "Internal client error"}]


def test_an_answer_after_the_connection_dropped_is_not_sent() -> None:
    s = opened()
    s.implement({"confirm": print})
    ask = ask_of(s.receive(sreq(3, "confirm", {"q": "?"})))
    s.disconnected()
    assert s.answer(ask, Answer(True)) == []
    s.connected(1.0)
    assert s.answer(ask, Answer(True)) == []  # another connection: the server would not know id 3
    assert s.statistics()["answers_dropped"] == 2


# ---------------------------------------------------------------- lifecycle and stats
def test_the_transition_table_covers_every_state_and_illegal_moves_raise() -> None:
    assert set(TRANSITIONS) == set(State)
    assert TRANSITIONS[State.CLOSED] == frozenset()
    s = session()
    with pytest.raises(ClientStateError, match="CONNECTING to RECONNECTING"):
        s.disconnected()  # nothing was open
    s.connected(0.0)
    with pytest.raises(ClientStateError, match="OPEN to OPEN"):
        s.connected(0.0)
    s.close()
    with pytest.raises(ClientStateError, match="CLOSED to OPEN"):
        s.connected(0.0)


def test_statistics_has_every_counter_and_the_gauges() -> None:
    s = session()
    stats = s.statistics()
    assert set(COUNTERS) <= set(stats)
    assert {k: stats[k] for k in ("queued", "pending", "subscriptions", "sub_acks", "connected")} == dict.fromkeys(
        ("queued", "pending", "subscriptions", "sub_acks", "connected"), 0
    )
    s.connected(0.0)
    s.subscribe("prices", print, lambda: "r")
    s.receive(b'{"t":"ping"}')
    stats = s.statistics()
    assert (stats["connected"], stats["subscriptions"], stats["sub_acks"]) == (1, 1, 1)
    assert (stats["frames_in"], stats["frames_out"]) == (1, 2)


def test_a_msgpack_session_speaks_msgpack() -> None:
    s = ClientSession[str](api, "user", serializer="msgpack")
    s.connected(0.0)
    _, (send,) = s.call("greet", Greet("mp"), "w", now=0.0, timeout=None)
    assert isinstance(send, Send)
    assert msgspec.msgpack.decode(send.data) == {"t": "req", "i": 1, "m": "greet", "d": {"name": "mp"}}
    reply = msgspec.msgpack.encode({"t": "res", "i": 1, "d": {"text": "hello mp"}})
    assert s.receive(reply) == [Resolve("w", Greeting("hello mp"))]
    assert s.receive('{"t":"ping"}') == [] and s.statistics()["bad_frames"] == 1  # a text frame


# ---------------------------------------------------------------- purity
PROBE = """
import importlib, importlib.util, json, sys, types
spec = importlib.util.find_spec("superline_zmq")
pkg = types.ModuleType("superline_zmq")
pkg.__path__ = list(spec.submodule_search_locations)
sys.modules["superline_zmq"] = pkg
importlib.import_module("superline_zmq.client_session")
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("asyncio", "websockets", "zmq"))))
"""


def _imports(module: str) -> set[str]:
    tree = ast.parse((ROOT / "superline_zmq" / f"{module}.py").read_text())
    names = {n.name for node in ast.walk(tree) if isinstance(node, ast.Import) for n in node.names}
    names |= {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    return {n.split(".")[0] for n in names}


def test_the_session_imports_no_io_no_event_loop_and_no_clock() -> None:
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []
    # logging imports time, so the clock is checked in the source: time only comes in as `now`
    assert _imports("client_session") & {"time", "datetime", "asyncio", "random"} == set()


def test_the_client_driver_reaches_the_network_only_through_the_transport() -> None:
    assert "websockets" not in _imports("client")
