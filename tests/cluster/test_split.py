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


def test_pinned_stages_parse_check_and_find_their_nodes():
    from netboot.cluster.nodes import ClusterError, Node
    from netboot.cluster.pins import StagePin, check_pins, parse_stages, pin_nodes

    assert parse_stages(" 3 ") == 3
    pins = parse_stages("0-8@abcd,9-16, 17@127.0.0.3")
    assert pins == [StagePin(range(0, 9), "abcd"), StagePin(range(9, 17)), StagePin(range(17, 18), "127.0.0.3")]
    check_pins(pins, 18)
    a, b, c = (Node("abcd" + "0" * 52, "127.0.0.2", 8, 1.0), Node("ef01" + "0" * 52, "127.0.0.3", 6, 1.0),
               Node("9999" + "0" * 52, "127.0.0.2", 4, 1.0, budget=2))
    assert pin_nodes(pins, [a, b, c]) == [a, c, b]  # the named ones; the unnamed one takes the largest left
    for text, error in [("0", "at least 1"), ("3-1", "ends before it starts"), ("0-8@", "expected N or ranges"),
                        ("x", "expected N or ranges"), ("0-8;9-17", "expected N or ranges")]:
        with pytest.raises(ClusterError, match=error):
            parse_stages(text)
    for text, error in [("0-8,10-17", "layer 9 is in none"), ("0-9,9-17", "layer 10 is in two"),
                        ("0-8,9-16", "the ranges end at 16"), ("1-17", "layer 0 is in none")]:
        with pytest.raises(ClusterError, match=error):
            check_pins(parse_stages(text), 18)
    with pytest.raises(ClusterError, match="no live node '127.0.0.9'"):
        pin_nodes(parse_stages("0-8@127.0.0.9,9-17"), [a, b])
    with pytest.raises(ClusterError, match="no live node is left"):
        pin_nodes(parse_stages("0-5,6-11,12-17"), [a, b])


def test_the_drivers_node_has_the_table_less_room_for_layers():
    """The driver keeps the embedding and output table: on its node (a head with CPUs, say) that much less is
    left for a stage; a node's own budget counts before Ray's memory; every node keeps room for a layer."""
    from netboot.cluster.nodes import Node, room_for_layers

    a = Node("a" * 56, "10.0.0.1", memory=1000, cpus=2.0)
    b = Node("b" * 56, "10.0.0.2", memory=1000, cpus=2.0, budget=600)
    c = Node("c" * 56, "10.0.0.3", memory=100, cpus=2.0)
    assert room_for_layers([a, b, c], a.id, 300) == [700, 600, 100]
    assert room_for_layers([a, b, c], b.id, 300) == [1000, 300, 100]
    assert room_for_layers([a, b, c], c.id, 300) == [1000, 600, 1]
    assert room_for_layers([a, b, c], "the head, which holds no stage", 300) == [1000, 600, 100]
