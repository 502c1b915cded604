//! What the nodes sharing a store tell each other, without polling:
//! - `Registered`: a SIP REGISTER for an AOR arrived (releases `/sip/wake`);
//! - `ClaimsSettled`: push claims got their outcome (a duplicate call waiting
//!   on another call's push reports it at once);
//! - `KeysChanged`: a master key rotation or retirement (nodes re-sync);
//! - `DevicesChanged`: devices of these users were written (the other nodes
//!   drop them from their device caches).
//!
//! Every event reaches this node's subscribers at once (a broadcast
//! channel). On PostgreSQL it is also sent with `NOTIFY pushrelay_events`,
//! and every node's listener (`Store::listen`) feeds the events of the other
//! nodes to its own subscribers. Subscribers that fall behind re-read the
//! store: an event is a hint to look, never the only copy of a fact.

use super::{Backend, Store};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::sync::broadcast;
use tokio_util::sync::CancellationToken;

const CHANNEL: &str = "pushrelay_events";
/// PostgreSQL refuses NOTIFY payloads of 8000 bytes or more.
const MAX_PAYLOAD: usize = 7000;

/// A push claim: (pushid, tenant, user, device).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimKey {
    pub push_id: String,
    pub tenant: String,
    pub user: String,
    pub device: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum StoreEvent {
    /// `at`: epoch ms of the REGISTER (a wait that began later is not released by it).
    Registered {
        tenant: String,
        aor: String,
        contact: String,
        at: i64,
    },
    ClaimsSettled {
        claims: Vec<ClaimKey>,
    },
    KeysChanged,
    /// `users`: device-cache keys (`tenant/user`); `None`: too many to
    /// name, every cached user is dropped.
    DevicesChanged {
        users: Option<Vec<String>>,
    },
    /// The caller of `call_id` hung up while its callee was being woken
    /// (`/sip/cancel`): the wait for that AOR and call ends, on every node.
    WakeCancelled {
        tenant: String,
        aor: String,
        call_id: String,
    },
}

#[derive(Serialize, Deserialize)]
struct Wire {
    node: u64,
    #[serde(flatten)]
    event: StoreEvent,
}

pub(super) struct Events {
    tx: broadcast::Sender<StoreEvent>,
    /// Tells this node's own NOTIFYs apart from the others'.
    node: u64,
    url: String,
    stop: CancellationToken,
}

impl Events {
    pub(super) fn new(url: &str) -> Self {
        let (tx, _) = broadcast::channel(4096);
        Self { tx, node: rand::random(), url: url.to_string(), stop: CancellationToken::new() }
    }

    pub(super) fn stop(&self) {
        self.stop.cancel();
    }

    /// For the SQLite call writer's thread: it tells this node's
    /// subscribers about settled claims itself.
    pub(super) fn sender(&self) -> broadcast::Sender<StoreEvent> {
        self.tx.clone()
    }

    /// Cancelled when the store closes.
    pub(super) fn stopped(&self) -> CancellationToken {
        self.stop.clone()
    }
}

/// Split settled claims into NOTIFY-sized events.
fn chunks(event: StoreEvent) -> Vec<StoreEvent> {
    match event {
        StoreEvent::ClaimsSettled { claims: keys } => {
            let mut out = Vec::new();
            let (mut chunk, mut size) = (Vec::new(), 0);
            for k in keys {
                let len = k.push_id.len() + k.tenant.len() + k.user.len() + k.device.len() + 60;
                if size + len > MAX_PAYLOAD && !chunk.is_empty() {
                    out.push(StoreEvent::ClaimsSettled { claims: std::mem::take(&mut chunk) });
                    size = 0;
                }
                size += len;
                chunk.push(k);
            }
            if !chunk.is_empty() {
                out.push(StoreEvent::ClaimsSettled { claims: chunk });
            }
            out
        }
        StoreEvent::DevicesChanged { users: Some(users) } if users.iter().map(|u| u.len() + 3).sum::<usize>() > MAX_PAYLOAD => {
            vec![StoreEvent::DevicesChanged { users: None }]
        }
        other => vec![other],
    }
}

impl Store {
    /// Events from now on (this node's and, on PostgreSQL, every node's).
    pub fn subscribe(&self) -> broadcast::Receiver<StoreEvent> {
        self.events.tx.subscribe()
    }

