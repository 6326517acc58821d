"""keytrail.read against the CLI's own output: the same rows, all columns, over every real
fixture the repository ships; the same problems, with the same bytes."""

import gzip
import os
import json
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

import keytrail
from conftest import DATA, cli_table, convert_with_cli, rows, run_cli


def arrow_type(spec):
    """A type as `keytrail schema --format arrow` prints it, as a pyarrow type."""
    if isinstance(spec, dict):
        (kind, inner), = spec.items()
        if kind == "list":
            return pa.list_(arrow_field(inner))
        if kind == "struct":
            return pa.struct([arrow_field(f) for f in inner])
        if kind == "map":
            key, value = inner["type"]["struct"]
            return pa.map_(arrow_field(key), arrow_field(value))
        raise AssertionError(f"unknown type {spec}")
    simple = {
        "Utf8": pa.string(),
        "Boolean": pa.bool_(),
        "Int32": pa.int32(),
        "Int64": pa.int64(),
        "Float64": pa.float64(),
        "Binary": pa.binary(),
        'Timestamp(µs, "UTC")': pa.timestamp("us", tz="UTC"),
    }
    assert spec in simple, f"a type this test does not know: {spec}"
    return simple[spec]


def arrow_field(spec):
    return pa.field(spec["name"], arrow_type(spec["type"]), spec["nullable"])


def test_the_schema_is_the_clis():
    printed = json.loads(run_cli("schema", "--format", "arrow").stdout)
    expected = pa.schema([arrow_field(f) for f in printed["fields"]])
    schema = keytrail.schema()
    assert schema.equals(expected), f"{schema}\n!=\n{expected}"
    for field, spec in zip(schema, printed["fields"]):
        assert field.metadata[b"description"].decode() == spec["description"], field.name
    partitioned = keytrail.schema(partition_by="region,date")
    assert partitioned.names[len(schema):] == [c["name"] for c in printed["partition_columns"]]
    assert keytrail.schema(keep_raw=True).names[-1] == "raw_event"


@pytest.fixture(scope="module")
def every_fixture(tmp_path_factory):
    """The CLI's conversion of every fixture in tests/data (all container forms, the broken and
    odd ones too)."""
    out = tmp_path_factory.mktemp("cli") / "table"
    summary = convert_with_cli([DATA], out)
    return out, summary


def identity(row):
    """What makes two rows the same event (see keytrail's write::dedup), short of the content
    fingerprint: copies agree on all of it."""
    return (row["event_time"], row["event_id"], row["recipient_account_id"] or row["user_identity_account_id"],
            row["event_name"], row["error_code"], row["request_parameters"], row["response_elements"], row["aws_region"])


def test_read_gives_the_clis_rows_over_every_real_fixture(every_fixture):
    out, summary = every_fixture
    expected = cli_table(out)
    reader = keytrail.read(str(DATA), partition_by="region,date")
    assert isinstance(reader, pa.RecordBatchReader)
    table = reader.read_all()
    assert table.schema.names == expected.schema.names
    expected = rows(expected.cast(table.schema))
    got = rows(table)
    assert len(got) == len(expected) == summary["rows_written"]

    # Every copy, as read: the CLI's rows are among them, and the rest are the copies it dropped.
    every = rows(keytrail.read(str(DATA), partition_by="region,date", drop_copies=False).read_all())
    remaining = Counter(json.dumps(r, sort_keys=True, default=repr) for r in every)
    remaining.subtract(json.dumps(r, sort_keys=True, default=repr) for r in expected)
    assert all(n >= 0 for n in remaining.values()), "a row of the CLI's table is not read"
    assert sum(remaining.values()) == summary["duplicates_dropped"] == 10

    # Row for row, all columns, wherever an event has one copy; where copies differ outside the
    # identity (a Lake result's columns and the lookup-events record of one call), the row read
    # is one of them (the CLI keeps the same one whatever the input order; a stream keeps the
    # first it reads).
    copies = Counter(identity(r) for r in every)
    single = lambda table: [r for r in table if copies[identity(r)] == 1]
    assert single(got) == single(expected)
    assert len(single(got)) > 3000
    assert sorted(map(repr, map(identity, got))) == sorted(map(repr, map(identity, expected)))
    every_text = {json.dumps(r, sort_keys=True, default=repr) for r in every}
    assert all(json.dumps(r, sort_keys=True, default=repr) in every_text for r in got)

    report = keytrail.report(reader)
    assert report.finished
    assert report.events_read == summary["events_read"]
    assert report.duplicates_dropped == summary["duplicates_dropped"]
    assert report.invalid_records == summary["quarantined_records"]
    assert report.rows == summary["rows_written"]
    assert report.failed_files == summary["failed_files"]
    assert report.repaired_records == summary["repaired_records"]
    assert report.skipped_files == {"not JSON": summary["skipped_files"]["not_json"], "no events": summary["skipped_files"]["no_events"]}
    assert report.events_read == report.rows + report.duplicates_dropped + report.invalid_records


