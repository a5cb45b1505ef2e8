"""Class splits: exact sizes, disjoint, deterministic; paper splits rotations, Vinyals splits characters."""

from __future__ import annotations

import numpy as np
import pytest

from esmeta.data.omniglot import Omniglot
from esmeta.data.splits import (
    BACKGROUND_ALPHABETS,
    LAKE_SPLIT_SIZES,
    PAPER_SPLIT_SIZES,
    SPLITS,
    split_classes,
    split_sizes,
    vinyals_names,
)
from esmeta.errors import ConfigError, DataError

PARTS = ("train", "val", "test")


@pytest.fixture(scope="module")
def all_names() -> tuple[str, ...]:
    """The 6492 class names, from the packaged lists (trainval + test), so most tests need no images."""
    return tuple(sorted(vinyals_names("trainval") + vinyals_names("test")))


def _characters(names: tuple[str, ...], idx: np.ndarray) -> set[str]:
    """Alphabet/characterNN of the classes at idx (dropping the rotation)."""
    return {names[i].rsplit("/", 1)[0] for i in idx}


def _check_partition(split: dict[str, np.ndarray], sizes: tuple[int, int, int], n: int, covers: bool) -> None:
    """Exact sizes, sorted int32 indices in range, pairwise disjoint, and (if covers) the union is everything."""
    assert set(split) == set(PARTS)
    for part, size in zip(PARTS, sizes):
        idx = split[part]
        assert idx.dtype == np.int32 and idx.shape == (size,)
        assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < n
    union = np.concatenate([split[p] for p in PARTS])
    assert len(np.unique(union)) == len(union)  # disjoint
    if covers:
        assert len(union) == n


def test_static_sizes() -> None:
    assert SPLITS == ("paper", "vinyals", "lake")
    assert split_sizes("paper") == PAPER_SPLIT_SIZES == (4804, 1012, 676)
    assert split_sizes("vinyals") == (4112, 688, 1692)
    assert sum(PAPER_SPLIT_SIZES) == 6492


@pytest.mark.parametrize("call", [lambda: split_sizes("omniglot"), lambda: split_classes(["a"], "random", 0)])
def test_unknown_split_is_config_error_listing_choices(call) -> None:
    with pytest.raises(ConfigError, match="paper, vinyals") as err:
        call()
    assert "\n" not in str(err.value)


def test_packaged_vinyals_lists() -> None:
    train, val, test, trainval = (vinyals_names(p) for p in ("train", "val", "test", "trainval"))
    assert (len(train), len(val), len(test), len(trainval)) == (4112, 688, 1692, 4800)
    assert trainval == train + val
    assert len(set(trainval + test)) == 6492


def test_paper_split_partitions_all_classes(all_names: tuple[str, ...]) -> None:
    _check_partition(split_classes(all_names, "paper", seed=0), PAPER_SPLIT_SIZES, 6492, covers=True)


def test_paper_split_is_deterministic_per_seed(all_names: tuple[str, ...]) -> None:
    a, b, c = (split_classes(all_names, "paper", seed=s) for s in (3, 3, 4))
    for part in PARTS:
        np.testing.assert_array_equal(a[part], b[part])
    assert not np.array_equal(a["test"], c["test"])


def test_paper_split_shares_characters_across_splits(all_names: tuple[str, ...]) -> None:
    # Rotations of one character land in different splits: the paper split is easier than Vinyals'.
    split = split_classes(all_names, "paper", seed=0)
    shared = _characters(all_names, split["test"]) & _characters(all_names, split["train"])
    assert len(shared) > 400  # almost every test character also has a rotation in train


def test_paper_split_needs_all_classes(all_names: tuple[str, ...]) -> None:
    with pytest.raises(DataError, match="6492"):
        split_classes(all_names[:-4], "paper", seed=0)


def test_vinyals_split_by_character(all_names: tuple[str, ...]) -> None:
    split = split_classes(all_names, "vinyals", seed=0)
    _check_partition(split, (4112, 688, 1692), 6492, covers=True)
    chars = {p: _characters(all_names, split[p]) for p in PARTS}
    assert (len(chars["train"]), len(chars["val"]), len(chars["test"])) == (1028, 172, 423)
    assert not chars["train"] & chars["val"] and not chars["train"] & chars["test"] and not chars["val"] & chars["test"]
    assert [all_names[i] for i in split["test"]] == sorted(vinyals_names("test"))
    np.testing.assert_array_equal(split["train"], split_classes(all_names, "vinyals", seed=99)["train"])


def test_vinyals_split_missing_class_is_data_error(all_names: tuple[str, ...]) -> None:
    names = [n for n in all_names if n != "Gurmukhi/character42/rot090"]
    with pytest.raises(DataError, match="Gurmukhi/character42/rot090") as err:
        split_classes(names, "vinyals", seed=0)
    assert "\n" not in str(err.value)


def test_splits_on_loaded_dataset(omniglot32: Omniglot) -> None:
    names = omniglot32.class_names
    assert set(names) == set(vinyals_names("trainval") + vinyals_names("test"))  # every listed name exists
    vinyals = split_classes(names, "vinyals", seed=0)
    assert {names[i] for i in vinyals["val"]} == set(vinyals_names("val"))
    _check_partition(split_classes(names, "paper", seed=1), PAPER_SPLIT_SIZES, len(names), covers=True)


def test_lake_split_keeps_every_test_character_out_of_train_and_validation_in_every_rotation(all_names) -> None:
    """Lake et al.'s protocol: train/val from the 30 background alphabets, test from the 20 evaluation ones."""
    assert split_sizes("lake") == LAKE_SPLIT_SIZES == (3168, 688, 2636)
    split = split_classes(all_names, "lake", 0)
    _check_partition(split, LAKE_SPLIT_SIZES, len(all_names), covers=True)
    train, val, test = (_characters(all_names, split[p]) for p in PARTS)
    assert not test & (train | val) and not train & val  # by character, so no rotation of one crosses over
    for part in PARTS:  # every rotation of a character of a part is in that part
        names = {all_names[i] for i in split[part]}
        chars = _characters(all_names, split[part])
        assert names == {f"{c}/rot{d:03d}" for c in chars for d in (0, 90, 180, 270)}
    alphabet = lambda chars: {c.split("/")[0] for c in chars}  # noqa: E731
    assert alphabet(train | val) == BACKGROUND_ALPHABETS and len(alphabet(test)) == 20
    assert not alphabet(test) & BACKGROUND_ALPHABETS
    # The validation cut is seeded: same seed, same cut; another seed, another cut of the same sizes.
    again, other = split_classes(all_names, "lake", 0), split_classes(all_names, "lake", 1)
    assert all(np.array_equal(split[p], again[p]) for p in PARTS)
    assert not np.array_equal(split["val"], other["val"]) and np.array_equal(split["test"], other["test"])


def test_lake_split_on_the_loaded_data_matches_the_zips(omniglot32) -> None:
    """On the real data: the test classes are exactly images_evaluation's characters (the second zip's,
    loaded after the background ones), in all four rotations."""
    split = split_classes(omniglot32.class_names, "lake", 0)
    n_background = 4 * 964
    assert np.array_equal(split["test"], np.arange(n_background, len(omniglot32.class_names)))
    assert split["train"].max() < n_background and split["val"].max() < n_background


def test_lake_split_needs_the_whole_dataset(all_names) -> None:
    with pytest.raises(DataError, match="lake split needs"):
        split_classes(all_names[:100], "lake", 0)
