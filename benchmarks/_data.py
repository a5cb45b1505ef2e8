"""What the measurement benchmarks share: where the Omniglot zips are, the paper split's train images, and
bad input (no data, a bad setting) reported in one line instead of a traceback."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from esmeta.errors import EsmetaError


def add_data_args(parser: argparse.ArgumentParser) -> None:
    """--data-root (default $ESMETA_DATA_DIR) and --cache-dir (default $ESMETA_CACHE_DIR, else the user cache)."""
    parser.add_argument("--data-root", default=os.environ.get("ESMETA_DATA_DIR"), help="folder with the Omniglot zips")
    parser.add_argument("--cache-dir", default=None, help="preprocessed cache (default: $ESMETA_CACHE_DIR)")


def train_images(args: argparse.Namespace, size: int = 32) -> np.ndarray:
    """uint8 (classes, 20, size, size): the train classes of the paper split (split seed 0), as training sees them."""
    from esmeta.data.omniglot import load_omniglot
    from esmeta.data.splits import split_classes

    data = load_omniglot(args.data_root, size, "antialias", args.cache_dir, download=False)
    return data.images[split_classes(data.class_names, "paper", 0)["train"]]


def run_main(main: Callable[[], None]) -> None:
    """Call a benchmark's `main`; an esmeta error (missing data, bad setting) ends it with one line, exit 2."""
    try:
        main()
    except EsmetaError as e:
        print(f"{Path(sys.argv[0]).stem}: error: {e}", file=sys.stderr)
        sys.exit(2)
