"""How long a reply may be on each platform, counted the platform's way, and fitting a reply
into it without ever cutting the request number or a mention."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

URL = re.compile(r"https?://\S+")
# A bare domain ("bcn.cat", "barcelona.cat/obres"), which X links too when it knows the top
# level domain: its list is long and changes, so any such word counts as a link would (23) when
# that is more than its own length. Not after an @ (an e-mail, a Mastodon handle) or a dot.
BARE_DOMAIN = re.compile(
    r"(?<![\w@./:-])(?:[a-z0-9](?:[a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,63}\b(?:/\S*)?", re.IGNORECASE
)
ELLIPSIS: Final = "…"


def graphemes(text: str) -> int:
    """User-perceived characters: combining marks, variation selectors, skin tones and the
    characters a zero-width joiner glues on do not count on their own."""
    count, joined = 0, False
    for ch in text:
        code = ord(ch)
        if ch == "\u200d":
            joined = True
            continue
        if (
            unicodedata.combining(ch)
            or 0xFE00 <= code <= 0xFE0F
            or 0x1F3FB <= code <= 0x1F3FF
            or 0xE0020 <= code <= 0xE007F
        ):
            continue
        if not joined:
            count += 1
        joined = False
    return count


# twitter-text's weights: code points in these ranges (Latin, general punctuation) count 1,
# every other one (CJK, emoji...) counts 2.
X_LIGHT: Final = ((0, 4351), (8192, 8205), (8208, 8223), (8242, 8247))


def x_weighted(text: str) -> int:
    """X's length: light code points 1, the others 2 (its limit of 280 is 140 CJK or emoji)."""
    text = unicodedata.normalize("NFC", text)
    return sum(1 if any(a <= ord(ch) <= b for a, b in X_LIGHT) else 2 for ch in text)


@dataclass(frozen=True, slots=True)
class LengthLimit:
    """`size` units of `unit`; with `url_length`, every URL counts that many (X's t.co), and a
    bare domain at least that many."""

    size: int
    unit: Literal["characters", "graphemes", "x-weighted"] = "characters"
    url_length: int | None = None
    max_bytes: int | None = None  # in UTF-8, besides `size` (Bluesky's record limit)

    def length(self, text: str) -> int:
        if self.url_length is not None:
            link = "x" * self.url_length
            text = URL.sub(link, text)
            text = BARE_DOMAIN.sub(lambda m: m[0] if len(m[0]) > len(link) else link, text)
        if self.unit == "x-weighted":
            return x_weighted(text)
        return graphemes(text) if self.unit == "graphemes" else len(text)

    def fits(self, text: str) -> bool:
        if self.max_bytes is not None and len(text.encode()) > self.max_bytes:
            return False
        return self.length(text) <= self.size


# By platform, from each platform's documentation. A platform without an entry (the log
# channel, webhooks) takes any length.
LIMITS: Final[Mapping[str, LengthLimit]] = {
    "mastodon": LengthLimit(500),
    # A post's text is at most 300 graphemes and 3,000 bytes (app.bsky.feed.post's lexicon):
    # 300 family emoji are 7,500.
    "bluesky": LengthLimit(300, "graphemes", max_bytes=3000),
    "x": LengthLimit(280, "x-weighted", url_length=23),
}


def shorten(text: str, limit: LengthLimit, keep: Sequence[str] = ()) -> str:
    """`text` if it fits; else words are dropped from the end, never a word holding one of
    `keep` (the request number, the citizen's and the worker's handles), and an ellipsis
    marks the cut. ValueError if even the kept words do not fit."""
    if limit.fits(text):
        return text
    words = text.split(" ")
    kept = [any(k and k in w for k in keep) for w in words]
    for end in range(len(words) - 1, -1, -1):
        head = " ".join(words[:end]).rstrip(" ,;:.") + ELLIPSIS
        tail = " ".join(w for i, w in enumerate(words[end:], start=end) if kept[i])
        out = f"{head} {tail}" if tail else head
        if limit.fits(out):
            return out
    raise ValueError(f"a reply cannot fit in {limit.size} {limit.unit} with {list(keep)} kept")
