//! Cron expressions in a time zone (croner over jiff, with jiff's bundled time zone database, so
//! no /usr/share/zoneinfo is needed), and the scheduled-time placeholders of an output URI.

use croner::Cron;
use croner::parser::{CronParser, Seconds, Year};
use jiff::Timestamp;
use jiff::tz::TimeZone;
use time::OffsetDateTime;

/// Why a schedule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule `{0}`: {1}")]
    Cron(String, String),
    #[error("timeZone `{0}` is not an IANA time zone name")]
    TimeZone(String),
    #[error("output.uri `{0}`: {1}")]
    Template(String, String),
}

/// A parsed schedule: the cron expression and the zone it is read in.
#[derive(Debug, Clone)]
pub struct Schedule {
    cron: Cron,
    tz: TimeZone,
    /// The expression has a seconds field: runs are named by the second, not the minute.
    pub has_seconds: bool,
}

impl Schedule {
    /// Parses `expr` (5 fields, 6 with leading seconds, or an @-macro) in zone `tz` (IANA name;
    /// `None` is UTC).
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, ScheduleError> {
        let expr = expr.trim();
        // CronJob refuses CRON_TZ=/TZ= prefixes in favour of timeZone; so do we (croner would
        // call them illegal characters, which says less).
        if expr.starts_with("TZ=") || expr.starts_with("CRON_TZ=") {
            return Err(ScheduleError::Cron(
                expr.into(),
                "set the time zone with spec.timeZone, not in the schedule".into(),
            ));
        }
        let fields = expr.split_whitespace().count();
        if !expr.starts_with('@') && !(5..=6).contains(&fields) {
            return Err(ScheduleError::Cron(
                expr.into(),
                format!("{fields} fields; a schedule has 5 (or 6, with leading seconds)"),
            ));
        }
        let cron = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(expr)
            .map_err(|e| ScheduleError::Cron(expr.into(), e.to_string()))?;
        let tz = match tz {
            None => TimeZone::UTC,
            Some(name) => {
                TimeZone::get(name).map_err(|_| ScheduleError::TimeZone(name.to_string()))?
            }
        };
        Ok(Schedule {
            cron,
            tz,
            has_seconds: fields == 6,
        })
    }

    /// The first scheduled time strictly after `t`.
    pub fn next_after(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let z = to_jiff(t)?.to_zoned(self.tz.clone());
        let next = self.cron.find_next_occurrence(&z, false).ok()?;
        from_jiff(next.timestamp())
    }

    /// The last scheduled time at or before `t`.
    pub fn latest_at_or_before(&self, t: OffsetDateTime) -> Option<OffsetDateTime> {
        let z = to_jiff(t)?.to_zoned(self.tz.clone());
        let prev = self.cron.find_previous_occurrence(&z, true).ok()?;
        from_jiff(prev.timestamp())
    }

    /// Scheduled times in `(after, until]`, at most `cap` of them (in order), and whether there
    /// were more.
    pub fn times_between(
        &self,
        after: OffsetDateTime,
        until: OffsetDateTime,
        cap: usize,
    ) -> (Vec<OffsetDateTime>, bool) {
        let mut out = Vec::new();
        let mut t = after;
        while let Some(n) = self.next_after(t) {
            if n > until {
                return (out, false);
            }
            if out.len() == cap {
                return (out, true);
            }
            out.push(n);
            t = n;
        }
        (out, false)
    }

    /// `uri` with its placeholders replaced by `at` in this schedule's zone.
    pub fn render(&self, uri: &str, at: OffsetDateTime) -> Result<String, ScheduleError> {
        let z = to_jiff(at)
            .ok_or_else(|| ScheduleError::Template(uri.into(), "time out of range".into()))?
            .to_zoned(self.tz.clone());
        render_template(uri, &z)
    }
}

/// The placeholders an output URI may hold.
pub const PLACEHOLDERS: &[&str] = &["date", "time", "timestamp", "unix"];

