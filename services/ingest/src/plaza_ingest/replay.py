"""Publishes a JSON-lines file of posts, with a progress bar; bad lines are reported by number."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from plaza.bus import Bus
from plaza.contracts import Outgoing
from plaza.posts import PostIn
from pydantic import ValidationError
from tqdm import tqdm

from plaza_ingest.publish import post_received, publish


@dataclass
class ReplayReport:
    published: int = 0
    errors: list[str] = field(default_factory=list)


def read_posts(path: Path, report: ReplayReport, channel: str) -> Iterator[Outgoing | None]:
    """One item per non-empty line: its event, or None (and an error in the report)."""
    with path.open(encoding="utf-8") as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                yield post_received(PostIn.model_validate(json.loads(line)), channel)
            except json.JSONDecodeError as exc:
                report.errors.append(f"{path}:{number}: not valid JSON: {exc.msg}")
                yield None
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"]) or "post"
                report.errors.append(f"{path}:{number}: {where}: {err['msg']}")
                yield None


async def replay(
    bus: Bus,
    path: Path,
    *,
    batch_size: int = 500,
    channel: str = "replay",
    progress: bool = True,
    stderr: TextIO = sys.stderr,
) -> ReplayReport:
    """Publishes every valid line; an invalid line is reported and does not stop the rest."""
    report = ReplayReport()
    total = sum(1 for line in path.open(encoding="utf-8") if line.strip())
    batch: list[Outgoing] = []
    with tqdm(total=total, unit="post", disable=not progress, file=stderr) as bar:
        for event in read_posts(path, report, channel):
            if event is not None:
                batch.append(event)
            if len(batch) >= batch_size:
                await publish(bus, batch)
                report.published += len(batch)
                batch = []
            bar.update(1)
        if batch:
            await publish(bus, batch)
            report.published += len(batch)
    for error in report.errors:
        print(error, file=stderr)
    return report
