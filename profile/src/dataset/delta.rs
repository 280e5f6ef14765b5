//! Delta Lake tables, read from their log: `_delta_log/NNNNNNNNNNNNNNNNNNNN.json` commits
//! (one action a line: `add`, `remove`, `metaData`, `protocol`, ...) and
//! `NNNNNNNNNNNNNNNNNNNN.checkpoint[.PART.PARTS].parquet` checkpoints (the table's state at a
//! version). The state at version `v` is the newest complete checkpoint at or before `v` (or
//! version 0), with the commits after it up to `v` replayed: its live files are the files added
//! and not removed since.
//!
//! The listing of `_delta_log/` decides which commits and checkpoints exist; `_last_checkpoint`
//! (a hint to skip that listing) is not needed.

use super::Location;
use super::lake::{TableVersion, head_all, list_all, path_in_store, read_whole};
use crate::limits::MAX_OBJECT_BYTES;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Commit files read at once.
const READ_CONCURRENCY: usize = 16;

/// Reader features whose tables this reader reads as long as the feature is not in use where
/// it matters (checked below: column mapping mode `none`, no deletion vector on a live file),
/// or that change nothing for a reader of Parquet files.
const KNOWN_READER_FEATURES: [&str; 4] = [
    "columnMapping",
    "deletionVectors",
    "timestampNtz",
    "vacuumProtocolCheck",
];

/// What `_delta_log/` holds, by version.
#[derive(Debug, Default)]
struct Log {
    commits: BTreeMap<u64, Path>,
    /// Classic checkpoints: version → (parts expected, parts found by number).
    checkpoints: BTreeMap<u64, (u32, BTreeMap<u32, Path>)>,
}

impl Log {
    fn latest(&self) -> Option<u64> {
        let c = self.commits.keys().next_back().copied();
        let k = self.complete_checkpoints().next_back();
        c.max(k)
    }

    fn complete_checkpoints(&self) -> impl DoubleEndedIterator<Item = u64> + '_ {
        self.checkpoints
            .iter()
            .filter(|(_, (parts, found))| found.len() as u32 == *parts)
            .map(|(v, _)| *v)
    }

    /// Whether every commit in `from..=to` is in the log.
    fn has_commits(&self, from: u64, to: u64) -> bool {
        from > to || self.commits.range(from..=to).count() as u64 == to - from + 1
    }
}

/// Parses a log file's name: a commit, a classic checkpoint (single or one part of several),
/// or something else (`_last_checkpoint`, `.crc` files, compacted logs, v2 checkpoints).
fn parse_log_name(log: &mut Log, path: &Path) {
    let Some(name) = path.filename() else { return };
    let Some((version, rest)) = name.split_once('.') else {
        return;
    };
    if version.len() != 20 || !version.bytes().all(|b| b.is_ascii_digit()) {
        return;
    }
    let Ok(version) = version.parse::<u64>() else {
        return;
    };
    let parts: Vec<&str> = rest.split('.').collect();
    match parts.as_slice() {
        ["json"] => {
            log.commits.insert(version, path.clone());
        }
        ["checkpoint", "parquet"] => {
            log.checkpoints
                .insert(version, (1, BTreeMap::from([(1, path.clone())])));
        }
        ["checkpoint", part, total, "parquet"] => {
            if let (Ok(part), Ok(total)) = (part.parse::<u32>(), total.parse::<u32>()) {
                let entry = log
                    .checkpoints
                    .entry(version)
                    .or_insert_with(|| (total, BTreeMap::new()));
                if entry.0 == total {
                    entry.1.insert(part, path.clone());
                }
            }
        }
        _ => {}
    }
}

/// A live file of the table.
#[derive(Debug, Clone)]
struct Add {
    has_deletion_vector: bool,
}

/// The table's state as replayed so far.
#[derive(Debug, Default)]
struct State {
    files: BTreeMap<String, Add>,
    metadata: Option<Value>,
    protocol: Option<Value>,
}

