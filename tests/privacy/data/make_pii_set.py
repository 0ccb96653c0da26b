"""Write ``pii_sales_chat.jsonl``: synthetic sales-chat messages with exactly labelled PII.

What visitors type into a chat or contact form on a sales funnel: pricing questions, demo
requests, complaints, checkout problems, in English and some German, French and Dutch. About
three in five messages carry planted PII (emails, phone numbers, card numbers, IBANs, IP
addresses, street addresses); the rest carry none but are full of things that look numeric or
address-like and are not PII (order and invoice numbers, prices, dates, versions, quantities,
zip codes alone, times, 16-digit numbers that fail the Luhn check, tracking numbers, one-time
codes).

Each line is ``{"text": ..., "entities": [{"type": ..., "start": i, "end": j}, ...]}``. Offsets
are computed while the message is assembled from its template, so they are exact by
construction. A label covers the value itself: an email, a phone number as written (with its
``+``, parentheses and separators), a card number or IBAN as written (with spaces or dashes),
an IP address, or a street address's house number and street name (not the unit, zip or city).

The values follow real-world shapes (national numbering plans and common ways of writing
them, card brands' prefixes and lengths with a valid Luhn digit, IBANs with valid mod-97 check
digits per ISO 13616), drawn from a seeded generator. The set is meant to measure the detector,
so it is written from what visitors type, never from what the detector happens to find.

Run from the repository root: ``python tests/privacy/data/make_pii_set.py``.
"""

from __future__ import annotations

import json
import random
import re
import string
from collections.abc import Callable
from pathlib import Path

SEED = 20240606
OUTPUT = Path(__file__).with_name("pii_sales_chat.jsonl")

# --- names and places -----------------------------------------------------------------------

FIRST = [
    "anna",
    "ben",
    "carla",
    "david",
    "emma",
    "felix",
    "grace",
    "hugo",
    "isabel",
    "jonas",
    "kate",
    "lars",
    "maria",
    "noah",
    "olivia",
    "pierre",
    "quinn",
    "rosa",
    "sam",
    "tom",
    "ursula",
    "victor",
    "wendy",
    "xavier",
    "yusuf",
    "zoe",
    "priya",
    "arjun",
    "sofia",
    "liam",
    "chloe",
    "mehmet",
    "jan",
    "femke",
    "lukas",
    "camille",
    "matteo",
    "aisha",
    "kenji",
    "elena",
]
LAST = [
    "smith",
    "jones",
    "mueller",
    "schmidt",
    "dubois",
    "martin",
    "devries",
    "jansen",
    "rossi",
    "garcia",
    "patel",
    "singh",
    "nguyen",
    "obrien",
    "kowalski",
    "bakker",
    "fischer",
    "moreau",
    "lefevre",
    "visser",
    "walker",
    "taylor",
    "brown",
    "wilson",
    "khan",
    "silva",
    "novak",
]
FREEMAIL = [
    "gmail.com",
    "outlook.com",
    "yahoo.co.uk",
    "web.de",
    "gmx.de",
    "orange.fr",
    "ziggo.nl",
    "hotmail.fr",
    "icloud.com",
    "proton.me",
    "t-online.de",
    "kpnmail.nl",
    "free.fr",
]
COMPANY_DOMAINS = [
    "acme-corp.com",
    "northwind.io",
    "mail.contoso.de",
    "eu.sales.fabrikam.com",
    "initech.co.uk",
    "globex.nl",
    "umbrella-labs.fr",
    "startup.ai",
    "hooli.dev",
    "wayne-enterprises.com",
    "stark.industries",
    "cs.ox.ac.uk",
    "shop.vandelay.nl",
    "team.piedpiper.com",
]
CITIES_EN = ["San Francisco", "Austin", "Boston", "London", "Manchester", "Toronto", "Denver"]
CITIES_DE = ["Berlin", "München", "Hamburg", "Köln", "Stuttgart", "Leipzig", "Wien", "Zürich"]
CITIES_FR = ["Paris", "Lyon", "Bordeaux", "Lille", "Nantes", "Marseille", "Toulouse"]
CITIES_NL = ["Amsterdam", "Rotterdam", "Utrecht", "Den Haag", "Eindhoven", "Groningen"]
PLANS = ["Starter", "Growth", "Pro", "Business", "Enterprise", "Team", "Scale"]

# --- labelled value generators --------------------------------------------------------------


def _digits(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(string.digits) for _ in range(n))


def email(rng: random.Random) -> str:
    first, last = rng.choice(FIRST), rng.choice(LAST)
    domain = rng.choice(FREEMAIL if rng.random() < 0.5 else COMPANY_DOMAINS)
    shape = rng.randrange(8)
    local = [
        f"{first}.{last}",
        f"{first}+{rng.choice(['nexus', 'demo', 'sales', 'promo', 'q3'])}",
        f"{first[0]}{last}",
        f"{first}_{last}{rng.randrange(70, 100)}",
        f"{first}.{last}+{rng.choice(['billing', 'trial', 'work'])}",
        f"{first}-{last}",
        f"{last}.{first[0]}",
        first,
    ][shape]
    address = f"{local}@{domain}"
    if rng.random() < 0.08:  # some people type in capitals
        address = f"{local.title()}@{domain.capitalize()}"
    return address


