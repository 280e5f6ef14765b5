//! Webhook notifications (`spec.notify`): which are due, their body and signature, and their
//! delivery with retries.
//!
//! Level-triggered like the rest of the reconciler: `status.notifications` is the record of what
//! was sent. Each reconcile adds the notifications the status now calls for ([`record`]), sends
//! those that are due, records each attempt ([`attempted`]) and says when to come back for the
//! rest ([`next_due`]). A notification is therefore delivered at least once: a crash between a
//! delivery and its record sends it again, with the same `X-Truthound-Delivery` id, so a receiver
//! can drop the repeat. A delivery that keeps failing is given up after `maxAttempts`, with an
//! Event and a metric; it never fails the job.

use std::time::Duration;

use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::crd::{
    NotificationStatus, NotifyEvent, NotifySpec, Phase, ProfileJob, ProfileJobStatus, WebhookSpec,
};
use crate::status::rfc3339;

pub const PENDING: &str = "Pending";
pub const DELIVERED: &str = "Delivered";
pub const GIVEN_UP: &str = "GivenUp";

/// Events sent when a webhook names none.
pub const DEFAULT_EVENTS: [NotifyEvent; 3] = [
    NotifyEvent::Started,
    NotifyEvent::Succeeded,
    NotifyEvent::Failed,
];
pub const DEFAULT_PROGRESS_STEP: u32 = 25;
pub const DEFAULT_TIMEOUT_SECONDS: u32 = 10;
pub const DEFAULT_MAX_ATTEMPTS: u32 = 10;
/// The longest pause between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// Bound on `lastError` in the status (a receiver's error page is not ours to store).
const MAX_ERROR_CHARS: usize = 256;

/// The header carrying the body's HMAC-SHA256, as `sha256=<hex>`.
pub const SIGNATURE_HEADER: &str = "X-Truthound-Signature";
/// The header carrying the event (`Started`, `Progress50`, `Succeeded`, `Failed`).
pub const EVENT_HEADER: &str = "X-Truthound-Event";
/// The header carrying a delivery's id, the same on every attempt: `<job uid>/<webhook>/<event>`.
pub const DELIVERY_HEADER: &str = "X-Truthound-Delivery";

/// A webhook's events, defaults applied.
pub fn events_of(w: &WebhookSpec) -> Vec<NotifyEvent> {
    w.events.clone().unwrap_or_else(|| DEFAULT_EVENTS.to_vec())
}

/// The events the status calls for now, for one webhook, in the order they happened.
pub fn wanted(w: &WebhookSpec, status: &ProfileJobStatus) -> Vec<String> {
    let events = events_of(w);
    let mut out = Vec::new();
    // Started: the job was accepted and began (one refused as invalid never started, and says
    // only Failed).
    if events.contains(&NotifyEvent::Started) && status.start_time.is_some() {
        out.push("Started".to_owned());
    }
    match status.phase {
        Some(Phase::Running | Phase::Merging) if events.contains(&NotifyEvent::Progress) => {
            if let Some(m) = progress_milestone(w, status) {
                out.push(format!("Progress{m}"));
            }
        }
        Some(Phase::Succeeded) if events.contains(&NotifyEvent::Succeeded) => {
            out.push("Succeeded".to_owned())
        }
        Some(Phase::Failed) if events.contains(&NotifyEvent::Failed) => {
            out.push("Failed".to_owned())
        }
        _ => {}
    }
    out
}

/// The highest multiple of the step that the finished tasks reached, below 100 (the end is
/// Succeeded or Failed, not a progress notification).
fn progress_milestone(w: &WebhookSpec, status: &ProfileJobStatus) -> Option<u32> {
    let t = status.tasks.as_ref()?;
    if t.total == 0 {
        return None;
    }
    let step = w
        .progress_step_percent
        .unwrap_or(DEFAULT_PROGRESS_STEP)
        .clamp(1, 99);
    let done = u64::from(t.succeeded + t.failed) * 100 / u64::from(t.total);
    let m = (done / u64::from(step) * u64::from(step)) as u32;
    (m > 0 && m < 100).then_some(m)
}

