//! Parsing a dataset or output URI into an object store, a path inside it and an optional glob.

use crate::{Error, Result};
use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::azure::MicrosoftAzureBuilder;
use object_store::gcp::GoogleCloudStorageBuilder;
use object_store::http::HttpBuilder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::{
    BackoffConfig, ClientOptions, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;
use url::Url;

/// How to reach an object store beyond what the environment says (`AWS_*`, `GOOGLE_*`,
/// `AZURE_*` are read unless `explicit_credentials`). Secrets belong in the environment, not here: these options are
/// written into plans.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StorageOptions {
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:9000`; path-style requests.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Allow plain HTTP (implied by an `http://` endpoint).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub allow_http: Option<bool>,
    /// Any other `object_store` configuration key (e.g. `aws_skip_signature`).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub extra: BTreeMap<String, String>,
    /// Credentials come from `extra` only, never from this process's environment (`AWS_*`,
    /// `GOOGLE_*`, `AZURE_*`), files or instance metadata: a store with neither credentials nor
    /// `skip_signature` is refused rather than built with the process's own cloud identity.
    /// The operator sets it: a ProfileJob must not borrow the operator's identity. Never
    /// serialized (a plan's reader decides for itself).
    #[serde(skip)]
    pub explicit_credentials: bool,
}

impl StorageOptions {
    /// The options without anything that looks like a secret, for writing into a plan.
    pub fn without_secrets(&self) -> StorageOptions {
        StorageOptions {
            extra: self
                .extra
                .iter()
                .filter(|(k, _)| !is_secret_key(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            ..self.clone()
        }
    }
}

/// Whether a storage option (or Secret) key names a secret: the one classification behind
/// keeping secrets out of plans and out of a ProfileJob's spec. Any key that mentions a secret,
/// token, password, key, SAS or credential is one, except `*skip_signature` (a flag).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    !k.ends_with("skip_signature")
        && ["secret", "token", "password", "key", "sas", "credential"]
            .iter()
            .any(|s| k.contains(s))
}

/// Whether a Secret's key is storage configuration, the only keys forwarded from a
/// credentials Secret: an `AWS_*`, `GOOGLE_*` or `AZURE_*` variable, or an `object_store`
/// configuration key of any store. Anything else in the Secret (a database password, an SSH
/// key) is never sent to an endpoint or a cluster.
pub fn is_storage_key(key: &str) -> bool {
    use object_store::aws::AmazonS3ConfigKey;
    use object_store::azure::AzureConfigKey;
    use object_store::gcp::GoogleConfigKey;
    let k = key.to_ascii_lowercase();
    ["aws_", "google_", "azure_"]
        .iter()
        .any(|p| k.starts_with(p))
        || k.parse::<AmazonS3ConfigKey>().is_ok()
        || k.parse::<GoogleConfigKey>().is_ok()
        || k.parse::<AzureConfigKey>().is_ok()
}

/// A parsed URI: the store it lives in, the path inside it, and a glob over paths if it had one.
#[derive(Debug, Clone)]
pub struct Location {
    /// The URI as the user wrote it (with a plain path made absolute).
    pub uri: String,
    /// The scheme and authority, e.g. `s3://bucket` or `file:///`.
    pub root: Url,
    /// The path inside the store: a file, a prefix, or the fixed part before a glob.
    pub path: Path,
    /// A glob over whole paths inside the store, when the URI had `*`, `?` or `[`.
    pub glob: Option<globset::GlobMatcher>,
}

impl Location {
    pub fn parse(uri: &str) -> Result<Location> {
        let trimmed = uri.trim();
        if trimmed.is_empty() {
            return Err(Error::invalid("URI", "empty"));
        }
        let url = match Url::parse(trimmed) {
            // A Windows drive letter or a bare path is not a URL scheme.
            Ok(url) if url.scheme().len() > 1 => url,
            _ => local_url(trimmed)?,
        };
        let scheme = url.scheme().to_ascii_lowercase();
        let (root, raw_path) = match scheme.as_str() {
            "file" => (
                Url::parse("file:///").expect("static URL"),
                url.path().to_string(),
            ),
            "s3" | "s3a" | "gs" | "az" | "adl" | "azure" | "abfs" | "abfss" | "http" | "https" => {
                let mut root = url.clone();
                root.set_path("");
                root.set_query(None);
                root.set_fragment(None);
                (root, url.path().to_string())
            }
            other => {
                return Err(Error::invalid(
                    "URI",
                    format!(
                        "`{uri}`: unsupported scheme `{other}` (use a path, file://, s3://, gs://, az://, abfs://, http:// or https://)"
                    ),
                ));
            }
        };
        let decoded = percent_decode(&raw_path);
        let (fixed, glob) = split_glob(&decoded);
        let path = Path::parse(fixed.trim_matches('/'))
            .map_err(|e| Error::invalid("URI", format!("`{uri}`: {e}")))?;
        let glob = match glob {
            Some(pattern) => Some(
                globset::GlobBuilder::new(pattern.trim_start_matches('/'))
                    .literal_separator(true)
                    .build()
                    .map_err(|e| Error::invalid("glob", format!("`{uri}`: {e}")))?
                    .compile_matcher(),
            ),
            None => None,
        };
        let uri = if url.scheme() == "file" && !trimmed.starts_with("file:") {
            url.path().to_string()
        } else {
            trimmed.to_string()
        };
        Ok(Location {
            uri,
            root,
            path,
            glob,
        })
    }

