//! CloudTrail's delivery layout: what a path or S3 key says about the events in the files under
//! it, and which directories and files a query's filters can skip.
//!
//! A trail delivers to `AWSLogs/[<org-id>/]<account>/CloudTrail/<region>/YYYY/MM/DD/` files named
//! `<account>_CloudTrail_<region>_<YYYYMMDDTHHmmZ>_<unique>.json.gz`, where the date and time are
//! when the file was delivered: a file holds events from before that moment (AWS: "a log file
//! delivered at a specific time can contain records written at any point before that time"),
//! usually from the few minutes before it.

use std::collections::BTreeSet;

use chrono::{Datelike, NaiveDate, NaiveDateTime};

const MICROS_PER_MINUTE: i64 = 60_000_000;

/// What a path says about the events under it; `None` where it says nothing.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryPath<'a> {
    pub account: Option<&'a str>,
    pub region: Option<&'a str>,
    /// The delivery date's year, month and day, as far as the directories go.
    pub year: Option<i32>,
    pub month: Option<u32>,
    pub day: Option<u32>,
    /// The delivery minute from the file name, in microseconds since the epoch.
    pub delivered: Option<i64>,
    /// Under `CloudTrail-Digest/`: integrity digests, never events.
    pub digests: bool,
}

impl<'a> DeliveryPath<'a> {
    /// Reads a path (`/` or `\` separated); with `is_file`, its last part is a file name.
    ///
    /// ```
    /// use keytrail::read::layout::DeliveryPath;
    ///
    /// let path = DeliveryPath::parse(
    ///     "lake/AWSLogs/o-abcdefghij/111122223333/CloudTrail/eu-west-1/2024/03/05/111122223333_CloudTrail_eu-west-1_20240305T1210Z_x.json.gz",
    ///     true,
    /// );
    /// assert_eq!((path.account, path.region), (Some("111122223333"), Some("eu-west-1")));
    /// assert_eq!((path.year, path.month, path.day), (Some(2024), Some(3), Some(5)));
    /// assert!(path.delivered.is_some());
    /// assert_eq!(DeliveryPath::parse("exports/events.json", true), DeliveryPath::default());
    /// ```
    pub fn parse(path: &'a str, is_file: bool) -> DeliveryPath<'a> {
        let mut parts: Vec<&'a str> = path.split(['/', '\\']).filter(|p| !p.is_empty()).collect();
        let name = if is_file { parts.pop() } else { None };
        let mut found = DeliveryPath::default();
        if let Some(start) = parts.iter().rposition(|p| *p == "AWSLogs") {
            let mut rest = parts[start + 1..].iter().copied().peekable();
            if rest.peek().is_some_and(|p| is_organization_id(p)) {
                rest.next();
            }
            found.read_directories(rest);
        }
        // The account in a file name is not taken for the events' account: the real Invictus
        // files are named for account 218007301253 and hold events of 123837392027.
        if let Some(name) = name
            && let Some((_account, region, delivered)) = file_name_fields(name)
        {
            found.region = found.region.or(Some(region));
            found.delivered = Some(delivered);
        }
        found
    }

    fn read_directories(&mut self, mut rest: impl Iterator<Item = &'a str>) {
        let Some(account) = rest.next().filter(|a| is_account_id(a)) else {
            return;
        };
        self.account = Some(account);
        match rest.next() {
            Some("CloudTrail-Digest") => {
                self.digests = true;
                return;
            }
            Some(service) if service.starts_with("CloudTrail") => {}
            _ => return,
        }
        let Some(region) = rest.next() else { return };
        self.region = Some(region);
        let number = |text: Option<&str>, digits: usize| {
            text.filter(|t| t.len() == digits && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<u32>().ok())
        };
        let Some(year) = number(rest.next(), 4) else {
            return;
        };
        self.year = i32::try_from(year).ok();
        let Some(month) = number(rest.next(), 2).filter(|m| (1..=12).contains(m)) else {
            return;
        };
        self.month = Some(month);
        self.day = number(rest.next(), 2).filter(|d| (1..=31).contains(d));
    }

    /// The delivery times the path allows, `[from, to)` in microseconds since the epoch: the
    /// file name's minute, or else the directories' day, month or year.
    pub fn delivery_window(&self) -> Option<(i64, i64)> {
        if let Some(minute) = self.delivered {
            return Some((minute, minute + MICROS_PER_MINUTE));
        }
        let year = self.year?;
        let start = NaiveDate::from_ymd_opt(year, self.month.unwrap_or(1), self.day.unwrap_or(1))?;
        let end = match (self.month, self.day) {
            (Some(_), Some(_)) => start.succ_opt()?,
            (Some(12), None) => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
            (Some(month), None) => NaiveDate::from_ymd_opt(year, month + 1, 1)?,
            _ => NaiveDate::from_ymd_opt(year + 1, 1, 1)?,
        };
        Some((micros(start), micros(end)))
    }

    /// How far down the layout a directory path goes: deeper directories can prune no more.
    pub fn reaches_day(&self) -> bool {
        self.day.is_some() || self.digests
    }
}

fn micros(date: NaiveDate) -> i64 {
    date.and_hms_opt(0, 0, 0)
        .map_or(0, |t| t.and_utc().timestamp_micros())
}

fn is_account_id(text: &str) -> bool {
    text.len() == 12 && text.bytes().all(|b| b.is_ascii_digit())
}

fn is_organization_id(text: &str) -> bool {
    text.strip_prefix("o-")
        .is_some_and(|id| (10..=32).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_alphanumeric()))
}