impl State {
    /// Applies one action. A checkpoint's `remove`s are tombstones of files already absent
    /// from its `add`s.
    fn apply(&mut self, action: &Value, in_checkpoint: bool) -> std::result::Result<(), String> {
        let present = |key: &str| action.get(key).filter(|v| !v.is_null());
        if let Some(add) = present("add") {
            let path = add
                .get("path")
                .and_then(Value::as_str)
                .ok_or("an `add` without a path")?;
            let dv = add.get("deletionVector").is_some_and(|v| !v.is_null());
            self.files.insert(
                path.to_string(),
                Add {
                    has_deletion_vector: dv,
                },
            );
        } else if let Some(remove) = present("remove") {
            if !in_checkpoint {
                let path = remove
                    .get("path")
                    .and_then(Value::as_str)
                    .ok_or("a `remove` without a path")?;
                self.files.remove(path);
            }
        } else if let Some(meta) = present("metaData") {
            self.metadata = Some(meta.clone());
        } else if let Some(protocol) = present("protocol") {
            self.protocol = Some(protocol.clone());
        }
        Ok(())
    }
}

/// The live data files of the Delta table at `location` at `requested` (default: the latest
/// version), and the version read.
pub(super) async fn live_files(
    location: &Location,
    store: &Arc<dyn ObjectStore>,
    requested: Option<i64>,
) -> Result<(Vec<ObjectMeta>, TableVersion)> {
    let table_err = |detail: String| Error::Table {
        table: location.uri.clone(),
        format: "Delta",
        detail,
    };
    let log_prefix = location.path.clone().join("_delta_log");
    let depth = log_prefix.parts().count() + 1;
    let mut log = Log::default();
    for object in list_all(store.as_ref(), &log_prefix, location).await? {
        if object.location.parts().count() == depth {
            parse_log_name(&mut log, &object.location);
        }
    }
    let latest = log.latest().ok_or_else(|| {
        table_err("_delta_log/ holds no commit (NNNNNNNNNNNNNNNNNNNN.json) or checkpoint".into())
    })?;
    let version = match requested {
        None => latest,
        Some(v) => match u64::try_from(v) {
            Ok(v) if v <= latest => v,
            _ => {
                return Err(table_err(format!(
                    "version {v} does not exist (the versions are 0 to {latest})"
                )));
            }
        },
    };
    // The newest complete checkpoint at or before the version whose later commits are all
    // there; else the whole log from version 0.
    let start = log
        .complete_checkpoints()
        .rev()
        .find(|&c| c <= version && log.has_commits(c + 1, version));
    if start.is_none() && !log.has_commits(0, version) {
        return Err(table_err(format!(
            "the log no longer holds what version {version} needs (no checkpoint at or before \
             it with every later commit, and commits from 0 are gone): read a later version"
        )));
    }
    let mut state = State::default();
    if let Some(cp) = start {
        let (_, parts) = &log.checkpoints[&cp];
        for path in parts.values() {
            let bytes = read_whole(store.as_ref(), path, location, MAX_OBJECT_BYTES).await?;
            for action in checkpoint_actions(bytes).map_err(|e| {
                table_err(format!(
                    "checkpoint {} is not readable: {e}",
                    location.uri_of(path)
                ))
            })? {
                state
                    .apply(&action, true)
                    .map_err(|e| table_err(format!("checkpoint {}: {e}", location.uri_of(path))))?;
            }
        }
    }
    let first = start.map_or(0, |c| c + 1);
    let commits: Vec<(u64, Path)> = log
        .commits
        .range(first..=version)
        .map(|(v, p)| (*v, p.clone()))
        .collect();
    let mut bodies = futures::stream::iter(commits)
        .map(|(v, path)| {
            let store = Arc::clone(store);
            async move {
                let bytes = read_whole(store.as_ref(), &path, location, MAX_OBJECT_BYTES).await?;
                Ok::<_, Error>((v, path, bytes))
            }
        })
        .buffered(READ_CONCURRENCY);
    while let Some((v, path, bytes)) = bodies.try_next().await? {
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let action: Value = serde_json::from_slice(line).map_err(|e| {
                table_err(format!(
                    "commit {v} ({}), line {}: not a JSON action: {e}",
                    location.uri_of(&path),
                    i + 1
                ))
            })?;
            state
                .apply(&action, false)
                .map_err(|e| table_err(format!("commit {v}, line {}: {e}", i + 1)))?;
        }
    }
    check_readable(&state, version).map_err(table_err)?;
    // Sorted by path (as a plain listing is), so that plans of one version are alike.
    let paths = state
        .files
        .keys()
        .map(|name| path_in_store(location, &location.path, name, "Delta"))
        .collect::<Result<BTreeSet<Path>>>()?;
    let at = format!("version {version}");
    let objects = head_all(store, location, paths.into_iter().collect(), "Delta", &at).await?;
    Ok((objects, TableVersion::Delta { version }))
}