/// The record with the notifications the status calls for added as pending (due now). A newer
/// progress milestone replaces a pending older one, and the job's end replaces pending progress:
/// a receiver wants to know where the job is, not every step it missed.
pub fn record(spec: &NotifySpec, status: &ProfileJobStatus) -> Vec<NotificationStatus> {
    let mut rec: Vec<NotificationStatus> = status
        .notifications
        .iter()
        .filter(|n| (n.webhook as usize) < spec.webhooks.len())
        .cloned()
        .collect();
    let finished = status.phase.is_some_and(|p| p.is_finished());
    for (i, w) in spec.webhooks.iter().enumerate() {
        let i = i as u32;
        for event in wanted(w, status) {
            if rec.iter().any(|n| n.webhook == i && n.event == event) {
                continue;
            }
            let progress = event.starts_with("Progress");
            if progress || finished {
                // Only the newest progress is worth sending.
                rec.retain(|n| {
                    !(n.webhook == i && n.state == PENDING && n.event.starts_with("Progress"))
                });
            }
            if progress
                && rec
                    .iter()
                    .any(|n| n.webhook == i && n.event.starts_with("Progress") && n.event > event)
            {
                continue;
            }
            rec.push(NotificationStatus {
                webhook: i,
                event,
                state: PENDING.to_owned(),
                attempts: 0,
                last_attempt_time: None,
                next_attempt_time: None,
                last_error: None,
            });
        }
    }
    rec
}

/// Whether a pending notification's next attempt is due at `now`.
pub fn is_due(n: &NotificationStatus, now: OffsetDateTime) -> bool {
    n.state == PENDING && next_time(n).is_none_or(|t| t <= now)
}

fn next_time(n: &NotificationStatus) -> Option<OffsetDateTime> {
    n.next_attempt_time
        .as_deref()
        .and_then(|t| OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339).ok())
}

/// The notifications that may be sent next: each webhook's first pending one, in the order they
/// happened, so that a receiver hears Started before Succeeded even when Started needed retries.
pub fn heads(rec: &[NotificationStatus]) -> Vec<usize> {
    let mut seen = std::collections::BTreeSet::new();
    rec.iter()
        .enumerate()
        .filter(|(_, n)| n.state == PENDING && seen.insert(n.webhook))
        .map(|(i, _)| i)
        .collect()
}

/// How long until the first sendable notification is due (zero if one is due now).
pub fn next_due(rec: &[NotificationStatus], now: OffsetDateTime) -> Option<Duration> {
    heads(rec)
        .into_iter()
        .map(|i| &rec[i])
        .map(|n| match next_time(n) {
            Some(t) if t > now => Duration::try_from(t - now).unwrap_or_default(),
            _ => Duration::ZERO,
        })
        .min()
}

/// The pause after `attempts` failed attempts: 1 s, 2 s, 4 s, … up to a minute.
pub fn backoff(attempts: u32) -> Duration {
    let secs = 1u64 << attempts.saturating_sub(1).min(6);
    Duration::from_secs(secs).min(MAX_BACKOFF)
}

/// What one attempt did to a notification: delivered, pending again after its backoff, or given
/// up after `max_attempts`.
pub fn attempted(
    n: &mut NotificationStatus,
    result: Result<(), String>,
    now: OffsetDateTime,
    max_attempts: u32,
) {
    n.attempts += 1;
    n.last_attempt_time = Some(rfc3339(now));
    match result {
        Ok(()) => {
            n.state = DELIVERED.to_owned();
            n.next_attempt_time = None;
            n.last_error = None;
        }
        Err(e) => {
            n.last_error = Some(e.chars().take(MAX_ERROR_CHARS).collect());
            if n.attempts >= max_attempts.max(1) {
                n.state = GIVEN_UP.to_owned();
                n.next_attempt_time = None;
            } else {
                n.next_attempt_time = Some(rfc3339(now + backoff(n.attempts)));
            }
        }
    }
}

