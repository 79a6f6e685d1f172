"""A real Bluesky peer for the tests: a PDS (with its PLC) and a local Jetstream, and citizens' hands.

`deploy/local/bluesky-peer.sh` installs the AT Protocol team's own test network
(`@atproto/dev-env`, pinned by tests/peers/bluesky/package-lock.json) with Node 22 from the npm
registry; `tests/peers/bluesky/peer.mjs` runs it with a Jetstream fed from the PDS's firehose.
`start_bluesky_peer()` (or the session fixture `bluesky_peer`: import `bluesky_peer_fixture` into a
conftest or a test module) starts one and hands back a `BlueskyPeer`:

    async with bluesky_peer.session(bluesky_peer.citizens[0]) as marta:
        post = await marta.post("Hi @ajuntament.test, the bin is full", mentions=[bluesky_peer.city])

Everything talks to 127.0.0.1 only. Under CI=true a peer that cannot be installed or started fails
the tests that need it; elsewhere a machine without npm or a C++ toolchain skips them, saying so.
"""

from __future__ import annotations

import contextlib
import json
import os
import queue
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, NoReturn
from urllib.parse import urlencode

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "local" / "bluesky-peer.sh"
MISSING_TOOLCHAIN = (
    3  # bluesky-peer.sh's exit code when npm, make, a C++ compiler or python3 is missing
)
INSTALL_TIMEOUT_S = (
    1200.0  # the first install builds better-sqlite3: minutes on a busy 2-core machine
)
READY_TIMEOUT_S = 120.0

POST = "app.bsky.feed.post"
MENTION = "app.bsky.richtext.facet#mention"


def _unavailable(reason: str) -> NoReturn:
    """A peer that cannot be had fails its tests, as a missing Kafka or PostgreSQL does: a
    silent skip would hide what a clean checkout needs (deploy/local/bluesky-peer.sh install)."""
    pytest.fail(
        f"Bluesky peer: {reason} (install it with deploy/local/bluesky-peer.sh install)",
        pytrace=False,
    )


def now_iso() -> str:
    """An AT Protocol datetime (UTC, milliseconds, `Z`), as clients put in `createdAt`."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def tiny_png(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    """A valid PNG of one colour, for uploadBlob and image embeds."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    row = b"\x00" + bytes(rgb) * width
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(row * height))
        + chunk(b"IEND", b"")
    )


S32 = "234567abcdefghijklmnopqrstuvwxyz"  # base32-sortable, the alphabet of TIDs


def tid(timestamp_us: int, clock_id: int = 0) -> str:
    """A TID (timestamp identifier), the record key every app.bsky.feed.post must have: the PDS
    refuses any other rkey ("Invalid TID string"). A reply whose rkey is derived from the event it
    answers therefore derives a TID (its time and a clock id), not a free-form key."""
    if not 0 <= clock_id < 1024 or not 0 <= timestamp_us < 1 << 53:
        raise ValueError("a TID holds 53 bits of microseconds and a 10-bit clock id")
    value = (timestamp_us << 10) | clock_id
    return "".join(S32[(value >> (5 * i)) & 31] for i in range(12, -1, -1))


@dataclass(frozen=True)
class Account:
    handle: str
    did: str
    password: str


@dataclass(frozen=True)
class RecordRef:
    """A record's address and version: what reply references (`root`, `parent`) are made of."""

    uri: str
    cid: str

    @property
    def did(self) -> str:
        return self.uri.removeprefix("at://").split("/")[0]

    @property
    def collection(self) -> str:
        return self.uri.removeprefix("at://").split("/")[1]

    @property
    def rkey(self) -> str:
        return self.uri.rsplit("/", 1)[1]

    def strong_ref(self) -> dict[str, str]:
        return {"uri": self.uri, "cid": self.cid}


