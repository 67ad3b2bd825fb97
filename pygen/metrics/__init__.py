"""Sample-quality metrics that need no downloaded weights: MMD test, coverage, neighbours, k-NN
precision/recall/density/coverage, and the independent-pixel likelihood baseline."""

from pygen.metrics.baselines import independent_pixel_bits
from pygen.metrics.coverage import ModeCoverage, mode_coverage
from pygen.metrics.manifold import ManifoldMetrics, precision_recall_density_coverage
from pygen.metrics.mmd import (
    KERNELS,
    RQ_ALPHAS,
    MMDTest,
    gaussian_kernel,
    kernel_matrix,
    median_bandwidth,
    mmd2,
    mmd_permutation_test,
    rational_quadratic_kernel,
)
from pygen.metrics.neighbours import (
    Neighbours,
    memorization_ratio,
    nearest_neighbours,
    neighbour_pairs,
)

__all__ = [
    "KERNELS",
    "RQ_ALPHAS",
    "MMDTest",
    "ManifoldMetrics",
    "ModeCoverage",
    "Neighbours",
    "gaussian_kernel",
    "independent_pixel_bits",
    "kernel_matrix",
    "median_bandwidth",
    "memorization_ratio",
    "mmd2",
    "mmd_permutation_test",
    "mode_coverage",
    "nearest_neighbours",
    "neighbour_pairs",
    "precision_recall_density_coverage",
    "rational_quadratic_kernel",
]