def _nanp(rng: random.Random, canada: bool = False) -> str:
    areas = (
        ["416", "604", "514", "403", "613"]
        if canada
        else [
            "212",
            "312",
            "415",
            "617",
            "646",
            "702",
            "206",
            "303",
            "512",
            "404",
            "305",
            "213",
            "718",
            "972",
            "480",
            "619",
        ]
    )
    area = rng.choice(areas)
    exchange = str(rng.randint(2, 9)) + _digits(rng, 2)
    line = _digits(rng, 4)
    return rng.choice(
        [
            f"({area}) {exchange}-{line}",
            f"{area}-{exchange}-{line}",
            f"{area}.{exchange}.{line}",
            f"{area} {exchange} {line}",
            f"+1 {area} {exchange} {line}",
            f"+1 ({area}) {exchange}-{line}",
            f"1-{area}-{exchange}-{line}",
            f"+1-{area}-{exchange}-{line}",
        ]
    )


def _gb(rng: random.Random) -> str:
    kind = rng.randrange(3)
    if kind == 0:  # mobile 07xxx xxxxxx (not the 07700 900 drama range)
        prefix = "7" + rng.choice(["4", "5", "7", "8", "9"]) + _digits(rng, 2)
        rest = _digits(rng, 6)
        return rng.choice(
            [
                f"0{prefix} {rest}",
                f"+44 {prefix} {rest}",
                f"+44 (0){prefix} {rest}",
                f"0{prefix}{rest}",
            ]
        )
    if kind == 1:  # London 020 7xxx xxxx / 020 3xxx xxxx
        block = rng.choice(["7", "3", "8"]) + _digits(rng, 3)
        rest = _digits(rng, 4)
        return rng.choice(
            [f"020 {block} {rest}", f"+44 20 {block} {rest}", f"(020) {block} {rest}"]
        )
    block = rng.choice(["161", "121", "131", "113"])  # Manchester, Birmingham, Edinburgh, Leeds
    rest = rng.choice(["4", "2", "3", "5"]) + _digits(rng, 2)
    return rng.choice(
        [f"0{block} {rest} {_digits(rng, 4)}", f"+44 {block} {rest} {_digits(rng, 4)}"]
    )


def _de(rng: random.Random) -> str:
    if rng.random() < 0.55:  # mobile
        prefix = rng.choice(["151", "152", "160", "162", "170", "171", "172", "173", "176", "177"])
        rest = _digits(rng, 8 if prefix.startswith("15") else rng.choice([7, 8]))
        if prefix.startswith("15"):
            prefix, rest = prefix + rest[0], rest[1:]
        return rng.choice(
            [
                f"0{prefix} {rest}",
                f"0{prefix}-{rest}",
                f"+49 {prefix} {rest}",
                f"0049 {prefix} {rest}",
                f"0{prefix}/{rest}",
                f"+49{prefix}{rest}",
            ]
        )
    area, length = rng.choice([("30", 8), ("40", 8), ("89", 8), ("221", 7), ("711", 7), ("69", 8)])
    rest = str(rng.randint(2, 9)) + _digits(rng, length - 1)
    return rng.choice(
        [
            f"0{area} {rest}",
            f"0{area}/{rest}",
            f"+49 {area} {rest}",
            f"+49 (0){area} {rest}",
            f"0{area}-{rest}",
        ]
    )


def _fr(rng: random.Random) -> str:
    first = rng.choice(["6", "7", "1", "4", "5"])
    pairs = [_digits(rng, 2) for _ in range(4)]
    if first == "7":
        pairs[0] = str(rng.randint(3, 8)) + pairs[0][1]
    return rng.choice(
        [
            f"0{first} {' '.join(pairs)}",
            f"0{first}.{'.'.join(pairs)}",
            f"0{first}{''.join(pairs)}",
            f"+33 {first} {' '.join(pairs)}",
            f"+33 (0){first} {' '.join(pairs)}",
        ]
    )


def _nl(rng: random.Random) -> str:
    if rng.random() < 0.6:
        rest = _digits(rng, 8)
        rest = str(rng.randint(1, 5)) + rest[1:]
        return rng.choice(
            [
                f"06-{rest}",
                f"06 {rest[:4]} {rest[4:]}",
                f"+31 6 {rest[:4]} {rest[4:]}",
                f"0031 6 {rest}",
                f"06{rest}",
            ]
        )
    area = rng.choice(["20", "10", "30", "70", "40"])
    rest = str(rng.randint(2, 8)) + _digits(rng, 6)
    return rng.choice(
        [f"0{area} {rest[:3]} {rest[3:]}", f"+31 {area} {rest[:3]} {rest[3:]}", f"0{area}-{rest}"]
    )


def _es(rng: random.Random) -> str:
    rest = rng.choice(["6", "7"]) + _digits(rng, 8)
    if rest[0] == "7":
        rest = "7" + str(rng.randint(1, 4)) + rest[2:]
    return rng.choice(
        [
            f"{rest[:3]} {rest[3:6]} {rest[6:]}",
            f"+34 {rest[:3]} {rest[3:6]} {rest[6:]}",
            f"+34{rest}",
        ]
    )


