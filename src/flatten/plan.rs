//! The schema compiled into lookups: which top-level keys matter, how each column finds its
//! value, and which parts of an event are walked to find unmapped fields.

use std::collections::HashMap;

use arrow::datatypes::SchemaRef;

use super::builders::ColumnBuilder;
use super::derive::{KmsPaths, Rule};
use super::paths::Node;
use crate::schema::{ColumnType, Schema, Scope, StructField};

/// Looked up for every top-level member of every event, so the hash must be fast on short keys
/// (xxh3's streaming hasher, used through `Hasher`, was 1.2 % of a conversion); the map holds
/// only the schema's keys and never grows with input, so a keyed (SipHash) hash protects nothing.
type KeyMap = HashMap<String, usize, foldhash::fast::FixedState>;

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
    /// The schema's paths under this member: what the walk resolves and which keys are known.
    pub node: Node,
}

/// A compiled JSON path: a top-level slot and the keys below it.
#[derive(Debug, Clone)]
pub(crate) struct PathSpec {
    pub slot: usize,
    /// The tree's hop for each key below the slot (see [`super::paths::Resolved`]).
    pub hops: Vec<usize>,
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
    /// Hops in all slots' trees: the size of an event's [`super::paths::Resolved`].
    pub hops: usize,
}

/// Used while compiling: registers slots and paths.
pub(crate) struct PlanBuilder {
    slots: Vec<SlotInfo>,
    slot_by_key: KeyMap,
    hops: usize,
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
                node: Node::default(),
            });
            self.slots.len() - 1
        });
        let info = &mut self.slots[slot];
        info.parse = info.parse.max(parse);
        let mut hops = Vec::new();
        let mut node = &mut info.node;
        for key in parts {
            let (hop, child) = node.child_mut(key, &mut self.hops);
            hops.push(hop);
            node = child;
        }
        PathSpec {
            slot,
            hops,
            text: text.to_string(),
        }
    }

    /// Marks `path` as read by an every-event column, so the walk does not report it unknown.
    fn mark_known(&mut self, path: &PathSpec) {
        let mut node = &mut self.slots[path.slot].node;
        for key in path.text.split('.').skip(1) {
            node.mark_known();
            node = node.child_mut(key, &mut self.hops).1;
        }
        node.keep_whole();
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
            hops: 0,
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
                builder.slots[spec.slot].node.keep_whole();
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
            if slot.parse == Parse::Always && !slot.node.is_known() {
                slot.node.keep_whole();
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
            hops: builder.hops,
        })
    }

    pub(crate) fn new_builders(&self) -> Vec<ColumnBuilder> {
        self.columns
            .iter()
            .map(|c| ColumnBuilder::new(c.ty, &c.fields, 1024))
            .collect()
    }
}
