"""``bench/rounds.py`` as ``bench/train_overhead.py`` uses it: every order of the modes in turn, ratios per round."""

from __future__ import annotations

from collections import Counter

import pytest
from tests.conftest import load_script

MODES = ["plain", "ray-1", "ray-2"]


def test_six_rounds_run_every_order_once_and_each_mode_after_each_other_one_twice():
    bench = load_script("bench/rounds.py")
    orders = [bench.round_order(MODES, n) for n in range(6)]
    assert orders[0] == MODES  # one round runs as asked
    assert sorted(map(tuple, orders)) == sorted(
        [(a, b, c) for a in MODES for b in MODES for c in MODES if len({a, b, c}) == 3]
    )
    follows = Counter((order[i], order[i + 1]) for order in orders for i in range(2))
    assert follows == {(a, b): 2 for a in MODES for b in MODES if a != b}
    assert bench.round_order(MODES, 6) == MODES  # and round 6 starts again
    assert bench.round_order(["ray-1"], 3) == ["ray-1"]


def test_a_ratio_is_the_median_of_the_ratios_within_each_round_whatever_the_order():
    bench = load_script("bench/train_overhead.py")

    def run(mode: str, rate: float):
        return bench.ModeResult(
            mode=mode, workers=1, threads=2, startup_s=10.0, steady_images_per_s=rate, peak_rss_mb=900.0
        )

    # the plain loop's speed drifts between rounds; ray-1 keeps 0.9x of it, whichever ran first
    rounds = [
        {"plain": run("plain", 50.0), "ray-1": run("ray-1", 45.0)},
        {"ray-1": run("ray-1", 36.0), "plain": run("plain", 40.0)},
        {"plain": run("plain", 60.0), "ray-1": run("ray-1", 60.0)},
    ]
    (line,) = load_script("bench/overhead_report.py").ratios([rounds[0]["plain"], rounds[0]["ray-1"]], rounds)
    assert line.startswith("ray-1 / plain: steady img/s 0.90x (median of 3 rounds: 0.90, 0.90, 1.00)")


def test_the_median_interval_is_the_sign_tests_as_scipys_binomial_gives_it():
    from scipy.stats import binom

    bench = load_script("bench/rounds.py")
    six = [0.87, 0.67, 1.00, 0.97, 0.94, 0.88]  # session 30's ray-1 / plain rounds
    assert bench.median_interval(six) == (0.67, 1.00, pytest.approx(1 - 2 * binom.cdf(0, 6, 0.5)))
    assert bench.median_interval(six[:5]) is None  # min..max of 5 covers 93.75% < 95%
    values = [float(v) for v in range(20, 0, -1)]
    low, high, coverage = bench.median_interval(values)
    k = int(low)  # the k-th smallest of 1..20 is k
    assert high == 21 - k
    assert coverage == pytest.approx(1 - 2 * binom.cdf(k - 1, 20, 0.5)) and coverage >= 0.95
    assert 1 - 2 * binom.cdf(k, 20, 0.5) < 0.95  # the next narrower one would cover too little
    assert bench.median_interval(values, level=0.5)[0] > low


def test_six_rounds_print_the_interval_of_their_median_ratio():
    bench = load_script("bench/train_overhead.py")

    def run(mode: str, rate: float):
        return bench.ModeResult(
            mode=mode, workers=1, threads=2, startup_s=10.0, steady_images_per_s=rate, peak_rss_mb=900.0
        )

    rates = [0.87, 0.67, 1.00, 0.97, 0.94, 0.88]
    rounds = [{"plain": run("plain", 50.0), "ray-1": run("ray-1", 50.0 * r)} for r in rates]
    (line,) = load_script("bench/overhead_report.py").ratios([rounds[0]["plain"], rounds[0]["ray-1"]], rounds)
    assert "steady img/s 0.91x (median of 6 rounds: 0.87, 0.67, 1.00, 0.97, 0.94, 0.88; 97% interval 0.67-1.00)" in line
