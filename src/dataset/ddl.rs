//! Table definitions of a dataset: Athena and Spark SQL statements over the Delta table, and the
//! Arrow schema as JSON (generated from the schema file).

use arrow::datatypes::DataType;

use super::Partitioning;
use crate::schema::Schema;

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn with_slash(location: &str) -> String {
    if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    }
}

/// Athena `CREATE EXTERNAL TABLE` over the Delta table: Athena reads the columns, partitions
/// and current files from the Delta log, so the statement names none of them.
pub fn athena(schema: &Schema, table: &str, location: &str) -> String {
    format!(
        "-- {} schema version {}: the columns, partitions and files come from the Delta log.\nCREATE EXTERNAL TABLE IF NOT EXISTS `{table}`\nLOCATION {}\nTBLPROPERTIES ('table_type'='DELTA');\n",
        schema.name(),
        schema.version(),
        quote(&with_slash(location))
    )
}

/// Spark SQL `CREATE TABLE ... USING delta` over the table (Delta Lake's Spark connector reads
/// the schema and partitioning from the log).
pub fn spark(schema: &Schema, table: &str, location: &str) -> String {
    format!(
        "-- {} schema version {}: the columns and partitions come from the Delta log.\nCREATE TABLE IF NOT EXISTS `{table}`\nUSING delta\nLOCATION {};\n",
        schema.name(),
        schema.version(),
        quote(location)
    )
}

/// The Arrow schema as JSON (with descriptions and partition columns).
pub fn arrow_json(schema: &Schema, partitioning: &Partitioning) -> String {
    fn type_json(data_type: &DataType) -> serde_json::Value {
        match data_type {
            DataType::List(field) => {
                serde_json::json!({"list": field_json(field.name(), field.data_type(), field.is_nullable())})
            }
            DataType::Map(field, _) => {
                serde_json::json!({"map": field_json(field.name(), field.data_type(), field.is_nullable())})
            }
            DataType::Struct(fields) => serde_json::json!({"struct": fields
                .iter()
                .map(|f| field_json(f.name(), f.data_type(), f.is_nullable()))
                .collect::<Vec<_>>()}),
            other => serde_json::json!(other.to_string()),
        }
    }
    fn field_json(name: &str, data_type: &DataType, nullable: bool) -> serde_json::Value {
        serde_json::json!({"name": name, "type": type_json(data_type), "nullable": nullable})
    }
    let arrow = schema.arrow_schema();
    let fields: Vec<serde_json::Value> = arrow
        .fields()
        .iter()
        .zip(schema.columns())
        .map(|(f, c)| {
            let mut value = field_json(f.name(), f.data_type(), f.is_nullable());
            value["description"] = serde_json::json!(c.description);
            value
        })
        .collect();
    let document = serde_json::json!({
        "schema": schema.name(),
        "version": schema.version(),
        "fields": fields,
        "partition_columns": partitioning.keys().iter().map(|k| serde_json::json!({"name": k.column_name(), "type": "Utf8"})).collect::<Vec<_>>(),
    });
    serde_json::to_string_pretty(&document).expect("serializes") + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn athena_and_spark_read_the_delta_log() {
        let ddl = athena(Schema::builtin(), "cloudtrail", "s3://bucket/prefix");
        assert!(ddl.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `cloudtrail`\nLOCATION 's3://bucket/prefix/'\nTBLPROPERTIES ('table_type'='DELTA');"));
        assert!(
            !ddl.contains("PARTITIONED BY"),
            "Athena takes the partitions from the log"
        );
        let spark_ddl = spark(Schema::builtin(), "events", "/data/ds");
        assert!(spark_ddl.contains("CREATE TABLE IF NOT EXISTS `events`\nUSING delta\nLOCATION '/data/ds';"));
        let json: serde_json::Value =
            serde_json::from_str(&arrow_json(Schema::builtin(), &Partitioning::default())).unwrap();
        assert_eq!(json["fields"][0]["type"], "Timestamp(µs, \"UTC\")");
        assert_eq!(json["partition_columns"][1]["name"], "event_date");
    }
}
