//! Ready-made KMS investigations: the `.sql` files in `queries/`, compiled into the binary.
//!
//! Each file starts with a header:
//!
//! ```sql
//! -- name: key-usage
//! -- description: Who used a KMS key, from where, with which calls
//! -- param: key | required | key id, key ARN, alias name or alias ARN
//! -- param: since | 1970-01-01T00:00:00Z | start of the time window
//! ```
//!
//! and uses `{{param}}` where a value goes; values are inserted as SQL string literals.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use super::SqlError;

/// The query files, in listing order.
const FILES: &[(&str, &str)] = &[
    (
        "queries/key-usage.sql",
        include_str!("../../queries/key-usage.sql"),
    ),
    (
        "queries/principal-activity.sql",
        include_str!("../../queries/principal-activity.sql"),
    ),
    (
        "queries/failed-calls.sql",
        include_str!("../../queries/failed-calls.sql"),
    ),
    (
        "queries/key-changes.sql",
        include_str!("../../queries/key-changes.sql"),
    ),
    (
        "queries/cross-account.sql",
        include_str!("../../queries/cross-account.sql"),
    ),
    (
        "queries/keys-by-context.sql",
        include_str!("../../queries/keys-by-context.sql"),
    ),
];

/// One parameter of a named query.
#[derive(Debug, Clone)]
pub struct Param {
    pub name: String,
    /// `None` when the parameter is required.
    pub default: Option<String>,
    pub description: String,
}

/// A named query.
#[derive(Debug, Clone)]
pub struct NamedQuery {
    pub name: String,
    pub description: String,
    pub params: Vec<Param>,
    pub file: &'static str,
    pub sql: &'static str,
}

/// A named query that cannot be found or run with the parameters given.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    #[error("unknown query `{name}` (known: {known})")]
    Unknown { name: String, known: String },
    #[error("query `{query}` has no parameter `{given}` (it takes: {takes})")]
    NoSuchParam {
        query: String,
        given: String,
        takes: String,
    },
    #[error("query `{query}` needs --param {param}=VALUE ({description})")]
    MissingParam {
        query: String,
        param: String,
        description: String,
    },
    /// A query file shipped with keytrail is malformed (a test reads every one).
    #[error("{file}: {problem}")]
    Malformed { file: &'static str, problem: String },
}

/// Every named query.
pub fn all() -> &'static [NamedQuery] {
    static ALL: OnceLock<Vec<NamedQuery>> = OnceLock::new();
    ALL.get_or_init(|| {
        FILES
            .iter()
            .map(|(file, sql)| parse(file, sql).unwrap_or_else(|e| panic!("{e}")))
            .collect()
    })
}

/// Looks a query up by name.
pub fn find(name: &str) -> Result<&'static NamedQuery, SqlError> {
    all().iter().find(|q| q.name == name).ok_or_else(|| {
        let names: Vec<&str> = all().iter().map(|q| q.name.as_str()).collect();
        SqlError::Query(QueryError::Unknown {
            name: name.to_string(),
            known: names.join(", "),
        })
    })
}

fn parse(file: &'static str, sql: &'static str) -> Result<NamedQuery, QueryError> {
    let malformed = |problem: String| QueryError::Malformed { file, problem };
    let mut name = None;
    let mut description = None;
    let mut params = Vec::new();
    for line in sql.lines().take_while(|l| l.starts_with("--")) {
        let line = line.trim_start_matches('-').trim();
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "name" => name = Some(value.to_string()),
            "description" => description = Some(value.to_string()),
            "param" => {
                let parts: Vec<&str> = value.splitn(3, '|').map(str::trim).collect();
                let [param, default, text] = parts[..] else {
                    return Err(malformed(format!(
                        "param line `{value}` needs `name | default or required | description`"
                    )));
                };
                params.push(Param {
                    name: param.to_string(),
                    default: (default != "required").then(|| default.to_string()),
                    description: text.to_string(),
                });
            }
            _ => {}
        }
    }
    let query = NamedQuery {
        name: name.ok_or_else(|| malformed("missing `-- name:`".into()))?,
        description: description.ok_or_else(|| malformed("missing `-- description:`".into()))?,
        params,
        file,
        sql,
    };
    for placeholder in placeholders(sql) {
        if !query.params.iter().any(|p| p.name == placeholder) {
            return Err(malformed(format!(
                "uses {{{{{placeholder}}}}} but declares no such param"
            )));
        }
    }
    Ok(query)
}

fn placeholders(sql: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = sql;
    while let Some(start) = rest.find("{{") {
        let Some(end) = rest[start..].find("}}") else {
            break;
        };
        found.push(rest[start + 2..start + end].trim().to_string());
        rest = &rest[start + end + 2..];
    }
    found
}

impl NamedQuery {
    /// The SQL with every `{{param}}` replaced by a quoted literal (given value or default).
    pub fn render(&self, values: &BTreeMap<String, String>) -> Result<String, SqlError> {
        for given in values.keys() {
            if !self.params.iter().any(|p| &p.name == given) {
                return Err(SqlError::Query(QueryError::NoSuchParam {
                    query: self.name.clone(),
                    given: given.clone(),
                    takes: self
                        .params
                        .iter()
                        .map(|p| p.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                }));
            }
        }
        let mut sql = self.sql.to_string();
        for param in &self.params {
            let value = values
                .get(&param.name)
                .or(param.default.as_ref())
                .ok_or_else(|| {
                    SqlError::Query(QueryError::MissingParam {
                        query: self.name.clone(),
                        param: param.name.clone(),
                        description: param.description.clone(),
                    })
                })?;
            let literal = format!("'{}'", value.replace('\'', "''"));
            sql = sql.replace(&format!("{{{{{}}}}}", param.name), &literal);
        }
        Ok(sql)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_query_parses_and_renders() {
        assert_eq!(all().len(), FILES.len());
        for query in all() {
            let values: BTreeMap<String, String> = query
                .params
                .iter()
                .filter(|p| p.default.is_none())
                .map(|p| (p.name.clone(), "x'y".to_string()))
                .collect();
            let sql = query.render(&values).unwrap();
            assert!(!sql.contains("{{"), "{}", query.name);
            if !values.is_empty() {
                assert!(sql.contains("'x''y'"), "{}: values are quoted", query.name);
            }
        }
        let usage = find("key-usage").unwrap();
        let missing = usage.render(&BTreeMap::new()).unwrap_err().to_string();
        assert!(missing.contains("--param key=VALUE"), "{missing}");
        assert!(find("nope").unwrap_err().to_string().contains("known: key-usage"));
    }
}