    /// The URI of a path inside this location's store, for messages and plans.
    pub fn uri_of(&self, path: &Path) -> String {
        if self.root.scheme() == "file" {
            format!("/{path}")
        } else {
            format!("{}/{path}", self.root.as_str().trim_end_matches('/'))
        }
    }

    pub fn is_local(&self) -> bool {
        self.root.scheme() == "file"
    }

    /// Builds the object store for this location.
    pub fn store(&self, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
        build_store(&self.root, options).map_err(|e| match e {
            Error::Storage { detail, .. } => Error::Storage {
                uri: self.uri.clone(),
                detail,
            },
            other => other,
        })
    }
}

fn local_url(path: &str) -> Result<Url> {
    let path = std::path::Path::new(path);
    let absolute = if path.is_absolute() {
        path.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| Error::invalid("path", format!("{}: {e}", path.display())))?
            .join(path)
    };
    // `a/../b` is `b`: object store paths reject `..` segments.
    let mut normal = std::path::PathBuf::new();
    for part in absolute.components() {
        match part {
            std::path::Component::ParentDir => {
                normal.pop();
            }
            std::path::Component::CurDir => {}
            other => normal.push(other),
        }
    }
    // Keep glob characters: Url::from_file_path percent-encodes them, and we decode again.
    Url::from_file_path(&normal)
        .map_err(|()| Error::invalid("path", format!("{}: not a valid path", absolute.display())))
}

pub(super) fn percent_decode(s: &str) -> String {
    let hex = |b: u8| (b as char).to_digit(16);
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((hi * 16 + lo) as u8);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `a/b/*/c*.parquet` into the fixed prefix `a/b` and the whole glob.
fn split_glob(path: &str) -> (&str, Option<&str>) {
    let Some(first) = path.find(['*', '?', '[', '{']) else {
        return (path, None);
    };
    let cut = path[..first].rfind('/').unwrap_or(0);
    (&path[..cut], Some(path))
}

/// Transient failures are retried a few times within seconds, not object_store's default of
/// minutes: an unreachable endpoint should be reported while the user still waits for it (a
/// caller that wants more patience retries the whole task).
fn retry() -> RetryConfig {
    RetryConfig {
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
        max_retries: 4,
        retry_timeout: Duration::from_secs(20),
    }
}

/// Keys naming a file or an endpoint of the process's own (a credentials file, a federated
/// token, a metadata service): with explicit credentials they would still read what the process
/// can reach, so they are refused.
const AMBIENT_KEYS: [&str; 10] = [
    "aws_web_identity_token_file",
    "web_identity_token_file",
    "aws_container_credentials_relative_uri",
    "aws_metadata_endpoint",
    "google_service_account",
    "google_service_account_path",
    "service_account_path",
    "google_application_credentials",
    "azure_federated_token_file",
    "azure_msi_endpoint",
];

/// The keys that carry a credential of each store kind (object_store's names, long and short).
fn credential_keys(scheme: &str) -> &'static [&'static str] {
    match scheme {
        "s3" | "s3a" => &["aws_access_key_id", "access_key_id"],
        "gs" => &["google_service_account_key", "service_account_key"],
        "az" | "adl" | "azure" | "abfs" | "abfss" => &[
            "azure_storage_account_key",
            "azure_storage_access_key",
            "azure_storage_master_key",
            "account_key",
            "access_key",
            "master_key",
            "azure_storage_sas_key",
            "azure_storage_sas_token",
            "sas_key",
            "sas_token",
            "azure_storage_token",
            "bearer_token",
            "azure_client_secret",
            "client_secret",
        ],
        _ => &[],
    }
}

