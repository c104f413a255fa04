//! The `hypernodes` command: look into and tidy a cache directory without
//! the pipeline's code (feature `cli`).
//!
//! ```text
//! hypernodes cache --dir .cache stats
//! hypernodes cache --dir .cache ls count
//! hypernodes cache --dir .cache why count --signature 3fa2…
//! hypernodes cache --dir .cache compact [KEY]
//! hypernodes cache --dir .cache gc [--older-than 30d] [--yes]
//! hypernodes cache --dir .cache clear [NODE]
//! ```
//!
//! Every listing is a table for people, or JSON with `--json`. Exit codes:
//! 0 done, 2 bad arguments, 3 no cache at the location (or it cannot be
//! read), 4 no such node or version, 1 anything else.

use std::io::Write;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Parser, Subcommand};
use hypernodes::cache::{CacheError, CacheLocation, GcPolicy, VersionInfo};
use hypernodes::signature::Signature;
use serde_json::json;

/// HyperNodes: hierarchical, modular, cached data pipelines.
#[derive(Parser)]
#[command(name = "hypernodes", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Look into or tidy a cache (a directory, or a `file://` location).
    Cache {
        /// The cache's location.
        #[arg(long, env = "HYPERNODES_CACHE_DIR")]
        dir: String,
        /// JSON instead of a table.
        #[arg(long, global = true)]
        json: bool,
        #[command(subcommand)]
        action: CacheAction,
    },
}

#[derive(Subcommand)]
enum CacheAction {
    /// Per node version: key, rows, distinct signatures, bytes, segments,
    /// quarantined and corrupt files, when last written.
    Stats,
    /// One node's versions (or one version, by key) and their segments.
    Ls {
        /// A node's name, or a version's key (`node/codeprefix`).
        node: String,
    },
    /// What is stored under a signature, and in which version.
    Why {
        /// A node's name, or a version's key.
        node: String,
        /// The signature (64 hex characters).
        #[arg(long)]
        signature: String,
    },
    /// Merges each version's segments into one.
    Compact {
        /// Only this node or version.
        key: Option<String>,
    },
    /// Removes node versions that are not their node's latest, or (with
    /// `--older-than`) last written longer ago than that. Lists what it
    /// would remove unless `--yes`.
    Gc {
        /// Also versions last written longer ago than this (`90s`, `12h`,
        /// `30d`).
        #[arg(long, value_parser = parse_age)]
        older_than: Option<Duration>,
        /// Only versions older than `--older-than`; keep superseded ones.
        #[arg(long, requires = "older_than")]
        keep_superseded: bool,
        /// Remove them (without it, only list them).
        #[arg(long)]
        yes: bool,
    },
    /// Removes everything, or one node's results (all versions).
    Clear {
        /// Only this node.
        node: Option<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let Command::Cache { dir, json, action } = cli.command;
    let mut out = std::io::stdout().lock();
    match run(&dir, json, action, &mut out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(code, message)) => {
            let _ = writeln!(std::io::stderr(), "hypernodes: {message}");
            ExitCode::from(code)
        }
    }
}

/// An exit code and what to say.
struct Failure(u8, String);

impl From<CacheError> for Failure {
    fn from(e: CacheError) -> Self {
        let code = match &e {
            CacheError::NotFound { .. } => 4,
            CacheError::Io { .. } | CacheError::Location { .. } => 3,
            _ => 1,
        };
        Failure(code, e.to_string())
    }
}

impl From<std::io::Error> for Failure {
    fn from(e: std::io::Error) -> Self {
        Failure(1, e.to_string())
    }
}

