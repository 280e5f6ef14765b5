//! `th profile --backend auto` (or `TRUTHOUND_DISTRIBUTED_BACKEND=auto`): the operator's choice
//! ([`truthound_operator::backend::choice::auto`]) made here. The clusters are those the flags
//! or the environment name (`--spark-connect`/`SPARK_CONNECT_URL`, `--scheduler`/
//! `DASK_SCHEDULER_ADDRESS`, `--ray-address`/`RAY_ADDRESS`); the dataset's size is listed, not
//! read; the choice and why go to stderr, and the run goes on with the chosen backend.

use crate::args::{Backend, ProfileArgs};
use anyhow::Result;
use truthound_operator::backend::choice::{self, Clusters};
use truthound_operator::crd::{BackendSpec, DaskBackend, RayBackend, SparkBackend};
use truthound_profile::dataset;

/// The clusters the invocation names.
fn named_clusters(args: &ProfileArgs) -> BackendSpec {
    let given = |v: &Option<String>| {
        v.as_ref()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let spark = given(&args.spark_connect)
        .or_else(|| given(&args.master).filter(|m| m.starts_with("sc://")));
    BackendSpec {
        spark: spark.map(|u| SparkBackend {
            connect_url: Some(u),
            token_secret_ref: None,
        }),
        dask: given(&args.scheduler).map(|a| DaskBackend {
            scheduler_address: Some(a),
            ..DaskBackend::default()
        }),
        ray: given(&args.ray_address).map(|a| RayBackend { address: Some(a) }),
        ..BackendSpec::default()
    }
}

pub fn profile(mut args: ProfileArgs) -> Result<()> {
    let storage = args.plan.storage.options()?;
    let rt = crate::runtime(1)?;
    // The engine's error names the dataset (as for every backend).
    let ds = rt.block_on(dataset::discover_at(
        &args.plan.uri,
        args.plan.format,
        &storage,
        &args.plan.csv.options()?,
        &dataset::TableOptions {
            version: args.plan.table_version,
        },
    ))?;
    drop(rt);
    let bytes: u64 = ds.files.iter().map(|f| f.size).sum();
    let chosen = choice::auto(&named_clusters(&args), &Clusters::default(), bytes);
    if !args.quiet
        && let Some(why) = &chosen.reason
    {
        eprintln!("th: {why}");
    }
    args.backend = Some(match chosen.kind.as_str() {
        "spark" => Backend::Spark,
        "dask" => Backend::Dask,
        "ray" => Backend::Ray,
        _ => Backend::Local,
    });
    crate::profile(args)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn the_clusters_come_from_the_flags_and_an_sc_master() {
        let args = crate::args::Cli::parse_from([
            "th",
            "profile",
            "d/",
            "--backend",
            "auto",
            "--master",
            "sc://s:15002",
            "--ray-address",
            "http://r:8265",
        ]);
        let crate::args::Command::Profile(p) = args.command else {
            panic!("a profile command");
        };
        let spec = named_clusters(&p);
        assert_eq!(
            spec.spark.and_then(|s| s.connect_url).as_deref(),
            Some("sc://s:15002")
        );
        assert_eq!(
            spec.ray.and_then(|r| r.address).as_deref(),
            Some("http://r:8265")
        );
        assert!(spec.dask.is_none() || std::env::var_os("DASK_SCHEDULER_ADDRESS").is_some());
    }
}
