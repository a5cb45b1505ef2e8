"""Omniglot loader: find (or download) the official zips, check them, preprocess once into a cache.

Every character of the 1623 in the two official zips yields four classes, its rotations by
0/90/180/270 degrees (Vinyals et al. 2016), so the dataset has 6492 classes of 20 images.
Images are stored as uint8 with 255 = full ink and 0 = background (the PNGs are the opposite).
"""

from __future__ import annotations

import functools
import hashlib
import http.client
import io
import json
import logging
import os
import tempfile
import urllib.request
import zipfile
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import platformdirs
from PIL import Image, ImageOps

from esmeta.errors import ConfigError, DataError, first_line
from esmeta.run_dir import atomic_writer, remove_stale_temporaries

log = logging.getLogger(__name__)

ZIP_NAMES = ("images_background.zip", "images_evaluation.zip")
EXPECTED_CHARACTERS = {"images_background.zip": 964, "images_evaluation.zip": 659}
UPSTREAM_MD5 = {
    "images_background.zip": "68d2efa1b9178cc56df9314c21c6e718",
    "images_evaluation.zip": "6b91aef0f799c5bb55b94e3f2daec811",
}
UPSTREAM_URL = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python/{name}"

IMAGES_PER_CLASS = 20  # every Omniglot character has 20 drawings
MIN_IMAGE_SIZE = 16  # four 2x2 max-pools need at least 16 pixels to leave a 1x1 map
RESIZE_FILTERS = ("antialias", "nearest")
ROTATIONS = (0, 90, 180, 270)  # degrees counter-clockwise; class k of a character is np.rot90(img, k)
SOURCE_SIZE = 105  # side of every official Omniglot PNG
MAX_IMAGE_SIZE = SOURCE_SIZE  # we never upsample
CACHE_FORMAT_VERSION = 2  # bump when preprocessing changes, so stale caches are not reused
DOWNLOAD_TIMEOUT_S = 10.0
NUM_CLASSES = len(ROTATIONS) * sum(EXPECTED_CHARACTERS.values())  # 6492

_FIX_HINT = (
    "set ESMETA_DATA_DIR or data.root=<dir> to a folder holding "
    "images_background.zip and images_evaluation.zip"
)


@dataclass(frozen=True)
class Omniglot:
    """All 6492 rotated classes: images uint8 (classes, 20, S, S), 255 = ink; names aligned with images."""

    images: np.ndarray
    class_names: tuple[str, ...]


# --------------------------------------------------------------------------- locations