class XrpcError(Exception):
    """An XRPC call the PDS refused: HTTP status and the body's `error` and `message`."""

    def __init__(self, method: str, status: int, error: str, message: str) -> None:
        super().__init__(f"{method}: HTTP {status} {error}: {message}")
        self.method = method
        self.status = status
        self.error = error
        self.message = message


def mention_facets(text: str, accounts: Sequence[Account]) -> list[dict[str, Any]]:
    """A mention facet for each `@handle` of these accounts in the text; byte offsets in UTF-8."""
    facets: list[dict[str, Any]] = []
    encoded = text.encode("utf-8")
    for account in accounts:
        needle = f"@{account.handle}".encode()
        start = encoded.find(needle)
        if start < 0:
            raise ValueError(
                f"{account.handle!r} is mentioned but '@{account.handle}' is not in the text"
            )
        while start >= 0:
            facets.append(
                {
                    "$type": "app.bsky.richtext.facet",
                    "index": {"byteStart": start, "byteEnd": start + len(needle)},
                    "features": [{"$type": MENTION, "did": account.did}],
                }
            )
            start = encoded.find(needle, start + len(needle))
    return sorted(facets, key=lambda f: f["index"]["byteStart"])


class BlueskyClient:
    """One account's hands on the PDS, over XRPC, as a Bluesky app would use them."""

    def __init__(self, pds_url: str, http: httpx.AsyncClient) -> None:
        self.pds_url = pds_url
        self._http = http
        self.did = ""
        self.handle = ""
        self._access_jwt = ""

    async def _call(
        self,
        method: str,
        *,
        json_body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        content: bytes | None = None,
        content_type: str | None = None,
    ) -> dict[str, Any]:
        headers = {"authorization": f"Bearer {self._access_jwt}"} if self._access_jwt else {}
        if content_type:
            headers["content-type"] = content_type
        url = f"{self.pds_url}/xrpc/{method}"
        if json_body is None and content is None:
            res = await self._http.get(url, params=params, headers=headers)
        else:
            res = await self._http.post(url, json=json_body, content=content, headers=headers)
        body = res.json() if res.content else {}
        if res.status_code >= 400:
            raise XrpcError(
                method, res.status_code, str(body.get("error", "")), str(body.get("message", ""))
            )
        return body

    async def create_session(self, identifier: str, password: str) -> None:
        body = await self._call(
            "com.atproto.server.createSession",
            json_body={"identifier": identifier, "password": password},
        )
        self.did, self.handle, self._access_jwt = body["did"], body["handle"], body["accessJwt"]

    async def create_record(
        self, collection: str, record: dict[str, Any], *, rkey: str | None = None
    ) -> RecordRef:
        payload: dict[str, Any] = {"repo": self.did, "collection": collection, "record": record}
        if rkey is not None:
            payload["rkey"] = rkey
        body = await self._call("com.atproto.repo.createRecord", json_body=payload)
        return RecordRef(body["uri"], body["cid"])

    async def delete_record(self, ref: RecordRef) -> None:
        """Deletes one of this account's records, as the app's "Delete post" does."""
        await self._call(
            "com.atproto.repo.deleteRecord",
            json_body={"repo": self.did, "collection": ref.collection, "rkey": ref.rkey},
        )

    async def upload_blob(self, data: bytes, mime_type: str = "image/png") -> dict[str, Any]:
        """The blob reference (`$type: blob`, `ref`, `mimeType`, `size`) to put in an embed."""
        body = await self._call("com.atproto.repo.uploadBlob", content=data, content_type=mime_type)
        blob: dict[str, Any] = body["blob"]
        return blob

    async def post(
        self,
        text: str,
        *,
        mentions: Sequence[Account] = (),
        images: Sequence[tuple[bytes, str]] = (),
        reply_to: RecordRef | None = None,
        root: RecordRef | None = None,
        langs: Sequence[str] = (),
        rkey: str | None = None,
    ) -> RecordRef:
        """An app.bsky.feed.post: mention facets for `mentions`, images as (PNG/JPEG bytes, alt),
        a reply to `reply_to` (whose thread starts at `root`, by default `reply_to` itself)."""
        record: dict[str, Any] = {"$type": POST, "text": text, "createdAt": now_iso()}
        if mentions:
            record["facets"] = mention_facets(text, mentions)
        if langs:
            record["langs"] = list(langs)
        if images:
            embedded = []
            for data, alt in images:
                mime = "image/jpeg" if data[:3] == b"\xff\xd8\xff" else "image/png"
                embedded.append({"alt": alt, "image": await self.upload_blob(data, mime)})
            record["embed"] = {"$type": "app.bsky.embed.images", "images": embedded}
        if reply_to is not None:
            record["reply"] = {
                "root": (root or reply_to).strong_ref(),
                "parent": reply_to.strong_ref(),
            }
        return await self.create_record(POST, record, rkey=rkey)

    async def reply(
        self, parent: RecordRef, text: str, *, root: RecordRef | None = None, **kwargs: Any
    ) -> RecordRef:
        return await self.post(text, reply_to=parent, root=root, **kwargs)

    async def get_record(self, uri_or_ref: str | RecordRef) -> dict[str, Any]:
        """`{uri, cid, value}` of a record, read back from its repo."""
        uri = uri_or_ref.uri if isinstance(uri_or_ref, RecordRef) else uri_or_ref
        did, collection, rkey = uri.removeprefix("at://").split("/")
        return await self._call(
            "com.atproto.repo.getRecord",
            params={"repo": did, "collection": collection, "rkey": rkey},
        )

    async def list_records(self, repo: str, collection: str = POST) -> list[dict[str, Any]]:
        """Every record of a collection in a repo (`{uri, cid, value}`), newest first."""
        records: list[dict[str, Any]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"repo": repo, "collection": collection, "limit": 100}
            if cursor:
                params["cursor"] = cursor
            body = await self._call("com.atproto.repo.listRecords", params=params)
            records.extend(body.get("records", []))
            cursor = body.get("cursor")
            if not cursor or not body.get("records"):
                return records


