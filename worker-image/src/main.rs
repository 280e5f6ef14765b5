//! `th-worker`: runs one task of a profiling plan and writes its partial profile.
//!
//! Exit codes tell the caller whether to retry: 0 done · 64 invalid request (a bad plan or task
//! id; retrying will not help) · 65 bad data (the input is at fault; retrying will not help) ·
//! 75 transient (storage or network; retry) · 1 internal error · 2 usage.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use std::process::ExitCode;
use std::sync::Arc;
use tracing::info;
use truthound_profile::dataset::{self, StorageOptions};
use truthound_profile::run::{self, Event, Progress};
use truthound_profile::{Error, ErrorClass, Plan};

#[derive(Debug, Parser)]
#[command(
    name = "th-worker",
    version,
    about = "Runs one task of a truthound profiling plan"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run task TASK of the plan at PLAN and write its partial profile to OUT.
    RunTask {
        /// The plan (a path or URI), as `th plan` or the operator writes it.
        #[arg(long)]
        plan: String,
        /// Task id (0-based). Defaults to JOB_COMPLETION_INDEX, the index of a Kubernetes
        /// Indexed Job's pod.
        #[arg(long, env = "JOB_COMPLETION_INDEX")]
        task: u32,
        /// Where to write the partial profile (a path or URI).
        #[arg(long)]
        out: String,
        /// Endpoint of an S3-compatible server, for the plan and the output. The dataset's own
        /// storage options come from the plan; credentials from AWS_*/GOOGLE_*/AZURE_*.
        #[arg(long, env = "TH_S3_ENDPOINT")]
        endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
        #[arg(long)]
        allow_http: bool,
        /// Worker threads for I/O.
        #[arg(long, default_value_t = 2)]
        threads: usize,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TH_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .json()
        .init();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            let code = exit_code(&err);
            tracing::error!(exit_code = code, error = %format!("{err:#}"), "task failed");
            eprintln!("error: {err:#}");
            ExitCode::from(code)
        }
    }
}

fn exit_code(err: &anyhow::Error) -> u8 {
    let class = err
        .chain()
        .find_map(|e| e.downcast_ref::<Error>())
        .map(Error::class);
    match class {
        Some(ErrorClass::BadData) => 65,
        Some(ErrorClass::Invalid) => 64,
        Some(ErrorClass::Transient) => 75,
        None => 1,
    }
}

fn run(cli: Cli) -> Result<()> {
    let Command::RunTask {
        plan,
        task,
        out,
        endpoint,
        region,
        allow_http,
        threads,
    } = cli.command;
    let storage = StorageOptions {
        endpoint,
        region,
        allow_http: allow_http.then_some(true),
        ..StorageOptions::default()
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async {
        let bytes = dataset::read_object(&plan, &storage)
            .await
            .with_context(|| format!("reading the plan {plan}"))?;
        let plan = Plan::from_json(&bytes, &plan)?;
        let store = run::plan_store(&plan)?;
        let progress: Progress = Arc::new(|event| {
            if let Event::TaskFinished { task, rows, millis } = event {
                info!(task, rows, millis, "task finished");
            }
        });
        info!(plan = %plan.id, task, "task started");
        let partial = run::run_task(&plan, task, store, &progress).await?;
        dataset::write_object(&out, &storage, partial.to_bytes())
            .await
            .with_context(|| format!("writing the partial profile to {out}"))?;
        info!(out = %out, "partial written");
        anyhow::Ok(())
    })
}
