//! The schema's paths as one tree per top-level member, and the one walk over an event's parsed
//! member that resolves every path below it and collects the keys no column reads.
//!
//! Each column used to follow its own path from the top (`userIdentity`, then `sessionContext`,
//! then `sessionIssuer`, ...), scanning every object on the way once per column, and a second walk
//! looked for unknown keys. Now one walk visits each object once: every member is matched to the
//! tree's children, the position of each child's member is noted in a [`Resolved`] table, and a
//! column's lookup is an index per level.

use super::unmapped::Unmapped;
use crate::read::json::Json;

/// Known keys below one JSON path, and what the flattener does with them.
#[derive(Debug, Default)]
pub(crate) struct Node {
    children: Vec<Child>,
    /// Read by an every-event column (or on the way to one): keys under it that nothing reads
    /// are collected into `unmapped`. Paths only KMS columns read are not known: their members
    /// are looked up, never reported.
    known: bool,
    /// Kept whole by a column: nothing under it is reported.
    whole: bool,
}

#[derive(Debug)]
struct Child {
    key: String,
    /// Where this child's member is noted in a [`Resolved`] table.
    hop: usize,
    /// Another child has the same key ignoring ASCII case (`arn` and `Arn`): a member matching
    /// this one exactly may still be the other's case variant.
    case_siblings: bool,
    node: Node,
}

impl Node {
    /// Marks this node as read by an every-event column (see [`Node::known`]).
    pub(crate) fn mark_known(&mut self) {
        self.known = true;
    }

    pub(crate) fn keep_whole(&mut self) {
        self.known = true;
        self.whole = true;
    }

    pub(crate) fn is_known(&self) -> bool {
        self.known
    }

    /// The child under `key`, made if missing with the next hop number from `hops`.
    pub(crate) fn child_mut(&mut self, key: &str, hops: &mut usize) -> (usize, &mut Node) {
        let at = match self.children.iter().position(|c| c.key == key) {
            Some(at) => at,
            None => {
                let case_siblings = self.children.iter().any(|c| c.key.eq_ignore_ascii_case(key));
                for sibling in self
                    .children
                    .iter_mut()
                    .filter(|c| c.key.eq_ignore_ascii_case(key))
                {
                    sibling.case_siblings = true;
                }
                self.children.push(Child {
                    key: key.to_string(),
                    hop: *hops,
                    case_siblings,
                    node: Node::default(),
                });
                *hops += 1;
                self.children.len() - 1
            }
        };
        let child = &mut self.children[at];
        (child.hop, &mut child.node)
    }

    /// Resolves every path below this node in `value` into `resolved` and, when `collect`,
    /// records every key under `value` that no every-event column reads (nor keeps whole) into
    /// `unmapped`. `path` is the value's path; it is extended while descending and restored.
    pub(crate) fn walk(
        &self,
        value: &Json<'_>,
        collect: bool,
        path: &mut String,
        resolved: &mut Resolved,
        unmapped: &mut Unmapped,
    ) {
        let collect = collect && self.known && !self.whole && !value.is_null();
        if !collect && self.children.is_empty() {
            return;
        }
        let Json::Object(members) = value else {
            // A container the schema walks arrived as a scalar or array: keep it as it came.
            if collect {
                unmapped.insert(path.clone(), value);
            }
            return;
        };
        if collect && members.is_empty() && self.children.iter().any(|c| c.node.known) {
            // Present but empty (`sessionIssuer: {}`, `webIdFederationData: {}`): no typed column
            // can say so, and absent is not the same.
            unmapped.insert_empty_object(path.clone());
            return;
        }
        let mut variants = false;
        for (index, (key, member)) in members.iter().enumerate() {
            let exact = self.children.iter().find(|c| c.key == *key);
            if let Some(child) = exact {
                resolved.hops[child.hop] = Hop::Exact(position(index));
            }
            // A lookup takes a key that matches only ignoring case when no member matches
            // exactly, the first such in member order (an exact match later still wins).
            if exact.is_none_or(|c| c.case_siblings) {
                for other in &self.children {
                    let is_exact = exact.is_some_and(|c| std::ptr::eq(c, other));
                    if !is_exact
                        && resolved.hops[other.hop] == Hop::Absent
                        && other.key.eq_ignore_ascii_case(key)
                    {
                        resolved.hops[other.hop] = Hop::Variant(position(index));
                        variants = true;
                    }
                }
            }
            let parent = path.len();
            match exact {
                Some(child) => {
                    if collect && !child.node.known {
                        push_key(path, key);
                        unmapped.insert(path.clone(), member);
                    }
                    let collect_child = collect && child.node.known;
                    if collect_child || !child.node.children.is_empty() {
                        if collect_child {
                            push_key(path, key);
                        }
                        child.node.walk(member, collect_child, path, resolved, unmapped);
                    }
                }
                None if collect => {
                    push_key(path, key);
                    unmapped.insert(path.clone(), member);
                }
                None => {}
            }
            path.truncate(parent);
        }
        if variants {
            // Paths below a case variant are looked up in it, as in an exact match; its keys are
            // already reported under its own spelling.
            for child in &self.children {
                if let Hop::Variant(index) = resolved.hops[child.hop]
                    && !child.node.children.is_empty()
                    && let Some((_, member)) = members.get(index as usize)
                {
                    child.node.walk(member, false, path, resolved, unmapped);
                }
            }
        }
    }
}

