"""Data for the course: 2-D toy distributions (with an exact Gaussian-mixture oracle), MNIST digits shipped in ``data/``,
and handwriting styles with the measures that detect them (:mod:`tinydiff.data.styles`)."""

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
]
