//! Expanding the command line's INPUT arguments into a sorted list of inputs.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

use globset::{GlobBuilder, GlobMatcher};
use walkdir::WalkDir;

use super::Input;
use super::layout::{DeliveryFilter, delivery_time};
use crate::dataset::layout::is_hidden_name;
use crate::store::{S3Url, Stores};

/// The inputs found, and the arguments that found nothing.
#[derive(Debug, Default)]
pub struct Discovery {
    pub inputs: Vec<Input>,
    /// Each argument or directory entry that could not be used.
    pub problems: Vec<DiscoveryProblem>,
    /// Files and directories skipped by a [`DeliveryFilter`] (directories are not looked into).
    pub pruned_files: u64,
    pub pruned_dirs: u64,
}

/// An input argument or directory entry that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiscoveryProblem {
    /// The argument or path.
    pub input: String,
    pub message: String,
}

impl std::fmt::Display for DiscoveryProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.input, self.message)
    }
}

fn problem(input: impl std::fmt::Display, message: impl Into<String>) -> DiscoveryProblem {
    DiscoveryProblem {
        input: input.to_string(),
        message: message.into(),
    }
}

/// Expands files, directories (recursively), glob patterns, `s3://bucket/prefix` URLs (listed
/// through `stores`; globs allowed in the key) and `-` (stdin).
///
/// Directory walks skip hidden entries (`.name`) and `_`-prefixed ones, the names that Hive, Spark
/// and Athena treat as not-data. Order is sorted by path so runs are reproducible.
pub fn discover(args: &[String], stores: Option<&Stores>) -> Discovery {
    discover_filtered(args, stores, None)
}

/// [`discover`], skipping the directories and files that `filter` says hold no wanted events
/// (on S3, the prefixes it skips are not listed).
pub fn discover_filtered(
    args: &[String],
    stores: Option<&Stores>,
    filter: Option<&DeliveryFilter>,
) -> Discovery {
    let mut pruned = Pruned::default();
    let mut found = BTreeSet::new();
    let mut objects: Vec<Input> = Vec::new();
    let mut stdin = false;
    let mut problems = Vec::new();
    for arg in args {
        if arg == "-" {
            stdin = true;
            continue;
        }
        if let Some(url) = S3Url::parse(arg) {
            let listed = url.and_then(|url| match stores {
                Some(stores) => stores.list_filtered(&url, filter, &mut pruned),
                None => Err(crate::store::StoreError::Url {
                    url: url.to_string(),
                    message: "object store inputs are not available here".into(),
                }),
            });
            match listed {
                Ok(listed) if listed.is_empty() => problems.push(problem(arg, "no objects found")),
                Ok(listed) => objects.extend(listed.into_iter().map(Input::Object)),
                Err(e) => problems.push(problem(arg, e.detail())),
            }
            continue;
        }
        let path = Path::new(arg);
        if path.is_dir() {
            walk(path, None, filter, &mut found, &mut problems, &mut pruned);
        } else if path.exists() {
            if filter.is_some_and(|f| !f.may_hold_file(arg)) {
                pruned.files += 1;
            } else {
                found.insert(path.to_path_buf());
            }
        } else if has_glob_chars(arg) {
            match glob_matcher(arg) {
                Ok(matcher) => {
                    let before = found.len();
                    walk(
                        &glob_base(arg),
                        Some(&matcher),
                        filter,
                        &mut found,
                        &mut problems,
                        &mut pruned,
                    );
                    if found.len() == before {
                        problems.push(problem(arg, "the pattern matched no files"));
                    }
                }
                Err(e) => problems.push(problem(arg, format!("invalid glob pattern: {e}"))),
            }
        } else {
            problems.push(problem(arg, "no such file or directory"));
        }
    }
    let mut inputs: Vec<Input> = found.into_iter().map(Input::File).collect();
    // A Vec, not a set: ordered by URL only, while the keys' store handles are not comparable.
    objects.sort();
    objects.dedup();
    inputs.extend(objects);
    if stdin {
        inputs.push(Input::Stdin);
    }
    Discovery {
        inputs,
        problems,
        pruned_files: pruned.files,
        pruned_dirs: pruned.dirs,
    }
}

/// What a [`DeliveryFilter`] skipped.
#[derive(Debug, Default)]
pub struct Pruned {
    pub files: u64,
    pub dirs: u64,
}

fn has_glob_chars(arg: &str) -> bool {
    arg.contains(['*', '?', '[', '{'])
}

fn glob_matcher(pattern: &str) -> Result<GlobMatcher, globset::Error> {
    Ok(GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()?
        .compile_matcher())
}

/// The longest leading run of path components without glob characters.
fn glob_base(pattern: &str) -> PathBuf {
    let mut base = PathBuf::new();
    for component in Path::new(pattern).components() {
        if let Component::Normal(part) = component
            && has_glob_chars(&part.to_string_lossy())
        {
            break;
        }
        base.push(component);
    }
    if base.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        base
    }
}

