//! Table definitions of a dataset, generated from the schema file: Athena, Spark SQL and Arrow
//! JSON.

use arrow::datatypes::DataType;

use super::{PartitionKey, Partitioning};
use crate::schema::{Column, ColumnType, Schema, StructField};

/// The SQL type Athena (Hive DDL) and Spark use for a column.
pub fn hive_type(ty: ColumnType, fields: &[StructField]) -> String {
    match ty {
        ColumnType::Utf8 | ColumnType::Json => "string".into(),
        ColumnType::Bool => "boolean".into(),
        ColumnType::Int32 => "int".into(),
        ColumnType::Int64 => "bigint".into(),
        ColumnType::Float64 => "double".into(),
        ColumnType::Timestamp => "timestamp".into(),
        ColumnType::Map => "map<string,string>".into(),
        ColumnType::ListUtf8 => "array<string>".into(),
        ColumnType::ListStruct => format!(
            "array<struct<{}>>",
            fields
                .iter()
                .map(|f| format!("{}:{}", f.name, hive_type(f.ty, &[])))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\\', "\\\\").replace('\'', "\\'"))
}

fn column_lines(schema: &Schema, separator: &str) -> String {
    schema
        .columns()
        .iter()
        .map(|c: &Column| {
            format!(
                "  `{}` {} COMMENT {}",
                c.name,
                hive_type(c.ty, &c.fields),
                quote(&c.description)
            )
        })
        .collect::<Vec<_>>()
        .join(separator)
}

fn with_slash(location: &str) -> String {
    if location.ends_with('/') {
        location.to_string()
    } else {
        format!("{location}/")
    }
}

/// Athena's projection of a zero-padded integer partition (year, month, day).
fn integer_projection(range: &str, digits: u8) -> Vec<(String, String)> {
    vec![
        ("type".into(), "integer".into()),
        ("range".into(), range.into()),
        ("digits".into(), digits.to_string()),
    ]
}