def default_data_root() -> Path:
    """Folder holding the zips: $ESMETA_DATA_DIR if set, else the user cache dir's omniglot/."""
    env = os.environ.get("ESMETA_DATA_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("esmeta")) / "omniglot"


def default_cache_dir() -> Path:
    """Folder for preprocessed arrays: $ESMETA_CACHE_DIR if set, else the user cache dir's preprocessed/."""
    env = os.environ.get("ESMETA_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    return Path(platformdirs.user_cache_dir("esmeta")) / "preprocessed"


def locate_zips(root: str | Path | None, download: bool = True) -> dict[str, Path]:
    """Return {zip name: path} for both zips under root, downloading missing ones if allowed."""
    root = default_data_root() if root is None else Path(root).expanduser()
    paths = {name: root / name for name in ZIP_NAMES}
    missing = [name for name, path in paths.items() if not path.is_file()]
    if not missing:
        return paths
    if not download:
        raise DataError(
            f"Omniglot {' and '.join(missing)} not found in {root} (download disabled); {_FIX_HINT}"
        )
    for name in missing:
        try:
            _download(UPSTREAM_URL.format(name=name), paths[name], UPSTREAM_MD5[name])
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, timeout, md5, read-only dir
            reason = " ".join(str(err).split())  # the message must stay on one line
            raise DataError(
                f"Omniglot {name} not found in {root} and its download failed ({reason}); {_FIX_HINT}"
            ) from err
    return paths


def _download(url: str, dest: Path, md5: str) -> None:
    """Fetch url into dest via a temp file in the same folder; rename only if the md5 matches.

    DOWNLOAD_TIMEOUT_S bounds connecting and each read (name resolution is up to the system resolver).
    The folder is created only once the server answers: a failed download creates nothing.
    """
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response:
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".tmp")
        _fetch(response, fd, Path(tmp_name), dest, md5, url)


def _fetch(response: Any, fd: int, tmp: Path, dest: Path, md5: str, url: str) -> None:
    """Stream `response` into the temp file `tmp` (open as `fd`), then rename it to `dest` if the md5 matches."""
    try:
        digest = hashlib.md5(usedforsecurity=False)  # an integrity check, not security
        with os.fdopen(fd, "wb") as out:
            while chunk := response.read(1 << 20):
                digest.update(chunk)
                out.write(chunk)
        if digest.hexdigest() != md5:
            raise ValueError(f"md5 of {url} is {digest.hexdigest()}, expected {md5}")
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------- zip contents


def _png_entries(names: list[str] | tuple[str, ...]) -> dict[tuple[str, str], list[str]]:
    """Map (alphabet, character) -> sorted PNG entry names; only *.png files, no directory entries."""
    chars: dict[tuple[str, str], list[str]] = defaultdict(list)
    for entry in names:
        parts = entry.split("/")
        # <top>/<Alphabet>/<characterNN>/<id>_<drawer>.png ; the top folder name is not relied on
        if entry.endswith(".png") and len(parts) >= 3:
            chars[(parts[-3], parts[-2])].append(entry)
    return {key: sorted(names) for key, names in chars.items()}


def _open_zip(path: Path) -> zipfile.ZipFile:
    """Open a zip, turning unreadable or non-zip files into a one-line DataError."""
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as err:
        raise DataError(
            f"{path} is corrupt or unreadable ({' '.join(str(err).split())}); delete it and re-download, or {_FIX_HINT}"
        ) from err


def _directory(path: Path) -> tuple[zipfile.ZipInfo, ...]:
    """A zip's central directory (every entry's name, size and CRC), read once a process for each version of the
    file: a run checks the zips and fingerprints them more than once before it starts."""
    try:
        st = path.stat()
    except OSError as err:
        raise DataError(f"{path} is unreadable ({' '.join(str(err).split())}); {_FIX_HINT}") from err
    return _read_directory(str(path.resolve()), st.st_ino, st.st_size, st.st_mtime_ns)


@functools.lru_cache(maxsize=8)
def _read_directory(path: str, inode: int, size: int, mtime_ns: int) -> tuple[zipfile.ZipInfo, ...]:
    """(inode, size, mtime) key the cache: a zip replaced or rewritten in place is read again."""
    with _open_zip(Path(path)) as zf:
        return tuple(zf.infolist())


def check_zip(path: Path) -> None:
    """Content check (not a checksum): the expected number of characters, each with exactly 20 PNGs."""
    path = Path(path)
    if path.name not in EXPECTED_CHARACTERS:
        raise DataError(f"{path} is not an Omniglot zip (expected one of {', '.join(ZIP_NAMES)}); {_FIX_HINT}")
    chars = _png_entries([info.filename for info in _directory(path)])
    expected = EXPECTED_CHARACTERS[path.name]
    if len(chars) != expected:
        raise DataError(
            f"{path} holds {len(chars)} characters, expected {expected}; the file is incomplete, "
            f"replace it with the official one or {_FIX_HINT}"
        )
    wrong = sorted(f"{a}/{c}" for (a, c), names in chars.items() if len(names) != IMAGES_PER_CLASS)
    if wrong:
        raise DataError(
            f"{path}: {len(wrong)} characters (first {wrong[0]}) do not have exactly "
            f"{IMAGES_PER_CLASS} PNGs; replace it with the official file or {_FIX_HINT}"
        )


# --------------------------------------------------------------------------- preprocessing


def _resample(resize_filter: str) -> Image.Resampling:
    """PIL filter for a config name: "antialias" -> BOX, "nearest" -> NEAREST (as Snell et al.).

    BOX averages the source pixels whose centres fall in each output pixel (3-4 per axis at
    105 -> 28/32): an ink-coverage estimate with no ringing, so the background stays exactly 0,
    and 3-4x faster than LANCZOS (whose negative lobes leave faint halos around strokes).
    """
    return Image.Resampling.BOX if resize_filter == "antialias" else Image.Resampling.NEAREST


# PIL's ROTATE_90 is counter-clockwise, identical to np.rot90(img, 1) (checked in the tests).
_TRANSPOSES = (None, Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)


def _ink(img: Image.Image) -> Image.Image:
    """A drawing (dark strokes on a light background) as mode "L" with ink = 255."""
    # Convert mode "1" to "L" first: PIL resizes mode "1" with NEAREST whatever filter is asked.
    return ImageOps.invert(img.convert("L"))


def _resized(ink: Image.Image, image_size: int, resample: Image.Resampling) -> np.ndarray:
    """An ink image resized to uint8 (S, S)."""
    return np.asarray(ink.resize((image_size, image_size), resample))


def _preprocess_png(data: bytes, image_size: int, resample: Image.Resampling) -> np.ndarray:
    """One PNG -> uint8 (4, S, S), its four rotations, ink = 255, rotated at 105x105 then resized."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            size = img.size
            ink = _ink(img)
    except (OSError, SyntaxError, ValueError) as err:  # PIL's errors for undecodable images
        raise DataError(f"an Omniglot PNG cannot be decoded ({err}); replace the zips with the official ones") from err
    if size != (SOURCE_SIZE, SOURCE_SIZE):
        raise DataError(f"an Omniglot PNG is {size}, expected 105x105; replace the zips with the official ones")
    out = np.empty((len(ROTATIONS), image_size, image_size), np.uint8)
    for k, transpose in enumerate(_TRANSPOSES):
        out[k] = _resized(ink if transpose is None else ink.transpose(transpose), image_size, resample)
    return out


def _preprocess_character(pngs: list[bytes], image_size: int, resample: Image.Resampling) -> np.ndarray:
    """One character's 20 PNGs -> uint8 (4 rotations, 20, S, S)."""
    return np.stack([_preprocess_png(png, image_size, resample) for png in pngs], axis=1)


def _read_entry(zf: zipfile.ZipFile, entry: str) -> bytes:
    """Bytes of one zip entry; a CRC or decompression failure becomes a one-line DataError."""
    try:
        return zf.read(entry)
    except (zipfile.BadZipFile, OSError, zlib.error) as err:
        raise DataError(
            f"{zf.filename}: entry {entry} is corrupt ({' '.join(str(err).split())}); replace the zip, or {_FIX_HINT}"
        ) from err


def _read_characters(zips: dict[str, Path]) -> tuple[list[list[bytes]], list[str]]:
    """Raw PNG bytes per character and the class names, in the documented class order."""
    characters: list[list[bytes]] = []
    names: list[str] = []
    for zip_name in ZIP_NAMES:  # background first, then evaluation (both checked by load_omniglot)
        with _open_zip(zips[zip_name]) as zf:
            chars = _png_entries(zf.namelist())
            for alphabet, character in sorted(chars):  # within a character, PNGs sorted by file name
                characters.append([_read_entry(zf, entry) for entry in chars[(alphabet, character)]])
                names.extend(f"{alphabet}/{character}/rot{deg:03d}" for deg in ROTATIONS)
    return characters, names


def _preprocess(zips: dict[str, Path], image_size: int, resize_filter: str) -> Omniglot:
    """Decode and resize all 32,460 PNGs, serially: ~10 s, and threads only add GIL contention."""
    characters, names = _read_characters(zips)
    resample = _resample(resize_filter)
    images = np.empty((len(names), IMAGES_PER_CLASS, image_size, image_size), np.uint8)
    for i, pngs in enumerate(characters):
        images[4 * i : 4 * i + 4] = _preprocess_character(pngs, image_size, resample)  # rot000..rot270
    return Omniglot(images=images, class_names=tuple(names))


# --------------------------------------------------------------------------- cache


def cache_file(cache_dir: str | Path | None, image_size: int, resize_filter: str) -> Path:
    """Cache path, keyed by everything that changes the arrays (size, filter, format version)."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir).expanduser()
    return cache_dir / f"omniglot_{image_size}px_{resize_filter}_v{CACHE_FORMAT_VERSION}.npz"


def zip_fingerprint(zips: dict[str, Path]) -> str:
    """SHA-256 over every PNG entry's name, size and CRC-32 in both zips (their central directories, read
    in milliseconds): ties a cache to the zips it was built from, whatever their paths or times."""
    digest = hashlib.sha256()
    for zip_name in ZIP_NAMES:
        for info in sorted(_directory(Path(zips[zip_name])), key=lambda i: i.filename):
            if info.filename.endswith(".png"):
                digest.update(f"{zip_name}/{info.filename}:{info.file_size}:{info.CRC}\n".encode())
    return digest.hexdigest()


def _cache_meta(image_size: int, resize_filter: str, zips_sha256: str = "") -> str:
    """JSON stored inside the cache; a mismatch on load means the file is stale and is rebuilt."""
    return json.dumps({"image_size": image_size, "resize_filter": resize_filter, "version": CACHE_FORMAT_VERSION,
                       "zips_sha256": zips_sha256})


def _shape_problem(images: np.ndarray, class_names: np.ndarray, image_size: int) -> str | None:
    """Why a cache's arrays cannot serve this request (a wrong shape or type), or None."""
    shape = (NUM_CLASSES, IMAGES_PER_CLASS, image_size, image_size)
    if images.shape != shape or images.dtype != np.uint8 or len(class_names) != NUM_CLASSES:
        return f"holds {images.dtype}{list(images.shape)}, expected uint8{list(shape)}"
    return None


