//! `th report`: a profile as one self-contained HTML page (inline CSS, inline SVG charts, no
//! scripts, nothing fetched when it is viewed), readable on a phone and printable.

mod compare;
mod html;
mod render;
mod svg;

use crate::args::StorageArgs;
use crate::load;
use anyhow::{Context, Result};
use clap::Args;
use std::io::Write;
use truthound_profile::{dataset, drift};

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The profile: a path or URI of the JSON `th profile --output` writes.
    pub profile: String,
    /// Where to write the HTML page (a path or URI); `-` writes it to stdout.
    #[arg(long, short, value_name = "FILE")]
    pub output: String,
    /// A previous profile of the same table (path or URI): its main figures are shown beside
    /// the new ones, and the columns that drifted since are marked (the thresholds as for
    /// `th diff`).
    #[arg(long, value_name = "PROFILE")]
    pub previous: Option<String>,
    #[command(flatten)]
    pub thresholds: crate::diff::ThresholdArgs,
    #[command(flatten)]
    pub storage: StorageArgs,
}

/// The HTML page of a profile.
pub fn html(profile: &truthound_profile::TableProfile) -> String {
    render::page(profile, None)
}

pub fn run(args: ReportArgs) -> Result<()> {
    let storage = args.storage.options()?;
    let thresholds = args.thresholds.thresholds()?;
    let loaded = load::read(&args.profile, &storage)?;
    let page = match &args.previous {
        Some(uri) => {
            let old = load::read(uri, &storage)?;
            let previous = compare::Previous {
                uri: uri.clone(),
                profile: &old.profile,
                drift: drift::diff(&old.profile, &loaded.profile, &thresholds),
            };
            render::page(&loaded.profile, Some(&previous))
        }
        None => html(&loaded.profile),
    };
    if args.output == "-" {
        let mut out = std::io::stdout().lock();
        return crate::show::quiet_on_broken_pipe(
            out.write_all(page.as_bytes()).and_then(|()| out.flush()),
        );
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(dataset::write_object(
        &args.output,
        &storage,
        page.into_bytes(),
    ))
    .with_context(|| format!("writing the report to {}", args.output))?;
    eprintln!(
        "report of {} ({} columns) written to {}",
        args.profile, loaded.profile.column_count, args.output
    );
    Ok(())
}
