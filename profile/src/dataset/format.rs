use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A file format the engine reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Parquet,
    Csv,
    /// Newline-delimited JSON, one object per line.
    Ndjson,
    /// Arrow IPC file format (Feather v2).
    Ipc,
}

impl Format {
    pub const ALL: [Format; 4] = [Format::Parquet, Format::Csv, Format::Ndjson, Format::Ipc];

    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
            Format::Ipc => "ipc",
        }
    }

    fn extensions(self) -> &'static [&'static str] {
        match self {
            Format::Parquet => &["parquet", "parq", "pq"],
            Format::Csv => &["csv", "tsv"],
            Format::Ndjson => &["ndjson", "jsonl", "json"],
            Format::Ipc => &["arrow", "ipc", "feather"],
        }
    }

    /// The format a file name's extension says, if any; a compression extension after it is
    /// looked through (`data.csv.gz` is CSV).
    pub fn from_path(path: &str) -> Option<Format> {
        let path = super::Compression::strip(path);
        let name = path.rsplit('/').next().unwrap_or(path);
        let ext = name.rsplit_once('.')?.1.to_ascii_lowercase();
        Format::ALL
            .into_iter()
            .find(|f| f.extensions().contains(&ext.as_str()))
    }

    /// Every extension the engine recognises, for messages.
    pub fn known_extensions() -> String {
        Format::ALL
            .iter()
            .flat_map(|f| f.extensions().iter().map(|e| format!(".{e}")))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Format {
    type Err = crate::Error;

    fn from_str(s: &str) -> crate::Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "csv" => Ok(Format::Csv),
            "ndjson" | "jsonl" | "json" => Ok(Format::Ndjson),
            "ipc" | "arrow" | "feather" => Ok(Format::Ipc),
            other => Err(crate::Error::invalid(
                "format",
                format!("`{other}` (expected parquet, csv, ndjson or ipc)"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_formats_from_extensions() {
        assert_eq!(
            Format::from_path("s3://b/x/part-0.parquet"),
            Some(Format::Parquet)
        );
        assert_eq!(Format::from_path("data.CSV"), Some(Format::Csv));
        assert_eq!(Format::from_path("a.jsonl"), Some(Format::Ndjson));
        assert_eq!(Format::from_path("a.feather"), Some(Format::Ipc));
        assert_eq!(Format::from_path("dir.v2/README"), None);
        assert_eq!(Format::from_path("s3://b/a.csv.gz"), Some(Format::Csv));
        assert_eq!(Format::from_path("a.jsonl.zst"), Some(Format::Ndjson));
        assert_eq!(Format::from_path("a.gz"), None);
        assert_eq!("JSONL".parse::<Format>().unwrap(), Format::Ndjson);
        assert!("xlsx".parse::<Format>().is_err());
    }
}