def _it(rng: random.Random) -> str:
    if rng.random() < 0.7:
        rest = "3" + rng.choice(["2", "3", "4", "9"]) + _digits(rng, 8)
        return rng.choice(
            [
                f"{rest[:3]} {rest[3:6]} {rest[6:]}",
                f"+39 {rest[:3]} {rest[3:]}",
                f"{rest[:3]} {rest[3:]}",
            ]
        )
    rest = _digits(rng, 8)
    rest = str(rng.randint(3, 9)) + rest[1:]
    return rng.choice([f"06 {rest[:4]} {rest[4:]}", f"+39 06 {rest}"])


def _in(rng: random.Random) -> str:
    rest = rng.choice(["9", "8", "7"]) + _digits(rng, 9)
    return rng.choice(
        [f"+91 {rest[:5]} {rest[5:]}", f"+91-{rest}", f"0{rest[:5]} {rest[5:]}", f"+91 {rest}"]
    )


def _au(rng: random.Random) -> str:
    if rng.random() < 0.6:
        rest = "4" + _digits(rng, 8)
        return rng.choice(
            [f"0{rest[:3]} {rest[3:6]} {rest[6:]}", f"+61 {rest[:3]} {rest[3:6]} {rest[6:]}"]
        )
    rest = rng.choice(["9", "8"]) + _digits(rng, 7)
    return rng.choice([f"(02) {rest[:4]} {rest[4:]}", f"+61 2 {rest[:4]} {rest[4:]}"])


def phone_en(rng: random.Random) -> str:
    return rng.choice([_nanp, _nanp, _nanp, _gb, _gb, _in, _au, _es, _it, _ca])(rng)


def _ca(rng: random.Random) -> str:
    return _nanp(rng, canada=True)


def _luhn_digit(body: str) -> str:
    total = 0
    for i, ch in enumerate(reversed(body)):
        d = int(ch)
        if i % 2 == 0:  # doubled: the check digit will be appended to the right
            d = d * 2 - 9 if d * 2 > 9 else d * 2
        total += d
    return str((10 - total % 10) % 10)


def _card_digits(rng: random.Random) -> tuple[str, str]:
    brand = rng.choice(["visa", "visa", "mc", "mc2", "amex", "discover"])
    if brand == "visa":
        body = "4" + _digits(rng, 14)
    elif brand == "mc":
        body = "5" + str(rng.randint(1, 5)) + _digits(rng, 13)
    elif brand == "mc2":
        body = str(rng.randint(2221, 2720)) + _digits(rng, 11)
    elif brand == "amex":
        body = rng.choice(["34", "37"]) + _digits(rng, 12)
    else:
        body = "6011" + _digits(rng, 11)
    return brand, body + _luhn_digit(body)


def _group_card(brand: str, number: str, sep: str) -> str:
    if brand == "amex":
        return sep.join([number[:4], number[4:10], number[10:]])
    return sep.join(number[i : i + 4] for i in range(0, len(number), 4))


def card(rng: random.Random) -> str:
    brand, number = _card_digits(rng)
    return _group_card(brand, number, rng.choice([" ", " ", "-", ""]))


def non_luhn_card(rng: random.Random) -> str:
    """16 digits shaped like a card number whose check digit is wrong."""
    body = rng.choice(["4", "5"]) + _digits(rng, 14)
    good = int(_luhn_digit(body))
    number = body + str((good + rng.randint(1, 9)) % 10)
    return _group_card("visa", number, rng.choice([" ", "-", ""]))


def _be_bban(rng: random.Random) -> str:
    head = _digits(rng, 10)
    check = int(head) % 97 or 97
    return f"{head}{check:02d}"


IBAN_BBAN: dict[str, Callable[[random.Random], str]] = {
    "DE": lambda r: _digits(r, 18),
    "AT": lambda r: _digits(r, 16),
    "CH": lambda r: _digits(r, 17),
    "FR": lambda r: _digits(r, 23),
    "NL": lambda r: r.choice(["ABNA", "INGB", "RABO", "TRIO", "SNSB", "KNAB"]) + _digits(r, 10),
    "GB": lambda r: r.choice(["NWBK", "BARC", "HBUK", "LOYD", "MIDL"]) + _digits(r, 14),
    "ES": lambda r: _digits(r, 20),
    "IT": lambda r: r.choice(string.ascii_uppercase) + _digits(r, 22),
    "BE": _be_bban,
}


def _iban_check(country: str, bban: str) -> str:
    """ISO 13616 / ISO 7064 mod 97-10 check digits."""
    rearranged = bban + country + "00"
    numeric = "".join(str(int(ch, 36)) for ch in rearranged)
    return f"{98 - int(numeric) % 97:02d}"


def iban(rng: random.Random) -> str:
    country = rng.choice(list(IBAN_BBAN))
    bban = IBAN_BBAN[country](rng)
    compact = country + _iban_check(country, bban) + bban
    if rng.random() < 0.6:
        return " ".join(compact[i : i + 4] for i in range(0, len(compact), 4))
    return compact


