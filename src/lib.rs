//! keytrail turns AWS CloudTrail logs, with first-class care for KMS key events, into
//! Hive-partitioned Parquet.
//!
//! The data path: [`read`] finds inputs and splits them into records, [`flatten`] turns records
//! into Arrow batches following the [`schema`], [`write`] partitions, sorts and writes Parquet
//! into a [`dataset`] (what a table is: layout, commits, manifest, quarantine), which [`sql`]
//! queries; [`convert`] runs the whole job on all cores, and [`operations`] compacts, vacuums and
//! describes a table. [`store`] reads and writes `s3://`
//! locations; [`cli`] is the only module that knows about the command line.
//!
//! Dependencies point one way: `schema` ← `dataset` ← `store` ← `read` ← `flatten`; `write` uses
//! `dataset` and `schema`; `convert` uses all of those, and `operations` uses `dataset`, `write`
//! and `store`; `sql` uses `dataset`, `schema` and
//! `store`; `cli` uses everything.
//!
//! Cargo features: `sql` (DataFusion; [`sql`]) and `cli` (the command line, with `sql`) are on by
//! default; with `default-features = false` the crate is the core that reads, flattens and
//! writes, without DataFusion.

#[cfg(feature = "cli")]
pub mod cli;
pub mod convert;
pub mod dataset;
pub mod flatten;
pub mod operations;
pub mod read;
pub mod schema;
#[cfg(feature = "sql")]
pub mod sql;
pub mod store;
mod sync;
pub mod synth;
pub mod write;
