//! The schema compiled into lookups: which top-level keys matter, how each column finds its
//! value, and which parts of an event are walked to find unmapped fields.

use std::collections::HashMap;

use super::unmapped::Unmapped;
use arrow::datatypes::SchemaRef;

use super::builders::ColumnBuilder;
use super::derive::{KmsPaths, Rule};
use crate::read::json::Json;
use crate::schema::{ColumnType, Schema, Scope, StructField};

/// Looked up for every top-level member of every event, so the hash must be fast; the map holds
/// only the schema's keys and never grows with input, so a keyed (SipHash) hash protects nothing.
type KeyMap = HashMap<String, usize, xxhash_rust::xxh3::Xxh3DefaultBuilder>;

/// When a top-level member must be parsed (into a borrowed `Json` tree).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Parse {
    /// Never: it is only copied as JSON text.
    Never,
    /// For KMS events only: KMS columns look inside it.
    Kms,
    /// For every event.
    Always,
}

pub(crate) struct SlotInfo {
    pub key: String,
    pub parse: Parse,
    /// The known structure under this member, used to find unknown keys.
    pub node: Option<Node>,
}

/// Known keys below a JSON path. `whole` marks a subtree a column keeps in full.
#[derive(Debug, Default)]
pub(crate) struct Node {
    children: Vec<(String, Node)>,
    whole: bool,
}

impl Node {
    fn child_mut(&mut self, key: &str) -> &mut Node {
        let at = match self.children.iter().position(|(k, _)| k == key) {
            Some(at) => at,
            None => {
                self.children.push((key.to_string(), Node::default()));
                self.children.len() - 1
            }
        };
        &mut self.children[at].1
    }

    /// Records every key under `value` that no column reads (nor keeps whole) into `unmapped`.
    /// `path` is the value's path; it is extended while descending and restored on return.
    pub(crate) fn collect_unknown(&self, value: &Json<'_>, path: &mut String, unmapped: &mut Unmapped) {
        if self.whole || value.is_null() {
            return;
        }
        let Json::Object(object) = value else {
            // A container the schema walks arrived as a scalar or array: keep it as it came.
            unmapped.insert(path.clone(), value);
            return;
        };
        if object.is_empty() && !self.children.is_empty() {
            // Present but empty (`sessionIssuer: {}`, `webIdFederationData: {}`): no typed column
            // can say so, and absent is not the same.
            unmapped.insert_empty_object(path.clone());
            return;
        }
        let parent = path.len();
        for (key, child_value) in object {
            match self.children.iter().find(|(k, _)| k == key) {
                // Known leaves kept whole need no path: only build one to descend or to report.
                Some((_, child)) if child.whole || child_value.is_null() => continue,
                Some((_, child)) => {
                    push_key(path, key);
                    child.collect_unknown(child_value, path, unmapped);
                }
                None => {
                    push_key(path, key);
                    unmapped.insert(path.clone(), child_value);
                }
            }
            path.truncate(parent);
        }
    }
}

fn push_key(path: &mut String, key: &str) {
    path.push('.');
    path.push_str(key);
}

/// A compiled JSON path: a top-level slot and the keys below it.
#[derive(Debug, Clone)]
pub(crate) struct PathSpec {
    pub slot: usize,
    pub rest: Vec<String>,
    pub text: String,
}

impl PathSpec {
    /// The path text with the key at `depth` (below the slot) spelled as `actual`.
    pub(crate) fn variant_text(&self, depth: usize, actual: &str) -> String {
        let mut parts: Vec<&str> = self.text.split('.').take(depth + 1).collect();
        parts.push(actual);
        parts.join(".")
    }
}

pub(crate) enum Source {
    EventTime,
    /// A top-level member copied as JSON text.
    RawJson(usize),
    Paths(Vec<PathSpec>),
    Derive(Rule),
}

pub(crate) struct StructFieldPlan {
    pub keys: Vec<String>,
}

pub(crate) struct ColumnPlan {
    pub source: Source,
    pub kms_only: bool,
    pub struct_fields: Option<Vec<StructFieldPlan>>,
    pub ty: ColumnType,
    fields: Vec<StructField>,
}

pub(crate) struct Plan {
    pub arrow: SchemaRef,
    pub slots: Vec<SlotInfo>,
    pub slot_by_key: KeyMap,
    pub slot_by_lower: KeyMap,
    pub columns: Vec<ColumnPlan>,
    pub event_time: PathSpec,
    pub event_source: PathSpec,
    pub kms: KmsPaths,
}

/// Used while compiling: registers slots and paths.
pub(crate) struct PlanBuilder {
    slots: Vec<SlotInfo>,
    slot_by_key: KeyMap,
}

