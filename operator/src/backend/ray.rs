//! The Ray backend's core, without Kubernetes: submit a plan's tasks to a Ray cluster as a job
//! through the Ray dashboard's Jobs REST API, follow each task's state, cancel, and leave the
//! partials where the plan's work prefix says.
//!
//! A submission uploads a `working_dir` package (a zip: the driver
//! `worker-image/drivers/ray_driver.py`, embedded here as [`DRIVER_PY`], a `th-worker` binary
//! when one is shipped, and the storage environment of the workers as [`ENV_FILE`]) with
//! `PUT /api/packages/gcs/<name>` (skipped when the dashboard already has it: the name is a hash
//! of the contents), then posts the job: `POST /api/jobs/` with the entrypoint
//! `python ray_driver.py`, the package as `runtime_env.working_dir`, and the run's configuration
//! as `runtime_env.env_vars` (which every Ray task of the job has too). The driver fans the tasks
//! out as Ray tasks, each running `th-worker run-task --plan PLAN --task I --out PARTIALS/I` with
//! the storage environment added to its own.
//!
//! The storage environment (endpoint, credentials) is in the package, not in `env_vars`,
//! because the dashboard shows every job's `runtime_env` to whoever can open it
//! (`GET /api/jobs/`, the Jobs page), while the package stays in the cluster's GCS storage,
//! where only code running on the cluster reads it.
//!
//! The job's `submission_id` is [`submission_id`]`(run, attempt)`: a retried or restarted
//! submitter posts the same id again, Ray answers "already exists", and that counts as
//! submitted ([`RayRun::already_submitted`]); the job is then followed as if this call had
//! made it. [`RayRun::attach`] follows a job by its id without posting anything.
//!
//! Per-task states: the driver prints a JSON line per task state change on its stdout, which
//! is the job's log; [`RayRun::poll`] reads `GET /api/jobs/{id}` and `GET /api/jobs/{id}/logs`
//! and folds the new lines into [`TaskState`]s (the Dask backend's shape, see
//! [`super::tasks`]). When the job fails, the error carries Ray's message and the tail of the
//! logs. [`RayRun::cancel`] is `POST /api/jobs/{id}/stop`.
//!
//! Retries: the driver retries a task whose `th-worker` exits with anything but 0, 64 (invalid
//! request) or 65 (bad data), or whose Ray worker died, up to [`RaySubmit::retries`] times.

use super::bounded::{JsonStringTail, read_capped};
use super::tasks::{RunEvent, TaskBoard, TaskState, tail_lines, trim_front};
use crate::crd::{TaskCounts, TaskFailure};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

pub use super::tasks::{RemoteTasks, TaskPhase, counts, failures};

/// The driver, as `worker-image/drivers/ray_driver.py` holds it.
pub const DRIVER_PY: &str = include_str!("../../../worker-image/drivers/ray_driver.py");
/// The driver's name in the job's working directory.
pub const DRIVER_NAME: &str = "ray_driver.py";
/// The workers' storage environment in the job's working directory: a JSON object of
/// variables (`ray_driver.py` adds them to each `th-worker`'s environment).
pub const ENV_FILE: &str = "th_env.json";
/// The Ray version the driver is tested with (what `scripts/ray-cluster.sh` installs).
pub const RAY_REQUIREMENT: &str = "ray[default]==2.60.0";
/// Default retries of a task that failed transiently.
pub const DEFAULT_RETRIES: u32 = 2;
/// How much of the job's non-JSON log output is kept for error messages.
const LOG_TAIL: usize = 8192;
/// The most of a Jobs API answer that is read (versions, job infos, errors: a few KiB). The
/// dashboard's address comes from the ProfileJob's spec: whoever runs it must not be able to
/// grow the operator with an endless answer.
pub const MAX_BODY: usize = 1 << 20;
/// The most of a job's log read at a poll: the log is re-sent whole at every poll; what is new
/// since the last one is decoded as it streams in, and of that only the last this many bytes
/// are kept (a driver writes a short line per task state change: far less between two polls).
pub const MAX_LOG_READ: usize = 256 * 1024;
/// How long polling tolerates a dashboard that does not answer before giving up.
const POLL_OUTAGE: Duration = Duration::from_secs(60);

/// What to run, and where.
#[derive(Debug, Clone)]
pub struct RaySubmit {
    /// The Ray dashboard's address (the Jobs API), e.g. `http://ray-head:8265`.
    pub address: String,
    /// The submission attempt (1, 2, ...): a new attempt is a new job; with the run id, the
    /// job's submission id.
    pub attempt: u32,
    /// The tasks, the plan and where the partials go.
    pub work: RemoteTasks,
    /// The python of the entrypoint on the cluster (None: `python`).
    pub python: Option<String>,
    /// How often the job's state and logs are read.
    pub poll_interval: Duration,
}