/// A member's position as a [`Hop`] keeps it: an object of more than 4 billion members cannot
/// be held in memory, so the saturation never happens (and would make the lookup find nothing).
fn position(index: usize) -> u32 {
    u32::try_from(index).unwrap_or(u32::MAX)
}

fn push_key(path: &mut String, key: &str) {
    path.push('.');
    path.push_str(key);
}

/// Where one tree child's member was found in its parent object, for one event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Hop {
    Absent,
    /// The member at this position has the key exactly.
    Exact(u32),
    /// The member at this position has the key ignoring ASCII case, and none has it exactly.
    Variant(u32),
}

/// Every hop of every path, resolved for one event by [`Node::walk`].
pub(crate) struct Resolved {
    hops: Vec<Hop>,
}

impl Resolved {
    pub(crate) fn new(hops: usize) -> Resolved {
        Resolved {
            hops: vec![Hop::Absent; hops],
        }
    }

    /// Follows `hops` from `value` (a top-level member); a key that matched only ignoring case
    /// is used and noted in `unmapped` under its spelling, `variant_text(depth, actual)`.
    #[inline]
    pub(crate) fn follow<'v, 'a>(
        &self,
        mut value: &'v Json<'a>,
        hops: &[usize],
        variant_text: impl Fn(usize, &str) -> String,
        unmapped: &mut Unmapped,
    ) -> Option<&'v Json<'a>> {
        for (depth, &hop) in hops.iter().enumerate() {
            let members = value.as_object()?;
            value = match self.hops[hop] {
                Hop::Absent => return None,
                Hop::Exact(index) => &members.get(index as usize)?.1,
                Hop::Variant(index) => {
                    let (actual, member) = members.get(index as usize)?;
                    unmapped.insert(variant_text(depth, actual), member);
                    member
                }
            };
        }
        Some(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The lookup the walk replaced: each path scanned from the top, once per column.
    fn scan_lookup<'v, 'a>(
        mut value: &'v Json<'a>,
        rest: &[&str],
        text: &str,
        unmapped: &mut Unmapped,
    ) -> Option<&'v Json<'a>> {
        for (depth, key) in rest.iter().enumerate() {
            let mut variant = None;
            let mut exact = None;
            for (k, v) in value.as_object()? {
                if k == key {
                    exact = Some(v);
                    break;
                }
                if variant.is_none() && k.eq_ignore_ascii_case(key) {
                    variant = Some((k, v));
                }
            }
            value = match (exact, variant) {
                (Some(v), _) => v,
                (None, Some((actual, v))) => {
                    unmapped.insert(variant_text(text, depth, actual), v);
                    v
                }
                (None, None) => return None,
            };
        }
        Some(value)
    }

    fn variant_text(text: &str, depth: usize, actual: &str) -> String {
        let mut parts: Vec<&str> = text.split('.').take(depth + 1).collect();
        parts.push(actual);
        parts.join(".")
    }

    /// The unknown-key walk the walk replaced, over the tree of every-event paths only.
    #[derive(Default)]
    struct KnownTree {
        children: Vec<(String, KnownTree)>,
        whole: bool,
    }

    impl KnownTree {
        fn collect(&self, value: &Json<'_>, path: &mut String, unmapped: &mut Unmapped) {
            if self.whole || value.is_null() {
                return;
            }
            let Json::Object(object) = value else {
                unmapped.insert(path.clone(), value);
                return;
            };
            if object.is_empty() && !self.children.is_empty() {
                unmapped.insert_empty_object(path.clone());
                return;
            }
            let parent = path.len();
            for (key, child_value) in object {
                match self.children.iter().find(|(k, _)| k == key) {
                    Some((_, child)) if child.whole || child_value.is_null() => continue,
                    Some((_, child)) => {
                        push_key(path, key);
                        child.collect(child_value, path, unmapped);
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

    /// Paths below the member `s` that columns look up; the first `KNOWN` are every-event ones.
    const PATHS: &[&str] = &["b.c", "y", "b", "B.c", "bc", "y.z.w", "b.C", "Y.z"];
    const KNOWN: usize = 2;

    fn trees() -> (Node, usize, Vec<Vec<usize>>, KnownTree) {
        let mut root = Node::default();
        let mut count = 0;
        let mut hops = Vec::new();
        for path in PATHS {
            let mut node = &mut root;
            let mut path_hops = Vec::new();
            for key in path.split('.') {
                let (hop, child) = node.child_mut(key, &mut count);
                path_hops.push(hop);
                node = child;
            }
            hops.push(path_hops);
        }
        let mut known = KnownTree::default();
        for path in &PATHS[..KNOWN] {
            let (mut node, mut old) = (&mut root, &mut known);
            for key in path.split('.') {
                node.mark_known();
                node = node.child_mut(key, &mut count).1;
                let at = match old.children.iter().position(|(k, _)| k == key) {
                    Some(at) => at,
                    None => {
                        old.children.push((key.to_string(), KnownTree::default()));
                        old.children.len() - 1
                    }
                };
                old = &mut old.children[at].1;
            }
            node.keep_whole();
            old.whole = true;
        }
        (root, count, hops, known)
    }

    fn json_text() -> impl Strategy<Value = String> {
        let key = prop::sample::select(vec!["b", "B", "c", "C", "bc", "y", "Y", "z", "w", "q"]);
        let leaf = prop_oneof![
            Just("null".to_string()),
            Just("\"v\"".to_string()),
            Just("1.50".to_string()),
            Just("[1,{\"c\":2}]".to_string()),
        ];
        leaf.prop_recursive(4, 40, 6, move |inner| {
            prop::collection::vec((key.clone(), inner), 0..6).prop_map(|members| {
                let body: Vec<String> = members.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                format!("{{{}}}", body.join(","))
            })
        })
    }

    proptest! {
        #[test]
        fn one_walk_finds_and_reports_what_the_scans_did(text in json_text()) {
            let value = Json::parse_exact(&text).unwrap();
            let (root, count, hops, known) = trees();

            let mut old = Unmapped::default();
            known.collect(&value, &mut "s".to_string(), &mut old);
            let old_found: Vec<_> = PATHS
                .iter()
                .map(|p| {
                    let rest: Vec<&str> = p.split('.').collect();
                    scan_lookup(&value, &rest, &format!("s.{p}"), &mut old).cloned()
                })
                .collect();

            let mut new = Unmapped::default();
            let mut resolved = Resolved::new(count);
            root.walk(&value, true, &mut "s".to_string(), &mut resolved, &mut new);
            let new_found: Vec<_> = PATHS
                .iter()
                .zip(&hops)
                .map(|(p, path_hops)| {
                    let text = format!("s.{p}");
                    resolved
                        .follow(&value, path_hops, |depth, actual| variant_text(&text, depth, actual), &mut new)
                        .cloned()
                })
                .collect();

            prop_assert_eq!(new_found, old_found, "{}", text);
            prop_assert_eq!(new.to_json(), old.to_json(), "{}", text);
        }
    }
}
