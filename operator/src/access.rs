//! What the operator itself may read and write on a ProfileJob's behalf.
//!
//! The operator plans (reads listings, Parquet footers, a CSV's first line) and merges (reads
//! partials, writes the profile) in its own process, with its own file system and network. A
//! ProfileJob's author is any namespace editor, so a `file://` URI could name the operator's
//! service-account token or its progress key, and an `http(s)://` one any address the operator
//! can reach. Local paths are therefore allowed only under directories the operator's
//! administrator mounted for the purpose, and `http(s)://` only when the administrator says so.

use crate::crd::ProfileJobSpec;
use std::path::PathBuf;
use truthound_profile::dataset::Location;

/// The operator's limits on the URIs of a ProfileJob. The default allows no local path and no
/// `http(s)://` URL.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessPolicy {
    /// Directories `file://` datasets and outputs may be under (`--file-root`). Empty: none.
    pub file_roots: Vec<PathBuf>,
    /// `http(s)://` datasets and outputs are allowed (`--allow-http-datasets`).
    pub allow_http: bool,
    /// URL prefixes webhooks (`spec.notify`) must start with (`--notify-url-prefix`). Empty: any
    /// `http(s)://` URL, since a webhook's answer is never read (the operator only POSTs).
    pub notify_url_prefixes: Vec<String>,
}

impl AccessPolicy {
    /// Checks the dataset, output and cache URIs of a spec (the operator reads and writes the
    /// cache as it does the output). `Err` names the field and says how an administrator
    /// allows it.
    pub fn check_spec(&self, spec: &ProfileJobSpec) -> Result<(), String> {
        self.check_uri("spec.dataset.uri", &spec.dataset.uri)?;
        self.check_uri("spec.output.uri", &spec.output.uri)?;
        match &spec.output.cache_uri {
            Some(cache) => self.check_uri("spec.output.cacheUri", cache),
            None => Ok(()),
        }
    }

    /// Checks a webhook URL of `spec.notify`; `field` is what the message names.
    pub fn check_webhook(&self, field: &str, url: &str) -> Result<(), String> {
        if !(url.starts_with("https://") || url.starts_with("http://")) {
            return Err(format!(
                "{field}: a webhook URL must start with https:// or http://"
            ));
        }
        if self.notify_url_prefixes.is_empty()
            || self.notify_url_prefixes.iter().any(|p| url.starts_with(p))
        {
            return Ok(());
        }
        Err(format!(
            "{field} `{}`: this operator sends notifications only to URLs starting with {} (--notify-url-prefix)",
            crate::notify::shown_url(url),
            self.notify_url_prefixes.join(", ")
        ))
    }

    /// Checks one URI; `field` is what the message names.
    pub fn check_uri(&self, field: &str, uri: &str) -> Result<(), String> {
        let loc = Location::parse(uri).map_err(|e| format!("{field}: {e}"))?;
        match loc.root.scheme() {
            "file" => self.check_local(field, uri, loc.path.as_ref()),
            "http" | "https" if !self.allow_http => Err(format!(
                "{field} `{uri}`: http(s) URLs are not allowed by this operator (its administrator can allow them with --allow-http-datasets); use object storage (s3://, gs://, az://)"
            )),
            _ => Ok(()),
        }
    }

