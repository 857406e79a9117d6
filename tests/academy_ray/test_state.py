"""Tests for academy_ray.state: Arrow IPC encoding of agent state."""

from __future__ import annotations

import base64
import datetime as dt
import pickle

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from pydantic import BaseModel

from academy_ray.state import (
    MAGIC,
    StateEncodingError,
    decode_state,
    encode_state,
    encode_state_segments,
    state_schema,
)


class Params(BaseModel):
    lr: float
    tags: list[str]
    when: dt.datetime


def test_round_trip_of_every_kind() -> None:
    table = pa.table({"x": [1, 2, 3], "s": ["a", None, "c"]}).replace_schema_metadata(
        {"origin": "test"}
    )
    fields = {
        "none": None,
        "flag": True,
        "count": 7,
        "ratio": 0.25,
        "text": "héllo",
        "nested": {"a": [1, 2, {"b": None}], "c": "d"},
        "tuple": (1, 2),
        "blob": b"\x00\xff" * 10,
        "params": Params(lr=0.1, tags=["x"], when=dt.datetime(2024, 1, 2, tzinfo=dt.UTC)),
        "matrix": np.arange(24, dtype=np.float32).reshape(2, 3, 4),
        "fortran": np.asfortranarray(np.arange(6, dtype=np.int64).reshape(2, 3)),
        "strided": np.arange(20, dtype=np.int16)[::3],
        "mask": np.array([[True, False], [False, True]]),
        "complex": np.array([1 + 2j, -3j], dtype=np.complex128),
        "half": np.array([1.5, -2.0], dtype=np.float16),
        "bigendian": np.arange(5, dtype=">u4"),
        "scalar": np.array(3.5),
        "empty": np.zeros((0, 4), dtype=np.uint8),
        "table": table,
    }
    out = decode_state(encode_state(fields))
    assert list(out) == list(fields)
    for name in ("none", "flag", "count", "ratio", "text", "nested", "blob"):
        assert out[name] == fields[name]
    assert out["tuple"] == [1, 2]
    assert Params.model_validate(out["params"]) == fields["params"]
    for name in (
        "matrix",
        "fortran",
        "strided",
        "mask",
        "complex",
        "half",
        "bigendian",
        "scalar",
        "empty",
    ):
        expected = fields[name]
        assert out[name].shape == expected.shape, name
        assert out[name].dtype == expected.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(out[name], expected)
    assert out["table"].equals(table)
    assert out["table"].schema.metadata == {b"origin": b"test"}


