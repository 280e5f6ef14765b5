//! The truthound operator: the `ProfileJob` resource and the controller that runs it.
//!
//! - [`access`]: which local paths and URLs the operator itself may read for a ProfileJob.
//! - [`crd`]: the resource's types (spec and status); `crdgen` writes them to `crds/`.
//! - [`decide`]: the reconciler's decisions, a pure function of what was observed.
//! - [`reconcile`]: observes the cluster and object storage, applies the decisions.
//! - [`backend`]: where tasks run (`local`: an Indexed Job of `th-worker` pods).
//! - [`status`]: conditions, index ranges and the bounded task record.
//! - [`progress`]: the gRPC service workers report progress and heartbeats to.
//! - [`metrics`], [`http`], [`leader`]: Prometheus metrics, health endpoints, leader election.
//! - [`notify`]: webhook notifications of a job's start, progress and end.
//! - [`schedule`]: `ProfileSchedule`, ProfileJobs on a cron schedule, and drift between runs.
//! - [`leader_label`]: the label that routes workers' progress reports to the leading replica.

pub mod access;
pub mod backend;
pub mod crd;
pub mod decide;
pub mod http;
pub mod leader;
pub mod leader_label;
pub mod metrics;
pub mod notify;
pub mod progress;
pub mod reconcile;
pub mod run_log;
pub mod schedule;
pub mod status;

pub use crd::{ProfileJob, ProfileJobSpec, ProfileJobStatus};
