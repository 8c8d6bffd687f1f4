//! Operator tools over a data directory: `clicktrail wal verify` and `wal dump`, with
//! engine records decoded to readable JSON. Read-only: a running server's logs can be
//! inspected.

use std::io::Write;
use std::path::{Path, PathBuf};

/// Every log under `data_dir` (the control log first, then shards, then a staging area
/// left by an interrupted reshard), with its display name.
fn logs(data_dir: &Path) -> Result<Vec<(String, PathBuf)>, crate::Error> {
    if !data_dir.is_dir() {
        return Err(crate::Error::Io {
            path: data_dir.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "not a directory"),
        });
    }
    let mut out = Vec::new();
    let control = crate::layout::control_dir(data_dir);
    if wal::inspect::is_log_dir(&control) {
        out.push(("control".to_string(), control));
    }
    for base in [data_dir.to_path_buf(), crate::layout::staging_dir(data_dir)] {
        let Ok(entries) = wal::dirs::subdirs(&base) else {
            continue;
        };
        let mut shards: Vec<(String, PathBuf)> = entries
            .into_iter()
            .filter(|(name, path)| name.starts_with("shard-") && wal::inspect::is_log_dir(path))
            .map(|(_, path)| {
                let rel = path
                    .strip_prefix(data_dir)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                (rel, path)
            })
            .collect();
        shards.sort();
        out.extend(shards);
    }
    if out.is_empty() && wal::inspect::is_log_dir(data_dir) {
        // A single log directory given directly.
        out.push((".".to_string(), data_dir.to_path_buf()));
    }
    Ok(out)
}

/// Checks every log and snapshot under `data_dir`; `Err` on corruption. The `Ok` text is a
/// human summary (logs, segments, records, snapshots).
pub fn verify(data_dir: &Path) -> Result<String, crate::Error> {
    let logs = logs(data_dir)?;
    if logs.is_empty() {
        return Err(crate::Error::Config(format!(
            "{}: no logs found",
            data_dir.display()
        )));
    }
    let mut lines = Vec::new();
    for (name, dir) in &logs {
        let summary = wal::inspect::verify_log(dir)?;
        lines.push(format!("{name}: {summary}"));
    }
    lines.push(format!("{} logs OK", logs.len()));
    Ok(lines.join("\n"))
}

/// Writes every record under `data_dir` as one JSON object per line:
/// `{"log", "lsn", "kind", "length", "record": <decoded>}`. A snapshot the log starts from
/// is shown first as `{"log", "snapshot_lsn", "length", "snapshot": <summary>}`.
pub fn dump(data_dir: &Path, out: &mut dyn Write) -> Result<(), crate::Error> {
    let io = |e: std::io::Error| crate::Error::Io {
        path: data_dir.to_path_buf(),
        source: e,
    };
    for (name, dir) in logs(data_dir)? {
        let (snapshot, records) = wal::inspect::read_log(&dir)?;
        if let Some(s) = snapshot {
            let line = serde_json::json!({
                "log": name,
                "snapshot_lsn": s.lsn,
                "length": s.data.len(),
                "snapshot": crate::codec::snapshot_summary(&s.data),
            });
            writeln!(out, "{line}").map_err(io)?;
        }
        for r in records {
            let line = serde_json::json!({
                "log": name,
                "lsn": r.lsn,
                "kind": r.kind,
                "length": r.payload.len(),
                "record": crate::codec::record_to_json(r.kind, &r.payload),
            });
            writeln!(out, "{line}").map_err(io)?;
        }
    }
    Ok(())
}