fn run(
    location: &str,
    json: bool,
    action: CacheAction,
    out: &mut impl Write,
) -> Result<(), Failure> {
    let cache = CacheLocation::parse(location)?.open_disk()?;
    match action {
        CacheAction::Stats => {
            let versions = cache.inventory()?;
            if json {
                let rows: Vec<_> = versions.iter().map(version_json).collect();
                writeln!(out, "{}", json!({ "location": location, "versions": rows }))?;
            } else {
                table(out, &versions)?;
            }
        }
        CacheAction::Ls { node } => {
            let versions = cache.versions_of(&node)?;
            if json {
                let rows: Vec<_> = versions
                    .iter()
                    .map(|v| {
                        let mut j = version_json(v);
                        j["segment_files"] = json!(segments(&v.dir)
                            .iter()
                            .map(|(name, bytes, at)| json!({"file": name, "bytes": bytes, "written": at}))
                            .collect::<Vec<_>>());
                        j
                    })
                    .collect();
                writeln!(out, "{}", json!({ "versions": rows }))?;
            } else {
                for v in &versions {
                    table(out, std::slice::from_ref(v))?;
                    let outputs: Vec<String> =
                        v.outputs.iter().map(|(n, t)| format!("{n}: {t}")).collect();
                    writeln!(out, "  outputs: {}", outputs.join(", "))?;
                    for (name, bytes, at) in segments(&v.dir) {
                        writeln!(out, "  {name}  {}  {at}", human_bytes(bytes))?;
                    }
                }
            }
        }
        CacheAction::Why { node, signature } => {
            let sig = Signature::from_hex(&signature).ok_or_else(|| {
                Failure(
                    2,
                    format!("`{signature}` is not a signature (64 hex characters)"),
                )
            })?;
            let rows = cache.why(&node, &sig)?;
            if json {
                let rows: Vec<_> = rows
                    .iter()
                    .map(|r| {
                        json!({
                            "key": r.key,
                            "segment": r.segment.display().to_string(),
                            "values": r.values.iter().map(|(n, v)| json!({"output": n, "value": v})).collect::<Vec<_>>(),
                        })
                    })
                    .collect();
                writeln!(out, "{}", json!({ "signature": signature, "stored": rows }))?;
            } else if rows.is_empty() {
                writeln!(out, "nothing stored under {signature} for `{node}`")?;
            } else {
                for r in &rows {
                    let file = r
                        .segment
                        .file_name()
                        .map(|f| f.to_string_lossy().to_string());
                    writeln!(out, "{} in {}", r.key, file.unwrap_or_default())?;
                    for (name, value) in &r.values {
                        writeln!(out, "  {name} = {value}")?;
                    }
                }
            }
        }
        CacheAction::Compact { key } => {
            let done = cache.compact_all(key.as_deref())?;
            if json {
                let rows: Vec<_> = done
                    .iter()
                    .map(|(k, n)| json!({"key": k, "merged_segments": n}))
                    .collect();
                writeln!(out, "{}", json!({ "compacted": rows }))?;
            } else if done.is_empty() {
                writeln!(out, "nothing to compact")?;
            } else {
                for (k, n) in &done {
                    writeln!(out, "{k}: {n} segments merged into one")?;
                }
            }
        }
        CacheAction::Gc {
            older_than,
            keep_superseded,
            yes,
        } => {
            let policy = GcPolicy {
                superseded: !keep_superseded,
                older_than,
            };
            let doomed = cache.gc_plan(policy)?;
            if yes {
                for v in &doomed {
                    cache.remove_version(v)?;
                }
            }
            if json {
                let rows: Vec<_> = doomed.iter().map(version_json).collect();
                writeln!(out, "{}", json!({ "removed": yes, "versions": rows }))?;
            } else if doomed.is_empty() {
                writeln!(out, "nothing to remove")?;
            } else {
                let verb = if yes { "removed" } else { "would remove" };
                let bytes: u64 = doomed.iter().map(|v| v.bytes).sum();
                writeln!(
                    out,
                    "{verb} {} node versions ({}):",
                    doomed.len(),
                    human_bytes(bytes)
                )?;
                table(out, &doomed)?;
                if !yes {
                    writeln!(out, "run again with --yes to remove them")?;
                }
            }
        }
        CacheAction::Clear { node } => {
            match &node {
                Some(node) => {
                    cache.versions_of(node)?;
                    cache.clear_node(node)?;
                }
                None => {
                    cache.inventory()?;
                    cache.clear()?;
                }
            }
            if json {
                writeln!(
                    out,
                    "{}",
                    json!({ "cleared": node.as_deref().unwrap_or("*") })
                )?;
            } else {
                match &node {
                    Some(node) => writeln!(out, "cleared `{node}`")?,
                    None => writeln!(out, "cleared {location}")?,
                }
            }
        }
    }
    Ok(())
}

/// A table of node versions.
fn table(out: &mut impl Write, versions: &[VersionInfo]) -> std::io::Result<()> {
    let header = [
        "KEY",
        "ROWS",
        "DISTINCT",
        "BYTES",
        "SEGMENTS",
        "QUARANTINED",
        "CORRUPT",
        "LAST WRITTEN (UTC)",
    ];
    let rows: Vec<[String; 8]> = versions
        .iter()
        .map(|v| {
            [
                v.key(),
                v.rows.to_string(),
                v.distinct.to_string(),
                human_bytes(v.bytes),
                v.segments.to_string(),
                v.quarantined.to_string(),
                v.corrupt.to_string(),
                v.last_written.map(utc).unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i == 0 || i == 7 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    writeln!(out, "{}", line(header.to_vec()))?;
    for row in &rows {
        writeln!(out, "{}", line(row.iter().map(String::as_str).collect()))?;
    }
    Ok(())
}

fn version_json(v: &VersionInfo) -> serde_json::Value {
    json!({
        "key": v.key(),
        "node": v.node,
        "code": v.code,
        "rows": v.rows,
        "distinct_signatures": v.distinct,
        "bytes": v.bytes,
        "segments": v.segments,
        "quarantined": v.quarantined,
        "corrupt": v.corrupt,
        "last_written": v.last_written.map(utc),
        "outputs": v.outputs.iter().map(|(n, t)| json!({"name": n, "type": t})).collect::<Vec<_>>(),
    })
}

/// A version's segment files: name, bytes, when written.
fn segments(dir: &std::path::Path) -> Vec<(String, u64, String)> {
    let mut files: Vec<(String, u64, String)> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().to_string_lossy().to_string();
                    let meta = e.metadata().ok()?;
                    let at = meta.modified().ok().map(utc).unwrap_or_default();
                    (name.starts_with("seg-")).then_some((name, meta.len(), at))
                })
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    files
}

/// `90s`, `15m`, `12h`, `30d` as a duration.
fn parse_age(text: &str) -> Result<Duration, String> {
    let (number, unit) = text.split_at(text.trim_end_matches(char::is_alphabetic).len());
    let n: u64 = number
        .parse()
        .map_err(|_| format!("`{text}` is not an age such as 90s, 15m, 12h or 30d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(format!("`{text}`: the unit is s, m, h or d")),
    };
    Ok(Duration::from_secs(n * secs))
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A time as `YYYY-MM-DD HH:MM:SS` in UTC.
fn utc(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rest) = (secs / 86_400, secs % 86_400);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_ages_and_sizes_read_as_people_write_them() {
        assert_eq!(utc(UNIX_EPOCH), "1970-01-01 00:00:00");
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(1_796_083_200 + 3_723)),
            "2026-12-01 01:02:03"
        );
        assert_eq!(
            utc(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29 00:00:00"
        );
        assert_eq!(parse_age("30d"), Ok(Duration::from_secs(30 * 86_400)));
        assert_eq!(parse_age("90s"), Ok(Duration::from_secs(90)));
        assert!(parse_age("3 weeks").is_err());
        assert!(parse_age("5y").is_err());
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
    }
}
