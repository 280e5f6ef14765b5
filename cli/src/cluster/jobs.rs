//! The cluster operations: each takes a [`Cluster`] (so tests hand it kube-rs's mocked API
//! server) and writes what it prints to a `Write`.

use super::args::OutputFormat;
use super::client::{Cluster, RESOURCE, Request};
use super::render;
use anyhow::{Context as _, Result, anyhow};
use futures::{AsyncBufReadExt, StreamExt, TryStreamExt};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams};
use serde::Serialize;
use std::collections::BTreeMap;
use std::io::Write;
use std::time::{Duration, Instant};
use truthound_operator::ProfileJob;
use truthound_operator::backend::local::CONTAINER;

/// Kubernetes' label on the pods of a Job, and the annotation with an Indexed Job pod's index.
pub const JOB_NAME_LABEL: &str = "batch.kubernetes.io/job-name";
pub const COMPLETION_INDEX: &str = "batch.kubernetes.io/job-completion-index";

fn jobs(c: &Cluster) -> Api<ProfileJob> {
    Api::namespaced(c.client.clone(), &c.namespace)
}

fn on<'a>(c: &'a Cluster, verb: &'a str, name: Option<&'a str>) -> Request<'a> {
    Request {
        verb,
        resource: RESOURCE,
        namespace: Some(&c.namespace),
        name,
    }
}

/// Creates the ProfileJob; returns it as the server stored it (with its uid).
pub async fn create(c: &Cluster, pj: &ProfileJob, out: &mut dyn Write) -> Result<ProfileJob> {
    let name = pj.metadata.name.as_deref();
    let created = jobs(c)
        .create(&PostParams::default(), pj)
        .await
        .map_err(|e| c.explain(e, on(c, "create", name)))?;
    writeln!(
        out,
        "profilejob.truthound.io/{} created in namespace {}",
        created.metadata.name.as_deref().unwrap_or_default(),
        c.namespace
    )?;
    Ok(created)
}

