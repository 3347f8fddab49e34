"""define_contract: effective surfaces, accepted schema kinds, and ContractError messages."""

from __future__ import annotations

import dataclasses
from typing import Any, TypedDict

import msgspec
import pytest

from superline_zmq import (
    Contract,
    ContractError,
    SuperlineError,
    define_contract,
    event,
    request,
    server_request,
    topic,
)


class In(msgspec.Struct):
    x: int


class Out(msgspec.Struct):
    y: str


class TDInput(TypedDict):
    name: str
    age: int


@dataclasses.dataclass
class DCOutput:
    ok: bool
    note: str = ""


def _contract() -> tuple[Contract, dict[str, Any]]:
    entries = {
        "ping": request(None, str),
        "notice": event(Out),
        "prices": topic(float),
        "confirm": server_request(In, Out),
        "userOnly": request(In, Out),
        "userTopic": topic(int),
        "agentOnly": request(None, None),
        "agentAsk": server_request(None, bool),
    }
    api = define_contract(
        shared={
            "client_to_server": {"ping": entries["ping"]},
            "server_to_client": {
                "notice": entries["notice"],
                "prices": entries["prices"],
                "confirm": entries["confirm"],
            },
        },
        roles={
            "user": {
                "client_to_server": {"userOnly": entries["userOnly"]},
                "server_to_client": {"userTopic": entries["userTopic"]},
            },
            "agent": {
                "client_to_server": {"agentOnly": entries["agentOnly"]},
                "server_to_client": {"agentAsk": entries["agentAsk"]},
            },
        },
    )
    return api, entries


def test_effective_surface_is_shared_union_own() -> None:
    api, e = _contract()
    assert api.roles == ("user", "agent")
    user = api.surface("user")
    agent = api.surface("agent")
    assert dict(user.requests) == {"ping": e["ping"], "userOnly": e["userOnly"]}
    assert dict(agent.requests) == {"ping": e["ping"], "agentOnly": e["agentOnly"]}
    assert dict(user.events) == {"notice": e["notice"]}
    assert dict(user.topics) == {"prices": e["prices"], "userTopic": e["userTopic"]}
    assert dict(agent.topics) == {"prices": e["prices"]}
    assert dict(user.server_requests) == {"confirm": e["confirm"]}
    assert dict(agent.server_requests) == {"confirm": e["confirm"], "agentAsk": e["agentAsk"]}
    # topic namespaces: shared topics live under "shared", a role's own under the role
    assert dict(user.topic_ns) == {"prices": "shared", "userTopic": "user"}
    # the own blocks keep the role-only entries
    assert set(api.own["user"].requests) == {"userOnly"}
    assert set(api.shared.requests) == {"ping"}


def test_surface_of_unknown_role_is_key_error() -> None:
    api, _ = _contract()
    with pytest.raises(KeyError):
        api.surface("admin")


def test_name_of() -> None:
    api, e = _contract()
    for name, entry in e.items():
        assert api.name_of(entry) == name
    assert api.name_of("anything") == "anything"  # a string passes through
    with pytest.raises(ValueError, match="not an entry of this contract"):
        api.name_of(request(None, None))


def test_accepts_typeddict_dataclass_and_builtin_schemas() -> None:
    api = define_contract(
        roles={
            "r": {
                "client_to_server": {
                    "td": request(TDInput, DCOutput),
                    "builtins": request(list[int], dict[str, float]),
                    "optional": request(int | None, str),
                    "none": request(None, None),
                },
                "server_to_client": {"ev": event(TDInput), "tp": topic(DCOutput)},
            }
        }
    )
    reqs = api.surface("r").requests
    assert reqs["td"].input is TDInput and reqs["td"].output is DCOutput
    assert reqs["builtins"].input == list[int]


def test_contract_error_is_a_value_error() -> None:
    assert issubclass(ContractError, ValueError)
    assert issubclass(ContractError, SuperlineError)


def _raises(match: str, **kwargs: Any) -> ContractError:
    with pytest.raises(ContractError, match=match) as info:
        define_contract(**kwargs)
    assert isinstance(info.value, ValueError)
    return info.value


def test_duplicate_name_across_shared_and_role() -> None:
    err = _raises(
        r"roles\.user: 'dup' is already declared in shared",
        shared={"client_to_server": {"dup": request(None, None)}},
        roles={"user": {"client_to_server": {"dup": request(None, None)}}},
    )
    assert "dup" in str(err)


def test_duplicate_name_across_directions_shared_and_role() -> None:
    # an event in shared and a topic with the same name in a role
    _raises(
        r"roles\.user: 'news' is already declared in shared",
        shared={"server_to_client": {"news": event(str)}},
        roles={"user": {"server_to_client": {"news": topic(str)}}},
    )