def _read_cache(path: Path, meta: str, image_size: int) -> Omniglot | None:
    """Load a cache file, or None if it is absent, unreadable or stale (said in a warning: it is rebuilt)."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:  # npz[name] reads the array from the file: once each
            if str(npz["meta"]) != meta:
                problem = "built for other settings or from other zips"
            else:
                images, class_names = npz["images"], npz["class_names"]
                problem = _shape_problem(images, class_names, image_size)
                if problem is None:
                    return Omniglot(images=images, class_names=tuple(str(n) for n in class_names))
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, EOFError) as err:
        problem = f"unreadable: {' '.join(str(err).split())}"
    log.warning("the Omniglot cache %s is stale (%s); rebuilding it from the zips", path, problem)
    return None


def _write_cache(path: Path, data: Omniglot, meta: str) -> None:
    """Write atomically (results.atomic_writer), so no half cache survives."""
    hint = "set ESMETA_CACHE_DIR or data.cache_dir=<writable dir>"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise DataError(f"cannot write the Omniglot cache {path} ({err.strerror or err}); {hint}") from None
    with atomic_writer(path, hint) as f:
        np.savez(f, images=data.images, class_names=np.array(data.class_names), meta=np.array(meta))


def check_zips(root: str | Path | None, download: bool = True) -> dict[str, Path]:
    """Locate (or download) both zips and check their content; {zip name: path}. Writes nothing but a download."""
    zips = locate_zips(root, download=download)
    for zip_path in zips.values():
        check_zip(zip_path)
    return zips


def load_omniglot(
    root: str | Path | None,
    image_size: int,
    resize_filter: str = "antialias",
    cache_dir: str | Path | None = None,
    download: bool = True,
) -> Omniglot:
    """All 6492 rotated classes at image_size, from the cache if present, else preprocessed and cached.

    The zips are located and content-checked on every call (about 0.2 s), also on a cache hit, so a
    wrong data.root is reported rather than silently served from an earlier run's cache.
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}; set data.image_size=28 for example")
    if resize_filter not in RESIZE_FILTERS:
        raise ConfigError(f"unknown resize_filter {resize_filter!r}; choose one of: {', '.join(RESIZE_FILTERS)}")
    image_size = int(image_size)
    zips = check_zips(root, download)
    path = cache_file(cache_dir, image_size, resize_filter)
    remove_stale_temporaries(path.parent, prefix="omniglot_")  # a killed cache build's, on a hit too
    meta = _cache_meta(image_size, resize_filter, zip_fingerprint(zips))
    cached = _read_cache(path, meta, image_size)
    if cached is not None:
        return cached
    log.info("preprocessing the %d Omniglot PNGs at %d px once (about 10 s), into %s", NUM_CLASSES * IMAGES_PER_CLASS // 4,
             image_size, path)
    data = _preprocess(zips, image_size, resize_filter)
    _write_cache(path, data, meta)
    return data


