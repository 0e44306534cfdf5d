"""A real third-party client for the wire-format tests (gateway/tests/wire_formats.rs):
Python `websockets` (permessage-deflate offered by default, RFC 7692 checked on
its side) and `msgpack`. Runs one scenario against a gateway and prints one JSON
object with what it saw; the Rust test asserts on it. Every wait is bounded."""

import asyncio
import base64
import json
import sys

import msgpack
from websockets.asyncio.client import connect

STEP = 5


async def recv_json(ws):
    while True:
        frame = await asyncio.wait_for(ws.recv(), STEP)
        if isinstance(frame, str):
            return json.loads(frame)
        return {"unexpected_binary": len(frame)}


async def recv_msgpack(ws):
    frame = await asyncio.wait_for(ws.recv(), STEP)
    if isinstance(frame, str):
        return {"unexpected_text": frame}
    return msgpack.unpackb(frame, raw=False)


async def deflate(url):
    """Two clients, one offering compression (the default) and one not: a 4 KiB
    publish reaches both intact; what each negotiated is reported."""
    out = {}
    async with connect(url, open_timeout=STEP) as zipped, connect(
        url, compression=None, open_timeout=STEP
    ) as plain:
        out["extensions"] = zipped.response.headers.get("Sec-WebSocket-Extensions")
        out["plain_extensions"] = plain.response.headers.get("Sec-WebSocket-Extensions")
        for ws in (zipped, plain):
            assert (await recv_json(ws))["type"] == "welcome"
            await ws.send(json.dumps({"type": "join", "room": "py", "id": 1}))
            assert (await recv_json(ws))["type"] == "ok"
        text = "roomcast " * 455
        await zipped.send(json.dumps({"type": "publish", "room": "py", "data": {"text": text}}))
        got = [await recv_json(zipped), await recv_json(plain)]
        out["intact"] = [m["type"] == "message" and m["data"]["text"] == text for m in got]
        # A small frame (under the threshold) after the large one.
        await plain.send(json.dumps({"type": "publish", "room": "py", "data": "hi"}))
        got = [await recv_json(zipped), await recv_json(plain)]
        out["small"] = [m["data"] for m in got]
    return out


async def msgpack_client(url):
    """A roomcast.v1.msgpack client beside a JSON one: binary data both ways."""
    out = {}
    async with connect(url, subprotocols=["roomcast.v1.msgpack"], open_timeout=STEP) as mp, connect(
        url, subprotocols=["roomcast.v1"], open_timeout=STEP
    ) as js:
        out["subprotocol"] = mp.subprotocol
        out["extensions"] = mp.response.headers.get("Sec-WebSocket-Extensions")
        out["welcome"] = (await recv_msgpack(mp))["type"]
        assert (await recv_json(js))["type"] == "welcome"
        await mp.send(msgpack.packb({"type": "join", "room": "mp", "id": 1}))
        out["join"] = await recv_msgpack(mp)
        await js.send(json.dumps({"type": "join", "room": "mp", "id": 1}))
        assert (await recv_json(js))["type"] == "ok"
        blob = bytes(range(256)) * 8
        await mp.send(msgpack.packb({"type": "publish", "room": "mp", "data": {"blob": blob, "n": 1.5}}))
        mine = await recv_msgpack(mp)
        theirs = await recv_json(js)
        out["msgpack_gets_bytes"] = mine["data"]["blob"] == blob and mine["data"]["n"] == 1.5
        out["json_gets_base64"] = base64.b64decode(theirs["data"]["blob"]) == blob
        await js.send(json.dumps({"type": "publish", "room": "mp", "data": {"from_json": [1, "two", None]}}))
        out["from_json"] = (await recv_msgpack(mp))["data"]
        await recv_json(js)
        await mp.send(b"\xc1")
        out["bad"] = await recv_msgpack(mp)
    return out


async def msgpack_history(url):
    """Binary data in a history room (namespace `chat`) as Python's msgpack
    reads it: live, replayed by a join with `since`, and in a history answer."""
    out = {}
    room = "chat:py"
    blob = bytes(range(255, -1, -1)) * 4
    async with connect(url, subprotocols=["roomcast.v1.msgpack"], open_timeout=STEP) as mp:
        assert (await recv_msgpack(mp))["type"] == "welcome"
        await mp.send(msgpack.packb({"type": "join", "room": room, "id": 1}))
        joined = await recv_msgpack(mp)
        await mp.send(msgpack.packb({"type": "publish", "room": room, "id": 2, "data": {"blob": blob}}))
        frames = [await recv_msgpack(mp), await recv_msgpack(mp)]
        live = next(f for f in frames if f["type"] == "message")
        out["live"] = live["data"]["blob"] == blob and isinstance(live["data"]["blob"], bytes)
        await mp.send(msgpack.packb({"type": "history", "room": room, "id": 3}))
        kept = (await recv_msgpack(mp))["messages"]
        out["history"] = [m["data"]["blob"] == blob for m in kept]
    async with connect(url, subprotocols=["roomcast.v1.msgpack"], open_timeout=STEP) as back:
        assert (await recv_msgpack(back))["type"] == "welcome"
        since = {"offset": joined["offset"], "epoch": joined["epoch"]}
        await back.send(msgpack.packb({"type": "join", "room": room, "id": 4, "since": since}))
        replay = await recv_msgpack(back)
        out["replayed"] = replay["type"] == "message" and replay["data"]["blob"] == blob
        out["recovered"] = (await recv_msgpack(back))["recovered"]
    return out


SCENARIOS = {"deflate": deflate, "msgpack": msgpack_client, "msgpack_history": msgpack_history}

if __name__ == "__main__":
    scenario, url = sys.argv[1], sys.argv[2]
    print(json.dumps(asyncio.run(asyncio.wait_for(SCENARIOS[scenario](url), 30))))