def ipv4(rng: random.Random) -> str:
    kind = rng.randrange(4)
    if kind == 0:
        return f"192.168.{rng.randint(0, 20)}.{rng.randint(2, 254)}"
    if kind == 1:
        return f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}"
    return ".".join(
        str(x)
        for x in [
            rng.randint(11, 223),
            *(rng.randint(0, 255) for _ in range(2)),
            rng.randint(1, 254),
        ]
    )


def ipv6(rng: random.Random) -> str:
    def hextet() -> str:
        return f"{rng.randint(0, 0xFFFF):x}"

    kind = rng.randrange(3)
    if kind == 0:
        return ":".join(
            ["2a02", hextet(), hextet(), hextet(), hextet(), hextet(), hextet(), hextet()]
        )
    if kind == 1:
        return f"2001:db8:{hextet()}::{hextet()}:{hextet()}"
    return f"fe80::{hextet()}:{hextet()}:{hextet()}:{hextet()}"


def ip(rng: random.Random) -> str:
    return ipv4(rng) if rng.random() < 0.65 else ipv6(rng)


STREET_NAMES_EN = [
    "Baker",
    "Elm",
    "Oak",
    "Maple",
    "Market",
    "Mission",
    "Pine",
    "Cedar",
    "Highland",
    "Lincoln",
    "Washington",
    "Sunset",
    "Park",
    "Lake",
    "Hill",
    "Church",
    "Victoria",
    "Kingsland",
    "Harbor",
    "Old Mill",
    "Green Valley",
    "Cherry Tree",
    "Queen",
    "King",
    "Spring",
    "Willow",
    "5th",
    "3rd",
]
SUFFIX_EN = [
    "Street",
    "St",
    "St.",
    "Avenue",
    "Ave",
    "Road",
    "Rd",
    "Lane",
    "Ln",
    "Boulevard",
    "Blvd",
    "Drive",
    "Dr",
    "Way",
    "Court",
    "Place",
    "Terrace",
    "Close",
    "Crescent",
    "Parkway",
]


def street_en(rng: random.Random) -> str:
    number = str(rng.choice([rng.randint(1, 99), rng.randint(100, 999), rng.randint(1000, 9999)]))
    if rng.random() < 0.1:
        number += rng.choice("AB")
    street = f"{number} {rng.choice(STREET_NAMES_EN)} {rng.choice(SUFFIX_EN)}"
    return street.lower() if rng.random() < 0.1 else street


STREET_DE = [
    "Hauptstraße",
    "Bahnhofstraße",
    "Goethestraße",
    "Schillerstrasse",
    "Lindenweg",
    "Gartenstr.",
    "Kastanienallee",
    "Marktplatz",
    "Am Rosengarten",
    "Berliner Straße",
    "Kirchgasse",
    "Friedrichstraße",
    "Mozartstraße",
    "Schlossallee",
    "Mühlenweg",
    "Karl-Marx-Allee",
    "Unter den Linden",
    "Straße des 17. Juni",
]


def street_de(rng: random.Random) -> str:
    number = str(rng.randint(1, 140))
    if rng.random() < 0.15:
        number += rng.choice("abc")
    return f"{rng.choice(STREET_DE)} {number}"


STREET_FR = [
    "rue de la Paix",
    "avenue Victor Hugo",
    "boulevard Haussmann",
    "place Bellecour",
    "rue du Faubourg Saint-Honoré",
    "quai des Chartrons",
    "allée des Tilleuls",
    "rue Lafayette",
    "avenue des Champs-Élysées",
    "chemin des Vignes",
    "impasse des Lilas",
    "rue Nationale",
]


def street_fr(rng: random.Random) -> str:
    number = str(rng.randint(1, 120))
    if rng.random() < 0.1:
        number += " bis"
    name = rng.choice(STREET_FR)
    return f"{number}, {name}" if rng.random() < 0.1 else f"{number} {name}"


STREET_NL = [
    "Keizersgracht",
    "Damstraat",
    "Kerkstraat",
    "Stationsweg",
    "Prinsengracht",
    "Dorpsstraat",
    "Laan van Meerdervoort",
    "Oudegracht",
    "Marktplein",
    "Herengracht",
    "Wilhelminalaan",
    "Molenweg",
    "Coolsingel",
]


def street_nl(rng: random.Random) -> str:
    number = str(rng.randint(1, 400))
    if rng.random() < 0.15:
        number += rng.choice(["A", "-2", " hs", "B"])
    return f"{rng.choice(STREET_NL)} {number}"


def street_any(rng: random.Random) -> str:
    return rng.choice([street_en, street_en, street_de, street_fr, street_nl])(rng)


def phone_any(rng: random.Random) -> str:
    return rng.choice([phone_en, phone_en, _de, _fr, _nl])(rng)


# --- unlabelled value generators (distractors) ----------------------------------------------


def price(rng: random.Random) -> str:
    amount = rng.choice([29, 49, 99, 149, 299, 499, 1299, 2499, 12500])
    return rng.choice(
        [
            f"${amount:,}.00",
            f"${amount:,}",
            f"£{amount}/month",
            f"USD {amount:,}",
            f"${amount:,}.99/mo",
        ]
    )


