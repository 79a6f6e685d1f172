"""The classifier's handler: post-received in, post-classified out. Stateless and deterministic."""

from __future__ import annotations

from collections.abc import Sequence

from plaza.city import City, Location
from plaza.contracts import (
    LOCATION_SOURCE_GEO,
    LOCATION_SOURCE_NONE,
    LOCATION_SOURCE_TEXT,
    URGENCY_NORMAL,
    URGENCY_URGENT,
    Envelope,
    Outgoing,
    Placement,
    Post,
    PostClassified,
    derive_event_id,
    envelope,
    post_key,
)
from plaza.worker import Rejected

from plaza_classifier.classify import Classification, Classifier, PostInput, default_classifier

GROUP = "plaza-classifier"

_SOURCES = {
    "geo": LOCATION_SOURCE_GEO,
    "text": LOCATION_SOURCE_TEXT,
    "none": LOCATION_SOURCE_NONE,
}


def placement(location: Location) -> Placement:
    return Placement(
        district_code=location.district.code if location.district else "",
        district_name=location.district.name if location.district else "",
        barri_code=location.barri.code if location.barri else "",
        barri_name=location.barri.name if location.barri else "",
        source=_SOURCES[location.source],
        confidence=location.confidence,
    )


class ClassifyPost:
    def __init__(self, city: City, classifier: Classifier | None = None) -> None:
        self._city = city
        self._classifier = classifier or default_classifier()

    async def __call__(self, event: Envelope) -> Sequence[Outgoing]:
        post = event.post_received.post
        _check(post)
        result = self._classifier.classify(
            post.text,
            self._city,
            lat=post.latitude if post.HasField("latitude") else None,
            lon=post.longitude if post.HasField("longitude") else None,
            language_hint=post.language,
            service_code_hint=post.service_code,
            address=post.address,
        )
        return [_classified(event, post, result)]

    async def batch(self, events: Sequence[Envelope]) -> Sequence[Outgoing]:
        """Classifies several posts at once (the worker's batch handler): the model scores them
        in one matrix product, with the answers classify() gives one by one. A post that
        cannot be classified fails the batch, which the worker then takes one by one (so only
        that post is dead-lettered)."""
        posts = [event.post_received.post for event in events]
        for post in posts:
            _check(post)
        results = self._classifier.classify_batch(
            [
                PostInput(
                    text=post.text,
                    lat=post.latitude if post.HasField("latitude") else None,
                    lon=post.longitude if post.HasField("longitude") else None,
                    language_hint=post.language,
                    service_code_hint=post.service_code,
                    address=post.address,
                )
                for post in posts
            ],
            self._city,
        )
        return [
            _classified(event, post, result)
            for event, post, result in zip(events, posts, results, strict=True)
        ]


def _check(post: Post) -> None:
    if not post.platform or not post.post_id:
        raise Rejected("post has no platform or post_id")
    if not post.text.strip():
        raise Rejected(f"post {post.platform}:{post.post_id} has no text")


def _classified(event: Envelope, post: Post, result: Classification) -> Outgoing:
    body = PostClassified(
        post=post,
        service_code=result.service_code,
        service_confidence=result.service_confidence,
        actionable=result.actionable,
        placement=placement(result.location),
        language=result.language,
        urgency=URGENCY_URGENT if result.urgency == "urgent" else URGENCY_NORMAL,
        model_version=result.model_version,
        street_address=result.street_address,
    )
    return envelope(
        body,
        key=post_key(post.platform, post.post_id),
        event_id=derive_event_id("post-classified", event.event_id),
        correlation_id=event.correlation_id or event.event_id,
    )
