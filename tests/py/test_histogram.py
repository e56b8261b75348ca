"""apiprof._core.Histogram: percentiles within 1% of an exact sort, exact merge."""

import math
import random

import pytest
from apiprof._core import Histogram


def exact_percentile(sorted_values, p):
    if p <= 0:
        return sorted_values[0]
    rank = math.ceil(p / 100 * len(sorted_values))
    return sorted_values[max(rank, 1) - 1]


DISTRIBUTIONS = {
    "uniform": lambda r: r.randrange(0, 10_000_000),
    "lognormal": lambda r: int(r.lognormvariate(12, 2)),
    "small": lambda r: r.randrange(0, 300),
    "huge": lambda r: r.randrange(2**38, 2**45),
}


@pytest.mark.parametrize("dist", DISTRIBUTIONS)
def test_percentiles_against_exact_sort(dist):
    rng = random.Random(dist)
    values = [DISTRIBUTIONS[dist](rng) for _ in range(100_000)]
    h = Histogram()
    for v in values:
        h.record(v)
    values.sort()
    assert h.count == len(values)
    assert h.min == values[0] and h.max == values[-1] and h.sum == sum(values) % 2**64
    for p in (0, 1, 10, 25, 50, 75, 90, 95, 99, 99.9, 100):
        want = exact_percentile(values, p)
        got = h.percentile(p)
        assert abs(got - want) <= 0.01 * want + 1, (p, got, want)


def test_merge_equals_recording_everything():
    rng = random.Random(7)
    values = [int(rng.expovariate(1 / 50_000)) for _ in range(20_000)]
    whole, a, b = Histogram(), Histogram(), Histogram()
    for i, v in enumerate(values):
        whole.record(v)
        (a if i % 2 else b).record(v)
    a.merge(b)
    assert a.encode() == whole.encode()
    assert a.count == whole.count == 20_000


def test_encode_decode_and_corruption():
    h = Histogram()
    h.record(5, 3)
    h.record(123_456_789)
    back = Histogram.decode(h.encode())
    assert (back.count, back.min, back.max, back.sum) == (4, 5, 123_456_789, 123_456_804)
    data = h.encode()
    for cut in range(len(data)):
        with pytest.raises(ValueError, match="corrupt histogram"):
            Histogram.decode(data[:cut])


def test_empty_and_bad_arguments():
    h = Histogram()
    assert (h.count, h.min, h.max, h.percentile(50), h.mean) == (0, 0, 0, 0, 0.0)
    with pytest.raises(ValueError):
        h.record(-1)
    with pytest.raises(ValueError):
        h.percentile(101)
    with pytest.raises(TypeError):
        h.merge(object())
