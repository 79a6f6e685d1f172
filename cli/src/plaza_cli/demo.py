"""The demo feed of `make run`: realistic posts in Catalan, Spanish and English, from all over Barcelona.

The posts are made up as the feed runs, from each service's ways of telling a problem, streets
and barris of every district and a crowd of authors that keeps growing, so that the queues keep
filling: most posts open a request of their own, and a few percent are another neighbour
reporting a problem reported a little earlier, which the router merges as a duplicate."""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import cache

import httpx
from plaza.city import City, names
from plaza.settings import SettingsError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class DemoPost:
    """A post of the demo feed: what the webhook is given, less the platform and the id."""

    author: str
    text: str
    lang: str = ""
    lat: float | None = None
    long: float | None = None


@dataclass(frozen=True, slots=True)
class Street:
    """A street where the demo's problems happen: its name in Catalan and in Spanish (without
    the article), the barri posts name with it (a name the city recognises), its district and a
    point on it."""

    ca: str
    es: str
    barri: str
    district_code: str
    lat: float
    long: float

    def name(self, lang: str) -> str:
        """The name as a post in `lang` writes it: with its article in Catalan and Spanish."""
        if lang == "en":
            return self.ca[0].upper() + self.ca[1:]
        name = self.es if lang == "es" else self.ca
        article = _ARTICLES[lang][name.split()[0]]
        return f"{article}{name}" if article.endswith("'") else f"{article} {name}"


_ARTICLES: Mapping[str, Mapping[str, str]] = {
    "ca": {
        "carrer": "el",
        "passeig": "el",
        "avinguda": "l'",
        "via": "la",
        "plaça": "la",
        "rambla": "la",
        "travessera": "la",
    },
    "es": {
        "calle": "la",
        "paseo": "el",
        "avenida": "la",
        "vía": "la",
        "plaza": "la",
        "rambla": "la",
        "travesera": "la",
    },
}
# "a el carrer" is "al carrer", "de el paseo" is "del paseo", "per el" is "pel".
_CONTRACTIONS: Mapping[str, tuple[re.Pattern[str], Mapping[str, str]]] = {
    "ca": (re.compile(r"\b(a|de|per) el\b"), {"a": "al", "de": "del", "per": "pel"}),
    "es": (re.compile(r"\b(a|de) el\b"), {"a": "al", "de": "del"}),
}


