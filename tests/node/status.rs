//! A pod's status as the kubelet writes it: the phase from the containers' states and the
//! restart policy (the kubelet's `getPhase`), the conditions with their transition times, and each
//! container's state, last state and restart count. Rendered as a strategic-merge patch of the
//! `status` subresource (conditions merge by type, so a condition another controller added, such
//! as the Job controller's `DisruptionTarget`, stays).

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The node's and every pod's address.
pub const IP: &str = "127.0.0.1";

/// Now, as a `metav1.Time` (whole seconds).
pub fn now() -> String {
    Timestamp::from_second(Timestamp::now().as_second())
        .map(|t| t.to_string())
        .unwrap_or_else(|_| Timestamp::now().to_string())
}

/// Now, as a `metav1.MicroTime`.
pub fn now_micro() -> String {
    let t = Timestamp::now();
    let micros = t.as_microsecond();
    Timestamp::from_microsecond(micros)
        .map(|t| format!("{t:.6}"))
        .unwrap_or_else(|_| t.to_string())
}

#[derive(Debug, Clone, PartialEq)]
pub struct Terminated {
    pub exit_code: i32,
    /// The signal that killed the process, if one did.
    pub signal: Option<i32>,
    pub reason: String,
    pub message: String,
    pub started_at: String,
    pub finished_at: String,
    pub container_id: String,
}

#[derive(Debug, Clone, PartialEq)]
pub enum State {
    Waiting {
        reason: String,
        message: Option<String>,
    },
    Running {
        started_at: String,
    },
    Terminated(Terminated),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Container {
    pub name: String,
    pub image: String,
    pub image_id: String,
    pub state: State,
    pub last: Option<Terminated>,
    pub restarts: i32,
    /// `th-test-node://<pid>` of the current or last process.
    pub container_id: Option<String>,
}

impl Container {
    pub fn waiting(name: &str, image: &str, reason: &str) -> Self {
        Container {
            name: name.into(),
            image: image.into(),
            image_id: String::new(),
            state: State::Waiting {
                reason: reason.into(),
                message: None,
            },
            last: None,
            restarts: 0,
            container_id: None,
        }
    }

