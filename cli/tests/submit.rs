//! `th submit` and the cluster commands as a user runs them: the real binary.
//!
//! `--dry-run` manifests are parsed back as the operator's `ProfileJob` type and checked against
//! the CRD's CEL rules with kube-cel's client-side validator (it evaluates the
//! `x-kubernetes-validations` rules, with the schema's defaults applied, not the OpenAPI types),
//! as operator/tests/crd.rs checks deploy/examples. cli/tests/kubectl.rs applies them with the
//! real `kubectl apply --dry-run=client`, which checks their fields and types against the CRD's
//! schema as a cluster publishes it. Bad flags, a missing kubeconfig and a few API answers
//! (served by a small fake API server on 127.0.0.1) must end in a sentence that says what to do,
//! and a meaningful exit code.

use kube::CustomResourceExt;
use kube_cel::Validator;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use truthound_operator::ProfileJob;
use truthound_operator::crd::{
    BackendSpec, BackendType, DatasetFormat, DatasetSpec, LocalBackend, OutputSpec,
    PartitionStrategy, PartitioningSpec, ProfileJobSpec, ProfileSpec, SamplingSpec, SecretRef,
    StorageOptionsSpec,
};

/// `th` with an environment that cannot reach any real cluster or carry a local default in.
fn th_cmd(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_th"));
    cmd.args(args);
    for var in [
        "TRUTHOUND_DISTRIBUTED_BACKEND",
        "TH_S3_ENDPOINT",
        "KUBERNETES_SERVICE_HOST",
        "KUBERNETES_SERVICE_PORT",
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "http_proxy",
        "https_proxy",
        "ALL_PROXY",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("KUBECONFIG", "/nonexistent/th-test-kubeconfig");
    cmd
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().expect("th runs")
}

fn th(args: &[&str]) -> Output {
    run(&mut th_cmd(args))
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Expects failure with `code`; returns stderr.
fn fails(o: &Output, code: i32) -> String {
    let err = stderr(o);
    assert_eq!(
        o.status.code(),
        Some(code),
        "stderr: {err}\nstdout: {}",
        stdout(o)
    );
    assert!(!err.contains("panicked"), "{err}");
    assert!(err.starts_with("error: "), "{err}");
    err
}

fn schema() -> Value {
    let crd = serde_json::to_value(ProfileJob::crd()).expect("CRD as JSON");
    crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"].clone()
}

/// The CRD's CEL rules on an object (defaults applied), as the API server would apply them.
fn admission_errors(object: &Value) -> Vec<String> {
    match Validator::new().validate(&schema(), object, None) {
        Ok(()) => Vec::new(),
        Err(e) => e.into_vec().into_iter().map(|e| e.message).collect(),
    }
}

/// `th submit --dry-run ARGS`: the manifest, parsed back as the type and admitted by the CRD.
fn dry_run(args: &[&str]) -> ProfileJob {
    let mut all = vec!["submit", "--dry-run"];
    all.extend_from_slice(args);
    let out = th(&all);
    assert!(out.status.success(), "th {all:?}: {}", stderr(&out));
    let yaml = stdout(&out);
    let pj: ProfileJob = serde_yaml::from_str(&yaml).expect("the manifest is a ProfileJob");
    let value: Value = serde_yaml::from_str(&yaml).expect("YAML");
    assert_eq!(value["apiVersion"], "truthound.io/v1alpha1");
    assert_eq!(value["kind"], "ProfileJob");
    assert_eq!(admission_errors(&value), Vec::<String>::new(), "{yaml}");
    // What was printed is what the type serializes: nothing lost or added on the way.
    assert_eq!(value, serde_json::to_value(&pj).unwrap(), "{yaml}");
    pj
}

#[test]
fn dry_run_maps_every_flag_and_passes_the_crds_rules() {
    let pj = dry_run(&[
        "s3://lake/events/*.parquet",
        "--output",
        "s3://lake/profiles/events.json",
        "--name",
        "events-by-user",
        "-n",
        "data",
        "--format",
        "parquet",
        "--columns",
        "id,email,user_id",
        "--strategy",
        "hash",
        "--hash-column",
        "user_id",
        "--partitions",
        "8",
        "--top-k",
        "20",
        "--histogram-bins",
        "30",
        "--exact-distinct-limit",
        "5000",
        "--no-patterns",
        "--no-duplicates",
        "--sample",
        "10%",
        "--sample-seed",
        "7",
        "--endpoint",
        "http://minio.minio:9000",
        "--region",
        "us-east-1",
        "--allow-http",
        "--storage-option",
        "aws_skip_signature=true",
        "--credentials-secret",
        "lake-credentials",
        "--parallelism",
        "4",
        "--max-failed-tasks",
        "2",
        "--retries",
        "5",
        "--deadline",
        "2h",
        "--ttl",
        "1d",
        "--label",
        "kueue.x-k8s.io/queue-name=team-a",
    ]);
    let want = ProfileJobSpec {
        dataset: DatasetSpec {
            uri: "s3://lake/events/*.parquet".into(),
            format: Some(DatasetFormat::Parquet),
            columns: Some(vec!["id".into(), "email".into(), "user_id".into()]),
            options: StorageOptionsSpec {
                endpoint: Some("http://minio.minio:9000".into()),
                region: Some("us-east-1".into()),
                allow_http: Some(true),
                extra: BTreeMap::from([("aws_skip_signature".into(), "true".into())]),
            },
            credentials_secret_ref: Some(SecretRef {
                name: "lake-credentials".into(),
            }),
            csv: None,
            table_version: None,
        },
        backend: BackendSpec {
            kind: BackendType::Local,
            local: Some(LocalBackend {
                parallelism: Some(4),
                ..LocalBackend::default()
            }),
            ..BackendSpec::default()
        },
        partitioning: PartitioningSpec {
            strategy: PartitionStrategy::Hash,
            partitions: Some(8),
            row_partitions: None,
            column_partitions: None,
            hash_column: Some("user_id".into()),
            target_task_bytes: None,
        },
        profile: ProfileSpec {
            top_k: Some(20),
            quantile_sketch_k: None,
            histogram_bins: Some(30),
            exact_distinct_limit: Some(5000),
            patterns: Some(false),
            duplicates: Some(false),
            sampling: Some(SamplingSpec {
                fraction: 0.1,
                seed: Some(7),
            }),
            keep_state: None,
        },
        output: OutputSpec {
            uri: "s3://lake/profiles/events.json".into(),
            options: None,
            credentials_secret_ref: None,
            keep_work_data: false,
            work_data_ttl_seconds_after_failure: None,
            cache_uri: None,
        },
        backoff_limit_per_task: Some(5),
        max_failed_tasks: Some(2),
        active_deadline_seconds: Some(7200),
        ttl_seconds_after_finished: Some(86400),
        suspend: false,
        notify: None,
    };
    assert_eq!(pj.spec, want);
    assert_eq!(pj.metadata.name.as_deref(), Some("events-by-user"));
    assert_eq!(pj.metadata.namespace.as_deref(), Some("data"));
    assert_eq!(
        pj.metadata.labels,
        Some(BTreeMap::from([(
            "kueue.x-k8s.io/queue-name".into(),
            "team-a".into()
        )]))
    );
    assert!(pj.status.is_none());
}

#[test]
fn dry_run_defaults_are_left_to_the_operator() {
    let pj = dry_run(&["s3://lake/events/", "-o", "s3://lake/profiles/events.json"]);
    let name = pj.metadata.name.clone().unwrap();
    let suffix = name.strip_prefix("events-").expect(&name);
    assert_eq!(suffix.len(), 5, "{name}");
    assert!(
        suffix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() && !c.is_ascii_uppercase()),
        "{name}"
    );
    assert_eq!(
        pj.metadata.namespace, None,
        "no -n: the manifest applies anywhere"
    );
    assert_eq!(pj.spec.partitioning, PartitioningSpec::default());
    assert_eq!(pj.spec.profile, ProfileSpec::default());
    assert_eq!(pj.spec.backend, BackendSpec::default());
    assert_eq!(pj.spec.dataset.options, StorageOptionsSpec::default());
    assert_eq!(pj.spec.max_failed_tasks, None);
    // Two runs, two names.
    let again = dry_run(&["s3://lake/events/", "-o", "s3://lake/profiles/events.json"]);
    assert_ne!(again.metadata.name, pj.metadata.name);
}

#[test]
fn dry_run_maps_the_backends_and_their_addresses() {
    let base = ["s3://lake/events/", "-o", "s3://lake/p/events.json"];
    let with = |extra: &[&str]| {
        let mut all = base.to_vec();
        all.extend_from_slice(extra);
        dry_run(&all).spec.backend
    };
    let spark = with(&[
        "--backend",
        "spark",
        "--master",
        "sc://spark-connect.spark:15002",
    ]);
    assert_eq!(spark.kind, BackendType::Spark);
    assert_eq!(
        spark.spark.unwrap().connect_url.as_deref(),
        Some("sc://spark-connect.spark:15002")
    );
    let dask = with(&[
        "--backend",
        "dask",
        "--scheduler",
        "tcp://dask-scheduler.dask:8786",
    ]);
    assert_eq!(dask.kind, BackendType::Dask);
    assert_eq!(
        dask.dask.unwrap().scheduler_address.as_deref(),
        Some("tcp://dask-scheduler.dask:8786")
    );
    let ray = with(&[
        "--backend",
        "ray",
        "--ray-address",
        "http://ray-head.ray:8265",
    ]);
    assert_eq!(ray.kind, BackendType::Ray);
    assert_eq!(
        ray.ray.unwrap().address.as_deref(),
        Some("http://ray-head.ray:8265")
    );
    // No address: the operator's configured cluster (RAY_ADDRESS, DASK_SCHEDULER_ADDRESS).
    let ray = with(&["--backend", "ray"]);
    assert_eq!((ray.kind, ray.ray), (BackendType::Ray, None));
    let dask = with(&["--backend", "dask"]);
    assert_eq!((dask.kind, dask.dask), (BackendType::Dask, None));
    // auto: the operator chooses; the clusters named and the local settings go along.
    let auto = with(&[
        "--backend",
        "auto",
        "--scheduler",
        "tcp://dask-scheduler.dask:8786",
        "--parallelism",
        "2",
    ]);
    assert_eq!(auto.kind, BackendType::Auto);
    assert!(auto.dask.is_some() && auto.spark.is_none());
    assert_eq!(auto.local.unwrap().parallelism, Some(2));
    // The ancestor's environment variable picks the backend as for th profile.
    let out = run(th_cmd(&[
        "submit",
        "--dry-run",
        "s3://lake/e/",
        "-o",
        "s3://lake/p.json",
    ])
    .env("TRUTHOUND_DISTRIBUTED_BACKEND", "auto"));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("type: auto"), "{}", stdout(&out));
}

