//! Lake table formats: a prefix that holds a Delta Lake log (`_delta_log/`) or Apache Iceberg
//! metadata (`metadata/*.metadata.json`) is a table, not a folder of files. Its live data files,
//! at the version read, are what the table says they are: files the table removed are not
//! profiled, and the version read is recorded in the plan and the profile.
//!
//! Both formats are read directly (see `delta.rs`, `iceberg.rs`): the `deltalake` and
//! `iceberg` crates bring their own arrow, parquet and object_store versions (and, for
//! `deltalake`, DataFusion) into the workspace. The live files then go to the planner as the
//! dataset's file list, so every strategy, backend and the plan work unchanged.
//!
//! What a reader of the table would need and this one does not do (Delta deletion vectors,
//! column mapping, partition columns; Iceberg delete files, non-Parquet data files) is refused
//! with an error that names the table and the feature, never read as plain files.

use super::Location;
use crate::{Error, Result};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectMeta, ObjectStore, ObjectStoreExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Files whose metadata is fetched at once when a table's live files are resolved.
const HEAD_CONCURRENCY: usize = 16;

/// What the user asks of a lake table (nothing: its current version).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableOptions {
    /// A Delta table's version, or an Iceberg table's snapshot id, to read instead of the
    /// current one.
    pub version: Option<i64>,
}

/// The version of a lake table a dataset was read at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "format", rename_all = "snake_case")]
pub enum TableVersion {
    /// A Delta Lake table, at a version (commit) of its log.
    Delta {
        /// The version read.
        version: u64,
    },
    /// An Apache Iceberg table, at one of its snapshots.
    Iceberg {
        /// The snapshot read.
        snapshot_id: i64,
        /// Its sequence number (0 in a format-version 1 table).
        sequence_number: i64,
        /// The metadata file the snapshot was found in.
        metadata: String,
    },
}

impl TableVersion {
    /// One line, for summaries: `delta version 3`, `iceberg snapshot 77487… (sequence 3)`.
    pub fn describe(&self) -> String {
        match self {
            TableVersion::Delta { version } => format!("delta version {version}"),
            TableVersion::Iceberg {
                snapshot_id,
                sequence_number,
                ..
            } => format!("iceberg snapshot {snapshot_id} (sequence {sequence_number})"),
        }
    }
}

/// When `location` is a lake table: its live data files at the version `table` asks for (the
/// current one by default), and that version. `None` for any other dataset, which a version
/// asked for makes an error.
pub(super) async fn live_files(
    location: &Location,
    store: &std::sync::Arc<dyn ObjectStore>,
    format: Option<super::Format>,
    table: &TableOptions,
) -> Result<Option<(Vec<ObjectMeta>, TableVersion)>> {
    let Some(found) = detect(location, store.as_ref()).await? else {
        return match table.version {
            Some(v) => Err(Error::invalid(
                "table version",
                format!(
                    "{v} was asked for, but {} is not a Delta Lake table (no _delta_log/) nor \
                     an Iceberg table (no metadata/*.metadata.json)",
                    location.uri
                ),
            )),
            None => Ok(None),
        };
    };
    let name = match found {
        Found::Delta => "Delta",
        Found::Iceberg(_) => "Iceberg",
    };
    if let Some(f) = format.filter(|f| *f != super::Format::Parquet) {
        return Err(Error::Table {
            table: location.uri.clone(),
            format: name,
            detail: format!("its data files are Parquet, not {f} (leave out --format)"),
        });
    }
    let got = match found {
        Found::Delta => super::delta::live_files(location, store, table.version).await?,
        Found::Iceberg(metadata) => {
            super::iceberg::live_files(location, store, metadata, table.version).await?
        }
    };
    tracing::debug!(table = %location.uri, version = ?got.1, files = got.0.len(), "lake table");
    Ok(Some(got))
}

/// The table format found at a location.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Found {
    Delta,
    /// An Iceberg table, with the metadata file to start from when the URI named one.
    Iceberg(Option<Path>),
}

/// Whether `location` is a lake table: a `.metadata.json` file, or a prefix with a
/// `_delta_log/` or a `metadata/` holding `.metadata.json` files. Globs and paths with a data
/// file's extension are never tables.
pub(super) async fn detect(location: &Location, store: &dyn ObjectStore) -> Result<Option<Found>> {
    if location.glob.is_some() {
        return Ok(None);
    }
    if location.path.as_ref().ends_with(".metadata.json") {
        return Ok(Some(Found::Iceberg(Some(location.path.clone()))));
    }
    // A URI naming a data file is not a table: no listing for it.
    if super::Format::from_path(location.path.as_ref()).is_some() {
        return Ok(None);
    }
    if has_any(
        store,
        &location.path.clone().join("_delta_log"),
        location,
        |_| true,
    )
    .await?
    {
        return Ok(Some(Found::Delta));
    }
    let metadata = location.path.clone().join("metadata");
    if has_any(store, &metadata, location, |p| {
        p.filename()
            .is_some_and(|f| f.ends_with(".metadata.json") || f == "version-hint.text")
    })
    .await?
    {
        return Ok(Some(Found::Iceberg(None)));
    }
    Ok(None)
}