/// Athena `CREATE EXTERNAL TABLE` with partition projection, so no `MSCK REPAIR` is needed.
pub fn athena(schema: &Schema, table: &str, location: &str, partitioning: &Partitioning) -> String {
    let location = with_slash(location);
    let partitions: Vec<String> = partitioning
        .keys()
        .iter()
        .map(|k| format!("  `{}` string", k.column_name()))
        .collect();
    let mut properties = vec![
        "'parquet.compression'='ZSTD'".to_string(),
        format!("'keytrail.schema_version'='{}'", schema.version()),
    ];
    if !partitioning.keys().is_empty() {
        properties.push("'projection.enabled'='true'".into());
        for key in partitioning.keys() {
            let name = key.column_name();
            let settings: Vec<(String, String)> = match key {
                PartitionKey::Date => vec![
                    ("type".into(), "date".into()),
                    ("format".into(), "yyyy-MM-dd".into()),
                    ("range".into(), "2013-01-01,NOW".into()),
                    ("interval".into(), "1".into()),
                    ("interval.unit".into(), "DAYS".into()),
                ],
                PartitionKey::Year => integer_projection("2013,2100", 4),
                PartitionKey::Month => integer_projection("1,12", 2),
                PartitionKey::Day => integer_projection("1,31", 2),
                PartitionKey::Region => vec![
                    ("type".into(), "enum".into()),
                    ("values".into(), AWS_REGIONS.join(",")),
                ],
                // Account ids and services are open-ended: queries name them in WHERE.
                PartitionKey::Account | PartitionKey::Service => vec![("type".into(), "injected".into())],
            };
            for (setting, value) in settings {
                properties.push(format!("'projection.{name}.{setting}'={}", quote(&value)));
            }
        }
        let template: Vec<String> = partitioning
            .keys()
            .iter()
            .map(|k| format!("{0}=${{{0}}}", k.column_name()))
            .collect();
        properties.push(format!(
            "'storage.location.template'={}",
            quote(&format!("{location}{}/", template.join("/")))
        ));
    }
    let partitioned = if partitions.is_empty() {
        String::new()
    } else {
        format!("PARTITIONED BY (\n{}\n)\n", partitions.join(",\n"))
    };
    format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{table}` (\n{}\n)\n{partitioned}STORED AS PARQUET\nLOCATION {}\nTBLPROPERTIES (\n  {}\n);\n",
        column_lines(schema, ",\n"),
        quote(&location),
        properties.join(",\n  ")
    )
}

/// Spark SQL `CREATE TABLE ... USING parquet` over the dataset, then partition discovery.
pub fn spark(schema: &Schema, table: &str, location: &str, partitioning: &Partitioning) -> String {
    let mut columns = column_lines(schema, ",\n");
    for key in partitioning.keys() {
        columns.push_str(&format!(
            ",\n  `{}` string COMMENT 'partition column'",
            key.column_name()
        ));
    }
    let partitioned = if partitioning.keys().is_empty() {
        String::new()
    } else {
        format!(
            "PARTITIONED BY ({})\n",
            partitioning
                .keys()
                .iter()
                .map(|k| format!("`{}`", k.column_name()))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let repair = if partitioning.keys().is_empty() {
        String::new()
    } else {
        format!("MSCK REPAIR TABLE `{table}`;\n")
    };
    format!(
        "CREATE TABLE IF NOT EXISTS `{table}` (\n{columns}\n)\nUSING parquet\n{partitioned}LOCATION {};\n{repair}",
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

/// Regions for Athena's enum projection of the `region` partition.
pub const AWS_REGIONS: &[&str] = &[
    "af-south-1",
    "ap-east-1",
    "ap-east-2",
    "ap-northeast-1",
    "ap-northeast-2",
    "ap-northeast-3",
    "ap-south-1",
    "ap-south-2",
    "ap-southeast-1",
    "ap-southeast-2",
    "ap-southeast-3",
    "ap-southeast-4",
    "ap-southeast-5",
    "ap-southeast-7",
    "ca-central-1",
    "ca-west-1",
    "cn-north-1",
    "cn-northwest-1",
    "eu-central-1",
    "eu-central-2",
    "eu-north-1",
    "eu-south-1",
    "eu-south-2",
    "eu-west-1",
    "eu-west-2",
    "eu-west-3",
    "il-central-1",
    "me-central-1",
    "me-south-1",
    "mx-central-1",
    "sa-east-1",
    "us-east-1",
    "us-east-2",
    "us-gov-east-1",
    "us-gov-west-1",
    "us-west-1",
    "us-west-2",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn athena_ddl_projects_partitions() {
        let ddl = athena(
            Schema::builtin(),
            "cloudtrail",
            "s3://bucket/prefix",
            &Partitioning::default(),
        );
        assert!(ddl.starts_with(
            "CREATE EXTERNAL TABLE IF NOT EXISTS `cloudtrail` (\n  `event_time` timestamp COMMENT"
        ));
        assert!(ddl.contains("`encryption_context` map<string,string>"));
        assert!(ddl.contains("`resources` array<struct<arn:string,account_id:string,resource_type:string>>"));
        assert!(ddl.contains("PARTITIONED BY (\n  `region` string,\n  `event_date` string\n)"));
        assert!(ddl.contains("'projection.event_date.format'='yyyy-MM-dd'"));
        assert!(ddl.contains(
            "'storage.location.template'='s3://bucket/prefix/region=${region}/event_date=${event_date}/'"
        ));
        assert!(ddl.contains("COMMENT 'Whether the operation only reads (JSON true or \"true\").'"));
        let spark_ddl = spark(Schema::builtin(), "events", "/data/ds", &Partitioning::default());
        assert!(spark_ddl.contains("USING parquet\nPARTITIONED BY (`region`, `event_date`)\nLOCATION '/data/ds';\nMSCK REPAIR TABLE `events`;"));
        let json: serde_json::Value =
            serde_json::from_str(&arrow_json(Schema::builtin(), &Partitioning::default())).unwrap();
        assert_eq!(json["fields"][0]["type"], "Timestamp(µs, \"UTC\")");
        assert_eq!(json["partition_columns"][1]["name"], "event_date");
    }
}
