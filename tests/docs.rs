//! The README's schema table is generated from schemas/: it must never go stale.
//! Run `KEYTRAIL_UPDATE_README=1 cargo test --test docs` to regenerate it.

use keytrail::schema::{Schema, docs};

const START: &str = "<!-- schema-table:start -->\n";
const END: &str = "<!-- schema-table:end -->";

#[test]
fn readme_schema_table_matches_the_schema_file() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/README.md");
    let readme = std::fs::read_to_string(path).expect("README.md");
    let start = readme
        .find(START)
        .expect("README has the schema-table start marker")
        + START.len();
    let end = readme.find(END).expect("README has the schema-table end marker");
    let expected = docs::markdown_table(Schema::builtin());
    if readme[start..end] != expected {
        if std::env::var_os("KEYTRAIL_UPDATE_README").is_some() {
            let updated = format!("{}{}{}", &readme[..start], expected, &readme[end..]);
            std::fs::write(path, updated).expect("write README.md");
            return;
        }
        panic!("README.md's schema table is stale: run `KEYTRAIL_UPDATE_README=1 cargo test --test docs`");
    }
}

#[test]
fn every_derive_rule_is_used_and_every_required_column_exists() {
    let schema = Schema::builtin();
    for (name, _) in keytrail::flatten::Rule::ALL {
        assert!(
            schema
                .columns()
                .iter()
                .any(|c| c.derive.as_deref() == Some(*name)),
            "derive rule `{name}` is implemented but no column uses it"
        );
    }
    // Names other parts of the product and users rely on.
    for required in [
        "event_time",
        "event_name",
        "event_source",
        "aws_region",
        "event_id",
        "request_id",
        "recipient_account_id",
        "read_only",
        "error_code",
        "error_message",
        "user_identity_type",
        "user_identity_arn",
        "source_ip_address",
        "user_agent",
        "resources",
        "kms_key_arn",
        "kms_key_id",
        "encryption_context",
        "request_parameters",
        "response_elements",
        "additional_event_data",
        "unmapped",
    ] {
        assert!(
            schema.index_of(required).is_some(),
            "column `{required}` is missing"
        );
    }
    // Code and file agree: the flattener builds exactly the file's Arrow schema.
    let batch = keytrail::flatten::Flattener::new().finish_batch().unwrap();
    assert_eq!(batch.schema(), schema.arrow_schema());
}
