//! `th`: profile a dataset in-process, merge profiles, print the profile format's schema.

mod args;
mod auto;
mod cluster;
mod dask;
mod diff;
mod exit;
mod load;
mod numfmt;
mod progress;
mod ray;
mod remote;
mod report;
mod run_log;
mod show;
mod spark;
mod summary;

use anyhow::{Context, Result};
use args::{Backend, Cli, Command, MergeArgs, PlanArgs, PlanCmd, ProfileArgs};
use clap::Parser;
use std::io::Write;
use std::sync::Arc;
use std::time::Instant;
use truthound_profile::cache::PartialCache;
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::run::{self, Progress};
use truthound_profile::{PartialProfile, Plan, TableProfile, plan};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_tracing(cli.verbose);
    let is_diff = matches!(cli.command, Command::Diff(_));
    match dispatch(cli) {
        Ok(code) => code,
        Err(err) => {
            let code = remote::exit_code(&err).unwrap_or_else(|| exit::code(&err));
            // `th diff` exits 1 for drift, as diff(1) does for a difference: an error is not 1.
            let code = if is_diff && code == 1 { 2 } else { code };
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "error: {err:#}");
            if let Some(hint) = exit::hint(&err) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            std::process::ExitCode::from(code)
        }
    }
}

fn init_tracing(verbose: u8) {
    let default = match verbose {
        // kube-client logs refused connections, 5xx and undecodable answers (whole objects) at
        // ERROR and WARN; the cluster commands say the same in their own error, with what to do.
        0 => "warn,kube_client=off",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("TH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}

fn dispatch(cli: Cli) -> Result<std::process::ExitCode> {
    let done = |r: Result<()>| r.map(|()| std::process::ExitCode::SUCCESS);
    match cli.command {
        Command::Profile(args) => done(profile(*args)),
        Command::Plan(args) => done(write_plan(*args)),
        Command::Merge(args) => done(merge(args)),
        Command::Schema(args) => {
            if args.events {
                print!("{}", truthound_profile::events::RunEvent::json_schema());
            } else {
                print!("{}", TableProfile::json_schema());
            }
            done(Ok(()))
        }
        Command::Report(args) => done(report::run(args)),
        Command::Show(args) => done(show::run(args)),
        // Like diff(1): 1 says the two differ.
        Command::Diff(args) => {
            diff::run(args).map(|drifted| std::process::ExitCode::from(u8::from(drifted)))
        }
        Command::Cluster(command) => done(cluster::run(command)),
    }
}

fn runtime(threads: usize) -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn make_plan(
    args: &PlanArgs,
    storage: &StorageOptions,
    workers: usize,
    cache: bool,
) -> Result<Plan> {
    let csv = args.csv.options()?;
    let table = dataset::TableOptions {
        version: args.table_version,
    };
    let dataset = dataset::discover_at(&args.uri, args.format, storage, &csv, &table).await?;
    if args.csv.any() && dataset.format != dataset::Format::Csv {
        return Err(truthound_profile::Error::Invalid {
            what: "CSV options",
            detail: format!(
                "--delimiter, --quote, --escape, --comment, --header, --null and --encoding are \
                 for CSV files; {} is {}",
                args.uri, dataset.format
            ),
        }
        .into());
    }
    let mut request = args.request(workers)?;
    request.cache = cache;
    Ok(plan::plan_with_scan(&dataset, &request).await?)
}

fn profile(args: ProfileArgs) -> Result<()> {
    let backend = args.backend()?;
    if args.cache.is_some() && backend != Backend::Local {
        return Err(truthound_profile::Error::Invalid {
            what: "--cache",
            detail: "incremental runs are for the local backend (on a cluster, give the \
                     ProfileJob a spec.cache)"
                .into(),
        }
        .into());
    }
    match backend {
        Backend::Auto => return auto::profile(args),
        Backend::Local => {}
        Backend::Dask => return dask::profile(args),
        Backend::Ray => return ray::profile(args),
        Backend::Spark => return spark::profile(args),
    }
    let workers = args.workers();
    let storage = args.plan.storage.options()?;
    let rt = runtime(workers)?;
    let started = Instant::now();
    let cache = args
        .cache
        .as_deref()
        .map(|uri| PartialCache::new(uri, &storage));
    let (plan, merged, log) = rt.block_on(async {
        let plan = Arc::new(make_plan(&args.plan, &storage, workers, cache.is_some()).await?);
        if let Some(uri) = &args.plan_out {
            dataset::write_object(uri, &storage, plan.to_json())
                .await
                .with_context(|| format!("writing the plan to {uri}"))?;
        }
        let bar = progress::Bar::new(&plan, args.quiet || args.json);
        let log = run_log::RunLog::new(&plan);
        let sink: Progress = log.sink(bar.sink());
        let merged = match &cache {
            None => run::run_plan(plan.clone(), workers, sink)
                .await
                .map(|m| (m, None)),
            Some(cache) => {
                let known = cache.lookup(&plan).await;
                run::run_plan_reusing(plan.clone(), workers, sink, known, Some(cache))
                    .await
                    .map(|r| {
                        log.reused(&r.reused);
                        (r.merged, Some(r.reused.len() as u64))
                    })
            }
        };
        bar.finish();
        anyhow::Ok((plan, merged?, log))
    })?;
    let elapsed = started.elapsed().as_millis() as u64;
    let (merged, reused) = merged;
    if let (Some(n), Some(cache)) = (reused, &cache) {
        // On stderr, as the progress: stdout is the profile (--json) or its summary.
        if !args.quiet {
            eprintln!(
                "cache {}: reused {n} of {} tasks, ran {}",
                cache.uri(),
                plan.tasks.len(),
                plan.tasks.len() as u64 - n
            );
        }
    }
    let ran = Ran {
        elapsed_ms: elapsed,
        workers,
        reused,
        log: &log,
    };
    finish_profile(&rt, &args, &storage, &plan, &merged, ran)
}

/// How a run went, for its profile and summary.
pub(crate) struct Ran<'a> {
    pub elapsed_ms: u64,
    /// Workers (threads or remote slots) that ran the tasks.
    pub workers: usize,
    /// With a cache: the tasks whose partials were reused.
    pub reused: Option<u64>,
    /// The run's event log so far.
    pub log: &'a run_log::RunLog,
}

/// The end of every `th profile`, wherever its tasks ran: the profile of the merged partials,
/// written where `--output` and `--partial-out` say, then printed (`--json`) or summarised.
pub(crate) fn finish_profile(
    rt: &tokio::runtime::Runtime,
    args: &ProfileArgs,
    storage: &StorageOptions,
    plan: &Plan,
    merged: &PartialProfile,
    ran: Ran<'_>,
) -> Result<()> {
    let mut profile = TableProfile::from_partial(
        merged,
        ran.elapsed_ms,
        args.keep_state,
        plan.options.histogram_bins,
    );
    profile.describe_table(plan);
    profile.partitioning.tasks_reused = ran.reused;
    let workers = ran.workers;
    let json = profile.to_json();
    if let Some(out) = &args.output {
        rt.block_on(dataset::write_object(out, storage, json.clone()))
            .with_context(|| format!("writing the profile to {out}"))?;
        // The run's event log goes beside the profile.
        let lines = ran.log.finish(plan.tasks.len() as u32, profile.row_count);
        let uri = truthound_profile::events::log_uri(out);
        rt.block_on(dataset::write_object(
            &uri,
            storage,
            truthound_profile::events::to_jsonl(&lines),
        ))
        .with_context(|| format!("writing the event log to {uri}"))?;
    }
    if let Some(out) = &args.partial_out {
        rt.block_on(dataset::write_object(out, storage, merged.to_bytes()))
            .with_context(|| format!("writing the partial profile to {out}"))?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        stdout.write_all(&json)?;
    } else if !args.quiet {
        summary::print(&mut stdout, &profile, workers, args.output.as_deref())?;
    }
    Ok(())
}

fn write_plan(args: PlanCmd) -> Result<()> {
    let storage = args.plan.storage.options()?;
    let rt = runtime(1)?;
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let plan = rt.block_on(make_plan(&args.plan, &storage, workers, false))?;
    match &args.output {
        Some(out) => rt
            .block_on(dataset::write_object(out, &storage, plan.to_json()))
            .with_context(|| format!("writing the plan to {out}"))?,
        None => std::io::stdout().lock().write_all(&plan.to_json())?,
    }
    Ok(())
}

/// Reads a partial profile, or the state kept inside a profile.
async fn read_mergeable(uri: &str, storage: &StorageOptions) -> Result<PartialProfile> {
    let bytes = dataset::read_object(uri, storage).await?;
    if PartialProfile::is_partial(&bytes) {
        return Ok(PartialProfile::from_bytes(&bytes, uri)?);
    }
    let profile: TableProfile = serde_json::from_slice(&bytes)
        .with_context(|| format!("{uri}: neither a partial profile nor a profile"))?;
    profile
        .state()?
        .with_context(|| format!("{uri}: this profile was written without its state (profile with --keep-state to merge it later)"))
}

fn merge(args: MergeArgs) -> Result<()> {
    let storage = args.storage.options()?;
    let rt = runtime(2)?;
    let started = Instant::now();
    let merged = rt.block_on(async {
        let mut merged: Option<PartialProfile> = None;
        for input in &args.inputs {
            let partial = read_mergeable(input, &storage).await?;
            match &mut merged {
                None => merged = Some(partial),
                Some(m) => m
                    .merge(&partial)
                    .with_context(|| format!("merging {input}"))?,
            }
        }
        merged.context("nothing to merge")
    })?;
    let missing = merged.missing_tasks();
    for (plan, tasks) in &missing {
        eprintln!(
            "warning: plan {plan}: {} task(s) missing ({}); the profile covers only part of the data",
            tasks.len(),
            truthound_profile::profile::index_ranges(tasks)
        );
    }
    if args.require_complete && !missing.is_empty() {
        anyhow::bail!(exit::Incomplete(format!(
            "{} plan(s) have missing tasks",
            missing.len()
        )));
    }
    let profile = TableProfile::from_partial(
        &merged,
        started.elapsed().as_millis() as u64,
        args.keep_state,
        truthound_profile::ProfileOptions::default().histogram_bins,
    );
    let json = profile.to_json();
    if let Some(out) = &args.output {
        rt.block_on(dataset::write_object(out, &storage, json.clone()))
            .with_context(|| format!("writing the profile to {out}"))?;
    }
    if let Some(out) = &args.partial_out {
        rt.block_on(dataset::write_object(out, &storage, merged.to_bytes()))
            .with_context(|| format!("writing the partial profile to {out}"))?;
    }
    let mut stdout = std::io::stdout().lock();
    if args.json || args.output.is_none() && args.partial_out.is_none() {
        stdout.write_all(&json)?;
    }
    Ok(())
}
