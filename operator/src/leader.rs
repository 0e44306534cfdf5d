//! Leader election on a `coordination.k8s.io/v1` Lease, so only one operator replica
//! reconciles and writes. The client-go scheme, small and hand-written: the holder renews
//! the Lease every retry period; a candidate takes it over once it has seen the same
//! holder/renewTime unchanged for a whole lease duration (measured on its own monotonic
//! clock, so clock skew between nodes does not matter); every write is a `replace` with
//! the read `resourceVersion`, so of two racing candidates exactly one wins (409 for the
//! other).

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use tokio::sync::watch;

/// Lease settings.
#[derive(Clone, Debug)]
pub struct LeaseSettings {
    /// Lease name.
    pub name: String,
    /// Lease namespace.
    pub namespace: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease stays valid without renewal.
    pub duration: Duration,
    /// How often to renew or try to acquire.
    pub retry_period: Duration,
}

/// What to do with the Lease as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LeaseAction {
    /// It does not exist: create it holding it.
    Create,
    /// We hold it: renew.
    Renew,
    /// Free or expired: take it.
    Acquire,
    /// Someone else holds it.
    Follow(String),
}

/// The pure decision: `expired` says the holder was not seen renewing for a lease duration.
pub fn decide(lease: Option<&LeaseSpec>, identity: &str, expired: bool) -> LeaseAction {
    let Some(spec) = lease else {
        return LeaseAction::Create;
    };
    match spec.holder_identity.as_deref() {
        Some(holder) if holder == identity => LeaseAction::Renew,
        None | Some("") => LeaseAction::Acquire,
        Some(_) if expired => LeaseAction::Acquire,
        Some(holder) => LeaseAction::Follow(holder.to_string()),
    }
}

/// What identifies one renewal: the holder and its renew time.
type HolderRecord = (Option<String>, Option<MicroTime>);

/// A participant in the election.
pub struct Elector {
    api: Api<Lease>,
    settings: LeaseSettings,
    /// Last seen (holder, renewTime) and when we first saw it.
    observed: Option<(HolderRecord, Instant)>,
    /// When we last renewed successfully.
    last_renew: Option<Instant>,
}

impl Elector {
    /// An elector using `api` (namespaced to the lease namespace).
    pub fn new(api: Api<Lease>, settings: LeaseSettings) -> Self {
        Self {
            api,
            settings,
            observed: None,
            last_renew: None,
        }
    }

    fn spec(
        &self,
        holder: Option<String>,
        acquire: bool,
        previous: Option<&LeaseSpec>,
    ) -> LeaseSpec {
        let now = MicroTime(Timestamp::now());
        let duration = i32::try_from(self.settings.duration.as_secs()).unwrap_or(i32::MAX);
        let transitions = previous.and_then(|p| p.lease_transitions).unwrap_or(0);
        LeaseSpec {
            holder_identity: holder,
            lease_duration_seconds: Some(duration),
            acquire_time: if acquire {
                Some(now.clone())
            } else {
                previous.and_then(|p| p.acquire_time.clone())
            },
            renew_time: Some(now),
            lease_transitions: Some(if acquire && previous.is_some() {
                transitions.saturating_add(1)
            } else {
                transitions
            }),
            ..LeaseSpec::default()
        }
    }

