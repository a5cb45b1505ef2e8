"""Class splits of the 6492 rotated Omniglot classes into train / val / test index arrays.

Two splits:

- "paper" (Sheng & He 2021, Sec. III.B): a seeded random permutation of all 6492 rotated classes
  cut into 4804 / 1012 / 676. It splits by *rotated class*, so the four rotations of one character
  usually land in different splits (a test character's rot090 may be in train): the test classes
  are rotations of characters seen in training, which makes it easier than "vinyals".
- "vinyals" (Vinyals et al. 2016, the lists shipped with Prototypical Networks): 4112 / 688 / 1692,
  split by *character*, so all rotations of a character are in the same split. It ignores the seed.
"""

from __future__ import annotations

from collections.abc import Sequence
from importlib import resources

import numpy as np

from esmeta.errors import ConfigError, DataError

PAPER_SPLIT_SIZES = (4804, 1012, 676)  # train / val / test, Sheng & He 2021 Sec. III.B
VINYALS_SPLIT_SIZES = (4112, 688, 1692)
SPLITS = ("paper", "vinyals")
PARTS = ("train", "val", "test")


def _check_split(split: str) -> None:
    """Raise a one-line ConfigError for an unknown split name."""
    if split not in SPLITS:
        raise ConfigError(f"unknown split {split!r}; set data.split to one of: {', '.join(SPLITS)}")


def split_sizes(split: str) -> tuple[int, int, int]:
    """Static (train, val, test) class counts of a split, without loading any data."""
    _check_split(split)
    return PAPER_SPLIT_SIZES if split == "paper" else VINYALS_SPLIT_SIZES


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


def split_classes(class_names: Sequence[str], split: str, seed: int) -> dict[str, np.ndarray]:
    """{"train", "val", "test"} -> sorted int32 indices into class_names (seed used by "paper" only)."""
    _check_split(split)
    if split == "paper":
        return _paper_split(len(class_names), seed)
    return _vinyals_split(class_names)
