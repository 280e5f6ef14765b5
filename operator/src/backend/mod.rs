//! Where tasks run. `local`: an Indexed Job of `th-worker` pods (one index per task). The remote
//! backends (Spark, Dask, Ray) come with their own issue.

pub mod local;