/// With explicit credentials: the options must carry a credential for the store, or ask for
/// unsigned requests, and name no file or endpoint of the process's own.
fn check_explicit(root: &Url, options: &StorageOptions) -> Result<()> {
    let scheme = root.scheme();
    let keys = credential_keys(scheme);
    if keys.is_empty() {
        return Ok(());
    }
    let lower: BTreeMap<String, &str> = options
        .extra
        .iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v.as_str()))
        .collect();
    if let Some(k) = lower.keys().find(|k| AMBIENT_KEYS.contains(&k.as_str())) {
        return Err(Error::invalid(
            "storage option",
            format!("`{k}` names a file or endpoint of this process: give the credential itself"),
        ));
    }
    let anonymous = lower
        .iter()
        .any(|(k, v)| k.ends_with("skip_signature") && v.eq_ignore_ascii_case("true"));
    let has_credential = keys.iter().any(|k| lower.contains_key(*k));
    if anonymous || has_credential {
        return Ok(());
    }
    Err(Error::invalid(
        "credentials",
        format!(
            "`{root}` has no credentials: name a Secret holding them (credentialsSecretRef), or set the storage option `skip_signature: \"true\"` for a public bucket; this process's own cloud identity is not used"
        ),
    ))
}

fn build_store(root: &Url, options: &StorageOptions) -> Result<Arc<dyn ObjectStore>> {
    let storage_err = |e: object_store::Error| Error::Storage {
        uri: root.to_string(),
        detail: crate::error::error_chain(&e),
    };
    let allow_http = options.allow_http.unwrap_or(false)
        || options
            .endpoint
            .as_deref()
            .is_some_and(|e| e.starts_with("http://"));
    if options.explicit_credentials {
        check_explicit(root, options)?;
    }
    let explicit = options.explicit_credentials;
    let store: Arc<dyn ObjectStore> = match root.scheme() {
        "file" => Arc::new(LocalFileSystem::new()),
        "s3" | "s3a" => {
            let mut b = if explicit {
                AmazonS3Builder::new()
            } else {
                AmazonS3Builder::from_env()
            }
            .with_url(root.as_str())
            .with_retry(retry());
            if let Some(endpoint) = &options.endpoint {
                b = b
                    .with_endpoint(endpoint)
                    .with_virtual_hosted_style_request(false);
            }
            if let Some(region) = &options.region {
                b = b.with_region(region);
            }
            if allow_http {
                b = b.with_allow_http(true);
            }
            for (k, v) in &options.extra {
                let key = k.to_ascii_lowercase().parse().map_err(storage_err)?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(storage_err)?)
        }
        "gs" => {
            let mut b = if explicit {
                GoogleCloudStorageBuilder::new()
            } else {
                GoogleCloudStorageBuilder::from_env()
            }
            .with_url(root.as_str())
            .with_retry(retry());
            for (k, v) in &options.extra {
                let key = k.to_ascii_lowercase().parse().map_err(storage_err)?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(storage_err)?)
        }
        "az" | "adl" | "azure" | "abfs" | "abfss" => {
            let mut b = if explicit {
                MicrosoftAzureBuilder::new()
            } else {
                MicrosoftAzureBuilder::from_env()
            }
            .with_url(root.as_str())
            .with_retry(retry());
            if let Some(endpoint) = &options.endpoint {
                b = b.with_endpoint(endpoint.clone());
            }
            if allow_http {
                b = b.with_allow_http(true);
            }
            for (k, v) in &options.extra {
                let key = k.to_ascii_lowercase().parse().map_err(storage_err)?;
                b = b.with_config(key, v);
            }
            Arc::new(b.build().map_err(storage_err)?)
        }
        "http" | "https" => {
            let client =
                ClientOptions::new().with_allow_http(root.scheme() == "http" || allow_http);
            Arc::new(
                HttpBuilder::new()
                    .with_url(root.as_str())
                    .with_retry(retry())
                    .with_client_options(client)
                    .build()
                    .map_err(storage_err)?,
            )
        }
        other => {
            return Err(Error::invalid(
                "URI",
                format!("unsupported scheme `{other}`"),
            ));
        }
    };
    Ok(store)
}