/// The job, or `None` when the server says it does not exist (a missing CRD is an error).
async fn get_opt(c: &Cluster, name: &str) -> Result<Option<ProfileJob>, kube::Error> {
    match jobs(c).get(name).await {
        Ok(pj) => Ok(Some(pj)),
        Err(kube::Error::Api(s))
            if s.code == 404 && s.details.as_ref().is_some_and(|d| d.name == name) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub async fn get_job(c: &Cluster, name: &str) -> Result<ProfileJob> {
    jobs(c)
        .get(name)
        .await
        .map_err(|e| c.explain(e, on(c, "get", Some(name))))
}

/// What to show while following a job.
pub enum Display<'a> {
    Quiet,
    /// One line on each change of state (stderr that is not a terminal; tests).
    Lines {
        out: Box<dyn Write + 'a>,
        last: String,
    },
    /// A bar of tasks on a terminal, drawn from the first status on.
    Bar(Option<ProgressBar>),
}

impl Display<'_> {
    pub fn bar() -> Display<'static> {
        Display::Bar(None)
    }

    fn new_bar() -> ProgressBar {
        let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
        // A spinner until the plan says how many tasks there are, then a bar of tasks.
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_spinner()),
        );
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    fn bar_of_tasks(bar: &ProgressBar) {
        bar.set_style(
            ProgressStyle::with_template("{spinner} {prefix} [{bar:30}] {pos}/{len} tasks {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
    }

    fn update(&mut self, pj: &ProfileJob) -> std::io::Result<()> {
        match self {
            Display::Quiet => {}
            Display::Lines { out, last } => {
                let line = render::progress_line(pj);
                // The rate and ETA change on every report: a new line only for new progress.
                let key = line.split(" rows/s").next().unwrap_or(&line).to_string();
                if key != *last {
                    writeln!(out, "{line}")?;
                    *last = key;
                }
            }
            Display::Bar(slot) => {
                let bar = slot.get_or_insert_with(Display::new_bar);
                let status = pj.status.clone().unwrap_or_default();
                bar.set_prefix(render::phase(pj));
                let line = render::progress_line(pj);
                let detail = match &status.tasks {
                    Some(t) => {
                        if bar.length() == Some(0) && t.total > 0 {
                            Display::bar_of_tasks(bar);
                        }
                        bar.set_length(u64::from(t.total));
                        bar.set_position(u64::from(t.succeeded));
                        // After "<name>: <phase> · <n>/<total> tasks": failures, rows, rate, ETA.
                        line.split(" · ").skip(2).collect::<Vec<_>>()
                    }
                    None => line.split(" · ").skip(1).collect::<Vec<_>>(),
                };
                bar.set_message(if detail.is_empty() {
                    String::new()
                } else {
                    format!("· {}", detail.join(" · "))
                });
            }
        }
        Ok(())
    }

    fn finish(&mut self) {
        if let Display::Bar(Some(bar)) = self {
            bar.finish_and_clear();
        }
    }
}

/// How to follow a job.
#[derive(Debug, Clone)]
pub struct Follow {
    pub interval: Duration,
    pub timeout: Option<Duration>,
}

/// Reads the job's status until it succeeds or fails, then prints its result. A failed job is
/// an error whose message is the Failed condition's reason and message.
pub async fn follow(
    c: &Cluster,
    name: &str,
    how: &Follow,
    display: &mut Display<'_>,
    out: &mut dyn Write,
) -> Result<()> {
    let started = Instant::now();
    let mut seen = false;
    let mut unreachable = 0;
    let mut last_phase = "Pending";
    loop {
        let pj = match get_opt(c, name).await {
            Ok(Some(pj)) => pj,
            Ok(None) if seen => {
                display.finish();
                return Err(anyhow!(
                    "ProfileJob `{name}` was deleted in namespace {} before it finished{}",
                    c.namespace,
                    if last_phase == "Merging" {
                        " (or right after, by its ttl: look for its profile at its output URI)"
                    } else {
                        ""
                    }
                ));
            }
            Ok(None) => {
                display.finish();
                return Err(anyhow!(
                    "ProfileJob `{name}` not found in namespace {ns}: `th list -n {ns}` lists the jobs there",
                    ns = c.namespace
                ));
            }
            // A blip of the connection while following a long run: try again a few times.
            Err(e @ (kube::Error::HyperError(_) | kube::Error::Service(_))) if unreachable < 5 => {
                unreachable += 1;
                tracing::warn!("reading ProfileJob {name}: {e}; trying again");
                tokio::time::sleep(how.interval).await;
                continue;
            }
            Err(e) => {
                display.finish();
                return Err(c.explain(e, on(c, "get", Some(name))));
            }
        };
        seen = true;
        unreachable = 0;
        last_phase = render::phase(&pj);
        display.update(&pj)?;
        if matches!(last_phase, "Succeeded" | "Failed") {
            display.finish();
            return match render::result(&pj) {
                Ok(text) => Ok(out.write_all(text.as_bytes())?),
                Err((text, why)) => {
                    out.write_all(text.as_bytes())?;
                    Err(anyhow!(
                        "ProfileJob `{name}` in namespace {} failed: {why}",
                        c.namespace
                    ))
                }
            };
        }
        let mut pause = how.interval;
        if let Some(limit) = how.timeout {
            let left = limit.saturating_sub(started.elapsed());
            if left.is_zero() {
                display.finish();
                return Err(anyhow!(
                    "timed out after {} waiting for ProfileJob `{name}` in namespace {ns} ({}); it goes on: th wait {name} -n {ns}",
                    render::duration(limit.as_secs().max(1)),
                    render::progress_line(&pj)
                        .split_once(": ")
                        .map_or("", |(_, s)| s),
                    ns = c.namespace
                ));
            }
            pause = pause.min(left);
        }
        tokio::time::sleep(pause).await;
    }
}

/// A ProfileJob without the server's bookkeeping (managedFields), as kubectl prints it.
fn printable(mut pj: ProfileJob) -> ProfileJob {
    pj.metadata.managed_fields = None;
    pj
}

fn write_as<T: Serialize>(value: &T, format: OutputFormat, out: &mut dyn Write) -> Result<()> {
    match format {
        OutputFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, value)?;
            writeln!(out)?;
        }
        OutputFormat::Yaml => out.write_all(serde_yaml::to_string(value)?.as_bytes())?,
        OutputFormat::Table => unreachable!("tables are printed by each command"),
    }
    Ok(())
}

pub async fn get(
    c: &Cluster,
    name: &str,
    format: OutputFormat,
    now: i64,
    out: &mut dyn Write,
) -> Result<()> {
    let pj = printable(get_job(c, name).await?);
    match format {
        OutputFormat::Table => {
            out.write_all(render::table(&render::job_rows(&[pj], false, now)).as_bytes())?
        }
        f => write_as(&pj, f, out)?,
    }
    Ok(())
}

