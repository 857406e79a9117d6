"""Agent state encoding with Apache Arrow (IPC streams), never pickle.

An agent's persisted state is a mapping of field names to values. :func:`encode_state` turns it into one
self-describing binary object and :func:`decode_state` turns it back.

Supported values:

* JSON-able Python: ``None``, ``bool``, ``int``, ``float``, ``str``, ``list``/``tuple`` (decoded as ``list``)
  and ``dict`` with ``str`` keys, nested freely;
* ``bytes`` (and ``bytearray``, decoded as ``bytes``);
* a pydantic ``BaseModel``: its ``model_dump(mode="json")`` is stored and decoding gives that dict back (the
  caller re-validates it with its model class);
* a numpy ``ndarray`` of any shape with a bool, integer, float or complex dtype: stored as a typed Arrow column
  with dtype and shape metadata and decoded **zero-copy** (a view on the payload buffer; writable when the
  buffer given to :func:`decode_state` is writable, e.g. a ``bytearray``);
* a ``pyarrow.Table``: stored as its own Arrow IPC stream, it round trips with its schema and metadata.

Anything else raises :class:`StateEncodingError` naming the field and the type.

Format (version 1), all integers little-endian::

    offset 0   8 bytes   magic b"ACRSTAT1"
    offset 8   8 bytes   uint64 header length H
    offset 16  H bytes   header, UTF-8 JSON:
                         {"format": "academy-ray-state", "version": 1, "compression": null | "lz4",
                          "fields": [{"name", "kind", "block" | "text", ...kind metadata}],
                          "blocks": [{"offset", "length"}]}   (offsets relative to the data area)
    padding to a multiple of 64
    data area  one Arrow IPC stream per block, each starting on a 64-byte boundary

JSON fields and models are JSON text in their header entry (``"text"``; payloads written before this
kept them in block 0 as ``large_string`` columns, and still decode). Block 0 (when present) holds the
``bytes`` fields as the ``large_binary`` columns of a one-row record batch. Every ndarray and every table has a
block of its own, so a large array is written straight from its memory and read back as a view: encoding
and decoding cost about one memcpy (no per-element Python, no compression unless ``compression="lz4"``).
"""

from __future__ import annotations

import io
import json
import math
import struct
from collections.abc import Iterator, Mapping
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pyarrow import ipc
from pydantic import BaseModel

__all__ = [
    "FORMAT_VERSION",
    "MAGIC",
    "EncodedState",
    "StateEncodingError",
    "decode_state",
    "encode_state",
    "encode_state_segments",
    "state_schema",
]

MAGIC = b"ACRSTAT1"
FORMAT_VERSION = 1
_ALIGN = 64
_PREFIX = struct.Struct("<8sQ")
# Arrow column type used to store each numpy dtype kind (bool and complex are stored as views).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "b1": pa.uint8(),
    "i1": pa.int8(),
    "i2": pa.int16(),
    "i4": pa.int32(),
    "i8": pa.int64(),
    "u1": pa.uint8(),
    "u2": pa.uint16(),
    "u4": pa.uint32(),
    "u8": pa.uint64(),
    "f2": pa.float16(),
    "f4": pa.float32(),
    "f8": pa.float64(),
    "c8": pa.float32(),
    "c16": pa.float64(),
}

Compression = Literal["lz4"] | None


class StateEncodingError(TypeError):
    """A state field cannot be encoded (unsupported type) or a payload cannot be decoded."""


def _pad(n: int) -> int:
    return (-n) % _ALIGN


def _kind_of(name: str, value: Any) -> str:
    if isinstance(value, np.ndarray):
        key = f"{value.dtype.kind}{value.dtype.itemsize}"
        if value.dtype.kind not in "biufc" or key not in _ARROW_TYPES:
            raise StateEncodingError(
                f"state field {name!r}: numpy dtype {value.dtype} is not supported "
                "(use a bool, integer, float or complex dtype)"
            )
        return "ndarray"
    if isinstance(value, pa.Table):
        return "table"
    if isinstance(value, BaseModel):
        return "model"
    if isinstance(value, (bytes, bytearray)):
        return "bytes"
    _check_json(name, value, name)
    return "json"


def _check_json(name: str, value: Any, where: str) -> None:
    if value is None or isinstance(value, (bool, int, str)):
        return
    if isinstance(value, float):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_json(name, item, f"{where}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise StateEncodingError(
                    f"state field {name!r}: dict key {key!r} at {where} is a {type(key).__name__}, "
                    "only str keys are supported"
                )
            _check_json(name, item, f"{where}[{key!r}]")
        return
    where_text = "" if where == name else f" (at {where})"
    raise StateEncodingError(
        f"state field {name!r}{where_text}: values of type {type(value).__module__}."
        f"{type(value).__qualname__} are not supported; use JSON-able values, bytes, a pydantic model, "
        "a numpy array or a pyarrow Table"
    )


