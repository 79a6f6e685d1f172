"""`plaza classify`: JSON lines in, one classification per line out, refused lines named."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys

import orjson
from plaza.city import City
from plaza_classifier.classify import classify
from plaza_cli.classify_cmd import classify_lines
from typing_extensions import Buffer

from tests.infra import ROOT, SHARED_DATA

PLAZA = [sys.executable, "-c", "from plaza_cli.main import main; main()", "classify"]
FIELDS = {
    "id",
    "service_code",
    "service_confidence",
    "actionable",
    "district_code",
    "district_name",
    "barri_code",
    "district_source",
    "street_address",
    "language",
    "urgency",
    "model_version",
}
GRACIA = {"lat": 41.4027, "long": 2.1569}  # la Vila de Gràcia
SOL = {"lat": 40.4169, "long": -3.7035}  # Puerta del Sol, Madrid


def plaza_classify(stdin: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v for k, v in os.environ.items() if k not in {"PLAZA_CITY_CONFIG", "PLAZA_CITY_DATA_DIR"}
    }
    environment.update(env)
    return subprocess.run(
        [*PLAZA, "--no-progress"],
        input=stdin,
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def jsonl(*posts: object) -> str:
    return "".join((p if isinstance(p, str) else json.dumps(p)) + "\n" for p in posts)


def test_posts_are_classified_and_bad_lines_are_named_by_number() -> None:
    stdin = jsonl(
        {"id": "a1", "text": "El fanal del carrer de Verdi no funciona", **GRACIA},
        {"id": 2, "text": "Farola rota en Sant Martí", "address": "Rambla del Poblenou 1"},
        '{"id": 3, "text": "unterminated',
        {"id": 4, "text": "   "},
        "",
        {"id": 6, "text": "Thanks for all your work!", "lang": "en"},
        {"id": 7, "text": "Bache", "lat": 41.4},
    )
    result = plaza_classify(stdin, PLAZA_CITY_DATA_DIR=str(SHARED_DATA / "barcelona"))

    assert result.returncode == 1, result.stderr
    assert "line 3: not valid JSON" in result.stderr
    assert 'line 4: no "text"' in result.stderr
    assert 'line 7: "lat" and "long" must be given together' in result.stderr
    assert "line 6" not in result.stderr
    assert "3 posts classified, 3 lines refused" in result.stderr
    out = [json.loads(line) for line in result.stdout.splitlines()]
    assert [o["id"] for o in out] == ["a1", 2, 6]
    assert all(set(o) >= FIELDS for o in out)

    gracia, sant_marti, thanks = out
    assert gracia["district_source"] == "geo"
    assert (gracia["district_code"], gracia["district_name"]) == ("06", "Gràcia")
    assert gracia["barri_code"] == "31"
    assert gracia["service_code"] == "streetlight" and gracia["actionable"] is True
    assert gracia["language"] == "ca" and gracia["urgency"] == "normal"
    assert sant_marti["district_source"] == "text" and sant_marti["district_code"] == "10"
    assert sant_marti["barri_code"] == "68"  # the address names the barri: el Poblenou
    assert thanks["actionable"] is False and thanks["language"] == "en"
    assert thanks["district_source"] == "none" and thanks["district_code"] is None


def test_a_file_of_plaza_replay_keeps_its_post_ids() -> None:
    """The README pipes the same posts.jsonl to `plaza replay` and `plaza classify`."""
    stdin = jsonl(
        {"platform": "mastodon", "post_id": "1093", "author_handle": "@marta", "text": "Bache"},
        {"id": 7, "post_id": "1094", "text": "Farola rota"},
    )
    result = plaza_classify(stdin)
    assert result.returncode == 0, result.stderr
    assert [json.loads(line)["id"] for line in result.stdout.splitlines()] == ["1093", 7]


def test_clean_input_exits_0_and_a_configured_city_is_used() -> None:
    result = plaza_classify(
        jsonl({"id": 1, "text": "Farola fundida", **SOL}, {"id": 2, "text": "Basura en Tetuán"}),
        PLAZA_CITY_CONFIG=str(ROOT / "deploy" / "cities" / "madrid.toml"),
    )
    assert result.returncode == 0, result.stderr
    assert not re.search(r"^line \d+:", result.stderr, re.MULTILINE)  # no input line refused
    sol, tetuan = (json.loads(line) for line in result.stdout.splitlines())
    assert (sol["district_code"], sol["district_name"], sol["district_source"]) == (
        "01",
        "Centro",
        "geo",
    )
    assert sol["barri_code"] is None
    assert (tetuan["district_name"], tetuan["district_source"]) == ("Tetuán", "text")


def test_an_unusable_city_config_stops_with_the_variable_named() -> None:
    result = plaza_classify(jsonl({"id": 1, "text": "x"}), PLAZA_CITY_CONFIG="/nonexistent.toml")
    assert result.returncode == 2
    assert "PLAZA_CITY_CONFIG=/nonexistent.toml is not a file" in result.stderr
    assert result.stdout == ""


# --- in process: the same code as the service, batching, progress -------------------------------


class CountingWrites(io.BytesIO):
    def __init__(self) -> None:
        super().__init__()
        self.writes = 0

    def write(self, data: Buffer, /) -> int:
        self.writes += 1
        return super().write(data)


def test_output_is_what_the_classifier_service_computes_written_in_batches() -> None:
    city = City.barcelona()
    texts = ["Soroll a Gràcia cada nit", "Arbre caigut a la Diagonal", "Gas smell in Poblenou"]
    lines = [orjson.dumps({"id": n, "text": texts[n % 3]}) for n in range(2_500)]
    out, err = CountingWrites(), io.StringIO()

    report = classify_lines(lines, city, out, err, progress_after=None)

    assert (report.classified, report.refused) == (2_500, 0)
    assert out.writes == 3  # 1,000 + 1,000 + 500
    assert err.getvalue() == ""
    results = [orjson.loads(line) for line in out.getvalue().splitlines()]
    for n in range(3):
        expected = classify(texts[n], city)
        got = results[n]
        assert got["service_code"] == expected.service_code
        assert got["service_confidence"] == expected.service_confidence
        assert got["actionable"] == expected.actionable
        assert got["urgency"] == expected.urgency
        assert got["language"] == expected.language
        assert got["model_version"] == expected.model_version
        assert got["district_code"] == (
            expected.location.district.code if expected.location.district else None
        )


def test_an_address_places_a_post_as_in_the_service() -> None:
    out, err = io.BytesIO(), io.StringIO()
    lines = [
        orjson.dumps({"id": 1, "text": "fanal apagat", "address": "Carrer de Verdi 20, Gràcia"}),
        orjson.dumps({"id": 2, "text": "fanal apagat", "address": 20}),
    ]
    report = classify_lines(lines, City.barcelona(), out, err, progress_after=None)
    assert (report.classified, report.refused) == (1, 1)
    [placed] = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert (placed["district_code"], placed["district_source"]) == ("06", "text")
    assert err.getvalue().startswith("line 2: ") and '"address"' in err.getvalue()


def test_a_post_without_an_address_shows_the_street_its_text_names() -> None:
    out, err = io.BytesIO(), io.StringIO()
    lines = [
        orjson.dumps({"id": 1, "text": "Huge pothole on Avinguda Diagonal 640"}),
        orjson.dumps({"id": 2, "text": "Bache", "address": "Carrer de Verdi 20"}),
    ]
    classify_lines(lines, City.barcelona(), out, err, progress_after=None)
    results = [orjson.loads(line) for line in out.getvalue().splitlines()]
    assert [r["street_address"] for r in results] == ["Avinguda Diagonal 640", None]
    assert results[0]["district_source"] == "none"


def test_a_long_input_shows_a_progress_bar_and_errors_still_name_their_line() -> None:
    city = City.barcelona()
    lines = [b'{"id": %d, "text": "Farola rota"}' % n for n in range(1_500)]
    lines[1_200] = b"[1, 2"
    out, err = io.BytesIO(), io.StringIO()

    report = classify_lines(lines, city, out, err, progress_after=1_000)

    assert (report.classified, report.refused) == (1_499, 1)
    assert "posts" in err.getvalue()
    assert "line 1201: not valid JSON" in err.getvalue()
    assert len(out.getvalue().splitlines()) == 1_499
