//! The schedule's reconciler: list the schedule's runs, [`decide`](super::decide::decide), compare
//! profiles when a run succeeded, write the status (server-side apply), then create and delete
//! runs. It shares the ProfileJob controller's [`Context`] (client, event recorder, access
//! policy) and requeues at the next scheduled time.

use super::crd::{DriftStatus, ProfileSchedule, ProfileScheduleStatus};
use super::decide::{self, Action, Observed, Run, RunState, SCHEDULE_LABEL, SCHEDULED_AT};
use crate::crd::{Phase, ProfileJob};
use crate::decide::EventNote;
use crate::reconcile::{Context, Error};
use crate::status::{parse_time, rfc3339};
use futures::{Stream, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube::runtime::controller::Action as Requeue;
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Resource, ResourceExt};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;
use time::OffsetDateTime;
use tracing::{info, warn};

/// The controller's error policy: retry after a delay (the decisions are idempotent).
pub fn error_policy(ps: Arc<ProfileSchedule>, err: &Error, ctx: Arc<Context>) -> Requeue {
    warn!(schedule = %ps.name_any(), error = %err, "schedule reconcile failed");
    if let Some(m) = &ctx.metrics {
        m.reconcile_failed(err.metric_label());
    }
    Requeue::requeue(Duration::from_secs(15))
}

/// A run as observed, from its ProfileJob.
fn run_of(pj: &ProfileJob) -> Run {
    let created = pj
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let scheduled = pj
        .annotations()
        .get(SCHEDULED_AT)
        .and_then(|s| parse_time(s))
        .unwrap_or(created);
    let status = pj.status.as_ref();
    let finished = status
        .and_then(|s| s.completion_time.as_deref())
        .and_then(parse_time);
    let state = match status.and_then(|s| s.phase) {
        Some(Phase::Succeeded) => RunState::Succeeded {
            finished,
            profile_uri: status
                .and_then(|s| s.result.as_ref())
                .map(|r| r.profile_uri.clone()),
        },
        Some(Phase::Failed) => RunState::Failed { finished },
        _ => RunState::Active,
    };
    Run {
        name: pj.name_any(),
        uid: pj.metadata.uid.clone().unwrap_or_default(),
        scheduled,
        state,
        deleting: pj.metadata.deletion_timestamp.is_some(),
    }
}

