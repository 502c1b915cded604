//! Provider clients against the strict mocks over real TLS sockets.

use pushrelay::domain::{BundleId, Channel, DeviceToken, Provider};
use pushrelay::provider::apns::{ApnsAuth, ApnsCredentials};
use pushrelay::provider::fcm::FcmCredentials;
use pushrelay::provider::{ApnsClient, ApnsPush, Attempt, Clock, FailureKind, FcmClient, ProviderSettings, PushType};
use pushrelay::secret::Secret;
use pushrelay_mock::fixtures::{apns_p8, apple_id, fresh_rsa_key_pem, service_account_json, service_account_json_with};
use pushrelay_mock::{FcmReply, MockApns, MockApnsConfig, MockApnsKey, MockFcm, ScriptedReply, TestPki};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const BUNDLE: &str = "com.example.app";

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

fn token(i: u32) -> DeviceToken {
    DeviceToken::parse(Provider::Apns, &format!("{:064x}", 0xabcdef00u64 + i as u64)).unwrap()
}

fn voip(t: &DeviceToken) -> ApnsPush {
    ApnsPush::voip(t, &BundleId::parse(BUNDLE).unwrap(), now_s() + 30, br#"{"aps":{},"data":"eyJhbGciOiJkaXIi..x"}"#.to_vec())
}

struct Apns {
    prod: MockApns,
    sandbox: MockApns,
    creds: Arc<ApnsCredentials>,
    settings: ProviderSettings,
}

async fn apns_env(token_update_limit: Option<Duration>) -> Apns {
    let pki = TestPki::generate();
    let (p8, key_id) = apns_p8();
    let team_id = apple_id();
    let key = MockApnsKey { team_id: team_id.clone(), key_id: key_id.clone(), p8_pem: p8.clone() };
    let cfg = |sandbox| MockApnsConfig { sandbox, bundles: vec![BUNDLE.into()], keys: vec![key.clone()], token_update_limit, pki: Some(pki.clone()) };
    let prod = MockApns::start(cfg(false)).await;
    let sandbox = MockApns::start(cfg(true)).await;
    let settings = ProviderSettings {
        apns_production_url: prod.url(),
        apns_sandbox_url: sandbox.url(),
        fcm_base_url: "https://127.0.0.1:9".into(),
        extra_ca_pem: Some(pki.ca_pem()),
        request_timeout: Duration::from_secs(5),
        ..ProviderSettings::default()
    };
    let creds = ApnsCredentials { bundle_id: BundleId::parse(BUNDLE).unwrap(), auth: ApnsAuth::Token { key_id, team_id, p8_pem: Secret::new(p8) } };
    Apns { prod, sandbox, creds: Arc::new(creds), settings }
}

#[tokio::test]
async fn apns_token_auth_request_arrives_as_specified() {
    let env = apns_env(None).await;
    let client = ApnsClient::new(env.settings.clone());
    let t = token(1);
    let push = voip(&t);
    assert_eq!(client.send("app", &env.creds, Channel::Apns, &push).await, Attempt::Delivered { status: 200 });
    let reqs = env.prod.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, format!("/3/device/{}", t.as_str()));
    assert_eq!(r.header("apns-push-type"), Some("voip"));
    assert_eq!(r.header("apns-topic"), Some("com.example.app.voip"));
    assert_eq!(r.header("apns-priority"), Some("10"));
    assert_eq!(r.header("apns-expiration"), Some(push.expiration_epoch_s.to_string().as_str()));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let id = r.header("apns-id").unwrap();
    assert_eq!(uuid::Uuid::parse_str(id).unwrap().hyphenated().to_string(), id);
    assert!(r.header("authorization").unwrap().starts_with("bearer ey"));
    assert!(r.header("apns-collapse-id").is_none());
    assert_eq!(r.body, push.body);
    assert!(env.sandbox.requests().is_empty());
    // A second push gets a fresh apns-id.
    client.send("app", &env.creds, Channel::Apns, &push).await;
    assert_ne!(env.prod.requests()[1].header("apns-id").unwrap(), id);
}

#[tokio::test]
async fn apns_reuses_one_jwt_and_one_connection_for_50_pushes() {
    // Strict mode: a second token within 20 minutes would be refused.
    let env = apns_env(Some(Duration::from_secs(20 * 60))).await;
    let client = Arc::new(ApnsClient::new(env.settings.clone()));
    for i in 0..25 {
        assert!(client.send("app", &env.creds, Channel::Apns, &voip(&token(i))).await.is_delivered());
    }
    let futs = (25..50).map(|i| {
        let (client, creds) = (client.clone(), env.creds.clone());
        async move { client.send("app", &creds, Channel::Apns, &voip(&token(i))).await }
    });
    for a in futures::future::join_all(futs).await {
        assert!(a.is_delivered(), "{a:?}");
    }
    assert_eq!(client.provider_jwt_count(), 1);
    assert_eq!(env.prod.distinct_provider_tokens(), 1);
    assert_eq!(env.prod.connections_accepted(), 1);
    let reqs = env.prod.requests();
    assert_eq!(reqs.len(), 50);
    assert!(reqs.iter().all(|r| r.connection == 1));
    assert_eq!(client.clients_built(), 1);
}