pub async fn list(
    c: &Cluster,
    all_namespaces: bool,
    format: OutputFormat,
    now: i64,
    out: &mut dyn Write,
) -> Result<()> {
    let api: Api<ProfileJob> = if all_namespaces {
        Api::all(c.client.clone())
    } else {
        jobs(c)
    };
    let request = Request {
        verb: "list",
        resource: RESOURCE,
        namespace: (!all_namespaces).then_some(c.namespace.as_str()),
        name: None,
    };
    let list = api
        .list(&ListParams::default())
        .await
        .map_err(|e| c.explain(e, request))?;
    let mut items: Vec<ProfileJob> = list.items.into_iter().map(printable).collect();
    items.sort_by(|a, b| {
        (&a.metadata.namespace, &a.metadata.name).cmp(&(&b.metadata.namespace, &b.metadata.name))
    });
    match format {
        OutputFormat::Table if items.is_empty() => {
            let place = if all_namespaces {
                "in any namespace".to_string()
            } else {
                format!("in namespace {}", c.namespace)
            };
            writeln!(out, "No ProfileJobs {place}.")?;
        }
        OutputFormat::Table => {
            out.write_all(render::table(&render::job_rows(&items, all_namespaces, now)).as_bytes())?
        }
        f => write_as(
            &serde_json::json!({
                "apiVersion": "v1",
                "kind": "List",
                "metadata": {},
                "items": items,
            }),
            f,
            out,
        )?,
    }
    Ok(())
}

/// The job's events (events.k8s.io/v1, regarding it), oldest first.
async fn events(c: &Cluster, name: &str) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(c.client.clone(), &c.namespace);
    let list = api
        .list(&ListParams::default().fields(&format!("regarding.name={name}")))
        .await
        .map_err(|e| {
            c.explain(
                e,
                Request {
                    verb: "list",
                    resource: "events.events.k8s.io",
                    namespace: Some(&c.namespace),
                    name: None,
                },
            )
        })?;
    let mut items: Vec<Event> = list
        .items
        .into_iter()
        .filter(|e| {
            e.regarding
                .as_ref()
                .and_then(|r| r.kind.as_deref())
                .is_none_or(|k| k == "ProfileJob")
        })
        .collect();
    items.sort_by_key(render::event_time);
    Ok(items)
}

pub async fn describe(
    c: &Cluster,
    name: &str,
    format: OutputFormat,
    now: i64,
    out: &mut dyn Write,
) -> Result<()> {
    let pj = printable(get_job(c, name).await?);
    // Events are a help, not the point: a user who may not list them still gets the rest.
    let events = events(c, name).await.map_err(|e| format!("{e:#}"));
    match format {
        OutputFormat::Table => {
            let text = match &events {
                Ok(list) => render::describe(&pj, Ok(list), now),
                Err(why) => render::describe(&pj, Err(why), now),
            };
            out.write_all(text.as_bytes())?;
        }
        f => write_as(
            &serde_json::json!({
                "profileJob": pj,
                "events": events.unwrap_or_default(),
            }),
            f,
            out,
        )?,
    }
    Ok(())
}

/// What `th logs` reads.
#[derive(Debug, Clone, Default)]
pub struct LogsRequest {
    pub task: Option<u32>,
    pub follow: bool,
    pub merge: bool,
    pub tail: Option<i64>,
}

fn index_of(pod: &Pod) -> Option<u32> {
    let m = &pod.metadata;
    m.annotations
        .as_ref()
        .and_then(|a| a.get(COMPLETION_INDEX))
        .or_else(|| m.labels.as_ref().and_then(|l| l.get(COMPLETION_INDEX)))
        .and_then(|v| v.parse().ok())
}

