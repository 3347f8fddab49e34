"""The tutorial of docs/index.md as one file: a notes service with a typed request and its errors.

Run it with ``python3 examples/notes.py``. Everything stays on 127.0.0.1. The ``--8<--``
comments mark the parts the tutorial shows, one step at a time.
"""

# --8<-- [start:contract]
import asyncio
from typing import Annotated

import msgspec

from superline_zmq import Conn, SocketError, connect, create_socket_server, define_contract, request


class Note(msgspec.Struct):
    text: Annotated[str, msgspec.Meta(min_length=1, max_length=200)]


class Saved(msgspec.Struct):
    id: int


SAVE = request(Note, Saved)  # Request[Note, Saved]: calls with SAVE return Saved

api = define_contract(
    shared={"client_to_server": {"save": SAVE}},
    roles={"user": {}},
)
# --8<-- [end:contract]

# --8<-- [start:handler]
notes: list[str] = []


async def save(input: Note, ctx: None, conn: Conn) -> Saved:
    if input.text in notes:
        raise SocketError("DUPLICATE", "this note is already saved", {"id": notes.index(input.text) + 1})
    notes.append(input.text)
    return Saved(id=len(notes))


# --8<-- [end:handler]


# --8<-- [start:server]
async def main() -> None:
    srv = create_socket_server(api)
    srv.implement({"shared": {"save": save}})
    async with srv:  # closes the server when the block ends
        await srv.listen("127.0.0.1", 0)  # port 0: any free port; a real server names its own
        print("listening on", srv.url)
        # --8<-- [end:server]
        # --8<-- [start:call]
        client = await connect(api, srv.url, role="user")
        saved = await client.call(SAVE, Note("buy milk"))
        print("saved as", saved.id)  # saved as 1
        # --8<-- [end:call]
        # --8<-- [start:errors]
        for note in (Note("buy milk"), Note("")):
            try:
                await client.call(SAVE, note)
            except SocketError as exc:
                print(exc.code, exc.message, exc.data)
        await client.close()


asyncio.run(main())
# --8<-- [end:errors]
