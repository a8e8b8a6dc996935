"""The two-sample Kolmogorov-Smirnov test's p-value, chosen as ``scipy.stats.ks_2samp`` does by default
(``method="auto"``, two-sided), so the report's figure can be checked against it.

* Both samples of at most :data:`MAX_EXACT_N` values: the exact probability, by counting lattice paths
  (Hodges 1958): for equal sizes the closed alternating sum, else the "inside" recursion written to give
  ``1 - p`` directly (Viehmann 2021), which stays accurate for tiny p-values. A result that is not a
  probability (overflow) falls back to the asymptotic method, and so does a path count that would take
  more than :data:`MAX_EXACT_STEPS` steps (the only departure from scipy: p is then far below 1e-10).
* Otherwise the one-sample distribution ``kstwo`` at ``n = round(n1 * n2 / (n1 + n2))``, evaluated with
  Simard & L'Ecuyer's (2011) choice of method: Ruben-Gambino's closed forms at the ends, twice the
  one-sided Smirnov probability (Birnbaum-Tingey sum) in the upper tail, Durbin's matrix (in Marsaglia,
  Tsang & Wang's form) where it is cheap, Pelz-Good's expansion for large ``n``. (Where scipy uses
  Pomeranz's recursion, ``n <= 140``, Durbin's matrix is used: both are exact.)

The statistic itself comes from the caller (:mod:`.drift` derives it from counts, exactly).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["MAX_EXACT_N", "MAX_EXACT_STEPS", "ks_2samp_pvalue", "kstwo_sf", "smirnov_sf"]

MAX_EXACT_N = 10_000  # scipy's MAX_AUTO_N: larger samples get the asymptotic p-value
# The path count for unequal sizes costs ~2 d m n steps of Python (~0.3 us each); beyond this many the
# asymptotic value is used, where scipy would go on counting for seconds to minutes. For sizes up to
# MAX_EXACT_N that happens only where p < 1e-10.
MAX_EXACT_STEPS = 10_000_000
_SCALE = 2.0**128


def ks_2samp_pvalue(d: float, n1: int, n2: int) -> float:
    """Two-sided p-value of the two-sample statistic ``d`` for samples of ``n1`` and ``n2`` values."""
    if n1 < 1 or n2 < 1:
        raise ValueError("both samples need at least one value")
    if max(n1, n2) <= MAX_EXACT_N:
        p = _exact_2samp(d, n1, n2)
        if p is not None:
            return p
    big, small = max(n1, n2), min(n1, n2)
    en = float(big) * float(small) / (big + small)
    return min(1.0, max(0.0, kstwo_sf(d, round(en))))


def _exact_2samp(d: float, n1: int, n2: int) -> float | None:
    g = math.gcd(n1, n2)
    lcm = (n1 // g) * n2
    h = round(d * lcm)  # d is a multiple of 1/lcm: recover the integer
    if h == 0:
        return 1.0
    if n1 != n2:
        m = max(n1, n2)
        if m * (2 * h // (m // g) + 2) > MAX_EXACT_STEPS:
            return None  # a large statistic on large samples: p is tiny, the asymptotic value is used
    try:
        p = _outside_square(n1, h) if n1 == n2 else _outside_band(n1, n2, g, h)
    except (OverflowError, ZeroDivisionError):
        return None
    return p if 0.0 <= p <= 1.0 else None


def _outside_square(n: int, h: int) -> float:
    """P(D_{n,n} >= h/n) = 2 * sum_k (-1)^(k-1) C(2n, n-kh) / C(2n, n), folded from the innermost term
    (each ratio is the previous one times a product of h factors) to avoid cancellation."""
    factors = []
    for k in range(1, n // h + 1):
        a = 1.0
        for j in range((k - 1) * h, k * h):
            a *= (n - j) / (n + j + 1)
        factors.append(a)
    p = 0.0
    for a in reversed(factors):
        p = a * (1.0 - p)
    return 2.0 * p


def _outside_band(n1: int, n2: int, g: int, h: int) -> float:
    """Share of monotone lattice paths from (0, 0) to (m, n) that leave the band
    ``|x n/g - y m/g| < h``: q(x, y) = (x q(x-1, y) + y q(x, y-1)) / (x + y) inside, 1 outside."""
    m, n = max(n1, n2), min(n1, n2)
    mg, ng = m // g, n // g

    def window(x: int) -> tuple[int, int]:  # the y inside the band in column x: [lo, hi)
        lo = max((ng * x - h) // mg + 1, 0)
        hi = min(-((-(ng * x + h)) // mg), n + 1)
        return min(lo, n), hi

    lo, hi = 0, min(-((-h) // mg), n + 1)
    prev = [0.0] * (hi - lo)  # column 0: every point inside is reached without leaving
    for x in range(1, m + 1):
        new_lo, new_hi = window(x)
        if new_hi <= new_lo:
            return 1.0
        col = [0.0] * (new_hi - new_lo)
        below = 0.0 if new_lo == 0 else 1.0  # q(x, new_lo - 1): outside the band
        for k in range(new_hi - new_lo):
            y = new_lo + k
            left = prev[y - lo] if lo <= y < hi else 1.0
            below = (x * left + y * below) / (x + y)
            col[k] = below
        prev, lo, hi = col, new_lo, new_hi
    return prev[n - lo] if lo <= n < hi else 1.0


def smirnov_sf(n: int, d: float) -> float:
    """One-sided P(D_n^+ >= d), Birnbaum & Tingey's sum, evaluated in logs."""
    if d <= 0.0:
        return 1.0
    if d >= 1.0:
        return 0.0
    last = math.floor(n * (1.0 - d) + 1e-12)
    v = np.arange(last + 1, dtype=np.float64)
    lgam = np.array([math.lgamma(k + 1.0) for k in range(n + 1)])
    vi = v.astype(np.int64)
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = (
            lgam[n]
            - lgam[vi]
            - lgam[n - vi]
            + math.log(d)
            + (v - 1.0) * np.log(d + v / n)
            + (n - v) * np.log(np.maximum(1.0 - d - v / n, 0.0))
        )
    logs = logs[np.isfinite(logs)]
    if logs.size == 0:
        return 0.0
    top = float(logs.max())
    return min(1.0, math.exp(top) * float(np.exp(logs - top).sum()))