#[test]
fn dry_run_maps_hybrid_and_column_partitioning() {
    let p = dry_run(&[
        "gs://lake/wide/",
        "-o",
        "gs://lake/p/wide.json",
        "--strategy",
        "hybrid",
        "--row-partitions",
        "8",
        "--column-partitions",
        "2",
    ])
    .spec
    .partitioning;
    assert_eq!(p.strategy, PartitionStrategy::Hybrid);
    assert_eq!((p.row_partitions, p.column_partitions), (Some(8), Some(2)));
    let p = dry_run(&[
        "az://c/wide/",
        "-o",
        "az://c/p/wide.json",
        "--strategy",
        "column_based",
        "--partitions",
        "4",
    ])
    .spec
    .partitioning;
    assert_eq!(p.strategy, PartitionStrategy::ColumnBased);
    assert_eq!(p.partitions, Some(4));
}

#[test]
fn dry_run_maps_the_csv_flags_to_spec_dataset_csv() {
    let d = dry_run(&[
        "s3://lake/exports/*.csv",
        "-o",
        "s3://lake/p/exports.json",
        "--delimiter",
        "tab",
        "--quote",
        "none",
        "--comment",
        "#",
        "--header",
        "false",
        "--null",
        "NA,-",
        "--encoding",
        "utf-16",
    ])
    .spec
    .dataset;
    let csv = d.csv.expect("spec.dataset.csv");
    assert_eq!(csv.delimiter.as_deref(), Some("tab"));
    assert_eq!(csv.quote.as_deref(), Some("none"));
    assert_eq!(csv.comment.as_deref(), Some("#"));
    assert_eq!(csv.header, Some(false));
    assert_eq!(
        csv.null_values,
        Some(vec!["NA".to_string(), "-".to_string()])
    );
    assert_eq!(
        csv.encoding,
        Some(truthound_operator::crd::CsvEncoding::Utf16)
    );
    // None given: none written.
    let d = dry_run(&["s3://lake/e/", "-o", "s3://lake/p/e.json"])
        .spec
        .dataset;
    assert_eq!(d.csv, None);
}