#[tokio::test]
async fn apns_channel_picks_production_or_sandbox() {
    let env = apns_env(None).await;
    let client = ApnsClient::new(env.settings.clone());
    assert!(client.send("app", &env.creds, Channel::ApnsDev, &voip(&token(1))).await.is_delivered());
    assert_eq!((env.prod.requests().len(), env.sandbox.requests().len()), (0, 1));
    assert!(client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await.is_delivered());
    assert_eq!((env.prod.requests().len(), env.sandbox.requests().len()), (1, 1));
    // Same key, one JWT for both environments.
    assert_eq!(client.provider_jwt_count(), 1);
    assert!(matches!(client.send("app", &env.creds, Channel::Fcm, &voip(&token(1))).await, Attempt::Failed { .. }));
}

#[tokio::test]
async fn apns_error_answers_map_to_attempts() {
    let env = apns_env(None).await;
    let client = ApnsClient::new(env.settings.clone());
    let send = |t: DeviceToken| {
        let (client, creds) = (&client, &env.creds);
        async move { client.send("app", creds, Channel::Apns, &voip(&t)).await }
    };

    env.prod.fail_token(token(1).as_str(), 410, "Unregistered");
    assert_eq!(send(token(1)).await, Attempt::TokenGone { status: 410, reason: "Unregistered".into() });

    env.prod.fail_token(token(2).as_str(), 400, "BadDeviceToken");
    assert_eq!(send(token(2)).await, Attempt::TokenGone { status: 400, reason: "BadDeviceToken".into() });

    env.prod.script_token(token(3).as_str(), vec![ScriptedReply::error(429, "TooManyRequests").with_retry_after(30)]);
    assert_eq!(send(token(3)).await, Attempt::Retry { status: Some(429), reason: "TooManyRequests".into(), after: Some(Duration::from_secs(30)) });
    // Script consumed: the next push to that token is delivered.
    assert!(send(token(3)).await.is_delivered());

    env.prod.script_token(token(4).as_str(), vec![ScriptedReply::error(503, "ServiceUnavailable")]);
    assert_eq!(send(token(4)).await, Attempt::Retry { status: Some(503), reason: "ServiceUnavailable".into(), after: None });

    env.prod.script_token(token(5).as_str(), vec![ScriptedReply::error(500, "InternalServerError")]);
    assert!(matches!(send(token(5)).await, Attempt::Retry { status: Some(500), .. }));

    // A token the mock itself finds malformed (not hex).
    let mut bad = voip(&token(6));
    bad.token = "zz".repeat(32);
    assert_eq!(client.send("app", &env.creds, Channel::Apns, &bad).await, Attempt::TokenGone { status: 400, reason: "BadDeviceToken".into() });

    // A topic the mock does not know.
    let mut other = voip(&token(7));
    other.topic = "com.other.app.voip".into();
    assert_eq!(
        client.send("app", &env.creds, Channel::Apns, &other).await,
        Attempt::Failed { kind: FailureKind::Config, status: Some(400), reason: "TopicDisallowed".into() }
    );
    // voip to a non-.voip topic.
    let mut wrong = voip(&token(7));
    wrong.topic = BUNDLE.into();
    assert_eq!(
        client.send("app", &env.creds, Channel::Apns, &wrong).await,
        Attempt::Failed { kind: FailureKind::Config, status: Some(400), reason: "BadTopic".into() }
    );
}

#[tokio::test]
async fn apns_wrong_signing_key_is_failed_without_a_rebuild_loop() {
    let env = apns_env(None).await;
    let ApnsAuth::Token { key_id, team_id, .. } = &env.creds.auth else { unreachable!() };
    let (other_p8, _) = apns_p8();
    env.prod.register_key(team_id, key_id, &other_p8);
    let client = ApnsClient::new(env.settings.clone());
    assert_eq!(
        client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await,
        Attempt::Failed { kind: FailureKind::Auth, status: Some(403), reason: "InvalidProviderToken".into() }
    );
    assert_eq!(env.prod.requests().len(), 1);
    assert_eq!(client.provider_jwt_count(), 1);
}

