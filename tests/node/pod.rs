//! One pod's life on this node, as the kubelet lives it: prepare each container (its command,
//! its environment; a missing Secret leaves it waiting in `CreateContainerConfigError`), start
//! them, report Running, record each exit (restarting in place under `OnFailure` / `Always`), report
//! the terminal phase; on deletion SIGTERM, the grace period, SIGKILL, a terminal status and the
//! final delete; when the pod vanishes or the agent stops, kill.

use crate::Ctx;
use crate::env::{Sources, resolve};
use crate::process::{self, Launch};
use crate::status::{self, Container as CStatus, IP, Phase, PodStatus, State, Terminated, now};
use k8s_openapi::api::core::v1::{Container, Pod};
use kube::api::{DeleteParams, Patch, PatchParams, Preconditions};
use kube::{Api, ResourceExt};
use serde_json::Value;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tracing::{info, warn};

/// What the agent last saw of the pod.
#[derive(Clone)]
pub enum Seen {
    Pod(Arc<Pod>),
    Gone,
}

/// How often a container that cannot be configured is tried again.
const CONFIG_RETRY: Duration = Duration::from_secs(1);
/// Restart back-off under `OnFailure` / `Always`: short, for tests (the kubelet starts at 10 s).
const RESTART_BACKOFF: Duration = Duration::from_millis(500);
const RESTART_BACKOFF_MAX: Duration = Duration::from_secs(10);
const DEFAULT_GRACE: i64 = 30;

/// A container ready to run.
struct Prepared {
    program: String,
    args: Vec<String>,
    env: Vec<(String, String)>,
    log: PathBuf,
    message_file: PathBuf,
    fallback_to_logs: bool,
}

/// A container's live process.
struct Proc {
    pid: i32,
    generation: i32,
    started_at: String,
    log_start: u64,
}

struct Exit {
    index: usize,
    generation: i32,
    status: std::io::Result<ExitStatus>,
    finished_at: String,
}

/// Why a pod's task ended early.
enum Stop {
    /// Deleted from the API, or replaced by another pod of the same name.
    Gone,
    Shutdown,
}

struct PodRun {
    ctx: Arc<Ctx>,
    api: Api<Pod>,
    pod: Arc<Pod>,
    label: String,
    uid: String,
    dir: PathBuf,
    restart_policy: String,
    status: PodStatus,
    prepared: Vec<Prepared>,
    procs: Vec<Option<Proc>>,
    restart_at: Vec<Option<Instant>>,
    exits_tx: mpsc::UnboundedSender<Exit>,
    exits: mpsc::UnboundedReceiver<Exit>,
    written: Option<Value>,
}

/// Runs the pod until it is terminal, deleted, gone, or the agent stops.
pub async fn supervise(
    ctx: Arc<Ctx>,
    mut seen: watch::Receiver<Seen>,
    mut shutdown: watch::Receiver<bool>,
) {
    let pod = match &*seen.borrow_and_update() {
        Seen::Pod(p) => p.clone(),
        Seen::Gone => return,
    };
    let ns = pod.namespace().unwrap_or_default();
    let name = pod.name_any();
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let spec = pod.spec.clone().unwrap_or_default();
    let (exits_tx, exits) = mpsc::unbounded_channel();
    let containers: Vec<CStatus> = spec
        .containers
        .iter()
        .map(|c| {
            CStatus::waiting(
                &c.name,
                c.image.as_deref().unwrap_or(""),
                "ContainerCreating",
            )
        })
        .collect();
    let n = containers.len();
    let mut run = PodRun {
        api: Api::namespaced(ctx.client.clone(), &ns),
        dir: ctx.root.join(format!("{ns}_{name}_{uid}")),
        ctx,
        label: format!("{ns}/{name}"),
        uid,
        restart_policy: spec
            .restart_policy
            .clone()
            .unwrap_or_else(|| "Always".into()),
        status: PodStatus::new(containers),
        prepared: Vec::new(),
        procs: (0..n).map(|_| None).collect(),
        restart_at: vec![None; n],
        exits_tx,
        exits,
        written: None,
        pod,
    };
    let outcome = run.live(&mut seen, &mut shutdown).await;
    match outcome {
        Ok(()) => {}
        Err(Stop::Gone) => {
            run.kill_all().await;
            info!(pod = %run.label, "pod gone: its processes killed");
        }
        Err(Stop::Shutdown) => {
            run.kill_all().await;
            // As the kubelet's graceful node shutdown: the pod fails, so nothing waits for it
            // (a terminal pod is deleted at once; a Job replaces it); one being deleted would
            // stay Terminating with no kubelet left, so it gets its final delete too.
            if !run.status.phase.terminal() {
                run.status.phase = Phase::Failed;
                run.status.reason = Some("Terminated".into());
                run.status.message =
                    Some("Pod was terminated in response to imminent node shutdown.".into());
            }
            if run.write().await.is_ok() && run.pod.metadata.deletion_timestamp.is_some() {
                run.final_delete().await;
            }
        }
    }
    // Whichever way it ended, nothing of the pod writes its logs any more.
    run.ctx.logs.pod_ended(&run.uid);
}