/// Reads a whole object (a plan, a partial profile, a profile), of at most
/// [`MAX_OBJECT_BYTES`](crate::limits::MAX_OBJECT_BYTES).
pub async fn read_object(uri: &str, options: &StorageOptions) -> Result<bytes::Bytes> {
    read_object_limited(uri, options, crate::limits::MAX_OBJECT_BYTES).await
}

/// Reads a whole object of at most `max` bytes. The object's size is checked before its body is
/// read, and the body is read as a stream that stops past `max`, so a server that says one size
/// and sends more is cut off too.
pub async fn read_object_limited(
    uri: &str,
    options: &StorageOptions,
    max: u64,
) -> Result<bytes::Bytes> {
    let loc = Location::parse(uri)?;
    let store = loc.store(options)?;
    let got = store
        .get(&loc.path)
        .await
        .map_err(|e| Error::from_store(uri, e))?;
    let too_large = |size: u64| Error::TooLarge {
        what: uri.to_string(),
        detail: format!("an object of {size} bytes is too large to read whole"),
        limit: crate::limits::bytes_in_words(max),
    };
    let size = got.meta.size;
    if size > max {
        return Err(too_large(size));
    }
    // A local file is read in one piece, of the size checked (its range was fixed when it was
    // opened); only a stream can bring more than it said.
    if !matches!(got.payload, object_store::GetResultPayload::Stream(_)) {
        return got.bytes().await.map_err(|e| Error::from_store(uri, e));
    }
    let mut body = got.into_stream();
    let mut out = bytes::BytesMut::with_capacity(size as usize);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| Error::from_store(uri, e))?;
        let total = out.len() as u64 + chunk.len() as u64;
        if total > max {
            return Err(too_large(total));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out.freeze())
}

