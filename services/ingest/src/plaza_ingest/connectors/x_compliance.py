"""X's batch compliance check: every few hours, the X posts Plaza still holds are asked about
through X's compliance jobs, and those their authors deleted (or whose accounts were
deactivated, protected or suspended) come out as deletions, the platform's own word.

X's v2 filtered stream and mentions timeline carry no deletes; X's documented way is the batch
compliance endpoints (docs.x.com, "Batch compliance", its quick start and API reference):
`POST /2/compliance/jobs` `{"type": "tweets", "name"}` answers a job (`id`, `status`,
`upload_url`, `download_url`, ...); the ids go to `upload_url` with a PUT, one per line, as
text/plain; `GET /2/compliance/jobs/:id` tells its status (`created`, `in_progress`, `complete`,
`failed`, `expired`); once complete, `download_url` gives one JSON object a line for each id
with a compliance event: `id`, `action`, `created_at`, `redacted_at`, `reason`. Both URLs are
signed storage URLs: they get no bearer token. An app has one job of a type at a time.

The connector's cursor is its progress (JSON: when the next round is due, and the job under way),
stored by the runner once a round's deletions are on the bus: a restart waits for the round due,
or resumes the job it had started instead of starting another."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Final

import httpx
from plaza.withdrawals import held_posts
from plaza.x import XAccount
from prometheus_client import Counter
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from plaza_ingest.connectors.base import Batch, Deletion
from plaza_ingest.connectors.x import PLATFORM, Json, _obj, _str, reset_in

log = logging.getLogger(__name__)

JOBS = "/2/compliance/jobs"
# What an author did that takes their post out of public view (docs.x.com, "Compliance data
# objects", recommended actions): a deleted post is deleted; a deactivated account's posts go
# with it; a protected account's posts are no longer public, and a suspended one's are not to
# be shown. Plaza publishes what it holds, so each withdraws the post. `scrub_geo`: the author
# took the post's location off it, and Plaza takes only its point out. Any other action is
# logged and counted.
WITHDRAWING: Final = frozenset({"delete", "deactivate", "protect", "suspend", "drop"})
LOCATION_WITHDRAWING: Final = frozenset({"scrub_geo"})
OUTCOMES: Final = (
    "complete",  # the job ran and its results were handed on
    "failed",  # X says the job failed
    "expired",  # X says the job expired before it completed
    "rate_limited",  # a 429: tried again at x-rate-limit-reset
    "refused",  # any other answer than success from X (the job's creation, its status)
    "upload_refused",  # the signed upload URL refused the ids
    "unreachable",  # X (or its storage) not reached, or no answer in time: tried again soon
)
# How soon a round that could not reach X is tried again (the job under way kept).
UNREACHABLE_RETRY_SECONDS: Final = 60.0

COMPLIANCE_ROUNDS = Counter(
    "plaza_x_compliance_rounds_total",
    "X compliance rounds, by how they ended (complete, failed, expired, rate_limited, refused, "
    "upload_refused, unreachable); one that did not complete is tried again at the next round "
    "(a rate_limited or unreachable one sooner)",
    ["outcome"],
)
COMPLIANCE_ACTIONS = Counter(
    "plaza_x_compliance_actions_total",
    "Compliance events X reported on posts Plaza holds, by action (delete, deactivate, protect, "
    "suspend, scrub_geo...)",
    ["action"],
)

HeldPosts = Callable[[], Awaitable[Sequence[str]]]


def held_in(sessions: async_sessionmaker[AsyncSession]) -> HeldPosts:
    """The X posts Plaza still holds, read from the database each round."""

    async def held() -> Sequence[str]:
        async with sessions() as session:
            return await held_posts(session, PLATFORM)

    return held


def start_at_zero() -> None:
    """Every outcome's series exists from the start, so that the first failure is an increase."""
    for outcome in OUTCOMES:
        COMPLIANCE_ROUNDS.labels(outcome)


@dataclass(frozen=True, slots=True)
class Progress:
    """When the next round is due, and the job under way (empty between rounds)."""

    due: datetime
    job: str = ""

    @classmethod
    def parse(cls, cursor: str | None, now: datetime) -> Progress:
        if not cursor:
            return cls(now)  # the very first start: check at once
        try:
            body = json.loads(cursor)
            return cls(datetime.fromisoformat(body["due"]), str(body.get("job", "")))
        except (ValueError, KeyError, TypeError):
            log.warning("x compliance: unreadable progress %r; checking now", cursor[:200])
            return cls(now)

    def dump(self) -> str:
        return json.dumps({"due": self.due.isoformat(), "job": self.job}, sort_keys=True)