/// `th submit ARGS` (a dry run, so that only the flags are at stake) must fail with exit 64 and
/// a message containing `want`.
fn refused(args: &[&str], want: &str) {
    let mut all = vec!["submit", "--dry-run"];
    all.extend_from_slice(args);
    let err = fails(&th(&all), 64);
    assert!(err.contains(want), "th {all:?}\n{err}");
}

#[test]
fn keep_state_asks_the_operator_to_embed_the_state() {
    let ok = ["s3://lake/events/", "-o", "s3://lake/p/events.json"];
    assert_eq!(dry_run(&ok).spec.profile.keep_state, None);
    let mut with = ok.to_vec();
    with.push("--keep-state");
    assert_eq!(dry_run(&with).spec.profile.keep_state, Some(true));
}

#[test]
fn flags_that_mean_nothing_on_a_cluster_are_refused_with_a_reason() {
    let ok = ["s3://lake/events/", "-o", "s3://lake/p/events.json"];
    let with = |extra: &[&str], want: &str| {
        let mut all = ok.to_vec();
        all.extend_from_slice(extra);
        refused(&all, want);
    };
    with(
        &["--workers", "4"],
        "on a cluster, --partitions sets the tasks and --parallelism the worker pods",
    );
    with(
        &["-w", "4"],
        "--workers sets the threads of an in-process run",
    );
    with(&["--json"], "a cluster run writes it to --output");
    with(
        &["--partial-out", "p.bin"],
        "under .truthound/<job uid>/partials/",
    );
    with(
        &["--plan-out", "plan.json"],
        "the operator writes the plan beside --output",
    );
    with(&["--sample-rows", "1000"], "use --sample FRACTION");
    with(
        &["--master", "sc://s:15002"],
        "--master is the address of the spark backend: add --backend spark",
    );
    with(
        &["--backend", "spark", "--master", "spark://m:7077"],
        "is a Spark master URL",
    );
    with(
        &[
            "--backend",
            "dask",
            "--scheduler",
            "tcp://d:8786",
            "--parallelism",
            "3",
        ],
        "--parallelism sets the worker pods of the local backend",
    );
    with(
        &["--strategy", "hash"],
        "--strategy hash needs --hash-column",
    );
    with(
        &["--partitions", "0"],
        "--partitions must be from 1 to 1000000",
    );
    with(
        &["--sample", "1.5"],
        "sampling.fraction must be more than 0 and at most 1",
    );
    with(&["--top-k", "0"], "--top-k 0 is out of range");
    with(
        &["--endpoint", "http://127.0.0.1:9000"],
        "the cluster's pods cannot reach it",
    );
    with(
        &["--storage-option", "aws_secret_access_key=abc"],
        "pass --credentials-secret NAME",
    );
    with(&["--name", "Events_1"], "is not a valid Kubernetes name");
    with(&["--label", "team"], "--label `team` must be KEY=VALUE");
    refused(
        &["data.parquet", "-o", "s3://lake/p.json"],
        "`data.parquet` is a path on this machine",
    );
    refused(
        &["s3://lake/events/", "-o", "/tmp/p.json"],
        "--output `/tmp/p.json` is a path on this machine",
    );
    refused(
        &["s3://lake/events/", "-o", "s3://lake/profiles/"],
        "must name a file",
    );
    refused(
        &["s3://lake/events/"],
        "th submit needs --output URI, where the cluster writes the profile JSON, e.g. --output s3://lake/profiles/events.json",
    );
    // An endpoint from the environment is as unreachable as one from a flag, and says so.
    let out = run(th_cmd(&[
        "submit",
        "--dry-run",
        "s3://lake/e/",
        "-o",
        "s3://lake/p.json",
    ])
    .env("TH_S3_ENDPOINT", "http://localhost:9000"));
    assert!(fails(&out, 64).contains("(set by a flag, or TH_S3_ENDPOINT)"));
}

