"""The content checksum of a study's Parquet files, defined once.

A SHA-256 over a canonical serialisation of the table's rows (column names, types and every
value; floats as exact hex, so NaN, -0.0 and the last bit count), stored in the file's own
schema metadata under CHECKSUM_KEY. It covers the values, not the bytes: the same rows
written by another pyarrow version still match. Checked by study.store.verify.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

import pyarrow as pa
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


def content_digest(table: pa.Table) -> str:
    """SHA-256 (hex) of the table's columns, types and values, in order; metadata left out."""
    digest = hashlib.sha256()
    for field, column in zip(table.schema, table.columns, strict=True):
        values = [_canonical(v) for v in column.to_pylist()]
        item = [field.name, str(field.type), values]
        digest.update(json.dumps(item, separators=(",", ":")).encode())
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
