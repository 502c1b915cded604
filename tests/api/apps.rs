use crate::helpers::*;
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use reqwest::Method;
use serde_json::json;

#[tokio::test]
async fn apns_token_credentials_are_stored_and_summarised_without_the_key() {
    let app = spawn_app().await;
    let p8 = p8_pem();
    let r = app.put_apns(APP, &apns_token_body(&p8)).await;
    assert_eq!(r.status(), 200);
    let body = r.text().await.unwrap();
    assert!(!body.contains("PRIVATE KEY") && !body.contains(&STANDARD.encode(&p8)), "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["apns"]["auth"], "token");
    assert_eq!(v["apns"]["keyId"], "73Q8JZND1V");
    assert_eq!(v["apns"]["teamId"], "D7A3215KHV");
    assert_eq!(v["apns"]["bundleId"], APP);

    let got: serde_json::Value = app.admin(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["apns"]["keyId"], "73Q8JZND1V");
    assert!(got.get("fcm").is_none());
}

#[tokio::test]
async fn the_webex_portal_fixture_parses_but_its_truncated_p8_is_refused() {
    let app = spawn_app().await;
    let body: serde_json::Value = serde_json::from_slice(&fixture("admin/apns-token-seed003.json")).unwrap();
    let r = app.put_apns(APP, &body).await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"], "invalid_key");
    assert!(e["message"].as_str().unwrap().contains("keyFile"), "{e}");
    // Nothing was stored.
    assert_eq!(app.admin(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().status(), 404);
}

#[tokio::test]
async fn bad_apns_bodies_are_400_naming_the_problem_and_keep_the_old_credentials() {
    let app = spawn_app().await;
    assert_eq!(app.put_apns(APP, &apns_token_body(&p8_pem())).await.status(), 200);
    let rsa_pem = {
        let sa: serde_json::Value = serde_json::from_slice(&fixture("admin/fcm-valid.json")).unwrap();
        let json = STANDARD.decode(sa["serviceAccount"].as_str().unwrap()).unwrap();
        let sa: serde_json::Value = serde_json::from_slice(&json).unwrap();
        sa["private_key"].as_str().unwrap().to_string()
    };
    let cases: Vec<(serde_json::Value, &str, &str)> = vec![
        (serde_json::from_slice(&fixture("admin/apns-missing-keyid.json")).unwrap(), "missing_field", "keyId"),
        (serde_json::from_slice(&fixture("admin/apns-keyfile-not-base64.json")).unwrap(), "invalid_base64", "keyFile"),
        (
            json!({"keyId": "73Q8JZND1V", "bundleId": APP, "teamId": "D7A3215KHV", "keyFile": STANDARD.encode(&rsa_pem)}),
            "invalid_key",
            "EC private key",
        ),
        (json!({"keyId": "short", "bundleId": APP, "teamId": "D7A3215KHV", "keyFile": STANDARD.encode(p8_pem())}), "invalid_field", "keyId"),
        (json!({"bundleId": APP, "certificate": STANDARD.encode("not a cert")}), "invalid_certificate", "certificate"),
        (
            json!({"keyId": "73Q8JZND1V", "bundleId": APP, "teamId": "D7A3215KHV", "keyFile": STANDARD.encode(p8_pem()), "extra": 1}),
            "invalid_json",
            "extra",
        ),
    ];
    for (body, code, needle) in cases {
        let r = app.put_apns(APP, &body).await;
        assert_eq!(r.status(), 400, "{body}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"], code, "{e}");
        assert!(e["message"].as_str().unwrap().contains(needle), "{e}");
    }
    let r =
        app.admin(Method::PUT, &format!("/v1/apps/{APP}/apns")).body("{not json").header("content-type", "application/json").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let got: serde_json::Value = app.admin(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["apns"]["keyId"], "73Q8JZND1V", "old credentials kept");
}

#[tokio::test]
async fn certificate_auth_accepts_pem_and_pkcs12_and_refuses_a_mismatched_key() {
    let app = spawn_app().await;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = rcgen::CertificateParams::new(vec!["VoIP Services: com.example.KitchenSink".into()]).unwrap().self_signed(&key).unwrap();
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let r = app.put_apns(APP, &json!({"bundleId": APP, "certificate": STANDARD.encode(&pem)})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let got: serde_json::Value = app.admin(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["apns"]["auth"], "certificate");

    // PKCS#12 with a password, built by p12-keystore.
    let mut ks = p12_keystore::KeyStore::new();
    let chain = p12_keystore::PrivateKeyChain::new(
        vec![1u8; 20],
        p12_keystore::PrivateKey::from_der(&key.serialize_der()).unwrap(),
        vec![p12_keystore::Certificate::from_der(cert.der()).unwrap()],
    );
    ks.add_entry("voip", p12_keystore::KeyStoreEntry::PrivateKeyChain(chain));
    let p12 = ks.writer("s3cret").write().unwrap();
    let r = app.put_apns(APP, &json!({"bundleId": APP, "certificate": STANDARD.encode(&p12), "password": "s3cret"})).await;
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = app.put_apns(APP, &json!({"bundleId": APP, "certificate": STANDARD.encode(&p12), "password": "wrong"})).await;
    assert_eq!(r.status(), 400);

    let other = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mismatched = format!("{}{}", cert.pem(), other.serialize_pem());
    let r = app.put_apns(APP, &json!({"bundleId": APP, "certificate": STANDARD.encode(&mismatched)})).await;
    assert_eq!(r.status(), 400);
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("does not match"), "{e}");
}

#[tokio::test]
async fn fcm_service_account_is_checked() {
    let app = spawn_app().await;
    let r = app.put_fcm(APP, &fcm_body()).await;
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["fcm"]["project_id"], "pushrelay-test");
    assert!(!v.to_string().contains("PRIVATE"), "{v}");

    for (file, code) in [("admin/fcm-missing-token-uri.json", "invalid_service_account"), ("admin/fcm-seed003.json", "invalid_key")] {
        let body: serde_json::Value = serde_json::from_slice(&fixture(file)).unwrap();
        let r = app.put_fcm("other.app", &body).await;
        assert_eq!(r.status(), 400, "{file}");
        let e: serde_json::Value = r.json().await.unwrap();
        assert_eq!(e["error"], code, "{file}: {e}");
    }
    let r = app.put_fcm("other.app", &json!({"serviceAccount": STANDARD.encode("{\"type\":\"service_account\"}")})).await;
    let e: serde_json::Value = r.json().await.unwrap();
    assert!(e["message"].as_str().unwrap().contains("project_id"), "{e}");
}

