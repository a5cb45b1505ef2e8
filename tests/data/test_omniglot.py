"""Omniglot loader: class layout, polarity, rotations, zip checks, download failure, cache."""

from __future__ import annotations

import hashlib
import io
import os
import re
import shutil
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from esmeta.data import omniglot
from esmeta.data.omniglot import (
    EXPECTED_CHARACTERS,
    ZIP_NAMES,
    Omniglot,
    cache_file,
    check_zip,
    default_cache_dir,
    default_data_root,
    load_omniglot,
    locate_zips,
)
from esmeta.errors import ConfigError, DataError

N_CLASSES = 4 * (964 + 659)


@pytest.fixture(scope="module")
def omniglot28_nearest(omniglot_root: Path, esmeta_cache_dir: Path) -> Omniglot:
    """All classes at 28x28 with nearest resizing (Snell et al.'s preprocessing)."""
    return load_omniglot(omniglot_root, image_size=28, resize_filter="nearest", download=False)


def _fake_zip(path: Path, n_chars: int, per_char: int = 20, short_char: int | None = None) -> Path:
    """A zip with only file entries (like the official ones) and empty PNG payloads; names are all check_zip reads."""
    with zipfile.ZipFile(path, "w") as zf:
        for c in range(n_chars):
            alphabet, character = f"Alpha{c // 40:02d}", f"character{c % 40 + 1:02d}"
            for i in range(per_char - (c == short_char)):
                zf.writestr(f"{path.stem}/{alphabet}/{character}/{c:04d}_{i + 1:02d}.png", b"")
        zf.writestr(f"{path.stem}/README.txt", b"non-PNG entries are ignored")
    return path


def _rotation_mismatch(data: Omniglot, k: int, rot: int) -> tuple[float, float]:
    """(fraction of unequal pixels, mean abs diff / 255) between class rot(k) and np.rot90(class rot000, rot)."""
    source = data.images[0::4].astype(np.int16)
    rotated = data.images[k::4].astype(np.int16)
    diff = np.abs(rotated - np.rot90(source, rot, axes=(-2, -1)))
    return float((diff > 0).mean()), float(diff.mean() / 255)


# --------------------------------------------------------------------------- layout


def test_loads_all_rotated_classes(omniglot32: Omniglot) -> None:
    assert omniglot32.images.shape == (N_CLASSES, 20, 32, 32)
    assert omniglot32.images.dtype == np.uint8
    assert len(omniglot32.class_names) == N_CLASSES
    assert len(set(omniglot32.class_names)) == N_CLASSES
    assert all(re.fullmatch(r"[^/]+/character\d\d/rot(000|090|180|270)", n) for n in omniglot32.class_names)


def test_class_order_background_then_evaluation_rotations_consecutive(omniglot32: Omniglot) -> None:
    names = omniglot32.class_names
    chars = [tuple(n.split("/")[:2]) for n in names[0::4]]
    n_background = EXPECTED_CHARACTERS["images_background.zip"]
    assert chars[:n_background] == sorted(chars[:n_background])  # (alphabet, character) order per zip
    assert chars[n_background:] == sorted(chars[n_background:])
    assert chars[0] == ("Alphabet_of_the_Magi", "character01")  # first background alphabet
    assert chars[n_background] == ("Angelic", "character01")  # first evaluation alphabet
    for k, rot in enumerate(("rot000", "rot090", "rot180", "rot270")):
        assert all(n.endswith(rot) for n in names[k::4])
        assert [tuple(n.split("/")[:2]) for n in names[k::4]] == chars


def test_first_image_is_first_png_inverted_and_resized(omniglot_root: Path, omniglot28_nearest: Omniglot) -> None:
    with zipfile.ZipFile(omniglot_root / "images_background.zip") as zf:
        entries = sorted(n for n in zf.namelist() if "/Alphabet_of_the_Magi/character01/" in n)
        png = Image.open(io.BytesIO(zf.read(entries[0]))).convert("L")
    expected = 255 - np.asarray(png.resize((28, 28), Image.Resampling.NEAREST))
    np.testing.assert_array_equal(omniglot28_nearest.images[0, 0], expected)


def test_ink_is_high_and_sparse(omniglot32: Omniglot) -> None:
    corners = omniglot32.images[:, :, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).mean() > 0.99  # background is 0
    ink = omniglot32.images.mean() / 255
    assert 0.01 < ink < 0.25  # strokes are a small part of the image
    assert omniglot32.images.max() == 255


def test_antialias_has_grey_levels_nearest_only_binary(omniglot32: Omniglot, omniglot28_nearest: Omniglot) -> None:
    assert omniglot28_nearest.images.shape == (N_CLASSES, 20, 28, 28)
    assert set(np.unique(omniglot28_nearest.images).tolist()) == {0, 255}
    grey = (omniglot32.images > 0) & (omniglot32.images < 255)
    assert grey.mean() > 0.01  # antialiasing (BOX) blends ink and background at stroke edges
    assert len(np.unique(omniglot32.images)) >= 20