class RoundFailed(Exception):
    """A round that did not complete; it is tried again `seconds` later (the next round if
    None), with the same job if `keep_job` (X runs one job of a type at a time)."""

    def __init__(
        self, outcome: str, reason: str, *, seconds: float | None = None, keep_job: bool = False
    ) -> None:
        super().__init__(reason)
        self.outcome = outcome
        self.seconds = seconds
        self.keep_job = keep_job


@dataclass(frozen=True, slots=True)
class JobPolling:
    """How often a job's status is asked: from `first` seconds, doubling, up to `most`."""

    first: float = 5.0
    most: float = 300.0

    def delay(self, n: int) -> float:
        return min(self.most, self.first * 2.0 ** (n - 1))


def deletions_in(results: str, asked: Sequence[str]) -> list[Deletion]:
    """The withdrawing compliance events of a job's results (JSON lines), for the ids asked: a
    post's, or (scrub_geo) its location's only."""
    wanted = set(asked)
    found: list[Deletion] = []
    for number, line in enumerate(results.splitlines(), 1):
        if not line.strip():
            continue
        try:
            event = _obj(json.loads(line))
        except ValueError:
            log.warning("x compliance: results line %d is not JSON: %r", number, line[:200])
            continue
        post_id, action = _str(event.get("id")), _str(event.get("action"))
        if post_id not in wanted:
            continue
        COMPLIANCE_ACTIONS.labels(action or "none").inc()
        if action in LOCATION_WITHDRAWING:
            found.append(Deletion(PLATFORM, post_id, deleted_at=_when(event), location_only=True))
        elif action in WITHDRAWING:
            found.append(Deletion(PLATFORM, post_id, deleted_at=_when(event)))
        else:
            log.info("x compliance: post %s: %s (%s) left as it is", post_id, action, event)
    return found


def _when(event: Json) -> datetime | None:
    for field in ("redacted_at", "event_at"):
        try:
            return datetime.fromisoformat(_str(event.get(field)).replace("Z", "+00:00"))
        except ValueError:
            continue
    return None


