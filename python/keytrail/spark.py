"""keytrail on Spark (EMR, Glue, Databricks): the conversion distributed over a cluster.

``flatten(df)`` turns a DataFrame of ``spark.read.format("binaryFile")`` rows (``path``,
``content``, ...) into one of the keytrail schema through ``mapInArrow``: each task flattens its
files with keytrail's Rust core; ``quarantine(df)`` gives the records that could not be made into
rows (``path``, ``record``, ``offset``, ``reason``, ``bytes``). ``convert(spark, source, target)``
writes both with Spark's own writers, so ``format="delta"`` or ``"iceberg"`` go through the
cluster's connectors.

The package must be installed on the executors too (Glue: ``--additional-python-modules`` with
the wheel; EMR/Databricks: a cluster library or ``--py-files`` is not enough, it has a native
module).
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, Union

import pyarrow as pa

from . import _keytrail

__all__ = ["flatten", "quarantine", "convert", "spark_schema", "DEFAULT_PARTITIONING"]

#: The partition columns a conversion adds, as the CLI's default (``region``, ``event_date``).
DEFAULT_PARTITIONING = "region,date"

_QUARANTINE_NAMES = ["path", "record", "offset", "reason", "bytes"]


def _partitioning(partition_by: Union[None, str, Sequence[str]]) -> str:
    if partition_by is None:
        return "none"
    if isinstance(partition_by, str):
        return partition_by
    return ",".join(partition_by) or "none"


def spark_schema(arrow_schema: pa.Schema):
    """The Spark ``StructType`` of an Arrow schema (keytrail's column descriptions become the
    fields' ``comment``)."""
    from pyspark.sql.pandas.types import from_arrow_schema
    from pyspark.sql.types import StructField, StructType

    plain = from_arrow_schema(arrow_schema)
    fields = []
    for field, arrow_field in zip(plain.fields, arrow_schema):
        metadata = arrow_field.metadata or {}
        description = metadata.get(b"description")
        if description is not None:
            field = StructField(
                field.name,
                field.dataType,
                field.nullable,
                {"comment": description.decode()},
            )
        fields.append(field)
    return StructType(fields)


def _flattener(partition_by: str, keep_raw: bool, strict: bool, want: str):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for batch in batches:
            events, report = _keytrail.start_flatten(
                batch.select(["path", "content"]), partition_by=partition_by, keep_raw=keep_raw, strict=strict
            )
            if want == "events":
                for chunk in events:
                    if chunk.num_rows:
                        yield chunk
                continue
            for _ in events:
                pass
            bad = report.quarantined()
            if bad.num_rows:
                yield pa.RecordBatch.from_arrays(bad.columns, names=_QUARANTINE_NAMES)

    return run


def flatten(
    df,
    *,
    partition_by: Union[None, str, Sequence[str]] = DEFAULT_PARTITIONING,
    keep_raw: bool = False,
    drop_copies: bool = True,
    strict: bool = False,
):
    """The events of ``df``'s files (``spark.read.format("binaryFile")`` rows) as a DataFrame of
    the keytrail schema plus the partition columns of ``partition_by`` (the CLI's keys: ``region``,
    ``date`` → ``event_date``, ``account``, ``year``, ``month``, ``day``, ``service``; ``None`` for
    none).

    ``drop_copies``: copies of an event (CloudTrail re-delivers some) are dropped across all
    files, as a conversion does; this shuffles the events once by their identity. Off, copies are
    dropped only within each task's files. ``strict``: a task fails at its first invalid record.
    """
    keys = _partitioning(partition_by)
    arrow_schema = _keytrail.schema(keep_raw=keep_raw, partition_by=keys, identity=True)
    events = df.select("path", "content").mapInArrow(
        _flattener(keys, keep_raw, strict, "events"), spark_schema(arrow_schema)
    )
    identity = _keytrail.IDENTITY_COLUMN
    if drop_copies:
        from pyspark.sql import functions as F

        # Events without an id are never copies: each gets a key of its own.
        key = "__keytrail_copy_key"
        events = (
            events.withColumn(
                key,
                F.when(F.col(identity).isNull(), F.expr("uuid()")).otherwise(F.hex(F.col(identity))),
            )
            .dropDuplicates([key])
            .drop(key)
        )
    return events.drop(identity)


def quarantine(df, *, keep_raw: bool = False):
    """The records of ``df``'s files that could not be made into rows: ``path``, ``record`` (its
    index in the file), ``offset`` (its byte in the decompressed file), ``reason``, ``bytes``
    (the record exactly as read)."""
    from pyspark.sql.types import BinaryType, LongType, StringType, StructField, StructType

    schema = StructType(
        [
            StructField("path", StringType(), False),
            StructField("record", LongType(), True),
            StructField("offset", LongType(), True),
            StructField("reason", StringType(), False),
            StructField("bytes", BinaryType(), False),
        ]
    )
    return df.select("path", "content").mapInArrow(
        _flattener("none", keep_raw, False, "quarantine"), schema
    )


def _is_path(target: str) -> bool:
    return "/" in target or ":" in target


def convert(
    spark,
    source: Union[str, Sequence[str]],
    target: str,
    *,
    format: str = "parquet",
    partition_by: Union[None, str, Sequence[str]] = DEFAULT_PARTITIONING,
    mode: str = "append",
    keep_raw: bool = False,
    drop_copies: bool = True,
    quarantine_target: Optional[str] = None,
    options: Optional[dict] = None,
) -> None:
    """Converts the CloudTrail logs under ``source`` (paths, globs or ``s3://`` URLs, read
    recursively) into ``target`` with Spark's writer of ``format`` (``parquet``, ``delta``,
    ``iceberg``, ...: a path, or a table name for ``saveAsTable``), partitioned by
    ``partition_by``'s columns. The records that could not be converted are written as Parquet to
    ``quarantine_target`` (default: ``<target>/_keytrail/quarantine``, which Spark, Athena and
    Delta readers skip; required when ``target`` is a table name)."""
    if quarantine_target is None:
        if not _is_path(target):
            raise ValueError(
                "a table-name target needs quarantine_target= (where the records that could "
                "not be converted are kept)"
            )
        quarantine_target = target.rstrip("/") + "/_keytrail/quarantine"
    sources = [source] if isinstance(source, str) else list(source)
    files = spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(sources)
    events = flatten(files, partition_by=partition_by, keep_raw=keep_raw, drop_copies=drop_copies)
    keys = _partitioning(partition_by)
    columns = [] if keys == "none" else list(_keytrail.schema(partition_by=keys).names[-len(keys.split(",")) :])
    writer = events.write.format(format).mode(mode).options(**(options or {}))
    if columns:
        writer = writer.partitionBy(*columns)
    if _is_path(target):
        writer.save(target)
    else:
        writer.saveAsTable(target)
    quarantine(files, keep_raw=keep_raw).write.mode("append").parquet(quarantine_target)
