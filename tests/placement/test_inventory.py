"""Inventory: per-node keys with sizes and the reverse index, checked against a plain model."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from placement import Inventory, ItemKind


def test_record_forget_drop() -> None:
    inv = Inventory()
    inv.record("b", "s3://d", 100, "data")
    inv.record("b", "llama", 7, ItemKind.MODEL)
    inv.record("c", "s3://d", 100, "data")
    assert inv.local_bytes("b", ["s3://d", "llama", "s3://d", "other"]) == 107
    assert inv.holders("s3://d") == {"b": 100, "c": 100}
    assert inv.size_of("llama") == 7 and inv.size_of("nope") == 0
    inv.forget("b", "s3://d")
    inv.forget("b", "never-there")
    assert inv.holders("s3://d") == {"c": 100}
    inv.drop_node("c")
    assert inv.holders("s3://d") == {} and inv.local_bytes("c", ["s3://d"]) == 0
    assert [i.key for i in inv.items("b")] == ["llama"] and inv.nodes() == ["b"]


def test_bad_reports_are_refused() -> None:
    inv = Inventory()
    with pytest.raises(ValueError, match="is not a valid ItemKind"):
        inv.record("a", "k", 1, "weights")
    with pytest.raises(ValidationError):
        inv.record("a", "k", -1, "data")
    assert inv.items() == []


ops = st.lists(
    st.tuples(
        st.sampled_from(["record", "forget", "drop"]),
        st.sampled_from("abc"),
        st.sampled_from("xyz"),
        st.integers(0, 1000),
    ),
    max_size=40,
)


@settings(max_examples=100, deadline=None)
@given(ops)
def test_matches_a_plain_dict_model(sequence: list[tuple[str, str, str, int]]) -> None:
    inv = Inventory()
    model: dict[str, dict[str, int]] = {}
    for op, node, key, nbytes in sequence:
        if op == "record":
            inv.record(node, key, nbytes, "data")
            model.setdefault(node, {})[key] = nbytes
        elif op == "forget":
            inv.forget(node, key)
            model.get(node, {}).pop(key, None)
        else:
            inv.drop_node(node)
            model.pop(node, None)
    for node in "abc":
        assert inv.local_bytes(node, "xyz") == sum(model.get(node, {}).values())
    for key in "xyz":
        assert inv.holders(key) == {n: held[key] for n, held in model.items() if key in held}