/// Whether the prefix holds an object `wanted` accepts (the listing stops at the first).
async fn has_any(
    store: &dyn ObjectStore,
    prefix: &Path,
    location: &Location,
    wanted: impl Fn(&Path) -> bool,
) -> Result<bool> {
    let mut list = store.list(Some(prefix));
    while let Some(item) = list.next().await {
        match item {
            Ok(meta) if wanted(&meta.location) => return Ok(true),
            Ok(_) => {}
            Err(
                object_store::Error::NotFound { .. }
                | object_store::Error::NotSupported { .. }
                | object_store::Error::NotImplemented { .. },
            ) => return Ok(false),
            // A local path that is a file, not a directory, has no children.
            Err(_) if location.is_local() => return Ok(false),
            Err(e) => return Err(Error::from_store(&location.uri, e)),
        }
    }
    Ok(false)
}

/// Every object under `prefix`, sorted by path.
pub(super) async fn list_all(
    store: &dyn ObjectStore,
    prefix: &Path,
    location: &Location,
) -> Result<Vec<ObjectMeta>> {
    let mut objects: Vec<ObjectMeta> = match store.list(Some(prefix)).try_collect().await {
        Ok(list) => list,
        Err(object_store::Error::NotFound { .. }) => Vec::new(),
        Err(e) => return Err(Error::from_store(&location.uri, e)),
    };
    objects.sort_by(|a, b| a.location.cmp(&b.location));
    Ok(objects)
}

/// An object read whole, refused past `max` bytes.
pub(super) async fn read_whole(
    store: &dyn ObjectStore,
    path: &Path,
    location: &Location,
    max: u64,
) -> Result<bytes::Bytes> {
    let uri = location.uri_of(path);
    let got = store
        .get(path)
        .await
        .map_err(|e| Error::from_store(&uri, e))?;
    if got.meta.size > max {
        return Err(Error::TooLarge {
            what: uri,
            detail: format!(
                "a table metadata file of {} bytes is too large to read whole",
                got.meta.size
            ),
            limit: crate::limits::bytes_in_words(max),
        });
    }
    got.bytes().await.map_err(|e| Error::from_store(&uri, e))
}

/// The path in `location`'s store of a file a table names: a URI on the same store (Iceberg
/// writes absolute URIs), or a path relative to the table's root (Delta's, percent-encoded).
pub(super) fn path_in_store(
    location: &Location,
    table_root: &Path,
    name: &str,
    what: &'static str,
) -> Result<Path> {
    let outside = |why: &str| Error::Table {
        table: location.uri.clone(),
        format: what,
        detail: format!("`{name}` {why}"),
    };
    if let Some((scheme, _)) = name.split_once("://") {
        let other = Location::parse(name).map_err(|e| outside(&e.to_string()))?;
        let same_root = other.root == location.root
            // `s3a://` is `s3://` to the store; Iceberg written by Spark often says s3a.
            || (matches!(scheme, "s3" | "s3a")
                && matches!(location.root.scheme(), "s3" | "s3a")
                && other.root.host_str() == location.root.host_str());
        if !same_root || other.glob.is_some() {
            return Err(outside(&format!(
                "is outside the table's store ({}); only files on it are read",
                location.root
            )));
        }
        return Ok(other.path);
    }
    let decoded = super::location::percent_decode(name);
    let relative = Path::parse(decoded.trim_start_matches('/'))
        .map_err(|e| outside(&format!("is not a valid path: {e}")))?;
    Ok(Path::from_iter(table_root.parts().chain(relative.parts())))
}

/// The metadata of each file, in order; a file the table lists but the store lacks is an error
/// that says so (a table cleaned up under its log, e.g. vacuumed past the version read).
pub(super) async fn head_all(
    store: &std::sync::Arc<dyn ObjectStore>,
    location: &Location,
    paths: Vec<Path>,
    format: &'static str,
    at: &str,
) -> Result<Vec<ObjectMeta>> {
    futures::stream::iter(paths)
        .map(|path| {
            let store = std::sync::Arc::clone(store);
            async move {
                let uri = location.uri_of(&path);
                match store.head(&path).await {
                    Ok(meta) => Ok(meta),
                    Err(object_store::Error::NotFound { .. }) => Err(Error::Table {
                        table: location.uri.clone(),
                        format,
                        detail: format!(
                            "data file {uri} of {at} is missing from the store (removed by a \
                             vacuum or expiry after that version?)"
                        ),
                    }),
                    Err(e) => Err(Error::from_store(&uri, e)),
                }
            }
        })
        .buffered(HEAD_CONCURRENCY)
        .try_collect()
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_relative_and_absolute_names_in_the_table_store() {
        let loc = Location::parse("s3://lake/db/t").unwrap();
        let root = loc.path.clone();
        assert_eq!(
            path_in_store(&loc, &root, "part%3D1/x.parquet", "Delta")
                .unwrap()
                .as_ref(),
            "db/t/part=1/x.parquet"
        );
        assert_eq!(
            path_in_store(&loc, &root, "s3a://lake/db/t/data/a.parquet", "Iceberg")
                .unwrap()
                .as_ref(),
            "db/t/data/a.parquet"
        );
        let err = path_in_store(&loc, &root, "s3://other/x.parquet", "Iceberg").unwrap_err();
        assert!(
            err.to_string().contains("outside the table's store"),
            "{err}"
        );
    }
}
