"""Data for the course: 2-D toy distributions (with an exact Gaussian-mixture oracle), MNIST digits and colour emoji
shipped in ``data/``, any folder of pictures (:mod:`tinydiff.data.folder`), and handwriting styles with the
measures that detect them (:mod:`tinydiff.data.styles`)."""

from .toy import (
    TOY_DATASETS,
    GaussianMixture,
    anisotropic_mixture,
    checkerboard,
    eight_gaussians,
    sample_toy,
    spiral,
    swiss_roll,
    two_gaussians,
    two_moons,
)
from . import styles
from .mnist import data_dir, download_mnist, load_mnist
from .folder import ImageSet, check_batch_size, check_size, flipped_batches, load_folder, random_hflip
from .emoji import load_emoji

__all__ = [
    "TOY_DATASETS",
    "GaussianMixture",
    "anisotropic_mixture",
    "checkerboard",
    "eight_gaussians",
    "sample_toy",
    "spiral",
    "swiss_roll",
    "two_gaussians",
    "two_moons",
    "data_dir",
    "download_mnist",
    "load_mnist",
    "ImageSet",
    "check_batch_size",
    "check_size",
    "flipped_batches",
    "load_folder",
    "random_hflip",
    "load_emoji",
]
