use crate::helpers::*;
use reqwest::Method;

#[tokio::test]
async fn put_user_creates_then_replaces() {
    let app = spawn_app().await;
    assert_eq!(app.put_user("alice", "one").await.status(), 201);
    let r = app.put_user("alice", "two").await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["created"], false);
}

#[tokio::test]
async fn bad_user_bodies_are_400() {
    let app = spawn_app().await;
    for body in ["{}", "{\"password\": 5}", "{\"password\": \"\"}", "[]", "not json"] {
        let r = app.admin(Method::PUT, "/v1/users/alice").header("content-type", "application/json").body(body).send().await.unwrap();
        assert_eq!(r.status(), 400, "{body}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert!(e["error"].is_string() && e["message"].is_string(), "{e}");
    }
    let r = app.put_user("bad user", "x").await;
    assert_eq!(r.status(), 400);
    assert_eq!(app.admin(Method::GET, "/v1/users/alice/devices").send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn deleting_a_user_removes_their_devices() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    let r = app.put_uds("alice", "pw-alice", "dev1", uds_xml(APNS_TOKEN, "APNS", KEY_B64, APP)).await;
    assert_eq!(r.status(), 200);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1);
    assert_eq!(app.admin(Method::DELETE, "/v1/users/alice").send().await.unwrap().status(), 204);
    assert_eq!(app.admin(Method::GET, "/v1/users/alice/devices").send().await.unwrap().status(), 404);
    assert_eq!(app.admin(Method::DELETE, "/v1/users/alice").send().await.unwrap().status(), 404);
    // Re-created user starts with no devices.
    assert_eq!(app.put_user("alice", "pw-alice").await.status(), 201);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 0);
}