    /// One round: read the Lease and create, renew, take over or follow. Returns whether
    /// this replica leads now. A lost race (409) is "not leader", not an error.
    pub async fn tick(&mut self) -> Result<bool, kube::Error> {
        let me = self.settings.identity.clone();
        let existing = self.api.get_opt(&self.settings.name).await?;
        let spec = existing.as_ref().and_then(|l| l.spec.clone());
        let expired = match &spec {
            Some(s) => {
                let key = (s.holder_identity.clone(), s.renew_time.clone());
                let seen_at = match &self.observed {
                    Some((k, at)) if *k == key => *at,
                    _ => {
                        let at = Instant::now();
                        self.observed = Some((key, at));
                        at
                    }
                };
                let duration = s
                    .lease_duration_seconds
                    .and_then(|d| u64::try_from(d).ok())
                    .map_or(self.settings.duration, Duration::from_secs);
                seen_at.elapsed() >= duration
            }
            None => false,
        };
        let result = match decide(spec.as_ref(), &me, expired) {
            LeaseAction::Follow(_) => return Ok(false),
            LeaseAction::Create => {
                let lease = Lease {
                    metadata: ObjectMeta {
                        name: Some(self.settings.name.clone()),
                        namespace: Some(self.settings.namespace.clone()),
                        ..ObjectMeta::default()
                    },
                    spec: Some(self.spec(Some(me), true, None)),
                };
                self.api.create(&PostParams::default(), &lease).await
            }
            action @ (LeaseAction::Renew | LeaseAction::Acquire) => {
                let mut lease = existing.unwrap_or_default();
                let acquire = action == LeaseAction::Acquire;
                lease.spec = Some(self.spec(Some(me), acquire, spec.as_ref()));
                self.api
                    .replace(&self.settings.name, &PostParams::default(), &lease)
                    .await
            }
        };
        match result {
            Ok(_) => {
                self.last_renew = Some(Instant::now());
                Ok(true)
            }
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up if we hold it, so a successor need not wait for expiry.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.settings.name).await? else {
            return Ok(());
        };
        let holds = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.as_deref())
            == Some(self.settings.identity.as_str());
        if holds {
            let previous = lease.spec.clone();
            let mut spec = self.spec(None, false, previous.as_ref());
            spec.lease_duration_seconds = Some(1);
            lease.spec = Some(spec);
            self.api
                .replace(&self.settings.name, &PostParams::default(), &lease)
                .await?;
        }
        Ok(())
    }

    /// Runs the election, publishing leadership on `leader`, until `stop` turns true;
    /// then releases the Lease. A leader that cannot renew within two thirds of the lease
    /// duration steps down before anyone else may take over.
    pub async fn run(mut self, leader: watch::Sender<bool>, mut stop: watch::Receiver<bool>) {
        let renew_deadline = self.settings.duration * 2 / 3;
        loop {
            // A hung API call must not keep a stale leader leading: bound each round.
            let round = tokio::time::timeout(renew_deadline, self.tick()).await;
            let leading = match round {
                Ok(Ok(l)) => l,
                outcome => {
                    let error = match outcome {
                        Ok(Err(e)) => e.to_string(),
                        _ => "timed out".to_string(),
                    };
                    tracing::warn!(%error, "lease round failed");
                    *leader.borrow()
                        && self
                            .last_renew
                            .is_some_and(|t| t.elapsed() < renew_deadline)
                }
            };
            leader.send_if_modified(|l| {
                let changed = *l != leading;
                if changed {
                    tracing::info!(leading, identity = %self.settings.identity, "leadership changed");
                }
                *l = leading;
                changed
            });
            tokio::select! {
                () = tokio::time::sleep(self.settings.retry_period) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        leader.send_replace(false);
        if let Err(e) = self.release().await {
            tracing::warn!(error = %e, "cannot release the lease");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use http::{Method, StatusCode};
    use serde_json::json;

    fn spec(holder: Option<&str>) -> LeaseSpec {
        LeaseSpec {
            holder_identity: holder.map(String::from),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn decisions() {
        let cases = [
            (None, false, LeaseAction::Create),
            (Some(spec(Some("me"))), false, LeaseAction::Renew),
            (Some(spec(Some("me"))), true, LeaseAction::Renew),
            (Some(spec(None)), false, LeaseAction::Acquire),
            (Some(spec(Some(""))), false, LeaseAction::Acquire),
            (
                Some(spec(Some("other"))),
                false,
                LeaseAction::Follow("other".into()),
            ),
            (Some(spec(Some("other"))), true, LeaseAction::Acquire),
        ];
        for (lease, expired, want) in cases {
            assert_eq!(
                decide(lease.as_ref(), "me", expired),
                want,
                "{lease:?} {expired}"
            );
        }
    }

    fn settings(identity: &str) -> LeaseSettings {
        LeaseSettings {
            name: "roomcast-operator".into(),
            namespace: "ops".into(),
            identity: identity.into(),
            duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }

    const LEASE: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases/roomcast-operator";
    const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/ops/leases";

    fn lease(holder: &str, rv: &str) -> serde_json::Value {
        json!({"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
               "metadata": {"name": "roomcast-operator", "namespace": "ops", "resourceVersion": rv},
               "spec": {"holderIdentity": holder, "leaseDurationSeconds": 15,
                        "renewTime": "2026-11-23T07:00:00.000000Z", "leaseTransitions": 2}})
    }

    #[tokio::test]
    async fn creates_a_missing_lease_and_leads() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (client, mut api) = fixtures::client();
            let mut elector = Elector::new(Api::namespaced(client, "ops"), settings("me"));
            let script = async move {
                api.next()
                    .await
                    .expect(Method::GET, LEASE)
                    .respond(StatusCode::NOT_FOUND, &fixtures::not_found());
                let call = api.next().await.expect(Method::POST, LEASES);
                assert_eq!(call.body["spec"]["holderIdentity"], "me");
                assert_eq!(call.body["spec"]["leaseDurationSeconds"], 15);
                call.respond(StatusCode::CREATED, &lease("me", "1"));
                api
            };
            let (leading, _api) = tokio::join!(elector.tick(), script);
            assert!(leading.unwrap());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn follows_a_live_holder_and_loses_races_quietly() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (client, mut api) = fixtures::client();
            let mut elector = Elector::new(Api::namespaced(client, "ops"), settings("me"));
            let script = async move {
                // A holder we just saw: follow, write nothing.
                api.next()
                    .await
                    .expect(Method::GET, LEASE)
                    .respond(StatusCode::OK, &lease("other", "7"));
                api
            };
            let (leading, api) = tokio::join!(elector.tick(), script);
            assert!(!leading.unwrap());

            // A free lease, but another candidate wins the replace: 409 means "not leader".
            let mut api = api;
            let script = async move {
                api.next()
                    .await
                    .expect(Method::GET, LEASE)
                    .respond(StatusCode::OK, &lease("", "8"));
                let call = api.next().await.expect(Method::PUT, LEASE);
                assert_eq!(call.body["metadata"]["resourceVersion"], "8");
                assert_eq!(call.body["spec"]["holderIdentity"], "me");
                assert_eq!(call.body["spec"]["leaseTransitions"], 3);
                call.respond(
                    StatusCode::CONFLICT,
                    &json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                            "reason": "Conflict", "code": 409, "message": "stale"}),
                );
                api
            };
            let (leading, _api) = tokio::join!(elector.tick(), script);
            assert!(!leading.unwrap());
        })
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn renews_its_own_lease_and_releases_it() {
        tokio::time::timeout(Duration::from_secs(10), async {
            let (client, mut api) = fixtures::client();
            let mut elector = Elector::new(Api::namespaced(client, "ops"), settings("me"));
            let script = async move {
                api.next()
                    .await
                    .expect(Method::GET, LEASE)
                    .respond(StatusCode::OK, &lease("me", "3"));
                let call = api.next().await.expect(Method::PUT, LEASE);
                assert_eq!(call.body["spec"]["holderIdentity"], "me");
                assert_eq!(
                    call.body["spec"]["leaseTransitions"], 2,
                    "a renewal is no transition"
                );
                assert_ne!(
                    call.body["spec"]["renewTime"],
                    "2026-11-23T07:00:00.000000Z"
                );
                call.respond(StatusCode::OK, &lease("me", "4"));
                api
            };
            let (leading, mut api) = tokio::join!(elector.tick(), script);
            assert!(leading.unwrap());

            let script = async move {
                api.next()
                    .await
                    .expect(Method::GET, LEASE)
                    .respond(StatusCode::OK, &lease("me", "4"));
                let call = api.next().await.expect(Method::PUT, LEASE);
                assert!(
                    call.body["spec"]
                        .get("holderIdentity")
                        .is_none_or(|h| h.is_null())
                );
                call.respond(StatusCode::OK, &lease("", "5"));
                api
            };
            let (released, _api) = tokio::join!(elector.release(), script);
            released.unwrap();
        })
        .await
        .unwrap();
    }
}
