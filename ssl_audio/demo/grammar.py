"""A small seeded sentence grammar and a keyword list for the demo corpus.

Sentences carry punctuation for espeak's prosody (commas pause, "?" rises); the transcript is the same words,
lowercase, letters and single spaces only. Numbers are written as words so the transcript matches the speech.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

# Short, mutually distinct words (the Speech Commands core ten plus two): a keyword-spotting probe target.
KEYWORDS = ("yes", "no", "up", "down", "left", "right", "on", "off", "stop", "go", "happy", "seven")

DETERMINERS = ("the", "this", "that", "my", "your", "our", "their", "every")  # no "a": it would need "an"
ADJECTIVES = (
    "big", "small", "red", "green", "old", "young", "quiet", "bright", "dark", "heavy", "little", "cold", "warm",
    "tall", "clever", "lazy", "busy", "gentle",
)  # fmt: skip
NOUNS = (  # all take a plain "s" plural
    "dog", "cat", "bird", "horse", "teacher", "farmer", "doctor", "driver", "student", "baker", "sailor", "rabbit",
    "monkey", "painter", "singer", "neighbour",
)  # fmt: skip
PLACES = (
    "park", "river", "garden", "kitchen", "market", "station", "school", "forest", "beach", "village", "library",
    "harbour", "museum", "bakery",
)  # fmt: skip
PREPOSITIONS = ("in", "near", "behind", "beside", "across", "outside", "towards")
NAMES = ("anna", "peter", "maria", "john", "lucy", "david", "sarah", "thomas", "emma", "james", "oliver", "nina")
NUMBERS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty")
TIMES = ("yesterday", "today", "on monday", "on friday", "in the morning", "at night", "last week", "after lunch")
# (base, past) forms
TRANSITIVE = (
    ("see", "saw"), ("find", "found"), ("carry", "carried"), ("paint", "painted"), ("watch", "watched"),
    ("follow", "followed"), ("clean", "cleaned"), ("visit", "visited"), ("push", "pushed"), ("call", "called"),
    ("help", "helped"), ("draw", "drew"),
)  # fmt: skip
INTRANSITIVE = (
    ("walk", "walked"), ("run", "ran"), ("sleep", "slept"), ("wait", "waited"), ("dance", "danced"),
    ("sing", "sang"), ("jump", "jumped"), ("stay", "stayed"), ("play", "played"), ("swim", "swam"),
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Sentence:
    text: str  # what espeak speaks, with punctuation
    transcript: str  # lowercase letters and single spaces


def transcript_of(text: str) -> str:
    """Lowercase `text` and keep letters, apostrophes and single spaces."""
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower()).split())


def _noun_phrase(rng: random.Random) -> str:
    words = [rng.choice(DETERMINERS)]
    if rng.random() < 0.6:
        words.append(rng.choice(ADJECTIVES))
    words.append(rng.choice(NOUNS))
    return " ".join(words)


def _place(rng: random.Random) -> str:
    return f"{rng.choice(PREPOSITIONS)} the {rng.choice(PLACES)}"


def _template(rng: random.Random) -> str:
    kind = rng.randrange(7)
    if kind == 0:
        return f"{_noun_phrase(rng)} {rng.choice(TRANSITIVE)[1]} {_noun_phrase(rng)} {_place(rng)}."
    if kind == 1:
        return f"{rng.choice(NAMES)} {rng.choice(INTRANSITIVE)[1]} {_place(rng)} {rng.choice(TIMES)}."
    if kind == 2:
        subject = f"{rng.choice(NUMBERS)} {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}s"
        return f"{subject} {rng.choice(INTRANSITIVE)[1]} {_place(rng)}."
    if kind == 3:
        return f"did {_noun_phrase(rng)} {rng.choice(TRANSITIVE)[0]} {_noun_phrase(rng)} {rng.choice(TIMES)}?"
    if kind == 4:
        first, second = rng.sample(NOUNS, 2)
        adj1, adj2 = rng.sample(ADJECTIVES, 2)
        return f"the {first} is {adj1}, but the {second} is {adj2}."
    if kind == 5:
        return f"please {rng.choice(TRANSITIVE)[0]} the {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {_place(rng)}."
    name1, name2 = rng.sample(NAMES, 2)
    verb = rng.choice(TRANSITIVE)[1]
    return f"{name1} and {name2} {verb} {rng.choice(NUMBERS)} {rng.choice(NOUNS)}s {rng.choice(TIMES)}."


def sentence(rng: random.Random) -> Sentence:
    """One random sentence; the same `rng` state always gives the same sentence."""
    text = _template(rng)
    text = text[0].upper() + text[1:]
    return Sentence(text=text, transcript=transcript_of(text))
