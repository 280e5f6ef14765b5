//! `th profile --backend spark --spark-connect sc://HOST:15002`: plans here, runs each task as
//! an aggregation query on a Spark cluster through Spark Connect (the Spark backend's core,
//! `truthound_operator::backend::spark`), which writes each task's partial to the work prefix,
//! then merges the partials and writes the profile exactly as the in-process path does (the flow
//! shared with the other remote backends is in [`crate::remote`]).
//!
//! Spark reads the dataset itself, so its paths must be ones the Spark executors can read (a
//! local path only when Spark runs on this machine or a shared file system).

use crate::args::ProfileArgs;
use crate::remote;
use anyhow::Result;
use std::time::Duration;
use truthound_operator::backend::spark::{
    DEFAULT_CONCURRENCY, SparkError, SparkRun, SparkSubmit, connect,
};
use truthound_operator::backend::tasks::{RemoteTasks, RunEvent, TaskState};
use truthound_profile::dataset::StorageOptions;

struct Spark {
    url: String,
    storage: StorageOptions,
    concurrency: usize,
}

impl remote::Backend for Spark {
    type Run = SparkRun;

    fn name(&self) -> &'static str {
        "Spark"
    }

    fn address(&self) -> &str {
        &self.url
    }

    async fn submit(&self, job: RemoteTasks) -> Result<SparkRun> {
        Ok(SparkRun::submit(SparkSubmit {
            connect_url: self.url.clone(),
            work: job,
            storage: self.storage.clone(),
            concurrency: self.concurrency,
            connect_timeout: Duration::from_secs(15),
        })
        .await?)
    }
}

impl remote::Run for SparkRun {
    async fn next_event(&mut self) -> Option<RunEvent> {
        SparkRun::next_event(self).await
    }

    async fn cancel(&mut self) {
        SparkRun::cancel(self).await
    }

    async fn finish(self) -> Result<Vec<TaskState>> {
        Ok(SparkRun::finish(self).await?)
    }
}

/// The Spark Connect URL: `--spark-connect` (or SPARK_CONNECT_URL), else the ancestor's
/// `--master` when it is an `sc://` URL.
fn connect_url(args: &ProfileArgs) -> Result<String, SparkError> {
    if let Some(u) = args.spark_connect.as_ref().filter(|u| !u.trim().is_empty()) {
        return Ok(u.trim().to_string());
    }
    match args.master.as_deref().map(str::trim) {
        Some(m) if m.starts_with("sc://") => Ok(m.to_string()),
        Some(m) if !m.is_empty() => Err(SparkError::Invalid(match connect::master_url_error(m) {
            Some(why) => format!("--master: {why}"),
            None => format!(
                "--master {} is not a Spark Connect URL: the spark backend talks to Spark \
                 through Spark Connect; give --spark-connect sc://HOST:15002 (or \
                 SPARK_CONNECT_URL)",
                connect::redact(m)
            ),
        })),
        _ => Err(SparkError::Invalid(
            "the spark backend needs the Spark Connect server's URL: --spark-connect \
             sc://HOST:15002, or SPARK_CONNECT_URL"
                .into(),
        )),
    }
}

pub fn profile(mut args: ProfileArgs) -> Result<()> {
    // Spark reads whole CSV and NDJSON files: no byte ranges unless asked (then refused).
    args.plan.target_task_bytes.get_or_insert(0);
    let url = connect_url(&args)?;
    // A malformed URL is said before the dataset is planned.
    connect::ConnectUrl::parse(&url)?;
    let storage = args.plan.storage.options()?;
    let concurrency = args
        .workers
        .filter(|w| *w > 0)
        .unwrap_or(DEFAULT_CONCURRENCY);
    remote::profile(
        args,
        Spark {
            url,
            storage,
            concurrency,
        },
    )
}