/// The JSON body of a notification.
pub fn body(pj: &ProfileJob, status: &ProfileJobStatus, event: &str, now: OffsetDateTime) -> Value {
    let failed = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Failed" && c.status == "True");
    let (reason, message) = match (status.phase, failed) {
        (Some(Phase::Failed), Some(c)) => (Some(c.reason.clone()), Some(c.message.clone())),
        _ => (None, None),
    };
    let duration = status
        .result
        .as_ref()
        .map(|r| r.duration_seconds)
        .or_else(|| {
            let start = status.start_time.as_deref()?;
            let start =
                OffsetDateTime::parse(start, &time::format_description::well_known::Rfc3339)
                    .ok()?;
            Some((now - start).as_seconds_f64().max(0.0))
        });
    json!({
        "apiVersion": "truthound.io/v1alpha1",
        "kind": "ProfileJobNotification",
        "event": event,
        "time": rfc3339(now),
        "job": {
            "namespace": pj.metadata.namespace,
            "name": pj.metadata.name,
            "uid": pj.metadata.uid,
        },
        "phase": status.phase.map(|p| p.name()),
        "reason": reason,
        "message": message,
        "tasks": status.tasks.as_ref().map(|t| json!({
            "total": t.total, "succeeded": t.succeeded, "failed": t.failed, "running": t.running,
        })),
        "rows": status
            .result
            .as_ref()
            .map(|r| r.rows)
            .or_else(|| status.progress.as_ref().map(|p| p.rows_processed)),
        "durationSeconds": duration,
        "profileUri": status.result.as_ref().map(|r| r.profile_uri.clone()),
        "missingTasks": status.result.as_ref().and_then(|r| r.missing_tasks.clone()),
    })
}

/// `sha256=<hex>` of the body's HMAC-SHA256 under `key` (GitHub's webhook convention).
pub fn signature(key: &[u8], body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, key);
    let tag = ring::hmac::sign(&key, body);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for b in tag.as_ref() {
        use std::fmt::Write as _;
        let _ = write!(hex, "{b:02x}");
    }
    hex
}

/// The URL as shown in events and logs: scheme, host and port only (a path or query may hold a
/// token, as Slack's and many others' hook URLs do).
pub fn shown_url(url: &str) -> String {
    match reqwest::Url::parse(url) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{}://{h}:{p}", u.scheme()),
            (Some(h), None) => format!("{}://{h}", u.scheme()),
            _ => "(invalid URL)".to_owned(),
        },
        Err(_) => "(invalid URL)".to_owned(),
    }
}

/// One delivery to send.
pub struct Delivery<'a> {
    pub url: &'a str,
    pub body: Vec<u8>,
    pub event: &'a str,
    pub id: String,
    /// Extra header from the webhook's Secret.
    pub header: Option<(String, String)>,
    /// HMAC key from the webhook's Secret.
    pub hmac_key: Option<Vec<u8>>,
    pub timeout: Duration,
}

/// POSTs one notification. A 2xx answer is a delivery; anything else is an error saying what
/// happened, without the URL's path or query.
pub async fn send(client: &reqwest::Client, d: &Delivery<'_>) -> Result<(), String> {
    let mut req = client
        .post(d.url)
        .timeout(d.timeout)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .header(EVENT_HEADER, d.event)
        .header(DELIVERY_HEADER, &d.id)
        .body(d.body.clone());
    if let Some((name, value)) = &d.header {
        req = req.header(name.as_str(), value.as_str());
    }
    if let Some(key) = &d.hmac_key {
        req = req.header(SIGNATURE_HEADER, signature(key, &d.body));
    }
    // The answer's body is not read: a receiver's page is none of the operator's business, and
    // reading it would let a receiver make the operator hold whatever it sends.
    let resp = req.send().await.map_err(|e| describe(&e))?;
    let code = resp.status();
    if code.is_success() {
        Ok(())
    } else {
        Err(format!("HTTP {code}"))
    }
}

