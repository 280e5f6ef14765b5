//! Arguments of the cluster commands. `th submit` takes `th profile`'s dataset, partitioning,
//! profile and storage flags literally (the same [`PlanArgs`]); the flags of an in-process run
//! that mean nothing on a cluster are still accepted by the parser, so that they can be refused
//! with a reason instead of clap's "unexpected argument".

use crate::args::{Backend, PlanArgs};
use clap::{Args, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// `th submit --help` on --partitions.
pub const SUBMIT_PARTITIONS_HELP: &str = "Tasks (row_based), column groups (column_based), hash \
    buckets (hash), or row slices (hybrid). Default: 4 (the operator's default for a ProfileJob \
    that sets none).";

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Submit a dataset to the cluster as a ProfileJob, for the operator to profile.
    ///
    /// The operator plans it, runs its tasks on worker pods (or a Spark, Dask or Ray cluster) and
    /// writes the profile to --output. The flags are th profile's, plus the cluster's; on a
    /// cluster --partitions defaults to 4, and the object store's credentials come from the
    /// Secret named by --credentials-secret, never from this machine's environment.
    ///
    /// Examples:
    ///   th submit s3://lake/events/ --output s3://lake/profiles/events.json --partitions 16 --wait
    ///   th submit s3://lake/users/ -o s3://lake/profiles/users.json -n data \
    ///      --strategy hash --hash-column user_id --credentials-secret lake-credentials
    ///   th submit s3://lake/events/ -o s3://lake/profiles/events.json --dry-run > events.yaml
    // --partitions is th profile's flag, whose default (twice the workers) is an in-process
    // run's: a ProfileJob without partitions gets the operator's (plan_request in
    // operator/src/reconcile.rs).
    #[command(verbatim_doc_comment, mut_arg("partitions", |a| a.help(SUBMIT_PARTITIONS_HELP)))]
    Submit(Box<SubmitArgs>),
    /// Show one ProfileJob: state, tasks, progress.
    Get(GetArgs),
    /// List the ProfileJobs of a namespace (-A: of every namespace).
    List(ListArgs),
    /// Describe a ProfileJob: its spec, conditions, tasks, last failures and recent events.
    Describe(DescribeArgs),
    /// Follow a ProfileJob until it succeeds or fails; print its result (exit 1 when it failed).
    Wait(WaitArgs),
    /// Print the logs of a ProfileJob's worker pods (all tasks, or one with --task).
    Logs(LogsArgs),
    /// Cancel a ProfileJob: delete it with its workers (the profile, if written, stays), or with
    /// --keep suspend it.
    Cancel(CancelArgs),
    /// Print a shell completion script: th completions bash > /etc/bash_completion.d/th
    Completions(CompletionsArgs),
}

/// Which cluster and namespace.
#[derive(Debug, Clone, Default, Args)]
pub struct KubeArgs {
    /// The kubeconfig context to use (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub context: Option<String>,
    /// Namespace (default: the context's namespace, else `default`).
    #[arg(long, short = 'n', value_name = "NAMESPACE")]
    pub namespace: Option<String>,
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config; in a pod, its service account).
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,
}

/// How `get`, `list` and `describe` print.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    #[default]
    Table,
    Json,
    Yaml,
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub plan: PlanArgs,
    /// Where the profile JSON is written (required): a URI the cluster can write, e.g.
    /// s3://bucket/profiles/events.json. The plan and partial profiles go beside it, under
    /// .truthound/<job uid>/.
    #[arg(long, short, value_name = "URI")]
    pub output: Option<String>,
    /// Keep the work data (.truthound/<job uid>/: plan, partial profiles, task table) once the
    /// job succeeded or is deleted; by default it is deleted then (it holds exact values).
    #[arg(long)]
    pub keep_work_data: bool,
    /// Incremental runs (spec.output.cacheUri): a prefix in the output's store where task
    /// partials are cached; tasks of unchanged files reuse them instead of running.
    #[arg(long, value_name = "URI")]
    pub cache: Option<String>,
    /// Where the tasks run: local (worker pods started by the operator, the default), spark,
    /// dask, ray (an existing cluster), or auto (the operator chooses).
    #[arg(long, env = "TRUTHOUND_DISTRIBUTED_BACKEND", value_enum)]
    pub backend: Option<Backend>,
    /// Spark Connect URL of the spark backend, e.g. sc://spark-connect.spark:15002.
    #[arg(long, value_name = "URL")]
    pub master: Option<String>,
    /// Scheduler address of the dask backend, e.g. tcp://dask-scheduler.dask:8786.
    #[arg(long, value_name = "ADDRESS")]
    pub scheduler: Option<String>,
    /// Dashboard address of the ray backend, e.g. http://ray-head.ray:8265.
    #[arg(long, value_name = "URL")]
    pub ray_address: Option<String>,
    /// Name of the ProfileJob (default: the dataset's name and a random suffix).
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// A Secret in the namespace holding the object store's credentials as environment
    /// variables (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, GOOGLE_SERVICE_ACCOUNT_KEY,
    /// AZURE_STORAGE_ACCOUNT_KEY, ...). Your local credentials are never sent.
    #[arg(long, value_name = "NAME")]
    pub credentials_secret: Option<String>,
    /// Worker pods running at once (local backend; default: min(tasks, 4)).
    #[arg(long, value_name = "PODS")]
    pub parallelism: Option<u32>,
    /// Failed tasks tolerated before the job fails (default 0); the profile then says which
    /// tasks it misses.
    #[arg(long, value_name = "N")]
    pub max_failed_tasks: Option<u32>,
    /// Retries of one task before it counts as failed (default 3).
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// Fail the job when it runs longer than this (90s, 30m, 2h, 1d; a bare number is seconds).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub deadline: Option<Duration>,
    /// Delete the ProfileJob (and its workers) this long after it finished; the profile stays.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// A label of the ProfileJob, KEY=VALUE (repeatable), e.g. kueue.x-k8s.io/queue-name=team-a.
    #[arg(long = "label", short = 'l', value_name = "KEY=VALUE")]
    pub labels: Vec<String>,
    /// Accept an --endpoint (or --scheduler, --ray-address) on this machine (127.0.0.1,
    /// localhost): only for a cluster whose pods run on this machine too, such as a test
    /// cluster with a process-based node. Refused by default, since pods elsewhere cannot reach it.
    #[arg(long)]
    pub allow_loopback_endpoint: bool,
    /// Print the ProfileJob as YAML instead of creating it (no cluster needed).
    #[arg(long)]
    pub dry_run: bool,
    /// Follow the job until it finishes, then print its result (exit 1 when it failed).
    #[arg(long, conflicts_with = "dry_run")]
    pub wait: bool,
    /// With --wait: give up waiting after this long (the job goes on).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, requires = "wait")]
    pub timeout: Option<Duration>,
    /// No progress bar or progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub poll: PollArgs,
    #[command(flatten)]
    pub local_only: LocalOnlyArgs,
}