#[test]
fn without_a_kubeconfig_every_cluster_command_says_how_to_get_one() {
    let home = tempfile::tempdir().unwrap();
    for args in [
        vec!["list"],
        vec!["get", "events"],
        vec!["submit", "s3://lake/events/", "-o", "s3://lake/p.json"],
    ] {
        let out = run(th_cmd(&args)
            .env("KUBECONFIG", home.path().join("missing-kubeconfig"))
            .env("HOME", home.path()));
        let err = fails(&out, 69);
        assert!(
            err.starts_with(
                "error: no Kubernetes configuration found: set KUBECONFIG (or pass --kubeconfig) to a kubeconfig file, \
                 or run `kubectl config use-context NAME` to choose a cluster"
            ),
            "th {args:?}: {err}"
        );
    }
    // Bad flags are refused before any cluster is looked for.
    let out = run(th_cmd(&["submit", "data.csv", "-o", "s3://l/p.json"]).env("HOME", home.path()));
    assert!(fails(&out, 64).contains("is a path on this machine"));
}

fn kubeconfig(dir: &Path, server: &str) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: test\n\
             clusters:\n- name: test\n  cluster:\n    server: {server}\n\
             contexts:\n- name: test\n  context:\n    cluster: test\n    user: test\n    namespace: data\n\
             users:\n- name: test\n  user:\n    token: t0ken\n"
        ),
    )
    .unwrap();
    path
}

