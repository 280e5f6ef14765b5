//! A schedule's decisions: a pure function from what was observed (the ProfileSchedule, its
//! runs, the time) to what to do. CronJob's rules: the most recent missed time is run (at most
//! one catch-up), within `startingDeadlineSeconds`; `Forbid` leaves a due time waiting while a
//! run is active (it runs when the active one ends, if still within the deadline), `Replace`
//! deletes the active runs first; finished runs beyond the history limits are deleted oldest
//! first. Runs are named after their scheduled time, so a repeated decision creates nothing
//! twice.

use super::crd::{ConcurrencyPolicy, ProfileScheduleSpec, ProfileScheduleStatus, RunProfile};
use super::cron::{Schedule, ScheduleError};
use crate::decide::EventNote;
use crate::status::{self, READY, rfc3339};
use k8s_openapi::api::core::v1::ObjectReference;
use std::time::Duration;
use time::OffsetDateTime;

/// Label on each run naming its schedule.
pub const SCHEDULE_LABEL: &str = "truthound.io/schedule";
/// Annotation on each run: its scheduled time (RFC 3339).
pub const SCHEDULED_AT: &str = "truthound.io/scheduled-at";
/// Longest schedule name: a run's name adds `-` and up to 10 digits, and stays within the 63
/// characters of a label value (CronJob's limit, for the same reason).
pub const MAX_NAME_LEN: usize = 52;
/// Missed times counted before the schedule warns and runs only the latest (CronJob's 100).
pub const MAX_MISSED: usize = 100;
/// Default history limits (CronJob's).
pub const DEFAULT_SUCCESSFUL_LIMIT: i32 = 3;
pub const DEFAULT_FAILED_LIMIT: i32 = 1;

/// One run (a ProfileJob the schedule owns), as observed.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub name: String,
    pub uid: String,
    /// Its scheduled time (annotation), else its creation time.
    pub scheduled: OffsetDateTime,
    pub state: RunState,
    /// Being deleted (deletionTimestamp set).
    pub deleting: bool,
}

/// Where a run is.
#[derive(Debug, Clone, PartialEq)]
pub enum RunState {
    Active,
    Succeeded {
        finished: Option<OffsetDateTime>,
        profile_uri: Option<String>,
    },
    Failed {
        finished: Option<OffsetDateTime>,
    },
}

/// What the decision looks at.
#[derive(Debug, Clone)]
pub struct Observed<'a> {
    pub name: &'a str,
    pub namespace: &'a str,
    pub spec: &'a ProfileScheduleSpec,
    pub generation: Option<i64>,
    pub created: OffsetDateTime,
    pub status: Option<&'a ProfileScheduleStatus>,
    pub runs: Vec<Run>,
    pub now: OffsetDateTime,
}

/// Something to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Create the run for `scheduled`.
    Create {
        name: String,
        scheduled: OffsetDateTime,
        output_uri: String,
    },
    /// Delete a run: beyond the history limits, or replaced.
    Delete {
        name: String,
        uid: String,
        reason: &'static str,
    },
    /// Compare `run`'s profile with `previous`'s; the result goes to status.lastDrift, and `run`
    /// becomes status.lastProfile.
    CompareDrift {
        run: RunProfile,
        previous: RunProfile,
    },
}

/// What to do, and what the status says afterwards.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    pub status: ProfileScheduleStatus,
    pub actions: Vec<Action>,
    pub events: Vec<EventNote>,
    /// When to look again (the next scheduled time), besides watch events.
    pub requeue: Option<Duration>,
}

/// The name of the run scheduled at `t`: by the minute for 5-field schedules (as CronJob), by
/// the second for schedules with seconds.
pub fn run_name(schedule: &str, t: OffsetDateTime, seconds: bool) -> String {
    let n = t.unix_timestamp();
    format!("{schedule}-{}", if seconds { n } else { n.div_euclid(60) })
}

