"""The split of layers into stages: contiguous, non-empty, covering every layer, in proportion to capacity."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from netboot.cluster.split import split_layers


@given(st.lists(st.integers(1, 10**8), min_size=1, max_size=64), st.data())
def test_ranges_are_contiguous_non_empty_and_cover_every_layer(sizes, data):
    capacities = data.draw(st.lists(st.integers(1, 10**11), min_size=1, max_size=len(sizes)))
    ranges = split_layers(sizes, capacities)
    assert len(ranges) == len(capacities)
    assert ranges[0].start == 0 and ranges[-1].stop == len(sizes)
    assert all(len(r) >= 1 for r in ranges)
    assert all(a.stop == b.start for a, b in zip(ranges, ranges[1:], strict=False))


@given(st.integers(1, 10**7), st.integers(2, 64), st.lists(st.integers(1, 1000), min_size=1, max_size=8))
def test_equal_layers_go_in_proportion_to_capacity(size, layers, capacities):
    """With equal layers, each cut is within half a layer of the capacity-weighted share (the nearest
    boundary), unless a stage had to be given its one layer."""
    if len(capacities) > layers:
        capacities = capacities[:layers]
    ranges = split_layers([size] * layers, capacities)
    whole, share = sum(capacities), 0
    for k, r in enumerate(ranges[:-1]):
        share += capacities[k]
        target = layers * share / whole
        forced = r.stop == ranges[k].start + 1 or r.stop == layers - (len(ranges) - 1 - k)
        assert forced or abs(r.stop - target) <= 0.5


def test_the_default_model_over_two_equal_and_three_unequal_nodes():
    assert split_layers([10] * 18, [1, 1]) == [range(0, 9), range(9, 18)]
    assert split_layers([10] * 18, [2, 1, 1]) == [range(0, 9), range(9, 13), range(13, 18)]  # 13.5: the lower cut


@pytest.mark.parametrize("sizes, capacities", [([1, 2], [1, 1, 1]), ([1], []), ([1, 2], [1, 0])])
def test_impossible_splits_are_refused(sizes, capacities):
    with pytest.raises(ValueError):
        split_layers(sizes, capacities)