    fn check_local(&self, field: &str, uri: &str, path: &str) -> Result<(), String> {
        // `Location` has already resolved `.` and `..` (and refuses them, decoded, in object
        // paths), so a prefix match on whole segments is a containment check.
        let allowed = self.file_roots.iter().any(|root| {
            let root = root.to_string_lossy();
            let root = root.trim_matches('/');
            root.is_empty()
                || path == root
                || path
                    .strip_prefix(root)
                    .is_some_and(|rest| rest.starts_with('/'))
        });
        if allowed {
            return Ok(());
        }
        let roots = if self.file_roots.is_empty() {
            "none are configured (--file-root)".to_string()
        } else {
            let list: Vec<String> = self
                .file_roots
                .iter()
                .map(|r| r.display().to_string())
                .collect();
            format!("allowed: {}", list.join(", "))
        };
        Err(format!(
            "{field} `{uri}`: local paths are read by the operator itself, so only those under the operator's file roots are allowed ({roots}); use object storage (s3://, gs://, az://)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(roots: &[&str], allow_http: bool) -> AccessPolicy {
        AccessPolicy {
            file_roots: roots.iter().map(PathBuf::from).collect(),
            allow_http,
            notify_url_prefixes: Vec::new(),
        }
    }

    #[test]
    fn local_paths_are_refused_without_roots() {
        let p = AccessPolicy::default();
        for uri in [
            "file:///var/run/secrets/kubernetes.io/serviceaccount/token",
            "/etc/truthound/progress-key/key",
            "relative/path.csv",
            "file:///data/../var/run/secrets/kubernetes.io/serviceaccount/token",
        ] {
            let e = p.check_uri("spec.dataset.uri", uri).unwrap_err();
            assert!(e.starts_with("spec.dataset.uri"), "{e}");
            assert!(e.contains("--file-root"), "{e}");
        }
        assert!(p.check_uri("spec.dataset.uri", "s3://b/events/").is_ok());
    }

    #[test]
    fn local_paths_are_allowed_only_under_a_root() {
        let p = policy(&["/data/shared"], false);
        assert!(p.check_uri("f", "file:///data/shared/events/").is_ok());
        assert!(p.check_uri("f", "/data/shared/x/*.csv").is_ok());
        assert!(p.check_uri("f", "file:///data/shared").is_ok());
        for uri in [
            "file:///data/sharedother/x.csv",
            "file:///data/shared/../../var/run/secrets/kubernetes.io/serviceaccount/token",
            "file:///data/shared/%2e%2e/%2e%2e/etc/passwd",
            "file:///data/shared/..%2F..%2Fetc/passwd",
            "file:///etc/passwd",
        ] {
            let e = p.check_uri("spec.output.uri", uri).unwrap_err();
            assert!(e.contains("spec.output.uri"), "{e}");
        }
    }

    #[test]
    fn the_cache_uri_is_checked_as_the_output_is() {
        let p = policy(&["/data/shared"], false);
        let mut spec: ProfileJobSpec = serde_json::from_value(serde_json::json!({
            "dataset": {"uri": "file:///data/shared/events/"},
            "output": {"uri": "file:///data/shared/p.json", "cacheUri": "file:///etc/cron.d/"},
        }))
        .unwrap();
        let e = p.check_spec(&spec).unwrap_err();
        assert!(e.contains("spec.output.cacheUri"), "{e}");
        spec.output.cache_uri = Some("file:///data/shared/cache/".into());
        assert!(p.check_spec(&spec).is_ok());
    }

    #[test]
    fn http_urls_need_the_flag() {
        let e = AccessPolicy::default()
            .check_uri(
                "spec.dataset.uri",
                "http://169.254.169.254/latest/meta-data/",
            )
            .unwrap_err();
        assert!(e.contains("spec.dataset.uri"), "{e}");
        assert!(e.contains("--allow-http-datasets"), "{e}");
        assert!(
            policy(&[], true)
                .check_uri("spec.dataset.uri", "https://host/x.parquet")
                .is_ok()
        );
    }

    #[test]
    fn webhooks_may_be_limited_to_prefixes() {
        let any = AccessPolicy::default();
        assert!(
            any.check_webhook("w", "https://hooks.example.com/x")
                .is_ok()
        );
        assert!(any.check_webhook("w", "ftp://x").is_err());
        let p = AccessPolicy {
            notify_url_prefixes: vec!["https://hooks.example.com/".into()],
            ..AccessPolicy::default()
        };
        assert!(
            p.check_webhook("w", "https://hooks.example.com/team/1")
                .is_ok()
        );
        let e = p
            .check_webhook("spec.notify.webhooks[0].url", "http://10.0.0.1/secret-path")
            .unwrap_err();
        assert!(e.contains("spec.notify.webhooks[0].url"), "{e}");
        assert!(e.contains("--notify-url-prefix"), "{e}");
        assert!(!e.contains("secret-path"), "the path is not shown: {e}");
    }
}
