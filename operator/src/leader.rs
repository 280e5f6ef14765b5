//! Leader election on a `coordination.k8s.io/v1` `Lease`, so that of several `th-operator`
//! replicas exactly one acts (creates Jobs, writes statuses) and the others stand by.
//!
//! The protocol is client-go's `leaderelection` with a `Lease` lock:
//!
//! - A replica may take the lease when it does not exist, has no holder, or its holder let it
//!   expire (`renewTime + leaseDurationSeconds < now`). Taking it over from another holder counts
//!   one more `leaseTransitions`.
//! - The holder renews it every [`LeaderConfig::retry_period`], writing `renewTime`.
//! - Every write is conditional on the `resourceVersion` the replica just read (a `PUT` of the
//!   object it read, or a `POST` when there was none), so when two replicas race for one lease,
//!   the apiserver accepts one write and answers the other `409 Conflict`: the loser is not
//!   leader.
//! - A leader that has not renewed for [`LeaderConfig::renew_deadline`] steps down (stops acting)
//!   even though its lease may still look valid: the deadline is shorter than the lease duration,
//!   so it has stopped before anyone else may take over.
//! - On shutdown the leader releases the lease (clears `holderIdentity`), so a successor takes
//!   over at its next retry rather than after a whole lease duration.
//!
//! Expiry compares the holder's `renewTime` with this replica's clock, as the issue specifies;
//! like every lease scheme it assumes the replicas' clocks agree to well within
//! `lease_duration - renew_deadline` (NTP-synchronised nodes do).
//!
//! [`LeaderElector::try_acquire_or_renew`] is one step of that loop (what the tests drive);
//! [`LeaderElector::run`] / [`LeaderElector::run_until`] loop and publish leadership on a
//! `watch` channel that the controller follows.

use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, PostParams};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Timing of the election; the defaults are client-go's and kube-controller-manager's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaderConfig {
    /// How long a lease stays valid after its last renewal; others wait this long before taking
    /// over from a silent holder. Written to the lease in whole seconds (rounded up).
    pub lease_duration: Duration,
    /// How long the leader keeps acting without a successful renewal before it steps down.
    /// Must be shorter than `lease_duration`: the margin is what keeps two leaders apart.
    pub renew_deadline: Duration,
    /// The pause between attempts, for the leader and for the candidates.
    pub retry_period: Duration,
}