/// What went wrong with the run itself (task failures are in the tasks' states).
#[derive(Debug, thiserror::Error)]
pub enum RayError {
    #[error("cannot reach the Ray dashboard (Jobs API) at {address}: {detail}")]
    Unreachable { address: String, detail: String },
    #[error("invalid Ray submission: {0}")]
    Invalid(String),
    /// The cluster lacks what the driver needs.
    #[error("{0}")]
    Unavailable(String),
    /// The Jobs API answered with an error.
    #[error("the Ray Jobs API at {address} answered {what} with HTTP {status}: {body}")]
    Api {
        address: String,
        what: String,
        status: u16,
        body: String,
    },
    #[error("the Ray job {submission_id} failed: {message}{logs}")]
    JobFailed {
        submission_id: String,
        message: String,
        /// "; its logs end with:\n..." or empty.
        logs: String,
    },
    #[error("the Ray driver failed: {0}")]
    Driver(String),
    #[error("the Ray job {0} was stopped")]
    Cancelled(String),
}

impl RayError {
    /// `th`'s exit code for it: 75 unreachable (retry later), 69 unavailable, 64 invalid, 130
    /// cancelled, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            RayError::Unreachable { .. } => 75,
            RayError::Unavailable(_) => 69,
            RayError::Invalid(_) => 64,
            RayError::Cancelled(_) => 130,
            RayError::Api { status, .. } if *status >= 500 => 75,
            RayError::Api { .. } | RayError::JobFailed { .. } | RayError::Driver(_) => 1,
        }
    }
}

/// The job's submission id for a run's attempt: `<run>-<attempt>`, with anything but ASCII
/// letters, digits, `-` and `_` in the run replaced by `-`. The same run and attempt always give
/// the same id, so posting it again never makes a second job.
pub fn submission_id(run_id: &str, attempt: u32) -> String {
    let run: String = run_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .take(100)
        .collect();
    format!("{run}-{attempt}")
}

/// The port a Ray head's dashboard (and its Jobs API) listens on unless `ray start
/// --dashboard-port` says otherwise.
pub const DEFAULT_DASHBOARD_PORT: u16 = 8265;

/// The dashboard's base URL: `http://HOST:PORT` as given (a missing scheme means http). A
/// `ray://HOST:PORT` client address (the ancestor's) is mapped to the same head's dashboard at
/// its default port; when nothing answers there, the error says which address to give.
pub fn dashboard_url(address: &str) -> Result<String, RayError> {
    let a = address.trim().trim_end_matches('/');
    if a.is_empty() {
        return Err(RayError::Invalid(
            "no Ray dashboard address (give --ray-address http://HOST:8265, or set RAY_ADDRESS)"
                .into(),
        ));
    }
    // Before the trailing `/` is trimmed: `ray://` alone names no host.
    let url = if let Some(client) = address.trim().strip_prefix("ray://") {
        let host = client_host(client).ok_or_else(|| {
            RayError::Invalid(format!(
                "`{a}` names no host; give the Ray dashboard's address, e.g. http://HOST:8265"
            ))
        })?;
        format!("http://{host}:{DEFAULT_DASHBOARD_PORT}")
    } else if a.starts_with("http://") || a.starts_with("https://") {
        a.to_string()
    } else if a.contains("://") {
        return Err(RayError::Invalid(format!(
            "`{a}` is not an http(s) address of the Ray dashboard (e.g. http://HOST:8265)"
        )));
    } else {
        format!("http://{a}")
    };
    reqwest::Url::parse(&url)
        .map_err(|e| RayError::Invalid(format!("`{address}` is not a valid address: {e}")))?;
    Ok(url)
}

/// The host of a `ray://` client address's `HOST[:PORT][/...]` (an IPv6 literal keeps its
/// brackets).
fn client_host(rest: &str) -> Option<&str> {
    let authority = rest.split('/').next().unwrap_or(rest);
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next().unwrap_or(authority)
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    (!host.is_empty()).then_some(host)
}

/// A small client of the Jobs API.
#[derive(Clone)]
struct Api {
    http: reqwest::Client,
    base: String,
    /// The `ray://` client address `base` was mapped from, if it was: said when it fails.
    client_address: Option<String>,
}