def _durbin_cdf(n: int, d: float) -> float:
    """P(D_n < d) by Durbin's matrix: n!/n^n times the (k, k) entry of H^n."""
    nd = n * d
    k = math.ceil(nd)
    h = k - nd
    m = 2 * k - 1
    fact = np.array([math.factorial(i) for i in range(m + 1)], dtype=np.float64)
    H = np.zeros((m, m))
    for i in range(m):
        for j in range(m):
            if i - j + 1 >= 0:
                H[i, j] = 1.0 / fact[i - j + 1]
    for i in range(m):
        H[i, 0] -= h ** (i + 1) / fact[i + 1]
        H[m - 1, i] -= h ** (m - i) / fact[m - i]
    H[m - 1, 0] += max(2.0 * h - 1.0, 0.0) ** m / fact[m]
    result = np.eye(m)
    r_exp = 0  # result * 2^r_exp is the true power
    base, b_exp = H, 0
    power = n
    while power:
        if power & 1:
            result = result @ base
            r_exp += b_exp
            peak = float(np.abs(result).max())
            if peak > _SCALE:
                result /= _SCALE
                r_exp += 128
        power >>= 1
        if power:
            base = base @ base
            b_exp *= 2
            peak = float(np.abs(base).max())
            if peak > _SCALE:
                base /= _SCALE
                b_exp += 128
    entry = float(result[k - 1, k - 1])
    if entry <= 0.0:
        return 0.0
    log_p = math.log(entry) + r_exp * math.log(2.0) + math.lgamma(n + 1.0) - n * math.log(n)
    return min(1.0, math.exp(log_p))


def _pelz_good_cdf(n: int, d: float) -> float:
    """Pelz & Good's (1976) expansion of P(D_n <= d) in powers of 1/sqrt(n), z = d sqrt(n)."""
    z = d * math.sqrt(n)
    z2 = z * z
    if -(math.pi**2) / (8 * z2) < -708:
        return 0.0
    pi2, pi4, pi6 = math.pi**2, math.pi**4, math.pi**6
    terms = math.ceil(16 * z / math.pi) + 1
    k0 = k1 = k2 = k3 = 0.0
    for k in range(1, terms + 1):
        m2 = (2 * k - 1) ** 2
        w = math.exp(-pi2 * m2 / (8 * z2))
        k0 += w
        k1 += w * (pi2 * m2 / 4 - z2)
        k2 += w * (
            (6 * z2**3 + 2 * z2**2) + (2 * z2**2 - 5 * z2) * pi2 * m2 / 4 + pi4 * (1 - 2 * z2) * m2**2 / 16
        )
        k3 += w * (
            (-30 * z2**3 - 90 * z2**4)
            + pi2 * (135 * z2**2 - 96 * z2**3) * m2 / 4
            + pi4 * (212 * z2**2 - 60 * z2) * m2**2 / 16
            + pi6 * (5 - 30 * z2) * m2**3 / 64
        )
    root = math.sqrt(2 * math.pi)
    k0 *= root / z
    k1 *= root / (6 * z2**2)
    k2 *= root / (72 * z**7)
    k3 *= root / (6480 * z2**5)
    extra2 = extra3 = 0.0
    for k in range(1, terms + 1):
        w = math.exp(-pi2 * k * k / (2 * z2))
        extra2 += k * k * w
        extra3 += (3 * z2 - pi2 * k * k) * k * k * w
    k2 -= pi2 * root / (36 * z**3) * extra2
    k3 += pi2 * root / (216 * z2**3) * extra3
    return float(k0 + k1 / math.sqrt(n) + k2 / n + k3 / (n * math.sqrt(n)))


def kstwo_sf(d: float, n: int) -> float:
    """P(D_n >= d) of the two-sided one-sample statistic (scipy's ``kstwo.sf(d, n)``)."""
    if d >= 1.0:
        return 0.0
    if d <= 0.0:
        return 1.0
    t = n * d
    if t <= 1.0:
        if t <= 0.5:
            return 1.0
        cdf = math.exp(math.lgamma(n + 1.0) - n * math.log(n) + n * math.log(2 * t - 1))
        return 1.0 - cdf
    if t >= n - 1:
        return 2.0 * (1.0 - d) ** n
    if d >= 0.5:
        return 2.0 * smirnov_sf(n, d)
    ndd = t * d
    if n <= 140:
        if ndd <= 4.0:
            return 1.0 - _durbin_cdf(n, d)
        return 2.0 * smirnov_sf(n, d)
    if ndd >= 370.0:
        return 0.0
    if ndd >= 2.2:
        return 2.0 * smirnov_sf(n, d)
    if n <= 100_000 and n * d**1.5 <= 1.4:
        return 1.0 - _durbin_cdf(n, d)
    return 1.0 - _pelz_good_cdf(n, d)
