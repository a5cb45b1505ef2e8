"""esmeta: evolution strategies for meta-learning (Sheng & He 2021), in JAX."""

__version__ = "0.1.0"


def load_run(run_dir):
    """Config and `embed(images)` of a finished run (see `esmeta.trained_run.load_run`)."""
    from esmeta.trained_run import load_run as _load_run

    return _load_run(run_dir)


def prepare_images(images, image_size, resize_filter="antialias", dark_ink=True):
    """Your own drawings as a model's input, made as the training images are (see `esmeta.data.prepare_images`)."""
    from esmeta.data.omniglot import prepare_images as _prepare_images

    return _prepare_images(images, image_size, resize_filter, dark_ink)
