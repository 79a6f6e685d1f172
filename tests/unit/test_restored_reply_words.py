"""After a restore, the city's reply to a post read again is recognised in its thread by its
words but for their numbers (the request it named may have another number now); otherwise,
as when a send's outcome is unknown, only by the very same words."""

from __future__ import annotations

from datetime import UTC, datetime

from plaza_notifier.channels import ChannelReply, same_words, unnumbered


def words(text: str) -> list[str]:
    return text.split()


ACK = words("Rebut! Petició #12, districte de Gràcia. Previsió: dv. 28/11 10:00")
RENUMBERED = words("Rebut! Petició #13, districte de Gràcia. Previsió: dv. 28/11 10:00")
RESOLVED = words("Resolt! Petició #12: fanal reparat.")


def reply(restored_at: datetime | None) -> ChannelReply:
    return ChannelReply("r1", "111", "@marta", " ".join(RENUMBERED), "ca", None, restored_at)


def test_the_numbers_are_left_out() -> None:
    assert unnumbered(ACK) == [
        "Rebut!",
        "Petició",
        "districte",
        "de",
        "Gràcia.",
        "Previsió:",
        "dv.",
    ]


def test_a_reply_under_another_number_counts_only_after_a_restore() -> None:
    restored = reply(datetime(2026, 11, 28, 9, tzinfo=UTC))
    assert same_words(restored, RENUMBERED, ACK)
    assert not same_words(restored, RENUMBERED, RESOLVED)  # another reply: it is sent
    ordinary = reply(None)
    assert same_words(ordinary, RENUMBERED, RENUMBERED)
    assert not same_words(ordinary, RENUMBERED, ACK)