#[tokio::test]
async fn apns_expired_provider_token_is_rebuilt_and_retried_once() {
    let env = apns_env(None).await;
    // First clock reading is 4000 s in the past (JWT too old for APNs), then real time.
    let calls = Arc::new(AtomicU64::new(0));
    let c2 = calls.clone();
    let clock: Clock = Arc::new(move || if c2.fetch_add(1, Ordering::SeqCst) == 0 { now_s() - 4000 } else { now_s() });
    let client = ApnsClient::with_options(env.settings.clone(), Duration::from_secs(7200), clock);
    assert_eq!(client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await, Attempt::Delivered { status: 200 });
    let reqs = env.prod.requests();
    assert_eq!(reqs.len(), 2);
    assert_eq!((reqs[0].status, reqs[0].reason.as_deref()), (403, Some("ExpiredProviderToken")));
    assert_eq!(reqs[1].status, 200);
    assert_eq!(client.provider_jwt_count(), 2);

    // If the fresh one is refused too, give up after one retry.
    env.prod.set_clock_offset(10_000);
    let a = client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await;
    assert_eq!(a, Attempt::Failed { kind: FailureKind::Auth, status: Some(403), reason: "ExpiredProviderToken".into() });
    assert_eq!(env.prod.requests().len(), 4);
}

#[tokio::test]
async fn apns_token_churn_on_one_connection_is_refused_in_strict_mode() {
    let env = apns_env(Some(Duration::from_secs(20 * 60))).await;
    // Two relay nodes: each its own connection and token — both fine.
    let a = ApnsClient::new(env.settings.clone());
    let b = ApnsClient::new(env.settings.clone());
    assert!(a.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await.is_delivered());
    assert!(b.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await.is_delivered());
    // One client that re-signs every second (a too-short TTL) on the same
    // connection is throttled by APNs.
    let now = Arc::new(AtomicI64::new(pushrelay::provider::system_clock()()));
    let clock_now = now.clone();
    let clock: Clock = Arc::new(move || clock_now.load(Ordering::SeqCst));
    let churn = ApnsClient::with_options(env.settings.clone(), Duration::from_secs(1), clock);
    assert!(churn.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await.is_delivered());
    now.fetch_add(2, Ordering::SeqCst);
    assert_eq!(
        churn.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await,
        Attempt::Retry { status: Some(429), reason: "TooManyProviderTokenUpdates".into(), after: None }
    );
}