impl PodRun {
    async fn live(
        &mut self,
        seen: &mut watch::Receiver<Seen>,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), Stop> {
        if self.started_elsewhere() {
            return self.lost().await;
        }
        if let Err(e) = std::fs::create_dir_all(&self.dir) {
            warn!(pod = %self.label, dir = %self.dir.display(), error = %e, "cannot make the pod's directory");
        }
        info!(pod = %self.label, dir = %self.dir.display(), "pod accepted");

        // Prepare every container; until all can be, the pod waits (and may be deleted).
        loop {
            if self.deleting() {
                return self.terminate_and_delete(None).await;
            }
            if self.prepare().await {
                break;
            }
            self.write().await?;
            tokio::select! {
                _ = tokio::time::sleep(CONFIG_RETRY) => {}
                r = seen.changed() => self.observe(r, seen)?,
                _ = shutdown.changed() => return Err(Stop::Shutdown),
            }
        }

        for i in 0..self.prepared.len() {
            self.start(i);
        }
        self.status.phase = status::phase(&self.status.containers, &self.restart_policy);
        self.write().await?;
        if self.status.phase.terminal() {
            // Nothing could start and nothing restarts.
            return Ok(());
        }

        let deadline = self.active_deadline();
        loop {
            let next_restart = self.restart_at.iter().flatten().min().copied();
            tokio::select! {
                Some(exit) = self.exits.recv() => {
                    self.exited(exit, true);
                    self.status.phase = status::phase(&self.status.containers, &self.restart_policy);
                    self.write().await?;
                }
                _ = sleep_until(next_restart), if next_restart.is_some() => {
                    let now = Instant::now();
                    for i in 0..self.restart_at.len() {
                        if self.restart_at[i].is_some_and(|t| t <= now) {
                            self.restart_at[i] = None;
                            self.start(i);
                        }
                    }
                    self.status.phase = status::phase(&self.status.containers, &self.restart_policy);
                    self.write().await?;
                }
                _ = sleep_until(deadline), if deadline.is_some() => {
                    info!(pod = %self.label, "active deadline exceeded");
                    self.terminate(self.grace()).await;
                    self.status.phase = Phase::Failed;
                    self.status.reason = Some("DeadlineExceeded".into());
                    self.status.message =
                        Some("Pod was active on the node longer than the specified deadline".into());
                    self.write().await?;
                }
                r = seen.changed() => {
                    self.observe(r, seen)?;
                    if self.deleting() {
                        return self.terminate_and_delete(Some(self.grace())).await;
                    }
                }
                _ = shutdown.changed() => return Err(Stop::Shutdown),
            }
            if self.status.phase.terminal() {
                return Ok(());
            }
        }
    }

