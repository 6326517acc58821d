"""Converts CloudTrail logs with keytrail on AWS Glue (or any Spark cluster with the keytrail
wheel installed on every node).

Glue job arguments: --source s3://trail-bucket/AWSLogs/ --target s3://lake/cloudtrail
[--format delta] [--partition-by region,date]; the wheel via --additional-python-modules.
"""

import argparse
import sys

from pyspark.sql import SparkSession

import keytrail.spark


def arguments(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", required=True, action="append")
    parser.add_argument("--target", required=True)
    parser.add_argument("--format", default="delta")
    parser.add_argument("--partition-by", default=keytrail.spark.DEFAULT_PARTITIONING)
    parser.add_argument("--quarantine-target")
    # Glue passes arguments of its own (--JOB_NAME, --TempDir, ...): they are not ours.
    known, _ = parser.parse_known_args(argv)
    return known


def main(argv):
    args = arguments(argv)
    spark = SparkSession.builder.appName("keytrail-convert").getOrCreate()
    keytrail.spark.convert(
        spark,
        args.source,
        args.target,
        format=args.format,
        partition_by=args.partition_by,
        quarantine_target=args.quarantine_target,
    )
    spark.stop()


if __name__ == "__main__":
    main(sys.argv[1:])