/// `(account, region, delivered)` of a CloudTrail log file name.
fn file_name_fields(name: &str) -> Option<(&str, &str, i64)> {
    let mut fields = name.split('_');
    let account = fields.next().filter(|a| is_account_id(a))?;
    fields.next().filter(|s| s.starts_with("CloudTrail"))?;
    let region = fields.next()?;
    let time = fields.next().and_then(delivery_minute)?;
    Some((account, region, time))
}

fn delivery_minute(field: &str) -> Option<i64> {
    let time = NaiveDateTime::parse_from_str(field, "%Y%m%dT%H%MZ").ok()?;
    (time.year() > 1970).then(|| time.and_utc().timestamp_micros())
}

/// The `YYYYMMDDTHHMMZ` field of a CloudTrail log file name (the name's last path part).
pub(crate) fn delivery_time(path: &str) -> Option<&str> {
    let name = path.rsplit(['/', '\\']).next()?;
    name.split('_').find(|field| {
        let bytes = field.as_bytes();
        bytes.len() == 14
            && bytes[8] == b'T'
            && bytes[13] == b'Z'
            && bytes[..8].iter().chain(&bytes[9..13]).all(u8::is_ascii_digit)
    })
}

/// Which files a query needs, by their delivery layout: files of other accounts or Regions, or
/// delivered outside `delivered`, are skipped. Paths that do not say are always kept.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeliveryFilter {
    pub accounts: Option<BTreeSet<String>>,
    pub regions: Option<BTreeSet<String>>,
    /// Delivery times that may hold wanted events, `[from, to]` in microseconds since the epoch
    /// (either end open).
    pub delivered: (Option<i64>, Option<i64>),
}

impl DeliveryFilter {
    /// Whether the filter skips nothing.
    pub fn is_empty(&self) -> bool {
        self.accounts.is_none() && self.regions.is_none() && self.delivered == (None, None)
    }

    /// Whether files under the directory `path` may hold wanted events.
    pub fn may_hold_dir(&self, path: &str) -> bool {
        self.may_hold(&DeliveryPath::parse(path, false))
    }

    /// Whether the file at `path` may hold wanted events.
    pub fn may_hold_file(&self, path: &str) -> bool {
        self.may_hold(&DeliveryPath::parse(path, true))
    }