# Six to nine streets in each of the ten districts, a point on each checked against the
# CartoBCN barri polygons and against the built-in city's barri centres.
STREETS: tuple[Street, ...] = (
    Street("carrer de Joaquín Costa", "calle Joaquín Costa", "el Raval", "01", 41.3826, 2.1657),
    Street("carrer de l'Hospital", "calle del Hospital", "el Raval", "01", 41.3797, 2.1700),
    Street("carrer d'en Robador", "calle d'en Robador", "el Raval", "01", 41.3786, 2.1720),
    Street("carrer de la Palla", "calle de la Palla", "Barri Gòtic", "01", 41.3838, 2.1748),
    Street("carrer d'Avinyó", "calle Avinyó", "Barri Gòtic", "01", 41.3812, 2.1772),
    Street("carrer del Baluard", "calle del Baluard", "la Barceloneta", "01", 41.3795, 2.1895),
    Street("carrer de Sant Carles", "calle Sant Carles", "la Barceloneta", "01", 41.3787, 2.1899),
    Street("carrer de la Princesa", "calle Princesa", "el Born", "01", 41.3853, 2.1800),
    Street("carrer del Rec", "calle del Rec", "el Born", "01", 41.3850, 2.1838),
    Street(
        "carrer del Consell de Cent",
        "calle Consell de Cent",
        "Antiga Esquerra de l'Eixample",
        "02",
        41.3864,
        2.1572,
    ),
    Street(
        "carrer d'Enric Granados",
        "calle Enric Granados",
        "Antiga Esquerra de l'Eixample",
        "02",
        41.3905,
        2.1567,
    ),
    Street("carrer de Girona", "calle Girona", "Dreta de l'Eixample", "02", 41.3940, 2.1712),
    Street("carrer del Bruc", "calle Bruc", "Dreta de l'Eixample", "02", 41.3925, 2.1705),
    Street("carrer de Sicília", "calle Sicília", "Sagrada Família", "02", 41.4038, 2.1765),
    Street("carrer de Provença", "calle Provença", "Sagrada Família", "02", 41.4045, 2.1785),
    Street("carrer del Comte Borrell", "calle Comte Borrell", "Sant Antoni", "02", 41.3783, 2.1590),
    Street("carrer de Parlament", "calle Parlament", "Sant Antoni", "02", 41.3752, 2.1630),
    Street(
        "carrer de Rocafort",
        "calle Rocafort",
        "Nova Esquerra de l'Eixample",
        "02",
        41.3812,
        2.1500,
    ),
    Street("carrer de Nàpols", "calle Nàpols", "Fort Pienc", "02", 41.3960, 2.1808),
    Street("carrer de Blai", "calle Blai", "Poble-sec", "03", 41.3710, 2.1615),
    Street("carrer de la França Xica", "calle França Xica", "Poble-sec", "03", 41.3705, 2.1555),
    Street("carrer de Sants", "calle de Sants", "Sants", "03", 41.3760, 2.1360),
    Street("carrer de Valladolid", "calle Valladolid", "Sants", "03", 41.3795, 2.1370),
    Street("carrer de la Creu Coberta", "calle Creu Coberta", "Hostafrancs", "03", 41.3755, 2.1445),
    Street(
        "carrer de la Constitució",
        "calle de la Constitució",
        "la Bordeta",
        "03",
        41.3700,
        2.1365,
    ),
    Street("carrer de Badal", "calle Badal", "Sants-Badal", "03", 41.3745, 2.1285),
    Street(
        "carrer de la Mare de Déu de Port",
        "calle Mare de Déu de Port",
        "Marina de Port",
        "03",
        41.3585,
        2.1420,
    ),
    Street("carrer de la Foneria", "calle Foneria", "Zona Franca", "03", 41.3540, 2.1405),
    Street("travessera de les Corts", "travesera de Les Corts", "les Corts", "04", 41.3832, 2.1300),
    Street("carrer de Numància", "calle Numància", "les Corts", "04", 41.3865, 2.1385),
    Street("carrer de Galileu", "calle Galileu", "les Corts", "04", 41.3825, 2.1345),
    Street(
        "carrer del Cardenal Reig",
        "calle Cardenal Reig",
        "la Maternitat",
        "04",
        41.3790,
        2.1170,
    ),
    Street(
        "carrer de Sant Ramon Nonat",
        "calle Sant Ramon Nonat",
        "la Maternitat",
        "04",
        41.3792,
        2.1115,
    ),
    Street("avinguda de Pedralbes", "avenida de Pedralbes", "Pedralbes", "04", 41.3925, 2.1135),
    Street("carrer Major de Sarrià", "calle Major de Sarrià", "Sarrià", "05", 41.3995, 2.1215),
    Street(
        "passeig de la Reina Elisenda",
        "paseo de la Reina Elisenda",
        "Sarrià",
        "05",
        41.3975,
        2.1180,
    ),
    Street("carrer de Ganduxer", "calle Ganduxer", "les Tres Torres", "05", 41.3975, 2.1330),
    Street("passeig de la Bonanova", "paseo de la Bonanova", "la Bonanova", "05", 41.4060, 2.1295),
    Street("carrer de Muntaner", "calle Muntaner", "Sant Gervasi-Galvany", "05", 41.3975, 2.1435),
    Street("carrer de Calaf", "calle Calaf", "Sant Gervasi-Galvany", "05", 41.3960, 2.1455),
    Street("carrer de Balmes", "calle Balmes", "el Putxet", "05", 41.4065, 2.1410),
    Street("plaça de Pep Ventura", "plaza de Pep Ventura", "Vallvidrera", "05", 41.4155, 2.1040),
    Street("carrer de Verdi", "calle Verdi", "Vila de Gràcia", "06", 41.4036, 2.1566),
    Street(
        "carrer del Torrent de l'Olla",
        "calle Torrent de l'Olla",
        "Vila de Gràcia",
        "06",
        41.4010,
        2.1580,
    ),
    Street("carrer de Bonavista", "calle Bonavista", "Vila de Gràcia", "06", 41.3980, 2.1570),
    Street("carrer de Larrard", "calle Larrard", "barri de la Salut", "06", 41.4115, 2.1540),
    Street("avinguda de Vallcarca", "avenida de Vallcarca", "Vallcarca", "06", 41.4125, 2.1440),
    Street("carrer de Sant Lluís", "calle Sant Lluís", "Camp d'en Grassot", "06", 41.4055, 2.1625),
    Street(
        "carrer de la Mare de Déu del Coll",
        "calle Mare de Déu del Coll",
        "barri del Coll",
        "06",
        41.4185,
        2.1465,
    ),
    Street("carrer de Cartagena", "calle Cartagena", "Baix Guinardó", "07", 41.4105, 2.1700),
    Street(
        "carrer de la Mare de Déu de Montserrat",
        "calle Mare de Déu de Montserrat",
        "el Guinardó",
        "07",
        41.4178,
        2.1685,
    ),
    Street("carrer de Llobregós", "calle Llobregós", "el Carmel", "07", 41.4225, 2.1565),
    Street(
        "passeig de la Vall d'Hebron",
        "paseo de la Vall d'Hebron",
        "Vall d'Hebron",
        "07",
        41.4262,
        2.1480,
    ),
    Street("carrer d'Horta", "calle de Horta", "barri d'Horta", "07", 41.4370, 2.1585),
    Street("carrer de Can Baró", "calle Can Baró", "Can Baró", "07", 41.4160, 2.1620),
    Street("carrer de Lisboa", "calle Lisboa", "la Teixonera", "07", 41.4232, 2.1460),
    Street(
        "carrer de Peris i Mencheta",
        "calle Peris i Mencheta",
        "Font d'en Fargues",
        "07",
        41.4225,
        2.1680,
    ),
    Street("passeig de Fabra i Puig", "paseo de Fabra i Puig", "Vilapicina", "08", 41.4300, 2.1790),
    Street("carrer de Pi i Molist", "calle Pi i Molist", "Turó de la Peira", "08", 41.4320, 2.1700),
    Street("via Júlia", "vía Júlia", "la Prosperitat", "08", 41.4405, 2.1790),
    Street("carrer de Costa i Cuxart", "calle Costa i Cuxart", "Verdun", "08", 41.4430, 2.1740),
    Street(
        "carrer de les Agudes", "calle de les Agudes", "Ciutat Meridiana", "08", 41.4610, 2.1755
    ),
    Street("carrer de Chafarinas", "calle Chafarinas", "Trinitat Nova", "08", 41.4495, 2.1855),
    Street("carrer de la Ràdio", "calle de la Ràdio", "les Roquetes", "08", 41.4485, 2.1745),
    Street("passeig de Valldaura", "paseo de Valldaura", "la Guineueta", "08", 41.4375, 2.1690),
    Street(
        "carrer Gran de Sant Andreu",
        "calle Gran de Sant Andreu",
        "Sant Andreu",
        "09",
        41.4350,
        2.1900,
    ),
    Street("carrer de Cuba", "calle Cuba", "Sant Andreu", "09", 41.4335, 2.1925),
    Street(
        "carrer Gran de la Sagrera", "calle Gran de la Sagrera", "la Sagrera", "09", 41.4225, 2.1880
    ),
    Street("carrer de Claramunt", "calle Claramunt", "Bon Pastor", "09", 41.4365, 2.2010),
    Street("via Bàrcino", "vía Bàrcino", "Trinitat Vella", "09", 41.4510, 2.1925),
    Street(
        "plaça del Congrés Eucarístic",
        "plaza del Congreso Eucarístico",
        "Congrés i els Indians",
        "09",
        41.4250,
        2.1805,
    ),
    Street("carrer de Ferran Junoy", "calle Ferran Junoy", "Baró de Viver", "09", 41.4455, 2.1990),
    Street("rambla del Poblenou", "rambla del Poblenou", "Poblenou", "10", 41.4005, 2.2015),
    Street("carrer de Pujades", "calle Pujades", "la Llacuna", "10", 41.3985, 2.1945),
    Street("carrer del Clot", "calle del Clot", "barri del Clot", "10", 41.4090, 2.1880),
    Street("carrer de Rogent", "calle Rogent", "Camp de l'Arpa", "10", 41.4115, 2.1830),
    Street("rambla de Prim", "rambla de Prim", "Besòs-Maresme", "10", 41.4145, 2.2150),
    Street("carrer de Guipúscoa", "calle Guipúscoa", "la Verneda", "10", 41.4225, 2.2010),
    Street("carrer de la Marina", "calle de la Marina", "Vila Olímpica", "10", 41.3900, 2.1960),
    Street(
        "carrer de Bac de Roda",
        "calle Bac de Roda",
        "Provençals del Poblenou",
        "10",
        41.4085,
        2.2015,
    ),
)

