//! `th profile --backend dask --scheduler ADDR`: plans here, runs the tasks on a Dask cluster
//! through the Dask backend's core (`truthound_operator::backend::dask`: a runner process maps
//! `th-worker run-task` over the scheduler's workers), then merges the partials and writes the
//! profile exactly as the in-process path does (the flow shared with the other remote backends
//! is in [`crate::remote`]).

use crate::args::ProfileArgs;
use crate::remote;
use anyhow::Result;
use std::time::Duration;
use truthound_operator::backend::dask::{DaskError, DaskRun, DaskSubmit, RunEvent, TaskState};
use truthound_operator::backend::tasks::RemoteTasks;

struct Dask {
    scheduler: String,
}

impl remote::Backend for Dask {
    type Run = DaskRun;

    fn name(&self) -> &'static str {
        "Dask"
    }

    fn address(&self) -> &str {
        &self.scheduler
    }

    async fn submit(&self, job: RemoteTasks) -> Result<DaskRun> {
        Ok(DaskRun::submit(DaskSubmit {
            scheduler: self.scheduler.clone(),
            work: job,
            python: None,
            connect_timeout: Duration::from_secs(10),
        })
        .await?)
    }
}

impl remote::Run for DaskRun {
    async fn next_event(&mut self) -> Option<RunEvent> {
        DaskRun::next_event(self).await
    }

    async fn cancel(&mut self) {
        DaskRun::cancel(self).await
    }

    async fn finish(self) -> Result<Vec<TaskState>> {
        Ok(DaskRun::finish(self).await?)
    }
}

pub fn profile(args: ProfileArgs) -> Result<()> {
    let scheduler = args
        .scheduler
        .clone()
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| {
            DaskError::Invalid(
                "the dask backend needs the scheduler's address: --scheduler tcp://HOST:8786, \
                 or DASK_SCHEDULER_ADDRESS"
                    .into(),
            )
        })?;
    remote::profile(args, Dask { scheduler })
}
