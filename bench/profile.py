"""`make profile`: where each service spends its CPU in a burst, sampled by py-spy.

    uv run --frozen python -m bench.profile [--posts 20000] [--out .plaza/profile]

Starts what `make bench` starts (Kafka, PostgreSQL, each service as its own process), warms it
up, then publishes the posts at once while py-spy samples each service on their path, and prints:
- the CPU per post of each process over the burst (the services, PostgreSQL, Kafka), as
  `make bench` measures it;
- for each service, the functions with the most samples: by their own time ("self", where the
  CPU is spent) and with what they call ("total", which code to look at).

Each service's samples are kept as collapsed stacks in `--out` (`<service>.txt`, one line per
stack: `frame;frame;... count`), the format flamegraph.pl, inferno and speedscope
(`npx speedscope <file>`) draw flame graphs from. py-spy samples only running threads, so a
service waiting on Kafka or PostgreSQL adds no samples, and it slows what it samples a little:
the throughput printed is below `make bench`'s.

py-spy reads the services' memory with ptrace: it runs as root, or as the services' user where
`kernel.yama.ptrace_scope` is 0 (a container needs the SYS_PTRACE capability).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from bench import cpu
from bench.pipeline import burst_phase, percentile, rate_phase
from bench.posts import generate
from bench.run import WARM_UP, pipeline_meter
from bench.stack import infrastructure, plaza_stack

ROOT = Path(__file__).resolve().parent.parent
RATE = 250  # samples a second
RUNNER = "Runner.run (asyncio/runners.py)"
EVENT_LOOP = "(its own time is the event loop's: uvloop's sockets, timers and callbacks)"
NO_FRAME = "(no Python frame: native code, the interpreter itself)"
_FRAME = re.compile(r"^(?P<function>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


@dataclass
class Profile:
    """Samples of one process, by function (a function's lines taken together)."""

    samples: int = 0
    own: Counter[str] = field(default_factory=Counter)  # the function was running
    within: Counter[str] = field(default_factory=Counter)  # the function was on the stack

    def top(self, counter: Counter[str], n: int) -> list[tuple[float, str]]:
        return [(count / self.samples * 100, name) for name, count in counter.most_common(n)]


def function_of(frame: str) -> str:
    """`Lexicon.matches (plaza_classifier/lexicon.py:62)` -> `Lexicon.matches
    (plaza_classifier/lexicon.py)`: the lines of a function count together."""
    found = _FRAME.match(frame)
    return f"{found['function']} ({found['file']})" if found else frame


def read_collapsed(lines: Iterable[str]) -> Profile:
    """A Profile of collapsed stacks (`root;...;leaf count`, py-spy's raw format). A line that is
    not one is an error naming it: a profile read wrongly would point at the wrong code."""
    profile = Profile()
    for number, line in enumerate(lines, 1):
        line = line.rstrip("\n")
        if not line.strip():
            continue
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            raise ValueError(f"line {number} is not `frame;frame;... count`: {line[:120]!r}")
        samples = int(count)
        # py-spy writes an empty stack for a thread sampled outside any Python frame
        functions = [function_of(frame) for frame in stack.split(";")] if stack else [NO_FRAME]
        profile.samples += samples
        profile.own[functions[-1]] += samples
        for function in set(functions):
            profile.within[function] += samples
    return profile


def py_spy() -> str:
    found = shutil.which(
        "py-spy", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    )
    if found is None:
        sys.exit("py-spy is not installed: `make env` installs it (a dev dependency)")
    return found


@contextmanager
def sampling(pids: dict[str, int], out: Path) -> Iterator[dict[str, Path]]:
    """py-spy samples each process while the block runs; yields where each one's stacks go.
    A process py-spy cannot sample (gone, or no ptrace allowed) is an error naming it."""
    out.mkdir(parents=True, exist_ok=True)
    files = {name: out / f"{name}.txt" for name in pids}
    logs = {name: out / f"{name}.py-spy.log" for name in pids}
    spies: dict[str, subprocess.Popen[bytes]] = {}
    try:
        for name, pid in pids.items():
            with logs[name].open("wb") as log:
                spies[name] = subprocess.Popen(
                    [
                        py_spy(),
                        "record",
                        *("--pid", str(pid), "--rate", str(RATE), "--format", "raw"),
                        *("--output", str(files[name])),
                        "--nonblocking",  # reads the process as it runs: less slowed
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
        time.sleep(1.0)  # attached (or failed) by now
        failed = [name for name, spy in spies.items() if spy.poll() is not None]
        if failed:
            raise RuntimeError(
                "py-spy could not sample "
                + "; ".join(
                    f"{name} (pid {pids[name]}): {why(logs[name], pids[name])}" for name in failed
                )
            )
        yield files
    finally:
        for spy in spies.values():
            if spy.poll() is None:
                spy.send_signal(signal.SIGINT)  # py-spy writes what it has and exits
        for name, spy in spies.items():
            try:
                spy.wait(30)
            except subprocess.TimeoutExpired:
                spy.kill()
                spy.wait(5)
                print(f"warning: py-spy of {name} did not stop; its profile may be missing")


def why(log: Path, pid: int) -> str:
    """Why py-spy stopped: the first error line it wrote (a Rust backtrace follows it)."""
    if not psutil.pid_exists(pid):
        return "no such process"
    lines = [line.strip() for line in log.read_text(errors="replace").splitlines() if line.strip()]
    said = next((line for line in lines if line.startswith("Error")), lines[0] if lines else "")
    return f"{said} (py-spy needs ptrace: root, or kernel.yama.ptrace_scope=0)"


def ours(function: str) -> bool:
    """Whether a function is Plaza's code (or the bench's): what a profile should lead to."""
    return function.rpartition(" (")[2].startswith(("plaza", "bench/"))


def shown_as(function: str) -> str:
    return f"{function}  {EVENT_LOOP}" if function == RUNNER else function


def report(files: dict[str, Path], shown: int) -> None:
    for name, path in files.items():
        if not path.exists():
            print(f"\n{name}: no samples written ({path})")
            continue
        profile = read_collapsed(path.read_text().splitlines())
        print(f"\n{name}: {profile.samples} samples, {path}")
        if not profile.samples:
            continue
        print(f"  {'self %':>7}  function")
        for share, function in profile.top(profile.own, shown):
            print(f"  {share:7.1f}  {shown_as(function)}")
        # what every stack goes through (the module's main, the service's run) says nothing
        common = 0.8 * (profile.samples - profile.own[NO_FRAME])
        code = Counter({f: n for f, n in profile.within.items() if ours(f) and n < common})
        print(f"  {'total %':>7}  Plaza's functions, with what they call")
        for share, function in profile.top(code, shown):
            print(f"  {share:7.1f}  {function}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=20_000, help="posts of the burst")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="publish the posts at this rate a second instead of at once (where the CPU goes at "
        "a moderate rate: smaller batches, and the idle work between them)",
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".plaza/profile", help="where the stacks go"
    )
    parser.add_argument("--top", type=int, default=15, help="functions shown per list")
    parser.add_argument(
        "--services",
        default="classifier,router,relay,notifier",
        help="the services to sample (comma-separated; ingest and api are off the burst's path: "
        "it publishes onto post-received itself)",
    )
    args = parser.parse_args()
    wanted = [name.strip() for name in args.services.split(",") if name.strip()]
    logs = Path(tempfile.mkdtemp(prefix="plaza-profile-logs-"))
    with infrastructure() as infra, plaza_stack(infra, logs) as stack:
        unknown = sorted(set(wanted) - set(stack.services))
        if unknown:
            sys.exit(
                f"no such service: {', '.join(unknown)} (the stack runs {', '.join(stack.services)})"
            )
        bootstrap = infra.kafka.bootstrap
        print(f"warm-up: {WARM_UP} posts", file=sys.stderr)
        asyncio.run(burst_phase(stack, bootstrap, generate(WARM_UP, seed=1, platform="warmup")))
        mix = generate(args.posts, seed=args.seed, platform="bench-burst")
        pids = {name: pid for name in wanted if (pid := stack.pid(name)) is not None}
        meter = pipeline_meter(infra, stack)
        how = "at once" if args.rate is None else f"at {args.rate:.0f}/s"
        print(f"{len(mix.posts)} posts {how}, sampling {', '.join(pids)}", file=sys.stderr)
        with sampling(pids, args.out) as files:
            if args.rate is None:
                burst = asyncio.run(burst_phase(stack, bootstrap, mix, meter))
            else:
                burst = asyncio.run(rate_phase(stack, bootstrap, mix, args.rate, meter))
            used = burst.cpu
        print(
            f"\n{burst.published} posts in {burst.seconds_to_routed:.1f} s "
            f"({burst.throughput:.0f} posts/s while sampled), {burst.lost} lost; p50/p99 to routed "
            f"{percentile(burst.routed_ms, 0.5):.1f}/{percentile(burst.routed_ms, 0.99):.1f} ms"
        )
        us = cpu.per_post_us(used, burst.published)
        print(f"\n{'process':<12}{'CPU us/post':>12}")
        for name, value in sorted(us.items(), key=lambda item: -item[1]):
            print(f"{name:<12}{value:>12.1f}")
        report(files, args.top)
    print(f"\nstacks in {args.out}; service logs in {logs}")


if __name__ == "__main__":
    main()