#[test]
fn an_unknown_context_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = kubeconfig(dir.path(), "http://127.0.0.1:9");
    let out = run(th_cmd(&["list", "--context", "prod"]).env("KUBECONFIG", &config));
    assert!(
        fails(&out, 69).starts_with("error: context `prod` is not in the kubeconfig: `kubectl config get-contexts` lists the contexts there"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn completions_are_printed_for_each_shell() {
    for shell in ["bash", "zsh", "fish"] {
        let out = th(&["completions", shell]);
        assert!(out.status.success(), "{shell}: {}", stderr(&out));
        let script = stdout(&out);
        // fish spells a long flag `-l credentials-secret`.
        for word in ["submit", "describe", "credentials-secret", "all-namespaces"] {
            assert!(script.contains(word), "{shell} completions lack {word}");
        }
    }
}

/// One request as the fake API server saw it.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    target: String,
    authorization: String,
    body: Value,
}

type Handler = dyn Fn(&Seen, usize) -> (u16, String) + Send + Sync;

/// A minimal HTTP/1.1 API server on 127.0.0.1: one request per connection (it answers with
/// `Connection: close`), answered by `handler(request, how many came before it)`. It serves
/// until the test process ends, only while `th` talks to it.
fn fake_api(handler: Box<Handler>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let server = format!("http://{}", listener.local_addr().unwrap());
    let log: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let seen = log.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let Some(request) = read_request(&stream) else {
                continue;
            };
            let n = seen.lock().unwrap().len();
            let (code, body) = handler(&request, n);
            seen.lock().unwrap().push(request);
            let mut stream = stream;
            let _ = write!(
                stream,
                "HTTP/1.1 {code} X\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                if body.starts_with('{') {
                    "application/json"
                } else {
                    "text/plain"
                },
                body.len()
            );
        }
    });
    (server, log)
}

fn read_request(stream: &TcpStream) -> Option<Seen> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_string();
    // kube-rs ends a URL without parameters with `?`.
    let target = parts.next()?.trim_end_matches('?').to_string();
    let (mut length, mut authorization) = (0, String::new());
    loop {
        let mut header = String::new();
        reader.read_line(&mut header).ok()?;
        let header = header.trim_end();
        if header.is_empty() {
            break;
        }
        let (k, v) = header.split_once(':')?;
        match k.to_ascii_lowercase().as_str() {
            "content-length" => length = v.trim().parse().ok()?,
            "authorization" => authorization = v.trim().to_string(),
            _ => {}
        }
    }
    let mut body = vec![0; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        authorization,
        body: serde_json::from_slice(&body).unwrap_or(Value::Null),
    })
}

const PJ_PATH: &str = "/apis/truthound.io/v1alpha1/namespaces/data/profilejobs";

