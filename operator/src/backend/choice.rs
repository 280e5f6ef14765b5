//! Which backend runs a ProfileJob, and why: the ancestor's `auto_select_backend` made
//! operational. The operator's configuration (`SPARK_CONNECT_URL`, `DASK_SCHEDULER_ADDRESS`,
//! `RAY_ADDRESS`, `TRUTHOUND_DISTRIBUTED_BACKEND`, set by the Helm values) says which clusters
//! exist; a ProfileJob may name its own. For `auto`, the dataset's size (listed while planning,
//! never read) picks one by the ancestor's table:
//!
//! | data size  | backend                 |
//! |------------|-------------------------|
//! | < 10 GB    | local (worker pods; in-process from `th`) |
//! | 10–100 GB  | Dask, else Spark, else Ray, else local |
//! | > 100 GB   | Spark, else Dask, else Ray, else local |
//!
//! (The ancestor's "1–10 GB: local or Dask in process mode" is our local worker pods, which
//! run one process per task.) `TRUTHOUND_DISTRIBUTED_BACKEND` naming a backend overrides the
//! table for `auto`, as it does for the ancestor's CLI.

use crate::crd::{BackendChoice, BackendSpec, BackendType};

/// The clusters the operator knows of (from its configuration).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Clusters {
    pub spark_connect_url: Option<String>,
    pub dask_scheduler: Option<String>,
    pub ray_address: Option<String>,
    /// `TRUTHOUND_DISTRIBUTED_BACKEND`: what `auto` uses when it names a backend.
    pub preferred: Option<BackendType>,
}

impl Clusters {
    /// Checks the configured addresses (the operator says at start what is malformed).
    pub fn validate(&self) -> Result<(), String> {
        for (kind, a, var) in [
            (
                BackendType::Spark,
                &self.spark_connect_url,
                "SPARK_CONNECT_URL",
            ),
            (BackendType::Ray, &self.ray_address, "RAY_ADDRESS"),
        ] {
            if let Some(a) = a {
                check_address(kind, a).map_err(|e| format!("{var}: {e}"))?;
            }
        }
        Ok(())
    }

    /// `TRUTHOUND_DISTRIBUTED_BACKEND`'s value as a backend (`None` for unset, empty or `auto`).
    pub fn parse_preferred(value: Option<&str>) -> Result<Option<BackendType>, String> {
        let Some(v) = value.map(str::trim).filter(|v| !v.is_empty()) else {
            return Ok(None);
        };
        match v.to_ascii_lowercase().as_str() {
            "local" => Ok(Some(BackendType::Local)),
            "spark" => Ok(Some(BackendType::Spark)),
            "dask" => Ok(Some(BackendType::Dask)),
            "ray" => Ok(Some(BackendType::Ray)),
            "auto" => Ok(None),
            _ => Err(format!(
                "TRUTHOUND_DISTRIBUTED_BACKEND=`{v}` is not a backend (local, spark, dask, ray, auto)"
            )),
        }
    }
}

const GB: u64 = 1_000_000_000;

/// The cluster address a remote backend would use: the ProfileJob's own, else the operator's.
/// As written, with any Spark Connect token: for connecting, never for showing ([`shown`]).
pub fn address(kind: BackendType, spec: &BackendSpec, clusters: &Clusters) -> Option<String> {
    let own = match kind {
        BackendType::Spark => spec.spark.as_ref().and_then(|s| s.connect_url.clone()),
        BackendType::Dask => spec.dask.as_ref().and_then(|d| d.scheduler_address.clone()),
        BackendType::Ray => spec.ray.as_ref().and_then(|r| r.address.clone()),
        BackendType::Local | BackendType::Auto => return None,
    };
    let configured = match kind {
        BackendType::Spark => clusters.spark_connect_url.clone(),
        BackendType::Dask => clusters.dask_scheduler.clone(),
        BackendType::Ray => clusters.ray_address.clone(),
        _ => None,
    };
    own.or(configured)
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
}

