//! Apache Iceberg tables, read through their metadata: the table metadata file
//! (`metadata/vN.metadata.json`, the one `version-hint.text` names, or the one with the highest
//! version number; or the file the URI names, e.g. the one a catalog points at), its current
//! (or a requested) snapshot, that snapshot's manifest list (Avro), the manifests it lists
//! (Avro), and their entries whose status is not DELETED: the snapshot's live data files.

use super::Location;
use super::avro::{self, Value};
use super::lake::{TableVersion, head_all, list_all, path_in_store, read_whole};
use crate::limits::MAX_OBJECT_BYTES;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore};
use serde_json::Value as Json;
use std::collections::BTreeSet;
use std::io::Read;
use std::sync::Arc;

/// Manifests read at once.
const READ_CONCURRENCY: usize = 16;

/// Manifest entry status: 0 EXISTING, 1 ADDED, 2 DELETED.
const DELETED: i64 = 2;

/// The live data files of the Iceberg table at `location` (or whose metadata file is
/// `metadata`), at the snapshot `requested` (default: the current one), and the snapshot read.
pub(super) async fn live_files(
    location: &Location,
    store: &Arc<dyn ObjectStore>,
    metadata: Option<Path>,
    requested: Option<i64>,
) -> Result<(Vec<ObjectMeta>, TableVersion)> {
    let table_err = |detail: String| Error::Table {
        table: location.uri.clone(),
        format: "Iceberg",
        detail,
    };
    let metadata_path = match metadata {
        Some(p) => p,
        None => current_metadata(location, store.as_ref()).await?,
    };
    let metadata_uri = location.uri_of(&metadata_path);
    let raw = read_whole(store.as_ref(), &metadata_path, location, MAX_OBJECT_BYTES).await?;
    let raw = maybe_gunzip(&metadata_path, raw).map_err(table_err)?;
    let meta: Json = serde_json::from_slice(&raw)
        .map_err(|e| table_err(format!("{metadata_uri} is not JSON: {e}")))?;
    let format_version = meta
        .get("format-version")
        .and_then(Json::as_i64)
        .unwrap_or(1);
    if !(1..=2).contains(&format_version) {
        return Err(table_err(format!(
            "format version {format_version} is not supported (versions 1 and 2 are)"
        )));
    }
    let snapshot_id = match requested {
        Some(id) => id,
        None => match meta.get("current-snapshot-id").and_then(Json::as_i64) {
            Some(id) if id >= 0 => id,
            _ => {
                return Err(Error::NoFiles {
                    uri: location.uri.clone(),
                    looked_for: format!(
                        "the data files of the Iceberg table's current snapshot: {metadata_uri} \
                         has none (an empty table)"
                    ),
                });
            }
        },
    };
    let snapshots = meta
        .get("snapshots")
        .and_then(Json::as_array)
        .cloned()
        .unwrap_or_default();
    let snapshot = snapshots
        .iter()
        .find(|s| s.get("snapshot-id").and_then(Json::as_i64) == Some(snapshot_id))
        .ok_or_else(|| {
            let known: Vec<String> = snapshots
                .iter()
                .filter_map(|s| s.get("snapshot-id").and_then(Json::as_i64))
                .map(|id| id.to_string())
                .collect();
            table_err(format!(
                "snapshot {snapshot_id} is not in {metadata_uri} (its snapshots: {})",
                if known.is_empty() {
                    "none".to_string()
                } else {
                    known.join(", ")
                }
            ))
        })?;
    let sequence_number = snapshot
        .get("sequence-number")
        .and_then(Json::as_i64)
        .unwrap_or(0);
    // Format version 1 may list the manifests in the snapshot instead of a manifest list.
    let manifests: Vec<(String, i64)> = match snapshot.get("manifest-list").and_then(Json::as_str) {
        Some(list) => {
            let path = path_in_store(location, &location.path, list, "Iceberg")?;
            let records = read_avro(store.as_ref(), &path, location).await?;
            let mut out = Vec::with_capacity(records.len());
            for r in records {
                let manifest = r
                    .field("manifest_path")
                    .and_then(Value::as_str)
                    .ok_or_else(|| {
                        table_err(format!(
                            "manifest list {list}: an entry without manifest_path"
                        ))
                    })?;
                let content = r.field("content").and_then(Value::as_long).unwrap_or(0);
                out.push((manifest.to_string(), content));
            }
            out
        }
        None => snapshot
            .get("manifests")
            .and_then(Json::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Json::as_str)
                    .map(|m| (m.to_string(), 0))
                    .collect()
            })
            .ok_or_else(|| {
                table_err(format!(
                    "snapshot {snapshot_id} has neither a manifest-list nor manifests"
                ))
            })?,
    };
    let at = format!("snapshot {snapshot_id}");
    let per_manifest: Vec<Vec<String>> = futures::stream::iter(manifests)
        .map(|(manifest, content)| {
            let store = Arc::clone(store);
            let at = &at;
            async move {
                let path = path_in_store(location, &location.path, &manifest, "Iceberg")?;
                let entries = read_avro(store.as_ref(), &path, location).await?;
                live_entries(&manifest, content, &entries, at).map_err(table_err)
            }
        })
        .buffered(READ_CONCURRENCY)
        .try_collect()
        .await?;
    let mut paths = BTreeSet::new();
    for file in per_manifest.into_iter().flatten() {
        paths.insert(path_in_store(location, &location.path, &file, "Iceberg")?);
    }
    let objects = head_all(store, location, paths.into_iter().collect(), "Iceberg", &at).await?;
    Ok((
        objects,
        TableVersion::Iceberg {
            snapshot_id,
            sequence_number,
            metadata: metadata_uri,
        },
    ))
}

