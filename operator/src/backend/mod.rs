//! Where tasks run. `local`: an Indexed Job of `th-worker` pods (one index per task). `dask`: the
//! core of the Dask backend (a runner maps the tasks over a Dask cluster), without Kubernetes.
//! `ray`: the core of the Ray backend (a job submitted through the Ray dashboard's Jobs REST
//! API fans the tasks out as Ray tasks), without Kubernetes. `tasks`: the per-task states the
//! remote backends share. Spark comes with its own piece of the remote-backends issue.

pub mod dask;
pub mod local;
pub mod ray;
pub mod tasks;
