//! Parsing the timestamp spellings found in CloudTrail records into microseconds since the epoch.

use chrono::{DateTime, NaiveDate, NaiveDateTime};

/// Parses a CloudTrail timestamp into microseconds since the Unix epoch (UTC).
///
/// Accepts `2023-07-10T11:42:13Z` (the canonical form, parsed without allocation), RFC 3339 with
/// fractions or offsets, `2022-12-11 19:42:55[.nnnnnnnnn]` (taken as UTC), basic ISO
/// `20131102T010628Z`, and the Java `toString` forms found in KMS responses
/// (`Nov 18, 2020, 1:29:18 AM`, `Jan 1, 2021 8:00:00 PM`).
///
/// ```
/// use keytrail::flatten::time::parse_timestamp_micros;
/// assert_eq!(parse_timestamp_micros("1970-01-01T00:00:01Z"), Some(1_000_000));
/// assert_eq!(parse_timestamp_micros("Jan 1, 1970, 12:00:02 AM"), Some(2_000_000));
/// assert_eq!(parse_timestamp_micros("ThisIsAWrongEventTime"), None);
/// ```
pub fn parse_timestamp_micros(text: &str) -> Option<i64> {
    let text = text.trim();
    if let Some(micros) = parse_canonical(text.as_bytes()) {
        return Some(micros);
    }
    if let Ok(dt) = DateTime::parse_from_rfc3339(text) {
        return Some(dt.timestamp_micros());
    }
    const NAIVE_FORMATS: &[&str] = &[
        "%Y-%m-%d %H:%M:%S%.f",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.fZ",
        "%Y%m%dT%H%M%SZ",
        "%b %d, %Y, %I:%M:%S %p",
        "%b %d, %Y %I:%M:%S %p",
    ];
    for format in NAIVE_FORMATS {
        if let Ok(dt) = NaiveDateTime::parse_from_str(text, format) {
            return Some(dt.and_utc().timestamp_micros());
        }
    }
    parse_java_24h_with_meridiem(text)
}

/// Whether a timestamp text holds digits finer than microseconds (`…:05.123456789Z`), which a
/// microsecond column cannot keep: the caller keeps the text as well.
///
/// ```
/// use keytrail::flatten::time::finer_than_micros;
/// assert!(finer_than_micros("2024-03-01T10:00:05.123456789Z"));
/// assert!(!finer_than_micros("2024-03-01T10:00:05.123456000Z"));
/// assert!(!finer_than_micros("2024-03-01T10:00:05.123Z"));
/// assert!(!finer_than_micros("Jul 10, 2023, 12:31:14 PM"));
/// ```
pub fn finer_than_micros(text: &str) -> bool {
    let Some((_, after_minutes)) = text.rsplit_once(':') else {
        return false;
    };
    let Some((_, fraction)) = after_minutes.split_once('.') else {
        return false;
    };
    let digits = fraction.bytes().take_while(u8::is_ascii_digit);
    digits.skip(6).any(|d| d != b'0')
}

/// Interprets a number as epoch milliseconds (CloudTrail's numeric dates, such as `launchTime`)
/// or, when too small to be a plausible millisecond value, as epoch seconds.
pub fn epoch_number_to_micros(value: f64) -> Option<i64> {
    if !value.is_finite() {
        return None;
    }
    let micros = if value.abs() >= 100_000_000_000.0 {
        value * 1_000.0
    } else {
        value * 1_000_000.0
    };
    (micros.abs() < i64::MAX as f64).then_some(micros as i64)
}

/// `YYYY-MM-DDTHH:MM:SSZ`, the form of every eventTime AWS delivers.
fn parse_canonical(b: &[u8]) -> Option<i64> {
    if b.len() != 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
        || b[19] != b'Z'
    {
        return None;
    }
    let num = |range: std::ops::Range<usize>| -> Option<u32> {
        b[range].iter().try_fold(0u32, |acc, &d| {
            d.is_ascii_digit().then(|| acc * 10 + u32::from(d - b'0'))
        })
    };
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    let time = date.and_hms_opt(num(11..13)?, num(14..16)?, num(17..19)?)?;
    Some(time.and_utc().timestamp_micros())
}

/// AWS documentation shows `Apr 12, 2021 18:58:30 PM`: a 24-hour clock with a stray meridiem.
fn parse_java_24h_with_meridiem(text: &str) -> Option<i64> {
    let stripped = text.strip_suffix(" PM").or_else(|| text.strip_suffix(" AM"))?;
    ["%b %d, %Y %H:%M:%S", "%b %d, %Y, %H:%M:%S"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(stripped, f).ok())
        .filter(|dt| chrono::Timelike::hour(dt) >= 13)
        .map(|dt| dt.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn micros(rfc3339: &str) -> i64 {
        DateTime::parse_from_rfc3339(rfc3339).unwrap().timestamp_micros()
    }

    #[test]
    fn all_spellings_seen_in_real_logs() {
        let cases = [
            ("2023-07-10T11:42:13Z", "2023-07-10T11:42:13Z"),
            ("2023-07-10T11:42:13.123456Z", "2023-07-10T11:42:13.123456Z"),
            ("2023-07-10T13:42:13+02:00", "2023-07-10T11:42:13Z"),
            ("2022-12-11 19:42:55", "2022-12-11T19:42:55Z"),
            ("2022-12-11 19:42:55.123456789", "2022-12-11T19:42:55.123456Z"),
            ("20131102T010628Z", "2013-11-02T01:06:28Z"),
            ("Nov 18, 2020, 1:29:18 AM", "2020-11-18T01:29:18Z"),
            ("Aug 10, 2022, 10:38:27 PM", "2022-08-10T22:38:27Z"),
            ("Jan 1, 2021 8:00:00 PM", "2021-01-01T20:00:00Z"),
            ("Apr 12, 2021 18:58:30 PM", "2021-04-12T18:58:30Z"),
        ];
        for (input, expected) in cases {
            assert_eq!(parse_timestamp_micros(input), Some(micros(expected)), "{input}");
        }
        for bad in [
            "",
            "ThisIsAWrongEventTime",
            "2023-13-10T11:42:13Z",
            "2023-07-10T25:00:00Z",
        ] {
            assert_eq!(parse_timestamp_micros(bad), None, "{bad}");
        }
    }

    #[test]
    fn epoch_numbers() {
        assert_eq!(
            epoch_number_to_micros(1_688_989_334_000.0),
            Some(1_688_989_334_000_000)
        );
        assert_eq!(
            epoch_number_to_micros(1_688_989_334.0),
            Some(1_688_989_334_000_000)
        );
        assert_eq!(epoch_number_to_micros(f64::NAN), None);
    }
}
