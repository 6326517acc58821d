//! A query's filters, read for what they say about the delivery layout: the Regions, accounts and
//! event times a query wants become the [`DeliveryFilter`] that skips files by their paths.
//!
//! Only what is certain is used (conjuncts comparing a column with literals); every filter is
//! still applied to the rows afterwards, so a filter read too broadly costs time, never rows.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::NaiveDate;
use datafusion::common::ScalarValue;
use datafusion::logical_expr::utils::split_conjunction;
use datafusion::logical_expr::{BinaryExpr, Operator};
use datafusion::prelude::Expr;

use crate::read::layout::DeliveryFilter;

/// How much earlier than an event's time the file holding it may have been delivered: none by
/// AWS's rule, but event times come from the services' clocks and the file names drop seconds.
pub const CLOCK_SLACK: Duration = Duration::from_secs(5 * 60);

const MICROS_PER_DAY: i64 = 86_400 * 1_000_000;

/// The columns whose filters prune files.
const REGION_COLUMNS: [&str; 2] = ["aws_region", "region"];
const ACCOUNT_COLUMN: &str = "recipient_account_id";
const TIME_COLUMN: &str = "event_time";
const DATE_COLUMN: &str = "event_date";

/// What `filters` allow of the layout. Event times `[from, to]` become delivery times
/// `[from - CLOCK_SLACK, to + margin]`; without a margin, times prune nothing.
pub(super) fn delivery_filter(filters: &[Expr], margin: Option<Duration>) -> DeliveryFilter {
    let mut wanted = Wanted::default();
    for filter in filters {
        for conjunct in split_conjunction(filter) {
            wanted.read(conjunct);
        }
    }
    let micros = |d: Duration| i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
    let delivered = match margin {
        Some(margin) => (
            wanted.from.map(|from| from.saturating_sub(micros(CLOCK_SLACK))),
            wanted.to.map(|to| to.saturating_add(micros(margin))),
        ),
        None => (None, None),
    };
    DeliveryFilter {
        accounts: wanted.accounts,
        regions: wanted.regions,
        delivered,
    }
}

#[derive(Default)]
struct Wanted {
    regions: Option<BTreeSet<String>>,
    accounts: Option<BTreeSet<String>>,
    /// Event times, microseconds since the epoch, both ends inclusive.
    from: Option<i64>,
    to: Option<i64>,
}

impl Wanted {
    fn read(&mut self, expr: &Expr) {
        match expr {
            Expr::BinaryExpr(BinaryExpr { left, op, right }) => {
                let (column, op, value) = match (column_name(left), column_name(right)) {
                    (Some(column), None) => (column, *op, literal(right)),
                    (None, Some(column)) => match op.swap() {
                        Some(swapped) => (column, swapped, literal(left)),
                        None => return,
                    },
                    _ => return,
                };
                let Some(value) = value else { return };
                self.compare(column, op, &value);
            }
            Expr::InList(list) if !list.negated => {
                let Some(column) = column_name(&list.expr) else {
                    return;
                };
                let values: Option<BTreeSet<String>> = list
                    .list
                    .iter()
                    .map(|e| literal(e).and_then(|v| text(&v)))
                    .collect();
                if let Some(values) = values {
                    self.restrict(column, values);
                }
            }
            Expr::Between(between) if !between.negated => {
                let Some(column) = column_name(&between.expr) else {
                    return;
                };
                if let (Some(low), Some(high)) = (literal(&between.low), literal(&between.high)) {
                    self.compare(column, Operator::GtEq, &low);
                    self.compare(column, Operator::LtEq, &high);
                }
            }
            _ => {}
        }
    }

    fn compare(&mut self, column: &str, op: Operator, value: &ScalarValue) {
        if column == TIME_COLUMN {
            let Some(time) = timestamp_micros(value) else {
                return;
            };
            match op {
                Operator::Eq => self.between(Some(time), Some(time)),
                Operator::Gt | Operator::GtEq => self.between(Some(time), None),
                Operator::Lt | Operator::LtEq => self.between(None, Some(time)),
                _ => {}
            }
        } else if column == DATE_COLUMN {
            let Some(day) = text(value).and_then(|t| NaiveDate::parse_from_str(&t, "%Y-%m-%d").ok()) else {
                return;
            };
            let start = day
                .and_hms_opt(0, 0, 0)
                .map_or(0, |t| t.and_utc().timestamp_micros());
            let last = start + MICROS_PER_DAY - 1;
            match op {
                Operator::Eq => self.between(Some(start), Some(last)),
                Operator::GtEq => self.between(Some(start), None),
                Operator::Gt => self.between(Some(last + 1), None),
                Operator::LtEq => self.between(None, Some(last)),
                Operator::Lt => self.between(None, Some(start - 1)),
                _ => {}
            }
        } else if op == Operator::Eq
            && let Some(value) = text(value)
        {
            self.restrict(column, BTreeSet::from([value]));
        }
    }

