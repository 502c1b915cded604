use crate::helpers::*;
use pushrelay_mock::apns::ScriptedReply;
use pushrelay_mock::fcm::FcmReply;
use serde_json::{json, Value};
use std::time::{Duration, Instant};

fn decrypt_v2(jwe: &str, key: &[u8; 32]) -> Value {
    let plain = pushrelay::jwe::decrypt(jwe, key).expect("relay JWE decrypts with the device key");
    serde_json::from_slice(&plain).unwrap()
}

async fn register(app: &TestApp, device: &str, token: &str, channel: &str, key_b64: &str) {
    let r = app.put_uds("alice", "pw-alice", device, uds_xml(token, channel, key_b64, APP)).await;
    assert_eq!(r.status(), 200, "{device}: {}", r.text().await.unwrap());
}

#[tokio::test]
async fn a_call_wakes_apns_apns_dev_and_fcm_devices_with_the_v2_jwe() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k1, b1) = device_key();
    let (k2, b2) = device_key();
    let (k3, b3) = device_key();
    let (t1, t2) = (apns_token(), apns_token());
    register(&app, "iphone", &t1, "APNS", &k1).await;
    register(&app, "iphone-dev", &t2, "APNS:dev", &k2).await;
    register(&app, "android", "fcm-token:APA91bHun4MxP5egoKMwt2KZFBaFUH", "FCM", &k3).await;

    let before = pushrelay::domain::now_ms();
    let r = app
        .post_call(&json!({"user": "alice", "pushid": "3f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b", "displayname": "Zoë Example", "displaynumber": "+14085551234", "huntpilotdn": "5000", "ring_seconds": 30}))
        .await;
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    let deliveries = report["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 3);
    for d in deliveries {
        assert_eq!(d["outcome"], "delivered", "{d}");
        assert_eq!(d["provider_status"], 200);
        assert_eq!(d["attempts"], 1);
    }

    // Production APNs got the APNS device, the sandbox the APNS:dev device.
    let prod = m.apns.requests();
    let dev = m.apns_dev.requests();
    assert_eq!((prod.len(), dev.len()), (1, 1));
    assert_eq!(prod[0].path, format!("/3/device/{t1}"));
    assert_eq!(dev[0].path, format!("/3/device/{t2}"));
    for (req, key) in [(&prod[0], &b1), (&dev[0], &b2)] {
        assert_eq!(req.header("apns-push-type"), Some("voip"));
        assert_eq!(req.header("apns-topic"), Some("com.example.KitchenSink.voip"));
        assert_eq!(req.header("apns-priority"), Some("10"));
        let exp: i64 = req.header("apns-expiration").unwrap().parse().unwrap();
        assert!((before / 1000 + 30..=before / 1000 + 32).contains(&exp), "apns-expiration {exp}");
        let id = req.header("apns-id").unwrap();
        assert!(uuid::Uuid::parse_str(id).is_ok() && id == id.to_lowercase(), "{id}");
        assert!(req.header("authorization").unwrap().starts_with("bearer "));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["aps"], json!({}));
        let v2 = decrypt_v2(body["data"].as_str().unwrap(), key);
        assert_eq!(v2["type"], "incomingcall");
        assert_eq!(v2["pushid"], "3f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b");
        assert_eq!(v2["displayname"], "Zoë Example");
        assert_eq!(v2["displaynumber"], "+14085551234");
        assert_eq!(v2["payloadversion"], "V2");
        assert_eq!(v2["huntpilotdn"], "5000");
        let ring_end: i64 = v2["ringexpiretime"].as_str().unwrap().parse().unwrap();
        assert!((before + 30_000..before + 32_000).contains(&ring_end), "{ring_end}");
        assert!(body.to_string().len() <= 5120);
    }
    // The JWE header is exactly the one nimbus expects.
    let body: Value = serde_json::from_slice(&prod[0].body).unwrap();
    assert!(body["data"].as_str().unwrap().starts_with("eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0.."));

    let sends = m.fcm.sends();
    assert_eq!(sends.len(), 1);
    assert_eq!(sends[0].path, format!("/v1/projects/{FCM_PROJECT}/messages:send"));
    assert!(sends[0].header("authorization").unwrap().starts_with("Bearer "));
    let msg: Value = serde_json::from_slice(&sends[0].body).unwrap();
    assert_eq!(msg["message"]["token"], "fcm-token:APA91bHun4MxP5egoKMwt2KZFBaFUH");
    assert_eq!(msg["message"]["android"]["priority"], "HIGH");
    let ttl = msg["message"]["android"]["ttl"].as_str().unwrap();
    assert!(ttl == "30s" || ttl == "29s", "{ttl}");
    assert!(msg["message"].get("notification").is_none() && msg["message"].get("apns").is_none());
    assert_eq!(decrypt_v2(msg["message"]["data"]["body"].as_str().unwrap(), &b3)["pushid"], "3f6c1a52-9d0e-4b8e-a6a1-1c2d3e4f5a6b");

    // The report can be read again later.
    let id = report["call_id"].as_str().unwrap();
    let again: Value = app.admin(reqwest::Method::GET, &format!("/v1/calls/{id}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(again, report);
}

#[tokio::test]
async fn one_provider_jwt_and_one_oauth_token_serve_many_calls() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    register(&app, "iphone", &apns_token(), "APNS", &k).await;
    register(&app, "android", "fcm-token-2", "FCM", &k).await;
    for i in 0..15 {
        let r = app.post_call(&json!({"user": "alice", "pushid": format!("p{i}")})).await;
        let report: Value = r.json().await.unwrap();
        assert!(report["deliveries"].as_array().unwrap().iter().all(|d| d["outcome"] == "delivered"), "{report}");
    }
    assert_eq!(m.apns.requests().len(), 15);
    assert_eq!(m.apns.distinct_provider_tokens(), 1, "provider JWT reused");
    assert_eq!(m.apns.connections_accepted(), 1, "one HTTP/2 connection reused");
    assert_eq!(m.fcm.sends().len(), 15);
    assert_eq!(m.fcm.grants_issued(), 1, "OAuth access token reused");
}