# A payload written before JSON fields moved into the header (JSON, model and bytes in Arrow block 0).
_PAYLOAD_WITH_JSON_IN_BLOCK_0 = (
    "QUNSU1RBVDERAQAAAAAAAHsiZm9ybWF0IjoiYWNhZGVteS1yYXktc3RhdGUiLCJ2ZXJzaW9uIjoxLCJjb21wcmVzc2lvbiI6"
    "bnVsbCwiZmllbGRzIjpbeyJuYW1lIjoiY291bnRzIiwia2luZCI6Impzb24iLCJibG9jayI6MH0seyJuYW1lIjoiYmxvYiIs"
    "ImtpbmQiOiJieXRlcyIsImJsb2NrIjowfSx7Im5hbWUiOiJtb2RlbCIsImtpbmQiOiJtb2RlbCIsImJsb2NrIjowLCJtb2Rl"
    "bCI6Il9fbWFpbl9fLk0ifV0sImJsb2NrcyI6W3sib2Zmc2V0IjowLCJsZW5ndGgiOjgwMH1dLCJkYXRhX2xlbmd0aCI6ODMy"
    "fQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAD/////gAEAABAAAAAAAAoADAAGAAUACAAKAAAAAAEEAAwAAAAIAAgA"
    "AAAEAAgAAAAEAAAAAwAAAOQAAABoAAAABAAAADr///8AAAEUFAAAAFAAAAAIAAAAFAAAAAAAAAAFAAAAbW9kZWwAAAABAAAA"
    "BAAAACj///8UAAAABAAAAAUAAABtb2RlbAAAAAwAAABhY2FkZW15LmtpbmQAAAAAIP///5r///8AAAETFAAAAFQAAAAIAAAA"
    "FAAAAAAAAAAEAAAAYmxvYgAAAAABAAAABAAAAIj///8UAAAABAAAAAUAAABieXRlcwAAAAwAAABhY2FkZW15LmtpbmQAAAAA"
    "BAAGAAQAAAAAABIAGAAIAAYABwAMAAAAEAAUABIAAAAAAAEUFAAAAFwAAAAIAAAAFAAAAAAAAAAGAAAAY291bnRzAAABAAAA"
    "DAAAAAgADAAEAAgACAAAABQAAAAEAAAABAAAAGpzb24AAAAADAAAAGFjYWRlbXkua2luZAAAAAAEAAQABAAAAP////8YAQAA"
    "FAAAAAAAAAAMABYABgAFAAgADAAMAAAAAAMEABgAAABwAAAAAAAAAAAACgAYAAwABAAIAAoAAACsAAAAEAAAAAEAAAAAAAAA"
    "AAAAAAkAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAABAAAAAAAAAAGgAAAAAAAAAwAAAAAAAAAAAAAAAAAAAA"
    "MAAAAAAAAAAQAAAAAAAAAEAAAAAAAAAABQAAAAAAAABIAAAAAAAAAAAAAAAAAAAASAAAAAAAAAAQAAAAAAAAAFgAAAAAAAAA"
    "EQAAAAAAAAAAAAAAAwAAAAEAAAAAAAAAAAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAQAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
    "GgAAAAAAAAB7ImEiOjEsImIiOlsxLjUsbnVsbCwieiJdfQAAAAAAAAAAAAAAAAAABQAAAAAAAAAAAXJhdwAAAAAAAAAAAAAA"
    "EQAAAAAAAAB7IngiOjMsInkiOlswLjVdfQAAAAAAAAD/////AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"
)


def test_json_fields_are_carried_in_the_header_without_an_arrow_block() -> None:
    fields = {"counts": {"a": 1, "b": [1.5, None, "z"]}, "note": "x"}
    payload = encode_state(fields)
    assert b"ARROW" not in payload and b"\xff\xff\xff\xff" not in payload  # no IPC stream at all
    assert decode_state(payload) == fields


def test_payloads_with_json_in_an_arrow_block_still_decode() -> None:
    decoded = decode_state(base64.b64decode(_PAYLOAD_WITH_JSON_IN_BLOCK_0))
    assert decoded == {
        "counts": {"a": 1, "b": [1.5, None, "z"]},
        "blob": b"\x00\x01raw",
        "model": {"x": 3, "y": [0.5]},
    }


def test_ndarray_is_decoded_zero_copy_and_writable_from_a_bytearray() -> None:
    arr = np.random.default_rng(0).random((100, 50))
    payload = bytearray(encode_state({"a": arr}))
    out = decode_state(payload)["a"]
    assert np.shares_memory(out, np.frombuffer(payload, dtype=np.uint8))
    assert out.flags.writeable
    out[0, 0] = 42.0  # mutating the restored state works
    readonly = decode_state(bytes(payload))["a"]
    assert not readonly.flags.writeable


def test_lz4_compression_round_trips_and_shrinks() -> None:
    arr = np.zeros((1000, 100), dtype=np.float64)
    plain = encode_state({"a": arr, "t": pa.table({"x": list(range(100))})})
    packed = encode_state({"a": arr, "t": pa.table({"x": list(range(100))})}, compression="lz4")
    assert len(packed) < len(plain) // 10
    out = decode_state(packed)
    np.testing.assert_array_equal(out["a"], arr)
    assert out["a"].flags.writeable
    assert out["t"].column("x").to_pylist() == list(range(100))