/// Refuses what this reader would get wrong: a reader version or feature it does not know,
/// column mapping (file columns named by id or physical name), partition columns (values held
/// in the log, not the files), deletion vectors on live files (rows deleted without rewriting
/// the file), data files not in Parquet.
fn check_readable(state: &State, version: u64) -> std::result::Result<(), String> {
    let protocol = state
        .protocol
        .as_ref()
        .ok_or_else(|| format!("version {version} has no protocol action"))?;
    let metadata = state
        .metadata
        .as_ref()
        .ok_or_else(|| format!("version {version} has no metaData action"))?;
    let reader_version = protocol
        .get("minReaderVersion")
        .and_then(Value::as_i64)
        .unwrap_or(1);
    if reader_version > 3 {
        return Err(format!(
            "it needs reader version {reader_version}; this reader implements versions 1 to 3"
        ));
    }
    if reader_version == 3 {
        let features: Vec<&str> = protocol
            .get("readerFeatures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let unknown: Vec<&str> = features
            .iter()
            .copied()
            .filter(|f| !KNOWN_READER_FEATURES.contains(f))
            .collect();
        if !unknown.is_empty() {
            return Err(format!(
                "it uses reader feature(s) {} that this reader does not implement (it reads \
                 tables with {})",
                unknown.join(", "),
                KNOWN_READER_FEATURES.join(", ")
            ));
        }
    }
    let provider = metadata
        .pointer("/format/provider")
        .and_then(Value::as_str)
        .unwrap_or("parquet");
    if !provider.eq_ignore_ascii_case("parquet") {
        return Err(format!(
            "its data files are `{provider}`; only Parquet is read"
        ));
    }
    let mode = config_value(metadata, "delta.columnMapping.mode");
    if let Some(mode) = mode.filter(|m| !m.eq_ignore_ascii_case("none")) {
        return Err(format!(
            "column mapping (delta.columnMapping.mode = {mode}) is not supported: the files' \
             column names are not the table's"
        ));
    }
    let partition_columns: Vec<&str> = metadata
        .get("partitionColumns")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if !partition_columns.is_empty() {
        return Err(format!(
            "partition columns ({}) are not supported yet: their values are in the log, not \
             in the data files",
            partition_columns.join(", ")
        ));
    }
    if let Some((path, _)) = state.files.iter().find(|(_, a)| a.has_deletion_vector) {
        return Err(format!(
            "deletion vectors are not supported: live file {path} at version {version} has \
             rows deleted by one (rewrite the table without them, e.g. REORG TABLE ... APPLY \
             (PURGE), or disable delta.enableDeletionVectors)"
        ));
    }
    Ok(())
}

/// A `configuration` entry of the `metaData` action (an object in a commit; in a checkpoint,
/// read through arrow's JSON writer, an object as well).
fn config_value<'a>(metadata: &'a Value, key: &str) -> Option<&'a str> {
    metadata.get("configuration")?.get(key)?.as_str()
}