/// The schedule's cron and its output template, checked.
pub fn validate(name: &str, spec: &ProfileScheduleSpec) -> Result<Schedule, String> {
    if name.len() > MAX_NAME_LEN {
        return Err(format!(
            "the name is {} characters; a ProfileSchedule's is at most {MAX_NAME_LEN} (its runs add a suffix)",
            name.len()
        ));
    }
    let schedule = Schedule::parse(&spec.schedule, spec.time_zone.as_deref())
        .map_err(|e: ScheduleError| e.to_string())?;
    schedule
        .render(
            &spec.job_template.spec.output.uri,
            OffsetDateTime::UNIX_EPOCH,
        )
        .map_err(|e| e.to_string())?;
    Ok(schedule)
}

fn drift_enabled(spec: &ProfileScheduleSpec) -> bool {
    spec.drift.as_ref().and_then(|d| d.enabled).unwrap_or(true)
}

fn parse(t: &Option<String>) -> Option<OffsetDateTime> {
    t.as_deref().and_then(status::parse_time)
}

fn note(warning: bool, reason: &str, message: String) -> EventNote {
    EventNote {
        warning,
        reason: reason.into(),
        message,
    }
}

/// The decision.
pub fn decide(obs: &Observed) -> Decision {
    let now = obs.now;
    let spec = obs.spec;
    let old = obs.status.cloned().unwrap_or_default();
    let mut status = old.clone();
    status.observed_generation = obs.generation;
    let mut actions = Vec::new();
    let mut events = Vec::new();

    let mut runs = obs.runs.clone();
    runs.sort_by(|a, b| (a.scheduled, &a.name).cmp(&(b.scheduled, &b.name)));

    // The record of active runs and of the last success, from the runs themselves.
    let active: Vec<&Run> = runs
        .iter()
        .filter(|r| r.state == RunState::Active)
        .collect();
    for r in &runs {
        if let RunState::Succeeded {
            finished: Some(f), ..
        } = r.state
            && parse(&status.last_successful_time).is_none_or(|old| f > old)
        {
            status.last_successful_time = Some(rfc3339(f));
        }
    }

    // Drift: the newest successful run with a profile, against the baseline, once.
    let newest_success = runs.iter().rev().find_map(|r| match &r.state {
        RunState::Succeeded {
            profile_uri: Some(uri),
            ..
        } => Some(RunProfile {
            job: r.name.clone(),
            profile_uri: uri.clone(),
            scheduled_time: rfc3339(r.scheduled),
        }),
        _ => None,
    });
    if let Some(run) = newest_success
        && drift_enabled(spec)
    {
        let newer = match &status.last_profile {
            None => true,
            Some(base) => {
                base.job != run.job
                    && status::parse_time(&base.scheduled_time)
                        .is_none_or(|b| status::parse_time(&run.scheduled_time) > Some(b))
            }
        };
        if newer {
            match status.last_profile.clone() {
                // The first success is the baseline: nothing to compare it with.
                None => status.last_profile = Some(run),
                Some(previous) => actions.push(Action::CompareDrift { run, previous }),
            }
        }
    }

    // History: finished runs beyond the limits, oldest first.
    let limit = |l: Option<i32>, d: i32| l.unwrap_or(d).max(0) as usize;
    let succeeded: Vec<&Run> = runs
        .iter()
        .filter(|r| matches!(r.state, RunState::Succeeded { .. }) && !r.deleting)
        .collect();
    let failed: Vec<&Run> = runs
        .iter()
        .filter(|r| matches!(r.state, RunState::Failed { .. }) && !r.deleting)
        .collect();
    for (list, lim) in [
        (
            &succeeded,
            limit(spec.successful_jobs_history_limit, DEFAULT_SUCCESSFUL_LIMIT),
        ),
        (
            &failed,
            limit(spec.failed_jobs_history_limit, DEFAULT_FAILED_LIMIT),
        ),
    ] {
        for r in list.iter().take(list.len().saturating_sub(lim)) {
            actions.push(Action::Delete {
                name: r.name.clone(),
                uid: r.uid.clone(),
                reason: "history limit",
            });
        }
    }

    let mut active_refs: Vec<ObjectReference> = active
        .iter()
        .map(|r| run_ref(obs, &r.name, Some(&r.uid)))
        .collect();

    let schedule = match validate(obs.name, spec) {
        Ok(s) => s,
        Err(msg) => {
            let changed = status::set_condition(
                &mut status.conditions,
                READY,
                false,
                "InvalidSpec",
                &msg,
                now,
                obs.generation,
            );
            if changed {
                events.push(note(true, "InvalidSpec", msg));
            }
            status.next_schedule_time = None;
            return finish(status, active_refs, actions, events, None);
        }
    };

    if spec.suspend {
        status::set_condition(
            &mut status.conditions,
            READY,
            false,
            "Suspended",
            "spec.suspend is true: no new runs",
            now,
            obs.generation,
        );
        status.next_schedule_time = None;
        return finish(status, active_refs, actions, events, None);
    }
    status::set_condition(
        &mut status.conditions,
        READY,
        true,
        "Scheduling",
        &format!("runs on `{}`", spec.schedule.trim()),
        now,
        obs.generation,
    );

    // The times missed since the last run (or the schedule's creation), within the deadline.
    let deadline = spec
        .starting_deadline_seconds
        .map(|s| now - time::Duration::seconds(s.max(0)));
    let mut earliest = parse(&old.last_schedule_time).unwrap_or(obs.created);
    if let Some(d) = deadline
        && d > earliest
    {
        earliest = d;
    }
    let (times, too_many) = schedule.times_between(earliest, now, MAX_MISSED);
    if too_many {
        events.push(note(
            true,
            "TooManyMissedTimes",
            format!(
                "more than {MAX_MISSED} scheduled times missed since {}: only the latest runs (set startingDeadlineSeconds, or check the clocks)",
                rfc3339(earliest)
            ),
        ));
    }
    // At most one catch-up: the latest due time (with more than the cap missed, the latest of
    // all, found backwards from now).
    let due = if too_many {
        schedule.latest_at_or_before(now).filter(|t| *t > earliest)
    } else {
        times.last().copied()
    };

    if let Some(t) = due {
        let name = run_name(obs.name, t, schedule.has_seconds);
        if runs.iter().any(|r| r.name == name) {
            // Created before, and the status write did not follow (a restart): it is this run.
            status.last_schedule_time = Some(rfc3339(t));
        } else if !active.is_empty() && spec.concurrency_policy == ConcurrencyPolicy::Forbid {
            events.push(note(
                false,
                "JobAlreadyActive",
                format!(
                    "not starting the run of {}: {} still active and concurrencyPolicy is Forbid",
                    rfc3339(t),
                    active[0].name
                ),
            ));
        } else {
            if spec.concurrency_policy == ConcurrencyPolicy::Replace {
                for r in active.iter().filter(|r| !r.deleting) {
                    actions.push(Action::Delete {
                        name: r.name.clone(),
                        uid: r.uid.clone(),
                        reason: "replaced",
                    });
                }
                active_refs.clear();
            }
            match schedule.render(&spec.job_template.spec.output.uri, t) {
                Ok(output_uri) => {
                    actions.push(Action::Create {
                        name: name.clone(),
                        scheduled: t,
                        output_uri,
                    });
                    active_refs.push(run_ref(obs, &name, None));
                    status.last_schedule_time = Some(rfc3339(t));
                }
                // Checked by validate() already; kept so a failure is said, not unwrapped.
                Err(e) => events.push(note(true, "InvalidSpec", e.to_string())),
            }
        }
    }

    let next = schedule.next_after(now);
    status.next_schedule_time = next.map(rfc3339);
    // Scheduled times are whole seconds; a little slack so the timer does not wake just before.
    let requeue = next.map(|n| {
        let d = n - now;
        Duration::from_secs_f64(d.as_seconds_f64().max(0.0)) + Duration::from_millis(250)
    });
    finish(status, active_refs, actions, events, requeue)
}