@dataclass
class BlueskyPeer:
    """A running peer: its URLs, its accounts (the city's and citizens'), and its process."""

    pds_url: str
    plc_url: str
    jetstream_url: str
    city: Account
    citizens: list[Account]
    pid: int
    data_dir: Path
    start_seconds: float
    log_path: Path
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def subscribe_url(
        self,
        *,
        collections: Sequence[str] = (POST,),
        dids: Sequence[str] = (),
        cursor: int | None = None,
        require_hello: bool = False,
    ) -> str:
        """The Jetstream `/subscribe` URL with these filters (Jetstream's query parameters)."""
        query: list[tuple[str, str]] = [("wantedCollections", c) for c in collections]
        query += [("wantedDids", d) for d in dids]
        if cursor is not None:
            query.append(("cursor", str(cursor)))
        if require_hello:
            query.append(("requireHello", "true"))
        return f"{self.jetstream_url}/subscribe" + (f"?{urlencode(query)}" if query else "")

    @contextlib.asynccontextmanager
    async def session(self, account: Account) -> AsyncIterator[BlueskyClient]:
        """A logged-in client for this account (createSession)."""
        async with httpx.AsyncClient(timeout=30.0) as http:
            client = BlueskyClient(self.pds_url, http)
            await client.create_session(account.handle, account.password)
            yield client

    @contextlib.asynccontextmanager
    async def anonymous(self) -> AsyncIterator[BlueskyClient]:
        """A client with no session: public reads (getRecord, listRecords)."""
        async with httpx.AsyncClient(timeout=30.0) as http:
            yield BlueskyClient(self.pds_url, http)

    async def city_replies(self) -> list[dict[str, Any]]:
        """The posts in the city's repo that reply to someone: what Plaza answered in public."""
        async with self.anonymous() as client:
            records = await client.list_records(self.city.did, POST)
        return [r for r in records if "reply" in r["value"]]

    def rss_bytes(self) -> int:
        """The peer process's resident memory."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        return 0


def install() -> None:
    """Runs `bluesky-peer.sh install` (a no-op in well under a second once done)."""
    if shutil.which("bash") is None:
        _unavailable("bash is needed to install it")
    try:
        result = subprocess.run(
            [str(SCRIPT), "install"],
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired:
        _unavailable(f"`{SCRIPT} install` did not finish within {INSTALL_TIMEOUT_S:.0f} s")
    if result.returncode == MISSING_TOOLCHAIN:
        _unavailable(f"a tool to install it is missing: {result.stderr.strip()}")
    elif result.returncode != 0:
        pytest.fail(
            f"`{SCRIPT} install` failed ({result.returncode}):\n{result.stderr[-4000:]}",
            pytrace=False,
        )


def _read_lines(stream: IO[bytes], lines: queue.Queue[bytes | None]) -> None:
    for line in iter(stream.readline, b""):
        lines.put(line)
    lines.put(None)


def _tail(path: Path, n: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


@contextlib.contextmanager
def start_bluesky_peer() -> Iterator[BlueskyPeer]:
    """Installs if needed, starts a peer with data of its own, yields it once ready, stops it."""
    install()
    # The peer makes its own data directory and removes it whenever it exits; it exits when this
    # process does (its stdin closes), even on SIGKILL. Only the log is ours, outside pytest's
    # basetemp, which another pytest session may prune while this one runs.
    logs = Path(tempfile.mkdtemp(prefix="plaza-test-bluesky-"))
    log_path = logs / "peer.log"
    env = {**os.environ, "PLAZA_BLUESKY_PEER_EXIT_ON_STDIN_EOF": "1"}
    env.pop("PLAZA_BLUESKY_PEER_DATA", None)
    started = time.monotonic()
    with log_path.open("ab") as log:  # appends: pino reopens /dev/stderr
        proc = subprocess.Popen(
            [str(SCRIPT), "run"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, env=env
        )
    assert proc.stdout is not None
    lines: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_read_lines, args=(proc.stdout, lines), daemon=True).start()
    try:
        ready: dict[str, Any] | None = None
        deadline = started + READY_TIMEOUT_S
        while ready is None:
            try:
                line = lines.get(timeout=max(0.1, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                break
            with contextlib.suppress(ValueError):
                parsed = json.loads(line)
                if isinstance(parsed, dict) and parsed.get("plaza_bluesky_peer") == "ready":
                    ready = parsed
        if ready is None:
            code = proc.poll()
            what = (
                f"exited with {code}"
                if code is not None
                else f"not ready in {READY_TIMEOUT_S:.0f} s"
            )
            pytest.fail(f"the Bluesky peer {what}; its log:\n{_tail(log_path)}", pytrace=False)
        accounts = ready["accounts"]
        peer = BlueskyPeer(
            pds_url=ready["pds_url"],
            plc_url=ready["plc_url"],
            jetstream_url=ready["jetstream_url"],
            city=Account(**accounts["city"]),
            citizens=[Account(**a) for a in accounts["citizens"]],
            pid=int(ready["pid"]),
            data_dir=Path(ready["data_dir"]),
            start_seconds=time.monotonic() - started,
            log_path=log_path,
            process=proc,
        )
        yield peer
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stdin:
            proc.stdin.close()
        shutil.rmtree(logs, ignore_errors=True)


@pytest.fixture(scope="session", name="bluesky_peer")
def bluesky_peer_fixture() -> Iterator[BlueskyPeer]:
    """The fixture `bluesky_peer`: one peer for the test session. To use it, import this function
    into the conftest (or test module) whose tests need it."""
    with start_bluesky_peer() as peer:
        yield peer
