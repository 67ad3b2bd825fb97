"""Sample-quality metrics that need no downloaded weights: MMD test, coverage, neighbours, and
the independent-pixel likelihood baseline."""

from pygen.metrics.baselines import independent_pixel_bits
from pygen.metrics.coverage import ModeCoverage, mode_coverage
from pygen.metrics.mmd import MMDTest, gaussian_kernel, median_bandwidth, mmd2, mmd_permutation_test
from pygen.metrics.neighbours import (
    Neighbours,
    memorization_ratio,
    nearest_neighbours,
    neighbour_pairs,
)

__all__ = [
    "MMDTest",
    "ModeCoverage",
    "Neighbours",
    "gaussian_kernel",
    "independent_pixel_bits",
    "median_bandwidth",
    "memorization_ratio",
    "mmd2",
    "mmd_permutation_test",
    "mode_coverage",
    "nearest_neighbours",
    "neighbour_pairs",
]
