//! Helpers for the status record: conditions in the Kubernetes convention, task sets as index
//! ranges, and the bounds that keep a status small enough for etcd at any scale.

use crate::crd::{Condition, TaskFailure};
use std::collections::BTreeSet;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Condition types.
pub const ACCEPTED: &str = "Accepted";
pub const RUNNING: &str = "Running";
pub const MERGING: &str = "Merging";
pub const SUSPENDED: &str = "Suspended";
pub const SUCCEEDED: &str = "Succeeded";
pub const FAILED: &str = "Failed";
pub const READY: &str = "Ready";

/// Task failures kept in the status (the full table is in object storage).
pub const MAX_LAST_FAILURES: usize = 10;
/// Longest index-range string in the status. 100,000 tasks completing in a random order could
/// otherwise need ~600 KB; past this the string is cut and says how many tasks it holds.
pub const MAX_RANGES_BYTES: usize = 4096;
/// Longest condition or failure message.
pub const MAX_MESSAGE_BYTES: usize = 1024;

/// RFC 3339 in UTC with second precision, as Kubernetes writes times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t
        .to_offset(time::UtcOffset::UTC)
        .replace_nanosecond(0)
        .unwrap_or(t);
    t.format(&Rfc3339)
        .unwrap_or_else(|_| t.unix_timestamp().to_string())
}

/// Parses an RFC 3339 time written by [`rfc3339`] (or by anyone else).
pub fn parse_time(s: &str) -> Option<OffsetDateTime> {
    OffsetDateTime::parse(s, &Rfc3339).ok()
}

/// Sets a condition, keeping its `lastTransitionTime` unless its status changes. Returns true
/// when anything changed.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
    now: OffsetDateTime,
    generation: Option<i64>,
) -> bool {
    let status = if status { "True" } else { "False" };
    // Whatever a message quotes (a cluster's error, an address), a Spark Connect token in it
    // is never written to the status.
    let message = truncate(
        &crate::backend::spark::connect::redact(message),
        MAX_MESSAGE_BYTES,
    );
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            let before = c.clone();
            if c.status != status {
                c.last_transition_time = rfc3339(now);
            }
            c.status = status.to_string();
            c.reason = reason.to_string();
            c.message = message;
            c.observed_generation = generation;
            *c != before
        }
        None => {
            conditions.push(Condition {
                type_: type_.to_string(),
                status: status.to_string(),
                reason: reason.to_string(),
                message,
                last_transition_time: rfc3339(now),
                observed_generation: generation,
            });
            true
        }
    }
}

/// The condition of a type, if set.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// True when the condition is set and `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Parses Kubernetes' index-range format (`"1,3-5,7"`, as in a Job's `completedIndexes`).
/// Malformed parts are skipped: this reads what the API server wrote.
pub fn parse_ranges(s: &str) -> BTreeSet<u32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<u32>(), b.parse::<u32>()) {
                    out.extend(a..=b);
                }
            }
            None => {
                if let Ok(i) = part.parse::<u32>() {
                    out.insert(i);
                }
            }
        }
    }
    out
}

/// Index ranges of a set of tasks, cut to [`MAX_RANGES_BYTES`]: a cut string ends with
/// `",… (N tasks)"` so a reader knows it is incomplete and how many there are.
pub fn bounded_ranges(tasks: &BTreeSet<u32>) -> Option<String> {
    if tasks.is_empty() {
        return None;
    }
    let ids: Vec<u32> = tasks.iter().copied().collect();
    let full = truthound_profile::profile::index_ranges(&ids);
    if full.len() <= MAX_RANGES_BYTES {
        return Some(full);
    }
    let suffix = format!(",… ({} tasks)", ids.len());
    let budget = MAX_RANGES_BYTES - suffix.len();
    let cut = full[..budget].rfind(',').unwrap_or(0);
    Some(format!("{}{suffix}", &full[..cut]))
}

