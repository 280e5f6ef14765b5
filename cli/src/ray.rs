//! `th profile --backend ray --ray-address http://HOST:8265`: plans here, runs the tasks on a
//! Ray cluster through the Ray backend's core (`truthound_operator::backend::ray`: a job posted
//! to the dashboard's Jobs REST API, whose driver fans `th-worker run-task` out as Ray tasks),
//! then merges the partials and writes the profile exactly as the in-process path does (the
//! flow shared with the other remote backends is in [`crate::remote`]).
//!
//! The job's submission id is the run's name (plan id, time, pid) and attempt 1: a submission
//! that is retried after a lost answer finds its job instead of making a second one.

use crate::args::ProfileArgs;
use crate::remote;
use anyhow::Result;
use std::time::Duration;
use truthound_operator::backend::ray::{RayError, RayRun, RaySubmit, dashboard_url};
use truthound_operator::backend::tasks::RemoteTasks;
use truthound_operator::backend::tasks::{RunEvent, TaskState};

struct Ray {
    address: String,
}

impl remote::Backend for Ray {
    type Run = RayRun;

    fn name(&self) -> &'static str {
        "Ray"
    }

    fn address(&self) -> &str {
        &self.address
    }

    async fn submit(&self, job: RemoteTasks) -> Result<RayRun> {
        let run = RayRun::submit(RaySubmit {
            address: self.address.clone(),
            attempt: 1,
            work: job,
            python: std::env::var("TH_RAY_PYTHON")
                .ok()
                .filter(|p| !p.is_empty()),
            poll_interval: Duration::from_millis(500),
        })
        .await?;
        tracing::info!(
            submission_id = run.submission_id(),
            ray = run.ray_version().unwrap_or("?"),
            already_submitted = run.already_submitted(),
            "Ray job"
        );
        Ok(run)
    }
}

impl remote::Run for RayRun {
    async fn next_event(&mut self) -> Option<RunEvent> {
        RayRun::next_event(self).await
    }

    async fn cancel(&mut self) {
        if let Err(e) = RayRun::cancel(self).await {
            eprintln!(
                "error: cannot stop the Ray job {}: {e}",
                self.submission_id()
            );
        }
    }

    async fn finish(self) -> Result<Vec<TaskState>> {
        Ok(RayRun::finish(self).await?)
    }
}

pub fn profile(args: ProfileArgs) -> Result<()> {
    let address = args
        .ray_address
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            RayError::Invalid(
                "the ray backend needs the Ray dashboard's address (its Jobs API): \
                 --ray-address http://HOST:8265, or RAY_ADDRESS"
                    .into(),
            )
        })?;
    // Checked now; the address is kept as given, so that a `ray://` address the dashboard was
    // not found for is named in the error.
    dashboard_url(&address)?;
    remote::profile(args, Ray { address })
}