def test_request_without_output() -> None:
    _raises(
        r"user\.client_to_server\.save: a request needs an output schema",
        roles={"user": {"client_to_server": {"save": request(In)}}},
    )


def test_server_request_without_output() -> None:
    _raises(
        r"shared\.server_to_client\.confirm: a server request needs an output schema",
        shared={"server_to_client": {"confirm": server_request(In)}},
        roles={"user": {}},
    )


@pytest.mark.parametrize(
    "bad",
    [object(), lambda: None, In(1)],
    ids=["object", "lambda", "struct-instance"],
)
def test_non_schema_type_is_rejected(bad: Any) -> None:
    err = _raises(
        r"user\.client_to_server\.save: input .* is not a schema msgspec can validate",
        roles={"user": {"client_to_server": {"save": request(bad, None)}}},
    )
    assert isinstance(err.__cause__, TypeError)


def test_non_schema_output_and_payload_are_rejected() -> None:
    _raises(
        r"user\.client_to_server\.save: output",
        roles={"user": {"client_to_server": {"save": request(None, object())}}},
    )
    _raises(
        r"shared\.server_to_client\.ev: payload",
        shared={"server_to_client": {"ev": event(object())}},
        roles={"user": {}},
    )


def test_plain_class_schema_is_rejected() -> None:
    # A plain (non-Struct, non-dataclass) class: msgspec builds a decoder for it, but no
    # payload can ever validate against it without a dec_hook, so every call would fail
    # VALIDATION at run time. The contract should refuse it up front.
    class Plain:
        def __init__(self, x: int) -> None:
            self.x = x

    _raises(
        r"user\.client_to_server\.save: input",
        roles={"user": {"client_to_server": {"save": request(Plain, None)}}},
    )


def test_unknown_block_key() -> None:
    err = _raises(
        r"user: unknown key\(s\) \['client_to_sever'\]",
        roles={"user": {"client_to_sever": {"x": request(None, None)}}},
    )
    assert "client_to_server" in str(err)


def test_unknown_shared_block_key() -> None:
    _raises(r"shared: unknown key\(s\) \['events'\]", shared={"events": {}}, roles={"user": {}})


def test_event_in_client_to_server_is_wrong_direction() -> None:
    _raises(
        r"user\.client_to_server\.hello: client_to_server takes request\(\.\.\.\) entries",
        roles={"user": {"client_to_server": {"hello": event(str)}}},
    )


def test_request_in_server_to_client_is_wrong_direction() -> None:
    _raises(
        r"shared\.server_to_client\.ask: server_to_client takes event\(\.\.\.\), topic\(\.\.\.\) or "
        r"server_request\(\.\.\.\)",
        shared={"server_to_client": {"ask": request(None, None)}},
        roles={"user": {}},
    )


def test_server_request_in_client_to_server_is_wrong_direction() -> None:
    _raises(
        r"user\.client_to_server\.ask: client_to_server takes request",
        roles={"user": {"client_to_server": {"ask": server_request(None, None)}}},
    )


def test_entry_object_reused_under_two_names() -> None:
    shared_req = request(None, None)
    err = _raises(
        r"user\.client_to_server\.b: the same entry object is also declared as user\.client_to_server\.a",
        roles={"user": {"client_to_server": {"a": shared_req, "b": shared_req}}},
    )
    assert "make one each" in str(err)


def test_entry_object_reused_across_roles() -> None:
    t = topic(int)
    _raises(
        r"agent\.server_to_client\.t: the same entry object is also declared as user\.server_to_client\.t",
        roles={"user": {"server_to_client": {"t": t}}, "agent": {"server_to_client": {"t": t}}},
    )


def test_non_entry_value_is_rejected() -> None:
    _raises(
        r"user\.client_to_server\.x: expected request/event/topic/server_request",
        roles={"user": {"client_to_server": {"x": In}}},
    )


def test_needs_a_role_and_valid_role_names() -> None:
    _raises("at least one role", shared={"client_to_server": {"a": request(None, None)}})
    _raises("role name 'shared' is not allowed", roles={"shared": {}})
    _raises("role name '' is not allowed", roles={"": {}})


def test_data_schema_per_role_only() -> None:
    api = define_contract(roles={"user": {"data": DCOutput}})
    assert api.surface("user").data is DCOutput
    _raises("shared.data: per-connection data is declared per role", shared={"data": In}, roles={"user": {}})
    _raises(r"user\.data: data", roles={"user": {"data": object()}})