# --------------------------------------------------------------------------- a user's own images


def _as_pil(image: Any, dark_ink: bool) -> Image.Image:
    """One drawing (PNG or other image bytes, a PIL image, or a 2-D array of pixels) as an ink image ("L", ink = 255)."""
    if isinstance(image, (bytes, bytearray)):
        try:
            with Image.open(io.BytesIO(image)) as img:
                img.load()
                image = img.copy()
        except (OSError, SyntaxError, ValueError) as err:
            raise DataError(f"image bytes cannot be decoded ({first_line(err)}); pass PNG or JPEG bytes") from None
    if not isinstance(image, Image.Image):
        pixels = np.asarray(image)
        if pixels.ndim != 2:
            raise DataError(f"an image array must be 2-D (height, width) of grey pixels, got shape {pixels.shape}; "
                            "pass a colour image as a PIL image or its PNG bytes")
        if pixels.dtype.kind == "f":
            if not (np.all(np.isfinite(pixels)) and pixels.min() >= 0.0 and pixels.max() <= 1.0):
                raise DataError("a float image array must hold values in [0, 1] (1 = white); scale it, or pass uint8")
            pixels = np.round(pixels * 255.0).astype(np.uint8)
        elif pixels.dtype.kind in "iu" and pixels.size and (pixels.min() < 0 or pixels.max() > 255):
            raise DataError(f"an integer image array must hold values in 0-255, got {pixels.min()}-{pixels.max()}")
        elif pixels.dtype.kind not in "biuf":
            raise DataError(f"an image array of dtype {pixels.dtype} is not an image; pass uint8, bool or float pixels")
        image = Image.fromarray(pixels if pixels.dtype == bool else pixels.astype(np.uint8))
    return _ink(image) if dark_ink else image.convert("L")