def _json_default_floats(value: Any) -> Any:  # pragma: no cover - only called for unexpected types
    raise TypeError(type(value).__name__)


def _dumps(value: Any) -> str:
    return json.dumps(value, allow_nan=True, separators=(",", ":"), default=_json_default_floats)


class _SegmentSink(io.RawIOBase):
    """A write-only sink that keeps references to large buffers instead of copying them."""

    def __init__(self, segments: list[Any]) -> None:
        super().__init__()
        self.segments = segments
        self.length = 0
        self._small = bytearray()

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:  # type: ignore[override]
        view = memoryview(data)
        n = view.nbytes
        if n >= 1 << 16:
            self._flush_small()
            self.segments.append(data)
        else:
            self._small += view
        self.length += n
        return n

    def _flush_small(self) -> None:
        if self._small:
            self.segments.append(bytes(self._small))
            self._small = bytearray()

    def finish(self) -> None:
        self._flush_small()


class EncodedState:
    """An encoded state as a list of buffers (zero-copy views on the caller's arrays) plus its schema.

    Attributes:
        segments: Buffers whose concatenation is the payload (bytes-like objects).
        size: Total payload size in bytes.
        schema: Field name to kind (``json``, ``bytes``, ``model``, ``ndarray``, ``table``).
        compression: ``None`` or ``"lz4"``.
    """

    def __init__(
        self,
        segments: list[Any],
        size: int,
        schema: dict[str, str],
        compression: Compression = None,
    ) -> None:
        self.segments = segments
        self.size = size
        self.schema = schema
        self.compression: Compression = compression

    def iter_views(self) -> Iterator[memoryview]:
        """Yields the payload as consecutive byte views."""
        for seg in self.segments:
            yield memoryview(seg).cast("B")

    def to_bytes(self) -> bytes:
        """Concatenates the payload into one ``bytes`` object (one copy)."""
        return b"".join(self.segments)


def _ipc_options(compression: Compression) -> ipc.IpcWriteOptions:
    return ipc.IpcWriteOptions(compression=compression)


def _write_stream(sink: _SegmentSink, table: pa.Table, compression: Compression) -> None:
    with ipc.new_stream(
        pa.PythonFile(sink, mode="w"), table.schema, options=_ipc_options(compression)
    ) as w:
        w.write_table(table)


def _ndarray_table(arr: np.ndarray, *, copy: bool) -> tuple[pa.Table, dict[str, Any]]:
    order = "C"
    copied = False
    if arr.dtype.byteorder == ">" or (arr.dtype.byteorder == "=" and not _LITTLE):
        arr = arr.astype(arr.dtype.newbyteorder("<"))
        copied = True
    if arr.flags.c_contiguous:
        flat = arr.reshape(-1)
    elif arr.flags.f_contiguous:
        order = "F"
        flat = arr.T.reshape(-1)
    else:
        flat = np.ascontiguousarray(arr).reshape(-1)
        copied = True
    if copy and not copied:
        # The snapshot: the caller may change the array in place as soon as this returns (an agent's loop,
        # timer or another action does, while the payload is written in a thread).
        flat = flat.copy()
    key = f"{arr.dtype.kind}{arr.dtype.itemsize}"
    arrow_type = _ARROW_TYPES[key]
    if arr.dtype.kind == "b":
        flat = flat.view(np.uint8)
    elif arr.dtype.kind == "c":
        flat = flat.view(np.float32 if arr.dtype.itemsize == 8 else np.float64)
    column = pa.Array.from_buffers(arrow_type, len(flat), [None, pa.py_buffer(flat)])
    dtype_str = np.dtype(arr.dtype).newbyteorder("<").str
    meta: dict[str, Any] = {"dtype": dtype_str, "shape": list(arr.shape), "order": order}
    field = pa.field(
        "data",
        arrow_type,
        nullable=False,
        metadata={
            b"academy.dtype": dtype_str.encode(),
            b"academy.shape": json.dumps(list(arr.shape)).encode(),
            b"academy.order": order.encode(),
        },
    )
    return pa.Table.from_arrays([column], schema=pa.schema([field])), meta


_LITTLE = np.little_endian