# How each service's problems are told, by language: {where} is the street (with a house
# number at times) and its barri, {when} how long it has lasted.
PROBLEMS: Mapping[str, Mapping[str, tuple[str, ...]]] = {
    "streetlight": {
        "ca": (
            "El fanal de {where} està apagat {when}. Quan ho arreglareu?",
            "Tot el tram de {where} és a les fosques {when}, no hi ha llum i fa por tornar a casa.",
            "Un fanal de {where} fa pampallugues {when}. Algú ho pot revisar?",
        ),
        "es": (
            "La farola de {where} está apagada {when}. ¿Cuándo la arreglan?",
            "Toda la calle a oscuras en {where} {when}, sin luz da miedo volver de noche.",
            "Una farola de {where} parpadea {when}, ¿alguien puede revisarla?",
        ),
        "en": (
            "The street light on {where} has been out {when}.",
            "The street lights on {where} are off {when}, it's pitch dark and unsafe at night.",
            "A street lamp on {where} keeps flickering {when}. Can someone check it?",
        ),
    },
    "pavement": {
        "ca": (
            "Hi ha un clot enorme a la calçada de {where}, perillós per a les motos.",
            "La vorera de {where} té els panots aixecats {when}, algú s'hi farà mal.",
            "L'asfalt de {where} està ple de forats {when}.",
        ),
        "es": (
            "Hay un bache enorme en la calzada de {where}, peligroso para las motos.",
            "La acera de {where} tiene las baldosas levantadas {when}, alguien se va a caer.",
            "El asfalto de {where} está lleno de agujeros {when}.",
        ),
        "en": (
            "Huge pothole in the road on {where}, dangerous for scooters.",
            "The paving on {where} is broken {when}, the sidewalk is so uneven someone will trip.",
            "The pavement on {where} is cracked and uneven {when}, impossible with a wheelchair.",
        ),
    },
    "cleaning": {
        "ca": (
            "Contenidors desbordats a {where} {when}. Fa una pudor horrible.",
            "Han deixat un matalàs i mobles vells al carrer, a {where}.",
            "Tot està molt brut a {where}, ple de brossa i vidres {when}.",
        ),
        "es": (
            "Contenedores desbordados en {where} {when}. Huele fatal.",
            "Han dejado un colchón y muebles viejos tirados en {where}.",
            "Está todo muy sucio en {where}, lleno de basura y cristales {when}.",
        ),
        "en": (
            "Overflowing rubbish bins on {where} {when}. The smell is awful.",
            "Someone dumped a mattress and old furniture on {where}.",
            "Lots of litter and broken glass on {where} {when}, it needs a clean.",
        ),
    },
    "graffiti": {
        "ca": (
            "Pintades noves a la façana de l'escola de {where}. Es poden treure?",
            "Han fet grafitis a totes les persianes de {where} {when}.",
            "Han omplert de pintades el mur de {where} {when}.",
        ),
        "es": (
            "Pintadas y grafitis nuevos en la fachada del colegio de {where}. ¿Los pueden quitar?",
            "Han llenado de grafitis las persianas de {where} {when}.",
            "Pintadas por todo el muro de {where} {when}.",
        ),
        "en": (
            "Fresh graffiti all over the school wall on {where}.",
            "Graffiti tags spray painted on every shop shutter on {where} {when}.",
            "Vandals covered the wall on {where} with graffiti {when}.",
        ),
    },
    "parks_trees": {
        "ca": (
            "Un arbre caigut a {where} talla el pas, urgent!",
            "El parc infantil de {where} té un gronxador trencat {when}.",
            "Les branques dels arbres de {where} toquen els balcons, cal podar-los.",
        ),
        "es": (
            "Un árbol caído en {where} corta el paso, ¡urgente!",
            "El parque infantil de {where} tiene un columpio roto {when}.",
            "Las ramas de los árboles de {where} llegan a los balcones, hay que podarlos.",
        ),
        "en": (
            "A fallen tree and its branches are blocking the way on {where}, urgent!",
            "The playground on {where} has had a broken swing {when}.",
            "The trees on {where} badly need pruning, branches are hitting the windows.",
        ),
    },
    "water_sewer": {
        "ca": (
            "Hi ha una fuga d'aigua a {where}, surt aigua de la claveguera {when}.",
            "L'embornal de {where} està embussat i s'inunda el carrer quan plou.",
            "La font de {where} no raja {when}.",
        ),
        "es": (
            "Hay una fuga de agua en {where}, sale agua de la alcantarilla {when}.",
            "El imbornal de {where} está atascado y se inunda la calle cuando llueve.",
            "La fuente de {where} no funciona {when}.",
        ),
        "en": (
            "Water leak on {where}, water coming out of the drain {when}.",
            "The storm drain on {where} is blocked and the street floods when it rains.",
            "The drinking fountain on {where} has no water {when}.",
        ),
    },
    "traffic": {
        "ca": (
            "El semàfor de {where} no funciona {when}, els cotxes passen sense mirar.",
            "Un cotxe abandonat a {where} fa mesos, amb les rodes punxades.",
            "El senyal de stop de {where} està tombat {when}.",
        ),
        "es": (
            "El semáforo de {where} no funciona {when}, es un peligro cruzar.",
            "Un coche abandonado en {where} desde hace meses, con las ruedas pinchadas.",
            "La señal de stop de {where} está tirada en el suelo {when}, peligro en el paso de peatones.",
        ),
        "en": (
            "The traffic light on {where} has been stuck on orange {when}.",
            "An abandoned car has been parked on {where} for months, tyres flat.",
            "The stop sign on {where} has been knocked down {when}.",
        ),
    },
    "mobility": {
        "ca": (
            "La parada de bus de {where} té el vidre de la marquesina trencat {when}.",
            "L'estació de Bicing de {where} no deixa aparcar la bici {when}.",
            "El parquímetre de {where} no accepta targeta {when}.",
        ),
        "es": (
            "La parada de autobús de {where} tiene la marquesina rota {when}.",
            "La estación de Bicing de {where} no funciona {when}.",
            "El parquímetro de {where} no acepta tarjeta {when}.",
        ),
        "en": (
            "E-scooters and bikes left lying across the bike lane on {where} {when}.",
            "The Bicing station on {where} won't let me dock my bike {when}.",
            "The Bicing bikes at the bike station on {where} are all broken {when}.",
        ),
    },
    "animals": {
        "ca": (
            "Hi ha rates corrent per {where} cada nit {when}.",
            "Hi ha un gat mort a {where} {when}, algú el pot recollir?",
            "Plaga de paneroles a {where} {when}.",
        ),
        "es": (
            "Hay ratas por {where} todas las noches {when}.",
            "Hay un gato muerto en {where} {when}, ¿lo pueden recoger?",
            "Plaga de cucarachas en {where} {when}.",
        ),
        "en": (
            "Rats everywhere on {where} every night {when}, a rat infestation.",
            "Dead rat on {where} {when}, and more rats around. Please send someone.",
            "Cockroach infestation on {where} {when}, the pests are everywhere.",
        ),
    },
    "street_furniture": {
        "ca": (
            "Banc trencat a {where}. Algú es farà mal.",
            "La barana de {where} està desenganxada {when}, és perillós.",
            "Els bancs de {where} estan trencats {when}, la gent gran no té on seure.",
        ),
        "es": (
            "Banco roto en {where}. Alguien se va a hacer daño.",
            "La barandilla de {where} está suelta {when}, es peligroso.",
            "Los bancos de {where} están rotos {when}, los mayores no tienen asientos.",
        ),
        "en": (
            "The bench on {where} is broken and the railing next to it too, someone will get hurt.",
            "The railing on {where} has come loose {when}, the handrail is dangerous.",
            "All the benches and railings on {where} are broken {when}, older people have nowhere to sit.",
        ),
    },
    "noise": {
        "ca": (
            "Els veïns de {where} no podem dormir pel soroll del bar fins a les 3h.",
            "Soroll d'obres a {where} des de les 7 del matí, també el dissabte.",
            "Música molt alta cada nit a {where} {when}, no podem dormir.",
        ),
        "es": (
            "Los vecinos de {where} no podemos dormir por el ruido del bar hasta las 3.",
            "Obras de noche en {where} {when}, el ruido no nos deja dormir.",
            "Música a todo volumen cada noche en {where} {when}, no podemos dormir por el ruido.",
        ),
        "en": (
            "Nobody on {where} can sleep because of the noise from the bar until 3am.",
            "Loud noise from the works on {where} from 7am, even on Saturday.",
            "Loud music every night on {where} {when}, we can't sleep.",
        ),
    },
    "public_space": {
        "ca": (
            "Terrasses ocupant tota la vorera a {where}, no es pot passar amb el cotxet.",
            "Botellón cada nit a {where} {when}, deixen tot ple d'ampolles.",
            "Venda ambulant il·legal a {where} {when}.",
        ),
        "es": (
            "Terrazas ocupando todo el paso en {where}, ¡qué incivismo! No se puede pasar con el carrito.",
            "Botellón cada noche en {where} {when}, lo dejan todo lleno de botellas.",
            "Venta ambulante ilegal en {where} {when}, los manteros ocupan todo.",
        ),
        "en": (
            "Café terraces take up all the space on {where}, you can't get by with a pram.",
            "Street drinking every night on {where} {when}, drunks and fights.",
            "Illegal street vending on {where} {when}, it feels unsafe.",
        ),
    },
}