#[tokio::test]
async fn dead_tokens_are_removed_from_the_store() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let (gone, bad, alive) = (apns_token(), apns_token(), apns_token());
    register(&app, "gone", &gone, "APNS", &k).await;
    register(&app, "bad", &bad, "APNS", &k).await;
    register(&app, "alive", &alive, "APNS", &k).await;
    register(&app, "android", "fcm-unregistered", "FCM", &k).await;
    m.apns.fail_token(&gone, 410, "Unregistered");
    m.apns.fail_token(&bad, 400, "BadDeviceToken");
    m.fcm.fail_token("fcm-unregistered", FcmReply::unregistered());

    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    let by_dev = |d: &str| report["deliveries"].as_array().unwrap().iter().find(|x| x["device"] == d).unwrap().clone();
    assert_eq!(by_dev("gone")["outcome"], "token_removed");
    assert_eq!(by_dev("gone")["provider_status"], 410);
    assert_eq!(by_dev("gone")["reason"], "Unregistered");
    assert_eq!(by_dev("bad")["outcome"], "token_removed");
    assert_eq!(by_dev("android")["outcome"], "token_removed");
    assert_eq!(by_dev("alive")["outcome"], "delivered");
    let left: Vec<String> = app.devices("alice").await.as_array().unwrap().iter().map(|d| d["device"].as_str().unwrap().to_string()).collect();
    assert_eq!(left, vec!["alive"]);
    let metrics = app.client.get(app.url("/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("pushrelay_tokens_removed_total"), "{metrics}");
}

#[tokio::test]
async fn retries_under_429_and_503_deliver_within_the_ring_window() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let t = apns_token();
    register(&app, "iphone", &t, "APNS", &k).await;
    register(&app, "android", "fcm-flaky", "FCM", &k).await;
    m.apns.script_token(
        &t,
        vec![ScriptedReply::error(429, "TooManyRequests").with_retry_after(1), ScriptedReply::error(503, "ServiceUnavailable"), ScriptedReply::ok()],
    );
    m.fcm.script_token("fcm-flaky", vec![FcmReply::unavailable().with_retry_after(1), FcmReply::internal(), FcmReply::ok()]);
    let started = Instant::now();
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "ring_seconds": 10})).await.json().await.unwrap();
    for d in report["deliveries"].as_array().unwrap() {
        assert_eq!(d["outcome"], "delivered", "{d}");
        assert_eq!(d["attempts"], 3, "{d}");
    }
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(1000), "Retry-After of 1 s was honoured ({took:?})");
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert_eq!(m.apns.requests().len(), 3);
}

