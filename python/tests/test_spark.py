"""keytrail.spark in Spark's local mode (two cores, Java 17) against the CLI on the same
generated tree: the same rows, all columns; and the conversion through Spark's own writer."""

import pyarrow as pa
import pyarrow.dataset as ds
import pytest

import keytrail
import keytrail.spark
from conftest import cli_table, convert_with_cli, rows, run_cli

EVENTS = 3000


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    """A generated delivery tree (several accounts, Regions and days), with one broken file."""
    root = tmp_path_factory.mktemp("gen")
    run_cli("gen", root / "logs", "--events", EVENTS, "--seed", 11, "--records-per-file", 100, "-q")
    broken = root / "logs" / "AWSLogs" / "broken.json"
    broken.write_bytes(
        b'{"Records":[{"eventTime":"2024-05-01T10:00:00Z","eventID":"b1","eventName":"Decrypt",'
        b'"eventSource":"kms.amazonaws.com","awsRegion":"eu-west-1","recipientAccountId":"111122223333"},'
        b'{"eventTime":"not a time","eventID":"b2","eventName":"Decrypt"}]}'
    )
    return root / "logs"


def binary_files(spark, tree):
    return spark.read.format("binaryFile").option("recursiveFileLookup", "true").load(str(tree))


def test_spark_flatten_gives_the_clis_rows(spark, tree, tmp_path):
    out = tmp_path / "cli"
    summary = convert_with_cli([tree], out)
    assert summary["rows_written"] == EVENTS + 1
    expected = cli_table(out)

    events = keytrail.spark.flatten(binary_files(spark, tree))
    got = events.toArrow()
    assert got.schema.names == expected.schema.names
    assert got.num_rows == expected.num_rows
    # Spark's Arrow types are its own (timestamps in the session zone, map entry names): compare
    # values, typed as keytrail types them.
    want_schema = keytrail.schema(partition_by="region,date")
    got = got.cast(want_schema)
    expected = expected.cast(want_schema)
    got_rows, want_rows = rows(got), rows(expected)
    for index, (a, b) in enumerate(zip(got_rows, want_rows)):
        assert a == b, f"row {index} differs:\n{a}\n{b}"

    bad = keytrail.spark.quarantine(binary_files(spark, tree)).collect()
    assert len(bad) == 1 == summary["quarantined_records"]
    assert bad[0]["path"].endswith("broken.json")
    assert bad[0]["record"] == 1
    assert bytes(bad[0]["bytes"]) == b'{"eventTime":"not a time","eventID":"b2","eventName":"Decrypt"}'


def test_copies_in_different_tasks_are_dropped(spark, tree, tmp_path):
    # The same file twice under other names: every event a copy of one read by another task.
    first = next(p for p in tree.rglob("*.json.gz"))
    copies = tmp_path / "copies"
    copies.mkdir()
    for name in ["a.json.gz", "b.json.gz", "c.json.gz"]:
        (copies / name).write_bytes(first.read_bytes())
    # One file per task (copies within one task's files are dropped there already).
    files = binary_files(spark, copies).repartitionByRange(3, "path")
    assert sorted(len(p) for p in files.select("path").rdd.glom().collect()) == [1, 1, 1]
    once = keytrail.spark.flatten(files).count()
    every = keytrail.spark.flatten(files, drop_copies=False).count()
    assert every == 3 * once
    assert once == keytrail.read(first).read_all().num_rows


def test_convert_writes_events_and_quarantine_with_sparks_writer(spark, tree, tmp_path):
    target = tmp_path / "lake"
    keytrail.spark.convert(spark, str(tree), str(target))
    table = ds.dataset(target, format="parquet", partitioning="hive").to_table()
    assert table.num_rows == EVENTS + 1
    assert {"region", "event_date"} <= set(table.schema.names)
    regions = {path.name for path in target.iterdir() if path.name.startswith("region=")}
    assert len(regions) > 1
    bad = ds.dataset(target / "_keytrail" / "quarantine", format="parquet").to_table()
    assert bad.num_rows == 1
    assert bad.column("reason").to_pylist()[0].startswith("eventTime")