def test_the_invalid_records_are_the_clis_quarantine_byte_for_byte(every_fixture):
    out, _ = every_fixture
    (run,) = (out / "_keytrail" / "quarantine").iterdir()
    records = (run / "records.bin").read_bytes()
    expected = []
    for line in (run / "reasons.jsonl").read_text().splitlines():
        entry = json.loads(line)
        body = records[entry["bin_offset"] : entry["bin_offset"] + entry["length"]]
        expected.append((entry["input"], entry.get("record"), entry.get("offset"), entry["reason"], body))
    reader = keytrail.read(str(DATA))
    reader.read_all()
    bad = keytrail.report(reader).quarantined()
    got = list(zip(*(bad.column(name).to_pylist() for name in ["input", "record", "offset", "reason", "bytes"])))
    assert len(got) == 121
    assert sorted(got) == sorted(expected)


INVICTUS = DATA / "invictus"


def test_bytes_paths_and_globs_give_the_same_rows():
    files = sorted(p for p in INVICTUS.rglob("*.json") if p.is_file())
    assert len(files) > 3
    by_directory = rows(keytrail.read(INVICTUS).read_all())
    by_paths = rows(keytrail.read([str(p) for p in files]).read_all())
    by_glob = rows(keytrail.read(str(INVICTUS / "**" / "*.json")).read_all())
    # Gzip is told by its bytes, not by a name.
    by_bytes = rows(keytrail.read([gzip.compress(p.read_bytes()) for p in files]).read_all())
    assert by_directory == by_paths == by_glob == by_bytes
    assert len(by_directory) == 2900


def test_a_bad_record_is_kept_with_its_bytes_and_named():
    good = b'{"eventTime":"2024-05-01T10:00:00Z","eventID":"e1","eventName":"Decrypt","eventSource":"kms.amazonaws.com"}'
    bad = b'{"eventTime":"yesterday","eventID":"e2","eventName":"Encrypt"}'
    reader = keytrail.read(b'{"Records":[' + good + b"," + bad + b"]}")
    assert reader.read_all().num_rows == 1
    report = keytrail.report(reader)
    assert (report.events_read, report.rows, report.invalid_records) == (2, 1, 1)
    quarantined = report.quarantined().to_pylist()
    assert len(quarantined) == 1
    assert quarantined[0]["bytes"] == bad
    assert quarantined[0]["record"] == 1
    assert quarantined[0]["input"] == "<bytes 0>"
    assert "eventTime" in quarantined[0]["reason"]
    assert any("<bytes 0>: record 1" in p for p in report.problems)
    assert "1 invalid" in str(report)


def test_strict_raises_at_the_first_problem_naming_it():
    reader = keytrail.read(b'[{"eventTime":"x","eventName":"X"}]', strict=True)
    with pytest.raises(Exception, match=r"<bytes 0>: record 0"):
        reader.read_all()


def test_inputs_that_are_not_there_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no-such-dir"):
        keytrail.read(tmp_path / "no-such-dir")
    (tmp_path / "a.json").write_text('{"eventTime":"2024-05-01T10:00:00Z","eventID":"1","eventName":"X"}')
    reader = keytrail.read([tmp_path / "a.json", tmp_path / "missing.json"])
    assert reader.read_all().num_rows == 1
    assert any("missing.json" in p for p in keytrail.report(reader).problems)
    with pytest.raises(ValueError):
        keytrail.report(pa.RecordBatchReader.from_batches(keytrail.schema(), []))


def test_the_report_is_live_until_the_reader_is_exhausted():
    reader = keytrail.read(INVICTUS, batch_rows=100, threads=2)
    report = keytrail.report(reader)
    reader.read_next_batch()
    assert not report.finished
    reader.read_all()
    assert report.finished and report.rows == 2900


def test_other_python_threads_run_while_a_reader_parses(tmp_path):
    """The GIL is released while batches are parsed: a pure-Python loop in another thread keeps
    going (with the GIL held, it would stop until the read ends)."""
    import threading
    import time

    run_cli("gen", tmp_path / "logs", "--events", 20000, "--seed", 3, "-q")

    def spin(seconds):
        count, end = 0, time.perf_counter() + seconds
        while time.perf_counter() < end:
            count += 1
        return count

    alone = spin(0.5) / 0.5
    done = threading.Event()
    result = {}

    def consume():
        started = time.perf_counter()
        result["rows"] = keytrail.read(tmp_path / "logs", threads=2).read_all().num_rows
        result["seconds"] = time.perf_counter() - started
        done.set()

    reader_thread = threading.Thread(target=consume)
    count, started = 0, time.perf_counter()
    reader_thread.start()
    while not done.is_set():
        count += 1
    elapsed = time.perf_counter() - started
    reader_thread.join()
    assert result["rows"] == 20000
    # Far above what the interpreter's switch interval would allow with the GIL held throughout.
    assert count / elapsed > 0.05 * alone, (count, elapsed, alone, result)


@pytest.mark.skipif("AWS_ENDPOINT_URL" not in os.environ, reason="needs the test S3 server (tests/python.rs starts it)")
def test_s3_urls_read_what_the_local_files_hold():
    reader = keytrail.read("s3://trail-logs/AWSLogs/", threads=2)
    from_s3 = rows(reader.read_all())
    report = keytrail.report(reader)
    assert report.files_read == int(os.environ["KEYTRAIL_TEST_S3_OBJECTS"])
    assert from_s3 == rows(keytrail.read(INVICTUS).read_all())
    assert len(from_s3) == 2900
    with pytest.raises(FileNotFoundError, match="no-such-prefix"):
        keytrail.read("s3://trail-logs/no-such-prefix/")
