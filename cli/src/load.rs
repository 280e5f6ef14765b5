//! Reading a finished profile (the JSON `th profile --output` writes) from a path or URI, for
//! `th report` and `th show`.

use anyhow::{Context, Result};
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::profile::SCHEMA_VERSION;
use truthound_profile::{Error, PartialProfile, TableProfile};

/// A profile and the bytes it was read from.
pub struct Loaded {
    pub profile: TableProfile,
    pub bytes: Vec<u8>,
}

/// Reads the profile at `uri`. A missing object is reported as not found (exit 65), and
/// anything that is not a profile says so (exit 65), naming `uri`.
pub fn read(uri: &str, storage: &StorageOptions) -> Result<Loaded> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let bytes = rt
        .block_on(dataset::read_object(uri, storage))
        .context("reading the profile")?
        .to_vec();
    let profile = parse(uri, &bytes)?;
    Ok(Loaded { profile, bytes })
}

fn not_a_profile(uri: &str, detail: impl Into<String>) -> anyhow::Error {
    Error::Corrupt {
        file: uri.to_string(),
        format: "profile",
        detail: detail.into(),
    }
    .into()
}

/// Parses profile JSON, telling apart the things that are often mistaken for a profile.
pub fn parse(uri: &str, bytes: &[u8]) -> Result<TableProfile> {
    if bytes.is_empty() {
        return Err(Error::EmptyFile {
            file: uri.to_string(),
        }
        .into());
    }
    if PartialProfile::is_partial(bytes) {
        return Err(not_a_profile(
            uri,
            "this is a partial profile; merge partials into a profile first (th merge ... -o profile.json)",
        ));
    }
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| {
        not_a_profile(
            uri,
            format!("not JSON ({e}); a profile is the JSON that `th profile --output` writes"),
        )
    })?;
    let Some(object) = value.as_object() else {
        return Err(not_a_profile(
            uri,
            "JSON, but not an object; a profile is the JSON object that `th profile --output` writes",
        ));
    };
    let Some(version) = object
        .get("schema_version")
        .and_then(|v| v.as_str())
        .map(str::to_string)
    else {
        let what = if object.contains_key("tasks") {
            " (it looks like a plan)"
        } else {
            ""
        };
        return Err(not_a_profile(
            uri,
            format!(
                "JSON without `schema_version`{what}; a profile is the JSON that `th profile --output` writes"
            ),
        ));
    };
    let major = |v: &str| v.split('.').next().unwrap_or_default().to_string();
    if major(&version) != major(SCHEMA_VERSION) {
        return Err(not_a_profile(
            uri,
            format!(
                "profile format {version}, this build reads {}.x",
                major(SCHEMA_VERSION)
            ),
        ));
    }
    serde_json::from_value(value).map_err(|e| {
        not_a_profile(
            uri,
            format!("does not match the profile format {version}: {e}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tells_what_is_not_a_profile() {
        let msg = |bytes: &[u8]| parse("x", bytes).unwrap_err().to_string();
        assert!(msg(b"").contains("empty"));
        assert!(msg(b"PAR1....").contains("not JSON"));
        assert!(msg(b"[1,2]").contains("not an object"));
        assert!(msg(br#"{"tasks": []}"#).contains("plan"));
        assert!(msg(br#"{"schema_version": "9.0"}"#).contains("this build reads 1.x"));
        assert!(msg(br#"{"schema_version": "1.0"}"#).contains("missing field"));
    }
}