fn where_from(kind: BackendType) -> &'static str {
    match kind {
        BackendType::Spark => "spec.backend.spark.connectUrl or the operator's SPARK_CONNECT_URL",
        BackendType::Dask => {
            "spec.backend.dask.schedulerAddress or the operator's DASK_SCHEDULER_ADDRESS"
        }
        BackendType::Ray => "spec.backend.ray.address or the operator's RAY_ADDRESS",
        _ => "",
    }
}

fn local(reason: Option<String>) -> BackendChoice {
    BackendChoice {
        kind: "local".into(),
        reason,
        address: None,
    }
}

/// A named backend: where it runs, or why it cannot.
pub fn named(
    kind: BackendType,
    spec: &BackendSpec,
    clusters: &Clusters,
) -> Result<BackendChoice, String> {
    if kind == BackendType::Local {
        return Ok(local(None));
    }
    let address = address(kind, spec, clusters).ok_or_else(|| {
        format!(
            "backend `{}` needs the cluster's address: set {}",
            kind.name(),
            where_from(kind)
        )
    })?;
    check_address(kind, &address).map_err(|e| format!("{}: {e}", where_from(kind)))?;
    Ok(BackendChoice {
        kind: kind.name().into(),
        reason: None,
        address: Some(shown(kind, &address)),
    })
}

/// An address as the status, conditions and events show it: a Spark Connect URL's token is
/// `***` (the operator connects with [`address`], the URL as written, and the token of
/// `tokenSecretRef`). Other backends' addresses are used as recorded, so they are kept whole.
pub fn shown(kind: BackendType, address: &str) -> String {
    match kind {
        BackendType::Spark => crate::backend::spark::connect::redact(address),
        _ => address.to_string(),
    }
}

/// A malformed address is said at once, not when the cluster is first asked.
fn check_address(kind: BackendType, address: &str) -> Result<(), String> {
    match kind {
        BackendType::Ray => crate::backend::ray::dashboard_url(address)
            .map(drop)
            .map_err(|e| e.to_string()),
        BackendType::Spark => crate::backend::spark::connect::ConnectUrl::parse(address)
            .map(drop)
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    }
}

/// `auto`: the backend for a dataset of `bytes` bytes (compressed, as listed).
pub fn auto(spec: &BackendSpec, clusters: &Clusters, bytes: u64) -> BackendChoice {
    let usable =
        |k: BackendType| address(k, spec, clusters).is_some_and(|a| check_address(k, &a).is_ok());
    let pick = |k: BackendType, reason: String| {
        let mut c = named(k, spec, clusters).unwrap_or_else(|_| local(None));
        c.reason = Some(reason);
        c
    };
    let size = human_bytes(bytes);
    if let Some(p) = clusters.preferred
        && (p == BackendType::Local || usable(p))
    {
        return pick(
            p,
            format!(
                "auto: TRUTHOUND_DISTRIBUTED_BACKEND is {} (dataset {size})",
                p.name()
            ),
        );
    }
    let order: &[BackendType] = if bytes > 100 * GB {
        &[BackendType::Spark, BackendType::Dask, BackendType::Ray]
    } else if bytes >= 10 * GB {
        &[BackendType::Dask, BackendType::Spark, BackendType::Ray]
    } else {
        return local(Some(format!(
            "auto: the dataset is {size}, under 10 GB: the local backend"
        )));
    };
    let band = if bytes > 100 * GB {
        "over 100 GB"
    } else {
        "10-100 GB"
    };
    match order.iter().copied().find(|&k| usable(k)) {
        Some(k) => {
            let at = shown(k, &address(k, spec, clusters).unwrap_or_default());
            pick(
                k,
                format!(
                    "auto: the dataset is {size} ({band}): the {} cluster at {at}",
                    k.name()
                ),
            )
        }
        None => local(Some(format!(
            "auto: the dataset is {size} ({band}) but no Dask, Spark or Ray cluster is configured: \
             the local backend"
        ))),
    }
}

