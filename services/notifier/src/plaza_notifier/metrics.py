"""The notifier's metrics: replies posted and failed, by platform; photos left out."""

from __future__ import annotations

from collections.abc import Iterable

from plaza.contracts import ReplyKind
from prometheus_client import Counter

from plaza_notifier.templates import kind_name

PLATFORMS = ("mastodon", "bluesky", "x")  # the channels Plaza speaks; others use the log
FAILURE_REASONS = ("rejected", "error")
PHOTO_REFUSALS = ("address", "redirects", "status", "type", "size", "url")

REPLIES_POSTED = Counter(
    "plaza_replies_posted_total",
    "Public replies posted to citizens (once each, redeliveries not counted), by platform and kind",
    ["platform", "kind"],
)
REPLIES_FAILED = Counter(
    "plaza_replies_failed_total",
    "Attempts to post a reply that failed, by platform and reason: rejected (it can never be "
    "posted; dead-lettered) or error (tried again)",
    ["platform", "reason"],
)
REPLIES_DEAD_LETTERED = Counter(
    "plaza_replies_dead_lettered_total",
    "Replies given up on (refused, or failed too many times): they wait, failed, for a manager "
    "to retry them (GET /api/v1/replies?state=failed), by platform",
    ["platform"],
)
REPLIES_RATE_LIMITED = Counter(
    "plaza_replies_rate_limited_total",
    "Times a platform asked the notifier to wait (429 or a spent rate-limit budget), by platform",
    ["platform"],
)
REPLY_PHOTOS_REFUSED = Counter(
    "plaza_reply_photos_refused_total",
    "Resolution photos a reply went without (the reply was posted all the same), by platform and "
    "reason: address (not public, or no such host), redirects, status (4xx), type (not an "
    "image), size, url",
    ["platform", "reason"],
)


def start_at_zero(platforms: Iterable[str] = PLATFORMS) -> int:
    """Creates the notifier's series at 0 for each platform (see plaza.metrics.start_at_zero:
    Prometheus's increase() cannot see the count a series appears with, so the first dead
    letter would never fire PlazaRepliesDeadLettered). Returns how many it created."""
    kinds = [kind_name(value) for value in ReplyKind.values() if value]
    created = 0
    for platform in platforms:
        series = [
            REPLIES_DEAD_LETTERED.labels(platform),
            REPLIES_RATE_LIMITED.labels(platform),
            *(REPLIES_FAILED.labels(platform, reason) for reason in FAILURE_REASONS),
            *(REPLY_PHOTOS_REFUSED.labels(platform, reason) for reason in PHOTO_REFUSALS),
            *(REPLIES_POSTED.labels(platform, kind) for kind in kinds),
        ]
        created += len(series)
    return created