@pytest.mark.parametrize("fixture", ["omniglot32", "omniglot28_nearest"])
def test_rotated_classes_are_counterclockwise_rotations(fixture: str, request: pytest.FixtureRequest) -> None:
    data = request.getfixturevalue(fixture)
    # rotate-then-resize need not commute with resize-then-rotate exactly, hence the tolerance
    for k in (1, 2, 3):  # class rot(90k) == np.rot90(rot000, k) (counter-clockwise)
        frac, mad = _rotation_mismatch(data, k, k)
        assert frac < 0.03 and mad < 0.01, (k, frac, mad)
        for wrong in {0, 1, 2, 3} - {k}:
            wrong_frac, wrong_mad = _rotation_mismatch(data, k, wrong)
            assert wrong_mad > 10 * max(mad, 0.001), (k, wrong, wrong_mad)


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize("kwargs", [{"resize_filter": "bilinear"}, {"image_size": 0}, {"image_size": 28.0}])
def test_bad_config_is_config_error(kwargs: dict, tmp_path: Path) -> None:
    args = {"image_size": 28, "resize_filter": "nearest", **kwargs}
    with pytest.raises(ConfigError) as err:
        load_omniglot(tmp_path, cache_dir=tmp_path, download=False, **args)
    assert "\n" not in str(err.value)


# --------------------------------------------------------------------------- check_zip


def test_official_zips_pass_check(omniglot_root: Path) -> None:
    for name in ZIP_NAMES:
        check_zip(omniglot_root / name)


def test_complete_fake_zip_passes_check(tmp_path: Path) -> None:
    check_zip(_fake_zip(tmp_path / "images_evaluation.zip", 659))


def test_garbage_file_is_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "images_background.zip"
    path.write_bytes(b"this is not a zip archive" * 100)
    with pytest.raises(DataError, match="corrupt") as err:
        check_zip(path)
    assert "\n" not in str(err.value)


def test_truncated_zip_is_corrupt(omniglot_root: Path, tmp_path: Path) -> None:
    path = tmp_path / "images_evaluation.zip"
    path.write_bytes((omniglot_root / "images_evaluation.zip").read_bytes()[:100_000])
    with pytest.raises(DataError, match="corrupt"):
        check_zip(path)


def test_missing_character_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="658 characters, expected 659"):
        check_zip(_fake_zip(tmp_path / "images_evaluation.zip", 658))


def test_character_with_19_images_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="exactly 20 PNGs"):
        check_zip(_fake_zip(tmp_path / "images_evaluation.zip", 659, short_char=3))


# --------------------------------------------------------------------------- locate_zips / download


def test_default_dirs_follow_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ESMETA_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("ESMETA_CACHE_DIR", str(tmp_path / "cache"))
    assert default_data_root() == tmp_path / "data"
    assert default_cache_dir() == tmp_path / "cache"
    monkeypatch.delenv("ESMETA_DATA_DIR")
    monkeypatch.delenv("ESMETA_CACHE_DIR")
    assert default_data_root().parts[-2:] == ("esmeta", "omniglot") or default_data_root().name == "omniglot"
    assert default_cache_dir().name == "preprocessed"


def test_locate_zips_finds_official_zips(omniglot_root: Path) -> None:
    assert locate_zips(omniglot_root, download=False) == {n: omniglot_root / n for n in ZIP_NAMES}