#[tokio::test]
async fn delete_credentials_is_204_and_the_app_summary_follows() {
    let app = spawn_app().await;
    app.with_app_and_user().await;
    let r = app.admin(Method::DELETE, &format!("/v1/apps/{APP}/fcm")).send().await.unwrap();
    assert_eq!(r.status(), 204);
    let got: serde_json::Value = app.admin(Method::GET, &format!("/v1/apps/{APP}")).send().await.unwrap().json().await.unwrap();
    assert!(got.get("fcm").is_none() && got.get("apns").is_some(), "{got}");
    assert_eq!(app.admin(Method::DELETE, &format!("/v1/apps/{APP}/apns")).send().await.unwrap().status(), 204);
}

#[tokio::test]
async fn admin_routes_need_the_admin_token() {
    let app = spawn_app().await;
    let r = app.client.get(app.url(&format!("/v1/apps/{APP}"))).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"], "unauthorized");
    let r = app.client.put(app.url("/v1/users/bob")).bearer_auth("wrong-token-wrong-token").json(&json!({"password": "x"})).send().await.unwrap();
    assert_eq!(r.status(), 401);
}

#[tokio::test]
async fn oversize_and_wrong_type_bodies_are_refused() {
    let app = spawn_app().await;
    let big = "x".repeat(70 * 1024);
    let r = app.admin(Method::PUT, &format!("/v1/apps/{APP}/apns")).header("content-type", "application/json").body(big).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let e: serde_json::Value = r.json().await.unwrap();
    assert_eq!(e["error"], "too_large");
    let r = app.admin(Method::PUT, "/v1/users/bob").header("content-type", "text/plain").body("{\"password\":\"x\"}").send().await.unwrap();
    assert_eq!(r.status(), 415);
}