fn render_template(uri: &str, z: &jiff::Zoned) -> Result<String, ScheduleError> {
    let mut out = String::with_capacity(uri.len() + 16);
    let mut rest = uri;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| ScheduleError::Template(uri.into(), "a `{` without its `}`".into()))?;
        let name = &after[..close];
        let value = match name {
            "date" => z.strftime("%Y-%m-%d").to_string(),
            "time" => z.strftime("%H%M%S").to_string(),
            "timestamp" => z.strftime("%Y%m%dT%H%M%S%z").to_string(),
            "unix" => z.timestamp().as_second().to_string(),
            other => {
                return Err(ScheduleError::Template(
                    uri.into(),
                    format!(
                        "unknown placeholder `{{{other}}}` (known: {})",
                        PLACEHOLDERS
                            .iter()
                            .map(|p| format!("{{{p}}}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
        };
        out.push_str(&value);
        rest = &after[close + 1..];
    }
    if rest.contains('}') {
        return Err(ScheduleError::Template(
            uri.into(),
            "a `}` without its `{`".into(),
        ));
    }
    out.push_str(rest);
    Ok(out)
}

fn to_jiff(t: OffsetDateTime) -> Option<Timestamp> {
    Timestamp::from_second(t.unix_timestamp()).ok()
}

fn from_jiff(t: Timestamp) -> Option<OffsetDateTime> {
    OffsetDateTime::from_unix_timestamp(t.as_second()).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn five_fields_are_minutes_and_six_add_seconds() {
        let s = Schedule::parse("*/15 * * * *", None).expect("parses");
        assert!(!s.has_seconds);
        let t = datetime!(2026-01-01 10:07:30 UTC);
        assert_eq!(s.next_after(t), Some(datetime!(2026-01-01 10:15:00 UTC)));
        let s = Schedule::parse("*/10 * * * * *", None).expect("parses");
        assert!(s.has_seconds);
        assert_eq!(s.next_after(t), Some(datetime!(2026-01-01 10:07:40 UTC)));
        // strictly after: a time on the schedule is not its own next
        let on = datetime!(2026-01-01 10:07:40 UTC);
        assert_eq!(s.next_after(on), Some(datetime!(2026-01-01 10:07:50 UTC)));
    }

    #[test]
    fn macros_names_and_bad_expressions() {
        let s = Schedule::parse("@daily", None).expect("parses");
        assert_eq!(
            s.next_after(datetime!(2026-01-01 10:00:00 UTC)),
            Some(datetime!(2026-01-02 00:00:00 UTC))
        );
        let s = Schedule::parse("0 9 * JAN MON", None).expect("parses");
        // 2026-01-05 is the first Monday of 2026
        assert_eq!(
            s.next_after(datetime!(2026-01-01 00:00:00 UTC)),
            Some(datetime!(2026-01-05 09:00:00 UTC))
        );
        for bad in [
            "* * * *",
            "* * * * * * *",
            "61 * * * *",
            "nonsense",
            "CRON_TZ=UTC * * * * *",
        ] {
            assert!(
                matches!(Schedule::parse(bad, None), Err(ScheduleError::Cron(..))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_schedule_is_read_in_its_time_zone() {
        // 09:00 in Berlin is 08:00 UTC in winter, 07:00 in summer
        let s = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parses");
        assert_eq!(
            s.next_after(datetime!(2026-01-10 00:00:00 UTC)),
            Some(datetime!(2026-01-10 08:00:00 UTC))
        );
        assert_eq!(
            s.next_after(datetime!(2026-07-10 00:00:00 UTC)),
            Some(datetime!(2026-07-10 07:00:00 UTC))
        );
        assert_eq!(
            Schedule::parse("0 9 * * *", Some("Mars/Olympus")).err(),
            Some(ScheduleError::TimeZone("Mars/Olympus".into()))
        );
    }

    #[test]
    fn daylight_saving_gaps_and_folds_run_once() {
        // Berlin, 2026-03-29: 02:00-03:00 does not exist, and 02:30 runs at 03:00 (01:00 UTC).
        // 2026-10-25: 02:00-03:00 comes twice, and 02:30 runs at the first (00:30 UTC), once.
        let s = Schedule::parse("30 2 * * *", Some("Europe/Berlin")).expect("parses");
        assert_eq!(
            s.next_after(datetime!(2026-03-28 12:00:00 UTC)),
            Some(datetime!(2026-03-29 01:00:00 UTC))
        );
        let autumn = s.next_after(datetime!(2026-10-24 12:00:00 UTC));
        assert_eq!(autumn, Some(datetime!(2026-10-25 00:30:00 UTC)));
        assert_eq!(
            autumn.and_then(|a| s.next_after(a)),
            Some(datetime!(2026-10-26 01:30:00 UTC))
        );
    }

    #[test]
    fn times_between_is_half_open_and_capped() {
        let s = Schedule::parse("* * * * *", None).expect("parses");
        let a = datetime!(2026-01-01 10:00:00 UTC);
        let (t, more) = s.times_between(a, datetime!(2026-01-01 10:03:00 UTC), 10);
        assert_eq!(
            t,
            [
                datetime!(2026-01-01 10:01:00 UTC),
                datetime!(2026-01-01 10:02:00 UTC),
                datetime!(2026-01-01 10:03:00 UTC)
            ]
        );
        assert!(!more);
        let (t, more) = s.times_between(a, datetime!(2026-01-01 12:00:00 UTC), 5);
        assert_eq!((t.len(), more), (5, true));
        assert_eq!(
            s.latest_at_or_before(datetime!(2026-01-01 10:03:00 UTC)),
            Some(datetime!(2026-01-01 10:03:00 UTC))
        );
        assert_eq!(
            s.latest_at_or_before(datetime!(2026-01-01 10:03:59 UTC)),
            Some(datetime!(2026-01-01 10:03:00 UTC))
        );
    }

    #[test]
    fn placeholders_take_the_scheduled_time_in_the_zone() {
        let s = Schedule::parse("0 9 * * *", Some("Europe/Berlin")).expect("parses");
        let at = datetime!(2026-03-01 08:00:00 UTC);
        assert_eq!(
            s.render("s3://b/p/{date}/{time}.json", at)
                .expect("renders"),
            "s3://b/p/2026-03-01/090000.json"
        );
        assert_eq!(
            s.render("s3://b/{timestamp}-{unix}.json", at)
                .expect("renders"),
            format!("s3://b/20260301T090000+0100-{}.json", at.unix_timestamp())
        );
        assert_eq!(
            s.render("s3://b/plain.json", at).expect("renders"),
            "s3://b/plain.json"
        );
        for bad in [
            "s3://b/{hour}.json",
            "s3://b/{date.json",
            "s3://b/date}.json",
        ] {
            assert!(
                matches!(s.render(bad, at), Err(ScheduleError::Template(..))),
                "{bad}"
            );
        }
    }
}
