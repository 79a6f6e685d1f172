"""The demo feed of `make run`: realistic posts in Catalan, Spanish and English, from all over Barcelona."""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from dataclasses import dataclass

import httpx

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoPost:
    author: str
    text: str
    lang: str = ""
    lat: float | None = None
    long: float | None = None


DEMO_POSTS: tuple[DemoPost, ...] = (
    DemoPost(
        "@marta_gracia",
        "Fa tres nits que el fanal del carrer de Verdi està apagat, a la Vila de Gràcia. Quan ho arreglareu?",
        "ca",
    ),
    DemoPost(
        "@jordi.bcn",
        "Hi ha un clot enorme a la calçada davant del mercat de Sant Antoni, perillós per a les motos.",
        "ca",
        41.3787,
        2.1622,
    ),
    DemoPost(
        "@lauralopez",
        "Contenedores desbordados en la calle Blai, Poble-sec. Huele fatal desde hace días.",
        "es",
    ),
    DemoPost(
        "@pau_sants",
        "Pintades noves a la façana de l'escola del carrer de Sants. Es poden netejar?",
        "ca",
        41.3755,
        2.1346,
    ),
    DemoPost(
        "@anna_horta",
        "Un arbre caigut al passeig de la Vall d'Hebron talla la vorera, urgent!",
        "ca",
        41.4262,
        2.1480,
    ),
    DemoPost(
        "@mike_in_bcn",
        "The traffic light at Diagonal and Passeig de Gràcia has been blinking orange all morning.",
        "en",
        41.3953,
        2.1617,
    ),
    DemoPost(
        "@carmen_nb",
        "Hay una fuga de agua en la calle de Fabra i Puig, Nou Barris, sale agua de la alcantarilla.",
        "es",
        41.4367,
        2.1785,
    ),
    DemoPost(
        "@sarah_travels",
        "Lots of rubbish and broken glass on the beach promenade at Barceloneta this morning.",
        "en",
        41.3790,
        2.1920,
    ),
    DemoPost(
        "@xavi_poblenou",
        "Els veïns del Poblenou no podem dormir pel soroll del bar de la rambla fins a les 3h.",
        "ca",
        41.4010,
        2.2010,
    ),
    DemoPost(
        "@lucia_corts",
        "Banco roto en la plaza de la Concòrdia, Les Corts. Alguien se va a hacer daño.",
        "es",
        41.3838,
        2.1310,
    ),
    DemoPost(
        "@tom_eixample",
        "Dead rat on the sidewalk of Carrer del Consell de Cent, Eixample. Please send someone.",
        "en",
        41.3868,
        2.1600,
    ),
    DemoPost(
        "@nuria_sarria",
        "El parc infantil de la plaça de Sarrià té un gronxador trencat des de fa setmanes.",
        "ca",
        41.3995,
        2.1220,
    ),
    DemoPost(
        "@andres_sa",
        "En Sant Andreu la parada de bus de la calle Gran de Sant Andreu tiene el cristal roto.",
        "es",
        41.4355,
        2.1900,
    ),
    DemoPost(
        "@ines_raval",
        "Moltes gràcies a l'equip de neteja del Raval, el carrer ha quedat impecable!",
        "ca",
    ),
    DemoPost(
        "@pepe_martinez",
        "Huele a gas en la escalera de vecinos de la calle Còrsega, Eixample. ¡Vengan rápido!",
        "es",
        41.3947,
        2.1589,
    ),
    DemoPost(
        "@emma_guinardo",
        "The streetlights on Carrer de la Mare de Déu de Montserrat in Guinardó are all out.",
        "en",
        41.4180,
        2.1680,
    ),
    DemoPost(
        "@oriol_clot",
        "Un cotxe abandonat fa dos mesos al carrer del Clot, amb les rodes punxades.",
        "ca",
        41.4090,
        2.1880,
    ),
    DemoPost(
        "@rosa_ciutatvella",
        "Terrazas ocupando toda la acera en la plaza Reial, no se puede pasar con el carrito.",
        "es",
        41.3800,
        2.1752,
    ),
    DemoPost("@dani_m", "Quin partit ahir al Camp Nou! Visca el Barça!", "ca"),
    DemoPost(
        "@li_wei",
        "A manhole cover is missing on Carrer de Pujades, Poblenou. Someone could fall in!",
        "en",
    ),
)


async def feed(ingest: httpx.AsyncClient, *, interval: float, run_id: str | None = None) -> None:
    """Posts the demo posts one by one, forever, each with a fresh id, through the webhook."""
    run = run_id or str(int(time.time()))
    for n, post in enumerate(itertools.cycle(DEMO_POSTS)):
        payload: dict[str, object] = {
            "platform": "demo",
            "post_id": f"{run}-{n}",
            "author_handle": post.author,
            "text": post.text,
        }
        if post.lang:
            payload["lang"] = post.lang
        if post.lat is not None and post.long is not None:
            payload["lat"], payload["long"] = post.lat, post.long
        try:
            response = await ingest.post("/api/v1/posts", json=payload)
            if response.status_code != 202:
                log.warning("demo post refused (%s): %s", response.status_code, response.text)
        except httpx.HTTPError as exc:
            log.warning("demo post failed: %s", exc)
        await asyncio.sleep(interval)