fn walk(
    root: &Path,
    matcher: Option<&GlobMatcher>,
    filter: Option<&DeliveryFilter>,
    found: &mut BTreeSet<PathBuf>,
    problems: &mut Vec<DiscoveryProblem>,
    pruned: &mut Pruned,
) {
    let pruned_dirs = std::cell::Cell::new(0);
    let walker = WalkDir::new(root)
        .follow_links(true)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            if e.depth() > 0 && is_hidden(e.file_name()) {
                return false;
            }
            let skipped = e.file_type().is_dir()
                && filter.is_some_and(|f| !f.may_hold_dir(&e.path().to_string_lossy()));
            pruned_dirs.set(pruned_dirs.get() + u64::from(skipped));
            !skipped
        });
    for entry in walker {
        match entry {
            Ok(entry) if entry.file_type().is_file() => {
                let path = entry.into_path();
                let relative = path.strip_prefix("./").unwrap_or(&path);
                if !matcher.is_none_or(|m| m.is_match(relative) || m.is_match(&path)) {
                    continue;
                }
                if filter.is_some_and(|f| !f.may_hold_file(&path.to_string_lossy())) {
                    pruned.files += 1;
                } else {
                    found.insert(path);
                }
            }
            Ok(_) => {}
            Err(e) => problems.push(problem(
                e.path().unwrap_or(root).display(),
                e.io_error()
                    .map(|io| io.to_string())
                    .unwrap_or_else(|| e.to_string()),
            )),
        }
    }
    pruned.dirs += pruned_dirs.get();
}

/// Puts inputs in the order CloudTrail delivered them: by the delivery time in a CloudTrail file
/// name (`<account>_CloudTrail_<region>_<YYYYMMDDTHHMMZ>_<id>.json.gz`), then by path; inputs
/// without one keep their order, ahead of those with one.
///
/// Path order reads one account and Region to its end before the next, so every partition of a
/// multi-account or multi-Region trail would get its rows far out of time order; in delivery order
/// they arrive nearly sorted and stream to Parquet without spilling.
pub fn sort_by_delivery_time(inputs: &mut [Input]) {
    inputs.sort_by_cached_key(|input| delivery_time(&input.to_string()).map(str::to_string));
}

fn is_hidden(name: &std::ffi::OsStr) -> bool {
    is_hidden_name(&name.to_string_lossy())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delivery_order_interleaves_accounts_and_regions() {
        let names = [
            "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/01/111122223333_CloudTrail_us-east-1_20240101T0005Z_b.json.gz",
            "AWSLogs/111122223333/CloudTrail/us-east-1/2024/01/01/111122223333_CloudTrail_us-east-1_20240101T0010Z_a.json.gz",
            "AWSLogs/444455556666/CloudTrail/eu-west-1/2024/01/01/444455556666_CloudTrail_eu-west-1_20240101T0000Z_c.json.gz",
            "AWSLogs/444455556666/CloudTrail/eu-west-1/2024/01/01/444455556666_CloudTrail_eu-west-1_20240101T0010Z_d.json.gz",
            "exports/events.ndjson",
            "exports/x_2024010T0000Z_y.json",
        ];
        let mut inputs: Vec<Input> = names.iter().map(|n| Input::File(PathBuf::from(n))).collect();
        sort_by_delivery_time(&mut inputs);
        let tails: Vec<String> = inputs
            .iter()
            .map(|i| i.to_string().rsplit('_').next().unwrap().to_string())
            .collect();
        assert_eq!(
            tails,
            [
                "exports/events.ndjson",
                "y.json",
                "c.json.gz",
                "b.json.gz",
                "a.json.gz",
                "d.json.gz"
            ]
        );
    }

    #[test]
    fn directories_globs_and_missing_paths() {
        let dir = tempfile::tempdir().unwrap();
        let day = dir
            .path()
            .join("AWSLogs/111122223333/CloudTrail/us-east-1/2023/07/10");
        std::fs::create_dir_all(&day).unwrap();
        std::fs::write(day.join("b.json.gz"), b"x").unwrap();
        std::fs::write(day.join("a.json"), b"x").unwrap();
        std::fs::write(day.join(".hidden.json"), b"x").unwrap();
        std::fs::create_dir_all(dir.path().join("_staging")).unwrap();
        std::fs::write(dir.path().join("_staging/c.json"), b"x").unwrap();

        let root = dir.path().to_string_lossy().into_owned();
        let found = discover(std::slice::from_ref(&root), None);
        let names: Vec<_> = found
            .inputs
            .iter()
            .map(|i| i.to_string().rsplit('/').next().unwrap().to_string())
            .collect();
        assert_eq!(names, vec!["a.json", "b.json.gz"]);

        let pattern = format!("{root}/AWSLogs/*/CloudTrail/**/*.gz");
        let globbed = discover(
            &[pattern, format!("{root}/nope.json"), "s3://bucket/x".into()],
            None,
        );
        assert_eq!(globbed.inputs.len(), 1);
        assert!(globbed.inputs[0].to_string().ends_with("b.json.gz"));
        assert_eq!(globbed.problems.len(), 2);
        assert!(
            globbed.problems[1].to_string().starts_with("s3://bucket/x: "),
            "{}",
            globbed.problems[1]
        );
        assert_eq!(globbed.problems[0].message, "no such file or directory");
        assert!(globbed.problems[0].input.ends_with("nope.json"));
    }
}