/// The actions of a checkpoint file, as JSON objects like a commit's lines: the Parquet rows of
/// its `add`, `remove`, `metaData` and `protocol` columns, written out by arrow's JSON writer
/// (null fields left out).
fn checkpoint_actions(bytes: bytes::Bytes) -> std::result::Result<Vec<Value>, String> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes).map_err(|e| e.to_string())?;
    let wanted = ["add", "remove", "metaData", "protocol"];
    let roots: Vec<usize> = builder
        .schema()
        .fields()
        .iter()
        .enumerate()
        .filter(|(_, f)| wanted.contains(&f.name().as_str()))
        .map(|(i, _)| i)
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let reader = builder
        .with_projection(mask)
        .build()
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|e| e.to_string())?;
        let mut writer = arrow::json::LineDelimitedWriter::new(Vec::new());
        writer.write(&batch).map_err(|e| e.to_string())?;
        writer.finish().map_err(|e| e.to_string())?;
        let text = writer.into_inner();
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            out.push(serde_json::from_slice(line).map_err(|e| e.to_string())?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn log_of(names: &[&str]) -> Log {
        let mut log = Log::default();
        for n in names {
            parse_log_name(&mut log, &Path::from(format!("t/_delta_log/{n}")));
        }
        log
    }

    #[test]
    fn names_commits_and_checkpoints() {
        let log = log_of(&[
            "00000000000000000000.json",
            "00000000000000000001.json",
            "00000000000000000002.checkpoint.0000000001.0000000002.parquet",
            "00000000000000000003.checkpoint.parquet",
            "00000000000000000003.json",
            "00000000000000000003.crc",
            "_last_checkpoint",
            "00000000000000000004.checkpoint.80a083e8-7026-4e79-81be-64bd76c43a11.json",
        ]);
        assert_eq!(log.commits.keys().copied().collect::<Vec<_>>(), [0, 1, 3]);
        // The two-part checkpoint at 2 lacks a part: only 3 is complete.
        assert_eq!(log.complete_checkpoints().collect::<Vec<_>>(), [3]);
        assert_eq!(log.latest(), Some(3));
        assert!(!log.has_commits(0, 3));
        assert!(log.has_commits(4, 3));
    }

    #[test]
    fn replays_adds_and_removes() {
        let mut s = State::default();
        for a in [
            json!({"protocol": {"minReaderVersion": 1, "minWriterVersion": 2}}),
            json!({"metaData": {"partitionColumns": [], "configuration": {}}}),
            json!({"add": {"path": "a.parquet", "size": 1}}),
            json!({"add": {"path": "b.parquet", "size": 1}}),
            json!({"remove": {"path": "a.parquet"}}),
            json!({"commitInfo": {"operation": "DELETE"}}),
        ] {
            s.apply(&a, false).unwrap();
        }
        assert_eq!(s.files.keys().collect::<Vec<_>>(), ["b.parquet"]);
        check_readable(&s, 1).unwrap();
        // In a checkpoint a remove is a tombstone: the add it names is not in the checkpoint.
        s.apply(&json!({"remove": {"path": "b.parquet"}}), true)
            .unwrap();
        assert_eq!(s.files.len(), 1);
    }

    #[test]
    fn refuses_what_it_cannot_read() {
        let base = |protocol: Value, meta: Value, dv: bool| {
            let mut s = State::default();
            s.apply(&json!({ "protocol": protocol }), false).unwrap();
            s.apply(&json!({ "metaData": meta }), false).unwrap();
            let dv = if dv {
                json!({"storageType": "u", "pathOrInlineDv": "x", "sizeInBytes": 1, "cardinality": 1})
            } else {
                Value::Null
            };
            s.apply(
                &json!({"add": {"path": "f.parquet", "deletionVector": dv}}),
                false,
            )
            .unwrap();
            check_readable(&s, 7)
        };
        let plain = json!({"partitionColumns": [], "configuration": {}});
        let v3 = |f: &[&str]| json!({"minReaderVersion": 3, "readerFeatures": f});
        assert!(base(v3(&["deletionVectors"]), plain.clone(), false).is_ok());
        let e = base(v3(&["deletionVectors"]), plain.clone(), true).unwrap_err();
        assert!(e.contains("deletion vectors"), "{e}");
        let e = base(v3(&["variantType"]), plain.clone(), false).unwrap_err();
        assert!(e.contains("variantType"), "{e}");
        let e = base(json!({"minReaderVersion": 4}), plain.clone(), false).unwrap_err();
        assert!(e.contains("reader version 4"), "{e}");
        let mapped =
            json!({"partitionColumns": [], "configuration": {"delta.columnMapping.mode": "name"}});
        let e = base(json!({"minReaderVersion": 2}), mapped, false).unwrap_err();
        assert!(e.contains("column mapping"), "{e}");
        let parted = json!({"partitionColumns": ["day"], "configuration": {}});
        let e = base(json!({"minReaderVersion": 1}), parted, false).unwrap_err();
        assert!(e.contains("partition columns (day)"), "{e}");
    }
}