    fn may_hold(&self, path: &DeliveryPath<'_>) -> bool {
        if path.digests {
            return false;
        }
        let allowed = |set: &Option<BTreeSet<String>>, value: Option<&str>| match (set, value) {
            (Some(set), Some(value)) => set.contains(value),
            _ => true,
        };
        if !allowed(&self.accounts, path.account) || !allowed(&self.regions, path.region) {
            return false;
        }
        match (path.delivery_window(), self.delivered) {
            (Some((start, end)), (from, to)) => {
                from.is_none_or(|from| end > from) && to.is_none_or(|to| start <= to)
            }
            (None, _) => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> i64 {
        NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M")
            .unwrap()
            .and_utc()
            .timestamp_micros()
    }

    #[test]
    fn directories_and_file_names_are_read_as_far_as_they_go() {
        let dir = DeliveryPath::parse("s3/AWSLogs/111122223333/CloudTrail/us-east-1/2024/02", false);
        assert_eq!((dir.year, dir.month, dir.day), (Some(2024), Some(2), None));
        assert_eq!(
            dir.delivery_window(),
            Some((at("2024-02-01 00:00"), at("2024-03-01 00:00")))
        );
        let december = DeliveryPath::parse("AWSLogs/111122223333/CloudTrail/us-east-1/2023/12", false);
        assert_eq!(december.delivery_window().unwrap().1, at("2024-01-01 00:00"));
        let digest = DeliveryPath::parse("AWSLogs/111122223333/CloudTrail-Digest/us-east-1", false);
        assert!(digest.digests && digest.reaches_day());
        let name_only = DeliveryPath::parse(
            "x/111122223333_CloudTrail_ap-south-1_20240101T2355Z_abc.json.gz",
            true,
        );
        assert_eq!((name_only.account, name_only.region), (None, Some("ap-south-1")));
        assert_eq!(
            name_only.delivery_window(),
            Some((at("2024-01-01 23:55"), at("2024-01-01 23:56")))
        );
        let not_layout = DeliveryPath::parse("AWSLogs/notanaccount/CloudTrail/us-east-1/2024", false);
        assert_eq!(not_layout, DeliveryPath::default());
    }

    #[test]
    fn the_filter_skips_other_accounts_regions_and_delivery_times() {
        let filter = DeliveryFilter {
            accounts: None,
            regions: Some(["eu-west-1".to_string()].into()),
            delivered: (Some(at("2024-03-05 00:00")), Some(at("2024-03-06 01:00"))),
        };
        let base = "AWSLogs/111122223333/CloudTrail";
        assert!(filter.may_hold_dir(base));
        assert!(!filter.may_hold_dir(&format!("{base}/us-east-1")));
        assert!(filter.may_hold_dir(&format!("{base}/eu-west-1/2024/03")));
        assert!(!filter.may_hold_dir(&format!("{base}/eu-west-1/2024/02")));
        assert!(!filter.may_hold_dir(&format!("{base}/eu-west-1/2024/03/04")));
        assert!(filter.may_hold_dir(&format!("{base}/eu-west-1/2024/03/06")));
        assert!(!filter.may_hold_dir(&format!("{base}/eu-west-1/2024/03/07")));
        let file = |time: &str| {
            format!("{base}/eu-west-1/2024/03/06/111122223333_CloudTrail_eu-west-1_{time}_x.json.gz")
        };
        assert!(filter.may_hold_file(&file("20240306T0100Z")));
        assert!(!filter.may_hold_file(&file("20240306T0101Z")));
        assert!(
            filter.may_hold_file("exports/anything.json"),
            "paths that say nothing are kept"
        );
        assert!(!filter.may_hold_dir("AWSLogs/111122223333/CloudTrail-Digest"));
        assert!(DeliveryFilter::default().is_empty());
    }
}
