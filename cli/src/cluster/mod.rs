//! `th` as a thin submitter: `submit` turns `th profile`'s flags into a ProfileJob for the
//! operator, and `get`, `list`, `describe`, `wait`, `logs`, `cancel` follow it in the current
//! kubeconfig context. Also `completions`, which prints shell completion scripts.

pub mod args;
pub mod client;
pub mod jobs;
pub mod render;
pub mod spec;
#[cfg(test)]
mod tests;

use anyhow::{Context, Result};
use args::{ClusterCommand, KubeArgs, SubmitArgs};
use client::Cluster;
use jobs::{Display, Follow};
use std::io::{IsTerminal, Write};

pub fn run(command: ClusterCommand) -> Result<()> {
    if let ClusterCommand::Completions(a) = &command {
        let mut cmd = <crate::args::Cli as clap::CommandFactory>::command();
        clap_complete::generate(a.shell, &mut cmd, "th", &mut std::io::stdout().lock());
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(dispatch(command))
}

fn now() -> i64 {
    k8s_openapi::jiff::Timestamp::now().as_second()
}

fn display(quiet: bool) -> Display<'static> {
    if quiet {
        Display::Quiet
    } else if std::io::stderr().is_terminal() {
        Display::bar()
    } else {
        Display::Lines {
            out: Box::new(std::io::stderr()),
            last: String::new(),
        }
    }
}

async fn connect(k: &KubeArgs) -> Result<Cluster> {
    client::connect(k).await
}

async fn dispatch(command: ClusterCommand) -> Result<()> {
    let mut stdout = std::io::stdout().lock();
    let out: &mut dyn Write = &mut stdout;
    match command {
        ClusterCommand::Submit(a) => submit(*a, out).await,
        ClusterCommand::Get(a) => {
            jobs::get(&connect(&a.kube).await?, &a.name, a.output, now(), out).await
        }
        ClusterCommand::List(a) => {
            jobs::list(
                &connect(&a.kube).await?,
                a.all_namespaces,
                a.output,
                now(),
                out,
            )
            .await
        }
        ClusterCommand::Describe(a) => {
            jobs::describe(&connect(&a.kube).await?, &a.name, a.output, now(), out).await
        }
        ClusterCommand::Wait(a) => {
            let c = connect(&a.kube).await?;
            let how = Follow {
                interval: a.poll.poll_interval,
                timeout: a.timeout,
            };
            jobs::follow(&c, &a.name, &how, &mut display(a.quiet), out).await
        }
        ClusterCommand::Logs(a) => {
            let req = jobs::LogsRequest {
                task: a.task,
                follow: a.follow,
                merge: a.merge,
                tail: a.tail,
            };
            jobs::logs(&connect(&a.kube).await?, &a.name, &req, out).await
        }
        ClusterCommand::Cancel(a) => {
            jobs::cancel(&connect(&a.kube).await?, &a.name, a.keep, out).await
        }
        ClusterCommand::Completions(_) => Ok(()),
    }
}

async fn submit(a: SubmitArgs, out: &mut dyn Write) -> Result<()> {
    if a.dry_run {
        // No cluster needed: the namespace is the one given, if any.
        let pj = spec::build(&a, a.kube.namespace.as_deref())?;
        out.write_all(serde_yaml::to_string(&pj)?.as_bytes())?;
        return Ok(());
    }
    // Refuse bad flags before looking for a cluster.
    spec::build(&a, None)?;
    let c = connect(&a.kube).await?;
    let pj = spec::build(&a, Some(&c.namespace))?;
    submit_to(&c, &pj, &a, &mut display(a.quiet), out).await
}

/// Creates the job and, with --wait, follows it.
pub async fn submit_to(
    c: &Cluster,
    pj: &truthound_operator::ProfileJob,
    a: &SubmitArgs,
    display: &mut Display<'_>,
    out: &mut dyn Write,
) -> Result<()> {
    let created = jobs::create(c, pj, out).await?;
    let name = created.metadata.name.clone().unwrap_or_default();
    let ns = &c.namespace;
    if !a.wait {
        writeln!(
            out,
            "follow it: th wait {name} -n {ns} · th describe {name} -n {ns} · th logs {name} -n {ns}"
        )?;
        return Ok(());
    }
    let how = Follow {
        interval: a.poll.poll_interval,
        timeout: a.timeout,
    };
    jobs::follow(c, &name, &how, display, out).await
}
