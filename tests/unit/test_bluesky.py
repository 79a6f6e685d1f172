"""Bluesky without I/O: derived record keys, at:// URIs, the connector's cursor and its reading of
Jetstream events, facets' byte offsets, and the settings (the password never shown)."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from plaza.bluesky import AtUri, BlueskyAccount, tid, tid_for
from plaza.settings import SettingsError, load
from plaza_ingest.__main__ import IngestSettings
from plaza_ingest.connectors.bluesky import Identities, Position, event_to_post
from plaza_notifier.__main__ import NotifierSettings
from plaza_notifier.bluesky import byte_span

TID = re.compile(r"^[234567abcdefghij][234567abcdefghijklmnopqrstuvwxyz]{12}$")
DID = "did:plc:ewvi7nxzyoun6zhxrhs64oiz"


# The city's account, for the identity checks (only its PLC directory and PDS are asked).
CITY_ACCOUNT = BlueskyAccount(
    handle="ajuntament.test",
    password=None,
    pds_url="http://pds.test",
    jetstream_url="ws://jetstream.test",
    plc_url="http://plc.test",
)


def test_a_reply_id_always_derives_the_same_valid_tid_and_another_id_another() -> None:
    keys = {tid_for(f"reply-{i}") for i in range(2000)}
    assert len(keys) == 2000
    assert all(TID.match(k) for k in keys)
    assert tid_for("reply-7") == tid_for("reply-7")
    # its time lies in the past (2015..2024), like an imported post's, never in the future
    assert tid(1_420_070_400_000_000) <= min(keys) and max(keys) < tid(1_704_067_200_000_000)


def test_an_at_uri_is_parsed_and_printed_back() -> None:
    uri = AtUri.parse(f"at://{DID}/app.bsky.feed.post/3l3qo2vuowo2b")
    assert (uri.did, uri.collection, uri.rkey) == (DID, "app.bsky.feed.post", "3l3qo2vuowo2b")
    assert str(uri) == f"at://{DID}/app.bsky.feed.post/3l3qo2vuowo2b"
    assert uri.web_url == f"https://bsky.app/profile/{DID}/post/3l3qo2vuowo2b"
    for bad in ("112233", "at://nobody/app.bsky.feed.post/x", f"at://{DID}/app.bsky.feed.post"):
        with pytest.raises(ValueError, match="not the at:// URI"):
            AtUri.parse(bad)


def test_the_cursor_remembers_the_posts_of_its_rewind_window_only() -> None:
    start = Position(1_000_000_000, since_us=1_000_000_000)
    assert Position.parse(start.encode()) == start
    assert start.rewound(5_000_000) == 1_000_000_000  # never before the first start
    p = start.advance(1_002_000_000, 5_000_000, "at://a").advance(1_004_000_000, 5_000_000)
    assert p.time_us == 1_004_000_000 and dict(p.seen) == {"at://a": 1_002_000_000}
    assert p.advance(1_003_000_000, 5_000_000).time_us == 1_004_000_000  # a replay: never back
    later = p.advance(1_008_000_000, 5_000_000)
    assert dict(later.seen) == {}  # out of the window: a replay cannot reach it any more
    assert later.since_us == 0 and later.rewound(5_000_000) == 1_003_000_000
    assert Position.parse("1700000000000000") == Position(1_700_000_000_000_000)


def _event(record: dict[str, object]) -> dict[str, object]:
    return {
        "did": DID,
        "time_us": 1_725_911_162_329_308,
        "kind": "commit",
        "commit": {
            "rev": "3l3qo2vutsw2b",
            "operation": "create",
            "collection": "app.bsky.feed.post",
            "rkey": "3l3qo2vuowo2b",
            "record": record,
            "cid": "bafyreidwaivazkwu67xztlmuobx35hs2lnfh3kolmgfmucldvhd3sgzcqi",
        },
    }


def test_a_jetstream_post_becomes_a_post_with_its_images_language_and_thread() -> None:
    parent = f"at://{DID}/app.bsky.feed.post/3l3qnzzzzzz2b"
    record = {
        "$type": "app.bsky.feed.post",
        "text": "",
        "createdAt": "2024-09-09T19:46:02.102Z",
        "langs": ["CA"],
        "embed": {
            "$type": "app.bsky.embed.images",
            "images": [{"alt": "", "image": {"$type": "blob", "ref": {"$link": "bafkreiabc"}}}],
        },
        "reply": {"root": {"uri": parent, "cid": "x"}, "parent": {"uri": parent, "cid": "x"}},
    }
    post = event_to_post(_event(record), "marta.test", "https://img/{did}/{cid}")
    assert post is not None
    assert post.post_id == f"at://{DID}/app.bsky.feed.post/3l3qo2vuowo2b"
    assert (post.author_handle, post.author_id) == ("@marta.test", DID)
    assert post.text == "[media]" and post.lang == "ca" and post.reply_to == parent
    assert [str(u) for u in post.media_urls] == [f"https://img/{DID}/bafkreiabc"]
    assert post.created_at is not None and post.created_at.year == 2024
    # no text and no image: nothing Plaza can take; an unknown handle: the DID stands in
    assert event_to_post(_event({"text": " "}), "", "https://img/{did}/{cid}") is None
    bare = event_to_post(_event({"text": "hola", "langs": ["??"]}), "", "https://i/{did}/{cid}")
    assert bare is not None and bare.author_handle == DID and bare.lang == ""


def test_a_facet_spans_utf8_bytes() -> None:
    text = "Petició 🚐 @jordi.test"
    start = text.index("@")
    span = byte_span(text, start, len(text))
    assert text.encode()[span["byteStart"] : span["byteEnd"]] == b"@jordi.test"
    assert span["byteStart"] == start + 1 + 3  # ó is 2 bytes, the van 4


def test_bluesky_settings_keep_the_password_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "password"
    secret.write_text("app-pass-word-1234\n")
    monkeypatch.setenv("PLAZA_BLUESKY_HANDLE", "@ajuntament.bsky.social")
    monkeypatch.setenv("PLAZA_BLUESKY_PASSWORD_FILE", str(secret))
    monkeypatch.setenv("PLAZA_BLUESKY_MENTIONS", "ajuntament.bsky.social, " + DID)
    account = load(NotifierSettings).bluesky
    assert account is not None and account.password is not None
    assert account.password.get_secret_value() == "app-pass-word-1234"
    assert account.handle == "ajuntament.bsky.social"
    assert account.mentions == ("ajuntament.bsky.social", DID)
    assert "app-pass-word" not in repr(account) and "app-pass-word" not in repr(
        load(NotifierSettings)
    )
    monkeypatch.delenv("PLAZA_BLUESKY_PASSWORD_FILE")
    assert load(IngestSettings).bluesky is not None  # ingest reads public data only
    with pytest.raises(SettingsError, match="PLAZA_BLUESKY_PASSWORD"):
        load(NotifierSettings)  # the notifier posts: it must have the password
    monkeypatch.setenv("PLAZA_BLUESKY_HANDLE", "not a handle")
    with pytest.raises(SettingsError, match="PLAZA_BLUESKY_HANDLE"):
        load(IngestSettings)


async def test_an_authors_handle_counts_only_if_it_resolves_back_to_its_did() -> None:
    """A DID document may claim any handle: taken as it is, a reply would mention whoever holds
    it. The handle is the author's only if resolveHandle answers the same DID; otherwise (or
    when it cannot be read) the DID stands in. A verified handle is remembered for a while; a
    failure to read is not, and an identity event makes the next post read it again."""
    marta, impostor = DID, "did:plc:impostorimpostorimpostor"
    claims = {marta: "marta.test", impostor: "mayor.bcn.test"}
    holders = {"marta.test": marta, "mayor.bcn.test": "did:plc:themayorthemayorthemayo"}
    asked: list[str] = []
    failing = {"resolve": False}

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append(request.url.path)
        if request.url.host == "plc.test":
            did = request.url.path.strip("/")
            return httpx.Response(200, json={"id": did, "alsoKnownAs": [f"at://{claims[did]}"]})
        if failing["resolve"]:
            return httpx.Response(503)
        handle = request.url.params["handle"]
        if handle not in holders:
            return httpx.Response(400, json={"error": "InvalidRequest", "message": "no handle"})
        return httpx.Response(200, json={"did": holders[handle]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(answer)) as http:
        identities = Identities(CITY_ACCOUNT, http)
        assert await identities.handle_of(marta) == "marta.test"
        assert await identities.handle_of(impostor) == ""  # the mayor's handle is not theirs
        claims[impostor] = "nobody.test"
        identities.forget(impostor)
        assert await identities.handle_of(impostor) == ""  # a handle nobody holds
        asked.clear()
        assert await identities.handle_of(marta) == "marta.test" and asked == []  # remembered
        identities.forget(marta)
        failing["resolve"] = True
        assert await identities.handle_of(marta) == ""  # cannot be verified now
        failing["resolve"] = False
        assert await identities.handle_of(marta) == "marta.test"  # asked again, not remembered
        stale = Identities(CITY_ACCOUNT, http, ttl=0.0)
        assert await stale.handle_of(marta) == "marta.test"
        asked.clear()
        await stale.handle_of(marta)
        assert asked  # past its time, read again


async def test_a_did_web_document_is_read_only_from_a_public_address() -> None:
    """A did:web DID is its author's choice, and ingest fetched https://<its host>/... whatever
    the host: the metadata service, a port of the city's network (did:web:10.0.0.5%3A8443), a
    name that resolves inside it. Now each is refused before any connection, and a public host
    is read at the address that was checked, its name in the Host header."""
    dns = {
        "intranet.bcn.test": ["10.0.0.5"],
        "rebinding.test": ["93.184.216.34", "127.0.0.1"],
        "marta.example": ["93.184.216.34"],
    }
    fetched: list[tuple[str, str]] = []

    async def resolver(host: str, port: int) -> list[str]:
        return dns.get(host, [host])  # an IP literal is itself

    def web(request: httpx.Request) -> httpx.Response:
        fetched.append((str(request.url), request.headers["host"]))
        return httpx.Response(200, json={"alsoKnownAs": ["at://marta.example"]})

    def pds(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"did": "did:web:marta.example"})

    async with httpx.AsyncClient(transport=httpx.MockTransport(pds)) as http:
        identities = Identities(
            CITY_ACCOUNT, http, resolver=resolver, web_transport=httpx.MockTransport(web)
        )
        for private in (
            "did:web:169.254.169.254",
            "did:web:10.0.0.5%3A8443",
            "did:web:127.0.0.1",
            "did:web:intranet.bcn.test",
            "did:web:rebinding.test",
        ):
            assert await identities.handle_of(private) == "", private
        assert fetched == []
        assert await identities.handle_of("did:web:marta.example") == "marta.example"
    assert fetched == [("https://93.184.216.34/.well-known/did.json", "marta.example")]


def test_a_post_by_an_unverified_author_names_the_did() -> None:
    post = event_to_post(
        _event({"text": "Fanal apagat", "createdAt": "2024-09-09T19:46:02Z"}), "", ""
    )
    assert post is not None and post.author_handle == DID and post.author_id == DID