def price_eu(rng: random.Random) -> str:
    amount = rng.choice([29, 49, 99, 149, 299, 1299, 2499])
    cents = rng.choice(["00", "90", "99"])
    whole = f"{amount:,}".replace(",", ".")
    return rng.choice([f"{whole},{cents} €", f"€{whole},{cents}", f"EUR {whole},{cents}"])


def order(rng: random.Random) -> str:
    return rng.choice(
        [
            f"#{rng.choice('ABCDEFGH')}-{_digits(rng, 5)}",
            f"{rng.randint(10**8, 10**9 - 1)}",
            f"#{rng.randint(100000, 999999)}",
            f"ORD-{rng.randint(2022, 2025)}-{_digits(rng, 6)}",
            f"{rng.randint(10**9, 4 * 10**9)}",
        ]
    )


def invoice(rng: random.Random) -> str:
    return rng.choice(
        [
            f"INV-{rng.randint(2022, 2025)}-{_digits(rng, 6)}",
            f"{rng.randint(2022, 2025)}-{_digits(rng, 4)}",
            f"RE-{_digits(rng, 5)}",
            f"#{_digits(rng, 7)}",
        ]
    )


def date(rng: random.Random) -> str:
    y, m, d = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice(
        [
            f"{y}-{m:02d}-{d:02d}",
            f"{m:02d}/{d:02d}/{y}",
            f"{d} March",
            f"March {d}th",
            f"{d:02d}.{m:02d}.{y}",
        ]
    )


def date_eu(rng: random.Random) -> str:
    y, m, d = rng.randint(2023, 2025), rng.randint(1, 12), rng.randint(1, 28)
    return rng.choice([f"{d:02d}.{m:02d}.{y}", f"{d:02d}/{m:02d}/{y}", f"{y}-{m:02d}-{d:02d}"])


def version(rng: random.Random) -> str:
    major, minor, patch = rng.randint(1, 5), rng.randint(0, 20), rng.randint(0, 15)
    return rng.choice([f"v{major}.{minor}.{patch}", f"{major}.{minor}.{patch}", f"{major}.{minor}"])


def quantity(rng: random.Random) -> str:
    return rng.choice(
        [
            f"{rng.choice([5, 10, 25, 50, 250])} seats",
            f"{rng.choice([3, 12, 40])} licenses",
            f"{rng.choice([10_000, 250_000, 1_000_000]):,} events per month",
            f"{rng.choice([2, 3, 8])} users",
            f"{rng.choice([500, 1200])} contacts",
        ]
    )


def zipcode(rng: random.Random) -> str:
    return rng.choice(
        [
            _digits(rng, 5),
            f"{rng.randint(10, 99)}{_digits(rng, 3)}",
            rng.choice(["SW1A 1AA", "EC2A 4BX", "M1 2AB"]),
            f"{rng.randint(1000, 9999)} {rng.choice(['AB', 'KL', 'XZ'])}",
        ]
    )


def time_of_day(rng: random.Random) -> str:
    return rng.choice(["5pm", "9am", "10:30", "14:30", "3 pm", "noon", "11:15 CET", "16h30"])


def tracking(rng: random.Random) -> str:
    return rng.choice(
        [f"1Z{_digits(rng, 3)}AA{_digits(rng, 10)}", f"JD{_digits(rng, 16)}", f"{_digits(rng, 12)}"]
    )


def otp(rng: random.Random) -> str:
    return _digits(rng, 6)


def ticket(rng: random.Random) -> str:
    return str(rng.randint(10000, 999999))


def first_name(rng: random.Random) -> str:
    return rng.choice(FIRST).capitalize()


def street_us(rng: random.Random) -> str:
    """US forms with a direction: 220 W 42nd St, 1600 Pennsylvania Avenue NW."""
    number = str(rng.randint(1, 2999))
    if rng.random() < 0.5:
        direction = rng.choice(["N", "S", "E", "W"])
        return f"{number} {direction} {rng.choice(STREET_NAMES_EN)} {rng.choice(SUFFIX_EN)}"
    direction = rng.choice(["NW", "NE", "SW", "SE"])
    return f"{number} {rng.choice(STREET_NAMES_EN)} {rng.choice(SUFFIX_EN)} {direction}"


def expiry(rng: random.Random) -> str:
    return f"{rng.randint(1, 12):02d}/{rng.randint(25, 30)}"


def port(rng: random.Random) -> str:
    return str(rng.choice([443, 8080, 8443, 3000, 5432]))


def uuid_like(rng: random.Random) -> str:
    hexdigits = "0123456789abcdef"
    parts = [8, 4, 4, 4, 12]
    return "-".join("".join(rng.choice(hexdigits) for _ in range(n)) for n in parts)


def browser_version(rng: random.Random) -> str:
    return f"{rng.randint(100, 131)}.0.{rng.randint(1000, 6999)}.{rng.randint(10, 250)}"