# Where a post without a street name says the problem is, followed by its barri; the same
# place at the same index in every language.
NEARBY: Mapping[str, tuple[str, ...]] = {
    "ca": (
        "la cantonada de casa",
        "el carrer de l'escola",
        "la plaça del mercat",
        "el carrer de la biblioteca",
        "la plaça de davant del metro",
        "el carrer del CAP",
        "la plaça de l'església",
        "el carrer del poliesportiu",
    ),
    "es": (
        "la esquina de mi casa",
        "la calle del colegio",
        "la plaza del mercado",
        "la calle de la biblioteca",
        "la plaza frente al metro",
        "la calle del ambulatorio",
        "la plaza de la iglesia",
        "la calle del polideportivo",
    ),
    "en": (
        "the corner by my building",
        "the street by the school",
        "the market square",
        "the street by the library",
        "the square by the metro",
        "the street by the health centre",
        "the church square",
        "the street by the sports centre",
    ),
}

# How often each service's problems come up: about what a city's reports look like.
SERVICE_WEIGHTS: Mapping[str, int] = {
    "cleaning": 16,
    "pavement": 12,
    "streetlight": 10,
    "noise": 10,
    "public_space": 7,
    "parks_trees": 7,
    "traffic": 7,
    "water_sewer": 6,
    "street_furniture": 6,
    "mobility": 6,
    "graffiti": 6,
    "animals": 5,
}