fn with_status(created: &Value, status: Value) -> String {
    let mut pj = created.clone();
    pj["metadata"]["uid"] = json!("0a1b2c3d-0000-4000-8000-00000000abcd");
    pj["metadata"]["creationTimestamp"] = json!("2024-05-01T10:00:00Z");
    if !status.is_null() {
        pj["status"] = status;
    }
    pj.to_string()
}

/// Serves a create, then `statuses` to the GETs that follow (the last one for ever).
fn submit_server(statuses: Vec<Value>) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let created: Arc<Mutex<Value>> = Arc::default();
    fake_api(Box::new(move |s, n| {
        if s.method == "POST" && s.target.starts_with(PJ_PATH) {
            *created.lock().unwrap() = s.body.clone();
            return (201, with_status(&s.body, Value::Null));
        }
        let pj = created.lock().unwrap().clone();
        let name = pj["metadata"]["name"].as_str().unwrap_or("?").to_string();
        if s.method == "GET" && s.target == format!("{PJ_PATH}/{name}") {
            let status = statuses[(n - 1).min(statuses.len() - 1)].clone();
            return (200, with_status(&pj, status));
        }
        (500, format!("unexpected {} {}", s.method, s.target))
    }))
}

fn submit_and_wait(server: &str, dir: &Path) -> Output {
    run(th_cmd(&[
        "submit",
        "s3://lake/events/",
        "-o",
        "s3://lake/profiles/events.json",
        "--name",
        "events",
        "--partitions",
        "16",
        "--wait",
    ])
    .env("KUBECONFIG", kubeconfig(dir, server))
    .env("TH_POLL_INTERVAL", "10ms"))
}

#[test]
fn submit_wait_prints_the_result_of_a_job_that_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = submit_server(vec![
        json!({"phase": "Pending"}),
        json!({"phase": "Running", "tasks": {"total": 16, "pending": 12, "running": 4, "succeeded": 0, "failed": 0, "retried": 0, "summary": "0/16"}}),
        json!({"phase": "Succeeded",
               "tasks": {"total": 16, "pending": 0, "running": 0, "succeeded": 16, "failed": 0, "retried": 0, "summary": "16/16"},
               "result": {"profileUri": "s3://lake/profiles/events.json", "rows": 3000, "columns": 15, "durationSeconds": 4.2}}),
    ]);
    let out = submit_and_wait(&server, dir.path());
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        "profilejob.truthound.io/events created in namespace data\n\
         profilejob.truthound.io/events succeeded in 4s\n  \
         profile  s3://lake/profiles/events.json\n  \
         rows     3,000 × 15 columns\n  \
         tasks    16/16 succeeded\n"
    );
    // Not a terminal: one progress line per change, on stderr.
    assert_eq!(
        stderr(&out),
        "events: Pending\nevents: Running · 0/16 tasks\nevents: Succeeded · 16/16 tasks\n"
    );
    let seen = log.lock().unwrap().clone();
    assert_eq!(seen[0].method, "POST");
    assert_eq!(seen[0].target, PJ_PATH, "the context's namespace");
    assert_eq!(seen[0].authorization, "Bearer t0ken");
    assert_eq!(seen[0].body["spec"]["partitioning"]["partitions"], 16);
    assert_eq!(seen[0].body["metadata"]["namespace"], "data");
    assert!(
        seen[1..]
            .iter()
            .all(|s| s.method == "GET" && s.target == format!("{PJ_PATH}/events"))
    );
}