def encode_state_segments(
    fields: Mapping[str, Any], *, compression: Compression = None, copy: bool = True
) -> EncodedState:
    """Encodes a state into a list of buffers: a snapshot, unless ``copy=False``.

    With ``copy=True`` (the default) numpy arrays are copied once, so the result is immutable: the caller
    may change its arrays in place right after this returns, and the payload still holds the values of
    this moment (every other kind is serialised or immutable already; compressed arrays are new buffers
    anyway). With ``copy=False`` the arrays' buffers are referenced: do not change them until the
    segments have been written.

    Args:
        fields: Field name to value (see the module docstring for supported values).
        compression: ``None`` (default, fastest) or ``"lz4"`` (Arrow IPC buffer compression).
        copy: Copy numpy arrays (the snapshot). Only a caller that keeps the arrays unchanged until the
            payload is written may pass False.

    Returns:
        The encoded state.

    Raises:
        StateEncodingError: A field has an unsupported type or name.
    """
    if compression not in (None, "lz4"):
        raise ValueError(f"compression must be None or 'lz4', not {compression!r}")
    kinds: dict[str, str] = {}
    for name, value in fields.items():
        if not isinstance(name, str) or not name:
            raise StateEncodingError(f"state field names must be non-empty str, got {name!r}")
        kinds[name] = _kind_of(name, value)

    data_segments: list[Any] = []
    blocks: list[dict[str, int]] = []
    header_fields: list[dict[str, Any]] = []
    offset = 0

    def add_block(table: pa.Table) -> int:
        nonlocal offset
        sink = _SegmentSink(data_segments)
        _write_stream(sink, table, compression)
        sink.finish()
        blocks.append({"offset": offset, "length": sink.length})
        offset += sink.length
        pad = _pad(offset)
        if pad:
            data_segments.append(bytes(pad))
            offset += pad
        return len(blocks) - 1

    for name, kind in kinds.items():
        if kind in ("json", "model"):  # JSON text in the header: no Arrow block to build or read
            value = fields[name]
            doc = value.model_dump(mode="json") if kind == "model" else value
            entry: dict[str, Any] = {"name": name, "kind": kind, "text": _dumps(doc)}
            if kind == "model":
                entry["model"] = f"{type(value).__module__}.{type(value).__qualname__}"
            header_fields.append(entry)
    binary = [name for name, kind in kinds.items() if kind == "bytes"]
    if binary:
        add_block(
            pa.Table.from_arrays(
                [pa.array([bytes(fields[name])], type=pa.large_binary()) for name in binary],
                schema=pa.schema(
                    [
                        pa.field(name, pa.large_binary(), metadata={b"academy.kind": b"bytes"})
                        for name in binary
                    ]
                ),
            )
        )
        header_fields.extend({"name": name, "kind": "bytes", "block": 0} for name in binary)

    for name, kind in kinds.items():
        if kind == "ndarray":
            table, meta = _ndarray_table(fields[name], copy=copy and compression is None)
            header_fields.append({"name": name, "kind": kind, "block": add_block(table), **meta})
        elif kind == "table":
            header_fields.append({"name": name, "kind": kind, "block": add_block(fields[name])})

    position = {name: i for i, name in enumerate(fields)}
    header_fields.sort(key=lambda entry: position[entry["name"]])
    header = json.dumps(
        {
            "format": "academy-ray-state",
            "version": FORMAT_VERSION,
            "compression": compression,
            "fields": header_fields,
            "blocks": blocks,
            "data_length": offset,
        },
        separators=(",", ":"),
    ).encode()
    prefix = _PREFIX.pack(MAGIC, len(header)) + header
    prefix += bytes(_pad(len(prefix)))
    schema = {name: kinds[name] for name in fields}
    return EncodedState([prefix, *data_segments], len(prefix) + offset, schema, compression)


def encode_state(fields: Mapping[str, Any], *, compression: Compression = None) -> bytes:
    """Encodes an agent state into one Arrow-based binary object.

    Args:
        fields: Field name to value (see the module docstring for supported values).
        compression: ``None`` (default, fastest) or ``"lz4"``.

    Returns:
        The payload.

    Raises:
        StateEncodingError: A field has an unsupported type (the message names the field and type).
    """
    return encode_state_segments(fields, compression=compression).to_bytes()


def state_schema(fields: Mapping[str, Any]) -> dict[str, str]:
    """Returns the kind of each field (``json``, ``bytes``, ``model``, ``ndarray``, ``table``)."""
    return {name: _kind_of(name, value) for name, value in fields.items()}