def test_segments_reference_large_arrays_without_copying_when_asked() -> None:
    arr = np.arange(1 << 20, dtype=np.float64)
    encoded = encode_state_segments({"a": arr}, copy=False)
    assert any(
        isinstance(seg, pa.Buffer) and seg.address == arr.ctypes.data for seg in encoded.segments
    )
    assert encoded.size == len(encoded.to_bytes())
    assert encoded.schema == {"a": "ndarray"}


@pytest.mark.parametrize("order", ["C", "F"])
def test_encoded_state_is_a_snapshot_of_arrays_changed_in_place_afterwards(order: str) -> None:
    arr = np.zeros((512, 256), dtype=np.float64, order=order)
    encoded = encode_state_segments({"a": arr, "step": 0})
    np.add(arr, 1.0, out=arr)  # what an agent's loop does while the payload is written
    out = decode_state(encoded.to_bytes())
    assert out["step"] == 0 and not out["a"].any()
    assert not any(
        isinstance(seg, pa.Buffer) and seg.address == arr.ctypes.data for seg in encoded.segments
    )


def test_format_starts_with_magic_and_blocks_are_aligned() -> None:
    payload = encode_state(
        {"x": 1, "a": np.arange(3, dtype=np.uint8), "b": np.arange(5, dtype=np.int64)}
    )
    assert payload[:8] == MAGIC
    out = decode_state(payload)
    base = np.frombuffer(payload, dtype=np.uint8).ctypes.data
    for name in ("a", "b"):
        assert (out[name].ctypes.data - base) % 8 == 0


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        (object(), "object"),
        ({1, 2}, "set"),
        (dt.datetime(2024, 1, 1), "datetime"),
        ([1, {"a": object()}], "object"),
        (np.array(["a", "b"]), "<U1"),
        (np.array([object()]), "object"),
    ],
)
def test_unsupported_types_name_field_and_type(value: object, type_name: str) -> None:
    with pytest.raises(StateEncodingError, match=r"field 'bad'") as info:
        encode_state({"ok": 1, "bad": value})
    assert type_name in str(info.value)
    assert isinstance(info.value, TypeError)


def test_non_str_keys_are_refused() -> None:
    with pytest.raises(StateEncodingError, match="dict key 3"):
        encode_state({"d": {"a": {3: "x"}}})
    with pytest.raises(StateEncodingError, match="field names"):
        encode_state({5: "x"})  # type: ignore[dict-item]


@pytest.mark.parametrize("cut", [0, 7, 20, -100, -1])
def test_truncated_or_garbled_payloads_raise(cut: int) -> None:
    payload = encode_state({"x": {"a": 1}, "a": np.arange(1000, dtype=np.int32)})
    with pytest.raises(StateEncodingError):
        decode_state(payload[:cut])
    with pytest.raises(StateEncodingError):
        decode_state(b"NOTSTATE" + payload[8:])


def test_state_schema_and_pickle_free_payload() -> None:
    assert state_schema({"a": np.zeros(2), "b": "x", "t": pa.table({"x": [1]})}) == {
        "a": "ndarray",
        "b": "json",
        "t": "table",
    }
    payload = encode_state({"a": np.zeros(2), "b": "x"})
    assert pickle.PROTO not in payload[:2]  # not a pickle stream


@settings(max_examples=60, deadline=None)
@given(
    arr=hnp.arrays(
        dtype=st.one_of(
            hnp.integer_dtypes(),
            hnp.unsigned_integer_dtypes(),
            hnp.floating_dtypes(),
            hnp.boolean_dtypes(),
            hnp.complex_number_dtypes(),
        ),
        shape=hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5),
    ),
    doc=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text() | st.floats(allow_nan=False),
        lambda children: (
            st.lists(children, max_size=3) | st.dictionaries(st.text(), children, max_size=3)
        ),
        max_leaves=10,
    ),
)
def test_property_round_trip(arr: np.ndarray, doc: object) -> None:
    out = decode_state(encode_state({"arr": arr, "doc": doc}))
    assert out["doc"] == doc
    assert out["arr"].shape == arr.shape
    assert out["arr"].dtype == arr.dtype.newbyteorder("=")
    np.testing.assert_array_equal(out["arr"], arr)