class XCompliance:
    """The compliance rounds of the X posts Plaza holds, as a connector of deletions only."""

    def __init__(
        self,
        account: XAccount,
        http: httpx.AsyncClient,
        held: HeldPosts,
        *,
        every: float | None = None,
        polling: JobPolling = JobPolling(),
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._account = account
        self._http = http
        self._held = held
        self._every = timedelta(seconds=every or account.compliance_hours * 3600)
        self._polling = polling
        self._clock = clock
        self.rounds = 0  # rounds that completed in this process
        start_at_zero()

    @property
    def name(self) -> str:
        return f"x:{self._account.user_id}:compliance"

    @property
    def platform(self) -> str:
        return PLATFORM

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._account.bearer_token.get_secret_value()}"}

    async def batches(self, cursor: str | None) -> AsyncIterator[Batch]:
        now = self._clock()
        progress = Progress.parse(cursor, now)
        # A shorter interval set since takes effect now, not at the round stored.
        progress = replace(progress, due=min(progress.due, now + self._every))
        yield Batch((), progress.dump())
        while True:
            wait = (progress.due - self._clock()).total_seconds()
            if wait > 0:
                await asyncio.sleep(wait)
            try:
                try:
                    async for step, deletions in self._round(progress):
                        progress = step
                        yield Batch((), progress.dump(), deletions)
                except httpx.TransportError as exc:
                    # Counted as a round that failed: an X out of reach for hours is what
                    # PlazaXComplianceFailing is for, and the runner's restarts count nothing.
                    raise RoundFailed(
                        "unreachable",
                        f"X not reached: {type(exc).__name__} {exc}".rstrip(),
                        seconds=UNREACHABLE_RETRY_SECONDS,
                        keep_job=True,
                    ) from exc
            except RoundFailed as exc:
                COMPLIANCE_ROUNDS.labels(exc.outcome).inc()
                later = self._every.total_seconds() if exc.seconds is None else exc.seconds
                job = progress.job if exc.keep_job else ""
                progress = Progress(self._clock() + timedelta(seconds=later), job)
                log.warning(
                    "%s: the round did not complete (%s: %s); next in %.0fs",
                    self.name,
                    exc.outcome,
                    exc,
                    later,
                )
                yield Batch((), progress.dump())

    async def _round(
        self, progress: Progress
    ) -> AsyncIterator[tuple[Progress, Sequence[Deletion]]]:
        """One round: a job (or the one under way), its upload, its status until it ends, its
        results. Yields the progress to store along the way, and the deletions at the end."""
        asked = list(await self._held())
        job = await self._resumed(progress.job) if progress.job else {}
        if _str(job.get("status")) == "created":
            # Its upload was refused, or did not go through: once more, then another job.
            await self._upload(job, asked, keep_job=False)
        elif not job and not asked:
            yield Progress(self._clock() + self._every), ()
            return
        elif not job:
            job = await self._create()
            yield replace(progress, job=_str(job.get("id"))), ()
            await self._upload(job, asked, keep_job=True)
        job = await self._until_done(job)
        results = await self._download(job)
        deletions = deletions_in(results, asked)
        COMPLIANCE_ROUNDS.labels("complete").inc()
        self.rounds += 1
        log.info(
            "%s: %d posts checked, %d withdrawn by X's compliance events",
            self.name,
            len(asked),
            len(deletions),
        )
        yield Progress(self._clock() + self._every), deletions

    def _check(self, response: httpx.Response, what: str) -> None:
        if response.is_success:
            return
        if response.status_code == 429:
            wait = reset_in(response)
            # A reset already past (clocks apart) still waits a second: no loop of 429s.
            seconds = 60.0 if wait is None else max(1.0, wait)
            raise RoundFailed("rate_limited", f"429 on {what}", seconds=seconds, keep_job=True)
        raise RoundFailed("refused", f"{response.status_code} on {what}: {response.text[:200]}")

    async def _create(self) -> Json:
        name = f"plaza-{self._account.user_id}-{self._clock():%Y%m%dT%H%M%S}"
        response = await self._http.post(
            f"{self._account.api_url}{JOBS}",
            json={"type": "tweets", "name": name},
            headers=self._headers(),
        )
        self._check(response, f"POST {JOBS}")
        job = _obj(_obj(response.json()).get("data"))
        if not _str(job.get("id")) or not _str(job.get("upload_url")):
            raise RoundFailed("refused", f"POST {JOBS} answered no job: {response.text[:200]}")
        log.info("%s: compliance job %s created", self.name, job.get("id"))
        return job

    async def _resumed(self, job_id: str) -> Json:
        """The job of an earlier round (or process), or {} if there is none to go on with: X
        no longer has it, or it failed or expired (counted): another is started."""
        response = await self._http.get(
            f"{self._account.api_url}{JOBS}/{job_id}", headers=self._headers()
        )
        if response.status_code == 404:
            log.warning("%s: job %s is unknown to X; starting another", self.name, job_id)
            return {}
        self._check(response, f"GET {JOBS}/{job_id}")
        job = _obj(_obj(response.json()).get("data"))
        status = _str(job.get("status"))
        if status in ("failed", "expired"):
            COMPLIANCE_ROUNDS.labels(status).inc()
            log.warning("%s: job %s %s; starting another", self.name, job_id, status)
            return {}
        return job

    async def _job(self, job_id: str) -> Json:
        response = await self._http.get(
            f"{self._account.api_url}{JOBS}/{job_id}", headers=self._headers()
        )
        self._check(response, f"GET {JOBS}/{job_id}")
        return _obj(_obj(response.json()).get("data"))

    async def _upload(self, job: Json, asked: Sequence[str], *, keep_job: bool) -> None:
        # A signed storage URL: the bearer token stays with X's API.
        response = await self._http.put(
            _str(job.get("upload_url")),
            content="\n".join(asked).encode(),
            headers={"Content-Type": "text/plain"},
        )
        if not response.is_success:
            raise RoundFailed(
                "upload_refused",
                f"job {job.get('id')}: the upload answered {response.status_code}: "
                f"{response.text[:200]}",
                keep_job=keep_job,
            )

    async def _until_done(self, job: Json) -> Json:
        polls = 0
        while (status := _str(job.get("status"))) != "complete":
            if status in ("failed", "expired"):
                raise RoundFailed(status, f"job {job.get('id')} {status}")
            polls += 1
            await asyncio.sleep(self._polling.delay(polls))
            job = await self._job(_str(job.get("id")))
        return job

    async def _download(self, job: Json) -> str:
        response = await self._http.get(_str(job.get("download_url")))
        if not response.is_success:
            raise RoundFailed(
                "refused", f"job {job.get('id')}: the download answered {response.status_code}"
            )
        return response.text
