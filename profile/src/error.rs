//! Errors of the engine, each naming the thing at fault, and classified so that callers can
//! tell bad input (retrying will not help) from a transient failure (retrying may).

use std::fmt;

/// Whether retrying the same work can succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorClass {
    /// The input is at fault: a missing file, a corrupt footer, a wrong schema, a bad row.
    BadData,
    /// The request is at fault: an invalid option, an unknown column, a plan that does not fit.
    Invalid,
    /// Something outside the input failed (network, server, permission that may be granted later).
    Transient,
}

/// An engine error.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{uri}: not found")]
    NotFound { uri: String },

    #[error("{uri}: no data files found (looked for {looked_for})")]
    NoFiles { uri: String, looked_for: String },

    #[error("{file}: file is empty (0 bytes)")]
    EmptyFile { file: String },

    #[error("{file}: not a readable {format} file: {detail}")]
    Corrupt {
        file: String,
        format: &'static str,
        detail: String,
    },

    #[error("{file}: {detail}")]
    BadRecord { file: String, detail: String },

    #[error("{file}: changed since the plan was made ({detail}); plan the profile again")]
    Changed { file: String, detail: String },

    #[error("schema mismatch: column `{column}` {detail}")]
    SchemaMismatch { column: String, detail: String },

    #[error("{uri}: access denied: {detail}")]
    AccessDenied { uri: String, detail: String },

    #[error("{uri}: {detail}")]
    Storage { uri: String, detail: String },

    #[error("invalid {what}: {detail}")]
    Invalid { what: &'static str, detail: String },

    #[error("merge: {0}")]
    Merge(String),

    /// Something read is larger than the engine takes (see `limits`): a hostile or corrupt
    /// object, or a limit to raise.
    #[error("{what}: {detail}; the limit is {limit}")]
    TooLarge {
        /// The object, file or partial at fault.
        what: String,
        detail: String,
        limit: String,
    },

    /// A lake table (Delta Lake, Apache Iceberg) that cannot be read as the table it is: a
    /// feature this reader does not implement, or metadata that contradicts itself. The folder
    /// is never read as plain files instead (that would profile removed files as live).
    #[error("{table}: cannot read this {format} table: {detail}")]
    Table {
        table: String,
        format: &'static str,
        detail: String,
    },

    #[error("{what}: unsupported format version {found} (this build reads {supported})")]
    Version {
        what: &'static str,
        found: u32,
        supported: u32,
    },
}

impl Error {
    pub fn class(&self) -> ErrorClass {
        match self {
            Error::NotFound { .. }
            | Error::NoFiles { .. }
            | Error::EmptyFile { .. }
            | Error::Corrupt { .. }
            | Error::BadRecord { .. }
            | Error::Changed { .. }
            | Error::SchemaMismatch { .. }
            | Error::TooLarge { .. }
            | Error::Table { .. } => ErrorClass::BadData,
            Error::Invalid { .. } | Error::Merge(_) | Error::Version { .. } => ErrorClass::Invalid,
            Error::AccessDenied { .. } | Error::Storage { .. } => ErrorClass::Transient,
        }
    }

    pub(crate) fn invalid(what: &'static str, detail: impl fmt::Display) -> Self {
        Error::Invalid {
            what,
            detail: detail.to_string(),
        }
    }

    /// Maps an object store error on `uri` to the engine's vocabulary.
    pub(crate) fn from_store(uri: &str, err: object_store::Error) -> Self {
        use object_store::Error as E;
        match err {
            E::NotFound { .. } => Error::NotFound {
                uri: uri.to_string(),
            },
            E::PermissionDenied { source, .. } | E::Unauthenticated { source, .. } => {
                Error::AccessDenied {
                    uri: uri.to_string(),
                    detail: source.to_string(),
                }
            }
            other => {
                let detail = error_chain(&other);
                // Servers answer a missing bucket or a bad key with codes inside a generic error.
                if detail.contains("NoSuchBucket") || detail.contains("NoSuchKey") {
                    Error::NotFound {
                        uri: format!("{uri} ({})", short_reason(&detail)),
                    }
                } else if [
                    "AccessDenied",
                    "InvalidAccessKeyId",
                    "SignatureDoesNotMatch",
                    "403 Forbidden",
                    "401 Unauthorized",
                ]
                .iter()
                .any(|code| detail.contains(code))
                {
                    Error::AccessDenied {
                        uri: uri.to_string(),
                        detail,
                    }
                } else {
                    Error::Storage {
                        uri: uri.to_string(),
                        detail,
                    }
                }
            }
        }
    }
}

fn short_reason(detail: &str) -> &'static str {
    if detail.contains("NoSuchBucket") {
        "the bucket does not exist"
    } else {
        "no such key"
    }
}

/// The error and its sources, joined: object_store's (and tonic's) top-level messages alone
/// often hide the server's answer.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
