"""Captions of the synthetic world, as the web writes them: the objects are named, the background rarely.

Pure functions of their arguments (randomness comes in as a generator), used by `SyntheticWorld` for item
captions, background-alone captions and the vocabulary the toy CLIP's token table keeps.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# How captions name each background alone ("a photo of {noun}.") and next to objects ("a cow {prep}.").
BACKGROUND_WORDS: dict[str, tuple[str, str]] = {
    "water": ("water", "on the water"),
    "sky": ("the sky", "in the sky"),
    "grass": ("grass", "on the grass"),
    "rails": ("railway tracks", "on railway tracks"),
    "sand": ("sand", "on the sand"),
    "snow": ("snow", "in the snow"),
    "brick": ("a brick wall", "by a brick wall"),
    "tiles": ("tiles", "on tiles"),
}

_PLURALS: dict[str, str] = {"bus": "buses", "sheep": "sheep", "person": "people"}  # irregular plurals
_NUMBER_WORDS = {2: "two", 3: "three", 4: "four", 5: "five"}
OBJECT_TEMPLATES = ("a photo of {o}.", "a picture of {o}.", "{o}.")
OBJECT_BG_TEMPLATES = ("a photo of {o} {prep}.", "a picture of {o} {prep}.", "{o} {prep}.")
OBJECT_MULTI_BG_TEMPLATES = ("a photo of {o} with {bgs}.", "{o} with {bgs}.")
BACKGROUND_TEMPLATES = ("a photo of {noun}.", "a picture of {noun}.", "{noun}.")


def count_phrase(name: str, n: int) -> str:
    """"a cow", "an owl", "two cows", "three buses"."""
    if n == 1:
        return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"
    return f"{_NUMBER_WORDS.get(n, str(n))} {_PLURALS.get(name, name + 's')}"


def web_caption(rng: np.random.Generator, counts: dict[str, int], backgrounds: Sequence[str],
                background_prob: float, partial_prob: float = 0.0) -> str:
    """A caption of an image holding ``counts`` (class name -> visible objects, in painting order) over
    `backgrounds` (top to bottom): the objects in random order; with `partial_prob` (images of several classes)
    only a random non-empty subset of the classes; the background(s) named with `background_prob`.
    """
    order = list(counts)
    rng.shuffle(order)
    if partial_prob > 0 and len(order) > 1 and rng.random() < partial_prob:  # no draw at 0: old captions stay
        order = order[:int(rng.integers(1, len(order)))]
    objects = " and ".join(count_phrase(c, counts[c]) for c in order)
    if rng.random() >= background_prob:
        return OBJECT_TEMPLATES[int(rng.integers(0, len(OBJECT_TEMPLATES)))].format(o=objects)
    if len(backgrounds) == 1:
        template = OBJECT_BG_TEMPLATES[int(rng.integers(0, len(OBJECT_BG_TEMPLATES)))]
        return template.format(o=objects, prep=BACKGROUND_WORDS[backgrounds[0]][1])
    template = OBJECT_MULTI_BG_TEMPLATES[int(rng.integers(0, len(OBJECT_MULTI_BG_TEMPLATES)))]
    return template.format(o=objects, bgs=" and ".join(BACKGROUND_WORDS[n][0] for n in backgrounds))


def background_captions(background: str) -> list[str]:
    """Every caption of one background alone, e.g. ["a photo of water.", "a picture of water.", "water."]."""
    noun = BACKGROUND_WORDS[background][0]
    return [t.format(noun=noun) for t in BACKGROUND_TEMPLATES]


def backgrounds_caption(rng: np.random.Generator, backgrounds: Sequence[str]) -> str:
    """A caption of background(s) alone (top to bottom), e.g. "a photo of the sky and water." """
    noun = " and ".join(BACKGROUND_WORDS[b][0] for b in backgrounds)
    return BACKGROUND_TEMPLATES[int(rng.integers(0, len(BACKGROUND_TEMPLATES)))].format(noun=noun)


def class_captions(name: str) -> list[str]:
    """Every single-object caption of a class, without background words."""
    phrase = count_phrase(name, 1)
    return [t.format(o=phrase) for t in OBJECT_TEMPLATES]


def vocabulary(class_names: Sequence[str], background_names: Sequence[str], max_objects: int) -> list[str]:
    """Every word any caption can contain (sorted; punctuation split off)."""
    words: set[str] = {"and", "with", "."}
    for t in OBJECT_TEMPLATES + OBJECT_BG_TEMPLATES + OBJECT_MULTI_BG_TEMPLATES + BACKGROUND_TEMPLATES:
        words.update(t.replace("{o}", "").replace("{prep}", "").replace("{bgs}", "").replace("{noun}", "")
                     .replace(".", "").split())
    for c in class_names:
        for n in range(1, max_objects + 1):
            words.update(count_phrase(c, n).split())
    for b in background_names:
        words.update(BACKGROUND_WORDS[b][0].split())
        words.update(BACKGROUND_WORDS[b][1].split())
    return sorted(words)
