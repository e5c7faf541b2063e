"""The content checksum of a study's Parquet files, defined once.

A SHA-256 over a canonical serialisation of the table's rows (column names, types, which
values are null and every value; numbers as their exact machine values, so -0.0 and the last
bit count, and every NaN as one), stored in the file's own schema metadata under CHECKSUM_KEY. It covers the values, not the bytes: the same rows
written by another pyarrow version still match. Checked by study.store.verify.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from study.store.fs import write_parquet_atomic

CHECKSUM_KEY = b"ilstudy.sha256"  # schema metadata: content_digest of the file's rows
OK, NO_CHECKSUM, MISMATCH = "ok", "no checksum", "mismatch"


def _canonical(value: Any) -> Any:
    if isinstance(value, float):
        return value.hex()  # exact; 'nan', 'inf' and '-0x0.0p+0' included
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, Mapping):
        return {str(k): _canonical(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_canonical(v) for v in value]
    return value


def _column_bytes(column: pa.ChunkedArray) -> bytes:
    """The column's values as canonical bytes: which rows are null, then the values, numbers
    as little-endian machine values (one NaN bit pattern; -0.0 kept), the rest as JSON."""
    kind = column.type
    nulls = np.asarray(pc.is_null(column), dtype="u1")
    if pa.types.is_floating(kind):
        values = np.asarray(pc.fill_null(column, 0.0), dtype="<f8").copy()
        values[np.isnan(values)] = np.nan
    elif pa.types.is_integer(kind) or pa.types.is_timestamp(kind):
        values = np.asarray(pc.fill_null(column.cast(pa.int64()), 0), dtype="<i8")
    elif pa.types.is_boolean(kind):
        values = np.asarray(pc.fill_null(column, False), dtype="u1")
    else:
        text = json.dumps([_canonical(v) for v in column.to_pylist()], separators=(",", ":"))
        return nulls.tobytes() + text.encode()
    return nulls.tobytes() + values.tobytes()


def content_digest(table: pa.Table) -> str:
    """SHA-256 (hex) of the table's columns, types and values, in order; metadata left out."""
    digest = hashlib.sha256()
    for field, column in zip(table.schema, table.columns, strict=True):
        header = json.dumps([field.name, str(field.type), len(column)]).encode()
        for part in (header, _column_bytes(column)):
            digest.update(struct.pack("<Q", len(part)) + part)
    return digest.hexdigest()


def with_checksum(table: pa.Table) -> pa.Table:
    """The table with its content digest in its schema metadata."""
    metadata = {**(table.schema.metadata or {}), CHECKSUM_KEY: content_digest(table).encode()}
    return table.replace_schema_metadata(metadata)


def checksum_state(table: pa.Table) -> str:
    """OK, MISMATCH, or NO_CHECKSUM (a file written before checksums)."""
    stored = (table.schema.metadata or {}).get(CHECKSUM_KEY)
    if stored is None:
        return NO_CHECKSUM
    return OK if stored.decode() == content_digest(table) else MISMATCH


def write_checked(fs: pafs.FileSystem, path: str, table: pa.Table) -> None:
    """Write a Parquet file atomically, with its checksum."""
    write_parquet_atomic(fs, path, with_checksum(table))


def same_content(a: pa.Table | None, b: pa.Table | None) -> bool:
    """The same columns, types and values, in the same order (metadata aside)."""
    return (
        a is not None
        and b is not None
        and a.schema.names == b.schema.names
        and content_digest(a) == content_digest(b)
    )
