"""Regenerate the example data: the eval set, the documents folder and the tickets CSV.

Deterministic (a seeded ``random.Random``): running it again rewrites the same bytes,
so ``git diff`` stays empty unless this script changed.

    python dags_examples/data/generate_data.py
"""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent
SEED = 20240601

# --- eval set: 6 categories x 20 items ---------------------------------------------------

CAPITALS = [
    ("France", "Paris"),
    ("Japan", "Tokyo"),
    ("Canada", "Ottawa"),
    ("Australia", "Canberra"),
    ("Brazil", "Brasilia"),
    ("Kenya", "Nairobi"),
    ("Norway", "Oslo"),
    ("Egypt", "Cairo"),
    ("Peru", "Lima"),
    ("Vietnam", "Hanoi"),
    ("Portugal", "Lisbon"),
    ("Poland", "Warsaw"),
    ("Chile", "Santiago"),
    ("Ireland", "Dublin"),
    ("Morocco", "Rabat"),
    ("Thailand", "Bangkok"),
    ("Sweden", "Stockholm"),
    ("Argentina", "Buenos Aires"),
    ("New Zealand", "Wellington"),
    ("Turkey", "Ankara"),
]
WORDS = [
    "lantern",
    "harbor",
    "pepper",
    "violet",
    "granite",
    "meadow",
    "cobalt",
    "saddle",
    "ribbon",
    "thunder",
    "marble",
    "walnut",
    "compass",
    "falcon",
    "orchid",
    "velvet",
    "summit",
    "canyon",
    "ember",
    "glacier",
]
NAMES = ["Ada", "Bruno", "Chen", "Dara", "Elif", "Femi", "Goran", "Hana", "Ivan", "Jonas"]
REVIEWS_POS = [
    "The lamp arrived early and the setup took two minutes.",
    "Bright, quiet and the app just works. Love it.",
    "Support answered in an hour and fixed my issue.",
    "Great value for the price, would buy again.",
    "The colours are warm and the schedule feature is handy.",
]
REVIEWS_NEG = [
    "It stopped connecting to wifi after a week.",
    "The box was crushed and the lamp rattles.",
    "Refund took a month and nobody replied to my emails.",
    "The app crashes every time I open the schedule page.",
    "Far too dim for a reading lamp, disappointed.",
]


def _arithmetic(rng: random.Random, i: int) -> dict:
    a, b = rng.randint(2, 99), rng.randint(2, 99)
    op = ["+", "-", "*"][i % 3]
    if op == "-" and b > a:
        a, b = b, a
    value = {"+": a + b, "-": a - b, "*": a * b}[op]
    return {"question": f"What is {a} {op} {b}? Reply with the number only.", "expected": str(value)}


def _geography(rng: random.Random, i: int) -> dict:
    country, capital = CAPITALS[i]
    question = f"What is the capital of {country}? Reply with the city name only."
    return {"question": question, "expected": capital}


def _extraction(rng: random.Random, i: int) -> dict:
    name = NAMES[i % len(NAMES)]
    kind = i % 3
    if kind == 0:
        order = f"LX-{rng.randint(10000, 99999)}"
        text = f"Hi, this is {name}. My order {order} arrived with a broken switch."
        return {
            "question": f'Extract the order number from: "{text}" Reply with the order number only.',
            "expected": order,
        }
    if kind == 1:
        email = f"{name.lower()}.{rng.choice(WORDS)}@example.com"
        text = f"Please send the invoice to {email} before Friday."
        return {
            "question": f'Extract the email address from: "{text}" Reply with the address only.',
            "expected": email,
        }
    day = rng.randint(1, 28)
    month = rng.choice(["March", "April", "May", "June"])
    text = f"{name} booked the installation for {day} {month}, in the morning."
    return {
        "question": f'On which date is the installation? "{text}" Reply like "5 May".',
        "expected": f"{day} {month}",
    }


def _formatting(rng: random.Random, i: int) -> dict:
    word = WORDS[i]
    kind = i % 3
    if kind == 0:
        return {
            "question": f"Write the word '{word}' in upper case. Reply with the word only.",
            "expected": word.upper(),
        }
    if kind == 1:
        return {
            "question": f"Write the word '{word}' backwards. Reply with the result only.",
            "expected": word[::-1],
        }
    picked = rng.sample(WORDS, 3)
    question = f"Sort alphabetically: {', '.join(picked)}. Reply with the words separated by commas."
    return {"question": question, "expected": ", ".join(sorted(picked))}


