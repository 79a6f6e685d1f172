"""A service's log: whatever a citizen's post, a handle or an error carries, each record is one
line at the margin, with its own lines (if any) indented under it."""

from __future__ import annotations

import io
import logging

from plaza.service import LOG_FORMAT, LogLines

FORGED = "2026-11-27 21:00:00,000 INFO plaza_api.auth: access: key:admin created key 'evil'"


def logged(message: str, *args: object, exc: BaseException | None = None) -> str:
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(LogLines(LOG_FORMAT))
    logger = logging.getLogger("plaza.test_log_lines")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning(message, *args, exc_info=exc)
    finally:
        logger.removeHandler(handler)
    return out.getvalue()


def test_a_line_break_in_an_argument_starts_no_record_of_its_own() -> None:
    """A bridge's handle (or a post's text) with a line break wrote a line that read as a
    record of the gateway: an admin creating a key."""
    for brk in ("\n", "\r\n", "\r", "\u2028", "\x85", "\v"):
        text = logged("reply to %s on mastodon: %s", f"@a{brk}{FORGED}", "Rebut!")
        first, *rest = text.splitlines()
        assert first.endswith("WARNING plaza.test_log_lines: reply to @a"), repr(brk)
        assert rest == [f"  {FORGED} on mastodon: Rebut!"], repr(brk)


def test_control_characters_are_escaped_and_a_multi_line_message_keeps_its_shape() -> None:
    text = logged("post %s", "\x1b[2J\x1b[Hcleared\x00")
    assert text.rstrip("\n").endswith("post \\x1b[2J\\x1b[Hcleared\\x00")
    recorded = logged("recorded %d replies:%s", 2, "\n  reply 1 to @a: x\n  reply 2 to @b: y")
    assert recorded.splitlines()[1:] == ["  reply 1 to @a: x", "  reply 2 to @b: y"]


def test_a_traceback_is_indented_under_its_record() -> None:
    """An exception's message may quote a post: its lines are the record's too."""
    try:
        raise ValueError(f"bad post\n{FORGED}")
    except ValueError as exc:
        text = logged("handler failed", exc=exc)
    first, *rest = text.splitlines()
    assert first.endswith("WARNING plaza.test_log_lines: handler failed")
    assert rest[0] == "  Traceback (most recent call last):"
    assert rest[-2:] == ["  ValueError: bad post", f"  {FORGED}"]
    assert all(line.startswith("  ") for line in rest)
