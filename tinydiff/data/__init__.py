"""Data for the course: 2-D toy distributions (with an exact Gaussian-mixture oracle) and MNIST digits shipped in ``data/``."""

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
]