#[test]
fn submit_wait_exits_non_zero_with_the_failure_of_a_job_that_fails() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = submit_server(vec![
        json!({"phase": "Running"}),
        json!({"phase": "Failed",
               "lastFailures": [{"task": 3, "reason": "BadData", "message": "s3://lake/events/3.parquet: not a readable parquet file", "time": "2024-05-01T10:03:00Z"}],
               "conditions": [{"type": "Failed", "status": "True", "reason": "TooManyFailedTasks",
                               "message": "1 task failed, 0 tolerated", "lastTransitionTime": "2024-05-01T10:03:10Z"}]}),
    ]);
    let out = submit_and_wait(&server, dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    // The progress lines come first on stderr, then the error.
    let err = stderr(&out);
    assert!(
        err.starts_with("events: Running\nevents: Failed\nerror: "),
        "{err}"
    );
    assert!(
        err.contains("error: ProfileJob `events` in namespace data failed: TooManyFailedTasks: 1 task failed, 0 tolerated\n"),
        "{err}"
    );
    assert!(
        stdout(&out)
            .contains("task 3: BadData: s3://lake/events/3.parquet: not a readable parquet file"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn api_errors_through_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (server, log) = fake_api(Box::new(|s, _| {
        match s.target.as_str() {
        t if t.starts_with("/apis/truthound.io/v1alpha1/namespaces/nocrd/") => {
            (404, "404 page not found".into())
        }
        t if t.starts_with("/apis/truthound.io/v1alpha1/namespaces/locked/") => (
            403,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden", "code": 403,
                   "message": "profilejobs.truthound.io is forbidden: User \"bob\" cannot list resource \"profilejobs\""})
            .to_string(),
        ),
        t if t == format!("{PJ_PATH}/gone") => (
            404,
            json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "NotFound", "code": 404,
                   "message": "profilejobs.truthound.io \"gone\" not found",
                   "details": {"name": "gone", "group": "truthound.io", "kind": "profilejobs"}})
            .to_string(),
        ),
        _ => (500, "unexpected".into()),
    }
    }));
    let config = kubeconfig(dir.path(), &server);
    let th_at = |args: &[&str]| run(th_cmd(args).env("KUBECONFIG", &config));

    let err = fails(&th_at(&["list", "-n", "nocrd"]), 69);
    assert!(
        err.starts_with(&format!(
            "error: the ProfileJob resource is not installed in this cluster ({server}): kubectl apply -f crds/"
        )),
        "{err}"
    );
    let err = fails(&th_at(&["list", "-n", "locked"]), 1);
    assert!(
        err.starts_with("error: forbidden: your account may not list profilejobs.truthound.io in namespace locked (ask for the role truthound-operator-view"),
        "{err}"
    );
    let err = fails(&th_at(&["describe", "gone"]), 1);
    assert!(
        err.starts_with("error: ProfileJob `gone` not found in namespace data: `th list -n data` lists the jobs there"),
        "{err}"
    );
    let targets: Vec<String> = log
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.target.clone())
        .collect();
    assert_eq!(
        targets,
        [
            "/apis/truthound.io/v1alpha1/namespaces/nocrd/profilejobs",
            "/apis/truthound.io/v1alpha1/namespaces/locked/profilejobs",
            &format!("{PJ_PATH}/gone"),
        ]
    );

    // Nothing listening: the message names the server.
    let closed = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let gone = format!("http://{closed}");
    let config = kubeconfig(dir.path(), &gone);
    let out = run(th_cmd(&["get", "events"]).env("KUBECONFIG", &config));
    let err = fails(&out, 69);
    assert!(
        err.starts_with(&format!(
            "error: cannot reach the Kubernetes API server at {gone}: connection refused"
        )),
        "{err}"
    );
}

#[test]
fn dry_run_writes_the_target_task_size() {
    let base = ["s3://lake/events/", "-o", "s3://lake/p/events.json"];
    let mut all = base.to_vec();
    all.extend_from_slice(&["--strategy", "hybrid", "--target-task-bytes", "8388608"]);
    let out = th(&{
        let mut a = vec!["submit", "--dry-run"];
        a.extend_from_slice(&all);
        a
    });
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("targetTaskBytes: 8388608"),
        "{}",
        stdout(&out)
    );
    let pj = dry_run(&all);
    assert_eq!(pj.spec.partitioning.target_task_bytes, Some(8 << 20));
    assert_eq!(pj.spec.partitioning.strategy, PartitionStrategy::Hybrid);
    // 0 (whole files) is a setting of its own, not the default.
    let mut zero = base.to_vec();
    zero.extend_from_slice(&["--target-task-bytes", "0"]);
    assert_eq!(dry_run(&zero).spec.partitioning.target_task_bytes, Some(0));
    assert_eq!(dry_run(&base).spec.partitioning.target_task_bytes, None);
    let mut spark = base.to_vec();
    spark.extend_from_slice(&[
        "--backend",
        "spark",
        "--master",
        "sc://s:15002",
        "--target-task-bytes",
        "1000",
    ]);
    refused(&spark, "spec.partitioning.targetTaskBytes");
}