impl Default for LeaderConfig {
    fn default() -> Self {
        LeaderConfig {
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Why an election step failed. A failed step is not a lost election: the loop retries, and only
/// a leader that fails past its renew deadline steps down.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The timing would let two replicas act at once, or the identity is empty.
    #[error("invalid leader election config: {0}")]
    Config(String),
    /// The apiserver refused or could not be reached.
    #[error("{action} lease {lease}: {source}")]
    Kube {
        action: &'static str,
        lease: String,
        #[source]
        source: kube::Error,
    },
    /// The apiserver returned a lease without `resourceVersion`, so a write could not be made
    /// conditional; writing anyway could overwrite a rival's acquisition.
    #[error("lease {0} has no resourceVersion; refusing an unconditional write")]
    NoResourceVersion(String),
}

/// One replica's candidacy for one lease.
#[derive(Debug)]
pub struct LeaderElector {
    api: Api<Lease>,
    namespace: String,
    name: String,
    identity: String,
    config: LeaderConfig,
    /// The lease as last read or written, so shutdown can release it without another read.
    observed: Mutex<Option<Lease>>,
}

impl LeaderElector {
    /// A candidate `identity` (the pod name: unique among replicas, stable across container
    /// restarts) for the lease `namespace/lease_name`.
    pub fn new(
        client: kube::Client,
        namespace: &str,
        lease_name: &str,
        identity: &str,
        config: LeaderConfig,
    ) -> Result<Self, Error> {
        if identity.is_empty() {
            return Err(Error::Config("the identity is empty".into()));
        }
        if lease_name.is_empty() {
            return Err(Error::Config("the lease name is empty".into()));
        }
        if config.retry_period.is_zero() {
            return Err(Error::Config("retry_period is zero".into()));
        }
        if config.renew_deadline <= config.retry_period {
            return Err(Error::Config(format!(
                "renew_deadline ({:?}) must be longer than retry_period ({:?})",
                config.renew_deadline, config.retry_period
            )));
        }
        if config.lease_duration <= config.renew_deadline {
            return Err(Error::Config(format!(
                "lease_duration ({:?}) must be longer than renew_deadline ({:?})",
                config.lease_duration, config.renew_deadline
            )));
        }
        Ok(LeaderElector {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_owned(),
            name: lease_name.to_owned(),
            identity: identity.to_owned(),
            config,
            observed: Mutex::new(None),
        })
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    /// One step: reads the lease, then creates it, takes it over or renews it when allowed.
    /// `Ok(true)`: this replica holds the lease now. `Ok(false)`: another replica does (or won
    /// the race for it). `Err`: the outcome is unknown (the apiserver failed).
    pub async fn try_acquire_or_renew(&self) -> Result<bool, Error> {
        let now = Timestamp::now();
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .map_err(|e| self.kube_error("reading", e))?;

        let Some(current) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    namespace: Some(self.namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.lease_seconds()),
                    acquire_time: Some(MicroTime(now)),
                    renew_time: Some(MicroTime(now)),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(created) => {
                    tracing::info!(lease = %self.key(), identity = %self.identity, "created the lease; leading");
                    self.observe(created);
                    Ok(true)
                }
                // Another replica created it between our read and our write.
                Err(kube::Error::Api(status)) if status.code == 409 => {
                    tracing::debug!(lease = %self.key(), "lost the race to create the lease");
                    Ok(false)
                }
                Err(e) => Err(self.kube_error("creating", e)),
            };
        };

        if current.metadata.resource_version.is_none() {
            return Err(Error::NoResourceVersion(self.key()));
        }
        let spec = current.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().filter(|h| !h.is_empty());
        let ours = holder == Some(self.identity.as_str());
        if let Some(holder) = holder
            && !ours
            && !self.expired(&spec, now)
        {
            tracing::trace!(lease = %self.key(), %holder, "lease held by another replica");
            self.observe(current);
            return Ok(false);
        }

        let new_spec = if ours {
            LeaseSpec {
                renew_time: Some(MicroTime(now)),
                lease_duration_seconds: Some(self.lease_seconds()),
                ..spec.clone()
            }
        } else {
            LeaseSpec {
                holder_identity: Some(self.identity.clone()),
                lease_duration_seconds: Some(self.lease_seconds()),
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
                lease_transitions: Some(spec.lease_transitions.unwrap_or(0).saturating_add(1)),
                ..spec.clone()
            }
        };
        let mut update = current.clone();
        update.spec = Some(new_spec);
        self.observe(current);
        // `update` carries the resourceVersion we read: the apiserver rejects the write with
        // 409 if anyone wrote the lease since.
        match self
            .api
            .replace(&self.name, &PostParams::default(), &update)
            .await
        {
            Ok(written) => {
                if !ours {
                    tracing::info!(
                        lease = %self.key(),
                        identity = %self.identity,
                        previous = holder.unwrap_or(""),
                        "acquired the lease; leading"
                    );
                }
                self.observe(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => {
                tracing::debug!(lease = %self.key(), "the lease changed under us; not leading");
                Ok(false)
            }
            Err(e) => Err(self.kube_error("updating", e)),
        }
    }

    /// Releases the lease if this replica held it when last observed: clears `holderIdentity`
    /// and shortens the lease to 1 s, so a successor takes over at its next retry. Conditional
    /// like every write: if someone else wrote the lease since, it is no longer ours to release
    /// and this returns `Ok(false)`. Call it only after this replica has stopped acting.
    pub async fn release(&self) -> Result<bool, Error> {
        let observed = lock(&self.observed).clone();
        let Some(mut lease) = observed else {
            return Ok(false);
        };
        let mut spec = lease.spec.take().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.identity.as_str()) {
            return Ok(false);
        }
        if lease.metadata.resource_version.is_none() {
            return Err(Error::NoResourceVersion(self.key()));
        }
        let now = Timestamp::now();
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        spec.acquire_time = Some(MicroTime(now));
        spec.renew_time = Some(MicroTime(now));
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(written) => {
                tracing::info!(lease = %self.key(), identity = %self.identity, "released the lease");
                self.observe(written);
                Ok(true)
            }
            Err(kube::Error::Api(status)) if status.is_conflict() => Ok(false),
            Err(e) => Err(self.kube_error("releasing", e)),
        }
    }

    /// Campaigns until every receiver is dropped; see [`LeaderElector::run_until`].
    pub fn run(self) -> (watch::Receiver<bool>, JoinHandle<()>) {
        self.run_until(std::future::pending())
    }

    /// Campaigns in a task until `shutdown` completes or every receiver is dropped, publishing
    /// `true` while this replica leads and `false` otherwise (starting with `false`). On the way
    /// out it finishes the attempt in flight (bounded by the renew deadline), publishes `false`,
    /// then releases the lease; the task ends after the release, so awaiting the handle before
    /// exiting hands leadership over at once.
    pub fn run_until(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> (watch::Receiver<bool>, JoinHandle<()>) {
        let (tx, rx) = watch::channel(false);
        let handle = tokio::spawn(self.campaign(tx, shutdown));
        (rx, handle)
    }

    async fn campaign(self, tx: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
        let LeaderConfig {
            renew_deadline,
            retry_period,
            ..
        } = self.config;
        tokio::pin!(shutdown);
        // When the last successful renewal started; `Some` while leading.
        let mut renewed_at: Option<Instant> = None;
        let step_down = |renewed_at: &mut Option<Instant>, why: &str| {
            if renewed_at.take().is_some() {
                tracing::warn!(lease = %self.key(), identity = %self.identity, "stepping down: {why}");
                tx.send_replace(false);
            }
        };
        loop {
            let started = Instant::now();
            if let Some(at) = renewed_at
                && started >= at + renew_deadline
            {
                step_down(&mut renewed_at, "no renewal within the renew deadline");
            }
            // A leader's attempt may not outlast its deadline: a hung request must not keep it
            // acting on a lease that others will soon consider expired.
            let budget = match renewed_at {
                Some(at) => (at + renew_deadline).saturating_duration_since(started),
                None => renew_deadline,
            };
            // Shutdown waits for the attempt in flight rather than abandoning it: a write whose
            // outcome we never saw would leave `observed` stale and the release refused.
            let attempt = tokio::time::timeout(budget, self.try_acquire_or_renew()).await;
            match attempt {
                Ok(Ok(true)) => {
                    if renewed_at.is_none() {
                        tx.send_replace(true);
                    }
                    // Measured from before the write, so the deadline errs on the early side.
                    renewed_at = Some(started);
                }
                Ok(Ok(false)) => step_down(&mut renewed_at, "another replica holds the lease"),
                Ok(Err(err)) => {
                    tracing::warn!(lease = %self.key(), error = %err, "leader election step failed");
                }
                Err(_elapsed) => {
                    tracing::warn!(lease = %self.key(), "leader election step timed out");
                }
            }
            let pause = match renewed_at {
                Some(at) => retry_period
                    .min((at + renew_deadline).saturating_duration_since(Instant::now())),
                None => retry_period,
            };
            tokio::select! {
                () = &mut shutdown => break,
                () = tx.closed() => break,
                () = tokio::time::sleep(pause) => {}
            }
        }
        tx.send_replace(false);
        match tokio::time::timeout(renew_deadline, self.release()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => {
                tracing::warn!(lease = %self.key(), error = %err, "could not release the lease; it expires on its own");
            }
            Err(_elapsed) => {
                tracing::warn!(lease = %self.key(), "releasing the lease timed out; it expires on its own");
            }
        }
    }

    /// Whether `spec`'s holder let it lapse: `renewTime + leaseDurationSeconds < now`. A lease
    /// without a renew time never was valid.
    fn expired(&self, spec: &LeaseSpec, now: Timestamp) -> bool {
        let Some(MicroTime(renewed)) = spec.renew_time else {
            return true;
        };
        let seconds = spec
            .lease_duration_seconds
            .unwrap_or_else(|| self.lease_seconds());
        now.duration_since(renewed) > SignedDuration::from_secs(i64::from(seconds))
    }

    fn lease_seconds(&self) -> i32 {
        let secs = self.config.lease_duration.as_secs_f64().ceil();
        // Clamped, so the cast cannot truncate: a lease of 0 s would be expired at once.
        secs.clamp(1.0, f64::from(i32::MAX)) as i32
    }

    fn observe(&self, lease: Lease) {
        *lock(&self.observed) = Some(lease);
    }

    fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }

    fn kube_error(&self, action: &'static str, source: kube::Error) -> Error {
        Error::Kube {
            action,
            lease: self.key(),
            source,
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{Method, Request, Response, StatusCode};
    use kube::client::Body;
    use serde_json::{Value, json};

    type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

    const LEASE_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/th-operator";
    const LEASES_PATH: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    fn elector(config: LeaderConfig) -> (LeaderElector, Handle) {
        let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let elector =
            LeaderElector::new(client, "ops", "th-operator", "pod-a", config).expect("valid");
        (elector, handle)
    }

    /// A lease as the apiserver would return it.
    fn lease(holder: Option<&str>, renewed_ago: i64, transitions: i32, rv: &str) -> Value {
        let renewed = Timestamp::now() - SignedDuration::from_secs(renewed_ago);
        let mut spec = json!({
            "leaseDurationSeconds": 15,
            "acquireTime": MicroTime(renewed),
            "renewTime": MicroTime(renewed),
            "leaseTransitions": transitions,
        });
        if let Some(holder) = holder {
            spec["holderIdentity"] = json!(holder);
        }
        json!({
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": "th-operator", "namespace": "ops", "resourceVersion": rv},
            "spec": spec,
        })
    }

    fn status(code: u16, reason: &str) -> Value {
        json!({
            "apiVersion": "v1", "kind": "Status", "status": "Failure",
            "message": format!("test: {reason}"), "reason": reason, "code": code,
        })
    }

    /// Waits for the next request, asserts its method and path, and returns its JSON body (or
    /// `Null`) with the means to answer it.
    async fn expect(
        handle: &mut Handle,
        method: Method,
        path: &str,
    ) -> (Value, tower_test::mock::SendResponse<Response<Body>>) {
        let (request, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
            .await
            .unwrap_or_else(|_| panic!("no {method} {path} within 5 s"))
            .expect("the client hung up");
        assert_eq!(request.method(), method);
        assert_eq!(request.uri().path(), path);
        let bytes = request.into_body().collect_bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("a JSON body")
        };
        (body, send)
    }

    fn answer(send: tower_test::mock::SendResponse<Response<Body>>, code: u16, body: &Value) {
        let response = Response::builder()
            .status(StatusCode::from_u16(code).expect("a status code"))
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(body).expect("JSON")))
            .expect("a response");
        send.send_response(response);
    }

    /// Echoes a written lease back with a new resourceVersion, as the apiserver does.
    fn written(mut body: Value, rv: &str) -> Value {
        body["metadata"]["resourceVersion"] = json!(rv);
        body
    }

    fn age_of(time: &Value) -> SignedDuration {
        let at: MicroTime = serde_json::from_value(time.clone()).expect("a MicroTime");
        Timestamp::now().duration_since(at.0)
    }

    #[tokio::test]
    async fn an_absent_lease_is_created() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 404, &status(404, "NotFound"));
            let (body, send) = expect(&mut api, Method::POST, LEASES_PATH).await;
            assert_eq!(body["metadata"]["name"], "th-operator");
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseDurationSeconds"], 15);
            assert_eq!(body["spec"]["leaseTransitions"], 0);
            assert!(age_of(&body["spec"]["renewTime"]) < SignedDuration::from_secs(5));
            answer(send, 201, &written(body, "1"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(leading.expect("no error"));
    }

    #[tokio::test]
    async fn losing_the_race_to_create_is_not_leading() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 404, &status(404, "NotFound"));
            let (_, send) = expect(&mut api, Method::POST, LEASES_PATH).await;
            answer(send, 409, &status(409, "AlreadyExists"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(!leading.expect("no error"));
    }

    #[tokio::test]
    async fn a_fresh_lease_of_another_is_left_alone() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 200, &lease(Some("pod-b"), 3, 4, "7"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(!leading.expect("no error"));
        // No write followed the read.
        let next = tokio::time::timeout(Duration::from_millis(100), api.next_request()).await;
        assert!(next.is_err(), "unexpected request after the read");
    }

    #[tokio::test]
    async fn an_expired_lease_of_another_is_taken_over() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 200, &lease(Some("pod-b"), 60, 4, "7"));
            let (body, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
            assert_eq!(
                body["metadata"]["resourceVersion"], "7",
                "write not conditional"
            );
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseTransitions"], 5);
            assert!(age_of(&body["spec"]["renewTime"]) < SignedDuration::from_secs(5));
            assert!(age_of(&body["spec"]["acquireTime"]) < SignedDuration::from_secs(5));
            answer(send, 200, &written(body, "8"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(leading.expect("no error"));
    }

    #[tokio::test]
    async fn a_released_lease_is_taken_at_once() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 200, &lease(None, 0, 2, "9"));
            let (body, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(body["spec"]["leaseTransitions"], 3);
            answer(send, 200, &written(body, "10"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(leading.expect("no error"));
    }

    #[tokio::test]
    async fn our_own_lease_is_renewed() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            let ours = lease(Some("pod-a"), 4, 4, "7");
            let acquired = ours["spec"]["acquireTime"].clone();
            answer(send, 200, &ours);
            let (body, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
            assert_eq!(body["metadata"]["resourceVersion"], "7");
            assert_eq!(body["spec"]["holderIdentity"], "pod-a");
            assert_eq!(
                body["spec"]["leaseTransitions"], 4,
                "a renewal is no transition"
            );
            assert_eq!(body["spec"]["acquireTime"], acquired);
            assert!(age_of(&body["spec"]["renewTime"]) < SignedDuration::from_secs(2));
            answer(send, 200, &written(body, "8"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(leading.expect("no error"));
    }

    #[tokio::test]
    async fn a_conflict_on_the_write_is_not_leading() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 200, &lease(Some("pod-b"), 60, 4, "7"));
            let (_, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
            answer(send, 409, &status(409, "Conflict"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        assert!(!leading.expect("no error"));
    }

    #[tokio::test]
    async fn an_apiserver_failure_is_an_error_not_a_verdict() {
        let (elector, mut api) = elector(LeaderConfig::default());
        let server = async {
            let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
            answer(send, 500, &status(500, "InternalError"));
        };
        let (leading, ()) = tokio::join!(elector.try_acquire_or_renew(), server);
        let err = leading.expect_err("an error");
        assert!(
            matches!(
                err,
                Error::Kube {
                    action: "reading",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[tokio::test]
    async fn timing_that_could_allow_two_leaders_is_refused() {
        let (service, _handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = kube::Client::new(service, "default");
        let bad = LeaderConfig {
            renew_deadline: Duration::from_secs(15),
            ..LeaderConfig::default()
        };
        let err = LeaderElector::new(client.clone(), "ops", "l", "pod-a", bad).expect_err("bad");
        assert!(err.to_string().contains("lease_duration"), "{err}");
        let err = LeaderElector::new(client, "ops", "l", "", LeaderConfig::default())
            .expect_err("no identity");
        assert!(matches!(err, Error::Config(_)));
    }

    /// Fast timing for the loop tests, on the real clock.
    fn fast() -> LeaderConfig {
        LeaderConfig {
            lease_duration: Duration::from_secs(3),
            renew_deadline: Duration::from_millis(300),
            retry_period: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn the_loop_leads_renews_and_releases_on_shutdown() {
        let (elector, mut api) = elector(fast());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (mut leading, task) = elector.run_until(async move {
            let _ = stopped.await;
        });
        assert!(!*leading.borrow());

        let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
        answer(send, 404, &status(404, "NotFound"));
        let (body, send) = expect(&mut api, Method::POST, LEASES_PATH).await;
        answer(send, 201, &written(body, "1"));
        leading.changed().await.expect("publishes");
        assert!(*leading.borrow_and_update());

        // One renewal.
        let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
        answer(send, 200, &lease(Some("pod-a"), 0, 0, "1"));
        let (body, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
        assert_eq!(body["spec"]["holderIdentity"], "pod-a");
        answer(send, 200, &written(body, "2"));

        // Shutdown: stop acting first, then release the lease we last wrote.
        stop.send(()).expect("loop running");
        let (body, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
        assert!(
            !*leading.borrow(),
            "released while still publishing leadership"
        );
        assert_eq!(body["metadata"]["resourceVersion"], "2");
        assert_eq!(body["spec"].get("holderIdentity"), None);
        assert_eq!(body["spec"]["leaseDurationSeconds"], 1);
        assert_eq!(body["spec"]["leaseTransitions"], 0);
        answer(send, 200, &written(body, "3"));
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends after releasing")
            .expect("no panic");
    }

    #[tokio::test]
    async fn the_leader_steps_down_when_renewals_fail_past_the_deadline() {
        let config = fast();
        let (elector, mut api) = elector(config);
        let (mut leading, task) = elector.run();

        let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
        answer(send, 404, &status(404, "NotFound"));
        let (body, send) = expect(&mut api, Method::POST, LEASES_PATH).await;
        answer(send, 201, &written(body, "1"));
        leading.changed().await.expect("publishes");
        assert!(*leading.borrow_and_update());
        let acquired = Instant::now();

        // The apiserver fails every request from now on; the leader keeps leading until the
        // renew deadline, then steps down.
        let mut failures = 0;
        loop {
            tokio::select! {
                changed = leading.changed() => {
                    changed.expect("publishes");
                    break;
                }
                request = api.next_request() => {
                    let (_, send) = request.expect("a request");
                    answer(send, 500, &status(500, "InternalError"));
                    failures += 1;
                }
            }
        }
        assert!(!*leading.borrow());
        let after = acquired.elapsed();
        assert!(
            failures >= 2,
            "only {failures} attempts before stepping down"
        );
        assert!(
            after + Duration::from_millis(50) >= config.renew_deadline,
            "{after:?}"
        );
        assert!(
            after < config.lease_duration,
            "stepped down too late: {after:?}"
        );

        // Dropping the receiver ends the loop; after the attempt in flight (a read, failed
        // here), it releases the lease it last wrote.
        drop(leading);
        loop {
            let (request, send) = tokio::time::timeout(Duration::from_secs(5), api.next_request())
                .await
                .expect("a release within 5 s")
                .expect("a request");
            if request.method() == Method::GET {
                answer(send, 500, &status(500, "InternalError"));
                continue;
            }
            assert_eq!(request.method(), Method::PUT);
            assert_eq!(request.uri().path(), LEASE_PATH);
            let bytes = request.into_body().collect_bytes().await.expect("body");
            let body: Value = serde_json::from_slice(&bytes).expect("JSON");
            assert_eq!(body["metadata"]["resourceVersion"], "1");
            assert_eq!(body["spec"].get("holderIdentity"), None);
            answer(send, 409, &status(409, "Conflict"));
            break;
        }
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("the loop ends")
            .expect("no panic");
    }

    #[tokio::test]
    async fn the_leader_steps_down_at_once_when_another_holds_the_lease() {
        let (elector, mut api) = elector(fast());
        let (mut leading, task) = elector.run();
        let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
        answer(send, 200, &lease(Some("pod-b"), 60, 1, "5"));
        let (body, send) = expect(&mut api, Method::PUT, LEASE_PATH).await;
        answer(send, 200, &written(body, "6"));
        leading.changed().await.expect("publishes");
        assert!(*leading.borrow_and_update());

        // Someone (an admin, a rival with a skewed clock) wrote the lease to another holder.
        let (_, send) = expect(&mut api, Method::GET, LEASE_PATH).await;
        answer(send, 200, &lease(Some("pod-b"), 0, 3, "9"));
        leading.changed().await.expect("publishes");
        assert!(!*leading.borrow());

        // Not the holder any more: nothing to release. Reads in flight still get answers.
        drop(leading);
        let mut task = task;
        let ended = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                tokio::select! {
                    joined = &mut task => return joined,
                    Some((request, send)) = api.next_request() => {
                        assert_eq!(request.method(), Method::GET, "released a lease it no longer held");
                        answer(send, 200, &lease(Some("pod-b"), 0, 3, "9"));
                    }
                }
            }
        })
        .await;
        ended.expect("the loop ends").expect("no panic");
    }
}