def _sentiment(rng: random.Random, i: int) -> dict:
    positive = i % 2 == 0
    review = (REVIEWS_POS if positive else REVIEWS_NEG)[(i // 2) % 5]
    return {
        "question": f'Is this review positive or negative? "{review}" Reply with one word.',
        "expected": "positive" if positive else "negative",
    }


def _units(rng: random.Random, i: int) -> dict:
    n = rng.randint(2, 40)
    kind = i % 4
    if kind == 0:
        return {
            "question": f"How many grams are in {n} kilograms? Reply with the number only.",
            "expected": str(n * 1000),
        }
    if kind == 1:
        return {
            "question": f"How many minutes are in {n} hours? Reply with the number only.",
            "expected": str(n * 60),
        }
    if kind == 2:
        return {
            "question": f"How many centimetres are in {n} metres? Reply with the number only.",
            "expected": str(n * 100),
        }
    return {
        "question": f"How many days are in {n} weeks? Reply with the number only.",
        "expected": str(n * 7),
    }


CATEGORIES = {
    "arithmetic": _arithmetic,
    "geography": _geography,
    "extraction": _extraction,
    "formatting": _formatting,
    "sentiment": _sentiment,
    "units": _units,
}


def eval_set(rng: random.Random, per_category: int = 20) -> list[dict]:
    items = []
    for category, make in CATEGORIES.items():
        for i in range(per_category):
            item = make(rng, i)
            items.append({"id": f"{category}-{i + 1:03d}", "category": category, **item})
    return items


# --- documents: a small help centre ----------------------------------------------------

DOCUMENTS = {
    "getting-started": (
        "Getting started with your Lumen lamp",
        "Unpack the lamp, plug it in and hold the top button for three seconds until the "
        "ring "
        "glows blue. Open the Lumen app, tap Add device and follow the steps.",
    ),
    "wifi-setup": (
        "Connecting to wifi",
        "Lumen lamps join 2.4 GHz networks only. If the app cannot find the lamp, move it closer "
        "to the router, check the password and disable client isolation on guest networks.",
    ),
    "firmware-update": (
        "Updating the firmware",
        "Updates install overnight when the lamp is idle. To update now, open Settings, "
        "Device, Firmware and tap Check for updates. Keep the lamp powered during the "
        "update.",
    ),
    "schedules": (
        "Schedules and routines",
        "A schedule turns the lamp on or off at set times; a routine changes brightness and colour "
        "gradually, for example a thirty minute sunrise before your alarm.",
    ),
    "billing-faq": (
        "Billing questions",
        "Lumen Plus is billed monthly or yearly. Invoices are emailed on the billing date and "
        "listed under Account, Billing. Change the card on file there at any time.",
    ),
    "refund-policy": (
        "Refunds",
        "You can return a lamp within 30 days for a full refund. Refunds go back to the "
        "original "
        "payment method within ten business days after we receive the lamp.",
    ),
    "shipping-times": (
        "Shipping times",
        "Orders ship within two business days. Standard delivery takes three to five days, "
        "express one to two. Tracking numbers are emailed when the parcel leaves.",
    ),
    "warranty": (
        "Warranty",
        "Every lamp has a two year warranty covering defects in materials and workmanship. Damage "
        "from drops or liquids is not covered. Contact support with your order number.",
    ),
    "flicker": (
        "The light flickers",
        "Flicker usually comes from a dimmer switch on the same circuit or a loose plug. Bypass the "
        "dimmer, try another outlet and update the firmware. Persistent flicker is a warranty case.",
    ),
    "privacy": (
        "Privacy and data",
        "The app stores schedules and device names in your account. We never sell personal data. "
        "Delete your account under Account, Privacy to erase everything within 30 days.",
    ),
    "api-access": (
        "Developer API",
        "Lumen Plus includes a REST API for automations. Create a token under Account, Developer; "
        "tokens can be scoped to one home and revoked at any time.",
    ),
    "team-accounts": (
        "Sharing a home",
        "Invite family members from Home, Members. Members control lamps and schedules; only "
        "owners can remove devices, change billing or delete the home.",
    ),
}


def document_text(title: str, body: str) -> str:
    return f"# {title}\n\n{body}\n"


# --- tickets CSV: support messages to classify -----------------------------------------

TICKET_TEMPLATES = {
    "billing": [
        "I was charged twice for {plan} this month.",
        "How do I change the card for {plan}?",
        "My invoice for {plan} shows the wrong amount.",
        "Cancel {plan} and stop charging me.",
    ],
    "shipping": [
        "My order {order} has not arrived yet.",
        "The tracking for {order} has not moved in days.",
        "Can I change the delivery address of {order}?",
        "Parcel {order} arrived damaged.",
    ],
    "technical": [
        "The {model} will not connect to wifi.",
        "The {model} flickers when dimmed.",
        "The app crashes when I open the {model} schedule.",
        "Firmware update failed on my {model}.",
    ],
    "account": [
        "I cannot log in to my account.",
        "How do I invite my partner to our home?",
        "Please delete my account and data.",
        "I never receive the password reset email.",
    ],
    "feedback": [
        "Love the {model}, the sunrise routine is great.",
        "Please add a darker night mode.",
        "The {model} looks great in my living room.",
        "Would be nice to control it by voice.",
    ],
}
CHANNELS = ["email", "chat", "phone", "web"]
MODELS = ["Lumen Mini", "Lumen Arc", "Lumen Desk", "Lumen Floor"]
PLANS = ["Lumen Plus", "Lumen Plus yearly"]


def tickets(rng: random.Random, count: int = 1200) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["ticket_id", "channel", "product", "text"])
    kinds = sorted(TICKET_TEMPLATES)
    for i in range(count):
        template = rng.choice(TICKET_TEMPLATES[rng.choice(kinds)])
        model = rng.choice(MODELS)
        text = template.format(plan=rng.choice(PLANS), order=f"LX-{rng.randint(10000, 99999)}", model=model)
        writer.writerow([f"T-{i + 1:05d}", rng.choice(CHANNELS), model, text])
    return out.getvalue()


def main() -> None:
    rng = random.Random(SEED)
    lines = [json.dumps(item, ensure_ascii=False, sort_keys=True) for item in eval_set(rng)]
    (HERE / "eval_set.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")

    docs = HERE / "documents"
    docs.mkdir(exist_ok=True)
    for old in docs.glob("*.md"):
        old.unlink()
    for slug, (title, body) in DOCUMENTS.items():
        (docs / f"{slug}.md").write_text(document_text(title, body), encoding="utf-8")

    (HERE / "tickets.csv").write_text(tickets(rng), encoding="utf-8")
    print(f"wrote {len(lines)} eval items, {len(DOCUMENTS)} documents, tickets.csv to {HERE}")


if __name__ == "__main__":
    main()