/// Writes a whole object. Object stores make a PUT visible all at once; the local file system
/// store writes a temporary file and renames it, so readers never see half a profile.
pub async fn write_object(uri: &str, options: &StorageOptions, data: Vec<u8>) -> Result<()> {
    let loc = Location::parse(uri)?;
    if loc.glob.is_some() {
        return Err(Error::invalid(
            "output URI",
            format!("`{uri}` must not be a glob"),
        ));
    }
    let store = loc.store(options)?;
    store
        .put(&loc.path, PutPayload::from(data))
        .await
        .map_err(|e| Error::from_store(uri, e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_object_store_uris_with_globs() {
        let loc = Location::parse("s3://bucket/data/2024/*.parquet").unwrap();
        assert_eq!(loc.root.as_str(), "s3://bucket");
        assert_eq!(loc.path.as_ref(), "data/2024");
        assert!(
            loc.glob
                .as_ref()
                .unwrap()
                .is_match("data/2024/part-1.parquet")
        );
        assert!(
            !loc.glob
                .as_ref()
                .unwrap()
                .is_match("data/2024/x/part-1.parquet")
        );
        assert_eq!(
            loc.uri_of(&Path::from("data/x.parquet")),
            "s3://bucket/data/x.parquet"
        );
    }

    #[test]
    fn plain_paths_become_absolute_file_locations() {
        let loc = Location::parse("some/dir/*.csv").unwrap();
        assert!(loc.is_local());
        assert!(loc.uri.starts_with('/'));
        assert!(loc.path.as_ref().ends_with("some/dir"));
        let loc = Location::parse("/data/x/../y/./z.csv").unwrap();
        assert_eq!(loc.path.as_ref(), "data/y/z.csv");
        let loc = Location::parse("file:///tmp/a%20b.parquet").unwrap();
        assert_eq!(loc.path.as_ref(), "tmp/a b.parquet");
        assert_eq!(loc.uri_of(&loc.path), "/tmp/a b.parquet");
    }

    #[test]
    fn rejects_unknown_schemes() {
        let err = Location::parse("ftp://host/x.csv").unwrap_err().to_string();
        assert!(err.contains("unsupported scheme `ftp`"), "{err}");
    }

    fn explicit(extra: &[(&str, &str)]) -> StorageOptions {
        StorageOptions {
            extra: extra
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            explicit_credentials: true,
            ..StorageOptions::default()
        }
    }

    /// The operator's stores: the process's environment (here AWS_*, GOOGLE_*, AZURE_* are set
    /// as an operator's pod might have them) is never a source of credentials.
    #[test]
    fn explicit_credentials_never_come_from_the_environment() {
        // SAFETY: set once, before any thread of this test reads the environment; no other
        // test of this crate depends on these variables.
        unsafe {
            std::env::set_var("AWS_ACCESS_KEY_ID", "operator-key");
            std::env::set_var("AWS_SECRET_ACCESS_KEY", "operator-secret");
            std::env::set_var("GOOGLE_SERVICE_ACCOUNT_KEY", "{}");
            std::env::set_var("AZURE_STORAGE_ACCOUNT_KEY", "b3BlcmF0b3I=");
            std::env::set_var("AZURE_STORAGE_ACCOUNT_NAME", "operator");
        }
        for uri in ["s3://lake/x", "gs://lake/x", "az://lake/x"] {
            let loc = Location::parse(uri).unwrap();
            let err = loc.store(&explicit(&[])).unwrap_err().to_string();
            assert!(err.contains("has no credentials"), "{uri}: {err}");
            assert!(err.contains("credentialsSecretRef"), "{uri}: {err}");
            // The same options without the flag take the environment's (the CLI's behaviour;
            // the fake GCS key above does not parse, which shows it is read).
            let ambient = loc.store(&StorageOptions::default());
            assert_eq!(ambient.is_ok(), !uri.starts_with("gs:"), "{uri}");
            // Unsigned requests, asked for, are built (Azure needs its account named).
            let anonymous = if uri.starts_with("az:") {
                explicit(&[
                    ("skip_signature", "true"),
                    ("azure_storage_account_name", "tenant"),
                ])
            } else {
                explicit(&[("skip_signature", "true")])
            };
            let built = loc.store(&anonymous);
            assert!(built.is_ok(), "{uri}: {:?}", built.err());
        }
        let s3 = Location::parse("s3://lake/x").unwrap();
        let with_key = explicit(&[
            ("aws_access_key_id", "tenant"),
            ("aws_secret_access_key", "s"),
        ]);
        assert!(s3.store(&with_key).is_ok());
        let err = s3
            .store(&explicit(&[
                ("aws_access_key_id", "tenant"),
                ("aws_web_identity_token_file", "/var/run/secrets/token"),
            ]))
            .unwrap_err()
            .to_string();
        assert!(err.contains("aws_web_identity_token_file"), "{err}");
    }

    #[test]
    fn secret_and_storage_keys_are_classified_once() {
        for k in [
            "aws_secret_access_key",
            "AWS_SESSION_TOKEN",
            "azure_storage_sas_key",
            "db_password",
            "google_service_account_key",
        ] {
            assert!(is_secret_key(k), "{k}");
        }
        for k in ["aws_skip_signature", "region", "aws_endpoint"] {
            assert!(!is_secret_key(k), "{k}");
        }
        for k in [
            "AWS_ACCESS_KEY_ID",
            "aws_secret_access_key",
            "GOOGLE_SERVICE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCOUNT_KEY",
            "access_key_id",
            "skip_signature",
            "bucket",
        ] {
            assert!(is_storage_key(k), "{k}");
        }
        for k in [
            "DB_PASSWORD",
            "ssh-privatekey",
            "tls.key",
            "GITHUB_TOKEN",
            ".dockerconfigjson",
        ] {
            assert!(!is_storage_key(k), "{k}");
        }
    }

    #[test]
    fn strips_secrets_from_storage_options() {
        let mut o = StorageOptions::default();
        o.extra.insert("aws_secret_access_key".into(), "s".into());
        o.extra.insert("aws_skip_signature".into(), "true".into());
        let clean = o.without_secrets();
        assert_eq!(clean.extra.len(), 1);
        assert!(clean.extra.contains_key("aws_skip_signature"));
    }
}