LABELLED: dict[str, tuple[str, Callable[[random.Random], str]]] = {
    "EMAIL": ("EMAIL_ADDRESS", email),
    "PHONE": ("PHONE_NUMBER", phone_any),
    "PHONE_EN": ("PHONE_NUMBER", phone_en),
    "PHONE_DE": ("PHONE_NUMBER", _de),
    "PHONE_FR": ("PHONE_NUMBER", _fr),
    "PHONE_NL": ("PHONE_NUMBER", _nl),
    "CARD": ("CREDIT_CARD", card),
    "IBAN": ("IBAN_CODE", iban),
    "IP": ("IP_ADDRESS", ip),
    "IPV4": ("IP_ADDRESS", ipv4),
    "IPV6": ("IP_ADDRESS", ipv6),
    "STREET": ("STREET_ADDRESS", street_any),
    "STREET_EN": ("STREET_ADDRESS", street_en),
    "STREET_DE": ("STREET_ADDRESS", street_de),
    "STREET_FR": ("STREET_ADDRESS", street_fr),
    "STREET_NL": ("STREET_ADDRESS", street_nl),
    "STREET_US": ("STREET_ADDRESS", street_us),
}
UNLABELLED: dict[str, Callable[[random.Random], str]] = {
    "PRICE": price,
    "PRICE_EU": price_eu,
    "ORDER": order,
    "INVOICE": invoice,
    "DATE": date,
    "DATE_EU": date_eu,
    "VERSION": version,
    "QTY": quantity,
    "ZIP": zipcode,
    "TIME": time_of_day,
    "NONCARD": non_luhn_card,
    "TRACKING": tracking,
    "OTP": otp,
    "TICKET": ticket,
    "NAME": first_name,
    "PLAN": lambda r: r.choice(PLANS),
    "CITY": lambda r: r.choice(CITIES_EN),
    "CITY_DE": lambda r: r.choice(CITIES_DE),
    "CITY_FR": lambda r: r.choice(CITIES_FR),
    "CITY_NL": lambda r: r.choice(CITIES_NL),
    "ZIP_DE": lambda r: str(r.randint(10115, 99998)),
    "ZIP_FR": lambda r: str(r.randint(10, 95)) + _digits(r, 3),
    "ZIP_NL": lambda r: f"{r.randint(1011, 9999)} {r.choice(['AB', 'CD', 'KL', 'XZ'])}",
    "COUNT": lambda r: str(r.randint(2, 40)),
    "EXP": expiry,
    "CVC": lambda r: _digits(r, 3),
    "PORT": port,
    "UUID": uuid_like,
    "BROWSER": browser_version,
}

# --- templates ------------------------------------------------------------------------------