impl Api {
    fn new(address: &str) -> Result<Api, RayError> {
        let base = dashboard_url(address)?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(300))
            .build()
            .map_err(|e| RayError::Driver(format!("cannot make an HTTP client: {e}")))?;
        let given = address.trim();
        let client_address = given.starts_with("ray://").then(|| given.to_string());
        Ok(Api {
            http,
            base,
            client_address,
        })
    }

    fn unreachable(&self, e: &reqwest::Error) -> RayError {
        // The innermost cause says it ("Connection refused (os error 111)"); reqwest's own
        // layers only repeat the URL.
        let mut cause: &dyn std::error::Error = e;
        while let Some(s) = cause.source() {
            cause = s;
        }
        let mut detail = if e.is_timeout() {
            format!("timed out ({cause})")
        } else {
            cause.to_string()
        };
        if let Some(client) = &self.client_address {
            detail.push_str(&format!(
                "; `{client}` is a Ray client address, so its head's dashboard was looked for at \
                 Ray's default dashboard port {DEFAULT_DASHBOARD_PORT}: give the dashboard's \
                 address (`ray start --dashboard-port`) as http://HOST:PORT"
            ));
        }
        RayError::Unreachable {
            address: self.base.clone(),
            detail,
        }
    }

    /// Sends a request; the status and at most [`MAX_BODY`] bytes of the body, which is enough
    /// for an error's text (connection failures: Unreachable).
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), RayError> {
        let (status, body, _) = self.send_capped(req).await?;
        Ok((status, body))
    }

    /// [`Api::send`], and whether the body was longer than [`MAX_BODY`] (then cut).
    async fn send_capped(
        &self,
        req: reqwest::RequestBuilder,
    ) -> Result<(u16, bytes::Bytes, bool), RayError> {
        let resp = req.send().await.map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        let body = read_capped(resp, MAX_BODY)
            .await
            .map_err(|e| self.unreachable(&e))?;
        Ok((status, body.body, body.truncated))
    }

    /// The job's log (`GET /api/jobs/{id}/logs`, `{"logs": "..."}`) after its first `skip`
    /// bytes, at most about [`MAX_LOG_READ`] bytes of it, read as it streams in.
    async fn log_tail(
        &self,
        path: &str,
        skip: usize,
    ) -> Result<super::bounded::StringTail, RayError> {
        let mut resp = self
            .http
            .get(format!("{}{path}", self.base))
            .send()
            .await
            .map_err(|e| self.unreachable(&e))?;
        let status = resp.status().as_u16();
        if status != 200 {
            let body = read_capped(resp, MAX_BODY)
                .await
                .map_err(|e| self.unreachable(&e))?;
            return Err(self.api_error(&format!("GET {path}"), status, &body.body));
        }
        let shape = |e: super::bounded::ShapeError| RayError::Api {
            address: self.base.clone(),
            what: format!("GET {path}"),
            status,
            body: format!("not a job's logs: {e}"),
        };
        let mut tail = JsonStringTail::new("logs", skip, MAX_LOG_READ);
        while let Some(chunk) = resp.chunk().await.map_err(|e| self.unreachable(&e))? {
            tail.feed(&chunk).map_err(shape)?;
        }
        tail.finish().map_err(shape)
    }

    fn api_error(&self, what: &str, status: u16, body: &[u8]) -> RayError {
        let text = String::from_utf8_lossy(body);
        // The dashboard answers errors with a Python traceback: its last line says it.
        let last = text
            .lines()
            .rev()
            .map(str::trim)
            .find(|l| !l.is_empty() && *l != ".")
            .unwrap_or("")
            .to_string();
        RayError::Api {
            address: self.base.clone(),
            what: what.into(),
            status,
            body: last,
        }
    }

    async fn get_json(&self, path: &str) -> Result<serde_json::Value, RayError> {
        let (status, body, truncated) = self
            .send_capped(self.http.get(format!("{}{path}", self.base)))
            .await?;
        if status != 200 {
            return Err(self.api_error(&format!("GET {path}"), status, &body));
        }
        if truncated {
            return Err(RayError::Api {
                address: self.base.clone(),
                what: format!("GET {path}"),
                status,
                body: format!("the answer is longer than {MAX_BODY} bytes: not read"),
            });
        }
        serde_json::from_slice(&body).map_err(|e| RayError::Api {
            address: self.base.clone(),
            what: format!("GET {path}"),
            status,
            body: format!("not JSON: {e}"),
        })
    }
}