fn run_ref(obs: &Observed, name: &str, uid: Option<&str>) -> ObjectReference {
    ObjectReference {
        api_version: Some("truthound.io/v1alpha1".into()),
        kind: Some("ProfileJob".into()),
        name: Some(name.into()),
        namespace: Some(obs.namespace.into()),
        uid: uid.map(str::to_string),
        ..Default::default()
    }
}

fn finish(
    mut status: ProfileScheduleStatus,
    active: Vec<ObjectReference>,
    actions: Vec<Action>,
    events: Vec<EventNote>,
    requeue: Option<Duration>,
) -> Decision {
    status.active_count = active.len() as u32;
    status.active = active;
    Decision {
        status,
        actions,
        events,
        requeue,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schedule::crd::{DriftSpec, ProfileJobTemplate};
    use time::macros::datetime;

    fn spec(schedule: &str, policy: ConcurrencyPolicy) -> ProfileScheduleSpec {
        let job: crate::crd::ProfileJobSpec = serde_json::from_value(serde_json::json!({
            "dataset": {"uri": "s3://b/events/"},
            "output": {"uri": "s3://b/profiles/{date}/{time}.json"},
        }))
        .expect("a ProfileJobSpec");
        ProfileScheduleSpec {
            schedule: schedule.into(),
            time_zone: None,
            concurrency_policy: policy,
            starting_deadline_seconds: None,
            suspend: false,
            successful_jobs_history_limit: None,
            failed_jobs_history_limit: None,
            job_template: ProfileJobTemplate {
                metadata: None,
                spec: job,
            },
            drift: None,
        }
    }

    const CREATED: OffsetDateTime = datetime!(2026-01-01 10:00:00 UTC);

    fn obs<'a>(
        spec: &'a ProfileScheduleSpec,
        status: Option<&'a ProfileScheduleStatus>,
        runs: Vec<Run>,
        now: OffsetDateTime,
    ) -> Observed<'a> {
        Observed {
            name: "daily",
            namespace: "ns",
            spec,
            generation: Some(1),
            created: CREATED,
            status,
            runs,
            now,
        }
    }

    fn run(name: &str, scheduled: OffsetDateTime, state: RunState) -> Run {
        Run {
            name: name.into(),
            uid: format!("uid-{name}"),
            scheduled,
            state,
            deleting: false,
        }
    }

    fn ok(uri: &str, at: OffsetDateTime) -> RunState {
        RunState::Succeeded {
            finished: Some(at),
            profile_uri: Some(uri.into()),
        }
    }

    fn creates(d: &Decision) -> Vec<(String, OffsetDateTime, String)> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Create {
                    name,
                    scheduled,
                    output_uri,
                } => Some((name.clone(), *scheduled, output_uri.clone())),
                _ => None,
            })
            .collect()
    }

    fn deletes(d: &Decision) -> Vec<(String, &'static str)> {
        d.actions
            .iter()
            .filter_map(|a| match a {
                Action::Delete { name, reason, .. } => Some((name.clone(), *reason)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn nothing_is_due_before_the_first_time_and_the_next_is_in_the_status() {
        let s = spec("*/5 * * * *", ConcurrencyPolicy::Allow);
        let now = datetime!(2026-01-01 10:03:00 UTC);
        let d = decide(&obs(&s, None, vec![], now));
        assert!(creates(&d).is_empty());
        assert_eq!(
            d.status.next_schedule_time.as_deref(),
            Some("2026-01-01T10:05:00Z")
        );
        assert_eq!(d.requeue, Some(Duration::from_millis(120_250)));
        assert!(status::is_true(&d.status.conditions, READY));
    }

    #[test]
    fn a_due_time_creates_one_run_named_and_templated_by_it() {
        let s = spec("*/5 * * * *", ConcurrencyPolicy::Allow);
        let now = datetime!(2026-01-01 10:05:07 UTC);
        let d = decide(&obs(&s, None, vec![], now));
        let t = datetime!(2026-01-01 10:05:00 UTC);
        assert_eq!(
            creates(&d),
            [(
                format!("daily-{}", t.unix_timestamp() / 60),
                t,
                "s3://b/profiles/2026-01-01/100500.json".to_string()
            )]
        );
        assert_eq!(
            d.status.last_schedule_time.as_deref(),
            Some("2026-01-01T10:05:00Z")
        );
        assert_eq!(d.status.active_count, 1);
        // Run again with the same observations plus the run: nothing new.
        let runs = vec![run(&creates(&d)[0].0, t, RunState::Active)];
        let d2 = decide(&obs(&s, Some(&d.status), runs, now));
        assert!(creates(&d2).is_empty());
        assert_eq!(d2.status.active_count, 1);
    }

    #[test]
    fn a_restart_between_create_and_status_write_creates_nothing_twice() {
        let s = spec("*/5 * * * *", ConcurrencyPolicy::Allow);
        let now = datetime!(2026-01-01 10:06:00 UTC);
        let t = datetime!(2026-01-01 10:05:00 UTC);
        let name = run_name("daily", t, false);
        // the status never recorded the run, the run exists
        let d = decide(&obs(&s, None, vec![run(&name, t, RunState::Active)], now));
        assert!(creates(&d).is_empty());
        assert_eq!(
            d.status.last_schedule_time.as_deref(),
            Some("2026-01-01T10:05:00Z")
        );
    }

    #[test]
    fn missed_times_give_one_catch_up_run_the_latest() {
        let s = spec("* * * * *", ConcurrencyPolicy::Allow);
        let st = ProfileScheduleStatus {
            last_schedule_time: Some("2026-01-01T10:00:00Z".into()),
            ..Default::default()
        };
        let now = datetime!(2026-01-01 10:30:30 UTC);
        let d = decide(&obs(&s, Some(&st), vec![], now));
        let c = creates(&d);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].1, datetime!(2026-01-01 10:30:00 UTC));
        assert!(d.events.iter().all(|e| e.reason != "TooManyMissedTimes"));
    }

    #[test]
    fn too_many_missed_times_warn_and_still_run_the_latest() {
        let s = spec("* * * * *", ConcurrencyPolicy::Allow);
        let now = datetime!(2026-01-02 10:30:30 UTC);
        let d = decide(&obs(&s, None, vec![], now));
        assert_eq!(creates(&d)[0].1, datetime!(2026-01-02 10:30:00 UTC));
        assert!(
            d.events
                .iter()
                .any(|e| e.warning && e.reason == "TooManyMissedTimes")
        );
    }

    #[test]
    fn the_starting_deadline_skips_a_time_too_late_to_start() {
        let mut s = spec("0 * * * *", ConcurrencyPolicy::Allow);
        s.starting_deadline_seconds = Some(60);
        // 11:00 was due 5 minutes ago: past the deadline
        let d = decide(&obs(&s, None, vec![], datetime!(2026-01-01 11:05:00 UTC)));
        assert!(creates(&d).is_empty());
        // within it
        let d = decide(&obs(&s, None, vec![], datetime!(2026-01-01 11:00:40 UTC)));
        assert_eq!(creates(&d).len(), 1);
    }

    #[test]
    fn forbid_waits_while_a_run_is_active_and_runs_when_it_ends() {
        let s = spec("* * * * *", ConcurrencyPolicy::Forbid);
        let t0 = datetime!(2026-01-01 10:01:00 UTC);
        let st = ProfileScheduleStatus {
            last_schedule_time: Some(rfc3339(t0)),
            ..Default::default()
        };
        let now = datetime!(2026-01-01 10:02:10 UTC);
        let active = run(&run_name("daily", t0, false), t0, RunState::Active);
        let d = decide(&obs(&s, Some(&st), vec![active.clone()], now));
        assert!(creates(&d).is_empty(), "Forbid: no second run");
        assert!(d.events.iter().any(|e| e.reason == "JobAlreadyActive"));
        assert_eq!(d.status.last_schedule_time, st.last_schedule_time);
        // The active run ends: the time it held back runs now.
        let done = Run {
            state: ok("s3://x", now),
            ..active
        };
        let d = decide(&obs(&s, Some(&st), vec![done], now));
        assert_eq!(creates(&d)[0].1, datetime!(2026-01-01 10:02:00 UTC));
        // Allow would have run it beside the active one.
        let s = spec("* * * * *", ConcurrencyPolicy::Allow);
        let active = run(&run_name("daily", t0, false), t0, RunState::Active);
        let d = decide(&obs(&s, Some(&st), vec![active], now));
        assert_eq!(creates(&d).len(), 1);
        assert_eq!(d.status.active_count, 2);
    }

    #[test]
    fn replace_deletes_the_active_run_then_creates() {
        let s = spec("* * * * *", ConcurrencyPolicy::Replace);
        let t0 = datetime!(2026-01-01 10:01:00 UTC);
        let st = ProfileScheduleStatus {
            last_schedule_time: Some(rfc3339(t0)),
            ..Default::default()
        };
        let name = run_name("daily", t0, false);
        let d = decide(&obs(
            &s,
            Some(&st),
            vec![run(&name, t0, RunState::Active)],
            datetime!(2026-01-01 10:02:01 UTC),
        ));
        assert_eq!(deletes(&d), [(name, "replaced")]);
        assert_eq!(creates(&d).len(), 1);
        assert_eq!(d.status.active_count, 1);
    }

    #[test]
    fn history_keeps_the_newest_finished_runs_per_outcome() {
        let mut s = spec("0 0 1 1 *", ConcurrencyPolicy::Allow);
        s.successful_jobs_history_limit = Some(2);
        let t = |m: i64| CREATED + time::Duration::minutes(m);
        let runs = vec![
            run("s3", t(3), ok("s3://3", t(4))),
            run("s1", t(1), ok("s3://1", t(2))),
            run("f1", t(2), RunState::Failed { finished: None }),
            run("s2", t(2), ok("s3://2", t(3))),
            run("f2", t(5), RunState::Failed { finished: None }),
            run("a", t(6), RunState::Active),
            Run {
                deleting: true,
                ..run("s0", t(0), ok("s3://0", t(1)))
            },
        ];
        let d = decide(&obs(&s, None, runs, t(7)));
        // oldest first, the active one and the one already going untouched; failed default 1
        assert_eq!(
            deletes(&d),
            [
                ("s1".to_string(), "history limit"),
                ("f1".to_string(), "history limit")
            ]
        );
        assert_eq!(
            d.status.last_successful_time.as_deref(),
            Some(&*rfc3339(t(4)))
        );
        s.successful_jobs_history_limit = Some(0);
        s.failed_jobs_history_limit = Some(5);
        let runs = vec![
            run("s1", t(1), ok("s3://1", t(2))),
            run("f1", t(2), RunState::Failed { finished: None }),
        ];
        assert_eq!(
            deletes(&decide(&obs(&s, None, runs, t(7)))),
            [("s1".to_string(), "history limit")]
        );
    }

    #[test]
    fn suspend_creates_nothing_and_resuming_catches_up_once() {
        let mut s = spec("* * * * *", ConcurrencyPolicy::Allow);
        s.suspend = true;
        let st = ProfileScheduleStatus {
            last_schedule_time: Some("2026-01-01T10:00:00Z".into()),
            ..Default::default()
        };
        let now = datetime!(2026-01-01 10:10:30 UTC);
        let d = decide(&obs(&s, Some(&st), vec![], now));
        assert!(creates(&d).is_empty());
        assert_eq!(d.status.next_schedule_time, None);
        assert_eq!(d.requeue, None);
        let c = status::condition(&d.status.conditions, READY).expect("Ready");
        assert_eq!(
            (c.status.as_str(), c.reason.as_str()),
            ("False", "Suspended")
        );
        s.suspend = false;
        let d = decide(&obs(&s, Some(&st), vec![], now));
        assert_eq!(creates(&d).len(), 1);
    }

    #[test]
    fn an_invalid_spec_is_a_condition_and_one_event() {
        for (sched, tz, uri, says) in [
            ("every day", None, "s3://b/p.json", "schedule"),
            (
                "* * * * *",
                Some("Nowhere/Else"),
                "s3://b/p.json",
                "timeZone",
            ),
            ("* * * * *", None, "s3://b/{hour}.json", "{hour}"),
        ] {
            let mut s = spec(sched, ConcurrencyPolicy::Allow);
            s.time_zone = tz.map(str::to_string);
            s.job_template.spec.output.uri = uri.into();
            let d = decide(&obs(&s, None, vec![], datetime!(2026-01-01 11:00:00 UTC)));
            assert!(creates(&d).is_empty());
            let c = status::condition(&d.status.conditions, READY).expect("Ready");
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "InvalidSpec")
            );
            assert!(c.message.contains(says), "{}", c.message);
            assert_eq!(d.events.len(), 1);
            // the same again: no second event
            let d2 = decide(&obs(
                &s,
                Some(&d.status),
                vec![],
                datetime!(2026-01-01 11:01:00 UTC),
            ));
            assert!(d2.events.is_empty());
        }
        let long = "x".repeat(MAX_NAME_LEN + 1);
        let s = spec("* * * * *", ConcurrencyPolicy::Allow);
        let mut o = obs(&s, None, vec![], datetime!(2026-01-01 11:00:00 UTC));
        o.name = &long;
        assert!(creates(&decide(&o)).is_empty());
    }

    #[test]
    fn seconds_schedules_name_runs_by_the_second() {
        let s = spec("*/10 * * * * *", ConcurrencyPolicy::Forbid);
        let d = decide(&obs(&s, None, vec![], datetime!(2026-01-01 10:00:25 UTC)));
        let t = datetime!(2026-01-01 10:00:20 UTC);
        assert_eq!(creates(&d)[0].0, format!("daily-{}", t.unix_timestamp()));
        assert_eq!(d.requeue, Some(Duration::from_millis(5_250)));
    }

    #[test]
    fn each_new_success_is_compared_once_with_the_last_baseline() {
        let s = spec("0 0 1 1 *", ConcurrencyPolicy::Allow);
        let t = |m: i64| CREATED + time::Duration::minutes(m);
        // first success: the baseline, nothing to compare
        let d = decide(&obs(
            &s,
            None,
            vec![run("r1", t(1), ok("s3://1", t(2)))],
            t(3),
        ));
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::CompareDrift { .. }))
        );
        let base = d.status.last_profile.clone().expect("baseline");
        assert_eq!(
            (base.job.as_str(), base.profile_uri.as_str()),
            ("r1", "s3://1")
        );
        // a second success: compared with the first
        let runs = vec![
            run("r1", t(1), ok("s3://1", t(2))),
            run("r2", t(4), ok("s3://2", t(5))),
            run("r3", t(6), RunState::Active),
        ];
        let d = decide(&obs(&s, Some(&d.status), runs.clone(), t(7)));
        let cmp: Vec<_> = d
            .actions
            .iter()
            .filter_map(|a| match a {
                Action::CompareDrift { run, previous } => {
                    Some((run.job.clone(), previous.job.clone()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(cmp, [("r2".to_string(), "r1".to_string())]);
        // once compared (the reconciler records r2 as the baseline), not again
        let mut st = d.status.clone();
        st.last_profile = Some(RunProfile {
            job: "r2".into(),
            profile_uri: "s3://2".into(),
            scheduled_time: rfc3339(t(4)),
        });
        let d = decide(&obs(&s, Some(&st), runs.clone(), t(8)));
        assert!(
            !d.actions
                .iter()
                .any(|a| matches!(a, Action::CompareDrift { .. }))
        );
        // disabled: never compared
        let mut off = s.clone();
        off.drift = Some(DriftSpec {
            enabled: Some(false),
            thresholds: None,
        });
        let d = decide(&obs(&off, None, runs, t(8)));
        assert!(d.status.last_profile.is_none());
    }
}
