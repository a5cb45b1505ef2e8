"""Omniglot data: loading and caching, class splits, and on-device episode sampling."""

from esmeta.data.episodes import (
    Episode,
    episode_labels,
    sample_episode,
    sample_episode_indices,
    to_float,
)
from esmeta.data.omniglot import (
    EXPECTED_CHARACTERS,
    IMAGES_PER_CLASS,
    UPSTREAM_MD5,
    UPSTREAM_URL,
    ZIP_NAMES,
    Omniglot,
    cache_file,
    check_zip,
    default_cache_dir,
    default_data_root,
    load_omniglot,
    locate_zips,
    prepare_images,
)
from esmeta.data.splits import PAPER_SPLIT_SIZES, SPLITS, split_classes, split_sizes

__all__ = [
    "EXPECTED_CHARACTERS",
    "IMAGES_PER_CLASS",
    "PAPER_SPLIT_SIZES",
    "SPLITS",
    "UPSTREAM_MD5",
    "UPSTREAM_URL",
    "ZIP_NAMES",
    "Episode",
    "Omniglot",
    "cache_file",
    "check_zip",
    "default_cache_dir",
    "default_data_root",
    "episode_labels",
    "load_omniglot",
    "locate_zips",
    "prepare_images",
    "sample_episode",
    "sample_episode_indices",
    "split_classes",
    "split_sizes",
    "to_float",
]