def test_missing_zips_without_download_is_one_line_error(tmp_path: Path) -> None:
    with pytest.raises(DataError) as err:
        locate_zips(tmp_path, download=False)
    message = str(err.value)
    assert "\n" not in message
    assert str(tmp_path) in message and "ESMETA_DATA_DIR" in message and "images_background.zip" in message


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/{name}", "http://10.255.255.1/{name}"])
def test_failed_download_is_fast_one_line_error(url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # Local URLs, refused or unroutable, so the test behaves the same with or without internet.
    monkeypatch.setattr(omniglot, "UPSTREAM_URL", url)
    monkeypatch.setattr(omniglot, "DOWNLOAD_TIMEOUT_S", 1.0)
    start = time.perf_counter()
    with pytest.raises(DataError, match="download failed") as err:
        locate_zips(tmp_path, download=True)
    assert time.perf_counter() - start < 10
    assert "\n" not in str(err.value) and "ESMETA_DATA_DIR" in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no partial download left behind


def test_download_with_wrong_md5_is_rejected(omniglot_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # The local mirror holds the same PNGs in a re-packed zip, so its md5 differs from upstream's.
    monkeypatch.setattr(omniglot, "UPSTREAM_URL", (omniglot_root / "{name}").as_uri().replace("%7B", "{").replace("%7D", "}"))
    with pytest.raises(DataError, match="md5"):
        locate_zips(tmp_path, download=True)
    assert list(tmp_path.iterdir()) == []


def test_download_with_matching_md5_succeeds(omniglot_root: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    md5 = {n: hashlib.md5((omniglot_root / n).read_bytes()).hexdigest() for n in ZIP_NAMES}
    monkeypatch.setattr(omniglot, "UPSTREAM_MD5", md5)
    monkeypatch.setattr(omniglot, "UPSTREAM_URL", (omniglot_root / "{name}").as_uri().replace("%7B", "{").replace("%7D", "}"))
    paths = locate_zips(tmp_path / "new", download=True)
    assert sorted(p.name for p in (tmp_path / "new").iterdir()) == sorted(ZIP_NAMES)
    for name in ZIP_NAMES:
        assert paths[name].read_bytes() == (omniglot_root / name).read_bytes()


# --------------------------------------------------------------------------- cache


def test_second_load_comes_from_cache_fast(omniglot_root: Path, omniglot32: Omniglot, esmeta_cache_dir: Path) -> None:
    assert cache_file(None, 32, "antialias").parent == esmeta_cache_dir
    assert cache_file(None, 32, "antialias").is_file()
    start = time.process_time()  # CPU time: a busy machine (other jobs on the cores) does not inflate it
    again = load_omniglot(omniglot_root, image_size=32, resize_filter="antialias", download=False)
    assert time.process_time() - start < 2.0  # rebuilding (decoding and resizing 32,460 PNGs) takes far longer
    np.testing.assert_array_equal(again.images, omniglot32.images)
    assert again.class_names == omniglot32.class_names


def test_a_wrong_root_is_reported_even_when_a_cache_exists(omniglot32: Omniglot, tmp_path: Path) -> None:
    """The cache never hides a bad data.root: the zips are located and checked on every load."""
    with pytest.raises(DataError, match="no_zips_here"):
        load_omniglot(tmp_path / "no_zips_here", image_size=32, download=False)


def test_cache_key_separates_size_filter_and_version(
    omniglot32: Omniglot, omniglot28_nearest: Omniglot, esmeta_cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {cache_file(None, 32, "antialias"), cache_file(None, 28, "nearest"), cache_file(None, 28, "antialias")}
    assert len(files) == 3
    assert cache_file(None, 32, "antialias").is_file() and cache_file(None, 28, "nearest").is_file()
    monkeypatch.setattr(omniglot, "CACHE_FORMAT_VERSION", omniglot.CACHE_FORMAT_VERSION + 1)
    assert cache_file(None, 32, "antialias") not in files
    assert not any(p.name.endswith(".tmp") for p in esmeta_cache_dir.iterdir())  # written atomically


def test_corrupt_cache_is_rebuilt(omniglot_root: Path, omniglot28_nearest: Omniglot, tmp_path: Path) -> None:
    path = cache_file(tmp_path, 28, "nearest")
    path.write_bytes(b"half a cache file, as if a run had been killed")
    rebuilt = load_omniglot(omniglot_root, image_size=28, resize_filter="nearest", cache_dir=tmp_path, download=False)
    np.testing.assert_array_equal(rebuilt.images, omniglot28_nearest.images)
    assert path.stat().st_size > rebuilt.images.nbytes  # replaced by a full cache
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]


def test_failed_cache_write_leaves_nothing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def savez_then_die(file, **arrays):  # writes part of the file, then fails like a killed run
        file.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(omniglot.np, "savez", savez_then_die)
    data = Omniglot(images=np.zeros((4, 20, 2, 2), np.uint8), class_names=("a", "b", "c", "d"))
    with pytest.raises(DataError, match="x.npz"):
        omniglot._write_cache(tmp_path / "x.npz", data, "{}")
    assert list(tmp_path.iterdir()) == []


def test_a_cache_of_the_wrong_content_is_called_stale_and_rebuilt(
    omniglot_root: Path, omniglot28_nearest: Omniglot, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A valid cache file with the right key but 400 classes is not blamed on the zips: it is rebuilt."""
    path = cache_file(tmp_path, 28, "nearest")
    zips = omniglot.check_zips(omniglot_root, download=False)
    meta = omniglot._cache_meta(28, "nearest", omniglot.zip_fingerprint(zips))
    small = Omniglot(images=np.zeros((400, 20, 28, 28), np.uint8), class_names=tuple(f"c{i}" for i in range(400)))
    omniglot._write_cache(path, small, meta)
    rebuilt = load_omniglot(omniglot_root, image_size=28, resize_filter="nearest", cache_dir=tmp_path, download=False)
    assert rebuilt.images.shape[0] == 6492
    assert any("stale" in r.getMessage() and str(path) in r.getMessage() for r in caplog.records)


def test_a_cache_is_tied_to_the_zips_it_came_from(omniglot_root: Path, tmp_path: Path) -> None:
    """Another pair of zips (one entry differs) gives another fingerprint, so their cache is not reused."""
    other = tmp_path / "other"
    other.mkdir()
    for name in omniglot.ZIP_NAMES:
        shutil.copy(omniglot_root / name, other / name)
    with zipfile.ZipFile(other / "images_evaluation.zip", "a") as zf:
        zf.writestr("images_evaluation/extra/character01/x.png", b"not an image")
    same = omniglot.zip_fingerprint(omniglot.locate_zips(omniglot_root, download=False))
    assert omniglot.zip_fingerprint(omniglot.locate_zips(other, download=False)) != same


def test_a_killed_cache_builds_temporary_goes_at_the_next_load_even_on_a_cache_hit(
    omniglot_root: Path, omniglot32: Omniglot, tmp_path: Path
) -> None:
    """A kill during a cache build leaves `.omniglot_*.tmp` (33 MB at 32 px), its lock gone with its writer: the next
    load removes it, also when the cache is there (it used to wait for another cache build, and an hour)."""
    cache = cache_file(tmp_path, 32, "antialias")
    cache.symlink_to(cache_file(None, 32, "antialias"))  # a cache hit, without copying 33 MB
    orphan = tmp_path / f".{cache.name}.abc123.tmp"
    orphan.write_bytes(b"x" * 100)
    data = load_omniglot(omniglot_root, image_size=32, resize_filter="antialias", cache_dir=tmp_path, download=False)
    assert data.images.shape == omniglot32.images.shape
    assert sorted(p.name for p in tmp_path.iterdir()) == [cache.name]


def test_a_written_cache_gets_the_umask_mode(tmp_path: Path) -> None:
    data = Omniglot(images=np.zeros((4, 20, 2, 2), np.uint8), class_names=("a", "b", "c", "d"))
    omniglot._write_cache(tmp_path / "omniglot_2px.npz", data, "{}")
    assert (tmp_path / "omniglot_2px.npz").stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_an_explicit_missing_data_root_is_not_created(tmp_path: Path) -> None:
    """`data.root=/nonexistent` with downloads on and no network: the error, and no folder left behind."""
    root = tmp_path / "nonexistent" / "omniglot"
    with pytest.raises(DataError, match="nonexistent"):
        omniglot.locate_zips(root, download=True)
    assert not (tmp_path / "nonexistent").exists()


# --------------------------------------------------------------------------- a user's own images


def test_prepare_images_makes_a_users_drawing_exactly_as_the_training_images(omniglot_root: Path,
                                                                             omniglot32: Omniglot) -> None:
    """The first Omniglot PNG, handed over as bytes, a PIL image, or its pixels (bool, uint8, float), becomes the
    cache's first image bit for bit: the same conversion, inversion and resize as training."""
    with zipfile.ZipFile(omniglot_root / "images_background.zip") as zf:
        entries = sorted(n for n in zf.namelist() if "/Alphabet_of_the_Magi/character01/" in n)
        data = zf.read(entries[0])
    pil = Image.open(io.BytesIO(data))
    forms = [data, pil, np.asarray(pil), np.asarray(pil.convert("L")), np.asarray(pil, np.float32)]
    prepared = omniglot.prepare_images(forms, 32)
    assert prepared.shape == (5, 32, 32) and prepared.dtype == np.uint8
    for got in prepared:
        np.testing.assert_array_equal(got, omniglot32.images[0, 0])
    np.testing.assert_array_equal(omniglot.prepare_images(data, 32)[0], omniglot32.images[0, 0])  # one image
    bright = omniglot.prepare_images(255 - np.asarray(pil.convert("L")), 32, dark_ink=False)
    np.testing.assert_array_equal(bright[0], omniglot32.images[0, 0])


@pytest.mark.parametrize(
    ("images", "fragment"),
    [
        (b"not an image", "image bytes cannot be decoded"),
        ([np.zeros((2, 3, 4, 5))], "must be 2-D (height, width)"),
        ([np.full((4, 4), 2.0)], "float image array must hold values in [0, 1]"),
        ([np.full((4, 4), 300)], "must hold values in 0-255"),
        ([], "no images given"),
    ],
)
def test_prepare_images_refuses_what_is_not_a_drawing_in_one_line(images, fragment: str) -> None:
    with pytest.raises(DataError, match=re.escape(fragment)) as err:
        omniglot.prepare_images(images, 32)
    assert "\n" not in str(err.value)