/// A reqwest error without its URL (which may carry a token).
fn describe(e: &reqwest::Error) -> String {
    let what = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let mut cause = String::new();
    let mut src = std::error::Error::source(e);
    while let Some(s) = src {
        cause = s.to_string();
        src = s.source();
    }
    if cause.is_empty() {
        what.to_owned()
    } else {
        format!("{what}: {cause}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::TaskCounts;

    fn hook(events: Option<Vec<NotifyEvent>>) -> WebhookSpec {
        WebhookSpec {
            url: "http://127.0.0.1:1/hook".into(),
            events,
            progress_step_percent: None,
            timeout_seconds: None,
            max_attempts: None,
            header_secret_ref: None,
            hmac_secret_ref: None,
        }
    }

    fn status(phase: Phase, succeeded: u32, total: u32) -> ProfileJobStatus {
        ProfileJobStatus {
            phase: Some(phase),
            start_time: Some("2026-12-03T00:00:00Z".into()),
            tasks: Some(TaskCounts {
                total,
                succeeded,
                ..TaskCounts::default()
            }),
            ..ProfileJobStatus::default()
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap()
    }

    #[test]
    fn the_default_events_are_start_and_end() {
        let w = hook(None);
        assert_eq!(wanted(&w, &status(Phase::Running, 3, 4)), ["Started"]);
        assert_eq!(
            wanted(&w, &status(Phase::Succeeded, 4, 4)),
            ["Started", "Succeeded"]
        );
        let mut refused = status(Phase::Failed, 0, 0);
        refused.start_time = None;
        assert_eq!(
            wanted(&w, &refused),
            ["Failed"],
            "a job that never ran never started"
        );
    }

    #[test]
    fn progress_is_sent_at_each_step_reached_below_the_end() {
        let mut w = hook(Some(vec![NotifyEvent::Progress]));
        w.progress_step_percent = Some(25);
        assert!(wanted(&w, &status(Phase::Running, 0, 8)).is_empty());
        assert!(wanted(&w, &status(Phase::Running, 1, 8)).is_empty(), "12%");
        assert_eq!(wanted(&w, &status(Phase::Running, 2, 8)), ["Progress25"]);
        assert_eq!(wanted(&w, &status(Phase::Running, 7, 8)), ["Progress75"]);
        assert!(
            wanted(&w, &status(Phase::Merging, 8, 8)).is_empty(),
            "100% is the end's"
        );
        assert!(wanted(&w, &status(Phase::Succeeded, 8, 8)).is_empty());
    }

    #[test]
    fn a_newer_milestone_or_the_end_replaces_pending_progress() {
        let mut w = hook(Some(vec![NotifyEvent::Progress, NotifyEvent::Succeeded]));
        w.progress_step_percent = Some(25);
        let spec = NotifySpec { webhooks: vec![w] };
        let mut s = status(Phase::Running, 2, 8);
        s.notifications = record(&spec, &s);
        assert_eq!(s.notifications.len(), 1);
        assert_eq!(s.notifications[0].event, "Progress25");
        let mut s2 = status(Phase::Running, 6, 8);
        s2.notifications = s.notifications.clone();
        let rec = record(&spec, &s2);
        let events: Vec<&str> = rec.iter().map(|n| n.event.as_str()).collect();
        assert_eq!(
            events,
            ["Progress75"],
            "the pending 25% is not worth sending any more"
        );

        // A delivered milestone stays on record, and is not sent again.
        let mut s3 = status(Phase::Running, 6, 8);
        s3.notifications = rec.clone();
        s3.notifications[0].state = DELIVERED.into();
        assert_eq!(record(&spec, &s3), s3.notifications);

        let mut done = status(Phase::Succeeded, 8, 8);
        done.notifications = rec;
        let events: Vec<String> = record(&spec, &done).into_iter().map(|n| n.event).collect();
        assert_eq!(events, ["Succeeded"]);
    }

    #[test]
    fn a_removed_webhooks_record_goes() {
        let spec = NotifySpec {
            webhooks: vec![hook(None)],
        };
        let mut s = status(Phase::Running, 1, 2);
        s.notifications = record(&spec, &s);
        assert_eq!(s.notifications.len(), 1);
        assert!(record(&NotifySpec::default(), &s).is_empty());
    }

    #[test]
    fn failed_attempts_back_off_then_give_up() {
        let spec = NotifySpec {
            webhooks: vec![hook(None)],
        };
        let s = status(Phase::Succeeded, 1, 1);
        let mut rec = record(&spec, &s);
        let t0 = now();
        assert!(rec.iter().all(|n| is_due(n, t0)));
        assert_eq!(next_due(&rec, t0), Some(Duration::ZERO));
        let n = &mut rec[1];
        attempted(n, Err("HTTP 503 Service Unavailable".into()), t0, 3);
        assert_eq!(n.state, PENDING);
        assert!(!is_due(n, t0));
        assert!(is_due(n, t0 + Duration::from_secs(1)));
        attempted(n, Err("connection failed".into()), t0, 3);
        assert!(!is_due(n, t0 + Duration::from_secs(1)));
        assert!(is_due(n, t0 + Duration::from_secs(2)));
        attempted(n, Err("connection failed".into()), t0, 3);
        assert_eq!(n.state, GIVEN_UP);
        assert_eq!(n.attempts, 3);
        assert!(!is_due(n, t0 + Duration::from_secs(3600)));

        let n = &mut rec[0];
        attempted(n, Err("HTTP 500".into()), t0, 3);
        attempted(n, Ok(()), t0 + Duration::from_secs(1), 3);
        assert_eq!(n.state, DELIVERED);
        assert_eq!(n.last_error, None);
        assert_eq!(next_due(&rec, t0), None, "nothing left to send");
    }

    #[test]
    fn a_webhooks_notifications_go_in_order() {
        let spec = NotifySpec {
            webhooks: vec![hook(None), hook(None)],
        };
        let mut rec = record(&spec, &status(Phase::Succeeded, 1, 1));
        let events: Vec<(u32, &str)> = rec.iter().map(|n| (n.webhook, n.event.as_str())).collect();
        assert_eq!(
            events,
            [
                (0, "Started"),
                (0, "Succeeded"),
                (1, "Started"),
                (1, "Succeeded")
            ]
        );
        assert_eq!(heads(&rec), [0, 2], "each webhook's Started first");
        let t0 = now();
        attempted(&mut rec[0], Err("HTTP 503".into()), t0, 5);
        assert_eq!(heads(&rec), [0, 2], "Succeeded waits for Started's retry");
        assert_eq!(next_due(&rec[..2], t0), Some(Duration::from_secs(1)));
        attempted(&mut rec[0], Ok(()), t0, 5);
        assert_eq!(heads(&rec), [1, 2]);
    }

    #[test]
    fn backoff_doubles_to_a_minute_and_the_default_outlasts_a_receiver_down_for_minutes() {
        let pauses: Vec<u64> = (1..=9).map(|a| backoff(a).as_secs()).collect();
        assert_eq!(pauses, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
        let window: u64 = (1..DEFAULT_MAX_ATTEMPTS)
            .map(|a| backoff(a).as_secs())
            .sum();
        assert!(window >= 240, "{window} s");
    }

    #[test]
    fn the_signature_is_hmac_sha256_in_hex() {
        // RFC 4231 test case 2.
        assert_eq!(
            signature(b"Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn urls_are_shown_without_path_or_query() {
        assert_eq!(
            shown_url("https://hooks.slack.com/services/T000/B000/XXXX?token=1"),
            "https://hooks.slack.com"
        );
        assert_eq!(
            shown_url("http://127.0.0.1:8080/x"),
            "http://127.0.0.1:8080"
        );
        assert_eq!(shown_url("not a url"), "(invalid URL)");
    }

    #[test]
    fn the_body_says_what_ended_and_where_the_profile_is() {
        let mut pj = ProfileJob::new(
            "events",
            serde_json::from_value(json!({
                "dataset": {"uri": "s3://b/d/"}, "output": {"uri": "s3://b/p.json"}
            }))
            .unwrap(),
        );
        pj.metadata.namespace = Some("data".into());
        pj.metadata.uid = Some("u-1".into());
        let mut s = status(Phase::Succeeded, 4, 4);
        s.result = Some(crate::crd::ResultStatus {
            profile_uri: "s3://b/p.json".into(),
            rows: 1000,
            columns: 3,
            duration_seconds: 12.5,
            missing_tasks: None,
        });
        let b = body(&pj, &s, "Succeeded", now());
        assert_eq!(b["event"], "Succeeded");
        assert_eq!(b["job"]["name"], "events");
        assert_eq!(b["job"]["namespace"], "data");
        assert_eq!(b["phase"], "Succeeded");
        assert_eq!(b["rows"], 1000);
        assert_eq!(b["durationSeconds"], 12.5);
        assert_eq!(b["profileUri"], "s3://b/p.json");
        assert_eq!(b["tasks"]["succeeded"], 4);
    }
}