#[tokio::test]
async fn apns_oversize_payload_never_reaches_the_wire() {
    let env = apns_env(None).await;
    let client = ApnsClient::new(env.settings.clone());
    let mut p = voip(&token(1));
    p.body = format!(r#"{{"aps":{{}},"data":"{}"}}"#, "x".repeat(5200)).into_bytes();
    assert_eq!(
        client.send("app", &env.creds, Channel::Apns, &p).await,
        Attempt::Failed { kind: FailureKind::Payload, status: None, reason: "payload_too_large".into() }
    );
    let mut alert = ApnsPush::alert(&token(1), &BundleId::parse(BUNDLE).unwrap(), 0, vec![b' '; 4097]);
    alert.push_type = PushType::Alert;
    assert!(matches!(client.send("app", &env.creds, Channel::Apns, &alert).await, Attempt::Failed { .. }));
    assert!(env.prod.requests().is_empty());
    assert_eq!(env.prod.connections_accepted(), 0);
}

#[tokio::test]
async fn apns_certificate_auth_needs_a_client_cert_from_the_ca() {
    let env = apns_env(None).await;
    let cc = env.prod.pki().client_cert("Apple VoIP Services: com.example.app");
    let creds = ApnsCredentials {
        bundle_id: BundleId::parse(BUNDLE).unwrap(),
        auth: ApnsAuth::Certificate { cert_pem: Secret::new(cc.cert_pem), key_pem: Secret::new(cc.key_pem) },
    };
    let client = ApnsClient::new(env.settings.clone());
    assert_eq!(client.send("cert-app", &Arc::new(creds), Channel::Apns, &voip(&token(1))).await, Attempt::Delivered { status: 200 });
    let r = &env.prod.requests()[0];
    assert!(r.client_cert);
    assert!(r.header("authorization").is_none());
    assert_eq!(r.header("apns-topic"), Some("com.example.app.voip"));

    // A certificate from another CA: refused during the TLS handshake.
    let foreign = TestPki::foreign_client_cert("Apple VoIP Services: com.example.app");
    let bad = ApnsCredentials {
        bundle_id: BundleId::parse(BUNDLE).unwrap(),
        auth: ApnsAuth::Certificate { cert_pem: Secret::new(foreign.cert_pem), key_pem: Secret::new(foreign.key_pem) },
    };
    let a = client.send("bad-app", &Arc::new(bad), Channel::Apns, &voip(&token(1))).await;
    assert!(matches!(a, Attempt::Failed { ref reason, .. } if reason.starts_with("tls_error")), "{a:?}");
    assert_eq!(env.prod.requests().len(), 1, "no request may be served without a valid certificate");

    // No certificate and no provider token: 403 MissingProviderToken.
    let cfg = pushrelay::provider::tls::client_config(Some(&env.prod.ca_pem()), None, pushrelay::provider::tls::ALPN_H2).unwrap();
    let raw = reqwest::Client::builder().use_preconfigured_tls(cfg).http2_prior_knowledge().build().unwrap();
    let resp = raw
        .post(format!("{}/3/device/{}", env.prod.url(), token(1).as_str()))
        .header("apns-push-type", "voip")
        .header("apns-topic", "com.example.app.voip")
        .body(r#"{"aps":{}}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 403);
    assert_eq!(resp.text().await.unwrap(), r#"{"reason":"MissingProviderToken"}"#);
}

#[tokio::test]
async fn apns_untrusted_server_certificate_is_failed() {
    let env = apns_env(None).await;
    let settings = ProviderSettings { extra_ca_pem: None, ..env.settings.clone() };
    let client = ApnsClient::new(settings);
    let a = client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await;
    assert!(matches!(a, Attempt::Failed { ref reason, .. } if reason.starts_with("tls_error")), "{a:?}");
    // Nothing listening: retryable.
    let settings = ProviderSettings { apns_production_url: "https://127.0.0.1:9".into(), ..env.settings.clone() };
    let a = ApnsClient::new(settings).send("app", &env.creds, Channel::Apns, &voip(&token(1))).await;
    assert!(matches!(a, Attempt::Retry { status: None, ref reason, .. } if reason.starts_with("connect_error")), "{a:?}");
}

#[tokio::test]
async fn apns_request_timeout_is_retryable() {
    let env = apns_env(None).await;
    env.prod.script_token(token(1).as_str(), vec![ScriptedReply::ok().with_delay(Duration::from_millis(1500))]);
    let settings = ProviderSettings { request_timeout: Duration::from_millis(300), ..env.settings.clone() };
    let client = ApnsClient::new(settings);
    assert_eq!(
        client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await,
        Attempt::Retry { status: None, reason: "timeout".into(), after: None }
    );
}

#[tokio::test]
async fn apns_goaway_makes_the_client_reconnect() {
    let env = apns_env(None).await;
    env.prod.goaway_after(5);
    let client = ApnsClient::new(env.settings.clone());
    let mut delivered = 0;
    for i in 0..20 {
        let a = client.send("app", &env.creds, Channel::Apns, &voip(&token(i))).await;
        if a.is_delivered() {
            delivered += 1;
        } else {
            // A push racing the GOAWAY may be refused; it must be retryable and then go through.
            assert!(matches!(a, Attempt::Retry { .. }), "{a:?}");
            assert!(client.send("app", &env.creds, Channel::Apns, &voip(&token(i))).await.is_delivered());
            delivered += 1;
        }
    }
    assert_eq!(delivered, 20);
    assert!(env.prod.connections_accepted() >= 4, "{}", env.prod.connections_accepted());
    assert_eq!(client.provider_jwt_count(), 1);
    // Later pushes after the churn still succeed.
    env.prod.goaway_after(0);
    assert!(client.send("app", &env.creds, Channel::Apns, &voip(&token(99))).await.is_delivered());
}

#[tokio::test]
async fn apns_credentials_change_builds_a_new_client() {
    let env = apns_env(None).await;
    let client = ApnsClient::new(env.settings.clone());
    assert!(client.send("app", &env.creds, Channel::Apns, &voip(&token(1))).await.is_delivered());
    let (p8, key_id) = apns_p8();
    let team_id = apple_id();
    env.prod.register_key(&team_id, &key_id, &p8);
    let creds2 =
        Arc::new(ApnsCredentials { bundle_id: BundleId::parse(BUNDLE).unwrap(), auth: ApnsAuth::Token { key_id, team_id, p8_pem: Secret::new(p8) } });
    assert!(client.send("app", &creds2, Channel::Apns, &voip(&token(1))).await.is_delivered());
    assert!(client.send("app", &creds2, Channel::Apns, &voip(&token(2))).await.is_delivered());
    assert_eq!(client.clients_built(), 2);
    assert_eq!(env.prod.connections_accepted(), 2);
    assert_eq!(client.provider_jwt_count(), 2);
}

// ---------------------------------------------------------------- FCM

struct Fcm {
    mock: MockFcm,
    creds: FcmCredentials,
    settings: ProviderSettings,
}

async fn fcm_env() -> Fcm {
    let mock = MockFcm::start().await;
    let sa = service_account_json(&mock.token_uri(), "demo-project");
    mock.register_service_account(&sa);
    let creds = FcmCredentials::parse_service_account(sa.as_bytes()).unwrap();
    let settings = ProviderSettings {
        apns_production_url: "https://127.0.0.1:9".into(),
        apns_sandbox_url: "https://127.0.0.1:9".into(),
        fcm_base_url: mock.base_url(),
        extra_ca_pem: Some(mock.ca_pem()),
        request_timeout: Duration::from_secs(5),
        ..ProviderSettings::default()
    };
    Fcm { mock, creds, settings }
}

fn data() -> BTreeMap<String, String> {
    [("body".to_string(), "eyJhbGciOiJkaXIiLCJlbmMiOiJBMjU2R0NNIn0..iv.ct.tag".to_string())].into()
}

#[tokio::test]
async fn fcm_message_arrives_as_specified() {
    let env = fcm_env().await;
    let client = FcmClient::new(env.settings.clone());
    assert_eq!(client.send(&env.creds, "cX1:APA91b-token", &data(), 30).await, Attempt::Delivered { status: 200 });
    let sends = env.mock.sends();
    assert_eq!(sends.len(), 1);
    let r = &sends[0];
    assert_eq!(r.path, "/v1/projects/demo-project/messages:send");
    assert_eq!(r.header("content-type"), Some("application/json; charset=UTF-8"));
    assert!(r.header("authorization").unwrap().starts_with("Bearer ya29."));
    let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(body, serde_json::json!({"message": {"token": "cX1:APA91b-token", "data": data(), "android": {"priority": "HIGH", "ttl": "30s"}}}));
    let grant = env.mock.requests().into_iter().find(|r| r.path == "/token").unwrap();
    assert_eq!(grant.header("content-type"), Some("application/x-www-form-urlencoded"));
    assert!(String::from_utf8(grant.body).unwrap().starts_with("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion="));
}

#[tokio::test]
async fn fcm_one_grant_for_50_sends_and_for_concurrent_first_sends() {
    let env = fcm_env().await;
    let client = Arc::new(FcmClient::new(env.settings.clone()));
    // 25 concurrent first sends share one refresh.
    let futs = (0..25).map(|i| {
        let (client, creds) = (client.clone(), env.creds.clone());
        async move { client.send(&creds, &format!("token-{i}"), &data(), 30).await }
    });
    for a in futures::future::join_all(futs).await {
        assert!(a.is_delivered(), "{a:?}");
    }
    for i in 25..50 {
        assert!(client.send(&env.creds, &format!("token-{i}"), &data(), 30).await.is_delivered());
    }
    assert_eq!(env.mock.grants_issued(), 1);
    assert_eq!(client.oauth_refresh_count(), 1);
    assert_eq!(env.mock.sends().len(), 50);
}

#[tokio::test]
async fn fcm_errors_map_to_attempts() {
    let env = fcm_env().await;
    let client = FcmClient::new(env.settings.clone());
    env.mock.fail_token("gone", FcmReply::unregistered());
    assert_eq!(client.send(&env.creds, "gone", &data(), 30).await, Attempt::TokenGone { status: 404, reason: "UNREGISTERED".into() });

    env.mock.script_token("busy", vec![FcmReply::unavailable().with_retry_after(12)]);
    assert_eq!(
        client.send(&env.creds, "busy", &data(), 30).await,
        Attempt::Retry { status: Some(503), reason: "UNAVAILABLE".into(), after: Some(Duration::from_secs(12)) }
    );
    assert!(client.send(&env.creds, "busy", &data(), 30).await.is_delivered());

    env.mock.script_token("quota", vec![FcmReply::quota_exceeded().with_retry_after(60)]);
    assert_eq!(
        client.send(&env.creds, "quota", &data(), 30).await,
        Attempt::Retry { status: Some(429), reason: "QUOTA_EXCEEDED".into(), after: Some(Duration::from_secs(60)) }
    );
    env.mock.script_token("oops", vec![FcmReply::internal()]);
    assert!(matches!(client.send(&env.creds, "oops", &data(), 30).await, Attempt::Retry { status: Some(500), .. }));

    env.mock.fail_token("other-project", FcmReply::sender_id_mismatch());
    assert!(matches!(
        client.send(&env.creds, "other-project", &data(), 30).await,
        Attempt::Failed { kind: FailureKind::Auth, status: Some(403), ref reason } if reason.starts_with("SENDER_ID_MISMATCH")
    ));

    // The mock's own schema check: a token with a space is not a registration token.
    assert!(matches!(client.send(&env.creds, "bad token", &data(), 30).await, Attempt::TokenGone { status: 400, .. }));

    // Reserved key refused locally, nothing sent.
    let before = env.mock.sends().len();
    let reserved: BTreeMap<String, String> = [("google.x".to_string(), "v".to_string())].into();
    assert!(matches!(client.send(&env.creds, "t", &reserved, 30).await, Attempt::Failed { status: None, .. }));
    assert_eq!(env.mock.sends().len(), before);
    assert_eq!(env.mock.grants_issued(), 1);
}

#[tokio::test]
async fn fcm_refused_bearer_is_refreshed_and_retried_once() {
    let env = fcm_env().await;
    let client = FcmClient::new(env.settings.clone());
    assert!(client.send(&env.creds, "t1", &data(), 30).await.is_delivered());
    env.mock.revoke_access_tokens();
    assert!(client.send(&env.creds, "t1", &data(), 30).await.is_delivered());
    assert_eq!(env.mock.grants_issued(), 2);
    let statuses: Vec<u16> = env.mock.sends().iter().map(|r| r.status).collect();
    assert_eq!(statuses, vec![200, 401, 200]);

    // A 401 that survives the refresh is reported, not looped on.
    env.mock.script_token("t2", vec![FcmReply::unauthenticated(), FcmReply::unauthenticated()]);
    assert!(matches!(
        client.send(&env.creds, "t2", &data(), 30).await,
        Attempt::Failed { kind: FailureKind::Auth, status: Some(401), ref reason } if reason.starts_with("UNAUTHENTICATED")
    ));
    assert_eq!(env.mock.grants_issued(), 3);
}

#[tokio::test]
async fn fcm_token_is_renewed_five_minutes_before_expiry() {
    let env = fcm_env().await;
    env.mock.set_token_lifetime(320);
    let offset = Arc::new(AtomicI64::new(0));
    let o2 = offset.clone();
    let clock: Clock = Arc::new(move || now_s() + o2.load(Ordering::SeqCst));
    let client = FcmClient::with_clock(env.settings.clone(), clock);
    assert!(client.send(&env.creds, "t", &data(), 30).await.is_delivered());
    offset.store(10, Ordering::SeqCst); // 310 s left: still cached
    assert!(client.send(&env.creds, "t", &data(), 30).await.is_delivered());
    assert_eq!(env.mock.grants_issued(), 1);
    offset.store(30, Ordering::SeqCst); // 290 s left: renew
    assert!(client.send(&env.creds, "t", &data(), 30).await.is_delivered());
    assert_eq!(env.mock.grants_issued(), 2);
}

#[tokio::test]
async fn fcm_grant_with_an_unknown_key_is_failed() {
    let env = fcm_env().await;
    let other = service_account_json_with(&env.mock.token_uri(), "demo-project", "relay@demo-project.iam.gserviceaccount.com", &fresh_rsa_key_pem());
    let creds = FcmCredentials::parse_service_account(other.as_bytes()).unwrap();
    let client = FcmClient::new(env.settings.clone());
    let a = client.send(&creds, "t", &data(), 30).await;
    assert!(
        matches!(a, Attempt::Failed { kind: FailureKind::Auth, status: Some(400), ref reason } if reason.starts_with("oauth_invalid_grant")),
        "{a:?}"
    );
    assert!(env.mock.sends().is_empty());
    assert_eq!(env.mock.grants_refused(), 1);
}

// ------------------------------------------------- mock strictness (raw HTTP)

fn raw_client(ca_pem: &str, alpn: &[&[u8]], h2: bool) -> reqwest::Client {
    let cfg = pushrelay::provider::tls::client_config(Some(ca_pem), None, alpn).unwrap();
    let b = reqwest::Client::builder().use_preconfigured_tls(cfg);
    if h2 { b.http2_prior_knowledge() } else { b.http1_only() }.build().unwrap()
}

#[tokio::test]
async fn mock_apns_refuses_what_apple_refuses() {
    let env = apns_env(None).await;
    let ApnsAuth::Token { key_id, team_id, p8_pem } = &env.creds.auth else { unreachable!() };
    let jwt = pushrelay::provider::apns::sign_provider_jwt(key_id, team_id, p8_pem.expose(), now_s()).unwrap();
    let http = raw_client(&env.prod.ca_pem(), pushrelay::provider::tls::ALPN_H2, true);
    let tok = token(1);
    let url = format!("{}/3/device/{}", env.prod.url(), tok.as_str());
    let good: Vec<(&str, String)> = vec![
        ("authorization", format!("bearer {jwt}")),
        ("apns-push-type", "voip".into()),
        ("apns-topic", "com.example.app.voip".into()),
        ("apns-priority", "10".into()),
        ("apns-expiration", "0".into()),
        ("apns-id", uuid::Uuid::new_v4().to_string()),
    ];
    let send = |method: reqwest::Method, url: String, headers: Vec<(&'static str, String)>, body: Vec<u8>| {
        let http = http.clone();
        async move {
            let mut rb = http.request(method, url);
            for (k, v) in headers {
                rb = rb.header(k, v);
            }
            let resp = rb.body(body).send().await.unwrap();
            let status = resp.status().as_u16();
            let v: serde_json::Value = serde_json::from_slice(&resp.bytes().await.unwrap()).unwrap_or_default();
            (status, v["reason"].as_str().unwrap_or_default().to_string())
        }
    };
    let with = |name: &'static str, value: Option<&str>| {
        let mut h: Vec<(&'static str, String)> = good.iter().filter(|(k, _)| *k != name).cloned().collect();
        if let Some(v) = value {
            h.push((name, v.to_string()));
        }
        h
    };
    let body = br#"{"aps":{}}"#.to_vec();
    assert_eq!(send(reqwest::Method::POST, url.clone(), good.clone(), body.clone()).await, (200, String::new()));
    type Case = (Vec<(&'static str, String)>, Vec<u8>, u16, &'static str);
    let cases: Vec<Case> = vec![
        (with("apns-push-type", None), body.clone(), 400, "InvalidPushType"),
        (with("apns-push-type", Some("call")), body.clone(), 400, "InvalidPushType"),
        (with("apns-topic", None), body.clone(), 400, "MissingTopic"),
        (with("apns-topic", Some("com.example.app")), body.clone(), 400, "BadTopic"),
        (with("apns-topic", Some("com.evil.app.voip")), body.clone(), 400, "TopicDisallowed"),
        (with("apns-priority", Some("7")), body.clone(), 400, "BadPriority"),
        (with("apns-expiration", Some("soon")), body.clone(), 400, "BadExpirationDate"),
        (with("apns-id", Some(&uuid::Uuid::new_v4().to_string().to_uppercase())), body.clone(), 400, "BadMessageId"),
        (with("apns-collapse-id", Some(&"c".repeat(65))), body.clone(), 400, "BadCollapseId"),
        (good.clone(), vec![], 400, "PayloadEmpty"),
        (good.clone(), vec![b' '; 5121], 413, "PayloadTooLarge"),
        (with("authorization", None), body.clone(), 403, "MissingProviderToken"),
        (with("authorization", Some("bearer not.a.jwt")), body.clone(), 403, "InvalidProviderToken"),
    ];
    for (headers, b, status, reason) in cases {
        assert_eq!(send(reqwest::Method::POST, url.clone(), headers, b).await, (status, reason.to_string()), "{reason}");
    }
    let mut alert = with("apns-push-type", Some("alert"));
    alert.retain(|(k, _)| *k != "apns-topic");
    alert.push(("apns-topic", BUNDLE.into()));
    assert_eq!(send(reqwest::Method::POST, url.clone(), alert.clone(), vec![b' '; 4097]).await.0, 413);
    assert_eq!(send(reqwest::Method::GET, url.clone(), good.clone(), vec![]).await, (405, "MethodNotAllowed".into()));
    assert_eq!(send(reqwest::Method::POST, format!("{}/3/devices/x", env.prod.url()), good.clone(), body.clone()).await, (404, "BadPath".into()));
    assert_eq!(
        send(reqwest::Method::POST, format!("{}/3/device/xyz", env.prod.url()), good.clone(), body.clone()).await,
        (400, "BadDeviceToken".into())
    );
    // Unsigned token ("alg":"none") is refused.
    use base64::Engine;
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let none = format!("{}.{}.", b64(serde_json::json!({"alg":"none","kid":key_id})), b64(serde_json::json!({"iss":team_id,"iat":now_s()})));
    assert_eq!(
        send(reqwest::Method::POST, url.clone(), with("authorization", Some(&format!("bearer {none}"))), body.clone()).await,
        (403, "InvalidProviderToken".into())
    );
    // 410 carries a timestamp.
    env.prod.fail_token(tok.as_str(), 410, "Unregistered");
    let resp = http
        .post(&url)
        .headers(reqwest::header::HeaderMap::from_iter(good.iter().map(|(k, v)| (reqwest::header::HeaderName::from_static(k), v.parse().unwrap()))))
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 410);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert!(v["timestamp"].as_i64().unwrap() > 1_600_000_000_000);
    // Sandbox answers carry apns-unique-id, production answers do not.
    let sb = raw_client(&env.sandbox.ca_pem(), pushrelay::provider::tls::ALPN_H2, true);
    let mut rb = sb.post(format!("{}/3/device/{}", env.sandbox.url(), token(2).as_str()));
    for (k, v) in &good {
        rb = rb.header(*k, v);
    }
    let resp = rb.body(body.clone()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().contains_key("apns-unique-id") && resp.headers().contains_key("apns-id"));
}

#[tokio::test]
async fn mock_fcm_refuses_what_google_refuses() {
    let env = fcm_env().await;
    // HTTP/1.1 works as well as h2 on the mock; a bad grant type is refused.
    let h1 = raw_client(&env.mock.ca_pem(), &[b"http/1.1"], false);
    let resp = h1
        .post(env.mock.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body("grant_type=password&assertion=x")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.version(), reqwest::Version::HTTP_11);
    assert_eq!(resp.status().as_u16(), 400);
    assert_eq!(resp.json::<serde_json::Value>().await.unwrap()["error"], "unsupported_grant_type");

    let assertion = pushrelay::provider::fcm::grant_assertion(&env.creds, now_s()).unwrap();
    let resp = h1
        .post(env.mock.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={assertion}"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!((v["expires_in"].as_i64(), v["token_type"].as_str()), (Some(3599), Some("Bearer")));
    let bearer = v["access_token"].as_str().unwrap().to_string();

    // An assertion for another audience is refused.
    let mut elsewhere = env.creds.clone();
    elsewhere.token_uri = "https://elsewhere/token".into();
    let wrong_aud = pushrelay::provider::fcm::grant_assertion(&elsewhere, now_s()).unwrap();
    let resp = h1
        .post(env.mock.token_uri())
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Ajwt-bearer&assertion={wrong_aud}"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 400, "aud must be the token_uri");

    let h2 = raw_client(&env.mock.ca_pem(), pushrelay::provider::tls::ALPN_H2_HTTP1, false);
    let url = format!("{}/v1/projects/demo-project/messages:send", env.mock.base_url());
    let post = |body: serde_json::Value, url: String, bearer: Option<String>| {
        let h2 = h2.clone();
        async move {
            let mut rb = h2.post(url).header("content-type", "application/json; charset=UTF-8");
            if let Some(b) = bearer {
                rb = rb.bearer_auth(b);
            }
            let resp = rb.body(body.to_string()).send().await.unwrap();
            let status = resp.status().as_u16();
            let v: serde_json::Value = resp.json().await.unwrap();
            (status, v)
        }
    };
    let msg = |data: serde_json::Value, android: serde_json::Value| serde_json::json!({"message": {"token": "t", "data": data, "android": android}});
    let ok_android = serde_json::json!({"priority": "HIGH", "ttl": "30s"});
    let (s, v) = post(msg(serde_json::json!({"body": "x"}), ok_android.clone()), url.clone(), Some(bearer.clone())).await;
    assert_eq!(s, 200);
    assert!(v["name"].as_str().unwrap().starts_with("projects/demo-project/messages/"));

    let (s, v) = post(msg(serde_json::json!({"body": "x"}), ok_android.clone()), url.clone(), None).await;
    assert_eq!((s, v["error"]["status"].as_str()), (401, Some("UNAUTHENTICATED")));
    let other = format!("{}/v1/projects/other-project/messages:send", env.mock.base_url());
    let (s, _) = post(msg(serde_json::json!({"body": "x"}), ok_android.clone()), other, Some(bearer.clone())).await;
    assert_eq!(s, 403);

    let bad = [
        msg(serde_json::json!({"n": 1}), ok_android.clone()),
        msg(serde_json::json!({"ok": true}), ok_android.clone()),
        msg(serde_json::json!({"from": "x"}), ok_android.clone()),
        msg(serde_json::json!({"gcm.x": "x"}), ok_android.clone()),
        msg(serde_json::json!({"body": "x".repeat(4093)}), ok_android.clone()),
        msg(serde_json::json!({"body": "x"}), serde_json::json!({"priority": "high"})),
        msg(serde_json::json!({"body": "x"}), serde_json::json!({"ttl": "30"})),
        msg(serde_json::json!({"body": "x"}), serde_json::json!({"ttl": 30})),
        msg(serde_json::json!({"body": "x"}), serde_json::json!({"ttl": "2419201s"})),
        msg(serde_json::json!({"body": "x"}), serde_json::json!({"ttl": "1.1234567890s"})),
        msg(serde_json::json!({"body": "x"}), serde_json::json!({"prio": "HIGH"})),
        serde_json::json!({"message": {"data": {"body": "x"}}}),
        serde_json::json!({"message": {"token": "t", "apnz": {}}}),
    ];
    for b in bad {
        let (s, v) = post(b.clone(), url.clone(), Some(bearer.clone())).await;
        assert_eq!(s, 400, "{b}");
        assert_eq!(v["error"]["status"], "INVALID_ARGUMENT", "{b}");
        assert_eq!(v["error"]["details"][0]["errorCode"], "INVALID_ARGUMENT", "{b}");
    }
    for ttl in ["0s", "30s", "1.5s", "2419200s", "3.000000001s"] {
        let (s, v) = post(msg(serde_json::json!({"body": "x"}), serde_json::json!({"ttl": ttl})), url.clone(), Some(bearer.clone())).await;
        assert_eq!(s, 200, "{ttl}: {v}");
    }
}
