"""Who may read a Plaza process's /metrics: the optional bearer token (PLAZA_METRICS_TOKEN) that
every /metrics endpoint checks the same way, the gateway's and ingest's as the workers'."""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Final

import orjson
from pydantic import SecretStr

PROBLEM_JSON: Final = "application/problem+json"
REALM: Final = 'Bearer realm="plaza-metrics"'
# RFC 6750's b64token: what a bearer credential may hold, so that it goes in a header unchanged.
TOKEN_CHARACTERS: Final = re.compile(r"^[A-Za-z0-9\-._~+/]+=*$")
MIN_TOKEN_LENGTH: Final = 16


def check_metrics_token(token: str) -> None:
    """Raises ValueError, naming PLAZA_METRICS_TOKEN, for a token Prometheus could not send as it
    is or that is short enough to guess."""
    if not TOKEN_CHARACTERS.match(token):
        raise ValueError(
            "PLAZA_METRICS_TOKEN may hold only letters, digits and -._~+/ (then = padding), as "
            "an Authorization: Bearer credential does; make one with "
            "python -c 'import secrets; print(secrets.token_urlsafe(32))'"
        )
    if len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(
            f"PLAZA_METRICS_TOKEN is {len(token)} characters: use {MIN_TOKEN_LENGTH} or more "
            "random ones (python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )


@dataclass(frozen=True, slots=True)
class Refusal:
    """A scrape turned away: a 401 with its problem+json detail and its WWW-Authenticate."""

    detail: str
    challenge: str

    def body(self) -> bytes:
        return orjson.dumps(
            {"type": "about:blank", "title": "Unauthorized", "status": 401, "detail": self.detail}
        )


@dataclass(frozen=True, slots=True)
class MetricsAccess:
    """Without a token anyone who reaches the port reads the metrics (a private network only);
    with one, a scrape sends `Authorization: Bearer <token>`."""

    token: SecretStr | None = None

    def refusal(self, authorization: str | None) -> Refusal | None:
        """None when a scrape with this Authorization header may read the metrics."""
        if self.token is None:
            return None
        if not authorization:
            return Refusal(
                "/metrics needs Authorization: Bearer <PLAZA_METRICS_TOKEN>; none was sent", REALM
            )
        scheme, _, credential = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            # Never the credential itself: a header of one word may be the token alone.
            had = f"the scheme {scheme[:32]!r}" if credential.strip() else "one word"
            return Refusal(
                f"/metrics needs Authorization: Bearer <PLAZA_METRICS_TOKEN>; it had {had}",
                f'{REALM}, error="invalid_request"',
            )
        # Constant time: how long the comparison takes says nothing of how much of it matched.
        expected = self.token.get_secret_value().encode()
        if not hmac.compare_digest(credential.strip().encode(), expected):
            return Refusal(
                "the bearer token is not this process's PLAZA_METRICS_TOKEN",
                f'{REALM}, error="invalid_token"',
            )
        return None
