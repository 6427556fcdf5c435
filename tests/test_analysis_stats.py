"""Tests of edgesweep.analysis.stats against hand-computed values and independent references.

References are computed from definitions (binomial tails by bisection, hypergeometric sums with
exact fractions), never by calling the function under test.
"""

import math
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from edgesweep.analysis.stats import (
    clopper_pearson,
    detrend_linear,
    fisher_exact_2x2,
    lagged_correlation,
    lead_time_summary,
    linear_fit,
    mode_int,
    moving_average,
    nearest_values,
    pearson_r,
    proportion,
)

# ---------------------------------------------------------------- independent references


def _binom_tail_ge(k: int, n: int, p: float) -> float:
    """P(X >= k), X ~ Binomial(n, p), summed from the definition."""
    return sum(math.comb(n, i) * p**i * (1 - p) ** (n - i) for i in range(k, n + 1))


def _bisect(f, target: float, increasing: bool) -> float:
    lo, hi = 0.0, 1.0
    for _ in range(200):
        mid = (lo + hi) / 2
        v = f(mid)
        if (v < target) == increasing:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def _cp_reference(k: int, n: int, conf: float) -> tuple[float, float]:
    """Clopper–Pearson by definition: lo solves P(X >= k; lo) = a/2, hi solves P(X <= k; hi) = a/2."""
    a = (1 - conf) / 2
    lo = 0.0 if k == 0 else _bisect(lambda p: _binom_tail_ge(k, n, p), a, increasing=True)
    hi = 1.0 if k == n else _bisect(lambda p: 1 - _binom_tail_ge(k + 1, n, p), a, increasing=False)
    return lo, hi


def _fisher_reference(a: int, b: int, c: int, d: int) -> float:
    """Two-sided Fisher p: sum of hypergeometric probabilities not above the observed one."""
    r1, c1, n = a + b, a + c, a + b + c + d
    denom = math.comb(n, c1)

    def prob(x):
        return Fraction(math.comb(r1, x) * math.comb(n - r1, c1 - x), denom)

    p_obs = prob(a)
    xs = range(max(0, c1 - (n - r1)), min(r1, c1) + 1)
    # the same relative tolerance scipy uses to treat floating near-ties as ties
    return float(sum(prob(x) for x in xs if prob(x) <= p_obs * Fraction(1 + 10**-7)))


# ---------------------------------------------------------------- Clopper–Pearson


def test_clopper_pearson_24_of_24_hand_value():
    lo, hi = clopper_pearson(24, 24)
    # k = n: P(X >= 24; p) = p^24 = 0.025  →  p = 0.025^(1/24)
    assert lo == pytest.approx(0.025 ** (1 / 24), abs=1e-12)
    assert round(lo, 4) == 0.8575
    assert hi == 1.0


def test_clopper_pearson_0_of_24_hand_value():
    lo, hi = clopper_pearson(0, 24)
    assert lo == 0.0
    assert hi == pytest.approx(1 - 0.025 ** (1 / 24), abs=1e-12)
    assert round(hi, 4) == 0.1425


def test_clopper_pearson_n_zero_is_uninformative():
    assert clopper_pearson(0, 0) == (0.0, 1.0)


@pytest.mark.parametrize("k,n", [(-1, 3), (4, 3), (1.5, 3), (True, 3)])
def test_clopper_pearson_rejects_bad_counts(k, n):
    with pytest.raises((ValueError, TypeError)):
        clopper_pearson(k, n)


@pytest.mark.parametrize("conf", [0.0, 1.0, 1.5])
def test_clopper_pearson_rejects_bad_conf(conf):
    with pytest.raises(ValueError):
        clopper_pearson(1, 3, conf)


@settings(max_examples=80, deadline=None)
@given(n=st.integers(1, 60), data=st.data(), conf=st.sampled_from([0.8, 0.9, 0.95, 0.99]))
def test_clopper_pearson_matches_bisection_on_binomial_tails(n, data, conf):
    k = data.draw(st.integers(0, n))
    lo, hi = clopper_pearson(k, n, conf)
    rlo, rhi = _cp_reference(k, n, conf)
    assert lo == pytest.approx(rlo, abs=1e-9)
    assert hi == pytest.approx(rhi, abs=1e-9)
    assert 0.0 <= lo <= k / n <= hi <= 1.0


def test_proportion_bundles_rate_and_interval():
    p = proportion(3, 4)
    assert (p.k, p.n, p.rate) == (3, 4, 0.75)
    rlo, rhi = _cp_reference(3, 4, 0.95)
    assert p.lo == pytest.approx(rlo, abs=1e-9) and p.hi == pytest.approx(rhi, abs=1e-9)
    assert math.isnan(proportion(0, 0).rate)


# ---------------------------------------------------------------- Fisher


def test_fisher_24_0_vs_0_24():
    odds, p = fisher_exact_2x2(24, 0, 0, 24)
    assert odds == math.inf
    # only the two extreme tables (a = 24 and a = 0) are as unlikely as the observed one,
    # each with probability 1 / C(48, 24)
    assert p == pytest.approx(2 / math.comb(48, 24), rel=1e-9)


