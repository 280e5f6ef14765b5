//! `th profile`'s event log (`<output>.events.jsonl`, see [`truthound_profile::events`]): the
//! plan, each task's start and finish as the in-process pool reports them, the tasks reused
//! from a cache (remote workers write
//! their own records, collected from the run's work prefix), and the merge.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;
use time::OffsetDateTime;
use truthound_profile::Plan;
use truthound_profile::events::{EventKind, RunEvent};
use truthound_profile::run::{Event, Progress};

/// The lines of a run, as they happen.
#[derive(Default)]
pub struct RunLog {
    events: Mutex<Vec<RunEvent>>,
    started: Mutex<HashMap<u32, Instant>>,
}

impl RunLog {
    pub fn new(plan: &Plan) -> Arc<Self> {
        let log = Arc::new(RunLog::default());
        log.push(
            RunEvent::new(EventKind::Planned, "th", OffsetDateTime::now_utc())
                .tasks(plan.tasks.len() as u32)
                .cause(
                    "Planned",
                    format!(
                        "plan {}: {} task(s) over {} file(s)",
                        plan.id,
                        plan.tasks.len(),
                        plan.files.len()
                    ),
                ),
        );
        log
    }

    pub fn push(&self, e: RunEvent) {
        if let Ok(mut v) = self.events.lock() {
            v.push(e);
        }
    }

    pub fn extend(&self, more: Vec<RunEvent>) {
        if let Ok(mut v) = self.events.lock() {
            v.extend(more);
        }
    }

    /// Tasks whose partials came from the cache: they do not run.
    pub fn reused<'a>(&self, tasks: impl IntoIterator<Item = &'a u32>) {
        let now = OffsetDateTime::now_utc();
        for &t in tasks {
            self.push(RunEvent::new(EventKind::TaskReused, "th", now).task(t));
        }
    }

    /// `inner`, also recording task starts and finishes.
    pub fn sink(self: &Arc<Self>, inner: Progress) -> Progress {
        let log = self.clone();
        Arc::new(move |event: Event| {
            let now = OffsetDateTime::now_utc();
            match &event {
                Event::TaskStarted { task } => {
                    if let Ok(mut s) = log.started.lock() {
                        s.insert(*task, Instant::now());
                    }
                    log.push(RunEvent::new(EventKind::TaskStarted, "th", now).task(*task));
                }
                Event::TaskFinished { task, rows, millis } => log.push(
                    RunEvent::new(EventKind::TaskFinished, "th", now)
                        .task(*task)
                        .rows(*rows)
                        .millis(*millis),
                ),
                Event::Rows { .. } => {}
            }
            inner(event);
        })
    }

    /// The run's lines, with the merge's, in time order.
    pub fn finish(&self, tasks: u32, rows: u64) -> Vec<RunEvent> {
        self.push(
            RunEvent::new(EventKind::MergeFinished, "th", OffsetDateTime::now_utc())
                .tasks(tasks)
                .rows(rows),
        );
        let mut events = self.events.lock().map(|v| v.clone()).unwrap_or_default();
        truthound_profile::events::sort(&mut events);
        events
    }
}
