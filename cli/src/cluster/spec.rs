//! `th submit`'s flags → a `ProfileJob`. Everything the cluster cannot do the way this machine
//! does (read a local path, reach 127.0.0.1, use this machine's threads or credentials) is
//! refused here with what to do instead, before anything is sent.

use super::args::SubmitArgs;
use crate::args::Backend;
use anyhow::Result;
use kube::api::ObjectMeta;
use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use truthound_operator::ProfileJob;
use truthound_operator::crd::{
    BackendSpec, BackendType, CsvEncoding, CsvSpec, DaskBackend, DatasetFormat, DatasetSpec,
    LocalBackend, OutputSpec, PartitionStrategy, PartitioningSpec, ProfileJobSpec, ProfileSpec,
    RayBackend, SamplingSpec, SecretRef, SparkBackend, StorageOptionsSpec,
};
use truthound_profile::dataset::Format;
use truthound_profile::{ProfileOptions, Strategy};

/// An invalid request: exit 64, like th profile's invalid options.
pub fn invalid(detail: impl Into<String>) -> anyhow::Error {
    truthound_profile::Error::Invalid {
        what: "arguments",
        detail: detail.into(),
    }
    .into()
}

/// The ProfileJob that `args` asks for. `namespace` is set only when given (-n), so that a
/// `--dry-run` manifest applies to whatever namespace `kubectl -n` says.
pub fn build(args: &SubmitArgs, namespace: Option<&str>) -> Result<ProfileJob> {
    refuse_local_only(args)?;
    let plan = &args.plan;
    check_remote_uri("the dataset", &plan.uri)?;
    let output = match &args.output {
        Some(o) => o.clone(),
        None => {
            return Err(invalid(format!(
                "th submit needs --output URI, where the cluster writes the profile JSON, e.g. --output {}: \
                 the worker pods cannot write to this machine",
                suggest_output(&plan.uri)
            )));
        }
    };
    check_remote_uri("--output", &output)?;
    if plan.sample_rows.is_some() {
        return Err(invalid(
            "--sample-rows is not available on a cluster yet (a ProfileJob samples by fraction): \
             use --sample FRACTION, e.g. --sample 0.01",
        ));
    }

    let storage = plan.storage.options()?;
    if let Some(endpoint) = &storage.endpoint
        && !args.allow_loopback_endpoint
    {
        check_reachable_endpoint(endpoint)?;
    }
    let options = StorageOptionsSpec {
        endpoint: storage.endpoint,
        region: storage.region,
        allow_http: storage.allow_http,
        extra: storage.extra,
    };

    let name = match &args.name {
        Some(n) => {
            check_name(n)?;
            n.clone()
        }
        None => generated_name(&plan.uri),
    };
    let mut labels = BTreeMap::new();
    for kv in &args.labels {
        let Some((k, v)) = kv.split_once('=') else {
            return Err(invalid(format!("--label `{kv}` must be KEY=VALUE")));
        };
        labels.insert(k.trim().to_string(), v.trim().to_string());
    }

    let defaults = ProfileOptions::default();
    let sampling = match plan.sample {
        Some(fraction) => Some(SamplingSpec {
            fraction,
            seed: Some(i64::try_from(plan.sample_seed).map_err(|_| {
                invalid(format!(
                    "--sample-seed {} is too large for a ProfileJob (at most {})",
                    plan.sample_seed,
                    i64::MAX
                ))
            })?),
        }),
        None => None,
    };
    let profile = ProfileSpec {
        top_k: non_default("--top-k", plan.top_k, defaults.top_k, 1, 10_000)?,
        quantile_sketch_k: None,
        histogram_bins: non_default(
            "--histogram-bins",
            plan.histogram_bins,
            defaults.histogram_bins,
            1,
            1000,
        )?,
        exact_distinct_limit: non_default(
            "--exact-distinct-limit",
            plan.exact_distinct_limit,
            defaults.exact_distinct_limit,
            0,
            10_000_000,
        )?,
        patterns: plan.no_patterns.then_some(false),
        duplicates: plan.no_duplicates.then_some(false),
        sampling,
        keep_state: args.local_only.keep_state.then_some(true),
    };

    let partitioning = PartitioningSpec {
        strategy: match plan.strategy {
            Strategy::RowBased => PartitionStrategy::RowBased,
            Strategy::ColumnBased => PartitionStrategy::ColumnBased,
            Strategy::Hybrid => PartitionStrategy::Hybrid,
            Strategy::Hash => PartitionStrategy::Hash,
        },
        partitions: at_least_one("--partitions", plan.partitions, 1_000_000)?,
        row_partitions: at_least_one("--row-partitions", plan.row_partitions, 1_000_000)?,
        column_partitions: at_least_one("--column-partitions", plan.column_partitions, 10_000)?,
        hash_column: plan.hash_column.clone(),
        target_task_bytes: plan.target_task_bytes,
    };
    if partitioning.strategy == PartitionStrategy::Hash && partitioning.hash_column.is_none() {
        return Err(invalid(
            "--strategy hash needs --hash-column COLUMN (the key whose distinct count and top values come out exact)",
        ));
    }

    let spec = ProfileJobSpec {
        dataset: DatasetSpec {
            uri: plan.uri.trim().to_string(),
            format: plan.format.map(|f| match f {
                Format::Parquet => DatasetFormat::Parquet,
                Format::Csv => DatasetFormat::Csv,
                Format::Ndjson => DatasetFormat::Ndjson,
                Format::Ipc => DatasetFormat::Ipc,
            }),
            columns: (!plan.columns.is_empty()).then(|| plan.columns.clone()),
            options,
            credentials_secret_ref: args
                .credentials_secret
                .as_ref()
                .map(|name| SecretRef { name: name.clone() }),
            csv: csv_spec(&plan.csv)?,
            table_version: plan.table_version,
        },
        backend: backend(args)?,
        partitioning,
        profile,
        // Unset: the output uses the dataset's storage options and credentials (the operator's
        // default), so the storage flags and --credentials-secret apply to both.
        output: OutputSpec {
            uri: output.trim().to_string(),
            options: None,
            credentials_secret_ref: None,
            keep_work_data: args.keep_work_data,
            work_data_ttl_seconds_after_failure: None,
            cache_uri: args.cache.clone(),
        },
        backoff_limit_per_task: int("--retries", args.retries, 100)?,
        max_failed_tasks: int("--max-failed-tasks", args.max_failed_tasks, i32::MAX as u32)?,
        active_deadline_seconds: match args.deadline {
            Some(d) if d.as_secs() == 0 => {
                return Err(invalid("--deadline must be at least 1s"));
            }
            Some(d) => Some(d.as_secs() as i64),
            None => None,
        },
        ttl_seconds_after_finished: match args.ttl {
            Some(d) => Some(i32::try_from(d.as_secs()).map_err(|_| invalid("--ttl is too long"))?),
            None => None,
        },
        suspend: false,
        notify: None,
    };
    let mut pj = ProfileJob::new(&name, spec);
    pj.metadata = ObjectMeta {
        name: Some(name),
        namespace: namespace.map(str::to_string),
        labels: (!labels.is_empty()).then_some(labels),
        ..ObjectMeta::default()
    };
    // The operator's own checks (URIs, secret-looking storage options, sampling range), so
    // that they fail here rather than as a Failed condition a moment later.
    truthound_operator::decide::validate(&pj).map_err(|msg| {
        if msg.contains("credentialsSecretRef") {
            invalid(format!(
                "{msg}: create one (kubectl create secret generic NAME --from-literal=KEY=VALUE) and pass --credentials-secret NAME"
            ))
        } else {
            invalid(msg)
        }
    })?;
    Ok(pj)
}