WHEN: Mapping[str, tuple[str, ...]] = {
    "ca": (
        "des d'ahir",
        "des de fa tres dies",
        "des de fa una setmana",
        "des de dilluns",
        "des de fa dues nits",
        "des de fa un mes",
        "des d'aquest matí",
        "des del cap de setmana",
    ),
    "es": (
        "desde ayer",
        "desde hace tres días",
        "desde hace una semana",
        "desde el lunes",
        "desde hace dos noches",
        "desde hace un mes",
        "desde esta mañana",
        "desde el fin de semana",
    ),
    "en": (
        "since yesterday",
        "for three days now",
        "for a week",
        "since Monday",
        "for two nights",
        "for a month",
        "since this morning",
        "since the weekend",
    ),
}

CLOSINGS: Mapping[str, tuple[str, ...]] = {
    "ca": ("", "", "", "Si us plau, veniu aviat.", "@bcn_ajuntament", "Ja és la segona vegada."),
    "es": ("", "", "", "Por favor, vengan pronto.", "@bcn_ajuntament", "Ya es la segunda vez."),
    "en": ("", "", "", "Please send someone.", "@bcn_ajuntament", "Not the first time either."),
}

# Posts that ask for nothing: the classifier should let them pass.
CHATTER: Mapping[str, tuple[str, ...]] = {
    "ca": (
        "Moltes gràcies a l'equip de neteja de {barri}, el carrer ha quedat impecable!",
        "Quin partit ahir al Camp Nou! Visca el Barça!",
        "Quina festa major més bonica aquest any a {barri}.",
    ),
    "es": (
        "¡Gracias al equipo de limpieza de {barri}, la calle ha quedado impecable!",
        "Qué bonito está {barri} con las fiestas, ¡enhorabuena a los vecinos!",
    ),
    "en": (
        "Lovely morning walk through {barri}, I love this city!",
        "Thanks to the street cleaners in {barri}, spotless today!",
    ),
}

