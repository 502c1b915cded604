//! API keys: shown once, stored hashed, scopes checked on every endpoint,
//! revocation immediate.
use crate::helpers::*;
use reqwest::Method;
use serde_json::{json, Value};

#[tokio::test]
async fn each_scope_opens_its_endpoints_only() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    let (_, calls) = new_key(&app, &["calls"], None).await;
    let (_, read) = new_key(&app, &["read"], None).await;
    let (_, register) = new_key(&app, &["register"], None).await;

    // calls: may post a call (404: alice has no devices yet), may not manage users or read devices.
    assert_eq!(with_key(&app, &calls, Method::POST, "/v1/calls").json(&json!({"user": "alice", "pushid": "p"})).send().await.unwrap().status(), 404);
    let r = with_key(&app, &calls, Method::PUT, "/v1/users/bob").json(&json!({"password": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let e: Value = r.json().await.unwrap();
    assert_eq!(e["error"], "forbidden");
    assert_eq!(with_key(&app, &calls, Method::GET, "/v1/users/alice/devices").send().await.unwrap().status(), 403);
    // read: may read devices and apps, may not post calls or register.
    assert_eq!(with_key(&app, &read, Method::GET, "/v1/users/alice/devices").send().await.unwrap().status(), 200);
    assert_eq!(with_key(&app, &read, Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().status(), 200);
    assert_eq!(with_key(&app, &read, Method::POST, "/v1/calls").json(&json!({"user": "alice", "pushid": "p"})).send().await.unwrap().status(), 403);
    // register: may report Acrobits tokens and SIP registrations, may not create keys.
    let r = with_key(&app, &register, Method::POST, "/sip/register")
        .header("content-type", "message/sip")
        .body(fixture("sip/no-push-data.txt"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "authorized, then refused for the body");
    assert_eq!(
        with_key(&app, &register, Method::POST, "/v1/api-keys").json(&json!({"name": "x", "scopes": ["admin"]})).send().await.unwrap().status(),
        403
    );
    assert_eq!(
        with_key(&app, &register, Method::POST, "/v1/calls").json(&json!({"user": "alice", "pushid": "p"})).send().await.unwrap().status(),
        403
    );
}

#[tokio::test]
async fn keys_are_stored_hashed_and_revocation_is_immediate() {
    let app = spawn_app().await;
    let (id, key) = new_key(&app, &["read"], None).await;
    assert!(key.starts_with("prk_") && key.len() > 40);
    assert_eq!(with_key(&app, &key, Method::GET, "/v1/apps/x").send().await.unwrap().status(), 404);
    let raw = {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(app.database_url()).await.unwrap();
        let rows = sqlx::query("SELECT key_hash FROM api_keys").fetch_all(&pool).await.unwrap();
        rows.iter().map(|r| r.get::<String, _>(0)).collect::<Vec<_>>().join(",")
    };
    assert!(!raw.contains(&key) && raw.len() == 64, "only the SHA-256 hex is stored");
    assert_eq!(app.admin(Method::DELETE, &format!("/v1/api-keys/{id}")).send().await.unwrap().status(), 204);
    assert_eq!(with_key(&app, &key, Method::GET, "/v1/apps/x").send().await.unwrap().status(), 401);
    assert_eq!(app.admin(Method::DELETE, &format!("/v1/api-keys/{id}")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn bad_key_requests_are_400() {
    let app = spawn_app().await;
    for body in [
        json!({"name": "x", "scopes": []}),
        json!({"name": "x", "scopes": ["root"]}),
        json!({"name": "", "scopes": ["read"]}),
        json!({"name": "x", "scopes": ["read"], "app": "bad app"}),
        json!({"name": "x", "scopes": ["read"], "extra": 1}),
    ] {
        let r = app.admin(Method::POST, "/v1/api-keys").json(&body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
    }
    assert_eq!(app.client.post(app.url("/v1/api-keys")).json(&json!({"name": "x", "scopes": ["read"]})).send().await.unwrap().status(), 401);
}

#[tokio::test]
async fn an_app_bound_register_key_supplies_the_spark_app() {
    let (app, m) = spawn_app_with_mocks().await;
    assert_eq!(app.put_apns(APP, &m.apns_body()).await.status(), 200);
    let (_, key) = new_key(&app, &["register"], Some(APP)).await;
    let r = with_key(&app, &key, Method::POST, "/register")
        .header("content-type", "application/json")
        .body(fixture("spark/register.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let list = app.devices("Y2lzY29zcGFyazovL3VzL1BFT1BMRS9jYWxsZWU").await;
    assert_eq!(list[0]["application"], APP);
}