fn refuse_local_only(args: &SubmitArgs) -> Result<()> {
    let l = &args.local_only;
    let refused = [
        (
            l.workers.is_some(),
            "--workers sets the threads of an in-process run; on a cluster, --partitions sets the \
             tasks and --parallelism the worker pods running at once",
        ),
        (
            l.json,
            "--json prints the profile of an in-process run; a cluster run writes it to --output \
             (add --wait to print its summary, or --dry-run to print the ProfileJob)",
        ),
        (
            l.partial_out.is_some(),
            "--partial-out is not needed on a cluster: the partial profiles are written beside --output, \
             under .truthound/<job uid>/partials/",
        ),
        (
            l.plan_out.is_some(),
            "--plan-out is not needed on a cluster: the operator writes the plan beside --output, \
             under .truthound/<job uid>/plan",
        ),
    ];
    match refused.into_iter().find(|(given, _)| *given) {
        Some((_, why)) => Err(invalid(why)),
        None => Ok(()),
    }
}

fn backend(args: &SubmitArgs) -> Result<BackendSpec> {
    let kind = args.backend.unwrap_or(Backend::Local);
    let addresses = [
        ("--master", "spark", Backend::Spark, args.master.is_some()),
        (
            "--scheduler",
            "dask",
            Backend::Dask,
            args.scheduler.is_some(),
        ),
        (
            "--ray-address",
            "ray",
            Backend::Ray,
            args.ray_address.is_some(),
        ),
    ];
    for (flag, name, wanted, given) in addresses {
        if given && kind != wanted && kind != Backend::Auto {
            return Err(invalid(format!(
                "{flag} is the address of the {name} backend: add --backend {name} (or --backend auto)"
            )));
        }
    }
    // A remote backend without an address uses the operator's own (SPARK_CONNECT_URL,
    // DASK_SCHEDULER_ADDRESS, RAY_ADDRESS); an operator without one fails the job saying so.
    if let Some(master) = &args.master
        && !master.starts_with("sc://")
    {
        return Err(invalid(
            match truthound_operator::backend::spark::connect::master_url_error(master) {
                Some(why) => format!("--master: {why}"),
                None => format!(
                    "--master `{master}` is not a Spark Connect URL: a ProfileJob reaches Spark 4 through Spark Connect, sc://host:15002"
                ),
            },
        ));
    }
    if args.parallelism.is_some() && !matches!(kind, Backend::Local | Backend::Auto) {
        return Err(invalid(
            "--parallelism sets the worker pods of the local backend; a Spark, Dask or Ray cluster schedules its own",
        ));
    }
    for addr in [&args.scheduler, &args.ray_address].into_iter().flatten() {
        if !args.allow_loopback_endpoint {
            check_reachable_endpoint(addr)?;
        }
    }
    let local = match args.parallelism {
        Some(0) => return Err(invalid("--parallelism must be at least 1")),
        Some(p) => Some(LocalBackend {
            parallelism: Some(i32::try_from(p).map_err(|_| invalid("--parallelism is too large"))?),
            ..LocalBackend::default()
        }),
        None => None,
    };
    Ok(BackendSpec {
        kind: match kind {
            Backend::Local => BackendType::Local,
            Backend::Spark => BackendType::Spark,
            Backend::Dask => BackendType::Dask,
            Backend::Ray => BackendType::Ray,
            Backend::Auto => BackendType::Auto,
        },
        local,
        spark: args.master.as_ref().map(|u| SparkBackend {
            connect_url: Some(u.clone()),
            token_secret_ref: None,
        }),
        dask: args.scheduler.as_ref().map(|a| DaskBackend {
            scheduler_address: Some(a.clone()),
            ..DaskBackend::default()
        }),
        ray: args.ray_address.as_ref().map(|a| RayBackend {
            address: Some(a.clone()),
        }),
    })
}

