"""Fits the CPU kernels' float tanh (csrc/common/math.h, ``fast_tanh``): tanh(x) ~ x P(x^2) / Q(x^2)
on |x| <= 9 (past 9, tanh rounds to +-1 in float32), P of degree 4 and Q of degree 4 with Q(0) = 1,
minimizing the largest relative error by reweighted linear least squares (the Sanathanan-Koerner
iteration with Lawson-style weights). Prints the coefficients and the largest error in float32
Horner arithmetic over a dense grid. Usage: ``python scripts/fit_tanh.py``.
"""

from __future__ import annotations

import numpy as np

CLAMP = 9.0


def fit(p_terms: int = 5, q_terms: int = 5, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    x = CLAMP * (0.5 + 0.5 * np.cos(np.linspace(0.0, np.pi, 6000))) + 1e-6
    z, f = x * x, np.tanh(x) / x  # relative error of x P/Q is that of P/Q against tanh(x)/x
    weights, q_values = np.ones_like(x), np.ones_like(x)
    for _ in range(iterations):
        powers = np.vander(z, max(p_terms, q_terms), increasing=True)
        a = np.hstack([powers[:, :p_terms], -f[:, None] * powers[:, 1:q_terms]])
        scale = weights / q_values / f
        solution = np.linalg.lstsq(a * scale[:, None], f * scale, rcond=None)[0]
        p, q = solution[:p_terms], np.concatenate([[1.0], solution[p_terms:]])
        q_values = np.polyval(q[::-1], z)
        error = np.abs(np.polyval(p[::-1], z) / q_values / f - 1.0)
        weights *= 1.0 + 0.5 * error / error.max()
    return p, q


def float32_tanh(x: np.ndarray, p: np.ndarray, q: np.ndarray) -> np.ndarray:
    """The kernel's arithmetic: clamp, Horner in float32, one division, result clamped to +-1."""
    f32 = np.float32
    xc = np.clip(x, f32(-CLAMP), f32(CLAMP))
    z = xc * xc
    num, den = f32(p[-1]), f32(q[-1])
    for c in p[-2::-1]:
        num = num * z + f32(c)
    for c in q[-2::-1]:
        den = den * z + f32(c)
    return np.clip(xc * num / den, f32(-1), f32(1))


def main() -> None:
    p, q = fit()
    print("P:", ", ".join(f"{c:.17g}" for c in p))
    print("Q:", ", ".join(f"{c:.17g}" for c in q))
    x = np.linspace(1e-6, 12.0, 4_000_001, dtype=np.float32)
    exact = np.tanh(x.astype(np.float64))
    ulps = np.abs(float32_tanh(x, p, q) - exact) / np.spacing(exact.astype(np.float32))
    print(f"largest error in float32: {ulps.max():.2f} ulp at x = {x[ulps.argmax()]:.6g}")


if __name__ == "__main__":
    main()