LANGUAGES = ("ca", "es", "en")
LANGUAGE_WEIGHTS = (45, 40, 15)

FIRST_NAMES = (
    "marta", "jordi", "laura", "pau", "anna", "nuria", "xavi", "lucia", "oriol", "rosa", "dani",
    "montse", "joan", "pere", "aina", "biel", "txell", "quim", "mireia", "sergi", "carme",
    "albert", "laia", "arnau", "marc", "julia", "ester", "jaume", "roser", "toni", "pilar",
    "manolo", "carmen", "pepe", "andres", "ines", "javier", "elena", "sofia", "pablo", "lola",
    "rafa", "paco", "maria", "david", "alba", "nil", "ona", "pol", "berta", "clara", "irene",
    "mike", "sarah", "tom", "emma", "li", "yuki", "ahmed", "fatima", "omar", "priya", "lukas",
    "giulia", "chloe", "james", "olivia", "mateo", "wei", "amina", "sven", "ana",
)  # fmt: skip
SURNAMES = (
    "garcia", "puig", "vidal", "ferrer", "soler", "serra", "martinez", "lopez", "sanchez",
    "roca", "pujol", "font", "mas", "vila", "costa", "riera", "camps", "casals", "prat", "sala",
    "bosch", "torres", "navarro", "ruiz", "smith", "chen", "rossi", "muller", "khan", "silva",
)  # fmt: skip
NEIGHBOURHOODS = (
    "bcn", "gracia", "sants", "poblenou", "raval", "clot", "horta", "sarria", "eixample", "nb",
    "santandreu", "barceloneta", "guinardo", "lescorts", "poblesec", "born", "carmel",
)  # fmt: skip
INSTANCES = ("bcn.social", "mastodon.social", "mastodont.cat", "mas.to")

