//! pushrelay's own registration, `PUT/DELETE /v1/users/{u}/devices/{d}`
//! (interface.md §9), on the APNs and FCM channels (Huawei and Web Push
//! have their own files), and its refusals.
use crate::helpers::*;
use serde_json::{json, Value};

#[tokio::test]
async fn a_native_device_with_a_key_gets_the_v2_jwe_and_without_one_the_plain_payload() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (key, key_bytes) = device_key();
    let (t1, t2) = (apns_token(), apns_token());
    let r = app.put_native("alice", "iphone", &json!({"channel": "APNS", "application": APP, "token": t1, "key": key, "format": "v2"})).await;
    assert_eq!(r.status(), 201);
    let shown: Value = r.json().await.unwrap();
    assert_eq!(shown, json!({"user": "alice", "device": "iphone", "channel": "APNS", "application": APP, "token_suffix": &t1[56..]}));
    assert_eq!(app.put_native("alice", "ipad", &json!({"channel": "APNS", "application": APP, "token": t2})).await.status(), 201);
    assert_eq!(
        app.put_native("alice", "pixel", &json!({"channel": "FCM", "application": APP, "token": "fcm:native-1", "format": "plain"})).await.status(),
        201
    );

    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "displayname": "Bob"})).await.json().await.unwrap();
    assert!(report["deliveries"].as_array().unwrap().iter().all(|d| d["outcome"] == "delivered"), "{report}");
    let by_token = |t: &str| m.apns.requests().into_iter().find(|r| r.path.ends_with(t)).unwrap();
    let jwe: Value = serde_json::from_slice(&by_token(&t1).body).unwrap();
    let v2: Value = serde_json::from_slice(&pushrelay::jwe::decrypt(jwe["data"].as_str().unwrap(), &key_bytes).unwrap()).unwrap();
    let plain: Value = serde_json::from_slice(&by_token(&t2).body).unwrap();
    assert_eq!(v2["displayname"], "Bob", "the keyed device gets the V2 JWE: {jwe}");
    assert!(!jwe.to_string().contains("Bob"), "nothing in clear for the keyed device");
    assert!(plain.to_string().contains("Bob"), "the device without a key gets the plain call payload: {plain}");
    let list = app.devices("alice").await;
    assert!(list.as_array().unwrap().iter().all(|d| d["dialect"] == "native"), "{list}");

    let r = app.admin(reqwest::Method::DELETE, "/v1/users/alice/devices/ipad").send().await.unwrap();
    assert_eq!(r.status(), 204);
    let r = app.admin(reqwest::Method::DELETE, "/v1/users/alice/devices/ipad").send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn bad_native_registrations_are_refused_and_change_nothing() {
    let (app, m) = spawn_app_with_mocks_and_env("", &[("PUSHRELAY_LIMITS_DEVICES_PER_USER", "2")]).await;
    app.with_mock_credentials(&m).await;
    let ok = |device: &str| json!({"channel": "APNS", "application": APP, "token": apns_token(), "_d": device});
    let body = |v: Value| {
        let mut v = v;
        v.as_object_mut().unwrap().remove("_d");
        v
    };
    assert_eq!(app.put_native("alice", "one", &body(ok("one"))).await.status(), 201);
    let before = app.devices("alice").await;
    let put_raw = |ct: &'static str, raw: &'static str| {
        app.admin(reqwest::Method::PUT, "/v1/users/alice/devices/two").header("content-type", ct).body(raw).send()
    };
    assert_eq!(put_raw("application/json", "{\"channel\": ").await.unwrap().status(), 400, "malformed JSON");
    assert_eq!(put_raw("text/plain", "{}").await.unwrap().status(), 415);
    for (v, words) in [
        (json!({"channel": "APNS", "application": APP, "token": apns_token(), "colour": "red"}), "colour"),
        (json!({"channel": "APNS", "application": APP, "token": "not-hex"}), "token"),
        (json!({"channel": "APNS", "application": "com.example.Unknown", "token": apns_token()}), "unknown_application"),
        (json!({"channel": "APNS", "application": APP, "token": apns_token(), "key": "c2hvcnQ="}), "key"),
        (
            json!({"channel": "FCM", "application": APP, "token": "fcm:x", "subscription": {"endpoint": "https://fcm.googleapis.com/x"}}),
            "subscription",
        ),
    ] {
        let r = app.put_native("alice", "two", &v).await;
        assert_eq!(r.status(), 400, "{v}");
        let text = r.text().await.unwrap();
        assert!(text.contains(words), "{v}: {text}");
    }
    let r = app.put_native("alice", "..", &body(ok("x"))).await;
    assert!(r.status() == 400 || r.status() == 404, "a bad device id: {}", r.status());
    // The cap: a third device is refused, a known one is replaced.
    assert_eq!(app.put_native("alice", "two", &body(ok("two"))).await.status(), 201);
    let r = app.put_native("alice", "three", &body(ok("three"))).await;
    assert_eq!(r.status(), 409);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "device_limit");
    assert_eq!(app.put_native("alice", "two", &body(ok("two"))).await.status(), 200);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 2);
    assert_eq!(before.as_array().unwrap().len(), 1);

    // A register key bound to another app may not name APP; a read key may not register.
    let (_, bound) = new_key(&app, &["register"], Some("com.example.Other")).await;
    let r = with_key(&app, &bound, reqwest::Method::PUT, "/v1/users/alice/devices/four").json(&body(ok("four"))).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let (_, read) = new_key(&app, &["read"], None).await;
    let r = with_key(&app, &read, reqwest::Method::PUT, "/v1/users/alice/devices/four").json(&body(ok("four"))).send().await.unwrap();
    assert_eq!(r.status(), 403);
    let r = app.client.put(app.url("/v1/users/alice/devices/four")).json(&body(ok("four"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 2);
}