/// A setting differing from the engine's default, checked against the CRD's range; the
/// default is left out, so the operator's default applies.
fn non_default(
    flag: &str,
    value: usize,
    default: usize,
    min: u32,
    max: u32,
) -> Result<Option<u32>> {
    if value == default {
        return Ok(None);
    }
    match u32::try_from(value) {
        Ok(v) if (min..=max).contains(&v) => Ok(Some(v)),
        _ => Err(invalid(format!(
            "{flag} {value} is out of range for a ProfileJob ({min} to {max})"
        ))),
    }
}

fn at_least_one(flag: &str, value: Option<u32>, max: u32) -> Result<Option<u32>> {
    match value {
        Some(v) if v == 0 || v > max => {
            Err(invalid(format!("{flag} must be from 1 to {max}, got {v}")))
        }
        v => Ok(v),
    }
}

fn int(flag: &str, value: Option<u32>, max: u32) -> Result<Option<i32>> {
    match value {
        Some(v) if v > max => Err(invalid(format!("{flag} must be at most {max}, got {v}"))),
        Some(v) => Ok(Some(v as i32)),
        None => Ok(None),
    }
}

/// A URI the cluster can reach: a scheme other than a local path. `file://` stays allowed (a
/// volume mounted in the operator and the workers), a bare path does not.
fn check_remote_uri(what: &str, uri: &str) -> Result<()> {
    let trimmed = uri.trim();
    let is_url = url_scheme(trimmed).is_some_and(|s| s.len() > 1);
    if !is_url {
        return Err(invalid(format!(
            "{what} `{uri}` is a path on this machine, which the cluster cannot read or write: give an \
             object storage URI (s3://, gs://, az://, https://), or `th profile` to profile it here"
        )));
    }
    truthound_profile::dataset::Location::parse(trimmed)
        .map_err(|e| invalid(format!("{what}: {e}")))?;
    Ok(())
}