/// The data files a manifest's entries hold live (status not DELETED); refuses delete files
/// (format 2 position and equality deletes: rows deleted without rewriting their file) and
/// data files not in Parquet.
fn live_entries(
    manifest: &str,
    content: i64,
    entries: &[Value],
    at: &str,
) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    for entry in entries {
        let status = entry.field("status").and_then(Value::as_long).unwrap_or(0);
        if status == DELETED {
            continue;
        }
        let file = entry
            .field("data_file")
            .ok_or_else(|| format!("manifest {manifest}: an entry without data_file"))?;
        let path = file
            .field("file_path")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("manifest {manifest}: a data file without file_path"))?;
        let file_content = file.field("content").and_then(Value::as_long).unwrap_or(0);
        if content != 0 || file_content != 0 {
            let kind = match file_content {
                1 => "position delete file",
                2 => "equality delete file",
                _ => "delete file",
            };
            return Err(format!(
                "row-level deletes are not supported: {at} has the {kind} {path} (rows deleted \
                 without rewriting their data files; compact the table, or write it with \
                 copy-on-write deletes)"
            ));
        }
        let format = file
            .field("file_format")
            .and_then(Value::as_str)
            .unwrap_or("PARQUET");
        if !format.eq_ignore_ascii_case("parquet") {
            return Err(format!(
                "data file {path} is {format}; only Parquet data files are read"
            ));
        }
        out.push(path.to_string());
    }
    Ok(out)
}

/// The table's current metadata file: the one `metadata/version-hint.text` names, else the one
/// with the highest version (`vN.metadata.json` or `NNNNN-<uuid>.metadata.json`).
async fn current_metadata(location: &Location, store: &dyn ObjectStore) -> Result<Path> {
    let dir = location.path.clone().join("metadata");
    let table_err = |detail: String| Error::Table {
        table: location.uri.clone(),
        format: "Iceberg",
        detail,
    };
    let objects = list_all(store, &dir, location).await?;
    let hint = dir.clone().join("version-hint.text");
    if objects.iter().any(|o| o.location == hint) {
        let text = read_whole(store, &hint, location, 1 << 10).await?;
        let text = String::from_utf8_lossy(&text).trim().to_string();
        let named = dir.clone().join(format!("v{text}.metadata.json"));
        if objects.iter().any(|o| o.location == named) {
            return Ok(named);
        }
        if let Some(o) = objects.iter().find(|o| {
            o.location.filename().is_some_and(|f| {
                f.ends_with(".metadata.json") && version_of(f) == text.parse().ok()
            })
        }) {
            return Ok(o.location.clone());
        }
        return Err(table_err(format!(
            "metadata/version-hint.text names version {text}, whose metadata file is not in \
             metadata/"
        )));
    }
    let mut best: Option<(u64, &ObjectMeta)> = None;
    let mut tie: Option<&ObjectMeta> = None;
    for o in &objects {
        let Some(name) = o.location.filename() else {
            continue;
        };
        if !name.ends_with(".metadata.json")
            || o.location.parts().count() != dir.parts().count() + 1
        {
            continue;
        }
        let Some(v) = version_of(name) else { continue };
        match best {
            Some((b, _)) if b > v => {}
            Some((b, _)) if b == v => tie = Some(o),
            _ => {
                best = Some((v, o));
                tie = None;
            }
        }
    }
    match (best, tie) {
        (Some((v, a)), Some(b)) => Err(table_err(format!(
            "metadata/ has two metadata files of version {v} ({} and {}), from two writers; \
             give the URI of the one the catalog points at",
            location.uri_of(&a.location),
            location.uri_of(&b.location)
        ))),
        (Some((_, o)), None) => Ok(o.location.clone()),
        (None, _) => Err(table_err(
            "metadata/ holds no vN.metadata.json or NNNNN-<uuid>.metadata.json file; give the \
             URI of the table's metadata file"
                .into(),
        )),
    }
}

