"""The street matcher's cost per post (plaza.city.streets), beside the place-name matcher's.

Usage: uv run python -m bench.streets [POSTS]
The posts are the demo feed's (make run's: street names, barris, chatter, in Catalan, Spanish
and English) and the bench's (bench/posts.py), folded beforehand as the classifier folds each
post once for its model and its places. Each matcher reads every post nine times, in turns; the
figure is the best of the nine, in microseconds per post, with the share of posts given a street.
"""

from __future__ import annotations

import sys
import timeit
from itertools import islice

from plaza.city import City, fold
from plaza_cli.demo import posts as demo_posts

from bench.posts import generate


def texts(n: int) -> list[str]:
    half = n // 2
    demo = [p.text for p in islice(demo_posts(7), half)]
    bench = [p.text for p in generate(n - half, seed=7, platform="bench").posts]
    return demo + bench


def main(argv: list[str]) -> None:
    n = int(argv[0]) if argv else 4000
    city = City.barcelona()
    cased = [fold(t, keep_case=True) for t in texts(n)]
    lowered = [t.lower() for t in cased]
    found = sum(city.find_street_in_folded(t) is not None for t in lowered)

    def streets() -> None:
        for t in lowered:
            city.find_street_in_folded(t)

    def places() -> None:
        for t in cased:
            city.find_in_folded(t)

    # taken in turns, so that a burst of the machine's other work slows both alike
    times: dict[str, list[float]] = {"streets": [], "places": []}
    for _ in range(9):
        times["streets"].append(timeit.timeit(streets, number=1))
        times["places"].append(timeit.timeit(places, number=1))
    for name, runs in times.items():
        print(f"{name}: {min(runs) / len(lowered) * 1e6:.2f} µs a post over {len(lowered)} posts")
    print(f"posts given a street: {found} of {len(lowered)} ({found / len(lowered):.0%})")


if __name__ == "__main__":
    main(sys.argv[1:])