    fn between(&mut self, from: Option<i64>, to: Option<i64>) {
        if let Some(from) = from {
            self.from = Some(self.from.map_or(from, |f| f.max(from)));
        }
        if let Some(to) = to {
            self.to = Some(self.to.map_or(to, |t| t.min(to)));
        }
    }

    fn restrict(&mut self, column: &str, values: BTreeSet<String>) {
        let set = if REGION_COLUMNS.contains(&column) {
            &mut self.regions
        } else if column == ACCOUNT_COLUMN {
            &mut self.accounts
        } else {
            return;
        };
        *set = Some(match set.take() {
            Some(known) => known.intersection(&values).cloned().collect(),
            None => values,
        });
    }
}

/// The column an expression reads, seen through casts (a dictionary column compared with text).
fn column_name(expr: &Expr) -> Option<&str> {
    match expr {
        Expr::Column(column) => Some(column.name.as_str()),
        Expr::Cast(cast) => column_name(&cast.expr),
        Expr::TryCast(cast) => column_name(&cast.expr),
        _ => None,
    }
}

fn literal(expr: &Expr) -> Option<ScalarValue> {
    match expr {
        Expr::Literal(value, _) if !value.is_null() => Some(value.clone()),
        Expr::Cast(cast) => literal(&cast.expr).and_then(|v| v.cast_to(cast.field.data_type()).ok()),
        _ => None,
    }
}

fn text(value: &ScalarValue) -> Option<String> {
    match value {
        ScalarValue::Utf8(Some(s)) | ScalarValue::LargeUtf8(Some(s)) | ScalarValue::Utf8View(Some(s)) => {
            Some(s.clone())
        }
        ScalarValue::Dictionary(_, inner) => text(inner),
        _ => None,
    }
}

fn timestamp_micros(value: &ScalarValue) -> Option<i64> {
    match value {
        ScalarValue::TimestampSecond(Some(v), _) => v.checked_mul(1_000_000),
        ScalarValue::TimestampMillisecond(Some(v), _) => v.checked_mul(1_000),
        ScalarValue::TimestampMicrosecond(Some(v), _) => Some(*v),
        ScalarValue::TimestampNanosecond(Some(v), _) => Some(v.div_euclid(1_000)),
        ScalarValue::Utf8(Some(_)) | ScalarValue::LargeUtf8(Some(_)) | ScalarValue::Utf8View(Some(_)) => {
            let cast = value.cast_to(&arrow::datatypes::DataType::Timestamp(
                arrow::datatypes::TimeUnit::Microsecond,
                Some("UTC".into()),
            ));
            cast.ok().and_then(|v| timestamp_micros(&v))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::prelude::{col, lit};

    fn micros(text: &str) -> i64 {
        chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_micros()
    }

    fn time(text: &str) -> Expr {
        lit(ScalarValue::TimestampMicrosecond(
            Some(micros(text)),
            Some("UTC".into()),
        ))
    }

    #[test]
    fn regions_accounts_and_times_are_read_from_conjuncts() {
        let filters = [
            col("aws_region").eq(lit("eu-west-1")).and(
                col("recipient_account_id").in_list(vec![lit("111122223333"), lit("444455556666")], false),
            ),
            col("event_time").gt_eq(time("2024-03-05T00:00:00Z")),
            time("2024-03-06T00:00:00Z").gt(col("event_time")),
            col("event_name").eq(lit("Decrypt")),
        ];
        let filter = delivery_filter(&filters, Some(Duration::from_secs(3600)));
        assert_eq!(filter.regions, Some(BTreeSet::from(["eu-west-1".to_string()])));
        assert_eq!(filter.accounts.as_ref().map(BTreeSet::len), Some(2));
        assert_eq!(
            filter.delivered,
            (
                Some(micros("2024-03-04T23:55:00Z")),
                Some(micros("2024-03-06T01:00:00Z"))
            )
        );
        let no_margin = delivery_filter(&filters, None);
        assert_eq!(no_margin.delivered, (None, None));
    }

    #[test]
    fn event_dates_and_ors_and_negations() {
        let day = delivery_filter(&[col("event_date").eq(lit("2024-03-05"))], Some(Duration::ZERO));
        assert_eq!(
            day.delivered,
            (
                Some(micros("2024-03-04T23:55:00Z")),
                Some(micros("2024-03-05T23:59:59.999999Z"))
            )
        );
        let either = col("aws_region").eq(lit("a")).or(col("aws_region").eq(lit("b")));
        let negated = col("aws_region").in_list(vec![lit("a")], true);
        assert!(delivery_filter(&[either, negated], Some(Duration::ZERO)).is_empty());
        let contradiction = [col("region").eq(lit("a")), col("aws_region").eq(lit("b"))];
        assert_eq!(
            delivery_filter(&contradiction, None).regions,
            Some(BTreeSet::new()),
            "two Regions at once: no file can hold a row"
        );
    }
}