#[tokio::test]
async fn a_provider_that_always_fails_ends_in_expired_by_the_ring_end() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let t = apns_token();
    register(&app, "iphone", &t, "APNS", &k).await;
    register(&app, "android", "fcm-down", "FCM", &k).await;
    m.apns.fail_token(&t, 503, "ServiceUnavailable");
    m.fcm.fail_token("fcm-down", FcmReply::unavailable());
    let started = Instant::now();
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p", "ring_seconds": 2})).await.json().await.unwrap();
    let took = started.elapsed();
    assert!(took <= Duration::from_millis(2500), "answered {took:?} after a 2 s ring");
    for d in report["deliveries"].as_array().unwrap() {
        assert_eq!(d["outcome"], "expired", "{d}");
        assert!(d["attempts"].as_u64().unwrap() >= 2, "{d}");
        assert_eq!(d["provider_status"], 503);
    }
    // The device is kept: 503 says nothing about the token.
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn a_permanent_provider_error_fails_at_once_and_keeps_the_token() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let t = apns_token();
    register(&app, "iphone", &t, "APNS", &k).await;
    m.apns.fail_token(&t, 400, "DeviceTokenNotForTopic");
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    let d = &report["deliveries"][0];
    assert_eq!(d["outcome"], "failed");
    assert_eq!(d["reason"], "DeviceTokenNotForTopic");
    assert_eq!(d["attempts"], 1);
    assert_eq!(app.devices("alice").await.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_oversize_payload_is_refused_before_sending() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    register(&app, "iphone", &apns_token(), "APNS", &k).await;
    let huge = "😀".repeat(1000);
    let report: Value = app
        .post_call(&json!({"user": "alice", "pushid": "p", "displayname": huge, "displaynumber": huge, "huntpilotdn": huge}))
        .await
        .json()
        .await
        .unwrap();
    let d = &report["deliveries"][0];
    assert_eq!(d["outcome"], "failed");
    assert_eq!(d["reason"], "payload_too_large");
    assert_eq!(m.apns.requests().len(), 0);
}

#[tokio::test]
async fn certificate_auth_delivers_with_a_client_certificate() {
    let (app, m) = spawn_app_with_mocks().await;
    let cert = m.apns.pki().client_cert("VoIP Services: com.example.KitchenSink");
    let pem = format!("{}{}", cert.cert_pem, cert.key_pem);
    use base64::Engine;
    let body = json!({"bundleId": APP, "certificate": base64::engine::general_purpose::STANDARD.encode(pem)});
    assert_eq!(app.put_apns(APP, &body).await.status(), 200);
    assert_eq!(app.put_user("alice", "pw-alice").await.status(), 201);
    let (k, _) = device_key();
    register(&app, "iphone", &apns_token(), "APNS", &k).await;
    let report: Value = app.post_call(&json!({"user": "alice", "pushid": "p"})).await.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["outcome"], "delivered", "{report}");
    let req = &m.apns.requests()[0];
    assert!(req.client_cert, "TLS client certificate presented");
    assert!(req.header("authorization").is_none());
    assert_eq!(req.header("apns-topic"), Some("com.example.KitchenSink.voip"));
}

#[tokio::test]
async fn call_to_one_device_and_bad_call_bodies() {
    let (app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    register(&app, "a", &apns_token(), "APNS", &k).await;
    register(&app, "b", &apns_token(), "APNS", &k).await;
    let report: Value = app.post_call(&json!({"user": "alice", "device": "b", "pushid": "p"})).await.json().await.unwrap();
    assert_eq!(report["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(report["deliveries"][0]["device"], "b");

    assert_eq!(app.post_call(&json!({"user": "nobody", "pushid": "p"})).await.status(), 404);
    assert_eq!(app.post_call(&json!({"user": "alice", "device": "zzz", "pushid": "p"})).await.status(), 404);
    for bad in [
        json!({"user": "alice"}),
        json!({"user": "alice", "pushid": ""}),
        json!({"user": "alice", "pushid": "p", "ring_seconds": 0}),
        json!({"user": "alice", "pushid": "p", "ring_seconds": 301}),
        json!({"user": "alice", "pushid": "p", "unknown": 1}),
        json!({"user": "alice", "pushid": "p", "displayname": "a\u{0007}b"}),
    ] {
        let r = app.post_call(&bad).await;
        assert_eq!(r.status(), 400, "{bad}");
        let e: Value = r.json().await.unwrap();
        assert!(e["message"].is_string(), "{e}");
    }
    let unknown = uuid::Uuid::new_v4();
    assert_eq!(app.admin(reqwest::Method::GET, &format!("/v1/calls/{unknown}")).send().await.unwrap().status(), 404);
    assert_eq!(app.client.post(app.url("/v1/calls")).json(&json!({"user": "alice", "pushid": "p"})).send().await.unwrap().status(), 401);
    assert_eq!(m.apns.requests().len(), 1, "no push for refused events");
}

#[tokio::test]
async fn an_in_flight_call_still_gets_its_report_during_shutdown() {
    let (mut app, m) = spawn_app_with_mocks().await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    register(&app, "iphone", &apns_token(), "APNS", &k).await;
    m.apns.set_latency(Duration::from_millis(700));
    let req = app.admin(reqwest::Method::POST, "/v1/calls").json(&json!({"user": "alice", "pushid": "p"})).send();
    let call = tokio::spawn(req);
    tokio::time::sleep(Duration::from_millis(250)).await;
    app.stop().await;
    let r = call.await.unwrap().unwrap();
    assert_eq!(r.status(), 200);
    let report: Value = r.json().await.unwrap();
    assert_eq!(report["deliveries"][0]["outcome"], "delivered");
}
