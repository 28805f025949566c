"""Uncertainty over replicates: Student's t quantiles, confidence intervals of a mean, Welch's
interval of a difference of means, and "matching" (Frankle et al. 2020).

Pure functions on plain floats, without SciPy: the t distribution's CDF is the regularised
incomplete beta function (continued fraction, Lentz's method; Press et al., Numerical Recipes
§6.4), and its quantile is found by bisection on the CDF.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from lth.errors import LTHError

__all__ = [
    "CONFIDENCE",
    "Interval",
    "matches",
    "mean_interval",
    "t_cdf",
    "t_quantile",
    "verdict",
    "welch_interval",
]

#: the confidence level of every interval lth reports
CONFIDENCE = 0.95


def _beta_fraction(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for aa in (
            m * (b - m) * x / ((qam + m2) * (a + m2)),
            -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2)),
        ):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-16:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    if x < (a + 1.0) / (a + b + 2.0):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` > 0 degrees of freedom (any real df)."""
    if not df > 0:
        raise LTHError(f"degrees of freedom must be > 0, got {df!r}")
    if math.isinf(df):
        return NormalDist().cdf(t)
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The ``p`` quantile of Student's t with ``df`` > 0 degrees of freedom (any real df).

    >>> round(t_quantile(0.975, 1), 6)  # tan(0.475 π)
    12.706205
    """
    if not 0.0 < p < 1.0:
        raise LTHError(f"a quantile needs a probability strictly between 0 and 1, got {p!r}")
    if not df > 0:
        raise LTHError(f"degrees of freedom must be > 0, got {df!r}")
    if math.isinf(df):
        return NormalDist().inv_cdf(p)
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, 2.0 * hi
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return 0.5 * (lo + hi)


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided ``CONFIDENCE`` interval (NaN when it cannot be had)."""

    estimate: float
    low: float
    high: float
    n: int = 0
    df: float = math.nan


def _mean_var(values: Sequence[float]) -> tuple[float, float]:
    n = len(values)
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1) if n > 1 else math.nan
    return mean, var


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of ``values`` with its t interval, mean ± t(df = n - 1) · s / √n (n >= 2)."""
    values = [v for v in values if math.isfinite(v)]
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean, var = _mean_var(values)
    if n < 2:
        return Interval(mean, math.nan, math.nan, n)
    half = t_quantile(0.5 + confidence / 2, n - 1) * math.sqrt(var / n)
    return Interval(mean, mean - half, mean + half, n, float(n - 1))


def welch_interval(
    a: Sequence[float], b: Sequence[float], confidence: float = CONFIDENCE
) -> Interval:
    """mean(a) - mean(b) with Welch's interval: ± t(ν) · se, se² = s_a²/n_a + s_b²/n_b and
    ν = se⁴ / ((s_a²/n_a)²/(n_a - 1) + (s_b²/n_b)²/(n_b - 1)) (Welch 1947). Needs two
    values on each side; when both spreads are 0 the interval is the difference itself."""
    a = [v for v in a if math.isfinite(v)]
    b = [v for v in b if math.isfinite(v)]
    if len(a) < 2 or len(b) < 2:
        diff = _mean_var(a)[0] - _mean_var(b)[0] if a and b else math.nan
        return Interval(diff, math.nan, math.nan, min(len(a), len(b)))
    (ma, va), (mb, vb) = _mean_var(a), _mean_var(b)
    diff = ma - mb
    wa, wb = va / len(a), vb / len(b)
    se2 = wa + wb
    if se2 == 0:
        return Interval(diff, diff, diff, min(len(a), len(b)), math.inf)
    df = se2**2 / (wa**2 / (len(a) - 1) + wb**2 / (len(b) - 1))
    half = t_quantile(0.5 + confidence / 2, df) * math.sqrt(se2)
    return Interval(diff, diff - half, diff + half, min(len(a), len(b)), df)


def verdict(difference: Interval) -> str:
    """ "better" when the interval of (ticket - control) lies above 0, "worse" below, "equal"
    when it holds 0, "" when there is no interval (fewer than two replicates)."""
    if math.isnan(difference.low):
        return ""
    if difference.low > 0:
        return "better"
    if difference.high < 0:
        return "worse"
    return "equal"


def matches(mean: float, dense_mean: float, dense_std: float) -> bool | None:
    """Whether a mean accuracy is "matching": no lower than one standard deviation below the
    dense network's mean (Frankle et al. 2020); None without that standard deviation (fewer
    than two replicates of the dense network)."""
    if not math.isfinite(dense_std):
        return None
    return math.isfinite(mean) and mean >= dense_mean - dense_std