NEW_AUTHOR_SHARE = 0.8
"""Of the posts that are not repeats, those by someone who has not posted before."""
REPEAT_SHARE = 0.03
"""Posts that report a problem reported a little earlier, by another neighbour."""
CHATTER_SHARE = 0.04
"""Posts that ask for nothing."""
STREET_SHARE = 0.4
"""Posts that name a street of STREETS; the others place the problem near something of a
barri (NEARBY), with a point anywhere in it."""
TEXT_ONLY_SHARE = 0.2
"""Of the posts that name a street, those without a point: their place is in their text alone."""
LANG_GIVEN_SHARE = 0.8
"""Posts whose platform says their language."""
STREET_SPREAD_M = 150.0
"""How far from a street's point a post's point may be."""
BARRI_SPREAD = 0.45
"""How far from a barri's centre a post's point may be, as a share of the distance to the
nearest other barri's centre: the point stays nearer its own barri's centre than any other."""
BARRI_SPREAD_MAX_M = 600.0
"""The most that is, in the barris far from any other's centre (the port, Collserola)."""
REPEAT_SPREAD_M = 15.0
"""How far a repeat's point is from the first report's: well inside the router's radius."""
RECENT_PROBLEMS = 60
"""How many of the latest problems a repeat is chosen from."""

_M_PER_DEG_LAT = 111_320.0


@dataclass(frozen=True, slots=True)
class _Barri:
    """A barri's centre and how far from it a post's point may be."""

    name: str
    district_code: str
    lat: float
    long: float
    radius_m: float


@cache
def _barris() -> tuple[_Barri, ...]:
    barris = list(City.barcelona().barris.values())
    found: list[_Barri] = []
    for b in barris:
        nearest = min(_metres(b.lat, b.lon, o.lat, o.lon) for o in barris if o is not b)
        radius = min(BARRI_SPREAD * nearest, BARRI_SPREAD_MAX_M)
        # What people call it: "Raval" for "el Raval", "barri del Clot" where "el clot" could
        # also be a pothole.
        name = names.BARRI_ALIASES.get(b.code, (b.name,))[0]
        found.append(_Barri(name, b.district_code, b.lat, b.lon, radius))
    return tuple(found)


def _metres(lat1: float, long1: float, lat2: float, long2: float) -> float:
    """The distance between two points of one city (an equirectangular approximation)."""
    dx = (long2 - long1) * math.cos(math.radians((lat1 + lat2) / 2))
    return math.hypot(lat2 - lat1, dx) * _M_PER_DEG_LAT


def _near(rng: random.Random, lat: float, long: float, radius_m: float) -> tuple[float, float]:
    """A point at most radius_m from (lat, long), evenly spread over that disc."""
    distance = radius_m * math.sqrt(rng.random())
    angle = rng.uniform(0, 2 * math.pi)
    dlat = distance * math.cos(angle) / _M_PER_DEG_LAT
    dlong = distance * math.sin(angle) / (_M_PER_DEG_LAT * math.cos(math.radians(lat)))
    return round(lat + dlat, 6), round(long + dlong, 6)


@dataclass(frozen=True, slots=True)
class _Problem:
    """A problem someone reported: what another neighbour who reports it again repeats."""

    service_code: str
    lang: str
    variant: int
    street: Street | None  # None: near something (NEARBY[nearby]) of barri
    barri: str
    nearby: int
    lat: float | None
    long: float | None

    def where(self, rng: random.Random, lang: str) -> str:
        """The place as a post in `lang` tells it."""
        if self.street is None:
            return f"{NEARBY[lang][self.nearby]} ({self.barri})"
        name = self.street.name(lang)
        if rng.random() < 0.4:
            name = f"{name} {rng.randrange(1, 180)}"
        if self.lat is None or rng.random() < 0.6:
            name = f"{name} ({self.barri})"
        return name

    def told(self, rng: random.Random, lang: str, variant: int) -> str:
        """The problem told in `lang`, in the words of PROBLEMS[service][lang][variant]."""
        template = PROBLEMS[self.service_code][lang][variant]
        text = template.format(where=self.where(rng, lang), when=rng.choice(WHEN[lang]))
        if lang in _CONTRACTIONS:
            pattern, contracted = _CONTRACTIONS[lang]
            text = pattern.sub(lambda m: contracted[m[1]], text)
        closing = rng.choice(CLOSINGS[lang])
        return f"{text} {closing}" if closing else text


def _handle(rng: random.Random) -> str:
    first, last = rng.choice(FIRST_NAMES), rng.choice(SURNAMES)
    shape = rng.randrange(8)
    if shape == 0:
        return f"@{first}_{rng.choice(NEIGHBOURHOODS)}"
    if shape == 1:
        return f"@{first}.{last}"
    if shape == 2:
        return f"@{first}{last}{rng.randrange(10, 100)}"
    if shape == 3:
        return f"@{first}_{last}"
    if shape == 4:
        return f"@{last}.{first}{rng.randrange(1, 10)}"
    if shape == 5:
        return f"@{first}{rng.randrange(60, 100)}"
    if shape == 6:
        return f"@{first}_{last[:3]}@{rng.choice(INSTANCES)}"
    return f"@{first}{last}.bsky.social"