pub async fn logs(c: &Cluster, name: &str, req: &LogsRequest, out: &mut dyn Write) -> Result<()> {
    let pj = get_job(c, name).await?;
    let status = pj.status.clone().unwrap_or_default();
    let ns = &c.namespace;
    if let Some(b) = &status.backend
        && b.kind != "local"
    {
        return Err(anyhow!(
            "ProfileJob `{name}` runs on the {} backend: its tasks' logs are in that cluster{}",
            b.kind,
            status
                .submission
                .as_ref()
                .and_then(|s| s.id.as_deref())
                .map(|id| format!(" (submission {id})"))
                .unwrap_or_default()
        ));
    }
    let job = if req.merge {
        let uid = pj.metadata.uid.as_deref().unwrap_or_default();
        truthound_operator::decide::merge_name(name, uid, status.attempt.unwrap_or(1))
    } else {
        match status.submission.as_ref().and_then(|s| s.id.clone()) {
            Some(id) => id,
            None => {
                return Err(anyhow!(
                    "ProfileJob `{name}` in namespace {ns} has no worker pods yet (state {}): they start once its plan is written; `th wait {name} -n {ns}` follows it",
                    render::phase(&pj)
                ));
            }
        }
    };
    let pods_api: Api<Pod> = Api::namespaced(c.client.clone(), ns);
    let pods = pods_api
        .list(&ListParams::default().labels(&format!("{JOB_NAME_LABEL}={job}")))
        .await
        .map_err(|e| {
            c.explain(
                e,
                Request {
                    verb: "list",
                    resource: "pods",
                    namespace: Some(ns),
                    name: None,
                },
            )
        })?;
    // The newest pod of each index (a retried task has had several).
    let mut by_index: BTreeMap<u32, Pod> = BTreeMap::new();
    for pod in pods.items {
        let Some(i) = index_of(&pod).or(req.merge.then_some(0)) else {
            continue;
        };
        let newer = by_index
            .get(&i)
            .is_none_or(|old| old.metadata.creation_timestamp <= pod.metadata.creation_timestamp);
        if newer {
            by_index.insert(i, pod);
        }
    }
    let what = if req.merge { "merge" } else { "worker" };
    if by_index.is_empty() {
        return Err(anyhow!(
            "no {what} pods of ProfileJob `{name}` in namespace {ns} (Job {job}): they have not started, or were removed with their Job"
        ));
    }
    let chosen: Vec<(u32, Pod)> = match req.task {
        Some(t) => match by_index.remove(&t) {
            Some(p) => vec![(t, p)],
            None => {
                let have: Vec<u32> = by_index.keys().copied().collect();
                return Err(anyhow!(
                    "no pod for task {t} of ProfileJob `{name}` in namespace {ns}; the Job {job} has pods for tasks {}",
                    truthound_profile::profile::index_ranges(&have)
                ));
            }
        },
        None => by_index.into_iter().collect(),
    };
    let params = LogParams {
        container: Some(CONTAINER.to_string()),
        follow: req.follow,
        tail_lines: req.tail,
        ..LogParams::default()
    };
    let log_error = |pod: &str, e: kube::Error| {
        c.explain(
            e,
            Request {
                verb: "get",
                resource: "pods/log",
                namespace: Some(ns),
                name: Some(pod),
            },
        )
        .context(format!("logs of pod {pod}"))
    };
    let many = chosen.len() > 1;
    if !req.follow {
        for (i, pod) in &chosen {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if many {
                writeln!(out, "==> task {i} (pod {pod_name}) <==")?;
            }
            match pods_api.logs(&pod_name, &params).await {
                Ok(text) => {
                    out.write_all(text.as_bytes())?;
                    if !text.is_empty() && !text.ends_with('\n') {
                        writeln!(out)?;
                    }
                }
                // One pod still starting (400: container is waiting) does not hide the others.
                Err(kube::Error::Api(s)) if many && s.code == 400 => {
                    writeln!(out, "(no logs: {})", s.message)?;
                }
                Err(e) => return Err(log_error(&pod_name, e)),
            }
        }
        return Ok(());
    }
    let mut streams = Vec::new();
    for (i, pod) in &chosen {
        let pod_name = pod.metadata.name.clone().unwrap_or_default();
        let reader = pods_api
            .log_stream(&pod_name, &params)
            .await
            .map_err(|e| log_error(&pod_name, e))?;
        let prefix = if many {
            format!("[task {i}] ")
        } else {
            String::new()
        };
        streams.push(
            reader
                .lines()
                .map_ok(move |line| format!("{prefix}{line}"))
                .boxed(),
        );
    }
    let mut merged = futures::stream::select_all(streams);
    while let Some(line) = merged.next().await {
        writeln!(out, "{}", line.context("reading the log stream")?)?;
        out.flush()?;
    }
    Ok(())
}

pub async fn cancel(c: &Cluster, name: &str, keep: bool, out: &mut dyn Write) -> Result<()> {
    let ns = &c.namespace;
    if keep {
        jobs(c)
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(serde_json::json!({"spec": {"suspend": true}})),
            )
            .await
            .map_err(|e| c.explain(e, on(c, "patch", Some(name))))?;
        writeln!(
            out,
            "profilejob.truthound.io/{name} suspended in namespace {ns}: its workers stop, completed tasks are kept.\n\
             Resume it: kubectl patch profilejob {name} -n {ns} --type merge -p '{{\"spec\":{{\"suspend\":false}}}}'"
        )?;
    } else {
        jobs(c)
            .delete(name, &DeleteParams::background())
            .await
            .map_err(|e| c.explain(e, on(c, "delete", Some(name))))?;
        writeln!(
            out,
            "profilejob.truthound.io/{name} deleted in namespace {ns} (its workers go with it; a profile already written stays)"
        )?;
    }
    Ok(())
}
