//! The progress bar on a terminal: partitions done/total, rows per second, ETA.

use indicatif::{HumanCount, ProgressBar, ProgressDrawTarget, ProgressState, ProgressStyle};
use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use truthound_profile::Plan;
use truthound_profile::run::{Event, Progress};

pub struct Bar {
    bar: Option<ProgressBar>,
    done: Arc<AtomicU64>,
    tasks: u64,
}

impl Bar {
    /// A bar on stderr when it is a terminal and output is not quiet; otherwise nothing.
    pub fn new(plan: &Plan, quiet: bool) -> Bar {
        let tasks = plan.tasks.len() as u64;
        let show = !quiet && std::io::stderr().is_terminal();
        let bar = show.then(|| {
            // Rows are known from Parquet footers; otherwise count partitions.
            let (len, template) = match plan.tasks.iter().map(|t| t.rows).sum::<Option<u64>>() {
                Some(rows) => (
                    rows,
                    "{spinner} [{bar:30}] {msg} · {human_pos}/{human_len} rows · {rate} · ETA {eta}",
                ),
                None => (tasks, "{spinner} [{bar:30}] {msg} · {elapsed}"),
            };
            let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(template)
                    .unwrap_or_else(|_| ProgressStyle::default_bar())
                    .with_key("rate", |state: &ProgressState, w: &mut dyn std::fmt::Write| {
                        let _ = write!(w, "{} rows/s", HumanCount(state.per_sec() as u64));
                    })
                    .progress_chars("=> "),
            );
            bar.set_message(format!("0/{tasks} partitions"));
            bar
        });
        Bar {
            bar,
            done: Arc::new(AtomicU64::new(0)),
            tasks,
        }
    }

    pub fn sink(&self) -> Progress {
        let Some(bar) = self.bar.clone() else {
            return truthound_profile::run::no_progress();
        };
        let (done, tasks) = (self.done.clone(), self.tasks);
        let by_rows = bar.length() != Some(tasks) || tasks == 0;
        Arc::new(move |event| match event {
            Event::Rows { rows, .. } if by_rows => bar.inc(rows),
            Event::TaskFinished { .. } => {
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                bar.set_message(format!("{n}/{tasks} partitions"));
                if !by_rows {
                    bar.inc(1);
                }
            }
            _ => {}
        })
    }

    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}