    fn to_json(&self) -> Value {
        let state = match &self.state {
            State::Waiting { reason, message } => {
                json!({"waiting": {"reason": reason, "message": message}})
            }
            State::Running { started_at } => json!({"running": {"startedAt": started_at}}),
            State::Terminated(t) => json!({"terminated": terminated_json(t)}),
        };
        let last = match &self.last {
            Some(t) => json!({"terminated": terminated_json(t)}),
            None => json!({}),
        };
        let running = matches!(self.state, State::Running { .. });
        json!({
            "name": self.name,
            "image": self.image,
            "imageID": self.image_id,
            "containerID": self.container_id,
            "state": state,
            "lastState": last,
            "ready": running,
            "started": running,
            "restartCount": self.restarts,
        })
    }
}

fn terminated_json(t: &Terminated) -> Value {
    let mut v = json!({
        "exitCode": t.exit_code,
        "reason": t.reason,
        "startedAt": t.started_at,
        "finishedAt": t.finished_at,
        "containerID": t.container_id,
    });
    if let Some(s) = t.signal {
        v["signal"] = json!(s);
    }
    if !t.message.is_empty() {
        v["message"] = json!(t.message);
    }
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Pending,
    Running,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Running => "Running",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
    pub fn terminal(self) -> bool {
        matches!(self, Phase::Succeeded | Phase::Failed)
    }
}

/// The kubelet's `getPhase` for regular containers. A container waiting to be restarted counts
/// as stopped, not as waiting.
pub fn phase(containers: &[Container], restart_policy: &str) -> Phase {
    let (mut waiting, mut running, mut stopped, mut succeeded) = (0, 0, 0, 0);
    for c in containers {
        match &c.state {
            State::Running { .. } => running += 1,
            State::Terminated(t) => {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            }
            State::Waiting { .. } if c.last.is_some() => stopped += 1,
            State::Waiting { .. } => waiting += 1,
        }
    }
    if waiting > 0 {
        return Phase::Pending;
    }
    if running > 0 {
        return Phase::Running;
    }
    if stopped == 0 {
        return Phase::Pending;
    }
    match restart_policy {
        "Always" => Phase::Running,
        "OnFailure" if stopped == succeeded => Phase::Succeeded,
        "OnFailure" => Phase::Running,
        _ if stopped == succeeded => Phase::Succeeded,
        _ => Phase::Failed,
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Condition {
    status: bool,
    reason: Option<String>,
    message: Option<String>,
    since: String,
}

/// A pod's status, kept by its task and written whole on every change.
#[derive(Debug, Clone)]
pub struct PodStatus {
    pub phase: Phase,
    /// The pod's own reason and message (`DeadlineExceeded`, say).
    pub reason: Option<String>,
    pub message: Option<String>,
    pub start_time: String,
    pub containers: Vec<Container>,
    conditions: BTreeMap<&'static str, Condition>,
}

impl PodStatus {
    pub fn new(containers: Vec<Container>) -> Self {
        PodStatus {
            phase: Phase::Pending,
            reason: None,
            message: None,
            start_time: now(),
            containers,
            conditions: BTreeMap::new(),
        }
    }

    fn condition(
        &mut self,
        kind: &'static str,
        status: bool,
        reason: Option<&str>,
        msg: Option<String>,
    ) {
        let c = Condition {
            status,
            reason: reason.map(str::to_string),
            message: msg,
            since: now(),
        };
        match self.conditions.get(kind) {
            // Unchanged: the transition time stays.
            Some(old)
                if old.status == c.status && old.reason == c.reason && old.message == c.message => {
            }
            _ => {
                self.conditions.insert(kind, c);
            }
        }
    }

    /// The conditions that follow from the phase and the containers' states.
    fn update_conditions(&mut self) {
        let terminal = self.phase.terminal();
        let unready: Vec<&str> = self
            .containers
            .iter()
            .filter(|c| !matches!(c.state, State::Running { .. }))
            .map(|c| c.name.as_str())
            .collect();
        let (ready, reason, message) = if terminal {
            (false, Some("PodCompleted"), None)
        } else if unready.is_empty() {
            (true, None, None)
        } else {
            (
                false,
                Some("ContainersNotReady"),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        self.condition("PodScheduled", true, None, None);
        self.condition("PodReadyToStartContainers", !terminal, None, None);
        self.condition("Initialized", true, None, None);
        self.condition("ContainersReady", ready, reason, message.clone());
        self.condition("Ready", ready, reason, message);
    }

    /// The `{"status": ...}` strategic-merge patch.
    pub fn patch(&mut self) -> Value {
        self.update_conditions();
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(kind, c)| {
                json!({
                    "type": kind,
                    "status": if c.status { "True" } else { "False" },
                    "reason": c.reason,
                    "message": c.message,
                    "lastProbeTime": null,
                    "lastTransitionTime": c.since,
                })
            })
            .collect();
        let started = self
            .containers
            .iter()
            .any(|c| !matches!(c.state, State::Waiting { .. }) || c.last.is_some());
        let ip = started.then_some(IP);
        json!({
            "status": {
                "phase": self.phase.as_str(),
                "reason": self.reason,
                "message": self.message,
                "hostIP": IP,
                "hostIPs": [{"ip": IP}],
                "podIP": ip,
                "podIPs": ip.map(|ip| json!([{"ip": ip}])),
                "startTime": self.start_time,
                "conditions": conditions,
                "containerStatuses": self.containers.iter().map(Container::to_json).collect::<Vec<_>>(),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn term(code: i32) -> State {
        State::Terminated(Terminated {
            exit_code: code,
            signal: None,
            reason: if code == 0 { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: now(),
            finished_at: now(),
            container_id: String::new(),
        })
    }

    fn with(states: Vec<State>) -> Vec<Container> {
        states
            .into_iter()
            .enumerate()
            .map(|(i, s)| Container {
                state: s,
                ..Container::waiting(&format!("c{i}"), "img", "ContainerCreating")
            })
            .collect()
    }

    #[test]
    fn phase_like_the_kubelet() {
        let running = State::Running { started_at: now() };
        let waiting = State::Waiting {
            reason: "ContainerCreating".into(),
            message: None,
        };
        assert_eq!(phase(&with(vec![waiting.clone()]), "Never"), Phase::Pending);
        assert_eq!(
            phase(&with(vec![running.clone(), term(0)]), "Never"),
            Phase::Running
        );
        assert_eq!(
            phase(&with(vec![term(0), term(0)]), "Never"),
            Phase::Succeeded
        );
        assert_eq!(phase(&with(vec![term(0), term(3)]), "Never"), Phase::Failed);
        assert_eq!(phase(&with(vec![term(3)]), "OnFailure"), Phase::Running);
        assert_eq!(phase(&with(vec![term(0)]), "OnFailure"), Phase::Succeeded);
        assert_eq!(phase(&with(vec![term(0)]), "Always"), Phase::Running);
        // Waiting for a restart counts as stopped.
        let mut restarting = with(vec![waiting]);
        restarting[0].last = Some(match term(1) {
            State::Terminated(t) => t,
            _ => unreachable!(),
        });
        assert_eq!(phase(&restarting, "OnFailure"), Phase::Running);
    }

    #[test]
    fn a_condition_keeps_its_transition_time_while_unchanged() {
        let mut s = PodStatus::new(with(vec![State::Running { started_at: now() }]));
        s.phase = Phase::Running;
        let first = s.patch();
        let since = first["status"]["conditions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["type"] == "Ready")
            .unwrap()["lastTransitionTime"]
            .clone();
        assert_eq!(since, s.conditions["Ready"].since);
        s.conditions.get_mut("Ready").unwrap().since = "1970-01-01T00:00:00Z".into();
        s.patch();
        assert_eq!(s.conditions["Ready"].since, "1970-01-01T00:00:00Z");
        s.containers[0].state = term(0);
        s.phase = Phase::Succeeded;
        let last = s.patch();
        assert_ne!(s.conditions["Ready"].since, "1970-01-01T00:00:00Z");
        assert_eq!(last["status"]["phase"], "Succeeded");
        assert_eq!(last["status"]["podIP"], IP);
    }
}