WITH_PII = [
    # English
    "Hi, can someone send the enterprise pricing to {EMAIL}? We have about {QTY}.",
    "Please call me on {PHONE_EN} to set up a demo, ideally after {TIME}.",
    "My card {CARD} keeps getting declined at checkout, tried three times now",
    "Can we pay by bank transfer instead of card? Our IBAN is {IBAN}",
    "I'm locked out of the dashboard. My IP is {IP} if that helps you whitelist it.",
    "Ship the starter kit to {STREET_EN}, {CITY} {ZIP} please",
    "{EMAIL}",
    "{PHONE_EN}",
    "reach me at {EMAIL} or {PHONE_EN}, whichever is easier",
    "why was I charged {PRICE} twice on card {CARD}??",
    "Our office moved to {STREET_EN}. Please update the billing address on invoice {INVOICE}.",
    "getting 403 errors from {IP} when calling the API, SDK version {VERSION}",
    "I booked a demo for {DATE} but nobody joined the call. Reach me at {PHONE_EN}.",
    "please refund to {IBAN}, order {ORDER}",
    "sales team pls email {EMAIL} - we want {QTY} on the {PLAN} plan",
    "fwd the quote to {EMAIL} and cc {EMAIL}",
    "my colleague {NAME} ({EMAIL}) will handle procurement from now on",
    "text me: {PHONE_EN}",
    "We work from {IPV6} on the office VPN and the dashboard won't load",
    "Our warehouse is at {STREET_EN}, deliveries only between 9am and {TIME}.",
    "Hey! Interested in the {PLAN} tier. I'm {NAME}, {PHONE_EN}, {EMAIL}",
    "Card number: {CARD}  exp 09/27",
    "Tried paying with {CARD} and then {CARD}, neither works. What is going on?",
    "The invoice for {PRICE} should go to {EMAIL}, not to me",
    "Is it normal that the login page shows my IP ({IPV4}) in the footer?",
    "your checkout asked for a billing address, I typed {STREET_EN} and it says invalid",
    "Wire transfer from {IBAN} was sent on {DATE}, please confirm receipt",
    "Call {PHONE_EN} and ask for {NAME} in purchasing",
    "I am the account owner. Email on file is {EMAIL}, phone {PHONE}",
    "Our firewall only allows {IPV4} and {IPV4}, can your webhooks come from there?",
    "Please send the signed contract to {STREET_EN}, attention {NAME}",
    "Need a callback re: the {PLAN} quote -> {PHONE}",
    "Hello, I'd like a demo for {QTY}. Best number: {PHONE_EN}. Thanks, {NAME}",
    "can you change the card on file to {CARD}? the old one expired",
    "payout account changed, new IBAN {IBAN} (old one closed)",
    "Seeing rate limiting from {IP} since we upgraded to {VERSION}",
    "We're at {STREET}, the courier couldn't find us yesterday",
    "my email is {EMAIL} and I never received the trial activation link",
    "wrong email on my account, should be {EMAIL} not {EMAIL}",
    "The sales rep said to ping {EMAIL} about volume discounts for {QTY}",
    "phone: {PHONE}\nemail: {EMAIL}\nmessage: please call back about pricing",
    "Address for the invoice: {STREET_EN}, Suite {COUNT}, {CITY}",
    "Visa {CARD} got charged but the order {ORDER} shows unpaid",
    "server logs show requests from {IPV6} hammering the signup form",
    "Please confirm the SEPA mandate for {IBAN}, amount {PRICE_EU}",
    "For the annual invoice ({PRICE}) we pay by wire. Account: {IBAN}",
    "IBAN: {IBAN}\nBIC: {NAME}BANKXXX\nplease use this for the refund",
    "got an error on the payment page, request came from {IPV4} at {TIME}",
    "Our finance team changed banks. New details: {IBAN}. Please update before {DATE}.",
    # German
    "Hallo, bitte schicken Sie das Angebot an {EMAIL}.",
    "Können Sie mich unter {PHONE_DE} zurückrufen? Am besten nach {TIME}.",
    "Unsere Lieferadresse lautet {STREET_DE}, {ZIP_DE} {CITY_DE}.",
    "Bitte buchen Sie den Betrag von meinem Konto ab, IBAN {IBAN}",
    "Meine Kreditkarte {CARD} wird beim Bezahlen immer abgelehnt.",
    "Rufen Sie mich an: {PHONE_DE} oder schreiben Sie an {EMAIL}",
    "Wir sitzen jetzt in der {STREET_DE} in {CITY_DE}, bitte Rechnungsadresse ändern.",
    "Erstattung bitte auf {IBAN}, Bestellung {ORDER}",
    "Mein Handy: {PHONE_DE}",
    "Unser Server {IP} wird von Ihrer API blockiert",
    # French
    "Bonjour, pouvez-vous m'envoyer un devis à {EMAIL} ?",
    "Vous pouvez me joindre au {PHONE_FR} pour la démo.",
    "Adresse de livraison : {STREET_FR}, {ZIP_FR} {CITY_FR}",
    "Voici mon IBAN pour le remboursement : {IBAN}",
    "Ma carte {CARD} est refusée au moment du paiement",
    "Rappelez-moi au {PHONE_FR} svp, ou écrivez à {EMAIL}",
    "Notre bureau est au {STREET_FR}, {CITY_FR}",
    "Mon adresse IP est {IP}, je n'arrive pas à me connecter",
    # Dutch
    "Hoi, kunnen jullie de offerte mailen naar {EMAIL}?",
    "Bel me even op {PHONE_NL}, graag voor {TIME}.",
    "Ons adres is {STREET_NL}, {ZIP_NL} {CITY_NL}.",
    "Terugbetaling graag naar {IBAN}",
    "Kunnen jullie het bedrag van {PRICE_EU} overmaken naar {IBAN}?",
    "Mijn creditcard {CARD} wordt steeds geweigerd bij het afrekenen",
    "Mijn nummer is {PHONE_NL}, mail mag ook: {EMAIL}",
    # English, later additions: extensions, name <address>, card with expiry and CVC, ports,
    # URLs, US directions, units
    "Call {PHONE_EN} ext. {COUNT} and ask for billing",
    "{NAME} Smith <{EMAIL}> asked me to forward this: we need a quote for {QTY}",
    "mailto:{EMAIL}",
    "card {CARD} exp {EXP} cvc {CVC} - still declined",
    "Our proxy is {IPV4}:{PORT}, please allow it",
    "the admin panel at http://{IPV4}/admin is reachable from outside, is that intended?",
    "webhooks to [{IPV6}]:{PORT} time out",
    "Send the hardware to Apt {COUNT}B, {STREET_US}, {CITY}",
    "Our new office: Flat {COUNT}, {STREET_EN}, {CITY}",
    "Visiting address {STREET_US}, parking in the back",
    "Tel.: {PHONE_DE}, Fax: {PHONE_DE}",
    "whatsapp me on {PHONE} if the demo link breaks",
    "Stuur de factuur naar {STREET_NL} in {CITY_NL} aub",
]