/// The job's status, as the Jobs API says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl JobStatus {
    fn parse(s: &str) -> JobStatus {
        match s {
            "RUNNING" => JobStatus::Running,
            "SUCCEEDED" => JobStatus::Succeeded,
            "FAILED" => JobStatus::Failed,
            "STOPPED" => JobStatus::Stopped,
            _ => JobStatus::Pending,
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobStatus::Succeeded | JobStatus::Failed | JobStatus::Stopped
        )
    }
}

/// The package of a submission: its name in the dashboard's GCS storage, a hash of its files
/// (so a package is uploaded once per driver, worker and storage environment).
fn package_name(driver: &[u8], worker: Option<&[u8]>, env: &[u8]) -> String {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    for part in [Some(driver), worker, Some(env)] {
        match part {
            Some(bytes) => {
                h.update(&(bytes.len() as u64).to_le_bytes());
                h.update(bytes);
            }
            None => h.update(&u64::MAX.to_le_bytes()),
        }
    }
    format!("_th_pkg_{:032x}.zip", h.digest128())
}

/// A zip archive of `(name, unix mode, bytes)` entries, deflated (Ray's unpacker restores the
/// modes, so the shipped `th-worker` stays executable).
pub fn zip_files(files: &[(&str, u32, &[u8])]) -> Vec<u8> {
    use std::io::Write;
    let mut out: Vec<u8> = Vec::new();
    let mut central: Vec<u8> = Vec::new();
    // 1980-01-01 00:00, the zip epoch: the archive's bytes depend on the contents only.
    let (time, date): (u16, u16) = (0, (1 << 5) | 1);
    for (name, mode, data) in files {
        let mut crc = flate2::Crc::new();
        crc.update(data);
        let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).expect("deflate into memory");
        let packed = enc.finish().expect("deflate into memory");
        assert!(
            packed.len() < u32::MAX as usize && data.len() < u32::MAX as usize,
            "zip64 is not supported"
        );
        let offset = out.len() as u32;
        let header = |sig: u32, central: bool| {
            let mut h = Vec::with_capacity(46 + name.len());
            h.extend_from_slice(&sig.to_le_bytes());
            if central {
                h.extend_from_slice(&((3u16 << 8) | 20).to_le_bytes()); // made by: unix, 2.0
            }
            h.extend_from_slice(&20u16.to_le_bytes()); // needed: 2.0
            h.extend_from_slice(&0x0800u16.to_le_bytes()); // UTF-8 names
            h.extend_from_slice(&8u16.to_le_bytes()); // deflate
            h.extend_from_slice(&time.to_le_bytes());
            h.extend_from_slice(&date.to_le_bytes());
            h.extend_from_slice(&crc.sum().to_le_bytes());
            h.extend_from_slice(&(packed.len() as u32).to_le_bytes());
            h.extend_from_slice(&(data.len() as u32).to_le_bytes());
            h.extend_from_slice(&(name.len() as u16).to_le_bytes());
            h.extend_from_slice(&0u16.to_le_bytes()); // extra
            if central {
                h.extend_from_slice(&0u16.to_le_bytes()); // comment
                h.extend_from_slice(&0u16.to_le_bytes()); // disk
                h.extend_from_slice(&0u16.to_le_bytes()); // internal attributes
                h.extend_from_slice(&((0o100000 | mode) << 16).to_le_bytes());
                h.extend_from_slice(&offset.to_le_bytes());
            }
            h.extend_from_slice(name.as_bytes());
            h
        };
        out.extend_from_slice(&header(0x0403_4b50, false));
        out.extend_from_slice(&packed);
        central.extend_from_slice(&header(0x0201_4b50, true));
    }
    let cd_offset = out.len() as u32;
    let n = files.len() as u16;
    out.extend_from_slice(&central);
    out.extend_from_slice(&0x0605_4b50u32.to_le_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]); // disk numbers
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&n.to_le_bytes());
    out.extend_from_slice(&(central.len() as u32).to_le_bytes());
    out.extend_from_slice(&cd_offset.to_le_bytes());
    out.extend_from_slice(&0u16.to_le_bytes()); // comment
    out
}

/// A submitted job and its tasks' states.
pub struct RayRun {
    api: Api,
    submission_id: String,
    already_submitted: bool,
    board: TaskBoard,
    /// Bytes of the job's logs already folded.
    log_offset: usize,
    /// The job's log lines that are not the driver's (Ray's own, tracebacks), for errors.
    other: String,
    status: JobStatus,
    message: String,
    events: VecDeque<RunEvent>,
    poll_interval: Duration,
    polled: bool,
    failing_since: Option<Instant>,
    error: Option<RayError>,
    ray_version: Option<String>,
}

