"""Class splits of the 6492 rotated Omniglot classes into train / val / test index arrays.

Three splits:

- "paper" (Sheng & He 2021, Sec. III.B): a seeded random permutation of all 6492 rotated classes
  cut into 4804 / 1012 / 676. It splits by *rotated class*, so the four rotations of one character
  usually land in different splits (a test character's rot090 may be in train): the test classes
  are rotations of characters seen in training, which makes it easier than "vinyals".
- "vinyals" (Vinyals et al. 2016, the lists shipped with Prototypical Networks): 4112 / 688 / 1692,
  split by *character*, so all rotations of a character are in the same split. It ignores the seed.
- "lake" (Lake et al. 2015's background/evaluation protocol): train and validation classes from
  images_background only (964 characters x 4 rotations; validation a seeded cut of LAKE_VAL_CHARACTERS
  characters with all their rotations), test classes from images_evaluation only (659 x 4 = 2636):
  3168 / 688 / 2636. Test alphabets are never seen in training, in any rotation.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np

from esmeta.errors import ConfigError, DataError

SPLITS = ("paper", "vinyals", "lake")
PAPER_SPLIT_SIZES = (4804, 1012, 676)  # train / val / test, Sheng & He 2021 Sec. III.B
VINYALS_SPLIT_SIZES = (4112, 688, 1692)
LAKE_VAL_CHARACTERS = 172  # as many validation characters as Vinyals' split has (688 classes)
LAKE_SPLIT_SIZES = (4 * (964 - LAKE_VAL_CHARACTERS), 4 * LAKE_VAL_CHARACTERS, 4 * 659)
# The 30 alphabets of images_background.zip (Lake et al. 2015); the other 20 are images_evaluation.zip's.
BACKGROUND_ALPHABETS = frozenset({
    "Alphabet_of_the_Magi", "Anglo-Saxon_Futhorc", "Arcadian", "Armenian", "Asomtavruli_(Georgian)", "Balinese",
    "Bengali", "Blackfoot_(Canadian_Aboriginal_Syllabics)", "Braille", "Burmese_(Myanmar)", "Cyrillic",
    "Early_Aramaic", "Futurama", "Grantha", "Greek", "Gujarati", "Hebrew",
    "Inuktitut_(Canadian_Aboriginal_Syllabics)", "Japanese_(hiragana)", "Japanese_(katakana)", "Korean", "Latin",
    "Malay_(Jawi_-_Arabic)", "Mkhedruli_(Georgian)", "N_Ko", "Ojibwe_(Canadian_Aboriginal_Syllabics)", "Sanskrit",
    "Syriac_(Estrangelo)", "Tagalog", "Tifinagh",
})
PARTS = ("train", "val", "test")


def _check_split(split: str) -> None:
    """Raise a one-line ConfigError for an unknown split name."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; set data.split to one of: {', '.join(SPLITS)}")


def split_sizes(split: str) -> tuple[int, int, int]:
    """Static (train, val, test) class counts of a split, without loading any data."""
    _check_split(split)
    return {"paper": PAPER_SPLIT_SIZES, "vinyals": VINYALS_SPLIT_SIZES, "lake": LAKE_SPLIT_SIZES}[split]


def vinyals_names(part: str) -> list[str]:
    """The packaged Vinyals list for part ("train", "val", "test" or "trainval"), one class name a line."""
    text = resources.files("esmeta.data").joinpath("vinyals", f"{part}.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _paper_split(n_classes: int, seed: int) -> dict[str, np.ndarray]:
    """Seeded random permutation of all classes cut into PAPER_SPLIT_SIZES."""
    if n_classes != sum(PAPER_SPLIT_SIZES):
        raise DataError(
            f"the paper split needs all {sum(PAPER_SPLIT_SIZES)} rotated Omniglot classes, got {n_classes}; "
            "load the full dataset (both zips, 4 rotations)"
        )
    perm = np.random.default_rng(seed).permutation(n_classes)
    cuts = np.cumsum(PAPER_SPLIT_SIZES)[:-1]
    return {part: np.sort(idx).astype(np.int32) for part, idx in zip(PARTS, np.split(perm, cuts))}


def _vinyals_split(class_names: Sequence[str]) -> dict[str, np.ndarray]:
    """Map the packaged Vinyals lists to indices into class_names; every listed name must exist."""
    index = {name: i for i, name in enumerate(class_names)}
    if len(index) != len(class_names):
        raise DataError("class_names contains duplicates; pass the class_names of a loaded Omniglot dataset")
    out = {}
    for part in PARTS:
        names = vinyals_names(part)
        missing = [name for name in names if name not in index]
        if missing:
            raise DataError(
                f"{len(missing)} classes of the Vinyals {part} list (first {missing[0]}) are not in the "
                "dataset; load the full Omniglot dataset (both zips, 4 rotations)"
            )
        out[part] = np.sort(np.array([index[name] for name in names], dtype=np.int32))
    return out


def _lake_split(class_names: Sequence[str], seed: int) -> dict[str, np.ndarray]:
    """Background characters -> train / val (a seeded cut of characters), evaluation characters -> test."""
    character = [name.rsplit("/", 1)[0] for name in class_names]  # alphabet/characterNN, rotation dropped
    background = sorted({c for c in character if c.split("/", 1)[0] in BACKGROUND_ALPHABETS})
    evaluation = {c for c in character if c.split("/", 1)[0] not in BACKGROUND_ALPHABETS}
    if (len(background), len(evaluation), len(class_names)) != (964, 659, 4 * 1623):
        raise DataError(
            f"the lake split needs the 964 background and 659 evaluation characters in 4 rotations, got "
            f"{len(background)} and {len(evaluation)} in {len(class_names)} classes; load the full dataset (both zips)"
        )
    perm = np.random.default_rng(seed).permutation(len(background))
    val = {background[i] for i in perm[:LAKE_VAL_CHARACTERS]}
    part = ["test" if c in evaluation else "val" if c in val else "train" for c in character]
    return {p: np.flatnonzero(np.asarray(part) == p).astype(np.int32) for p in PARTS}


def split_classes(class_names: Sequence[str], split: str, seed: int) -> dict[str, np.ndarray]:
    """{"train", "val", "test"} -> sorted int32 indices into class_names (seed used by "paper" and "lake")."""
    _check_split(split)
    if split == "paper":
        return _paper_split(len(class_names), seed)
    if split == "lake":
        return _lake_split(class_names, seed)
    return _vinyals_split(class_names)