    /// Tell every node (this one too) that the caller of `call_id` hung up
    /// while the scope's `aor` was being woken.
    pub async fn wake_cancelled(&self, scope: &crate::domain::Scope, aor: &str, call_id: &str) {
        self.publish(StoreEvent::WakeCancelled {
            tenant: scope.tenant_id().as_str().to_string(),
            aor: aor.to_string(),
            call_id: call_id.to_string(),
        })
        .await;
    }

    /// Tell this node's subscribers, and on PostgreSQL the other nodes.
    /// Best effort: a lost event costs a subscriber its fallback re-read.
    pub async fn publish(&self, event: StoreEvent) {
        self.tell_this_node(event.clone());
        self.tell_other_nodes(event).await;
    }

    /// This node's subscribers only.
    pub(super) fn tell_this_node(&self, event: StoreEvent) {
        let _ = self.events.tx.send(event);
    }

    /// PostgreSQL: the other nodes' subscribers (`NOTIFY`); a no-op on SQLite.
    pub(super) async fn tell_other_nodes(&self, event: StoreEvent) {
        if self.backend != Backend::Postgres {
            return;
        }
        for part in chunks(event) {
            let payload = serde_json::to_string(&Wire { node: self.events.node, event: part }).unwrap_or_default();
            if let Err(e) = sqlx::query("SELECT pg_notify($1, $2)").bind(CHANNEL).bind(payload).execute(&self.pool).await {
                metrics::counter!(crate::telemetry::STORE_ERRORS).increment(1);
                tracing::warn!(error = %e, "could not tell the other nodes");
            }
        }
    }

    /// PostgreSQL: `LISTEN` for the other nodes' events until the store
    /// closes. When the listener loses its connection, notifications sent
    /// meanwhile are lost: the device cache is no longer served as fresh when that is
    /// noticed, and sqlx reconnects. A no-op on SQLite.
    pub async fn listen(&self) -> super::Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        let mut listener = sqlx::postgres::PgListener::connect(&self.events.url).await?;
        listener.listen(CHANNEL).await?;
        let (tx, node, stop, devices) = (self.events.tx.clone(), self.events.node, self.events.stop.clone(), self.devices.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    n = listener.try_recv() => match n {
                        Ok(Some(n)) => match serde_json::from_str::<Wire>(n.payload()) {
                            Ok(w) if w.node != node => {
                                if let StoreEvent::DevicesChanged { users } = &w.event {
                                    devices.invalidate(users.as_ref().map(|u| u.iter().map(String::as_str)));
                                }
                                let _ = tx.send(w.event);
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(error = %e, "unreadable event from another node"),
                        },
                        Ok(None) => {
                            tracing::warn!("event listener lost its connection; the device cache is re-read (kept only as a fallback) and the listener reconnects");
                            devices.unverify();
                        }
                        Err(e) => {
                            devices.unverify();
                            tracing::warn!(error = %e, "event listener lost its connection; retrying");
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                    },
                }
            }
        });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settled_claims_are_split_under_the_notify_limit() {
        let keys: Vec<ClaimKey> = (0..500)
            .map(|i| ClaimKey { push_id: format!("p{i}").repeat(10), tenant: "default".into(), user: "alice".into(), device: "phone".into() })
            .collect();
        let parts = chunks(StoreEvent::ClaimsSettled { claims: keys.clone() });
        assert!(parts.len() > 1);
        let mut back = Vec::new();
        for p in parts {
            let wire = serde_json::to_string(&Wire { node: 1, event: p.clone() }).unwrap();
            assert!(wire.len() < 8000, "{}", wire.len());
            if let StoreEvent::ClaimsSettled { claims: k } = p {
                back.extend(k);
            }
        }
        assert_eq!(back, keys);
    }

    #[test]
    fn events_round_trip_on_the_wire() {
        for e in [
            StoreEvent::Registered { tenant: "default".into(), aor: "sip:1@x".into(), contact: "<sip:1@h>".into(), at: 5 },
            StoreEvent::KeysChanged,
            StoreEvent::DevicesChanged { users: Some(vec!["default/alice".into()]) },
            StoreEvent::DevicesChanged { users: None },
        ] {
            let wire = serde_json::to_string(&Wire { node: 7, event: e.clone() }).unwrap();
            let back: Wire = serde_json::from_str(&wire).unwrap();
            assert_eq!((back.node, back.event), (7, e));
        }
    }
}
