"""The notifier's metrics: replies posted and failed, by platform; photos left out."""

from __future__ import annotations

from prometheus_client import Counter

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
