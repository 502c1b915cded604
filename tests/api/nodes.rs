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
    let dupes = [&ra, &rb].iter().flat_map(|r| r["deliveries"].as_array().unwrap().clone()).filter(|d| d["reason"].as_str().unwrap_or("").contains("duplicate pushid")).count();
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
    let register = |node: &TestApp| node.admin(Method::POST, "/sip/register").header("content-type", "message/sip").body(fixture("sip/mizu-register-hex.txt")).send();
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
    let v: Value = a.admin(Method::POST, "/v1/api-keys").json(&json!({"name": "edge", "scopes": ["read"]})).send().await.unwrap().json().await.unwrap();
    let key = v["key"].as_str().unwrap();
    assert_eq!(b.client.get(b.url("/v1/apps/x")).bearer_auth(key).send().await.unwrap().status(), 404);
    assert_eq!(a.admin(Method::DELETE, &format!("/v1/api-keys/{}", v["id"].as_str().unwrap())).send().await.unwrap().status(), 204);
    assert_eq!(b.client.get(b.url("/v1/apps/x")).bearer_auth(key).send().await.unwrap().status(), 401);
}