def posts(seed: int | str) -> Iterator[DemoPost]:
    """An endless stream of demo posts; the same seed gives the same stream."""
    rng = random.Random(seed)
    barris = _barris()
    # A barri as often as its share of the city's area: posts spread evenly over the city.
    areas = [b.radius_m**2 for b in barris]
    services, weights = list(SERVICE_WEIGHTS), list(SERVICE_WEIGHTS.values())
    authors: list[str] = []
    known: set[str] = set()
    recent: list[_Problem] = []

    def new_author() -> str:
        while (handle := _handle(rng)) in known:
            pass
        known.add(handle)
        authors.append(handle)
        return handle

    def language() -> str:
        return rng.choices(LANGUAGES, LANGUAGE_WEIGHTS)[0]

    def post(author: str, text: str, lang: str, lat: float | None, long: float | None) -> DemoPost:
        given = lang if rng.random() < LANG_GIVEN_SHARE else ""
        return DemoPost(author, text, given, lat, long)

    while True:
        roll = rng.random()
        if roll < REPEAT_SHARE and recent:
            # Another neighbour reports a problem of a little earlier: near its point in their
            # own words, or, without a point, in words alike enough for the router to see it.
            first = rng.choice(recent)
            if first.lat is not None and first.long is not None:
                lang = language()
                count = len(PROBLEMS[first.service_code][lang])
                variant = rng.choice([v for v in range(count) if v != first.variant])
                lat, long = _near(rng, first.lat, first.long, REPEAT_SPREAD_M)
                yield post(new_author(), first.told(rng, lang, variant), lang, lat, long)
            else:
                text = first.told(rng, first.lang, first.variant)
                yield post(new_author(), text, first.lang, None, None)
            continue
        if roll < REPEAT_SHARE + CHATTER_SHARE:
            lang = language()
            text = rng.choice(CHATTER[lang]).format(barri=rng.choice(barris).name)
            yield post(new_author(), text, lang, None, None)
            continue
        if authors and rng.random() >= NEW_AUTHOR_SHARE:
            author = rng.choice(authors)  # someone who posted before, about something else
        else:
            author = new_author()
        service = rng.choices(services, weights)[0]
        lang = language()
        variant = rng.randrange(len(PROBLEMS[service][lang]))
        if rng.random() < STREET_SHARE:
            street = rng.choice(STREETS)
            point: tuple[float, float] | tuple[None, None] = (None, None)
            if rng.random() >= TEXT_ONLY_SHARE:
                point = _near(rng, street.lat, street.long, STREET_SPREAD_M)
            problem = _Problem(service, lang, variant, street, street.barri, 0, *point)
        else:
            barri = rng.choices(barris, areas)[0]
            point = _near(rng, barri.lat, barri.long, barri.radius_m)
            nearby = rng.randrange(len(NEARBY[lang]))
            problem = _Problem(service, lang, variant, None, barri.name, nearby, *point)
        recent.append(problem)
        del recent[:-RECENT_PROBLEMS]
        yield post(author, problem.told(rng, lang, variant), lang, *point)


def fits(city: City) -> bool:
    """Whether the feed's posts are about `city`: every street of theirs in the district they
    name. Barcelona, packaged or from its city file, is; any other city is not."""
    for street in STREETS:
        found = city.locate(street.lat, street.long)
        if found is None or found.district is None or found.district.code != street.district_code:
            return False
    return True


def wanted(asked: bool | None, city: City, *, city_file: bool) -> bool:
    """Whether `make run` runs the feed: PLAZA_DEMO when set, else only without a city file (one
    means a town's own database, which made-up posts would fill). Asked for in a city its
    posts are not about, it is refused: they would all go to triage, with Catalan replies."""
    if asked is None:
        return not city_file
    if asked and not fits(city):
        raise SettingsError(
            f"PLAZA_DEMO: the demo feed posts about Barcelona's streets, which are not in "
            f"{city.name}; unset PLAZA_DEMO (or set it to false)"
        )
    return asked


async def feed(
    ingest: httpx.AsyncClient,
    *,
    interval: float,
    run_id: str | None = None,
    seed: int | str | None = None,
) -> None:
    """Posts demo posts one by one, forever, each with a fresh id, through the webhook. Each run
    makes up its own posts (seeded by its id, unless a seed is given), so that a restarted
    `make run` does not repeat the problems its database already holds."""
    run = run_id or str(int(time.time()))
    for n, post in enumerate(posts(run if seed is None else seed)):
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