fn url_scheme(s: &str) -> Option<&str> {
    let (scheme, _) = s.split_once("://")?;
    scheme
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
        .then_some(scheme)
}

/// Refuses an address on this machine (127.0.0.1, localhost, ::1): the pods cannot reach it.
fn check_reachable_endpoint(endpoint: &str) -> Result<()> {
    let rest = endpoint.split_once("://").map_or(endpoint, |(_, r)| r);
    let authority = rest.split('/').next().unwrap_or("");
    let host = if let Some(v6) = authority.strip_prefix('[') {
        v6.split(']').next().unwrap_or("")
    } else {
        authority.rsplit_once(':').map_or(authority, |(h, _)| h)
    };
    let loopback = host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if loopback {
        return Err(invalid(format!(
            "`{endpoint}` is this machine (set by a flag, or TH_S3_ENDPOINT): the cluster's pods cannot reach it; \
             give an address they can, e.g. http://minio.minio:9000 (or, if the cluster's pods run on this \
             machine, pass --allow-loopback-endpoint)"
        )));
    }
    Ok(())
}

/// A Kubernetes object name: a DNS subdomain (lowercase letters, digits, `-` and `.`).
fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric());
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "--name `{name}` is not a valid Kubernetes name: lowercase letters, digits and '-', starting and ending with a letter or digit"
        )))
    }
}

/// The dataset's name: the last path segment before any glob, without its extension.
pub fn dataset_name(uri: &str) -> String {
    let (scheme, path) = uri.split_once("://").unwrap_or(("", uri));
    // `?` is a glob character in a store's path, a query only in an http(s) URL.
    let path = if scheme.starts_with("http") {
        path.split(['?', '#']).next().unwrap_or("")
    } else {
        path
    };
    let segment = path
        .split('/')
        .rfind(|s| !s.is_empty() && !s.contains(['*', '?', '[', '{']))
        .unwrap_or("");
    let stem = segment.split('.').next().unwrap_or("");
    let mut name = String::new();
    for c in stem.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            name.push(c);
        } else if !name.ends_with('-') {
            name.push('-');
        }
    }
    let name = name.trim_matches('-');
    let name: String = name.chars().take(40).collect();
    let name = name.trim_end_matches('-');
    if name.is_empty() || !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        "profile".to_string()
    } else {
        name.to_string()
    }
}

/// `<dataset name>-<5 random characters>`, like Kubernetes' generateName (whose alphabet
/// avoids vowels and look-alike characters).
pub fn generated_name(uri: &str) -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let mut bits = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    let mut suffix = String::new();
    for _ in 0..5 {
        suffix.push(ALPHABET[(bits % ALPHABET.len() as u64) as usize] as char);
        bits /= ALPHABET.len() as u64;
    }
    format!("{}-{suffix}", dataset_name(uri))
}

