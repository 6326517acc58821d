#!/usr/bin/env python3
"""Reads a keytrail Delta table with the deltalake package, and its live files (as listed by
check_delta_log.py from the log) with pyarrow, DuckDB and PySpark; fails loudly on any
disagreement.

usage: check_readers.py TABLE --files LIST --rows N --event ID --micros T --warehouse DIR
                        [--old-version V --old-rows M]

Checks, for each reader: the row count keytrail reported, the partition columns (from the log
for deltalake, from the Hive directories for the others), event_time read as a timestamp with the
right instant (event ID must be at T microseconds since the epoch), encryption_context as a map,
resources as a list of structs, read_only as a boolean; for Spark also that the default
case-insensitive analyzer raises no duplicate-column error; with --old-version, that deltalake
still reads M rows at version V (time travel across an overwrite). (Spark's and DuckDB's own Delta
readers need connector jars and extensions downloaded at run time, which CI cannot do.)
"""
import argparse
import sys

failures = []


def check(reader, condition, message):
    status = "ok  " if condition else "FAIL"
    print(f"{status} {reader}: {message}")
    if not condition:
        failures.append(f"{reader}: {message}")


def live_files(args):
    with open(args.files, encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def check_arrow_table(reader, table, args):
    import pyarrow as pa
    import pyarrow.compute as pc

    schema = table.schema
    check(reader, table.num_rows == args.rows, f"{table.num_rows} rows (expected {args.rows})")
    for column in args.partitions:
        check(reader, column in schema.names, f"partition column {column} present")
    check(reader, schema.field("event_time").type == pa.timestamp("us", tz="UTC"),
          f"event_time is {schema.field('event_time').type}")
    check(reader, pa.types.is_map(schema.field("encryption_context").type),
          f"encryption_context is {schema.field('encryption_context').type}")
    resources = schema.field("resources").type
    check(reader, pa.types.is_list(resources) and pa.types.is_struct(resources.value_type),
          f"resources is {resources}")
    check(reader, schema.field("read_only").type == pa.bool_(), f"read_only is {schema.field('read_only').type}")
    row = table.filter(pc.equal(table["event_id"], args.event))
    micros = row["event_time"].cast(pa.int64()).to_pylist()
    check(reader, micros == [args.micros], f"event {args.event} at {micros} µs (expected {args.micros})")


def check_deltalake(args):
    from deltalake import DeltaTable

    table = DeltaTable(args.dataset)
    check("deltalake", table.metadata().partition_columns == args.partitions,
          f"partitioned by {table.metadata().partition_columns}")
    check("deltalake", table.metadata().configuration.get("keytrail.schemaVersion") is not None,
          "the schema version is a table property")
    check_arrow_table("deltalake", table.to_pyarrow_table(), args)
    if args.old_version is not None:
        old = DeltaTable(args.dataset, version=args.old_version).to_pyarrow_table()
        check("deltalake", old.num_rows == args.old_rows,
              f"version {args.old_version} (before the overwrite) still has {old.num_rows} rows (expected {args.old_rows})")
    import pyarrow.compute as pc

    everything = table.to_pyarrow_table()
    expected = everything.filter(pc.equal(everything["region"], "us-east-1")).num_rows
    one_partition = table.to_pyarrow_table(partitions=[("region", "=", "us-east-1")])
    check("deltalake", 0 < one_partition.num_rows == expected,
          f"{one_partition.num_rows} rows in region us-east-1 through a partition filter from the log (expected {expected})")


def check_pyarrow(args):
    import pyarrow.dataset as ds

    dataset = ds.dataset(live_files(args), format="parquet",
                         partitioning=ds.HivePartitioning.discover(), partition_base_dir=args.dataset)
    table = dataset.to_table()
    check_arrow_table("pyarrow", table, args)


def check_duckdb(args):
    import duckdb

    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    files = ", ".join("'" + f.replace("'", "''") + "'" for f in live_files(args))
    con.execute(f"CREATE VIEW events AS SELECT * FROM read_parquet([{files}], hive_partitioning = true)")
    rows = con.execute("SELECT count(*) FROM events").fetchone()[0]
    check("duckdb", rows == args.rows, f"{rows} rows (expected {args.rows})")
    columns = [r[0] for r in con.execute("DESCRIBE events").fetchall()]
    for column in args.partitions:
        check("duckdb", column in columns, f"partition column {column} discovered")
    types = con.execute(
        "SELECT typeof(event_time), typeof(encryption_context), typeof(resources), typeof(read_only) FROM events LIMIT 1"
    ).fetchone()
    check("duckdb", types[0] == "TIMESTAMP WITH TIME ZONE", f"event_time is {types[0]}")
    check("duckdb", types[1].startswith("MAP("), f"encryption_context is {types[1]}")
    check("duckdb", types[2].startswith("STRUCT(") and types[2].endswith("[]"), f"resources is {types[2]}")
    check("duckdb", types[3] == "BOOLEAN", f"read_only is {types[3]}")
    micros = con.execute("SELECT epoch_us(event_time) FROM events WHERE event_id = ?", [args.event]).fetchall()
    check("duckdb", micros == [(args.micros,)], f"event {args.event} at {micros} µs (expected {args.micros})")


def check_spark(args):
    from pyspark.sql import SparkSession

    spark = (
        SparkSession.builder.master("local[1]")
        .appName("keytrail-interop")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.sql.warehouse.dir", args.warehouse)
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    try:
        check("spark", spark.conf.get("spark.sql.caseSensitive") == "false", "default case-insensitive analyzer")
        frame = spark.read.option("basePath", args.dataset).parquet(*live_files(args))
        rows = frame.count()
        check("spark", rows == args.rows, f"{rows} rows (expected {args.rows})")
        types = dict(frame.dtypes)
        for column in args.partitions:
            check("spark", column in types, f"partition column {column} discovered")
        check("spark", types.get("event_time") == "timestamp", f"event_time is {types.get('event_time')}")
        check("spark", types.get("encryption_context") == "map<string,string>",
              f"encryption_context is {types.get('encryption_context')}")
        check("spark", str(types.get("resources", "")).startswith("array<struct<"), f"resources is {types.get('resources')}")
        check("spark", types.get("read_only") == "boolean", f"read_only is {types.get('read_only')}")
        micros = [
            r[0]
            for r in frame.where(frame.event_id == args.event).selectExpr("unix_micros(event_time)").collect()
        ]
        check("spark", micros == [args.micros], f"event {args.event} at {micros} µs (expected {args.micros})")
        kms = frame.where("event_source = 'kms.amazonaws.com' AND encryption_context IS NOT NULL").count()
        check("spark", kms > 0, f"{kms} KMS rows with an encryption context")
    finally:
        spark.stop()


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("dataset")
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--event", required=True)
    parser.add_argument("--micros", type=int, required=True)
    parser.add_argument("--files", required=True)
    parser.add_argument("--old-version", type=int)
    parser.add_argument("--old-rows", type=int)
    parser.add_argument("--warehouse", required=True)
    parser.add_argument("--partitions", nargs="+", default=["region", "event_date"])
    args = parser.parse_args()
    for reader in (check_deltalake, check_pyarrow, check_duckdb, check_spark):
        try:
            reader(args)
        except Exception as error:  # a reader that cannot read the data at all is a failure too
            check(reader.__name__.removeprefix("check_"), False, f"raised {type(error).__name__}: {error}")
    print(f"interop: {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
