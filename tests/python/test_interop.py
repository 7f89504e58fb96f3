"""Interop tests: the Python Yjs client (pycrdt + pycrdt-websocket) against a real ymesh node.

The node is the binary at $YMESH_BIN (default: target/debug/ymesh in the repository), started
with `serve --host 127.0.0.1 --port 0` in a temporary directory; the tests read the port from
its "listening on http://HOST:PORT" line. Clients are pycrdt's `Provider` over the
`HttpxWebsocket` channel of pycrdt-websocket, on an httpx-ws connection: the stock y-websocket
protocol, nothing ymesh-specific.

Every wait polls with a deadline; nothing sleeps for a fixed time. Run with tests/python/run.sh.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import AsyncIterator, Callable
from urllib.parse import quote

import anyio
import httpx
import pytest
from httpx_ws import aconnect_ws
from pycrdt import Array, Doc, Map, Provider, Text
from pycrdt.websocket.websocket import HttpxWebsocket

REPO_ROOT = Path(__file__).resolve().parents[2]
READY = re.compile(r"listening on http://(\[[^\]]+\]|[^\s/:]+):(\d+)")
ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")

READY_TIMEOUT = 20.0  # node start-up
SYNC_TIMEOUT = 10.0  # a client's first sync (connect included)
CHANGE_TIMEOUT = 10.0  # an edit reaching another client or the HTTP API
STOP_TIMEOUT = 10.0  # SIGTERM to exit

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# ------------------------------------------------------------------------------------------
# the node


@dataclass
class Node:
    proc: subprocess.Popen
    port: int
    workdir: tempfile.TemporaryDirectory
    lines: list[str] = field(default_factory=list)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def logs_tail(self, n: int = 60) -> str:
        return "\n".join(self.lines[-n:])

    def stop(self) -> int | None:
        """SIGTERM, wait (SIGKILL after STOP_TIMEOUT), return the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.workdir.cleanup()
        return self.proc.returncode


def ymesh_bin() -> Path:
    given = os.environ.get("YMESH_BIN")
    return Path(given).resolve() if given else REPO_ROOT / "target" / "debug" / "ymesh"


def start_node() -> Node:
    binary = ymesh_bin()
    if not binary.is_file():
        pytest.fail(f"ymesh binary not found at {binary} (build it with `cargo build`, or set YMESH_BIN)")
    workdir = tempfile.TemporaryDirectory(prefix="ymesh-pytest-")
    env = {
        **os.environ,
        "RUST_LOG": "info",
        "NO_COLOR": "1",
        # Keep anything the node writes inside the temporary directory.
        "YMESH_DATA_DIR": workdir.name,
    }
    proc = subprocess.Popen(
        [str(binary), "serve", "--host", "127.0.0.1", "--port", "0"],
        cwd=workdir.name,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    lines: list[str] = []
    found: dict[str, int] = {}
    ready = threading.Event()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = ANSI.sub("", raw.decode("utf-8", "replace").rstrip("\n"))
            lines.append(line)
            if len(lines) > 20000:
                del lines[:10000]
            if not ready.is_set():
                m = READY.search(line)
                if m:
                    found["port"] = int(m.group(2))
                    ready.set()
        ready.set()  # output closed: the process is gone

    threading.Thread(target=pump, name="ymesh-output", daemon=True).start()
    ready.wait(READY_TIMEOUT)
    if "port" not in found:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=5)
        workdir.cleanup()
        tail = "\n".join(lines[-60:])
        pytest.fail(
            f"ymesh did not print its ready line within {READY_TIMEOUT}s "
            f"(exit code {proc.returncode})\n--- output ---\n{tail}"
        )
    return Node(proc=proc, port=found["port"], workdir=workdir, lines=lines)


@pytest.fixture(scope="module")
def node(request: pytest.FixtureRequest) -> Node:
    n = start_node()
    request.addfinalizer(n.stop)
    return n


def new_room(prefix: str = "py") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


# ------------------------------------------------------------------------------------------
# clients and waiting


@dataclass
class Client:
    doc: Doc
    provider: Provider
    text: Text  # the root Text "t"
    map: Map  # the root Map "m"


@asynccontextmanager
async def connect(node: Node, room: str, route: str = "/rooms/{room}") -> AsyncIterator[Client]:
    """A pycrdt client in `room` (via `route`), yielded once its first sync finished."""
    doc = Doc()
    url = node.http_url + route.format(room=quote(room, safe=""))
    async with aconnect_ws(url) as ws:
        async with Provider(doc, HttpxWebsocket(ws, room)) as provider:
            try:
                with anyio.fail_after(SYNC_TIMEOUT):
                    await provider.synced.wait()
            except TimeoutError:
                raise AssertionError(f"client did not sync with {url} within {SYNC_TIMEOUT}s") from None
            yield Client(doc, provider, doc.get("t", type=Text), doc.get("m", type=Map))


async def wait_until(pred: Callable[[], object], what: str, timeout: float = CHANGE_TIMEOUT, state: Callable[[], object] | None = None):
    """Polls `pred` (sync or async) until truthy; fails after `timeout` describing `what`."""
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if hasattr(v, "__await__"):
            v = await v
        if v:
            return v
        if time.monotonic() >= deadline:
            detail = f"; last state: {state()!r}" if state else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}{detail}")
        await anyio.sleep(0.01)