impl PlanBuilder {
    /// Compiles a dotted path, registering its top-level key and when it must be parsed.
    pub(crate) fn path(&mut self, text: &str, parse: Parse) -> PathSpec {
        let mut parts = text.split('.');
        let top = parts.next().unwrap_or_default();
        let slot = *self.slot_by_key.entry(top.to_string()).or_insert_with(|| {
            self.slots.push(SlotInfo {
                key: top.to_string(),
                parse: Parse::Never,
                node: None,
            });
            self.slots.len() - 1
        });
        let rest: Vec<String> = parts.map(str::to_string).collect();
        let info = &mut self.slots[slot];
        info.parse = info.parse.max(parse);
        PathSpec {
            slot,
            rest,
            text: text.to_string(),
        }
    }

    /// Marks `path` as read by an every-event column, so the walk does not report it unknown.
    fn mark_known(&mut self, path: &PathSpec) {
        let node = self.slots[path.slot].node.get_or_insert_with(Node::default);
        let leaf = path.rest.iter().fold(node, |n, k| n.child_mut(k));
        leaf.whole = true;
    }
}

/// A schema the flattener cannot follow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("column `{column}`: unknown derive rule `{rule}`")]
    UnknownRule { column: String, rule: String },
    #[error("the `unmapped` column must be the last column")]
    UnmappedNotLast,
    #[error("column `{0}`: derived KMS columns need scope = \"kms\"")]
    DerivedNotKms(String),
    #[error("event_time must read exactly one path")]
    EventTimePaths,
}

impl Plan {
    pub(crate) fn compile(schema: &Schema) -> Result<Plan, PlanError> {
        let mut builder = PlanBuilder {
            slots: Vec::new(),
            slot_by_key: KeyMap::default(),
        };
        let mut columns = Vec::with_capacity(schema.columns().len());
        let last = schema.columns().len().saturating_sub(1);
        for (i, column) in schema.columns().iter().enumerate() {
            let kms_only = column.scope == Scope::Kms;
            let source = if let Some(name) = &column.derive {
                let rule = Rule::from_name(name).ok_or_else(|| PlanError::UnknownRule {
                    column: column.name.clone(),
                    rule: name.clone(),
                })?;
                if rule == Rule::Unmapped && i != last {
                    return Err(PlanError::UnmappedNotLast);
                }
                if rule != Rule::Unmapped && !kms_only {
                    return Err(PlanError::DerivedNotKms(column.name.clone()));
                }
                Source::Derive(rule)
            } else if i == 0 {
                Source::EventTime
            } else if column.ty == ColumnType::Json && column.from.len() == 1 && !column.from[0].contains('.')
            {
                let spec = builder.path(&column.from[0], Parse::Never);
                builder.slots[spec.slot]
                    .node
                    .get_or_insert_with(Node::default)
                    .whole = true;
                Source::RawJson(spec.slot)
            } else {
                let parse = if kms_only { Parse::Kms } else { Parse::Always };
                let specs: Vec<PathSpec> = column.from.iter().map(|p| builder.path(p, parse)).collect();
                if !kms_only {
                    specs.iter().for_each(|s| builder.mark_known(s));
                }
                Source::Paths(specs)
            };
            let struct_fields = (column.ty == ColumnType::ListStruct).then(|| {
                column
                    .fields
                    .iter()
                    .map(|f| StructFieldPlan { keys: f.from.clone() })
                    .collect()
            });
            columns.push(ColumnPlan {
                source,
                kms_only,
                struct_fields,
                ty: column.ty,
                fields: column.fields.clone(),
            });
        }
        let event_time = match schema.columns().first() {
            Some(c) if c.from.len() == 1 => builder.path(&c.from[0], Parse::Always),
            _ => return Err(PlanError::EventTimePaths),
        };
        let event_source = builder.path("eventSource", Parse::Always);
        let kms = KmsPaths::compile(&mut builder);
        // Top-level members an every-event column reads are walked for unknown keys; JSON
        // columns are kept whole.
        for slot in &mut builder.slots {
            if slot.parse == Parse::Always && slot.node.is_none() {
                slot.node = Some(Node {
                    children: Vec::new(),
                    whole: true,
                });
            }
        }
        let slot_by_lower = builder
            .slot_by_key
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), *v))
            .collect();
        Ok(Plan {
            arrow: schema.arrow_schema(),
            slots: builder.slots,
            slot_by_key: builder.slot_by_key,
            slot_by_lower,
            columns,
            event_time,
            event_source,
            kms,
        })
    }

    pub(crate) fn new_builders(&self) -> Vec<ColumnBuilder> {
        self.columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, &c.fields, 1024))
            .collect()
    }
}
