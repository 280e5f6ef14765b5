//! Where tasks run. `local`: an Indexed Job of `th-worker` pods (one index per task). `dask`: the
//! core of the Dask backend (a runner maps the tasks over a Dask cluster), without Kubernetes.
//! `ray`: the core of the Ray backend (a job submitted through the Ray dashboard's Jobs REST
//! API fans the tasks out as Ray tasks), without Kubernetes. `tasks`: the per-task states the
//! remote backends share. `remote`: those cores as the reconciler drives them. `choice`: which
//! backend runs a job (and `auto`). `spark`: the core of the Spark backend (each task one
//! aggregation query through Spark Connect, its answer made into a partial profile), without
//! Kubernetes. `pods`: the settings every pod the operator starts can carry. `bounded`: reads of
//! answers from spec-chosen endpoints in bounded memory.

pub mod bounded;
pub mod choice;
pub mod dask;
pub mod local;
pub mod pods;
pub mod ray;
pub mod remote;
pub mod spark;
pub mod tasks;