WITHOUT_PII = [
    # English
    "How much is the {PLAN} plan for {QTY}?",
    "Is there a discount if we pay annually? The site says {PRICE}.",
    "Order {ORDER} still says processing, placed on {DATE}.",
    "We're on version {VERSION} and the chat widget is broken",
    "Can you call me at {TIME} tomorrow?",
    "call me at 5pm",
    "Invoice {INVOICE} shows {PRICE} but we agreed on a lower price",
    "Do you ship to {ZIP}?",
    "Reference number {NONCARD} from our bank transfer, can you check it arrived?",
    "Tracking {TRACKING} hasn't moved since {DATE}.",
    "The verification code {OTP} expired immediately, can you resend?",
    "We have {QTY} and need SSO. Is that included in {PLAN}?",
    "Ticket #{TICKET}: still waiting for a reply after {COUNT} days",
    "Your checkout page throws error 502 at step 3 of 4",
    "Can I get a demo on {DATE} at {TIME}?",
    "Price went from {PRICE} to {PRICE} overnight - why?",
    "Is the {PLAN} plan GDPR compliant? We're based in {CITY}.",
    "We need 2 way sync with Salesforce, is it on the roadmap?",
    "Our HQ is on Main Street in {CITY}, do you have a partner nearby?",
    "I'm driving on 5th avenue right now, will write later",
    "Signup Clicked",
    "/pricing",
    "What's the difference between {PLAN} and {PLAN}?",
    "refund for order {ORDER} please, it was {PRICE}",
    "the number {NONCARD} on my gift voucher is not accepted",
    "Do you support {COUNT} languages? we need at least {COUNT}",
    "We upgraded from {VERSION} to {VERSION} and events stopped at {TIME}",
    "Our ticket {TICKET} was closed without an answer",
    "can we get 3 months free if we sign for {COUNT} months?",
    "Is 99.9% uptime guaranteed in the SLA for {PLAN}?",
    "I was charged {PRICE} on {DATE} for order {ORDER}, that looks wrong",
    "Account ID {OTP}{OTP} - can you merge it with our second workspace?",
    "your docs say rate limit is 1000 requests per 60 seconds, is that per key?",
    "Shipment {TRACKING} arrived damaged, box 2 of 3",
    "We have offices in {CITY}, {CITY} and {CITY}",
    "hello?? anyone there",
    "Can the trial be extended by {COUNT} days? Our budget review is on {DATE}.",
    "Which plan do I need for {QTY}?",
    "PO number {ORDER} attached to invoice {INVOICE}",
    "Checkout fails with code 4012 after entering the billing address",
    "Lead time for {QTY}? We need it before {DATE}.",
    "Build 2024.11.3 of the desktop app crashes on start",
    "Does {PRICE} include VAT? We're in zip {ZIP}",
    "Customer number {TICKET}{COUNT}, please update our plan to {PLAN}",
    "I'm on Chrome {BROWSER}, the checkout button does nothing",
    "Meeting works for me 9:00-17:00 any day next week",
    "We are a team of 12-15 people, about {QTY}",
    "workspace id {UUID} - please delete the test data",
    "Coupon SAVE20 didn't apply at checkout, order total {PRICE}",
    "Our brand color is #FF5733, can the widget use it?",
    "We grew 35% since 2019 and need the Scale plan by Q3 2025",
    "Call me between 9-5 EST",
    "Nous envoyons 1 000 000 d'événements par mois, quel forfait ?",
    # German
    "Was kostet der {PLAN}-Tarif für {QTY}?",
    "Die Rechnung {INVOICE} über {PRICE_EU} ist leider falsch.",
    "Bestellung {ORDER} vom {DATE_EU} ist immer noch nicht angekommen.",
    "Gibt es eine Demo am {DATE_EU} um {TIME}?",
    "Wir nutzen Version {VERSION}, das Widget lädt nicht.",
    "Kündigung zum {DATE_EU} bitte bestätigen, Kundennummer {TICKET}",
    # French
    "Quel est le prix du forfait {PLAN} pour {QTY} ?",
    "La facture {INVOICE} indique {PRICE_EU}, c'est une erreur ?",
    "Commande {ORDER} du {DATE_EU}, toujours rien reçu",
    "Est-ce que la version {VERSION} corrige le bug du panier ?",
    # Dutch
    "Wat kost het {PLAN} abonnement voor {QTY}?",
    "Factuur {INVOICE} klopt niet, het bedrag is {PRICE_EU}",
    "Bestelling {ORDER} van {DATE_EU} is nog niet geleverd",
    "Kunnen we op {DATE_EU} om {TIME} een demo plannen?",
]

SLOT = re.compile(r"\{([A-Z_0-9]+)\}")


def render(template: str, rng: random.Random) -> dict[str, object]:
    """Fill a template, recording the exact span of every labelled value."""
    parts: list[str] = []
    entities: list[dict[str, object]] = []
    length = 0
    position = 0
    for match in SLOT.finditer(template):
        literal = template[position : match.start()]
        parts.append(literal)
        length += len(literal)
        slot = match.group(1)
        if slot in LABELLED:
            entity, make = LABELLED[slot]
            value = make(rng)
            entities.append({"type": entity, "start": length, "end": length + len(value)})
            assert value == value.strip(), value
        else:
            value = UNLABELLED[slot](rng)
        parts.append(value)
        length += len(value)
        position = match.end()
    parts.append(template[position:])
    text = "".join(parts)
    return {"text": text, "entities": entities}


def build(count_with: int = 240, count_without: int = 140) -> list[dict[str, object]]:
    rng = random.Random(SEED)
    rows = []
    # Every template at least once, then the rest drawn at random, so no template dominates.
    for templates, count in ((WITH_PII, count_with), (WITHOUT_PII, count_without)):
        picks = list(templates) + [rng.choice(templates) for _ in range(count - len(templates))]
        rows.extend(render(template, rng) for template in picks)
    rng.shuffle(rows)
    return rows


def main() -> None:
    rows = build()
    with OUTPUT.open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
    print(f"wrote {len(rows)} messages to {OUTPUT}")


if __name__ == "__main__":
    main()
