//! The call path's group commit (`Store::write_batch`) on the suite's
//! database: SQLite (its call-writer thread) or, in CI's second pass,
//! PostgreSQL, where a batch of outcomes, claims and reports becomes one
//! statement of `WITH` clauses, with fallbacks to a transaction when that
//! cannot be one statement.

use crate::helpers::test_database_url;
use pushrelay::domain::{CallId, CallReport, Channel, Delivery, DevicePkid, Outcome, UserId};
use pushrelay::envelope::MasterKey;
use pushrelay::store::{CallRecord, ClaimOutcome, ClaimRequest, Store, StoreOptions};

async fn store(dir: &std::path::Path) -> Store {
    let s = Store::connect(&test_database_url(dir).await, &StoreOptions::default()).await.unwrap();
    s.migrate().await.unwrap();
    s.open_keyring(MasterKey::generate()).await.unwrap();
    s
}

fn claim(push_id: &str, user: &UserId, device: &DevicePkid, call: &CallId) -> ClaimRequest {
    ClaimRequest {
        tenant: pushrelay::domain::TenantId::default_tenant(),
        push_id: push_id.into(),
        user: user.clone(),
        device: device.clone(),
        call: call.clone(),
        expires_at: 10_000,
    }
}

fn record(call: &CallId, user: &UserId) -> CallRecord {
    CallRecord {
        tenant: pushrelay::domain::TenantId::default_tenant(),
        call: call.clone(),
        user: user.clone(),
        push_id: "p".into(),
        created_ms: 1,
        ring_ends_ms: 10_000,
        report: CallReport::new(call, vec![]),
        callbacks: vec![],
        apps: vec![],
    }
}

fn outcome(push_id: &str, user: &UserId, device: &DevicePkid, call: &CallId) -> ClaimOutcome {
    ClaimOutcome {
        tenant: pushrelay::domain::TenantId::default_tenant(),
        push_id: push_id.into(),
        user: user.clone(),
        call: call.clone(),
        delivery: Delivery::new(device, Channel::Apns, Outcome::Delivered, Some(200), None, 1),
    }
}

#[tokio::test]
async fn a_mixed_batch_answers_every_claim_and_writes_every_row() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let u = UserId::parse("alice").unwrap();
    let (a, b, c) = (DevicePkid::parse("a").unwrap(), DevicePkid::parse("b").unwrap(), DevicePkid::parse("c").unwrap());
    let (held, c1, c2) = (CallId::new(), CallId::new(), CallId::new());
    assert_eq!(s.claim_push(&pushrelay::domain::Scope::default_tenant(), "p", &u, &b, &held, 10_000, 0).await.unwrap(), None);
    assert_eq!(s.claim_push(&pushrelay::domain::Scope::default_tenant(), "q", &u, &c, &held, 10_000, 0).await.unwrap(), None);

    // Outcome of q/c, claims of p/a (free), p/b (held), p/a again, and two
    // reports: one statement on PostgreSQL (no key both settled and claimed).
    let answers = s
        .write_batch(
            &[claim("p", &u, &a, &c1), claim("p", &u, &b, &c1), claim("p", &u, &a, &c2)],
            1_000,
            &[outcome("q", &u, &c, &held)],
            &[record(&c1, &u), record(&c2, &u)],
        )
        .await
        .unwrap();
    assert_eq!(answers, vec![None, Some(held.clone()), Some(c1.clone())]);
    assert_eq!(s.claim_outcome(&pushrelay::domain::Scope::default_tenant(), "q", &u, &c).await.unwrap().map(|d| d.outcome), Some(Outcome::Delivered));
    assert!(
        s.call_report(&pushrelay::domain::Scope::default_tenant(), &c1).await.unwrap().is_some()
            && s.call_report(&pushrelay::domain::Scope::default_tenant(), &c2).await.unwrap().is_some()
    );

    // A key settled and claimed in the same batch (two statements in one transaction).
    let c3 = CallId::new();
    let answers = s.write_batch(&[claim("p", &u, &b, &c3)], 2_000, &[outcome("p", &u, &b, &held)], &[record(&c3, &u)]).await.unwrap();
    assert_eq!(answers, vec![Some(held.clone())], "a live claim stays with its holder");
    assert_eq!(s.claim_outcome(&pushrelay::domain::Scope::default_tenant(), "p", &u, &b).await.unwrap().map(|d| d.outcome), Some(Outcome::Delivered));
    assert!(s.call_report(&pushrelay::domain::Scope::default_tenant(), &c3).await.unwrap().is_some());

    // Wider than one statement of each kind: 450 claims and 450 reports.
    let calls: Vec<CallId> = (0..450).map(|_| CallId::new()).collect();
    let many: Vec<ClaimRequest> = calls.iter().enumerate().map(|(i, call)| claim(&format!("w{i}"), &u, &a, call)).collect();
    let reports: Vec<CallRecord> = calls.iter().map(|call| record(call, &u)).collect();
    let answers = s.write_batch(&many, 3_000, &[], &reports).await.unwrap();
    assert_eq!(answers.len(), 450);
    assert!(answers.iter().all(Option::is_none));
    assert_eq!(
        s.claim_push(&pushrelay::domain::Scope::default_tenant(), "w449", &u, &a, &c1, 10_000, 3_000).await.unwrap(),
        Some(calls[449].clone())
    );
    assert!(s.call_report(&pushrelay::domain::Scope::default_tenant(), &calls[449]).await.unwrap().is_some());
}

#[tokio::test]
async fn a_batch_that_fails_on_postgresql_writes_none_of_its_rows() {
    if !crate::helpers::on_postgres() {
        // SQLite's failure of a batch is tested in store::calls (a locked database).
        eprintln!("SKIP: needs PostgreSQL (run with PUSHRELAY_TEST_DATABASE_URL; CI does)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path()).await;
    let u = UserId::parse("alice").unwrap();
    let (a, b) = (DevicePkid::parse("a").unwrap(), DevicePkid::parse("b").unwrap());
    let (held, c1) = (CallId::new(), CallId::new());
    assert_eq!(s.claim_push(&pushrelay::domain::Scope::default_tenant(), "p", &u, &b, &held, 10_000, 0).await.unwrap(), None);
    // PostgreSQL refuses a NUL byte in text: the claim's row fails, and the
    // outcome and the report of the same (one-statement) batch go with it.
    let err = s.write_batch(&[claim("p\0", &u, &a, &c1)], 1_000, &[outcome("p", &u, &b, &held)], &[record(&c1, &u)]).await.unwrap_err();
    assert!(err.to_string().contains("0x00"), "{err}");
    assert_eq!(s.claim_outcome(&pushrelay::domain::Scope::default_tenant(), "p", &u, &b).await.unwrap(), None, "the outcome was not written");
    assert!(s.call_report(&pushrelay::domain::Scope::default_tenant(), &c1).await.unwrap().is_none(), "the report was not written");
    // The writer's next batch (on a fresh connection) goes through.
    assert_eq!(s.write_batch(&[claim("p", &u, &a, &c1)], 1_000, &[outcome("p", &u, &b, &held)], &[record(&c1, &u)]).await.unwrap(), vec![None]);
    assert!(s.call_report(&pushrelay::domain::Scope::default_tenant(), &c1).await.unwrap().is_some());
}
