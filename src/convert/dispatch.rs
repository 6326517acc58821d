//! Record dispatch: what one JSON value read from an input is — an event, a container of
//! events (`Records`, EventBridge `detail`, CloudWatch Logs messages, SIEM `_raw`, Event history
//! and CloudTrail Lake query results), something to skip, or invalid JSON — told to a
//! [`RecordSink`]. Pure: no I/O, no counting, no flattening.

use crate::read::classify::{Kind, SkipReason, TopFields, classify, remove_trailing_commas};

/// What [`dispatch`] finds in a value, in the order it finds it.
pub trait RecordSink {
    /// An event. `original` is the whole value it was found in, as read (what a quarantine
    /// keeps when the event cannot be flattened).
    fn event(&mut self, event: &TopFields<'_>, original: &[u8]);
    /// A value that is not an event (a digest, other JSON).
    fn skipped(&mut self, reason: SkipReason);
    /// The value was accepted after removing trailing commas (documentation-style JSON).
    fn repaired(&mut self);
    /// The value is not JSON, even without trailing commas; `message` says where it breaks.
    fn invalid(&mut self, message: String, original: &[u8]);
}

/// Classifies `bytes` and everything nested in it, telling `sink` what it finds.
///
/// Invalid JSON is first retried without trailing commas (counted as repaired), so a record is
/// invalid only when both fail; the error reported is the original one.
///
/// ```
/// use keytrail::convert::dispatch::{RecordSink, dispatch};
/// use keytrail::read::classify::{SkipReason, TopFields};
///
/// #[derive(Default)]
/// struct Names(Vec<String>, u32);
/// impl RecordSink for Names {
///     fn event(&mut self, event: &TopFields<'_>, _: &[u8]) {
///         self.0.push(event.get("eventName").map(|v| v.get().to_string()).unwrap_or_default());
///     }
///     fn skipped(&mut self, _: SkipReason) {}
///     fn repaired(&mut self) { self.1 += 1; }
///     fn invalid(&mut self, _: String, _: &[u8]) {}
/// }
///
/// let mut names = Names::default();
/// dispatch(br#"{"Records":[{"eventName":"Decrypt","eventTime":"2023-07-10T11:42:13Z",},]}"#, &mut names);
/// assert_eq!((names.0, names.1), (vec![r#""Decrypt""#.to_string()], 1));
/// ```
pub fn dispatch(bytes: &[u8], sink: &mut impl RecordSink) {
    match classify(bytes) {
        Ok(kind) => dispatch_kind(kind, bytes, sink),
        Err(error) => {
            let fixed = remove_trailing_commas(bytes);
            match fixed.as_deref().map(classify) {
                Some(Ok(kind)) => {
                    sink.repaired();
                    dispatch_kind(kind, bytes, sink);
                }
                _ => sink.invalid(format!("invalid JSON: {error}"), bytes),
            }
        }
    }
}

fn dispatch_kind(kind: Kind<'_>, original: &[u8], sink: &mut impl RecordSink) {
    match kind {
        Kind::Event(top) => sink.event(&top, original),
        Kind::Embedded(texts) => texts.iter().for_each(|text| dispatch(text.as_bytes(), sink)),
        Kind::Nested(inner) => dispatch(inner.get().as_bytes(), sink),
        Kind::Values(values) => values.iter().for_each(|value| dispatch(value.as_bytes(), sink)),
        Kind::Records(records) => records
            .iter()
            .for_each(|record| dispatch(record.get().as_bytes(), sink)),
        Kind::Skip(reason) => sink.skipped(reason),
    }
}