fn suggest_output(dataset: &str) -> String {
    let name = dataset_name(dataset);
    match dataset.trim().split_once("://") {
        Some((scheme, rest)) if scheme != "file" => {
            let bucket = rest.split('/').next().unwrap_or("bucket");
            format!("{scheme}://{bucket}/profiles/{name}.json")
        }
        _ => format!("s3://bucket/profiles/{name}.json"),
    }
}

/// The CSV flags as `spec.dataset.csv`, checked here so that a typo fails before submitting.
fn csv_spec(csv: &crate::args::CsvArgs) -> Result<Option<CsvSpec>> {
    if !csv.any() {
        return Ok(None);
    }
    let encoding = match csv.encoding.as_deref() {
        None => None,
        Some(e) => Some(match e.parse::<truthound_profile::dataset::Encoding>()? {
            truthound_profile::dataset::Encoding::Utf8 => CsvEncoding::Utf8,
            truthound_profile::dataset::Encoding::Latin1 => CsvEncoding::Latin1,
            truthound_profile::dataset::Encoding::Windows1252 => CsvEncoding::Windows1252,
            // "utf-16" lets the byte-order mark decide; an explicit byte order is kept.
            truthound_profile::dataset::Encoding::Utf16Le
                if e.to_ascii_lowercase().ends_with("le") =>
            {
                CsvEncoding::Utf16Le
            }
            truthound_profile::dataset::Encoding::Utf16Le => CsvEncoding::Utf16,
            truthound_profile::dataset::Encoding::Utf16Be => CsvEncoding::Utf16Be,
        }),
    };
    // Parse the characters as the operator will.
    csv.options()?;
    Ok(Some(CsvSpec {
        delimiter: csv.delimiter.clone(),
        quote: csv.quote.clone(),
        escape: csv.escape.clone(),
        comment: csv.comment.clone(),
        header: csv.header,
        null_values: (!csv.null_tokens.is_empty()).then(|| csv.null_tokens.clone()),
        encoding,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dataset_names() {
        assert_eq!(dataset_name("s3://lake/events/"), "events");
        assert_eq!(dataset_name("s3://lake/events/*.parquet"), "events");
        assert_eq!(dataset_name("s3://lake/Users_2024.parquet"), "users-2024");
        assert_eq!(dataset_name("gs://b/logs/2024-*/x?.csv"), "logs");
        assert_eq!(dataset_name("s3://b/"), "b");
        assert_eq!(dataset_name("https://host/"), "host");
        assert_eq!(dataset_name("https://host/d/file.csv?sig=a/b"), "file");
        assert_eq!(dataset_name("s3://"), "profile");
        assert_eq!(dataset_name("s3://b/___/"), "profile");
        let long = format!("s3://b/{}/", "x".repeat(80));
        assert_eq!(dataset_name(&long).len(), 40);
    }

    #[test]
    fn generated_names_are_valid_and_differ() {
        let a = generated_name("s3://lake/events/");
        let b = generated_name("s3://lake/events/");
        assert!(
            a.starts_with("events-") && a.len() == "events-".len() + 5,
            "{a}"
        );
        check_name(&a).unwrap();
        assert_ne!(a, b);
    }

    #[test]
    fn loopback_endpoints_are_refused() {
        for e in [
            "http://127.0.0.1:9000",
            "http://localhost:9000/",
            "http://[::1]:9000",
            "127.0.0.2:9000",
            "tcp://LOCALHOST:8786",
        ] {
            assert!(check_reachable_endpoint(e).is_err(), "{e}");
        }
        for e in [
            "http://minio.minio:9000",
            "https://s3.amazonaws.com",
            "tcp://10.0.0.5:8786",
        ] {
            check_reachable_endpoint(e).unwrap();
        }
    }

    #[test]
    fn local_paths_are_refused() {
        for uri in [
            "data.parquet",
            "/data/x.parquet",
            "./x",
            "C:\\data\\x.parquet",
        ] {
            assert!(check_remote_uri("the dataset", uri).is_err(), "{uri}");
        }
        for uri in [
            "s3://lake/x/",
            "file:///mnt/data/x.parquet",
            "https://h/x.csv",
        ] {
            check_remote_uri("the dataset", uri).unwrap();
        }
    }
}
