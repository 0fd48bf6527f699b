"""The push stream under attack: hostile clients against a real node, while real proxies stream.

Every test attacks node n1 of a real 3-node cluster from its own loopback address (127.0.0.2 and
up) while two real proxy processes stream from n1 over 127.0.0.1. After each attack the node must
be up with its config revision and hash unchanged, and both proxies must still be on the *same*
stream (``connected_since`` unchanged) and follow the next write with the node's hash.

Limits come from node.toml's ``[push]`` table (docs/contracts.md §4a), set low here so the
tests are quick: hello within 1 s, frames up to 64 KiB, 300 streams per address, 600 in total.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from cluster.auth import mint_token
from gateway.codec import encode
from gateway.protocol import (
    Ack,
    ErrorFrame,
    Hello,
    Resync,
    SnapshotAssembler,
    SnapshotChunk,
    Status,
    decode_frame,
    encode_frame,
)
from tests.support.dataplane import DataPlaneEnv, ProxyProc
from tests.support.http import request, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

HELLO_TIMEOUT, MAX_FRAME, PER_ADDRESS, TOTAL, STATUS_INTERVAL = 1.0, 64 * 1024, 300, 600, 1.0
PUSH_TOML = (
    f"[push]\nhello_timeout = {HELLO_TIMEOUT}\nmax_frame = {MAX_FRAME}\nmax_streams = {TOTAL}\n"
    f"max_streams_per_address = {PER_ADDRESS}\nstatus_interval = {STATUS_INTERVAL}\n"
)
_source = itertools.count(2)  # 127.0.0.2, .3, ...: every test attacks from an address of its own
_ids = itertools.count(1)


class World:
    """The cluster, the proxies pinned to n1, and what an undisturbed n1 looks like."""

    def __init__(self, env: DataPlaneEnv, proxies: list[ProxyProc]) -> None:
        self.env, self.proxies = env, proxies
        self.node = env.cluster.nodes[0]
        self.url = self.node.url.replace("http://", "ws://") + "/v1/stream"
        self.token = env.cluster.proxy_token

    def config(self) -> tuple[int, str]:
        data = self.env.cluster.api(self.node, "GET", "/v1/config").json()
        return int(data["revision"]), str(data["hash"])

    def streams(self) -> dict[str, Any]:
        """connected_since of every legitimate proxy streaming from n1."""
        items = self.env.cluster.api(self.node, "GET", "/v1/proxies/local").json()["items"]
        wanted = {p.id for p in self.proxies}
        return {e["id"]: e["connected_since"] for e in items if e["id"] in wanted and e["connected"]}

    def write(self) -> int:
        rid = f"probe{next(_ids)}"
        return self.env.put("routes", rid, {"paths": [f"/{rid}"], "upstream": "ua"})

    def assert_unaffected(self, before: tuple[int, str], streams: dict[str, Any]) -> None:
        assert self.node.alive, self.node.log_tail()
        assert self.config() == before, "the attack changed the config"
        assert self.streams() == streams, "a proxy's stream from n1 was interrupted"
        revision = self.write()
        digest = self.config()[1]
        for p in self.proxies:
            st = p.wait_revision(revision)
            assert st["hash"] == digest and st["connected_cp"].startswith(self.node.url.replace("http", "ws"))
        assert self.streams() == streams


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    base = tmp_path_factory.mktemp("push-attack")
    with DataPlaneEnv(base, proxies=0, upstreams=("a",), cp_toml=PUSH_TOML) as env:
        node = env.cluster.nodes[0]
        proxies = [ProxyProc(f"p{i}", [node.url], env.token_file, base / f"p{i}") for i in (1, 2)]
        try:
            for p in proxies:
                p.start()
            env.put("upstreams", "ua", env.upstream_spec("a"))
            w = World(env, proxies)
            revision = w.write()
            for p in proxies:
                p.wait_revision(revision)
            wait_for(lambda: len(w.streams()) == 2, 15, "both proxies streaming from n1")
            yield w
        finally:
            for p in proxies:
                p.stop()


@pytest.fixture
def baseline(world: World) -> Iterator[tuple[tuple[int, str], dict[str, Any]]]:
    state = (world.config(), world.streams())
    assert len(state[1]) == 2
    yield state
    world.assert_unaffected(*state)


# ---- a hostile client ---------------------------------------------------------------------------


@asynccontextmanager
async def client(source: str, *, limit: int = 100) -> AsyncIterator[aiohttp.ClientSession]:
    connector = aiohttp.TCPConnector(local_addr=(source, 0), limit=limit, force_close=True)
    async with aiohttp.ClientSession(connector=connector) as http:
        yield http


async def connect(http: aiohttp.ClientSession, w: World, token: str | None = None) -> aiohttp.ClientWebSocketResponse:
    return await http.ws_connect(w.url, headers={"Authorization": f"Bearer {token or w.token}"},
                                 heartbeat=None, autoping=True, max_msg_size=64 * 1024 * 1024)  # fmt: skip


async def hello(ws: aiohttp.ClientWebSocketResponse, revision: int = 0, hash: str = "", pid: str = "attacker") -> None:
    await ws.send_bytes(encode_frame(Hello(pid, "attack/1", revision, hash, None)))


async def ended(ws: aiohttp.ClientWebSocketResponse, timeout: float = 10.0) -> tuple[list[Any], int | None]:
    """Read until the node closes: (frames received, close code)."""
    frames: list[Any] = []
    async with asyncio.timeout(timeout):
        while True:
            msg = await ws.receive()
            if msg.type == aiohttp.WSMsgType.BINARY:
                frames.append(decode_frame(msg.data))
            elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED):
                return frames, ws.close_code


async def refused_with(ws: aiohttp.ClientWebSocketResponse, code: str, text: str, close: int = 4002) -> None:
    frames, close_code = await ended(ws)
    errors = [f for f in frames if isinstance(f, ErrorFrame)]
    assert errors and errors[-1].code == code and text in errors[-1].message, frames
    assert close_code == close


async def frames_for(ws: aiohttp.ClientWebSocketResponse, seconds: float) -> list[Any]:
    """Every frame the node sends within ``seconds`` (the stream must stay open)."""
    out: list[Any] = []
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        try:
            msg = await ws.receive(timeout=left)
        except TimeoutError:
            break
        assert msg.type == aiohttp.WSMsgType.BINARY, f"stream ended: {msg.type} {ws.close_code}"
        out.append(decode_frame(msg.data))
    return out


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def source() -> str:
    return f"127.0.0.{next(_source)}"


# ---- the attacks --------------------------------------------------------------------------------


def test_malformed_msgpack_ends_only_that_session(world: World, baseline: Any) -> None:
    async def attack() -> None:
        async with client(source()) as http:
            ws = await connect(http, world)
            await ws.send_bytes(b"\xc1\xc1 not msgpack")  # instead of hello
            await refused_with(ws, "bad_frame", "invalid hello")
            ws = await connect(http, world)
            await hello(ws, *world.config())
            await ws.send_bytes(b"\x92\x01")  # truncated array, after hello
            await refused_with(ws, "bad_frame", "not msgpack")
            ws = await connect(http, world)
            await ws.send_str("hello?")  # a text message is not a frame either
            await refused_with(ws, "bad_frame", "binary hello")

    run(attack())


@pytest.mark.parametrize(
    ("first", "then", "names"),
    [
        ([1, 2, 3], None, "a frame must be a map"),
        ({"t": "hello", "proto": 1, "proxy_id": "x", "software": "s", "revision": "7", "hash": ""}, None,
         "hello.revision"),
        ({"t": "hello", "proto": 1, "proxy_id": ["x"], "software": "s", "revision": 0, "hash": ""}, None,
         "hello.proxy_id"),
        ({"t": "hello", "proto": 1, "proxy_id": "x" * 10_000, "software": "s", "revision": 0, "hash": ""}, None,
         "at most 256"),
        ({"t": "hello", "proto": 1, "software": "s", "revision": 0, "hash": ""}, None, "hello.proxy_id"),
        ({"t": "hello", "proto": 1, "proxy_id": "p1\nERROR forged log line", "software": "s", "revision": 0,
          "hash": ""}, None, "control characters"),
        (None, {"t": "ack", "revision": -5}, "ack.revision"),
        (None, {"t": "ack", "revision": 2**64 - 1}, "ack.revision"),
        (None, {"t": "nack", "revision": 1, "error": 5}, "nack.error"),
        (None, {"t": "resync", "revision": None}, "resync.revision"),
        (None, {"t": "mode", "mode": "pwned"}, "mode.mode"),
        (None, {"t": "hello", "proto": 1, "proxy_id": "x", "software": 1, "revision": 0, "hash": ""},
         "hello.software"),
    ],
)
def test_valid_msgpack_of_the_wrong_shape_is_refused_naming_the_field(
    world: World, baseline: Any, first: Any, then: Any, names: str
) -> None:
    async def attack() -> None:
        async with client(source()) as http:
            ws = await connect(http, world)
            if first is not None:
                await ws.send_bytes(encode(first))
            else:
                await hello(ws, *world.config())
                await ws.send_bytes(encode(then))
            await refused_with(ws, "bad_frame", names)

    run(attack())


def test_unknown_frame_types_are_skipped_and_the_session_goes_on(world: World, baseline: Any) -> None:
    async def attack() -> None:
        async with client(source()) as http:
            ws = await connect(http, world)
            await hello(ws, *world.config())
            for bogus in ({"t": "bogus", "revision": 1}, {"t": None}, {"revision": 3},
                          {"t": "delta", "base": 0, "revision": 1, "ops": [], "hash": "h"},  # a CP->DP type
                          {"t": "error", "code": "x", "message": "y"}):  # fmt: skip
                await ws.send_bytes(encode(bogus))
            await ws.send_bytes(encode_frame(Resync(0)))  # the session still works: a snapshot comes
            got = await frames_for(ws, 3 * STATUS_INTERVAL)
            chunks = [f for f in got if isinstance(f, SnapshotChunk)]
            assert chunks and chunks[0].revision == world.config()[0], got
            assert any(isinstance(f, Status) for f in got)
            await ws.close()

    run(attack())


def test_a_frame_over_the_size_limit_closes_with_1009(world: World, baseline: Any) -> None:
    async def attack() -> None:
        async with client(source()) as http:
            ws = await connect(http, world)
            await ws.send_bytes(b"\x00" * (MAX_FRAME + 1))  # as the first frame
            _, code = await ended(ws)
            assert code == 1009
            ws = await connect(http, world)
            await hello(ws, *world.config())
            await ws.send_bytes(encode({"t": "nack", "revision": 1, "error": "e" * (4 * MAX_FRAME)}))
            _, code = await ended(ws)
            assert code == 1009

    run(attack())


def test_a_client_that_never_says_hello_is_closed_after_the_timeout(world: World, baseline: Any) -> None:
    async def attack() -> float:
        async with client(source()) as http:
            ws = await connect(http, world)
            started = time.monotonic()
            await refused_with(ws, "no_hello", f"no hello within {HELLO_TIMEOUT:g}s")
            return time.monotonic() - started

    waited = run(attack())
    assert waited >= HELLO_TIMEOUT * 0.9  # not before the timeout (no upper bound: CPU contention)


def test_hello_from_the_future_gets_status_only(world: World, baseline: Any) -> None:
    async def attack() -> list[Any]:
        async with client(source()) as http:
            ws = await connect(http, world)
            await hello(ws, world.config()[0] + 1_000_000, "f" * 64, pid="future")
            got = await frames_for(ws, 2.5 * STATUS_INTERVAL)
            await ws.close()
            return got

    got = run(attack())
    assert got and all(isinstance(f, Status) for f in got), got  # no config frame: it looks elsewhere
    assert all(f.revision == world.config()[0] for f in got)


def test_hello_with_a_hash_that_does_not_match_gets_the_real_snapshot(world: World, baseline: Any) -> None:
    async def attack() -> Any:
        async with client(source()) as http:
            ws = await connect(http, world)
            revision, _ = world.config()
            await hello(ws, revision, "0" * 64, pid="liar")
            assembler, joined = SnapshotAssembler(), None
            for f in await frames_for(ws, 3 * STATUS_INTERVAL):
                if isinstance(f, SnapshotChunk):
                    joined = assembler.add(f) or joined
            await ws.close()
            return joined

    joined = run(attack())
    assert joined is not None, "no snapshot for a proxy that claims a different config"
    state = joined.state()
    assert (state.revision, state.hash()) == world.config()


def test_acks_for_revisions_never_sent_move_nothing(world: World, baseline: Any) -> None:
    def entry(pid: str) -> dict[str, Any] | None:
        items = world.env.cluster.api(world.node, "GET", "/v1/proxies/local").json()["items"]
        return next((e for e in items if e["id"] == pid and e["connected"]), None)

    async def attack() -> None:
        head = world.config()[0]
        async with client(source()) as http:
            ws = await connect(http, world)
            await hello(ws, 0, "", pid="acker")  # gets a snapshot of head
            got = await frames_for(ws, STATUS_INTERVAL)
            assert any(isinstance(f, SnapshotChunk) for f in got)
            for rev in (head + 1, head + 500, 2**63 - 1):
                await ws.send_bytes(encode_frame(Ack(rev)))
            await frames_for(ws, 0.5)
            e = await asyncio.to_thread(entry, "acker")
            assert e is not None and e["revision"] == 0 and e["last_ack_at"] is None, e
            await ws.send_bytes(encode_frame(Ack(head)))  # the one it was sent does count
            await asyncio.to_thread(wait_for, lambda: (entry("acker") or {}).get("revision") == head, 10, "ack")
            await ws.close()

    run(attack())


def test_a_resync_flood_gets_at_most_three_snapshots(world: World, baseline: Any) -> None:
    async def attack() -> list[Any]:
        async with client(source()) as http:
            ws = await connect(http, world)
            await hello(ws, 0, "", pid="flooder")
            for _ in range(500):
                await ws.send_bytes(encode_frame(Resync(0)))
            got = await frames_for(ws, 3 * STATUS_INTERVAL)
            await ws.close()
            return got

    got = run(attack())
    starts = [f for f in got if isinstance(f, SnapshotChunk) and f.chunk == 0]
    assert 1 <= len(starts) <= 3, len(starts)  # 500 resyncs do not make 500 snapshots
    assert any(isinstance(f, Status) for f in got)  # and the stream stays up


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_two_thousand_idle_connections_from_one_address_are_limited(world: World) -> None:
    """Per address and in total, refused with a JSON reason; memory per idle stream measured."""
    assert world.node.proc is not None
    pid = world.node.proc.pid
    before_config, before_streams = world.config(), world.streams()
    revision, digest = before_config
    wait_for(lambda: len(world.streams()) == 2, 10, "only the two proxies stream from n1")
    a, b = source(), source()

    async def open_many(http: aiohttp.ClientSession, n: int, say_hello: bool) -> tuple[list[Any], list[Any]]:
        handshakes = asyncio.Semaphore(50)  # the node's listen backlog is finite; the streams stay open

        async def one(i: int) -> Any:
            async with handshakes:
                try:
                    ws = await connect(http, world)
                except aiohttp.WSServerHandshakeError as exc:
                    return exc
            if say_hello:  # an idle, fully set up stream (session + sender task)
                await hello(ws, revision, digest, pid=f"idle-{i}")
            return ws

        results = await asyncio.gather(*(one(i) for i in range(n)))
        return ([r for r in results if isinstance(r, aiohttp.ClientWebSocketResponse)],
                [r for r in results if not isinstance(r, aiohttp.ClientWebSocketResponse)])  # fmt: skip

    async def refusal(http: aiohttp.ClientSession, body: bool = False) -> tuple[int, Any, str | None]:
        with pytest.raises(aiohttp.WSServerHandshakeError) as err:
            await connect(http, world)
        if not body:
            return err.value.status, None, None
        r = await asyncio.to_thread(request, "GET", world.node.url + "/v1/stream", headers={
            "Authorization": f"Bearer {world.token}", "Connection": "Upgrade", "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        })  # fmt: skip  (from 127.0.0.1: only the total limit applies to it)
        assert r.status == 503, r  # full: the total limit applies to every address
        return err.value.status, r.json(), r.headers.get("retry-after")

    async def attack() -> dict[str, Any]:
        before = rss_kib(pid)
        async with client(a, limit=0) as http_a, client(b, limit=0) as http_b:
            open_a, refused_a = await open_many(http_a, 2000, say_hello=True)
            await asyncio.sleep(0.5)  # let the node settle before reading its RSS
            during = rss_kib(pid)
            status_a, _, _ = await refusal(http_a)
            # With hello (else hello_timeout would free slots while later ones still connect).
            open_b, refused_b = await open_many(http_b, 400, say_hello=True)
            status_b, body, retry = await refusal(http_b, body=True)
            facts = {
                "open_a": len(open_a), "refused_a": sorted({e.status for e in refused_a}), "status_a": status_a,
                "open_b": len(open_b), "refused_b": sorted({e.status for e in refused_b}), "status_b": status_b,
                "total_refusal": body, "retry_after": retry, "rss_before_kib": before, "rss_during_kib": during,
                "per_stream_kib": round((during - before) / max(1, len(open_a)), 1),
            }
            # While n1 is full, the legitimate proxies' streams keep flowing.
            await asyncio.to_thread(world.assert_unaffected, before_config, before_streams)
            for ws in open_a + open_b:
                await ws.close()
        return facts

    facts = run(attack())
    print(f"\npush stream limits under 2000 idle connections from one address: {facts}")
    assert facts["open_a"] == PER_ADDRESS and facts["refused_a"] == [429] and facts["status_a"] == 429, facts
    assert facts["open_b"] == TOTAL - PER_ADDRESS - 2 and facts["refused_b"] == [503], facts  # 2: the proxies
    assert facts["status_b"] == 503 and facts["retry_after"], facts
    error = facts["total_refusal"]["error"]
    assert error["code"] == "too_many_streams" and f"limit {TOTAL}" in error["message"], facts
    assert facts["per_stream_kib"] < 1024, facts  # generous: catches a leak, not a regression

    async def again() -> None:  # the slots were given back
        async with client(a) as http:
            for _ in range(3):
                ws = await connect(http, world)
                await hello(ws, revision, digest, pid="again")
                await ws.close()

    wait_for(lambda: len(world.streams()) == 2 and world.streams() == before_streams, 20, "attack streams gone")
    run(again())
    assert world.streams() == before_streams


def test_tokens_of_the_wrong_role_are_refused(world: World, baseline: Any) -> None:
    cluster = world.env.cluster
    for token, status in ((cluster.token, 403), (cluster.viewer_token, 403), ("not-a-jwt", 401), ("", 401),
                          (mint_token("some-other-secret-0123456789", "proxy", "evil", 60), 401)):  # fmt: skip
        r = request("GET", world.node.url + "/v1/stream", headers={
            "Authorization": f"Bearer {token}", "Connection": "Upgrade", "Upgrade": "websocket",
            "Sec-WebSocket-Version": "13", "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ==",
        })  # fmt: skip
        assert r.status == status, (token[:10], r)
        assert set(r.json()["error"]) >= {"code", "message"}


def test_a_token_revoked_mid_stream_ends_that_stream_only(world: World, baseline: Any) -> None:
    cluster = world.env.cluster
    token = mint_token(cluster.secret, "proxy", "soon-revoked", 3600)

    async def attack() -> None:
        async with client(source()) as http:
            ws = await connect(http, world, token)
            await hello(ws, *world.config(), pid="revoked")
            assert any(isinstance(f, Status) for f in await frames_for(ws, 1.5 * STATUS_INTERVAL))
            r = await asyncio.to_thread(cluster.api, world.node, "POST", "/v1/tokens/revoke", {"token": token})
            assert r.status == 200, r
            await refused_with(ws, "unauthorized", "revoked")
            with pytest.raises(aiohttp.WSServerHandshakeError) as err:
                await connect(http, world, token)
            assert err.value.status == 401

    run(attack())


def test_the_node_logs_why_it_ended_a_stream_and_never_a_secret(world: World, baseline: Any) -> None:
    async def attack() -> None:
        async with client(source()) as http:
            await refused_with(await connect(http, world), "no_hello", "no hello")
            ws = await connect(http, world)
            await ws.send_bytes(encode({"t": "hello", "proto": 1}))
            await refused_with(ws, "bad_frame", "hello.proxy_id")

    run(attack())
    log = (world.node.dir / "node.log").read_text(errors="replace")
    assert "no hello within" in log and "invalid hello: hello.proxy_id: missing required field" in log
    for secret in (world.env.cluster.secret, world.token, world.env.cluster.token):
        assert secret not in log