impl RayRun {
    /// Uploads the package (unless the dashboard has it) and posts the job. A job with the
    /// same submission id already there counts as submitted: it is followed.
    pub async fn submit(s: RaySubmit) -> Result<RayRun, RayError> {
        let api = Api::new(&s.address)?;
        if s.work.tasks.is_empty() {
            return Err(RayError::Invalid("no tasks to run".into()));
        }
        // Reachable, and a Ray dashboard.
        let version = api.get_json("/api/version").await?;
        let ray_version = version["ray_version"].as_str().map(str::to_string);
        let id = submission_id(&s.work.run_id, s.attempt);

        let mut worker = match &s.work.worker_bin {
            Some(p) => Some(tokio::fs::read(p).await.map_err(|e| {
                RayError::Invalid(format!("cannot read th-worker at {}: {e}", p.display()))
            })?),
            None => None,
        };
        let env = serde_json::to_vec(&s.work.env)
            .map_err(|e| RayError::Driver(format!("the storage environment: {e}")))?;
        let name = package_name(DRIVER_PY.as_bytes(), worker.as_deref(), &env);
        let path = format!("/api/packages/gcs/{name}");
        let url = format!("{}{path}", api.base);
        let (status, body) = api.send(api.http.get(&url)).await?;
        match status {
            200 => tracing::debug!(package = %name, "the Ray dashboard has the package"),
            404 => {
                let worker = worker.take();
                let zip = tokio::task::spawn_blocking(move || {
                    let mut files: Vec<(&str, u32, &[u8])> =
                        vec![(DRIVER_NAME, 0o644, DRIVER_PY.as_bytes())];
                    if let Some(w) = &worker {
                        files.push(("th-worker", 0o755, w));
                    }
                    // Readable by the job's user only: it holds credentials.
                    files.push((ENV_FILE, 0o600, &env));
                    zip_files(&files)
                })
                .await
                .map_err(|e| RayError::Driver(format!("zipping the working_dir: {e}")))?;
                tracing::info!(package = %name, bytes = zip.len(), "uploading the job's working_dir");
                let (status, body) = api.send(api.http.put(&url).body(zip)).await?;
                if status != 200 {
                    return Err(api.api_error(&format!("PUT {path}"), status, &body));
                }
            }
            _ => return Err(api.api_error(&format!("GET {path}"), status, &body)),
        }
        drop(worker);

        let config = serde_json::json!({
            "run_id": s.work.run_id,
            "attempt": s.attempt,
            "plan_uri": s.work.plan_uri,
            "partials_prefix": s.work.partials_prefix,
            "tasks": s.work.tasks,
            "retries": s.work.retries,
            "storage_args": s.work.worker_args,
        });
        // No storage variables here: they are in the package (see the module's docs).
        let env_vars = serde_json::json!({
            "TH_RAY_CONFIG": config.to_string(),
            "PYTHONUNBUFFERED": "1",
        });
        let python = s.python.as_deref().unwrap_or("python");
        let job = serde_json::json!({
            "entrypoint": format!("{python} {DRIVER_NAME}"),
            "submission_id": id,
            "runtime_env": {
                "working_dir": format!("gcs://{name}"),
                "env_vars": env_vars,
            },
            "metadata": {
                "truthound.run": s.work.run_id,
                "truthound.attempt": s.attempt.to_string(),
                "truthound.plan": s.work.plan_uri,
            },
        });
        let (status, body) = api
            .send(
                api.http
                    .post(format!("{}/api/jobs/", api.base))
                    .header("content-type", "application/json")
                    .body(job.to_string()),
            )
            .await?;
        let already_submitted = match status {
            200 => false,
            // Ray 2.60 answers a repeated submission_id with HTTP 500 "... already exists".
            _ if String::from_utf8_lossy(&body).contains("already exists") => true,
            _ => return Err(api.api_error("POST /api/jobs/", status, &body)),
        };
        tracing::info!(submission_id = %id, already_submitted, "Ray job submitted");
        let mut run = RayRun::new(api, id, &s.work.tasks, s.poll_interval);
        run.already_submitted = already_submitted;
        run.ray_version = ray_version;
        Ok(run)
    }

    /// Follows the job `submission_id` (submitted earlier) without posting anything.
    pub async fn attach(
        address: &str,
        submission_id: &str,
        tasks: &[u32],
        poll_interval: Duration,
    ) -> Result<RayRun, RayError> {
        let api = Api::new(address)?;
        let mut run = RayRun::new(api, submission_id.to_string(), tasks, poll_interval);
        run.already_submitted = true;
        run.poll().await?;
        Ok(run)
    }