    /// Takes the newest view of the pod; the pod's deletion or replacement ends the task.
    fn observe(
        &mut self,
        changed: Result<(), watch::error::RecvError>,
        seen: &mut watch::Receiver<Seen>,
    ) -> Result<(), Stop> {
        if changed.is_err() {
            return Err(Stop::Gone);
        }
        match &*seen.borrow_and_update() {
            Seen::Pod(p) if p.metadata.uid.as_deref() == Some(self.uid.as_str()) => {
                self.pod = p.clone();
                Ok(())
            }
            _ => Err(Stop::Gone),
        }
    }

    fn deleting(&self) -> bool {
        self.pod.metadata.deletion_timestamp.is_some()
    }

    /// The grace period of the deletion, else the pod's.
    fn grace(&self) -> Duration {
        let secs = self
            .pod
            .metadata
            .deletion_grace_period_seconds
            .or_else(|| self.pod.spec.as_ref()?.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE);
        Duration::from_secs(secs.max(0) as u64)
    }

    fn active_deadline(&self) -> Option<Instant> {
        let secs = self.pod.spec.as_ref()?.active_deadline_seconds?;
        Some(Instant::now() + Duration::from_secs(secs.max(0) as u64))
    }

    /// A pod whose containers ran before this agent started (an earlier agent's): their
    /// processes are gone with it.
    fn started_elsewhere(&self) -> bool {
        self.pod
            .status
            .as_ref()
            .and_then(|s| s.container_statuses.as_ref())
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.state
                        .as_ref()
                        .is_some_and(|s| s.running.is_some() || s.terminated.is_some())
                })
            })
    }

    /// As the kubelet reports containers it cannot find: Failed, exit code 137.
    async fn lost(&mut self) -> Result<(), Stop> {
        warn!(pod = %self.label, "pod ran under an earlier agent: reporting its containers lost");
        let now = now();
        for c in &mut self.status.containers {
            c.state = State::Terminated(Terminated {
                exit_code: 137,
                signal: None,
                reason: "ContainerStatusUnknown".into(),
                message: "The container could not be located when the pod was terminated".into(),
                started_at: now.clone(),
                finished_at: now.clone(),
                container_id: String::new(),
            });
        }
        self.status.phase = Phase::Failed;
        self.write().await?;
        if self.deleting() {
            self.final_delete().await;
        }
        Ok(())
    }

    /// Resolves every container's command and environment; false (with the containers' waiting
    /// reasons set) when one cannot be.
    async fn prepare(&mut self) -> bool {
        let pod = self.pod.clone();
        let spec = pod.spec.clone().unwrap_or_default();
        let ns = pod.namespace().unwrap_or_default();
        // Not run here: say so, rather than run the containers without what they wait for.
        let init = spec.init_containers.as_ref().map_or(0, Vec::len);
        if init > 0 {
            let message = format!("th-test-node does not run init containers (the pod has {init})");
            let waiting = State::Waiting {
                reason: "CreateContainerConfigError".into(),
                message: Some(message.clone()),
            };
            if self.status.containers.first().map(|c| &c.state) != Some(&waiting) {
                warn!(pod = %self.label, %message, "pod cannot start");
            }
            for c in &mut self.status.containers {
                c.state = waiting.clone();
            }
            return false;
        }
        let refs: Vec<&Container> = spec.containers.iter().collect();
        let sources = match Sources::fetch(&self.ctx.client, &ns, &refs).await {
            Ok(s) => s,
            Err(e) => {
                warn!(pod = %self.label, error = %e, "reading the pod's Secrets and ConfigMaps");
                return false;
            }
        };
        let mut prepared = Vec::new();
        let mut ok = true;
        for (i, c) in spec.containers.iter().enumerate() {
            match self.prepare_one(&pod, c, &sources) {
                Ok(p) => {
                    self.status.containers[i].state = State::Waiting {
                        reason: "ContainerCreating".into(),
                        message: None,
                    };
                    prepared.push(p);
                }
                Err((reason, message)) => {
                    if self.status.containers[i].state
                        != (State::Waiting {
                            reason: reason.into(),
                            message: Some(message.clone()),
                        })
                    {
                        warn!(pod = %self.label, container = %c.name, reason, %message, "container cannot start");
                    }
                    self.status.containers[i].state = State::Waiting {
                        reason: reason.into(),
                        message: Some(message),
                    };
                    ok = false;
                }
            }
        }
        if ok {
            self.prepared = prepared;
        }
        ok
    }

    fn prepare_one(
        &self,
        pod: &Pod,
        c: &Container,
        sources: &Sources,
    ) -> Result<Prepared, (&'static str, String)> {
        let image = c.image.as_deref().unwrap_or("");
        let container_path = c
            .termination_message_path
            .clone()
            .unwrap_or_else(|| "/dev/termination-log".into());
        let message_file = self.dir.join(format!("{}.termination-log", c.name));
        let host_path = message_file.to_string_lossy().into_owned();
        let env = resolve(pod, c, sources, IP).map_err(|m| ("CreateContainerConfigError", m))?;
        let images = &self.ctx.images;
        let env: Vec<(String, String)> = env
            .into_iter()
            .map(|(k, v)| {
                // The container's message file lives in the pod's directory here.
                let v = if v == container_path {
                    host_path.clone()
                } else {
                    images.map_files(image, &v)
                };
                (k, v)
            })
            .collect();

        let lookup = |name: &str| {
            env.iter()
                .rev()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        };
        let expand = |s: &String| {
            let s = crate::expand::expand(s, lookup).replace(&container_path, &host_path);
            images.map_files(image, &s)
        };
        let mut words: Vec<String> = match c.command.as_ref().filter(|c| !c.is_empty()) {
            Some(command) => command.iter().map(expand).collect(),
            None => match self.ctx.images.entrypoint(image) {
                Some(exe) => vec![exe.to_string_lossy().into_owned()],
                None => {
                    return Err((
                        "ErrImagePull",
                        format!(
                            "th-test-node has no executable for image {image:?} and the container \
                             sets no command (patterns: {:?}; add --image PATTERN=EXECUTABLE)",
                            self.ctx.images.patterns()
                        ),
                    ));
                }
            },
        };
        words.extend(c.args.iter().flatten().map(expand));
        let program = words.remove(0);

        let mut full_env = self.ctx.base_env.clone();
        if let Some(dirs) = images.path(image) {
            let base = full_env
                .iter()
                .rev()
                .find(|(k, _)| k == "PATH")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            full_env.push(("PATH".into(), format!("{dirs}:{base}")));
        }
        full_env.push(("HOME".into(), self.dir.to_string_lossy().into_owned()));
        full_env.push(("HOSTNAME".into(), pod.name_any()));
        full_env.extend(env);
        Ok(Prepared {
            program,
            args: words,
            env: full_env,
            log: self.dir.join(format!("{}.log", c.name)),
            message_file,
            fallback_to_logs: c.termination_message_policy.as_deref()
                == Some("FallbackToLogsOnError"),
        })
    }

    /// Starts container `i`'s process (a failure to start is its exit, as `StartError`).
    fn start(&mut self, i: usize) {
        let p = &self.prepared[i];
        let cs = &mut self.status.containers[i];
        let generation = cs.restarts;
        // A fresh message file for each run, as the kubelet mounts for each container instance.
        let _ = std::fs::write(&p.message_file, b"");
        let log_start = process::log_len(&p.log);
        let started_at = now();
        let launch = Launch {
            program: &p.program,
            args: &p.args,
            env: &p.env,
            dir: &self.dir,
            log: &p.log,
        };
        match process::spawn(&launch) {
            Ok(mut child) => {
                let pid = child.id().map(|p| p as i32).unwrap_or(0);
                self.ctx.groups.add(pid);
                cs.state = State::Running {
                    started_at: started_at.clone(),
                };
                cs.container_id = Some(format!("th-test-node://{pid}"));
                cs.image_id = format!("th-test-node://{}", p.program);
                info!(pod = %self.label, container = %cs.name, pid, program = %p.program, "container started");
                self.ctx.logs.started(
                    &self.pod.namespace().unwrap_or_default(),
                    &self.pod.name_any(),
                    &self.uid,
                    &cs.name,
                    &p.log,
                    log_start,
                );
                self.procs[i] = Some(Proc {
                    pid,
                    generation,
                    started_at,
                    log_start,
                });
                let tx = self.exits_tx.clone();
                tokio::spawn(async move {
                    let status = child.wait().await;
                    let _ = tx.send(Exit {
                        index: i,
                        generation,
                        status,
                        finished_at: now(),
                    });
                });
            }
            Err(e) => {
                warn!(pod = %self.label, container = %cs.name, program = %p.program, error = %e, "container failed to start");
                let t = Terminated {
                    exit_code: 128,
                    signal: None,
                    reason: "StartError".into(),
                    message: format!("failed to start {}: {e}", p.program),
                    started_at: started_at.clone(),
                    finished_at: started_at,
                    container_id: String::new(),
                };
                self.finish(i, t, true);
            }
        }
    }

    /// Records an exit; with `may_restart`, restarts as the restart policy says.
    fn exited(&mut self, exit: Exit, may_restart: bool) {
        let Some(proc) = self.procs[exit.index].take_if(|p| p.generation == exit.generation) else {
            return;
        };
        self.ctx.groups.remove(proc.pid);
        self.ctx
            .logs
            .exited(&self.uid, &self.status.containers[exit.index].name);
        // A container ends with its main process: what it left behind goes too.
        process::signal_group(proc.pid, libc::SIGKILL);
        let (code, signal) = match &exit.status {
            Ok(s) => (
                process::exit_code(*s),
                std::os::unix::process::ExitStatusExt::signal(s),
            ),
            Err(_) => (128, None),
        };
        let p = &self.prepared[exit.index];
        let message = process::termination_message(
            &p.message_file,
            p.fallback_to_logs,
            code,
            &p.log,
            proc.log_start,
        );
        let t = Terminated {
            exit_code: code,
            signal,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message,
            started_at: proc.started_at,
            finished_at: exit.finished_at,
            container_id: format!("th-test-node://{}", proc.pid),
        };
        info!(
            pod = %self.label,
            container = %self.status.containers[exit.index].name,
            pid = proc.pid,
            exit_code = code,
            "container exited"
        );
        self.finish(exit.index, t, may_restart);
    }

    fn finish(&mut self, i: usize, t: Terminated, may_restart: bool) {
        let restart = may_restart
            && match self.restart_policy.as_str() {
                "Always" => true,
                "OnFailure" => t.exit_code != 0,
                _ => false,
            };
        let cs = &mut self.status.containers[i];
        if restart {
            cs.restarts += 1;
            let backoff = RESTART_BACKOFF
                .saturating_mul(1 << (cs.restarts - 1).clamp(0, 10))
                .min(RESTART_BACKOFF_MAX);
            cs.state = State::Waiting {
                reason: "CrashLoopBackOff".into(),
                message: Some(format!(
                    "back-off {}ms restarting failed container={} pod={}",
                    backoff.as_millis(),
                    cs.name,
                    self.label
                )),
            };
            cs.last = Some(t);
            self.restart_at[i] = Some(Instant::now() + backoff);
        } else {
            cs.state = State::Terminated(t);
        }
    }

    /// SIGTERM to every process, up to `grace` for them to exit, then SIGKILL; no restarts.
    async fn terminate(&mut self, grace: Duration) {
        for i in 0..self.restart_at.len() {
            if self.restart_at[i].take().is_some() {
                // Waiting for a restart that will not come: its last run is its end.
                let cs = &mut self.status.containers[i];
                if let Some(last) = cs.last.clone() {
                    cs.state = State::Terminated(last);
                }
            }
        }
        let pids: Vec<i32> = self.procs.iter().flatten().map(|p| p.pid).collect();
        if pids.is_empty() {
            return;
        }
        info!(pod = %self.label, ?pids, grace_seconds = grace.as_secs(), "stopping containers");
        for &pid in &pids {
            process::signal_group(pid, libc::SIGTERM);
        }
        let deadline = Instant::now() + grace;
        while self.procs.iter().any(Option::is_some) {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) => self.exited(exit, false),
                Ok(None) | Err(_) => break,
            }
        }
        self.kill_all().await;
    }

    /// SIGKILL to every process, and their exits recorded.
    async fn kill_all(&mut self) {
        for p in self.procs.iter().flatten() {
            process::signal_group(p.pid, libc::SIGKILL);
        }
        // SIGKILL cannot be ignored; the bound is for a process stuck in the kernel.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.procs.iter().any(Option::is_some) {
            match tokio::time::timeout_at(deadline, self.exits.recv()).await {
                Ok(Some(exit)) => self.exited(exit, false),
                Ok(None) | Err(_) => break,
            }
        }
    }

    /// The kubelet's end of a deleted pod: stop the containers (none started: `grace` None),
    /// report a terminal phase (the Job controller waits for it), then delete for good.
    async fn terminate_and_delete(&mut self, grace: Option<Duration>) -> Result<(), Stop> {
        if let Some(grace) = grace {
            self.terminate(grace).await;
        }
        let phase = status::phase(&self.status.containers, "Never");
        self.status.phase = if phase.terminal() {
            phase
        } else {
            Phase::Failed
        };
        self.write().await?;
        self.final_delete().await;
        Ok(())
    }

    async fn final_delete(&self) {
        final_delete(&self.api, &self.label, &self.pod.name_any(), &self.uid).await;
    }

    /// Writes the status when it changed; a pod that is no longer there ends the task.
    async fn write(&mut self) -> Result<(), Stop> {
        let mut patch = self.status.patch();
        if self.written.as_ref() == Some(&patch) {
            return Ok(());
        }
        // The uid makes the write a precondition: never the status of a new pod of that name.
        patch["metadata"] = serde_json::json!({"uid": self.uid});
        let pp = PatchParams::default();
        let mut delay = Duration::from_millis(200);
        for attempt in 1..=5 {
            match self
                .api
                .patch_status(&self.pod.name_any(), &pp, &Patch::Strategic(&patch))
                .await
            {
                Ok(_) => {
                    info!(
                        pod = %self.label,
                        phase = self.status.phase.as_str(),
                        containers = %describe(&self.status.containers),
                        "status"
                    );
                    if let Some(o) = patch.as_object_mut() {
                        o.remove("metadata");
                    }
                    self.written = Some(patch);
                    return Ok(());
                }
                Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {
                    return Err(Stop::Gone);
                }
                Err(e) => {
                    warn!(pod = %self.label, attempt, error = %e, "writing the pod's status");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
            }
        }
        Ok(())
    }
}

/// The kubelet's last word on a pod: delete now (grace 0), only that very pod (its uid).
pub async fn final_delete(api: &Api<Pod>, label: &str, name: &str, uid: &str) {
    let dp = DeleteParams {
        grace_period_seconds: Some(0),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_string()),
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(name, &dp).await {
        Ok(_) => info!(pod = %label, "pod deleted"),
        Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => {}
        Err(e) => warn!(pod = %label, error = %e, "final delete failed"),
    }
}

/// `name=state` for each container, for the log line.
fn describe(cs: &[CStatus]) -> String {
    cs.iter()
        .map(|c| {
            let s = match &c.state {
                State::Waiting { reason, .. } => format!("waiting({reason})"),
                State::Running { .. } => "running".into(),
                State::Terminated(t) => format!("terminated({} {})", t.reason, t.exit_code),
            };
            format!("{}={s}", c.name)
        })
        .collect::<Vec<_>>()
        .join(",")
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}
