//! The human-readable summary printed after a conversion.

use std::io::{self, Write};

use crate::convert::{ConvertSummary, SkippedFile};
use crate::read::classify::SkipReason;

/// `1234567` → `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

pub fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn breakdown<K: Copy>(map: &std::collections::BTreeMap<K, u64>, label: fn(K) -> &'static str) -> String {
    let parts: Vec<String> = map.iter().map(|(k, v)| format!("{}: {v}", label(*k))).collect();
    if parts.is_empty() {
        String::new()
    } else {
        format!(" ({})", parts.join(", "))
    }
}

pub fn write_human(out: &mut impl Write, s: &ConvertSummary) -> io::Result<()> {
    let skipped_files: u64 = s.skipped_files.values().sum();
    let skipped_records: u64 = s.skipped_records.values().sum();
    writeln!(out, "converted into {} (run {})", s.output.display(), s.run_id)?;
    writeln!(
        out,
        "  input files       {} ({})",
        thousands(s.input_files as u64),
        bytes(s.input_bytes)
    )?;
    writeln!(
        out,
        "  skipped files     {}{}",
        thousands(skipped_files),
        breakdown(&s.skipped_files, SkippedFile::label)
    )?;
    writeln!(out, "  failed files      {}", thousands(s.failed_files))?;
    writeln!(out, "  events read       {}", thousands(s.events_read))?;
    writeln!(out, "  rows written      {}", thousands(s.rows_written))?;
    writeln!(out, "  quarantined       {}", thousands(s.quarantined_records))?;
    writeln!(out, "  duplicates        {}", thousands(s.duplicates_dropped))?;
    if s.late_rows > 0 {
        writeln!(
            out,
            "  late rows         {} (arrived after later rows of their partition; files merged again)",
            thousands(s.late_rows)
        )?;
    }
    if s.repaired_records > 0 {
        writeln!(
            out,
            "  repaired records  {} (trailing commas removed)",
            thousands(s.repaired_records)
        )?;
    }
    if skipped_records > 0 {
        writeln!(
            out,
            "  skipped records   {}{}",
            thousands(skipped_records),
            breakdown(&s.skipped_records, SkipReason::label)
        )?;
    }
    writeln!(out, "  partitions        {}", thousands(s.partitions as u64))?;
    writeln!(
        out,
        "  files written     {} ({})",
        thousands(s.files_written as u64),
        bytes(s.bytes_written)
    )?;
    writeln!(
        out,
        "  elapsed           {:.2} s ({} events/s)",
        s.elapsed_seconds,
        thousands(s.events_per_second.round() as u64)
    )?;
    if let Some(dir) = &s.quarantine {
        writeln!(
            out,
            "quarantined records (original bytes and reasons) are in {}",
            dir.display()
        )?;
    }
    if s.problem_count > 0 {
        writeln!(
            out,
            "{} problems (listed on stderr as they were found); the first:",
            thousands(s.problem_count)
        )?;
        for problem in s.problems.iter().take(10) {
            writeln!(out, "  {problem}")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn formats_numbers() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(1234567), "1,234,567");
        assert_eq!(super::bytes(1536), "1.5 KiB");
    }
}
