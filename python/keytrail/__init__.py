"""keytrail for Python: AWS CloudTrail logs, with first-class care for KMS key events, as typed
Arrow data.

``keytrail.read`` reads every form the ``keytrail`` command line reads (delivery files, gzip,
NDJSON, EventBridge and CloudWatch Logs envelopes, ``lookup-events`` output, CloudTrail Lake
results, zip archives; local paths, globs and ``s3://`` URLs, or ``bytes``) into a
``pyarrow.RecordBatchReader`` of the keytrail schema, parsing on worker threads with the GIL
released and with bounded memory. Nothing vanishes: ``keytrail.report(reader)`` accounts for every
record read (a row, a copy dropped, or an invalid record kept with its bytes).

``keytrail.spark`` distributes the flattening over a Spark cluster.
"""

from __future__ import annotations

import os
import weakref
from typing import Iterable, Optional, Union

import pyarrow as pa

from . import _keytrail
from ._keytrail import IDENTITY_COLUMN, Report, __version__

__all__ = ["read", "report", "schema", "Report", "IDENTITY_COLUMN", "__version__"]

Source = Union[str, "os.PathLike[str]", bytes, bytearray, memoryview]

_reports: "weakref.WeakKeyDictionary[pa.RecordBatchReader, Report]" = weakref.WeakKeyDictionary()


def _split_sources(source: Union[Source, Iterable[Source]]):
    if isinstance(source, (str, os.PathLike, bytes, bytearray, memoryview)):
        source = [source]
    paths, blobs = [], []
    for item in source:
        if isinstance(item, (bytes, bytearray, memoryview)):
            blobs.append((f"<bytes {len(blobs)}>", bytes(item)))
        elif isinstance(item, (str, os.PathLike)):
            paths.append(os.fspath(item))
        else:
            raise TypeError(
                f"a source is a path, a glob, an s3:// URL or bytes, not {type(item).__name__}"
            )
    return paths, blobs


def read(
    source: Union[Source, Iterable[Source]],
    *,
    threads: Optional[int] = None,
    strict: bool = False,
    batch_rows: int = 8192,
    keep_raw: bool = False,
    drop_copies: bool = True,
    partition_by: Optional[str] = None,
) -> pa.RecordBatchReader:
    """Reads CloudTrail logs as a ``pyarrow.RecordBatchReader`` with the keytrail schema.

    ``source``: a path (file or directory, read recursively), a glob, an ``s3://bucket/prefix``
    URL, ``bytes`` (gzip and zip sniffed), or a list of these. ``threads``: worker threads (default:
    one per core). ``strict``: the reader raises at the first problem, naming its file and record.
    ``keep_raw``: add the ``raw_event`` column (each event's JSON text as read). ``drop_copies``:
    drop re-delivered copies of an event, as a conversion does. ``partition_by``: add the partition
    columns of that partitioning (``"region,date"`` gives ``region`` and ``event_date``).

    Batches come in no particular order. Once the reader is exhausted, ``keytrail.report(reader)``
    tells what was read and holds the invalid records.
    """
    paths, blobs = _split_sources(source)
    reader, found = _keytrail.start_read(
        paths,
        blobs,
        threads=threads,
        strict=strict,
        batch_rows=batch_rows,
        keep_raw=keep_raw,
        drop_copies=drop_copies,
        partition_by=partition_by,
    )
    _reports[reader] = found
    return reader


def report(reader: pa.RecordBatchReader) -> Report:
    """The accounting of a reader made by ``keytrail.read``: files and events read, rows, copies
    dropped, problems (each naming input, record and byte) and ``quarantined()``, the invalid
    records with their original bytes. Final once ``finished`` is true (the reader is exhausted)."""
    try:
        return _reports[reader]
    except (KeyError, TypeError):
        raise ValueError("this reader was not made by keytrail.read") from None


def schema(*, keep_raw: bool = False, partition_by: Optional[str] = None) -> pa.Schema:
    """The keytrail schema: the Arrow schema of ``read``'s batches (each field's description in
    its metadata, ``b"description"``), as ``keytrail schema --format arrow`` prints it."""
    return _keytrail.schema(keep_raw=keep_raw, partition_by=partition_by)
