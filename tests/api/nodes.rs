//! Several relay nodes on one store (PostgreSQL in the CI pass; the same
//! SQLite file otherwise): a device registered on A is woken through B, one
//! pushid yields one push per device, a REGISTER on B releases a wait held
//! on A (PostgreSQL LISTEN/NOTIFY), a key revoked on A is refused on B.
use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};
use std::time::Duration;

/// A second node on node A's database, master key, mocks and CA.
async fn second_node(a: &TestApp) -> TestApp {
    spawn_with(tempfile::tempdir().unwrap(), a.env.clone()).await
}

#[tokio::test]
async fn a_device_registered_on_one_node_is_woken_through_the_other() {
    let (a, m) = spawn_app_with_mocks().await;
    let b = second_node(&a).await;
    a.with_mock_credentials(&m).await;
    let (k, key) = device_key();
    let t = apns_token();
    assert_eq!(a.put_uds("alice", "pw-alice", "phone", uds_xml(&t, "APNS", &k, APP)).await.status(), 200);
    let r: Value = b.post_call(&json!({"user": "alice", "pushid": "n-1"})).await.json().await.unwrap();
    assert_eq!(r["deliveries"][0]["outcome"], "delivered", "{r}");
    let body: Value = serde_json::from_slice(&m.apns.requests()[0].body).unwrap();
    let plain = pushrelay::jwe::decrypt(body["data"].as_str().unwrap(), &key).unwrap();
    assert!(String::from_utf8(plain).unwrap().contains("\"pushid\":\"n-1\""), "B opened the key A sealed");
    // And the report is readable on A.
    let id = r["call_id"].as_str().unwrap();
    assert_eq!(a.admin(Method::GET, &format!("/v1/calls/{id}")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn the_same_pushid_posted_to_both_nodes_at_once_pushes_each_device_once() {
    let (a, m) = spawn_app_with_mocks().await;
    let b = second_node(&a).await;
    a.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    for d in ["d1", "d2", "d3"] {
        assert_eq!(a.put_uds("alice", "pw-alice", d, uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    }
    m.apns.set_latency(Duration::from_millis(150));
    let event = json!({"user": "alice", "pushid": "same-call-7", "ring_seconds": 10});
    let (ra, rb) = tokio::join!(a.post_call(&event), b.post_call(&event));
    let (ra, rb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
    assert_eq!(m.apns.requests().len(), 3, "one push per device across both nodes");
    for r in [&ra, &rb] {
        for d in r["deliveries"].as_array().unwrap() {
            assert_eq!(d["outcome"], "delivered", "{r}");
        }
    }
    let dupes = [&ra, &rb]
        .iter()
        .flat_map(|r| r["deliveries"].as_array().unwrap().clone())
        .filter(|d| d["reason"].as_str().unwrap_or("").contains("duplicate pushid"))
        .count();
    assert_eq!(dupes, 3, "every device was reported once as pushed by the other call");
    // A new pushid pushes again.
    let r: Value = b.post_call(&json!({"user": "alice", "pushid": "next-call"})).await.json().await.unwrap();
    assert_eq!(r["deliveries"].as_array().unwrap().len(), 3);
    assert_eq!(m.apns.requests().len(), 6);
}

#[tokio::test]
async fn a_wait_held_on_one_node_is_released_by_a_register_on_the_other() {
    if !on_postgres() {
        eprintln!("SKIP: cross-node wake-ups need PostgreSQL LISTEN/NOTIFY (run with PUSHRELAY_TEST_DATABASE_URL; CI does)");
        return;
    }
    let (a, m) = spawn_app_with_mocks().await;
    let b = second_node(&a).await;
    a.put_mock_apns(&m, "com.mycompany.myapp", "com.mycompany.myapp").await;
    let register = |node: &TestApp| {
        node.admin(Method::POST, "/sip/register").header("content-type", "message/sip").body(fixture("sip/mizu-register-hex.txt")).send()
    };
    assert_eq!(register(&a).await.unwrap().status(), 200);
    let wait = a.admin(Method::POST, "/sip/wake").json(&json!({"aor": "sip:1111@sip.mydomain.com", "call_id": "x-1", "timeout_ms": 8000})).send();
    let wait = tokio::spawn(wait);
    for _ in 0..100 {
        if !m.apns.requests().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(register(&b).await.unwrap().status(), 200);
    let r = tokio::time::timeout(Duration::from_secs(3), wait).await.expect("released well before the timeout").unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["registered"], true, "{v}");
}

#[tokio::test]
async fn an_api_key_revoked_on_one_node_is_refused_on_the_other_at_once() {
    let a = spawn_app().await;
    let b = spawn_with(tempfile::tempdir().unwrap(), a.env.clone()).await;
    let v: Value =
        a.admin(Method::POST, "/v1/api-keys").json(&json!({"name": "edge", "scopes": ["read"]})).send().await.unwrap().json().await.unwrap();
    let key = v["key"].as_str().unwrap();
    assert_eq!(b.client.get(b.url("/v1/apps/x")).bearer_auth(key).send().await.unwrap().status(), 404);
    assert_eq!(a.admin(Method::DELETE, &format!("/v1/api-keys/{}", v["id"].as_str().unwrap())).send().await.unwrap().status(), 204);
    assert_eq!(b.client.get(b.url("/v1/apps/x")).bearer_auth(key).send().await.unwrap().status(), 401);
}

/// The device cache (store/cache.rs) across nodes: B has alice's phone
/// cached from a call; A re-registers the phone with a new token. On
/// PostgreSQL, B must push the new token once A's `DevicesChanged`
/// notification has arrived — bounded here at 1 s, well under the cache's
/// 5 s time to live, so the invalidation (not the expiry) keeps B right.
/// Two nodes on one SQLite file are not told of each other's writes: there
/// the bound is the time to live.
#[tokio::test]
async fn a_token_replaced_on_one_node_is_what_the_other_node_pushes_next() {
    let (a, m) = spawn_app_with_mocks().await;
    let b = second_node(&a).await;
    a.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let (old, new) = (apns_token(), apns_token());
    assert_eq!(a.put_uds("alice", "pw-alice", "phone", uds_xml(&old, "APNS", &k, APP)).await.status(), 200);
    for n in 0..3 {
        assert_eq!(b.post_call(&json!({"user": "alice", "pushid": format!("warm-{n}")})).await.status(), 200);
    }
    assert_eq!(a.put_uds("alice", "pw-alice", "phone", uds_xml(&new, "APNS", &k, APP)).await.status(), 200);
    let changed = std::time::Instant::now();
    let pushed_to = |m: &Mocks| m.apns.requests().last().map(|r| r.path.clone()).unwrap_or_default();
    let bound = if on_postgres() { Duration::from_secs(1) } else { Duration::from_secs(6) };
    let mut n = 0;
    while !pushed_to(&m).ends_with(&new) {
        assert!(changed.elapsed() < bound, "B still pushes the replaced token {} ms after A's answer", changed.elapsed().as_millis());
        if !on_postgres() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        n += 1;
        assert_eq!(b.post_call(&json!({"user": "alice", "pushid": format!("after-{n}")})).await.status(), 200);
    }
    let took = changed.elapsed();
    // From then on, never the old token again.
    for n in 0..5 {
        assert_eq!(b.post_call(&json!({"user": "alice", "pushid": format!("later-{n}")})).await.status(), 200);
        assert!(pushed_to(&m).ends_with(&new));
    }
    eprintln!("B pushed the new token {} ms after A answered the re-registration ({n} stale calls)", took.as_millis());
}

/// On one node the cache is never stale: a re-registration, a removed
/// device and a deleted user take effect on the very next call.
#[tokio::test]
async fn on_one_node_every_device_change_applies_to_the_next_call() {
    let (a, m) = spawn_app_with_mocks().await;
    a.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let (old, new) = (apns_token(), apns_token());
    assert_eq!(a.put_uds("alice", "pw-alice", "phone", uds_xml(&old, "APNS", &k, APP)).await.status(), 200);
    assert_eq!(a.put_uds("alice", "pw-alice", "desk", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    let r: Value = a.post_call(&json!({"user": "alice", "pushid": "c-1"})).await.json().await.unwrap();
    assert_eq!(r["deliveries"].as_array().unwrap().len(), 2);
    assert_eq!(a.put_uds("alice", "pw-alice", "phone", uds_xml(&new, "APNS", &k, APP)).await.status(), 200);
    let before = m.apns.requests().len();
    let r: Value = a.post_call(&json!({"user": "alice", "device": "phone", "pushid": "c-2"})).await.json().await.unwrap();
    assert_eq!(r["deliveries"][0]["outcome"], "delivered", "{r}");
    assert!(m.apns.requests()[before].path.ends_with(&new), "the next call pushes the new token");
    assert_eq!(a.delete_uds("alice", "pw-alice", "desk").await.status(), 204);
    let r: Value = a.post_call(&json!({"user": "alice", "pushid": "c-3"})).await.json().await.unwrap();
    assert_eq!(r["deliveries"].as_array().unwrap().len(), 1, "the removed device is not pushed: {r}");
    assert_eq!(a.admin(Method::DELETE, "/v1/users/alice").send().await.unwrap().status(), 204);
    assert_eq!(a.post_call(&json!({"user": "alice", "pushid": "c-4"})).await.status(), 404, "a deleted user has nothing to wake");
}

/// PostgreSQL: the node that settles a push claim tells the other nodes
/// only when a duplicate call waits on it. A call nobody repeats sends no
/// `NOTIFY` (no wake-up of every node's listener per call); a duplicate on
/// B is told when A's push settles, not at its re-read a second later.
#[tokio::test]
async fn only_a_claim_a_duplicate_waits_on_is_announced_to_the_other_nodes() {
    if !on_postgres() {
        return;
    }
    use sqlx::postgres::PgListener;
    let (a, m) = spawn_app_with_mocks().await;
    let b = second_node(&a).await;
    a.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    assert_eq!(a.put_uds("alice", "pw-alice", "phone", uds_xml(&apns_token(), "APNS", &k, APP)).await.status(), 200);
    let mut listener = PgListener::connect(&a.env["PUSHRELAY_DATABASE_URL"]).await.unwrap();
    listener.listen("pushrelay_events").await.unwrap();

    for i in 0..5 {
        let r: Value = a.post_call(&json!({"user": "alice", "pushid": format!("single-{i}")})).await.json().await.unwrap();
        assert_eq!(r["deliveries"][0]["outcome"], "delivered", "{r}");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(settled_events(&mut listener).await, 0, "calls nobody repeated announce nothing");

    m.apns.set_latency(Duration::from_millis(400));
    let event = json!({"user": "alice", "pushid": "repeated", "ring_seconds": 10});
    let (ra, (rb, b_took)) = tokio::join!(a.post_call(&event), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let started = std::time::Instant::now();
        let r = b.post_call(&event).await;
        (r, started.elapsed())
    });
    let (ra, rb): (Value, Value) = (ra.json().await.unwrap(), rb.json().await.unwrap());
    assert_eq!(ra["deliveries"][0]["outcome"], "delivered", "{ra}");
    assert_eq!(rb["deliveries"][0]["outcome"], "delivered", "{rb}");
    assert!(rb["deliveries"][0]["reason"].as_str().unwrap().contains("duplicate pushid"), "{rb}");
    assert_eq!(m.apns.requests().len(), 6, "the repeated call was pushed once");
    // A settles at ~400 ms, B asked at ~100 ms; B's own re-read would come at 1.1 s.
    assert!(b_took < Duration::from_millis(900), "B was told when A's push settled, not by its re-read: {b_took:?}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(settled_events(&mut listener).await, 1, "the claim B waited on was announced");
}

/// The `claims_settled` events sent so far (those that arrive within 100 ms).
async fn settled_events(listener: &mut sqlx::postgres::PgListener) -> usize {
    let mut n = 0;
    while let Ok(note) = tokio::time::timeout(Duration::from_millis(100), listener.recv()).await {
        n += note.unwrap().payload().contains("claims_settled") as usize;
    }
    n
}