/// `1.5 GB`, `420 MB`, `12 kB`, `7 B` (decimal units, as the size table).
pub fn human_bytes(b: u64) -> String {
    let units = [(1e12, "TB"), (1e9, "GB"), (1e6, "MB"), (1e3, "kB")];
    for (scale, unit) in units {
        if b as f64 >= scale {
            let v = b as f64 / scale;
            return if v >= 100.0 {
                format!("{v:.0} {unit}")
            } else {
                format!("{v:.1} {unit}")
            };
        }
    }
    format!("{b} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::{DaskBackend, RayBackend, SparkBackend};

    fn clusters() -> Clusters {
        Clusters {
            spark_connect_url: Some("sc://spark:15002".into()),
            dask_scheduler: Some("tcp://dask:8786".into()),
            ray_address: Some("http://ray:8265".into()),
            preferred: None,
        }
    }

    #[test]
    fn auto_follows_the_size_table() {
        let spec = BackendSpec::default();
        let c = auto(&spec, &clusters(), 3 * GB);
        assert_eq!(c.kind, "local");
        assert!(c.reason.unwrap().contains("3.0 GB, under 10 GB"));
        let c = auto(&spec, &clusters(), 40 * GB);
        assert_eq!(
            (c.kind.as_str(), c.address.as_deref()),
            ("dask", Some("tcp://dask:8786"))
        );
        assert!(c.reason.unwrap().contains("40.0 GB (10-100 GB)"));
        // Over 100 GB Spark comes first.
        let c = auto(&spec, &clusters(), 500 * GB);
        assert_eq!(
            (c.kind.as_str(), c.address.as_deref()),
            ("spark", Some("sc://spark:15002"))
        );
        let only_ray = Clusters {
            ray_address: Some("http://ray:8265".into()),
            ..Clusters::default()
        };
        assert_eq!(auto(&spec, &only_ray, 500 * GB).kind, "ray");
        let none = auto(&spec, &Clusters::default(), 500 * GB);
        assert_eq!(none.kind, "local");
        assert!(
            none.reason
                .unwrap()
                .contains("no Dask, Spark or Ray cluster")
        );
    }

    #[test]
    fn the_jobs_own_cluster_counts_for_auto_and_the_preference_overrides_the_table() {
        let spec = BackendSpec {
            ray: Some(RayBackend {
                address: Some("http://mine:8265".into()),
            }),
            ..BackendSpec::default()
        };
        let c = auto(&spec, &Clusters::default(), 20 * GB);
        assert_eq!(
            (c.kind.as_str(), c.address.as_deref()),
            ("ray", Some("http://mine:8265"))
        );
        let prefer = Clusters {
            preferred: Some(BackendType::Ray),
            ..clusters()
        };
        let c = auto(&BackendSpec::default(), &prefer, 1000);
        assert_eq!(c.kind, "ray");
        assert!(
            c.reason
                .unwrap()
                .contains("TRUTHOUND_DISTRIBUTED_BACKEND is ray")
        );
        // A preference for a cluster that is not configured falls back to the table.
        let prefer_dask = Clusters {
            preferred: Some(BackendType::Dask),
            ..Clusters::default()
        };
        assert_eq!(
            auto(&BackendSpec::default(), &prefer_dask, 1000).kind,
            "local"
        );
    }

    #[test]
    fn a_named_backend_needs_an_address_and_the_jobs_own_comes_first() {
        let spec = BackendSpec {
            dask: Some(DaskBackend {
                scheduler_address: Some("tcp://own:8786".into()),
                ..DaskBackend::default()
            }),
            ..BackendSpec::default()
        };
        let c = named(BackendType::Dask, &spec, &clusters()).unwrap();
        assert_eq!(c.address.as_deref(), Some("tcp://own:8786"));
        let ray_client = BackendSpec {
            ray: Some(RayBackend {
                address: Some("ray://head:10001".into()),
            }),
            ..BackendSpec::default()
        };
        // The ancestor's client address is taken (for its head's dashboard), kept as given.
        let c = named(BackendType::Ray, &ray_client, &Clusters::default()).unwrap();
        assert_eq!(c.address.as_deref(), Some("ray://head:10001"));
        let bad_spark = BackendSpec {
            spark: Some(SparkBackend {
                connect_url: Some("http://spark:15002".into()),
                token_secret_ref: None,
            }),
            ..BackendSpec::default()
        };
        let err = named(BackendType::Spark, &bad_spark, &Clusters::default()).unwrap_err();
        assert!(err.contains("sc://"), "{err}");
        let err = named(
            BackendType::Ray,
            &BackendSpec::default(),
            &Clusters::default(),
        )
        .unwrap_err();
        assert!(
            err.contains("spec.backend.ray.address or the operator's RAY_ADDRESS"),
            "{err}"
        );
        let spark = BackendSpec {
            spark: Some(SparkBackend {
                connect_url: Some("sc://x:15002".into()),
                token_secret_ref: None,
            }),
            ..BackendSpec::default()
        };
        let c = named(BackendType::Spark, &spark, &Clusters::default()).unwrap();
        assert_eq!(c.address.as_deref(), Some("sc://x:15002"));
    }

    #[test]
    fn a_spark_token_is_never_in_the_choice() {
        // the job's own URL, and the operator's for auto
        let spark = BackendSpec {
            spark: Some(SparkBackend {
                connect_url: Some("sc://x:15002/;token=s3cr3t".into()),
                token_secret_ref: None,
            }),
            ..BackendSpec::default()
        };
        let c = named(BackendType::Spark, &spark, &Clusters::default()).unwrap();
        assert_eq!(c.address.as_deref(), Some("sc://x:15002/;token=***"));
        let configured = Clusters {
            spark_connect_url: Some("sc://op:15002/;use_ssl=true;token=s3cr3t".into()),
            ..Clusters::default()
        };
        let c = auto(&BackendSpec::default(), &configured, 500 * GB);
        assert_eq!(c.kind, "spark");
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t"), "{shown}");
        assert!(shown.contains(";token=***"), "{shown}");
        // connecting uses the URL as written
        assert_eq!(
            address(BackendType::Spark, &spark, &Clusters::default()).as_deref(),
            Some("sc://x:15002/;token=s3cr3t")
        );
    }

    #[test]
    fn malformed_configured_addresses_are_said_and_never_chosen() {
        let bad = Clusters {
            ray_address: Some("ftp://head:10001".into()),
            spark_connect_url: Some("sc://spark:15002".into()),
            ..Clusters::default()
        };
        let err = bad.validate().unwrap_err();
        assert!(err.starts_with("RAY_ADDRESS: "), "{err}");
        assert!(clusters().validate().is_ok());
        // auto passes over it (over 100 GB: Spark first, and Ray not at all).
        let c = auto(&BackendSpec::default(), &bad, 500 * GB);
        assert_eq!(c.kind, "spark");
        let only_bad_ray = Clusters {
            ray_address: Some("ftp://head:10001".into()),
            ..Clusters::default()
        };
        assert_eq!(
            auto(&BackendSpec::default(), &only_bad_ray, 500 * GB).kind,
            "local"
        );
    }

    #[test]
    fn the_preference_is_parsed_strictly() {
        assert_eq!(
            Clusters::parse_preferred(Some("Dask")),
            Ok(Some(BackendType::Dask))
        );
        assert_eq!(Clusters::parse_preferred(Some("auto")), Ok(None));
        assert_eq!(Clusters::parse_preferred(None), Ok(None));
        assert!(
            Clusters::parse_preferred(Some("flink"))
                .unwrap_err()
                .contains("flink")
        );
        assert_eq!(human_bytes(1_500_000_000), "1.5 GB");
        assert_eq!(human_bytes(420_000_000), "420 MB");
        assert_eq!(human_bytes(7), "7 B");
    }
}
