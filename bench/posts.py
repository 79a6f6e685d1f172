"""Deterministic posts for the bench: a ca/es/en mix, about 30% geotagged in Barcelona, with
exact re-sends (the same post twice) and near-duplicates (a second neighbour reporting it)."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# (language, problem, where) fragments; {street} is filled from STREETS.
PROBLEMS: dict[str, tuple[str, ...]] = {
    "ca": (
        "El fanal del {street} no funciona des de fa {n} nits",
        "Hi ha un clot enorme a la calçada del {street}, perillós per a les motos",
        "Contenidors desbordats al {street}, fa una pudor horrible des de fa {n} dies",
        "Pintades noves a la façana de l'escola del {street}. Es poden netejar?",
        "Un arbre caigut al {street} talla la vorera, urgent!",
        "El semàfor del {street} fa pampallugues tot el matí",
        "Un cotxe abandonat fa {n} setmanes al {street}, amb les rodes punxades",
        "El gronxador del parc infantil del {street} està trencat des de fa {n} setmanes",
        "Soroll de la terrassa del bar del {street} fins a les 3h, no podem dormir",
        "Fuita d'aigua al {street}, surt aigua de la claveguera",
    ),
    "es": (
        "La farola de la {street} lleva {n} noches apagada",
        "Hay un bache enorme en la calzada de la {street}, es peligroso",
        "Contenedores desbordados en la {street}, huele fatal desde hace {n} días",
        "Pintadas nuevas en la fachada de la {street}, ¿se pueden limpiar?",
        "Un árbol caído en la {street} bloquea la acera, ¡urgente!",
        "El semáforo de la {street} parpadea en naranja toda la mañana",
        "Banco roto en la {street}, alguien se va a hacer daño",
        "Hay una fuga de agua en la {street}, sale agua de la alcantarilla",
        "Terrazas ocupando toda la acera en la {street}, no se puede pasar con el carrito",
        "Huele a gas en la escalera de vecinos de la {street}, ¡vengan rápido!",
    ),
    "en": (
        "The streetlight on {street} has been out for {n} nights",
        "There is a huge pothole on {street}, dangerous for scooters",
        "The bins on {street} have not been emptied for {n} days, please send someone",
        "New graffiti on the school wall on {street}, can it be cleaned?",
        "A fallen tree on {street} blocks the pavement, urgent!",
        "The traffic light at {street} has been blinking orange all morning",
        "Dead rat on the sidewalk of {street}. Please send someone.",
        "A manhole cover is missing on {street}. Someone could fall in!",
    ),
}
CHATTER: dict[str, tuple[str, ...]] = {
    "ca": (
        "Quin partit ahir al Camp Nou! Visca el Barça!",
        "Moltes gràcies, el carrer ha quedat impecable!",
    ),
    "es": ("¡Qué buen día hace hoy en la playa!", "Gracias al equipo de limpieza, ¡todo perfecto!"),
    "en": (
        "Loving the sunset from Bunkers del Carmel tonight",
        "Thanks for the quick fix, great job!",
    ),
}
STREETS = (
    "carrer de Verdi",
    "carrer de Blai",
    "carrer de Sants",
    "passeig de la Vall d'Hebron",
    "carrer de Fabra i Puig",
    "carrer del Consell de Cent",
    "carrer de Pujades",
    "carrer del Clot",
    "carrer Gran de Sant Andreu",
    "plaça de Sarrià",
    "rambla del Poblenou",
    "carrer de Còrsega",
    "avinguda Diagonal",
    "carrer de Sant Antoni Abat",
    "carrer de Mallorca",
    "carrer d'Aragó",
    "carrer de la Marina",
    "carrer de Balmes",
    "carrer de Muntaner",
    "carrer de Provença",
)
# Most people who name a street give the number too ("carrer de Blai 23"). Without numbers, every
# post about one street's lights would be the same place for the duplicate check (Plaza reads
# streets and numbers since the street register): with 20 streets, 63% of the feed's requests
# merged, not the near-duplicates and re-sends it is made of.
HOUSE_NUMBERED = 0.7
LANGUAGE_MIX = (("ca", 0.45), ("es", 0.40), ("en", 0.15))
# The dense part of the city (all of it inside the municipality).
LAT_RANGE = (41.372, 41.430)
LONG_RANGE = (2.125, 2.195)


@dataclass(frozen=True, slots=True)
class BenchPost:
    """One post as the webhook takes it, minus created_at (stamped when it is published)."""

    platform: str
    post_id: str
    author_handle: str
    text: str
    lang: str
    lat: float | None = None
    long: float | None = None


@dataclass
class PostMix:
    posts: list[BenchPost] = field(default_factory=list)
    resends: int = 0  # the same (platform, post_id) again: one event, routed once
    near_duplicates: int = 0  # the same problem at the same place from another neighbour
    chatter: int = 0  # not a request
    geotagged: int = 0

    @property
    def distinct(self) -> int:
        return len(self.posts) - self.resends


def generate(n: int, *, seed: int, platform: str) -> PostMix:
    """n posts, the same ones for the same seed. Near-duplicates and re-sends repeat an earlier
    post of the same run, so they land within the router's duplicate window."""
    rng = random.Random(seed)
    mix = PostMix()
    languages = [lang for lang, _ in LANGUAGE_MIX]
    weights = [w for _, w in LANGUAGE_MIX]
    for i in range(n):
        roll = rng.random()
        if mix.posts and roll < 0.03:
            mix.posts.append(rng.choice(mix.posts))
            mix.resends += 1
            continue
        if mix.posts and roll < 0.11:
            earlier = rng.choice(mix.posts)
            mix.posts.append(
                BenchPost(
                    platform,
                    f"{seed}-{i}",
                    f"@neighbour{rng.randrange(100_000)}",
                    earlier.text,
                    earlier.lang,
                    earlier.lat,
                    earlier.long,
                )
            )
            mix.near_duplicates += 1
            mix.geotagged += earlier.lat is not None
            continue
        lang = rng.choices(languages, weights)[0]
        if roll > 0.92:
            text = rng.choice(CHATTER[lang])
            mix.chatter += 1
        else:
            street = rng.choice(STREETS)
            if rng.random() < HOUSE_NUMBERED:
                street = f"{street} {rng.randint(1, 300)}"
            text = rng.choice(PROBLEMS[lang]).format(street=street, n=rng.randint(2, 9))
        lat = lon = None
        if rng.random() < 0.30:
            lat = round(rng.uniform(*LAT_RANGE), 6)
            lon = round(rng.uniform(*LONG_RANGE), 6)
            mix.geotagged += 1
        mix.posts.append(
            BenchPost(
                platform,
                f"{seed}-{i}",
                f"@citizen{rng.randrange(100_000)}",
                text,
                lang if rng.random() < 0.7 else "",  # not every platform says the language
                lat,
                lon,
            )
        )
    return mix
