"""Shared fixtures: the keytrail CLI (its output is what the package is checked against), the
repository's real fixtures, and a Spark session in local mode."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data"


def keytrail_bin() -> str:
    binary = os.environ.get("KEYTRAIL_BIN")
    if not binary:
        pytest.fail("KEYTRAIL_BIN must name the keytrail binary (tests/python.rs sets it)")
    return binary


def run_cli(*args, ok=(0,)):
    done = subprocess.run([keytrail_bin(), *map(str, args)], capture_output=True, text=True)
    assert done.returncode in ok, f"keytrail {' '.join(map(str, args))}: exit {done.returncode}\n{done.stderr}"
    return done


def convert_with_cli(inputs, out: Path, *extra):
    """Converts with the CLI; returns its JSON summary."""
    done = run_cli("convert", *inputs, "--output", out, "--json", "-q", *extra, ok=(0, 3))
    return json.loads(done.stdout)


def cli_table(out: Path) -> pa.Table:
    """The CLI's table as the Delta reader of the Python ecosystem reads it (partition columns
    included)."""
    from deltalake import DeltaTable

    return DeltaTable(str(out)).to_pyarrow_table()


def rows(table: pa.Table):
    """The rows as comparable values, in one order that does not depend on how they were read."""
    listed = table.to_pylist()
    return sorted(listed, key=lambda row: json.dumps(row, sort_keys=True, default=repr))


@pytest.fixture(scope="session")
def spark(tmp_path_factory):
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    from pyspark.sql import SparkSession

    warehouse = tmp_path_factory.mktemp("spark-warehouse")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("keytrail-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", str(warehouse))
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