    fn new(api: Api, submission_id: String, tasks: &[u32], poll_interval: Duration) -> RayRun {
        RayRun {
            api,
            submission_id,
            already_submitted: false,
            board: TaskBoard::new(tasks),
            log_offset: 0,
            other: String::new(),
            status: JobStatus::Pending,
            message: String::new(),
            events: VecDeque::new(),
            poll_interval,
            polled: false,
            failing_since: None,
            error: None,
            ray_version: None,
        }
    }

    /// The job's submission id.
    pub fn submission_id(&self) -> &str {
        &self.submission_id
    }

    /// Whether a job with this submission id was there already (this call posted nothing new).
    pub fn already_submitted(&self) -> bool {
        self.already_submitted
    }

    /// The cluster's Ray version (from the dashboard), when known.
    pub fn ray_version(&self) -> Option<&str> {
        self.ray_version.as_deref()
    }

    /// The job's status at the last poll.
    pub fn status(&self) -> JobStatus {
        self.status
    }

    /// The tasks' states at the last poll.
    pub fn states(&self) -> Vec<TaskState> {
        self.board.states()
    }

    /// The cluster's nodes and CPUs, once the driver has connected.
    pub fn workers(&self) -> Option<(u32, u32)> {
        self.board.workers
    }

    /// Task counts in the operator's shape.
    pub fn counts(&self) -> TaskCounts {
        counts(&self.states())
    }

    /// The failed tasks in the operator's shape.
    pub fn failures(&self) -> Vec<TaskFailure> {
        failures(&self.states())
    }

    /// Reads the job's status and logs once and folds the new log lines into the tasks' states
    /// (their events are then returned by [`RayRun::next_event`]).
    pub async fn poll(&mut self) -> Result<JobStatus, RayError> {
        let id = self.submission_id.clone();
        let info = self.api.get_json(&format!("/api/jobs/{id}")).await?;
        let status = JobStatus::parse(info["status"].as_str().unwrap_or(""));
        self.message = info["message"].as_str().unwrap_or("").to_string();
        // Only what is new since the last poll is kept, and at most MAX_LOG_READ of it.
        let tail = self
            .api
            .log_tail(&format!("/api/jobs/{id}/logs"), self.log_offset)
            .await?;
        if tail.start > self.log_offset && tail.total > self.log_offset {
            tracing::warn!(
                submission_id = %id,
                skipped = tail.start - self.log_offset,
                "the Ray job's log grew by more than {MAX_LOG_READ} bytes since the last poll: \
                 only its tail is read"
            );
            self.log_offset = tail.start;
        }
        let logs = tail.text.as_str();
        // The logs were read after the status: once it is terminal they are complete, and the
        // last line counts even without its newline. `logs` starts at byte `log_offset`.
        let end = if status.is_terminal() {
            logs.len()
        } else {
            logs.rfind('\n').map_or(0, |i| i + 1)
        };
        if end > 0 && tail.total > self.log_offset {
            for line in logs[..end].lines() {
                match self.board.apply_line(line) {
                    Some(evs) => self.events.extend(evs),
                    None => {
                        self.other.push_str(line);
                        self.other.push('\n');
                        trim_front(&mut self.other, LOG_TAIL);
                    }
                }
            }
            self.log_offset += end;
        }
        self.status = status;
        Ok(status)
    }

    /// The next change, or None once the job has ended and everything it said was returned
    /// (then [`RayRun::finish`] says how it ended).
    pub async fn next_event(&mut self) -> Option<RunEvent> {
        loop {
            if let Some(e) = self.events.pop_front() {
                return Some(e);
            }
            if self.error.is_some() || (self.polled && self.status.is_terminal()) {
                return None;
            }
            if self.polled {
                tokio::time::sleep(self.poll_interval).await;
            }
            self.polled = true;
            match self.poll().await {
                Ok(_) => self.failing_since = None,
                Err(e @ RayError::Unreachable { .. }) => {
                    let since = *self.failing_since.get_or_insert_with(Instant::now);
                    tracing::warn!(error = %e, "polling the Ray job");
                    if since.elapsed() >= POLL_OUTAGE {
                        self.error = Some(e);
                    }
                }
                Err(e) => self.error = Some(e),
            }
        }
    }