/// Whether an index-range string was cut by [`bounded_ranges`] (it then lists only some of the
/// tasks, so it must not be read as the whole set).
pub fn is_cut(ranges: &str) -> bool {
    ranges.ends_with(" tasks)") && ranges.contains(",… (")
}

/// Appends failures and keeps the last [`MAX_LAST_FAILURES`], dropping exact repeats.
pub fn push_failures(list: &mut Vec<TaskFailure>, new: impl IntoIterator<Item = TaskFailure>) {
    for f in new {
        let f = TaskFailure {
            message: truncate(
                &crate::backend::spark::connect::redact(&f.message),
                MAX_MESSAGE_BYTES,
            ),
            ..f
        };
        if list
            .iter()
            .any(|g| g.task == f.task && g.reason == f.reason && g.message == f.message)
        {
            continue;
        }
        list.push(f);
    }
    let excess = list.len().saturating_sub(MAX_LAST_FAILURES);
    list.drain(..excess);
}

/// Cuts a string to at most `max` bytes on a character boundary, marking the cut.
pub fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max.saturating_sub(3);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> OffsetDateTime {
        parse_time(s).expect("time")
    }

    #[test]
    fn ranges_round_trip() {
        let set: BTreeSet<u32> = [0, 1, 2, 5, 7, 8].into_iter().collect();
        let s = bounded_ranges(&set).expect("ranges");
        assert_eq!(s, "0-2,5,7-8");
        assert_eq!(parse_ranges(&s), set);
        assert_eq!(
            parse_ranges(" 3 , 9-10,x,4-"),
            [3, 9, 10].into_iter().collect()
        );
        assert_eq!(bounded_ranges(&BTreeSet::new()), None);
    }

    #[test]
    fn ranges_are_bounded_and_say_how_many() {
        let every_other: BTreeSet<u32> = (0..100_000).step_by(2).collect();
        let s = bounded_ranges(&every_other).expect("ranges");
        assert!(s.len() <= MAX_RANGES_BYTES + 4, "{}", s.len());
        assert!(s.ends_with(",… (50000 tasks)"), "{s}");
        assert!(s.starts_with("0,2,4,"));
    }

    #[test]
    fn condition_transition_time_moves_only_on_status_change() {
        let mut c = Vec::new();
        let t0 = t("2026-01-01T00:00:00Z");
        let t1 = t("2026-01-01T00:01:00Z");
        assert!(set_condition(
            &mut c,
            RUNNING,
            true,
            "Started",
            "m",
            t0,
            Some(1)
        ));
        assert!(!set_condition(
            &mut c,
            RUNNING,
            true,
            "Started",
            "m",
            t1,
            Some(1)
        ));
        assert!(set_condition(
            &mut c,
            RUNNING,
            true,
            "Progress",
            "m2",
            t1,
            Some(1)
        ));
        assert_eq!(c[0].last_transition_time, "2026-01-01T00:00:00Z");
        assert!(set_condition(
            &mut c,
            RUNNING,
            false,
            "Done",
            "",
            t1,
            Some(2)
        ));
        assert_eq!(c[0].last_transition_time, "2026-01-01T00:01:00Z");
        assert_eq!(c[0].observed_generation, Some(2));
        assert!(!is_true(&c, RUNNING));
    }

    #[test]
    fn failures_keep_the_last_ten_without_repeats() {
        let mut list = Vec::new();
        let f = |task| TaskFailure {
            task,
            reason: "Transient".into(),
            message: "x".repeat(5000),
            time: "2026-01-01T00:00:00Z".into(),
        };
        push_failures(&mut list, (0..15).map(f));
        push_failures(&mut list, [f(14)]);
        assert_eq!(list.len(), MAX_LAST_FAILURES);
        assert_eq!(list[0].task, 5);
        assert!(list[0].message.len() <= MAX_MESSAGE_BYTES);
    }
}
