//! Leader election with kube-lease-manager (a common kube-rs choice; the operator has its own,
//! operator/src/leader.rs) against the stand-in: its lock relies on server-side apply conflicts
//! and strategic merge patches of a Lease, which the stand-in must get right for any client.

mod common;

use common::{bounded, client};
use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder};
use std::time::Duration;
use tokio::sync::watch;

const TEST_TIMEOUT: Duration = Duration::from_secs(40);

/// A leadership candidate on the shared lease.
async fn candidate(client: &Client, identity: &str, duration: u64) -> LeaseManager {
    LeaseManagerBuilder::new(client.clone(), "roomcast-operator")
        .with_identity(identity)
        .with_duration(duration)
        .with_grace(1)
        .build()
        .await
        .expect("lease manager builds")
}

/// Waits until a leadership flag has the wanted value.
async fn until(flag: &mut watch::Receiver<bool>, wanted: bool) {
    flag.wait_for(|v| *v == wanted)
        .await
        .expect("lease manager alive");
}

#[tokio::test]
async fn one_of_two_candidates_leads_and_the_other_takes_over_on_release() {
    bounded(TEST_TIMEOUT, async {
        let standin = kube_standin::start().await.expect("stand-in starts");
        let client = client(&standin).await;
        let candidate = |identity| candidate(&client, identity, 3);
        let (a, b) = (candidate("a").await, candidate("b").await);
        let (mut a_leads, a_task) = a.watch().await;
        let (mut b_leads, b_task) = b.watch().await;

        // Exactly one becomes leader.
        tokio::select! {
            () = until(&mut a_leads, true) => {}
            () = until(&mut b_leads, true) => {}
        }
        let (mut leader, leader_task, mut follower) = if *a_leads.borrow() {
            (a_leads, a_task, b_leads)
        } else {
            (b_leads, b_task, a_leads)
        };
        assert!(!*follower.borrow(), "both candidates claim leadership");

        // The leader steps down (its receiver goes away, so it releases the lease); the other takes over.
        drop(leader.borrow_and_update());
        drop(leader);
        leader_task
            .await
            .expect("leader task")
            .expect("released cleanly");
        until(&mut follower, true).await;
    })
    .await;
}

#[tokio::test]
async fn a_crashed_leaders_lease_expires_and_the_other_takes_over() {
    bounded(TEST_TIMEOUT, async {
        let standin = kube_standin::start().await.expect("stand-in starts");
        let client = client(&standin).await;
        let candidate = |identity| candidate(&client, identity, 2);
        let (mut a_leads, a_task) = candidate("a").await.watch().await;
        until(&mut a_leads, true).await;
        let (mut b_leads, _b_task) = candidate("b").await.watch().await;
        assert!(!*b_leads.borrow());

        // Abort without releasing: b must wait for expiry, force-release and then lock.
        a_task.abort();
        let _ = a_task.await;
        until(&mut b_leads, true).await;
    })
    .await;
}