def snapshot(doc: Doc) -> dict:
    """The root types these tests use, as plain Python values."""
    return {
        "t": str(doc.get("t", type=Text)),
        "m": doc.get("m", type=Map).to_py(),
    }


async def wait_converged(a: Client, b: Client, what: str) -> dict:
    await wait_until(
        lambda: snapshot(a.doc) == snapshot(b.doc),
        what,
        state=lambda: (snapshot(a.doc), snapshot(b.doc)),
    )
    return snapshot(a.doc)


async def get_room(node: Node, room: str) -> httpx.Response:
    async with httpx.AsyncClient(timeout=5.0) as http:
        return await http.get(f"{node.http_url}/rooms/{quote(room, safe='')}")


def decode_update(update: bytes) -> dict:
    doc = Doc()
    doc.apply_update(update)
    return snapshot(doc)


# ------------------------------------------------------------------------------------------
# tests


async def test_text_and_map_edits_reach_a_second_client(node: Node):
    room = new_room()
    async with connect(node, room) as a, connect(node, room) as b:
        # A writes a text and a map, including nested shared types.
        a.text += "hello, world"
        a.text.insert(5, " there")
        del a.text[0:1]
        a.text.insert(0, "H")
        a.map["title"] = "notes"
        a.map["count"] = 3
        a.map["flags"] = {"pinned": True, "tags": ["x", "y"]}
        a.map["nested"] = Map({"inner": "value"})
        a.map["list"] = Array([1, "two"])
        expected = {
            "t": "Hello there, world",
            "m": {
                "title": "notes",
                "count": 3.0,
                "flags": {"pinned": True, "tags": ["x", "y"]},
                "nested": {"inner": "value"},
                "list": [1.0, "two"],
            },
        }
        assert snapshot(a.doc) == expected
        await wait_until(lambda: snapshot(b.doc) == expected, "A's edits to reach B", state=lambda: snapshot(b.doc))

        # And back: B's edits (a deletion, a map overwrite and removal, non-ASCII text) reach A.
        del b.text[5:11]
        b.text += " ✓ é 😀"
        b.map["count"] = 4
        del b.map["title"]
        b.map["nested"]["inner"] = "changed"
        converged = await wait_converged(a, b, "B's edits to reach A")
        assert converged["t"] == "Hello, world ✓ é 😀"
        assert converged["m"]["count"] == 4.0
        assert "title" not in converged["m"]
        assert converged["m"]["nested"] == {"inner": "changed"}

        # Concurrent edits at the same place converge to the same result on both sides.
        a.text.insert(0, "[a]")
        b.text.insert(0, "[b]")
        a.map["race"] = "a"
        b.map["race"] = "b"
        converged = await wait_converged(a, b, "concurrent edits to converge")
        assert converged["t"] in ("[a][b]Hello, world ✓ é 😀", "[b][a]Hello, world ✓ é 😀")
        assert converged["m"]["race"] in ("a", "b")


async def test_late_joiner_gets_the_full_state(node: Node):
    room = new_room()
    async with connect(node, room) as a:
        a.text += "written by A"
        a.map["by"] = "A"
        # B writes and leaves before the late joiner arrives.
        async with connect(node, room) as b:
            await wait_converged(a, b, "B to see A's edits")
            b.text += "; then by B"
            b.map["b"] = ["list", 1]
            expected = await wait_converged(a, b, "A to see B's edits")
        assert expected == {"t": "written by A; then by B", "m": {"by": "A", "b": ["list", 1.0]}}

        async with connect(node, room) as late:
            # The node's SyncStep2 answer carries everything: no further waiting needed.
            assert snapshot(late.doc) == expected
            # And the late joiner is a full participant.
            late.text += "!"
            await wait_until(lambda: str(a.text).endswith("!"), "the late joiner's edit to reach A", state=lambda: str(a.text))


async def test_python_content_is_visible_through_the_http_api(node: Node):
    room = new_room("py http/é")  # a name that needs percent-encoding in both URLs
    async with connect(node, room) as a:
        a.text += "from python ✓"
        a.map["k"] = "v"
        a.map["n"] = 1.5
        expected = snapshot(a.doc)

        async def served() -> bool:
            res = await get_room(node, room)
            return res.status_code == 200 and decode_update(res.content) == expected

        await wait_until(served, f"GET /rooms/{room} to return the Python client's state")
        res = await get_room(node, room)
        assert res.headers["content-type"].startswith("application/octet-stream")
        assert decode_update(res.content) == {"t": "from python ✓", "m": {"k": "v", "n": 1.5}}


async def test_get_of_an_unknown_room_is_404(node: Node):
    res = await get_room(node, new_room("never-used"))
    assert res.status_code == 404


@pytest.mark.parametrize("route", ["/sync/{room}", "/workspaces/{room}/sync"])
async def test_other_routes_reach_the_same_room(node: Node, route: str):
    room = new_room()
    async with connect(node, room) as a, connect(node, room, route) as b:
        a.text += "via /rooms"
        b.map["via"] = route
        await wait_converged(a, b, f"clients on /rooms/{{room}} and {route} to converge")
        assert snapshot(b.doc) == {"t": "via /rooms", "m": {"via": route}}
