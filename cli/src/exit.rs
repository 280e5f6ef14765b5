//! Exit codes that mean something, and hints that say what to do next.
//!
//! 0 success · 1 internal error · 2 usage (clap) · 64 invalid request (options, plan, columns) ·
//! 65 bad data (the input is at fault; retrying will not help) · 69 unavailable (a backend that
//! this build does not offer) · 75 transient (storage or network; retrying may help).

use truthound_profile::run::TaskError;
use truthound_profile::{Error, ErrorClass};

/// A request for something this build cannot do.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unavailable(pub String);

/// A merge that left tasks out when completeness was required.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Incomplete(pub String);

fn engine_error(err: &anyhow::Error) -> Option<&Error> {
    err.chain().find_map(|e| {
        e.downcast_ref::<Error>()
            .or_else(|| e.downcast_ref::<TaskError>().map(|t| &t.source))
    })
}

pub fn code(err: &anyhow::Error) -> u8 {
    if err.chain().any(|e| e.is::<Unavailable>()) {
        return 69;
    }
    if err.chain().any(|e| e.is::<Incomplete>()) {
        return 65;
    }
    match engine_error(err).map(Error::class) {
        Some(ErrorClass::BadData) => 65,
        Some(ErrorClass::Invalid) => 64,
        Some(ErrorClass::Transient) => 75,
        None => 1,
    }
}

pub fn hint(err: &anyhow::Error) -> Option<String> {
    match engine_error(err)? {
        Error::NotFound { .. } => {
            Some("check the path or URI; for a prefix, end it with `/`".into())
        }
        Error::AccessDenied { .. } => Some(
            "check the credentials in AWS_*/GOOGLE_*/AZURE_* and that they may read this location"
                .into(),
        ),
        Error::Storage { detail, .. } if detail.contains("onnect") => Some(
            "the storage endpoint did not answer: check --endpoint and that the server is up"
                .into(),
        ),
        Error::Table { .. } => Some(
            "a glob (DIR/*.parquet) reads the folder as plain files, removed ones included, if \
             that is what you want"
                .into(),
        ),
        Error::SchemaMismatch { .. } => {
            Some("profile the files separately, or select a glob of files with one schema".into())
        }
        _ => None,
    }
}
