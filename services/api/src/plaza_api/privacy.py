"""What a public response may show of a citizen's words and whereabouts: e-mail addresses,
phone numbers, identity documents, bank accounts and licence plates inside public text are
masked (the reporter's contact details and handle are never in a public response at all, nor a
photo's URL that names their account), an address loses its floor and door, and a point is
published on a grid of a street block, not where the citizen's phone stood.

Every pattern runs in time linear in the text: masking runs on each item of every public
read, so a pattern that backtracks over a long run of word characters (as an e-mail pattern
without its lookbehind does: 0.2 s for one 10,000-character word) would let one post stall the
gateway."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Final

EMAIL_MASK = "[email]"
PHONE_MASK = "[phone]"
PLATE_MASK = "[plate]"
ID_MASK = "[id]"
IBAN_MASK = "[iban]"

# Starts only where a run of the local part's characters starts (the lookbehind), so a long
# word is tried once, not once per character.
_EMAIL = re.compile(r"(?<![\w.+-])[\w.+-]+@[\w-]+(?:\.[\w-]+)*\.[A-Za-z]{2,}")
# An IBAN, grouped in fours or not: ES91 2100 0418 4502 0005 1332.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){3,7}(?: ?[A-Z0-9]{1,3})?\b")
# Spanish identity numbers: DNI (12345678Z) and NIE (X1234567L), either case, with or without
# a dash before the letter.
_ID = re.compile(r"\b(?:\d{8}|[XYZxyz]-?\d{7})-?[A-HJ-NP-TV-Za-hj-np-tv-z]\b")
# 9 or more digits, optionally with a +country code, an area code in brackets, and spaces
# (also no-break ones), dots, dashes or slashes between groups: 612 345 678, +34 612-34-56-78,
# 0034 932 123 456, 932123456, 93/123.45.67, +34 (93) 123 45 67. An ISO date and time
# (2026-05-04 10:00) is no phone.
_SEP = r"(?:[ .\-/\u00a0]{1,2}|[ \u00a0]?[()][ \u00a0]?)?"
_PHONE = re.compile(
    r"(?<![\w+(])(?!\d{4}-\d{2}-\d{2}\b)(?:\+|00)?\(?\d(?:" + _SEP + r"\d){8,14}(?!\w)"
)
# Spanish plates, current (1234 BCD: vowels never used) and provincial (B-1234-XY, M 1234 AB),
# and European plates in the same shapes with other letters (AB-123-CD). Upper case only:
# in lower case "1000 pts" or "de 2023 a" would be plates.
_PLATE = re.compile(
    r"\b(?:"
    r"\d{4}[ \-]?[BCDFGHJKLMNPRSTVWXYZ]{3}"
    r"|[A-Z]{1,2}[ \-]?\d{4}[ \-]?[A-Z]{1,2}"
    r"|[A-Z]{2}[ \-]\d{3}[ \-][A-Z]{2}"
    r")\b"
)


# An account's id in a URL's path: Bluesky's CDN addresses an image by its author's DID
# (cdn.bsky.app/img/feed_fullsize/plain/did:plc:…/…@jpeg), and a DID resolves to its handle.
_ACCOUNT_IN_URL = re.compile(r"did(?::|%3A)[a-z]+(?::|%3A)", re.IGNORECASE)


def public_media(url: str | None) -> str | None:
    """A citizen's photo URL as Open311 may publish it: None for one that names its author's
    account, which would tell who reported the request."""
    return None if url and _ACCOUNT_IN_URL.search(url) else url


def mask(text: str | None) -> str | None:
    """`text` with e-mail addresses, bank accounts, identity numbers, licence plates and phone
    numbers masked."""
    if not text:
        return text
    text = _EMAIL.sub(EMAIL_MASK, text)
    text = _IBAN.sub(IBAN_MASK, text)
    text = _ID.sub(ID_MASK, text)
    text = _PLATE.sub(PLATE_MASK, text)
    return _PHONE.sub(PHONE_MASK, text)


# After an address's house number: a floor or a door ("3r 2a", "3º 2ª", "1er", "3-2"), or a word
# that introduces one (piso, porta, escalera, bajos, àtic, principal...). The street and number
# place the problem; the rest says which home the citizen wrote from.
_HOUSE_NUMBER = re.compile(r"[^\W\d_][^\d]*?\b(\d{1,4}(?:[ -]?(?:bis|[A-Za-z]))?)\b")
_DWELLING = re.compile(
    r"(?:^|[\s,;])(?:"
    r"\d{1,2}\s*(?:º|ª|°|er|r|n|t|a|o)\.?(?=[\s,;.\-]|$)"
    r"|\d{1,2}\s*-\s*\d{1,2}(?![\d])"
    r"|(?:piso|pis|planta|puerta|porta|pta|escalera|esc|bloque|bloc|bajos?|baixos|bjo|"
    r"àtic|atic|ático|atico|sobreàtic|entresuelo|entresol|entlo|pral|principal)\b"
    r")",
    re.IGNORECASE,
)
_POSTCODE_ON = re.compile(r"\b\d{5}\b.*$")


def public_address(address: str | None) -> str | None:
    """An address as Open311 may publish it: masked, and without the floor and door after its
    house number ("Carrer de Verdi 12, 3r 2a, 08012 Barcelona" is "Carrer de Verdi 12, 08012
    Barcelona"). An address with no house number is left as it is."""
    address = mask(address)
    if not address:
        return address
    number = _HOUSE_NUMBER.search(address)
    if number is None:
        return address
    dwelling = _DWELLING.search(address, number.end(1))
    if dwelling is None:
        return address
    kept = address[: dwelling.start()].rstrip(" ,;")
    town = _POSTCODE_ON.search(address, dwelling.start())
    return f"{kept}, {town.group(0)}" if town else kept


# A request's point is always a reporter's device's (a social post's geotag, an Open311 app's
# lat/long, which a follow-up inherits): Plaza never makes one from an address or a place
# name. To the metre it is where the citizen stood, often their home or work; a block's
# precision places the problem as well for the public record (GDPR's data minimisation).
PUBLIC_POINT_PRECISION_M: Final = 50
MAX_PUBLIC_POINT_PRECISION_M: Final = 1000
METRES_PER_DEGREE: Final = 111_195.0  # of a great circle on the mean Earth (6,371 km)


@dataclass(frozen=True, slots=True)
class PublicGrid:
    """The grid a point is published on: cells `precision_m` metres a side (0: the exact
    point), each point shown as its cell's centre. A band of latitude is `step` degrees high;
    within it a cell is `step / cos(band's centre)` degrees of longitude wide, so cells are
    about square at any latitude. A point moves at most 0.71 x precision_m.

    Snapping, not noise: a request reads the same on every read (noise averaged over many reads
    would give the point away), and PostgreSQL computes it in one expression, which the radius
    filter decides on as well (a filter on the exact point would reveal it by bisection)."""

    precision_m: float = PUBLIC_POINT_PRECISION_M

    @property
    def step(self) -> float:
        """Degrees of latitude a cell spans: how far (with the longitude's cosine) a published
        point may be from the exact one, with room to spare."""
        return self.precision_m / METRES_PER_DEGREE

    def point(self, lat: float, long: float) -> tuple[float, float]:
        """The point published for (lat, long): what lateral_sql computes, for the API's own
        examples."""
        if self.precision_m == 0:
            return lat, long
        step = self.step
        band = min(90.0, max(-90.0, (math.floor(lat / step) + 0.5) * step))
        width = step / math.cos(math.radians(band))
        return band, min(180.0, max(-180.0, (math.floor(long / width) + 0.5) * width))

    def lateral_sql(self) -> str:
        """FROM items to join after service_requests: its published point, as public_lat and
        public_long (NULL without a point)."""
        if self.precision_m == 0:
            return "LATERAL (SELECT lat AS public_lat, long AS public_long) AS public_point"
        step = repr(self.step)
        width = f"({step} / cos(radians(public_lat)))"
        # A cell's centre may be past a pole or the antimeridian (a geotag from far away):
        # published, it stays a valid coordinate. (least and greatest skip a NULL: a request
        # without a point keeps none.)
        return (
            "LATERAL (SELECT CASE WHEN lat IS NOT NULL THEN"
            f" least(90, greatest(-90, (floor(lat / {step}) + 0.5) * {step}))"
            " END AS public_lat) AS public_band,"
            " LATERAL (SELECT CASE WHEN long IS NOT NULL THEN"
            f" least(180, greatest(-180, (floor(long / {width}) + 0.5) * {width}))"
            " END AS public_long) AS public_point"
        )
