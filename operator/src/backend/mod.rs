//! Where tasks run. `local`: an Indexed Job of `th-worker` pods (one index per task). `dask`: the
//! core of the Dask backend (a runner maps the tasks over a Dask cluster), without Kubernetes.
//! Spark and Ray come with their own pieces of the remote-backends issue.

pub mod dask;
pub mod local;
