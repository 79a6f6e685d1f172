"""What a public response may show of a citizen's words: e-mail addresses, phone numbers and
licence plates inside public text are masked (the reporter's contact details and handle are
never in a public response at all)."""

from __future__ import annotations

import re

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
PLATE_MASK = "[plate]"

_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
# 9 or more digits, optionally with a +country code and spaces, dots or dashes between groups:
# 612 345 678, +34 612-34-56-78, 0034 932 123 456, 932123456.
_PHONE = re.compile(r"(?<![\w+])(?:\+|00)?\d(?:[ .\-]?\d){8,14}(?!\w)")
# Spanish plates, current (1234 BCD: vowels never used) and provincial (B-1234-XY, M 1234 AB),
# and European plates in the same shapes with other letters (AB-123-CD).
_PLATE = re.compile(
    r"\b(?:"
    r"\d{4}[ \-]?[BCDFGHJKLMNPRSTVWXYZ]{3}"
    r"|[A-Z]{1,2}[ \-]?\d{4}[ \-]?[A-Z]{1,2}"
    r"|[A-Z]{2}[ \-]\d{3}[ \-][A-Z]{2}"
    r")\b"
)


def mask(text: str | None) -> str | None:
    """`text` with e-mail addresses, phone numbers and licence plates masked."""
    if not text:
        return text
    text = _EMAIL.sub(EMAIL_MASK, text)
    text = _PLATE.sub(PLATE_MASK, text)
    return _PHONE.sub(PHONE_MASK, text)