/// One reconcile of one ProfileSchedule.
pub async fn reconcile(ps: Arc<ProfileSchedule>, ctx: Arc<Context>) -> Result<Requeue, Error> {
    let ns = ps
        .namespace()
        .ok_or_else(|| Error::Invalid("a ProfileSchedule must be namespaced".into()))?;
    let name = ps.name_any();
    // Read afresh: the cache may not have this reconciler's own last status write yet, and a
    // stale lastScheduleTime or lastProfile would repeat an event (a run is never created twice:
    // its name is its scheduled time).
    let schedules: Api<ProfileSchedule> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(ps) = schedules.get_opt(&name).await? else {
        return Ok(Requeue::await_change());
    };
    let uid = ps.metadata.uid.clone().unwrap_or_default();
    let api: Api<ProfileJob> = Api::namespaced(ctx.client.clone(), &ns);
    // Runs are found by label and kept only when the schedule is their controller: a label
    // alone is anyone's to set.
    let children: Vec<ProfileJob> = api
        .list(&ListParams::default().labels(&format!("{SCHEDULE_LABEL}={name}")))
        .await?
        .items
        .into_iter()
        .filter(|pj| crate::backend::local::owned_by(&pj.metadata, &uid))
        .collect();
    let by_name: BTreeMap<String, &ProfileJob> =
        children.iter().map(|pj| (pj.name_any(), pj)).collect();
    let now = OffsetDateTime::now_utc();
    let created = ps
        .metadata
        .creation_timestamp
        .as_ref()
        .and_then(|t| OffsetDateTime::from_unix_timestamp(t.0.as_second()).ok())
        .unwrap_or(now);
    let obs = Observed {
        name: &name,
        namespace: &ns,
        spec: &ps.spec,
        generation: ps.metadata.generation,
        created,
        status: ps.status.as_ref(),
        runs: children.iter().map(run_of).collect(),
        now,
    };
    let mut decision = decide::decide(&obs);

    // Drift first, so that its result is in the one status write.
    for action in &decision.actions {
        if let Action::CompareDrift { run, previous } = action {
            let Some(pj) = by_name.get(&run.job) else {
                continue;
            };
            let note = match super::drift::compare(pj, &ctx, &ps.spec, run, previous).await {
                Ok(d) => {
                    let note = drift_note(&d);
                    decision.status.last_drift = Some(d);
                    note
                }
                Err(e) => EventNote {
                    warning: true,
                    reason: "DriftCheckFailed".into(),
                    message: format!(
                        "cannot compare {} with {}: {e}",
                        run.profile_uri, previous.profile_uri
                    ),
                },
            };
            // Compared (or failed to): the next success is compared with this one.
            decision.status.last_profile = Some(run.clone());
            decision.events.push(note);
        }
    }

    write_status(&ps, &ctx, &decision.status).await?;
    for e in &decision.events {
        publish(&ps, &ctx, e).await;
    }
    for action in &decision.actions {
        match action {
            Action::CompareDrift { .. } => {}
            Action::Create {
                name: run,
                scheduled,
                output_uri,
            } => {
                let pj = run_job(&ps, run, *scheduled, output_uri);
                match api.create(&PostParams::default(), &pj).await {
                    Ok(_) => {
                        info!(schedule = %name, run = %run, "created run");
                        let msg = format!(
                            "created ProfileJob {run} (scheduled {})",
                            rfc3339(*scheduled)
                        );
                        publish(
                            &ps,
                            &ctx,
                            &EventNote {
                                warning: false,
                                reason: "SuccessfulCreate".into(),
                                message: msg,
                            },
                        )
                        .await;
                    }
                    // Created before (a restart between creating and writing the status).
                    Err(kube::Error::Api(s)) if s.code == 409 => {}
                    Err(e) => {
                        publish(
                            &ps,
                            &ctx,
                            &EventNote {
                                warning: true,
                                reason: "FailedCreate".into(),
                                message: format!("cannot create ProfileJob {run}: {e}"),
                            },
                        )
                        .await;
                        return Err(e.into());
                    }
                }
            }
            Action::Delete {
                name: run,
                uid,
                reason,
            } => {
                let dp = DeleteParams {
                    propagation_policy: Some(PropagationPolicy::Background),
                    preconditions: Some(kube::api::Preconditions {
                        uid: Some(uid.clone()),
                        resource_version: None,
                    }),
                    ..DeleteParams::default()
                };
                match api.delete(run, &dp).await {
                    Ok(_) => {
                        publish(
                            &ps,
                            &ctx,
                            &EventNote {
                                warning: false,
                                reason: "SuccessfulDelete".into(),
                                message: format!("deleted ProfileJob {run} ({reason})"),
                            },
                        )
                        .await;
                    }
                    Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(match decision.requeue {
        Some(d) => Requeue::requeue(d),
        None => Requeue::await_change(),
    })
}

/// The ProfileJob of the run scheduled at `scheduled`.
pub fn run_job(
    ps: &ProfileSchedule,
    name: &str,
    scheduled: OffsetDateTime,
    output_uri: &str,
) -> ProfileJob {
    let template = &ps.spec.job_template;
    let meta = template.metadata.clone().unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(SCHEDULE_LABEL.into(), ps.name_any());
    let mut annotations = meta.annotations;
    annotations.insert(SCHEDULED_AT.into(), rfc3339(scheduled));
    let mut spec = template.spec.clone();
    spec.output.uri = output_uri.to_string();
    // Drift between runs compares sketches when the profiles carry them.
    spec.profile.keep_state.get_or_insert(true);
    let mut pj = ProfileJob::new(name, spec);
    pj.metadata = ObjectMeta {
        name: Some(name.into()),
        namespace: ps.namespace(),
        labels: Some(labels),
        annotations: Some(annotations),
        owner_references: Some(vec![OwnerReference {
            api_version: ProfileSchedule::api_version(&()).into(),
            kind: ProfileSchedule::kind(&()).into(),
            name: ps.name_any(),
            uid: ps.metadata.uid.clone().unwrap_or_default(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }]),
        ..ObjectMeta::default()
    };
    pj
}

fn drift_note(d: &DriftStatus) -> EventNote {
    if d.drifted_columns.is_empty() {
        EventNote {
            warning: false,
            reason: "NoDrift".into(),
            message: format!("{} against {}: no column drifted", d.job, d.previous_job),
        }
    } else {
        EventNote {
            warning: true,
            reason: "DriftDetected".into(),
            message: format!(
                "{} against {}: columns drifted: {}. {}",
                d.job,
                d.previous_job,
                d.drifted_columns.join(", "),
                d.summary
            ),
        }
    }
}

/// Writes the status with server-side apply, only when it changed.
async fn write_status(
    ps: &ProfileSchedule,
    ctx: &Context,
    status: &ProfileScheduleStatus,
) -> Result<(), Error> {
    crate::reconcile::apply_status(ctx, ps, ps.status.as_ref(), status).await
}

async fn publish(ps: &ProfileSchedule, ctx: &Context, e: &EventNote) {
    let event = Event {
        type_: if e.warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: e.reason.clone(),
        note: Some(crate::status::truncate(&e.message, 1000)),
        action: "Schedule".into(),
        secondary: None,
    };
    // An event is best-effort: failing to record one must not fail the reconcile.
    if let Err(err) = ctx.recorder.publish(&event, &ps.object_ref(&())).await {
        warn!(schedule = %ps.name_any(), error = %err, "cannot publish event");
    }
}

/// The runs' watch events that matter to their schedule: a run's phase changed, it started being
/// deleted, or it is gone. A running ProfileJob's status changes with every progress report;
/// reconciling its schedule for each would list the runs (and say `JobAlreadyActive` again) for
/// nothing. Deletions always pass, so that a run held back by `Forbid` starts as soon as the
/// active one is gone.
pub fn run_triggers<S>(events: S) -> impl Stream<Item = Result<ProfileJob, watcher::Error>>
where
    S: Stream<Item = Result<watcher::Event<ProfileJob>, watcher::Error>>,
{
    let mut seen: HashMap<String, (Option<Phase>, bool)> = HashMap::new();
    events.filter_map(move |event| {
        let out = match event {
            Ok(watcher::Event::Apply(pj) | watcher::Event::InitApply(pj)) => {
                let key = pj.metadata.uid.clone().unwrap_or_else(|| pj.name_any());
                let state = (
                    pj.status.as_ref().and_then(|s| s.phase),
                    pj.metadata.deletion_timestamp.is_some(),
                );
                (seen.insert(key, state) != Some(state)).then_some(Ok(pj))
            }
            Ok(watcher::Event::Delete(pj)) => {
                let key = pj.metadata.uid.clone().unwrap_or_else(|| pj.name_any());
                seen.remove(&key);
                Some(Ok(pj))
            }
            Ok(watcher::Event::Init | watcher::Event::InitDone) => None,
            Err(e) => Some(Err(e)),
        };
        futures::future::ready(out)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::ProfileJobStatus;
    use futures::StreamExt;
    use serde_json::json;

    fn pj(uid: &str, phase: Option<Phase>, rows: u64) -> ProfileJob {
        let mut pj: ProfileJob = serde_json::from_value(json!({
            "apiVersion": "truthound.io/v1alpha1", "kind": "ProfileJob",
            "metadata": {"name": uid, "uid": uid},
            "spec": {"dataset": {"uri": "s3://b/d/"}, "output": {"uri": "s3://b/p.json"}},
        }))
        .expect("ProfileJob");
        pj.status = Some(ProfileJobStatus {
            phase,
            attempt: Some(rows as i32),
            ..ProfileJobStatus::default()
        });
        pj
    }

    #[test]
    fn a_run_is_the_template_owned_labelled_and_annotated() {
        let mut ps: ProfileSchedule = serde_json::from_value(json!({
            "apiVersion": "truthound.io/v1alpha1", "kind": "ProfileSchedule",
            "metadata": {"name": "daily", "namespace": "data", "uid": "u-1"},
            "spec": {"schedule": "@daily", "jobTemplate": {
                "metadata": {"labels": {"team": "data", SCHEDULE_LABEL: "forged"},
                             "annotations": {"note": "x"}},
                "spec": {"dataset": {"uri": "s3://b/d/"},
                         "output": {"uri": "s3://b/{date}.json"}, "suspend": true}}},
        }))
        .expect("ProfileSchedule");
        ps.status = None;
        let at = time::macros::datetime!(2026-01-02 00:00:00 UTC);
        let pj = run_job(&ps, "daily-29453760", at, "s3://b/2026-01-02.json");
        assert_eq!(pj.metadata.name.as_deref(), Some("daily-29453760"));
        assert_eq!(pj.metadata.namespace.as_deref(), Some("data"));
        let labels = pj.metadata.labels.clone().unwrap_or_default();
        // the schedule's label is the operator's, whatever the template says
        assert_eq!(
            labels.get(SCHEDULE_LABEL).map(String::as_str),
            Some("daily")
        );
        assert_eq!(labels.get("team").map(String::as_str), Some("data"));
        let ann = pj.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            ann.get(SCHEDULED_AT).map(String::as_str),
            Some("2026-01-02T00:00:00Z")
        );
        assert_eq!(ann.get("note").map(String::as_str), Some("x"));
        let owner = &pj.metadata.owner_references.clone().unwrap_or_default()[0];
        assert_eq!(
            (owner.kind.as_str(), owner.uid.as_str(), owner.controller),
            ("ProfileSchedule", "u-1", Some(true))
        );
        assert!(crate::backend::local::owned_by(&pj.metadata, "u-1"));
        assert_eq!(pj.spec.output.uri, "s3://b/2026-01-02.json");
        assert!(pj.spec.suspend, "the rest of the template as it is");
        assert_eq!(run_of(&pj).scheduled, at);
        assert_eq!(run_of(&pj).state, RunState::Active);
    }

    #[test]
    fn only_phase_changes_and_deletions_wake_the_schedule() {
        let running = Some(Phase::Running);
        let mut deleting = pj("a", Some(Phase::Succeeded), 3);
        deleting.metadata.deletion_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(jiff::Timestamp::UNIX_EPOCH),
        );
        let events = vec![
            Ok(watcher::Event::Init),
            Ok(watcher::Event::InitApply(pj("a", None, 0))),
            Ok(watcher::Event::InitDone),
            Ok(watcher::Event::Apply(pj("a", running, 1))),
            // progress only: the same phase
            Ok(watcher::Event::Apply(pj("a", running, 2))),
            Ok(watcher::Event::Apply(pj("b", running, 1))),
            Ok(watcher::Event::Apply(pj("a", Some(Phase::Succeeded), 3))),
            Ok(watcher::Event::Apply(deleting.clone())),
            Ok(watcher::Event::Delete(deleting)),
        ];
        let got: Vec<(String, Option<Phase>)> = futures::executor::block_on(
            run_triggers(futures::stream::iter(events))
                .map(|r| {
                    let pj = r.expect("no error");
                    (pj.name_any(), pj.status.and_then(|s| s.phase))
                })
                .collect(),
        );
        let s = Some(Phase::Succeeded);
        assert_eq!(
            got,
            [
                ("a".to_string(), None),
                ("a".to_string(), running),
                ("b".to_string(), running),
                ("a".to_string(), s),
                ("a".to_string(), s),
                ("a".to_string(), s),
            ]
        );
    }
}