def prepare_images(images: Any, image_size: int, resize_filter: str = "antialias", dark_ink: bool = True) -> np.ndarray:
    """A user's own drawings as the model's input: uint8 (n, S, S), ink = 255, made exactly as the training images
    (grey, inverted, resized by `resize_filter`; `load_run(...).prepare` passes the run's size and filter).

    `images`: one image or a sequence; each PNG/JPEG bytes, a PIL image, or a 2-D array of pixels (uint8 0-255,
    bool, or float in [0, 1]); a 3-D array is n images. `dark_ink`: dark strokes on a light background, as in
    Omniglot's PNGs (False: the ink is already bright, e.g. MNIST-style arrays).
    """
    if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size < 1:
        raise ConfigError(f"image_size must be a positive integer, got {image_size!r}")
    if resize_filter not in RESIZE_FILTERS:
        raise ConfigError(f"unknown resize_filter {resize_filter!r}; choose one of: {', '.join(RESIZE_FILTERS)}")
    if isinstance(images, (bytes, bytearray, Image.Image)) or (isinstance(images, np.ndarray) and images.ndim == 2):
        images = [images]
    resample = _resample(resize_filter)
    out = [_resized(_as_pil(image, dark_ink), int(image_size), resample) for image in images]
    if not out:
        raise DataError("no images given; pass one image or a sequence of them")
    return np.stack(out)