def _read_header(buf: pa.Buffer) -> tuple[dict[str, Any], int]:
    if buf.size < _PREFIX.size:
        raise StateEncodingError(f"state payload truncated: {buf.size} bytes")
    magic, header_len = _PREFIX.unpack(buf.slice(0, _PREFIX.size).to_pybytes())
    if magic != MAGIC:
        raise StateEncodingError(f"not an academy-ray state payload (magic {magic!r})")
    end = _PREFIX.size + header_len
    if end > buf.size:
        raise StateEncodingError("state payload truncated inside its header")
    try:
        header = json.loads(buf.slice(_PREFIX.size, header_len).to_pybytes())
    except ValueError as exc:
        raise StateEncodingError(f"state payload header is not valid JSON: {exc}") from exc
    if header.get("format") != "academy-ray-state" or header.get("version") != FORMAT_VERSION:
        raise StateEncodingError(
            f"unsupported state format {header.get('format')!r} version {header.get('version')!r}"
        )
    return header, end + _pad(end)


def _decode_ndarray(entry: dict[str, Any], table: pa.Table, data: Any, base: int) -> np.ndarray:
    dtype = np.dtype(entry["dtype"])
    shape = tuple(int(n) for n in entry["shape"])
    column = table.column(0)
    count = int(math.prod(shape)) * (2 if dtype.kind == "c" else 1)
    if len(column) != count:
        raise StateEncodingError(
            f"state field {entry['name']!r}: {len(column)} values for shape {shape}"
        )
    storage = np.dtype(column.type.to_pandas_dtype())
    flat: np.ndarray
    if column.num_chunks == 1 and count:
        chunk = column.chunk(0)
        values = chunk.buffers()[1]
        start = values.address - base + chunk.offset * storage.itemsize
        if start >= 0 and start + count * storage.itemsize <= memoryview(data).nbytes:
            # The values lie inside the caller's buffer: a zero-copy (and, for a bytearray, writable) view.
            flat = np.frombuffer(data, dtype=storage, count=count, offset=start)
        else:  # decompressed into new memory: our own copy
            flat = np.frombuffer(
                values, dtype=storage, count=count, offset=chunk.offset * storage.itemsize
            ).copy()
    elif count:
        flat = np.concatenate([c.to_numpy(zero_copy_only=False) for c in column.chunks])
    else:
        flat = np.empty(0, dtype=storage)
    arr = flat.view(dtype)
    if entry.get("order") == "F":
        return arr.reshape(shape[::-1]).T
    return arr.reshape(shape)


def decode_state(data: bytes | bytearray | memoryview) -> dict[str, Any]:
    """Decodes a payload made by :func:`encode_state`.

    Numpy arrays are zero-copy views on ``data`` (for uncompressed payloads): they are writable when
    ``data`` is writable (a ``bytearray``) and read-only for ``bytes``.

    Args:
        data: The payload.

    Returns:
        Field name to value (pydantic models come back as their JSON dict).

    Raises:
        StateEncodingError: The payload is truncated, corrupt or of an unknown format.
    """
    view = memoryview(data)
    if view.ndim != 1 or view.itemsize != 1:
        view = view.cast("B")
    buf = pa.py_buffer(view)
    base = buf.address
    header, data_start = _read_header(buf)
    expected = data_start + int(header.get("data_length", -1))
    if expected != buf.size:
        raise StateEncodingError(f"state payload has {buf.size} bytes, its header says {expected}")
    try:
        tables: dict[int, pa.Table] = {}
        for index, block in enumerate(header["blocks"]):
            start, length = data_start + int(block["offset"]), int(block["length"])
            if start + length > buf.size:
                raise StateEncodingError(
                    f"state payload truncated: block {index} ends past {buf.size} bytes"
                )
            tables[index] = ipc.open_stream(buf.slice(start, length)).read_all()
        out: dict[str, Any] = {}
        for entry in header["fields"]:
            name, kind = entry["name"], entry["kind"]
            if kind in ("json", "model") and "text" in entry:
                out[name] = json.loads(entry["text"])
                continue
            table = tables[int(entry["block"])]
            if kind == "ndarray":
                out[name] = _decode_ndarray(entry, table, view, base)
            elif kind == "table":
                out[name] = table
            elif kind == "bytes":
                out[name] = table.column(name)[0].as_py()
            elif kind in ("json", "model"):
                out[name] = json.loads(table.column(name)[0].as_py())
            else:
                raise StateEncodingError(f"state field {name!r} has unknown kind {kind!r}")
        return out
    except StateEncodingError:
        raise
    except (pa.ArrowException, KeyError, ValueError, TypeError, IndexError) as exc:
        raise StateEncodingError(f"state payload is corrupt: {type(exc).__name__}: {exc}") from exc