/// `th profile` flags with no meaning on a cluster: parsed, hidden, refused with a reason.
#[derive(Debug, Default, Args)]
pub struct LocalOnlyArgs {
    /// Accepted (the ancestor's flag): a cluster run is always distributed.
    #[arg(long, hide = true)]
    pub distributed: bool,
    #[arg(long, short = 'w', hide = true)]
    pub workers: Option<String>,
    #[arg(long, hide = true)]
    pub json: bool,
    /// Embed the mergeable state in the profile (spec.profile.keepState), as `th profile
    /// --keep-state` does.
    #[arg(long)]
    pub keep_state: bool,
    #[arg(long, hide = true)]
    pub partial_out: Option<String>,
    #[arg(long, hide = true)]
    pub plan_out: Option<String>,
}

/// How often the status is read while following a job.
#[derive(Debug, Clone, Args)]
pub struct PollArgs {
    #[arg(long, hide = true, env = "TH_POLL_INTERVAL", default_value = "2s", value_parser = parse_duration)]
    pub poll_interval: Duration,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// The ProfileJob's name.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub kube: KubeArgs,
    /// List the ProfileJobs of every namespace.
    #[arg(long, short = 'A')]
    pub all_namespaces: bool,
    /// Output format.
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct DescribeArgs {
    /// The ProfileJob's name.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Output format (json and yaml: the object and its events).
    #[arg(long, short, value_enum, default_value = "table")]
    pub output: OutputFormat,
}

#[derive(Debug, Args)]
pub struct WaitArgs {
    /// The ProfileJob's name.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Give up waiting after this long (exit 1; the job goes on). Default: no limit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// No progress bar or progress lines.
    #[arg(long, short)]
    pub quiet: bool,
    #[command(flatten)]
    pub poll: PollArgs,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The ProfileJob's name.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Only this task's worker (its completion index); default: every task, each line prefixed.
    #[arg(long, value_name = "N")]
    pub task: Option<u32>,
    /// Keep streaming new lines until the pods end.
    #[arg(long, short)]
    pub follow: bool,
    /// The merge pod's logs instead of the workers' (runs that merge in a pod).
    #[arg(long, conflicts_with = "task")]
    pub merge: bool,
    /// Lines from the end of each log.
    #[arg(long, value_name = "LINES")]
    pub tail: Option<i64>,
}

#[derive(Debug, Args)]
pub struct CancelArgs {
    /// The ProfileJob's name.
    pub name: String,
    #[command(flatten)]
    pub kube: KubeArgs,
    /// Keep the job: suspend it (spec.suspend=true) instead of deleting it. Running workers stop,
    /// completed tasks are kept, and setting suspend back to false resumes it.
    #[arg(long)]
    pub keep: bool,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

/// A duration: `90`, `90s`, `500ms`, `30m`, `2h`, `1d`, or a sum such as `1h30m`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let text = s.trim();
    let bad = || format!("`{s}` is not a duration (write 90s, 30m, 2h, 1d or 1h30m)");
    if text.is_empty() {
        return Err(bad());
    }
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total = Duration::ZERO;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let part = match &rest[..unit_len] {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n * 60),
            "h" => Duration::from_secs(n * 3600),
            "d" => Duration::from_secs(n * 86400),
            _ => return Err(bad()),
        };
        total += part;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2d"), Ok(Duration::from_secs(172800)));
        for bad in ["", "m", "10x", "1.5h", "-3s", "h1"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