    /// Stops the job (`POST /api/jobs/{id}/stop`): Ray signals the driver, which cancels its
    /// tasks; the job ends STOPPED.
    pub async fn cancel(&mut self) -> Result<(), RayError> {
        let path = format!("/api/jobs/{}/stop", self.submission_id);
        let (status, body) = self
            .api
            .send(self.api.http.post(format!("{}{path}", self.api.base)))
            .await?;
        if status != 200 {
            return Err(self.api.api_error(&format!("POST {path}"), status, &body));
        }
        Ok(())
    }

    /// Follows the job to its end and returns the tasks' final states (some may have failed:
    /// see [`TaskState::phase`]), or why the job itself failed.
    pub async fn finish(mut self) -> Result<Vec<TaskState>, RayError> {
        while self.next_event().await.is_some() {}
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.outcome()
    }

    /// How the job ended, from its last poll (its status terminal): the tasks' final states, or
    /// why the job itself failed, with the tail of its logs.
    pub fn outcome(&self) -> Result<Vec<TaskState>, RayError> {
        let logs_tail = || {
            let t = self.other.trim();
            if t.is_empty() {
                String::new()
            } else {
                format!("; its logs end with:\n{}", tail_lines(t, 20))
            }
        };
        if let Some((kind, message)) = &self.board.error {
            return Err(match kind.as_str() {
                "invalid" => RayError::Invalid(message.clone()),
                "missing_dependency" => RayError::Unavailable(format!(
                    "{message}: the Ray cluster's python needs `{RAY_REQUIREMENT}`"
                )),
                _ => RayError::Driver(format!("{message}{}", logs_tail())),
            });
        }
        match self.status {
            JobStatus::Stopped => Err(RayError::Cancelled(self.submission_id.clone())),
            JobStatus::Succeeded if self.board.finished && !self.board.cancelled => {
                Ok(self.board.states())
            }
            JobStatus::Succeeded => Err(RayError::Driver(format!(
                "the job {} ended before every task did{}",
                self.submission_id,
                logs_tail()
            ))),
            _ => {
                // Ray's message may hold the logs already ("last available logs ...").
                let tail = logs_tail();
                let last = self.other.trim().lines().last().unwrap_or("");
                let logs = if last.is_empty() || self.message.contains(last) {
                    String::new()
                } else {
                    tail
                };
                Err(RayError::JobFailed {
                    submission_id: self.submission_id.clone(),
                    message: if self.message.is_empty() {
                        "no message".into()
                    } else {
                        self.message.trim_end().to_string()
                    },
                    logs,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submission_ids_are_deterministic() {
        assert_eq!(submission_id("th-abc/def", 2), "th-abc-def-2");
        assert_eq!(
            submission_id("th-abc/def", 2),
            submission_id("th-abc/def", 2)
        );
        assert_ne!(submission_id("r", 1), submission_id("r", 2));
    }

    #[test]
    fn dashboard_addresses() {
        assert_eq!(
            dashboard_url("127.0.0.1:8265").unwrap(),
            "http://127.0.0.1:8265"
        );
        assert_eq!(dashboard_url("http://h:8265/").unwrap(), "http://h:8265");
        // The ancestor's client addresses: the same head's dashboard.
        assert_eq!(dashboard_url("ray://h:10001").unwrap(), "http://h:8265");
        assert_eq!(dashboard_url("ray://h").unwrap(), "http://h:8265");
        assert_eq!(
            dashboard_url("ray://[::1]:10001").unwrap(),
            "http://[::1]:8265"
        );
        assert!(matches!(dashboard_url("ray://"), Err(RayError::Invalid(_))));
        assert!(matches!(dashboard_url(" "), Err(RayError::Invalid(_))));
        assert_eq!(
            RayError::Unreachable {
                address: "a".into(),
                detail: "b".into()
            }
            .exit_code(),
            75
        );
    }

    #[test]
    fn zips_are_readable_and_keep_modes() {
        let z = zip_files(&[("a.py", 0o644, b"print(1)\n"), ("bin", 0o755, &[7u8; 5000])]);
        // local header, end of central directory
        assert_eq!(&z[..4], &[0x50, 0x4b, 0x03, 0x04]);
        let eocd = z.len() - 22;
        assert_eq!(&z[eocd..eocd + 4], &[0x50, 0x4b, 0x05, 0x06]);
        assert_eq!(u16::from_le_bytes([z[eocd + 10], z[eocd + 11]]), 2);
        // deterministic
        assert_eq!(
            z,
            zip_files(&[("a.py", 0o644, b"print(1)\n"), ("bin", 0o755, &[7u8; 5000])])
        );
        let n1 = package_name(b"d", Some(b"w"), b"{}");
        assert_eq!(n1, package_name(b"d", Some(b"w"), b"{}"));
        assert_ne!(n1, package_name(b"d", None, b"{}"));
        // Other credentials, another package: a package never carries someone else's.
        assert_ne!(
            n1,
            package_name(b"d", Some(b"w"), br#"{"AWS_SECRET_ACCESS_KEY":"x"}"#)
        );
        // Lengths are hashed: moving bytes between parts changes the name.
        assert_ne!(
            package_name(b"dw", None, b"{}"),
            package_name(b"d", Some(b"w"), b"{}")
        );
        assert!(n1.starts_with("_th_pkg_") && n1.ends_with(".zip"));
    }

    /// A fake dashboard on 127.0.0.1: `GET /api/jobs/j` answers an endless job info when
    /// `endless_info`, else a FAILED job; `GET /api/jobs/j/logs` a log of `log_mib` MiB of
    /// filler lines ending with `last words`. Bodies are sent as they are made, never whole.
    async fn fake_dashboard(endless_info: bool, log_mib: usize) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match conn.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split(' ').nth(1).unwrap_or("").to_string();
                    // No length: the body ends when the connection does.
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                        connection: close\r\n\r\n";
                    if conn.write_all(ok).await.is_err() {
                        return;
                    }
                    let filler = "filler line of a huge log\n".repeat(4096);
                    if path == "/api/jobs/j" && endless_info {
                        let _ = conn
                            .write_all(b"{\"status\": \"RUNNING\", \"message\": \"")
                            .await;
                        while conn
                            .write_all(filler.replace('\n', " ").as_bytes())
                            .await
                            .is_ok()
                        {}
                    } else if path == "/api/jobs/j" {
                        let _ = conn
                            .write_all(br#"{"status": "FAILED", "message": "boom"}"#)
                            .await;
                    } else if path == "/api/jobs/j/logs" {
                        let _ = conn.write_all(b"{\"logs\": \"").await;
                        let line = filler.replace('\n', "\\n");
                        let mut sent = 0;
                        while sent < log_mib << 20 {
                            if conn.write_all(line.as_bytes()).await.is_err() {
                                return;
                            }
                            sent += filler.len();
                        }
                        let _ = conn.write_all(b"last words\\n\"}").await;
                    }
                });
            }
        });
        format!("http://{addr}")
    }

    #[tokio::test]
    async fn an_endless_job_info_is_not_read_whole() {
        let address = fake_dashboard(true, 0).await;
        let started = Instant::now();
        let r = tokio::time::timeout(
            Duration::from_secs(60),
            RayRun::attach(&address, "j", &[0], Duration::from_secs(1)),
        )
        .await
        .expect("the endless answer is cut, not read to the end");
        match r {
            Err(RayError::Api { body, .. }) => {
                assert!(body.contains("longer than 1048576 bytes"), "{body}")
            }
            Err(e) => panic!("unexpected error {e}"),
            Ok(_) => panic!("an endless job info was taken"),
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }

    #[tokio::test]
    async fn a_huge_job_log_is_read_for_its_tail_only() {
        let address = fake_dashboard(false, 200).await;
        let api = Api::new(&address).expect("api");
        let tail = tokio::time::timeout(
            Duration::from_secs(120),
            api.log_tail("/api/jobs/j/logs", 0),
        )
        .await
        .expect("in time")
        .expect("the log's tail");
        // 200 MiB went by; at most MAX_LOG_READ was kept, ending with the log's end.
        assert!(tail.total > 200 << 20, "{}", tail.total);
        assert!(tail.text.len() <= MAX_LOG_READ, "{}", tail.text.len());
        assert!(tail.text.len() > MAX_LOG_READ / 2, "{}", tail.text.len());
        assert!(
            tail.text.starts_with("filler line"),
            "cut at a line's start"
        );
        assert!(tail.text.ends_with("last words\n"));
        assert_eq!(tail.start + tail.text.len(), tail.total);

        // And as a poll sees it: the job failed, its error ends with the log's last line.
        let run = RayRun::attach(&address, "j", &[0], Duration::from_secs(1))
            .await
            .expect("attached");
        assert_eq!(run.status(), JobStatus::Failed);
        assert!(run.other.len() <= 2 * LOG_TAIL);
        let err = run.outcome().expect_err("failed").to_string();
        assert!(err.contains("boom") && err.ends_with("last words"), "{err}");
    }

    #[test]
    fn the_embedded_driver_is_the_driver() {
        assert!(DRIVER_PY.contains("def _run_task("));
    }
}