/// The version in a metadata file's name: `v3.metadata.json` and `00003-<uuid>.metadata.json`
/// are version 3.
fn version_of(name: &str) -> Option<u64> {
    let digits: String = name
        .trim_start_matches('v')
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// Metadata files may be gzipped (`*.gz.metadata.json`, `*.metadata.json.gz`).
fn maybe_gunzip(path: &Path, raw: bytes::Bytes) -> std::result::Result<bytes::Bytes, String> {
    if !raw.starts_with(&[0x1f, 0x8b]) {
        return Ok(raw);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(&raw[..])
        .take(MAX_OBJECT_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{path}: gzip: {e}"))?;
    if out.len() as u64 > MAX_OBJECT_BYTES {
        return Err(format!("{path}: decompresses to more than 1 GiB"));
    }
    Ok(out.into())
}

async fn read_avro(
    store: &dyn ObjectStore,
    path: &Path,
    location: &Location,
) -> Result<Vec<Value>> {
    let bytes = read_whole(store, path, location, MAX_OBJECT_BYTES).await?;
    avro::read_container(&bytes, MAX_OBJECT_BYTES)
        .map(|(records, _)| records)
        .map_err(|detail| Error::Corrupt {
            file: location.uri_of(path),
            format: "Avro",
            detail,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(status: i64, content: i64, path: &str, format: &str) -> Value {
        Value::Record(vec![
            ("status".into(), Value::Long(status)),
            (
                "data_file".into(),
                Value::Record(vec![
                    ("content".into(), Value::Long(content)),
                    ("file_path".into(), Value::String(path.into())),
                    ("file_format".into(), Value::String(format.into())),
                ]),
            ),
        ])
    }

    #[test]
    fn keeps_live_entries_and_refuses_deletes() {
        let entries = [
            entry(1, 0, "s3://b/t/data/a.parquet", "PARQUET"),
            entry(2, 0, "s3://b/t/data/gone.parquet", "PARQUET"),
            entry(0, 0, "s3://b/t/data/b.parquet", "parquet"),
        ];
        assert_eq!(
            live_entries("m.avro", 0, &entries, "snapshot 1").unwrap(),
            ["s3://b/t/data/a.parquet", "s3://b/t/data/b.parquet"]
        );
        let e = live_entries(
            "m.avro",
            1,
            &[entry(1, 1, "d.parquet", "PARQUET")],
            "snapshot 1",
        )
        .unwrap_err();
        assert!(e.contains("position delete file d.parquet"), "{e}");
        // A delete manifest whose entries are all DELETED deletes nothing.
        assert!(live_entries("m.avro", 1, &[entry(2, 1, "d.parquet", "PARQUET")], "s").is_ok());
        let e = live_entries("m.avro", 0, &[entry(1, 0, "a.orc", "ORC")], "s").unwrap_err();
        assert!(e.contains("only Parquet"), "{e}");
    }

    #[test]
    fn reads_versions_from_metadata_names() {
        assert_eq!(version_of("v12.metadata.json"), Some(12));
        assert_eq!(
            version_of("00003-1bdad95b-5c7e-41cd-814e-a37e58ece7ee.metadata.json"),
            Some(3)
        );
        assert_eq!(version_of("metadata.json"), None);
    }
}