def test_fisher_24_0_vs_1_23_by_enumeration():
    odds, p = fisher_exact_2x2(24, 0, 1, 23)
    assert odds == math.inf
    assert p == pytest.approx(_fisher_reference(24, 0, 1, 23), rel=1e-9)
    assert p < 1e-11


def test_fisher_small_table_hand_value():
    # [[3, 0], [0, 3]]: margins 3/3, P(a=3) = P(a=0) = 1/C(6,3) = 1/20 → p = 0.1
    odds, p = fisher_exact_2x2(3, 0, 0, 3)
    assert odds == math.inf
    assert p == pytest.approx(0.1, rel=1e-12)
    # odds ratio a·d/(b·c) on a table without zeros
    odds, _ = fisher_exact_2x2(2, 3, 4, 5)
    assert odds == pytest.approx(10 / 12)


@settings(max_examples=60, deadline=None)
@given(st.tuples(*[st.integers(0, 15)] * 4).filter(lambda t: (t[0] + t[1]) * (t[2] + t[3]) * (t[0] + t[2]) * (t[1] + t[3]) > 0))
def test_fisher_matches_exact_enumeration(t):
    _, p = fisher_exact_2x2(*t)
    assert p == pytest.approx(_fisher_reference(*t), rel=1e-7, abs=1e-15)


def test_fisher_rejects_negative_cells():
    with pytest.raises(ValueError):
        fisher_exact_2x2(1, -1, 2, 3)


# ---------------------------------------------------------------- descriptive


def test_lead_time_summary_hand_values():
    s = lead_time_summary([400, 100, None, 300, 200, float("nan")])
    assert s.n == 4
    assert s.median == 250.0
    # linear interpolation: q25 at position 0.75 between 100 and 200, q75 at 2.25
    assert s.q25 == 175.0 and s.q75 == 325.0
    assert (s.min, s.max, s.mean) == (100.0, 400.0, 250.0)


def test_lead_time_summary_empty():
    s = lead_time_summary([])
    assert s.n == 0 and math.isnan(s.median) and math.isnan(s.max)


def test_mode_int_ties_take_smallest():
    assert mode_int([2, 1, 2, 1, 3]) == 1
    assert mode_int([3, 3, 1]) == 3
    assert mode_int([]) is None
    assert mode_int([np.nan, 2.0]) == 2


def test_pearson_hand_value_and_degenerate_cases():
    # dx = (-1, 0, 1), dy = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 · 42/9) = sqrt(27/28)
    assert pearson_r([1, 2, 3], [1, 2, 4]) == pytest.approx(math.sqrt(27 / 28), rel=1e-12)
    assert pearson_r([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert math.isnan(pearson_r([1, 2], [1, 2]))  # two points: undefined, not ±1
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3]))
    # non-finite pairs are dropped, not propagated
    assert pearson_r([1, 2, np.nan, 3], [1, 2, 5, 4]) == pytest.approx(math.sqrt(27 / 28))


def test_linear_fit_hand_values():
    f = linear_fit([0, 1, 2], [0, 2, 1])
    assert f.slope == pytest.approx(0.5) and f.intercept == pytest.approx(0.5)
    assert f.r2 == pytest.approx(0.25)  # SS_res 1.5, SS_tot 2
    f = linear_fit([0, 1, 2, 3], [1, 3, 5, 7])
    assert (f.slope, f.intercept, f.r2) == pytest.approx((2.0, 1.0, 1.0))


def test_moving_average_matches_convolution():
    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_allclose(moving_average(x, 2), [1.5, 2.5, 3.5, 4.5])
    rng = np.random.default_rng(0)
    y = rng.normal(size=40)
    np.testing.assert_allclose(moving_average(y, 5), np.convolve(y, np.ones(5) / 5, mode="valid"), atol=1e-12)
    assert moving_average(x, 6).size == 0


def test_detrend_removes_a_line_exactly():
    t = np.arange(10.0)
    np.testing.assert_allclose(detrend_linear(3.0 * t - 2.0), 0.0, atol=1e-12)
    wiggle = np.array([1.0, -1.0] * 5)
    # a pure alternating series has a small linear trend; detrending keeps the wiggle's sign
    d = detrend_linear(wiggle + 0.5 * t)
    assert np.all(np.sign(d) == np.sign(wiggle))


def test_lagged_correlation_convention_positive_lag_means_x_leads():
    rng = np.random.default_rng(1)
    x = rng.normal(size=50)
    y = np.empty_like(x)
    y[2:] = x[:-2]  # y[t] = x[t-2]: x leads y by 2
    y[:2] = rng.normal(size=2)
    r = lagged_correlation(x, y, 5)
    assert r[2] == pytest.approx(1.0)
    assert abs(r[-2]) < 0.5
    assert set(r) == set(range(-5, 6))


def test_nearest_values_exact_and_ties_take_earlier():
    out = nearest_values([200, 0, 100], [3.0, 1.0, 2.0], [0, 49, 50, 51, 150, 250, -10, 100])
    np.testing.assert_array_equal(out, [1.0, 1.0, 1.0, 2.0, 2.0, 3.0, 1.0, 2.0])
    assert np.isnan(nearest_values([], [], [1, 2])).all()
