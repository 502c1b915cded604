//! The authorization matrix (issue "Tenants"): every route of
//! `schemas/openapi.yaml` × every kind of credential, each allowed or
//! refused on purpose. The routes are read from the OpenAPI document, so a
//! new route without an entry in `expect` and `request` fails this test.
//!
//! Every request aims at tenant `a`'s objects (alice, her phones, her call,
//! app `APP_A`, a key of tenant a …). For each refused case the test checks
//! that nothing of tenant `a` (and no app, key or tenant row) changed and
//! that no push was sent; an allowed case must succeed (2xx or 3xx).
//! `Isolated` cases (another tenant, or a key bound to another app, acting
//! in its own reach) may succeed, but must change nothing of tenant `a`,
//! send no push and show nothing of it.
use crate::helpers::*;
use crate::tenants::{apns_app, key_of, tenant, APP_A};
use reqwest::Method;
use serde_json::{json, Value};
use std::collections::HashMap;

/// A key's scope.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum P {
    Admin,
    Calls,
    Register,
    Read,
}

const PS: [P; 4] = [P::Admin, P::Calls, P::Register, P::Read];

impl P {
    fn as_str(self) -> &'static str {
        match self {
            P::Admin => "admin",
            P::Calls => "calls",
            P::Register => "register",
            P::Read => "read",
        }
    }
}

/// The kinds of credential.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Cred {
    None,
    AdminToken,
    /// An operator key with one scope (it names tenant a with `?tenant=a`).
    Op(P),
    /// A key of tenant a with one scope.
    Ta(P),
    /// A key of tenant a with calls, register and read, bound to another app of a.
    TaApp,
    /// An admin key of tenant b (it sends what tenant a's key would).
    Tb,
    /// alice's HTTP Basic credentials (tenant a).
    Basic,
}

fn creds() -> Vec<Cred> {
    let mut v = vec![Cred::None, Cred::AdminToken];
    v.extend(PS.map(Cred::Op));
    v.extend(PS.map(Cred::Ta));
    v.extend([Cred::TaApp, Cred::Tb, Cred::Basic]);
    v
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Expect {
    /// Succeeds (2xx/3xx).
    Ok,
    /// Refused with this status; nothing of tenant a changed, no push.
    Refused(u16),
    /// Acts only in its own reach: not a 5xx, nothing of tenant a changed or shown, no push.
    Isolated,
}
use Expect::{Isolated, Ok, Refused};

const APP_A2: &str = "com.a.Second";
const ALICE_EMAIL: &str = "alice@a.example";

fn hms_body() -> Value {
    json!({"appId": "104567891", "clientSecret": "hms-secret-of-a"})
}

fn webpush_body() -> Value {
    json!({"vapidPrivateKey": "yfWPiYE-n46HLnH0KqZOF1fJJU3MYrct3AELtAQ-oRw", "subject": "mailto:ops@a.example"})
}

/// Who may do what, per route. Written out on purpose: a new route needs a line here.
fn expect(method: &str, path: &str, c: Cred) -> Option<Expect> {
    let route = path.strip_prefix("/t/{tenant}").unwrap_or(path);
    let prefixed = route.len() != path.len();
    // The bearer rule for tenant-scoped objects of `scope`: allowed for the
    // admin token, operator and tenant-a keys holding it; 403 for the
    // others; `other_app` for the key bound to another app; `tb` for tenant b.
    let bearer = |scope: &[P], other_app: Expect, tb: Expect| -> Expect {
        let has = |p: P| p == P::Admin || scope.contains(&p);
        match c {
            Cred::None | Cred::Basic => Refused(401),
            Cred::AdminToken => Ok,
            Cred::Op(p) | Cred::Ta(p) => {
                if has(p) {
                    Ok
                } else {
                    Refused(403)
                }
            }
            Cred::TaApp => {
                if scope.iter().any(|p| [P::Calls, P::Register, P::Read].contains(p)) {
                    other_app
                } else {
                    Refused(403)
                }
            }
            Cred::Tb => tb,
        }
    };
    let operator_only = |scope: P| match c {
        Cred::None | Cred::Basic => Refused(401),
        Cred::AdminToken => Ok,
        Cred::Op(p) if p == P::Admin || p == scope => Ok,
        _ => Refused(403),
    };
    // Another tenant naming tenant a by the prefix: 403 wrong_tenant.
    let tb_named = if prefixed { Refused(403) } else { Refused(404) };
    Some(match (method, route) {
        ("get", "/healthz" | "/readyz" | "/metrics" | "/console/login") => Ok,
        // Logout needs a session cookie and its CSRF token: a bearer alone does nothing.
        ("post", "/console/logout") => Ok,
        ("get", "/console") => match c {
            Cred::None | Cred::Basic => Refused(303),
            Cred::Tb | Cred::TaApp => Isolated,
            _ => bearer(&[P::Read], Isolated, Isolated),
        },
        // Sign-in: the credential is the form's token.
        ("post", "/console/login") => match c {
            Cred::None | Cred::Basic => Refused(400),
            Cred::Tb | Cred::TaApp => Isolated,
            _ => bearer(&[P::Read], Isolated, Isolated),
        },
        ("get", "/v1/apps/{app_id}") => bearer(&[P::Read], Refused(404), Refused(404)),
        (
            "put",
            "/v1/apps/{app_id}/apns" | "/v1/apps/{app_id}/fcm" | "/v1/apps/{app_id}/hms" | "/v1/apps/{app_id}/webpush" | "/v1/apps/{app_id}/webex",
        ) => bearer(&[P::Admin], Refused(403), Refused(409)),
        ("delete", "/v1/apps/{app_id}/apns" | "/v1/apps/{app_id}/fcm" | "/v1/apps/{app_id}/hms" | "/v1/apps/{app_id}/webpush") => {
            bearer(&[P::Admin], Refused(403), Refused(404))
        }
        ("post", "/v1/apps/{app_id}/test-push") => bearer(&[P::Admin], Refused(403), Refused(404)),
        ("put" | "delete", "/v1/apps/{app_id}/callback") => bearer(&[P::Admin], Refused(403), Refused(404)),
        ("put", "/v1/users/{userId}") => bearer(&[P::Admin], Refused(403), Isolated),
        ("delete", "/v1/users/{userId}") => bearer(&[P::Admin], Refused(403), Refused(404)),
        // Tenant b has its own alice by then (its `PUT /v1/users/alice` case): it sees hers.
        ("get", "/v1/users/{userId}/devices") => bearer(&[P::Read], Refused(404), Isolated),
        // Native registration: the key bound to another app may not name APP_A;
        // tenant b does not see APP_A (400 unknown_application) nor alice's devices.
        ("put", "/v1/users/{userId}/devices/{deviceId}") => bearer(&[P::Register], Refused(403), Refused(400)),
        ("delete", "/v1/users/{userId}/devices/{deviceId}") => bearer(&[P::Register], Refused(404), Refused(404)),
        // alice is tenant a's: her Basic credentials work under /t/a only.
        ("put" | "delete", "/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken") => match c {
            Cred::Basic if prefixed => Ok,
            _ => Refused(401),
        },
        ("post", "/v1/calls") => bearer(&[P::Calls], Refused(404), Refused(404)),
        ("get", "/v1/calls/{call_id}") => bearer(&[P::Read, P::Calls], Refused(404), Refused(404)),
        ("post", "/v1/calls/{call_id}/cancel") => bearer(&[P::Calls], Refused(404), Refused(404)),
        ("post", "/register") => bearer(&[P::Register], Refused(403), if prefixed { Refused(403) } else { Refused(400) }),
        ("get", "/register") => bearer(&[P::Read], Isolated, if prefixed { Refused(403) } else { Isolated }),
        ("delete", "/register/{device_token}") => bearer(&[P::Register], Refused(404), tb_named),
        // Signed by the app's webhook secret, whoever sends it: the app is
        // tenant a's, so it exists only under tenant a's prefix.
        ("post", "/webhook") => {
            if prefixed {
                Ok
            } else {
                Refused(404)
            }
        }
        ("get" | "post", "/acrobits/token") => match c {
            Cred::Basic if prefixed => Ok,
            Cred::Basic => Refused(401),
            _ => bearer(&[P::Register], Refused(403), if prefixed { Refused(403) } else { Refused(400) }),
        },
        ("post", "/sip/register") => bearer(&[P::Register], Refused(403), Refused(403)),
        ("post", "/sip/wake") => bearer(&[P::Calls], Refused(404), Refused(403)),
        ("post", "/sip/cancel") => bearer(&[P::Calls], Refused(404), Refused(403)),
        ("post", "/v1/api-keys") => bearer(&[P::Admin], Refused(403), Refused(403)),
        ("delete", "/v1/api-keys/{id}") => bearer(&[P::Admin], Refused(403), Refused(404)),
        ("get", "/v1/devices/stale") => bearer(&[P::Read], Isolated, Isolated),
        ("get", "/v1/tenants") => operator_only(P::Read),
        ("get", "/v1/tenants/{tenant}") => bearer(&[P::Read], Ok, Refused(404)),
        ("put" | "delete", "/v1/tenants/{tenant}") => operator_only(P::Admin),
        _ => return None,
    })
}

/// The relay with tenants a and b, apps, users, devices, a call and one key
/// per kind of credential.
struct Fixture {
    app: TestApp,
    m: Mocks,
    /// Follows no redirect (the console answers 303).
    client: reqwest::Client,
    keys: HashMap<Cred, String>,
    call_id: String,
    /// Strings that show tenant a's objects (none may leak to another reach).
    markers: Vec<String>,
}

const HOOK_SECRET: &str = "webhook-secret-of-a";
const PERSON: &str = "person-of-a";

impl Fixture {
    async fn start() -> Self {
        let (app, m) = spawn_app_with_mocks().await;
        assert_eq!(tenant(&app, "a", json!({"sip_domains": ["a.example"]})).await.status(), 201);
        assert_eq!(tenant(&app, "b", json!({"sip_domains": ["b.example"]})).await.status(), 201);
        apns_app(&app, &m, APP_A, Some("a")).await;
        apns_app(&app, &m, APP_A2, Some("a")).await;
        let r = app.put_json(&format!("/v1/apps/{APP_A}/fcm?tenant=a"), &m.fcm_body()).await;
        assert_eq!(r.status(), 200);
        let r = app.put_json(&format!("/v1/apps/{APP_A}/webex?tenant=a"), &json!({"webhookSecret": HOOK_SECRET})).await;
        assert_eq!(r.status(), 200);
        assert_eq!(app.put_json("/v1/users/alice?tenant=a", &json!({"password": "pw-alice"})).await.status(), 201);
        let token = apns_token();
        let r = app
            .client
            .put(app.url("/t/a/cucm-uds/user/alice/device/desk/devicetoken"))
            .basic_auth("alice", Some("pw-alice"))
            .header("content-type", "application/xml")
            .body(uds_xml(&token, "APNS", KEY_B64, APP_A))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = app
            .admin(Method::POST, &format!("/register?app={APP_A}&tenant=a"))
            .json(&json!({"voipToken": apns_token(), "msgToken": apns_token(), "personId": PERSON, "email": ALICE_EMAIL}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let r = app.post_call(&json!({"user": "alice", "tenant": "a", "pushid": "matrix-call", "ring_seconds": 5})).await;
        let call: Value = r.json().await.unwrap();
        let mut keys = HashMap::new();
        keys.insert(Cred::AdminToken, ADMIN_TOKEN.to_string());
        for p in PS {
            keys.insert(Cred::Op(p), key_of(&app, None, &[p.as_str()], None).await.1);
            keys.insert(Cred::Ta(p), key_of(&app, Some("a"), &[p.as_str()], None).await.1);
        }
        keys.insert(Cred::TaApp, key_of(&app, Some("a"), &["calls", "register", "read"], Some(APP_A2)).await.1);
        keys.insert(Cred::Tb, key_of(&app, Some("b"), &["admin"], None).await.1);
        // Room for the devices the allowed cases register.
        assert_eq!(tenant(&app, "a", json!({"sip_domains": ["a.example"], "limits": {"devices_per_user": 1000}})).await.status(), 200);
        // A SIP binding for /sip/wake.
        let sip_token = apns_token();
        let msg = format!(
            "REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bKfx\r\nTo: <sip:1001@a.example>\r\nFrom: <sip:1001@a.example>;tag=fx\r\n\
             Call-ID: fx@10.0.0.1\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@10.0.0.1:5060;pn-provider=apns;pn-prid={sip_token};pn-param=ABCD1234.{APP_A}.voip>;expires=600\r\n\
             Content-Length: 0\r\n\r\n"
        );
        let r = app.admin(Method::POST, "/sip/register").header("content-type", "message/sip").body(msg).send().await.unwrap();
        assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
        let markers = vec![APP_A.to_string(), token[56..].to_string(), sip_token[56..].to_string(), PERSON.to_string(), "matrix-call".to_string()];
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Fixture { app, m, client, keys, call_id: call["call_id"].as_str().unwrap().to_string(), markers }
    }

    /// Wait (at most 3 s) until tenant a's rows stop changing.
    async fn settle(&self) {
        let mut last = self.snapshot().await;
        for _ in 0..60 {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            let now = self.snapshot().await;
            if now == last {
                return;
            }
            last = now;
        }
    }

    fn pushes(&self) -> usize {
        self.m.apns.requests().len() + self.m.apns_dev.requests().len() + self.m.fcm.requests().len()
    }

    /// Tenant a's rows, and every app, key and tenant row, as text.
    async fn snapshot(&self) -> Vec<String> {
        use sqlx::Row;
        sqlx::any::install_default_drivers();
        let pool = sqlx::AnyPool::connect(self.app.database_url()).await.unwrap();
        let t = |c: &str| format!("COALESCE(CAST({c} AS TEXT), '')");
        let queries = [
            format!("SELECT {} || '|' || {} FROM users WHERE tenant_id = 'a'", t("user_id"), t("password_hash")),
            format!(
                "SELECT {} || '|' || {} || '|' || {} || '|' || {} || '|' || {} FROM devices WHERE tenant_id = 'a'",
                t("user_id"),
                t("device_pkid"),
                t("token"),
                t("msg_token"),
                t("updated_at")
            ),
            format!("SELECT {} || '|' || {} FROM calls WHERE tenant_id = 'a'", t("call_id"), t("report")),
            format!("SELECT {} || '|' || {} || '|' || {} FROM push_claims WHERE tenant_id = 'a'", t("push_id"), t("device_pkid"), t("call_id")),
            format!("SELECT {} || '|' || {} || '|' || {} FROM api_keys", t("id"), t("tenant_id"), t("revoked_at")),
            format!("SELECT {} || '|' || {} FROM apps", t("app_id"), t("owner_tenant")),
            format!("SELECT {} || '|' || {} || '|' || {} FROM app_credentials", t("app_id"), t("provider"), t("updated_at")),
            format!("SELECT {} || '|' || {} || '|' || {} FROM app_callbacks", t("tenant_id"), t("app_id"), t("updated_at")),
            format!("SELECT {} || '|' || {} || '|' || {} FROM tenants", t("tenant_id"), t("devices_per_user"), t("updated_at")),
            format!("SELECT {} || '|' || {} FROM tenant_domains", t("domain"), t("tenant_id")),
            format!("SELECT {} FROM callback_outbox WHERE tenant_id = 'a'", t("call_id")),
        ];
        let mut out = Vec::new();
        for q in queries {
            let mut rows: Vec<String> = sqlx::query(&q).fetch_all(&pool).await.unwrap().iter().map(|r| r.get::<String, _>(0)).collect();
            rows.sort();
            out.push(format!("{q}\n{}", rows.join("\n")));
        }
        pool.close().await;
        out
    }

    /// The request for `path` as `c` sends it; fresh objects for it are
    /// made first (by the admin token), so that allowed deletions and
    /// changes have something of their own to act on.
    async fn request(&self, method: &str, path: &str, c: Cred, n: usize) -> reqwest::RequestBuilder {
        let app = &self.app;
        let route = path.strip_prefix("/t/{tenant}").unwrap_or(path);
        let prefix = if route.len() != path.len() { "/t/a" } else { "" };
        // Operators name tenant a; tenant keys act in their own tenant.
        let operator = matches!(c, Cred::AdminToken | Cred::Op(_));
        let q = |sep: char| if operator && prefix.is_empty() { format!("{sep}tenant=a") } else { String::new() };
        let fresh_token = apns_token();
        let (url, body): (String, Option<Value>) = match (method, route) {
            ("get", "/healthz" | "/readyz" | "/metrics" | "/console" | "/console/login") => (route.to_string(), None),
            ("post", "/console/login" | "/console/logout") => (route.to_string(), None),
            ("get", "/v1/apps/{app_id}") => (format!("/v1/apps/{APP_A}{}", q('?')), None),
            ("put", "/v1/apps/{app_id}/apns") => (format!("/v1/apps/{APP_A}/apns{}", q('?')), Some(self.apns_body())),
            ("put", "/v1/apps/{app_id}/fcm") => (format!("/v1/apps/{APP_A}/fcm{}", q('?')), Some(self.m.fcm_body())),
            ("put", "/v1/apps/{app_id}/webex") => (format!("/v1/apps/{APP_A}/webex{}", q('?')), Some(json!({"webhookSecret": HOOK_SECRET}))),
            ("put", "/v1/apps/{app_id}/hms") => (format!("/v1/apps/{APP_A}/hms{}", q('?')), Some(hms_body())),
            ("put", "/v1/apps/{app_id}/webpush") => (format!("/v1/apps/{APP_A}/webpush{}", q('?')), Some(webpush_body())),
            ("delete", "/v1/apps/{app_id}/apns" | "/v1/apps/{app_id}/fcm" | "/v1/apps/{app_id}/hms" | "/v1/apps/{app_id}/webpush") => {
                // A fresh app of tenant a for each case: deleting its credentials leaves APP_A whole.
                let fresh = format!("com.a.Del{n}");
                apns_app(app, &self.m, &fresh, Some("a")).await;
                assert_eq!(app.put_json(&format!("/v1/apps/{fresh}/fcm?tenant=a"), &self.m.fcm_body()).await.status(), 200);
                assert_eq!(app.put_json(&format!("/v1/apps/{fresh}/hms?tenant=a"), &hms_body()).await.status(), 200);
                assert_eq!(app.put_json(&format!("/v1/apps/{fresh}/webpush?tenant=a"), &webpush_body()).await.status(), 200);
                (route.replace("{app_id}", &fresh) + &q('?'), None)
            }
            ("post", "/v1/apps/{app_id}/test-push") => {
                (format!("/v1/apps/{APP_A}/test-push{}", q('?')), Some(json!({"token": fresh_token, "channel": "APNS"})))
            }
            ("put", "/v1/apps/{app_id}/callback") => {
                (format!("/v1/apps/{APP_A}/callback{}", q('?')), Some(json!({"url": "http://127.0.0.1:9/cb", "secret": "0123456789abcdef"})))
            }
            ("delete", "/v1/apps/{app_id}/callback") => {
                let r = app
                    .put_json(&format!("/v1/apps/{APP_A}/callback?tenant=a"), &json!({"url": "http://127.0.0.1:9/cb", "secret": "0123456789abcdef"}))
                    .await;
                assert_eq!(r.status(), 200);
                (format!("/v1/apps/{APP_A}/callback{}", q('?')), None)
            }
            ("put", "/v1/users/{userId}") => (format!("/v1/users/alice{}", q('?')), Some(json!({"password": "pw-alice"}))),
            ("delete", "/v1/users/{userId}") => {
                let victim = format!("victim{n}");
                assert_eq!(app.put_json(&format!("/v1/users/{victim}?tenant=a"), &json!({"password": "pw"})).await.status(), 201);
                (format!("/v1/users/{victim}{}", q('?')), None)
            }
            ("get", "/v1/users/{userId}/devices") => (format!("/v1/users/alice/devices{}", q('?')), None),
            ("put", "/v1/users/{userId}/devices/{deviceId}") => {
                (format!("/v1/users/alice/devices/native{n}{}", q('?')), Some(json!({"channel": "APNS", "application": APP_A, "token": fresh_token})))
            }
            ("delete", "/v1/users/{userId}/devices/{deviceId}") => {
                let body = json!({"channel": "APNS", "application": APP_A, "token": fresh_token});
                let r = app.admin(Method::PUT, &format!("/v1/users/alice/devices/gone-native{n}?tenant=a")).json(&body).send().await.unwrap();
                assert_eq!(r.status(), 201);
                (format!("/v1/users/alice/devices/gone-native{n}{}", q('?')), None)
            }
            ("put", "/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken") => {
                let r = app.client.put(app.url(&format!("{prefix}/cucm-uds/user/alice/device/phone{n}/devicetoken")));
                return self.authorize(r, c).header("content-type", "application/xml").body(uds_xml(&fresh_token, "APNS", KEY_B64, APP_A));
            }
            ("delete", "/cucm-uds/user/{userId}/device/{devicePkid}/devicetoken") => {
                let dev = format!("gone{n}");
                let r = app
                    .client
                    .put(app.url(&format!("/t/a/cucm-uds/user/alice/device/{dev}/devicetoken")))
                    .basic_auth("alice", Some("pw-alice"))
                    .header("content-type", "application/xml")
                    .body(uds_xml(&fresh_token, "APNS", KEY_B64, APP_A))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                let r = app.client.delete(app.url(&format!("{prefix}/cucm-uds/user/alice/device/{dev}/devicetoken")));
                return self.authorize(r, c);
            }
            ("post", "/v1/calls") => (format!("/v1/calls{}", q('?')), Some(json!({"user": "alice", "pushid": format!("m{n}"), "ring_seconds": 3}))),
            ("get", "/v1/calls/{call_id}") => (format!("/v1/calls/{}{}", self.call_id, q('?')), None),
            ("post", "/v1/calls/{call_id}/cancel") => (format!("/v1/calls/{}/cancel{}", self.call_id, q('?')), None),
            ("post", "/register") => {
                (format!("{prefix}/register?app={APP_A}{}", q('&')), Some(json!({"voipToken": fresh_token, "personId": PERSON})))
            }
            ("get", "/register") => (format!("{prefix}/register?email={ALICE_EMAIL}{}", q('&')), None),
            ("delete", "/register/{device_token}") => {
                let r = app
                    .admin(Method::POST, &format!("/register?app={APP_A}&tenant=a"))
                    .json(&json!({"voipToken": fresh_token, "personId": PERSON}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
                (format!("{prefix}/register/{fresh_token}{}", q('?')), None)
            }
            ("post", "/webhook") => {
                let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap();
                let body = json!({"id": "hook", "resource": "callMemberships", "event": "created", "created": now, "actorId": "caller",
                    "data": {"id": format!("membership-{n}"), "callId": format!("call-{n}"), "personId": PERSON, "status": "notified", "created": now}})
                .to_string();
                use hmac::Mac;
                let mut mac = hmac::Hmac::<sha1::Sha1>::new_from_slice(HOOK_SECRET.as_bytes()).unwrap();
                mac.update(body.as_bytes());
                let sig = hex::encode(mac.finalize().into_bytes());
                let r = app.client.post(app.url(&format!("{prefix}/webhook?app={APP_A}")));
                return self.authorize(r, c).header("content-type", "application/json").header("x-spark-signature", sig).body(body);
            }
            ("get" | "post", "/acrobits/token") => {
                use base64::Engine;
                let t = base64::engine::general_purpose::STANDARD.encode(hex::decode(&fresh_token).unwrap());
                let params = format!(
                    "username=alice&selector={n:040x}:1&token_calls={}&appid_calls={APP_A}{}",
                    form_urlencoded::byte_serialize(t.as_bytes()).collect::<String>(),
                    q('&')
                );
                let r = if method == "get" {
                    app.client.get(app.url(&format!("{prefix}/acrobits/token?{params}")))
                } else {
                    app.client
                        .post(app.url(&format!("{prefix}/acrobits/token{}", q('?'))))
                        .header("content-type", "application/x-www-form-urlencoded")
                        .body(params)
                };
                return self.authorize(r, c);
            }
            ("post", "/sip/register") => {
                let msg = format!(
                    "REGISTER sip:a.example SIP/2.0\r\nVia: SIP/2.0/UDP 10.0.0.9:5060;branch=z9hG4bK{n}\r\nTo: <sip:1001@a.example>\r\nFrom: <sip:1001@a.example>;tag={n}\r\n\
                     Call-ID: m{n}@10.0.0.9\r\nCSeq: 1 REGISTER\r\nContact: <sip:1001@10.0.0.{}:5060;pn-provider=apns;pn-prid={fresh_token};pn-param=ABCD1234.{APP_A}.voip>;expires=600\r\n\
                     Content-Length: 0\r\n\r\n",
                    n % 250
                );
                let r = app.client.post(app.url("/sip/register"));
                return self.authorize(r, c).header("content-type", "message/sip").body(msg);
            }
            ("post", "/sip/wake") => {
                ("/sip/wake".to_string(), Some(json!({"aor": "sip:1001@a.example", "call_id": format!("w{n}"), "timeout_ms": 50})))
            }
            ("post", "/sip/cancel") => ("/sip/cancel".to_string(), Some(json!({"aor": "sip:1001@a.example", "call_id": format!("w{n}")}))),
            ("post", "/v1/api-keys") => ("/v1/api-keys".to_string(), Some(json!({"name": "made", "scopes": ["read"], "tenant": "a"}))),
            ("delete", "/v1/api-keys/{id}") => {
                let (id, _) = key_of(app, Some("a"), &["read"], None).await;
                (format!("/v1/api-keys/{id}"), None)
            }
            ("get", "/v1/devices/stale") => (format!("/v1/devices/stale?days=1{}", q('&')), None),
            ("get", "/v1/tenants") => ("/v1/tenants".to_string(), None),
            ("get", "/v1/tenants/{tenant}") => ("/v1/tenants/a".to_string(), None),
            ("put", "/v1/tenants/{tenant}") => {
                ("/v1/tenants/a".to_string(), Some(json!({"sip_domains": ["a.example"], "limits": {"devices_per_user": 50 + n}})))
            }
            ("delete", "/v1/tenants/{tenant}") => {
                let t = format!("gone-{n}");
                assert_eq!(tenant(app, &t, json!({})).await.status(), 201);
                (format!("/v1/tenants/{t}"), None)
            }
            _ => panic!("{method} {path}: no request in matrix.rs"),
        };
        let m = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let mut r = self.client.request(m, app.url(&url));
        if route == "/console/login" && method == "post" {
            let token = self.keys.get(&c).cloned().unwrap_or_default();
            return r
                .header("content-type", "application/x-www-form-urlencoded")
                .body(format!("token={}", form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>()));
        }
        if route == "/console/logout" {
            return self.authorize(r, c).header("content-type", "application/x-www-form-urlencoded").body("csrf=x");
        }
        r = self.authorize(r, c);
        if let Some(b) = body {
            r = r.json(&b);
        }
        r
    }

    fn apns_body(&self) -> Value {
        let mut b = self.m.apns_body();
        b["bundleId"] = json!(APP_A);
        b
    }

    fn authorize(&self, r: reqwest::RequestBuilder, c: Cred) -> reqwest::RequestBuilder {
        match c {
            Cred::None => r,
            Cred::Basic => r.basic_auth("alice", Some("pw-alice")),
            other => r.bearer_auth(&self.keys[&other]),
        }
    }
}

#[tokio::test]
async fn every_route_times_every_credential_is_allowed_or_refused_on_purpose() {
    let routes = documented_routes();
    let creds = creds();
    assert!(routes.len() >= 40, "{} routes read from openapi.yaml", routes.len());
    for (m, p) in &routes {
        for c in &creds {
            assert!(expect(m, p, *c).is_some(), "{m} {p} has no entry in matrix::expect: decide who may call it");
        }
    }
    let fx = Fixture::start().await;
    let mut failures = Vec::new();
    let (mut allowed, mut refused, mut isolated) = (0, 0, 0);
    for (i, (method, path)) in routes.iter().enumerate() {
        for (j, c) in creds.iter().enumerate() {
            let n = i * 100 + j;
            let want = expect(method, path, *c).unwrap();
            let req = fx.request(method, path, *c, n).await;
            let before = (fx.snapshot().await, fx.pushes());
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            let text = r.text().await.unwrap_or_default();
            let case = format!("{} {path} as {c:?}", method.to_uppercase());
            let fits = match want {
                Ok => (200..400).contains(&status) || (path.ends_with("/sip/wake") && status == 408),
                Refused(code) => status == code,
                Isolated => status < 500,
            };
            if !fits {
                failures.push(format!("{case}: expected {want:?}, got {status}: {}", &text[..text.len().min(200)]));
            }
            if want == Ok {
                // What the request started may still be writing (webhook and
                // wake pushes run after the answer): wait until it is done.
                fx.settle().await;
            }
            match want {
                Ok => allowed += 1,
                Refused(_) => refused += 1,
                Isolated => isolated += 1,
            }
            if want == Isolated {
                if let Some(leak) = fx.markers.iter().find(|mk| text.contains(mk.as_str())) {
                    failures.push(format!("{case}: the answer shows tenant a's {leak:?}"));
                }
            }
            if want != Ok {
                // Let anything the request started settle (webhook pushes run after the answer).
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                let after = (fx.snapshot().await, fx.pushes());
                if after.1 != before.1 {
                    failures.push(format!("{case}: {} push(es) sent", after.1 - before.1));
                }
                for (b, a) in before.0.iter().zip(&after.0) {
                    if a != b {
                        failures.push(format!("{case}: tenant a changed:\n  before: {b}\n  after:  {a}"));
                    }
                }
            }
        }
    }
    eprintln!(
        "authorization matrix: {} routes × {} credentials = {} cases ({allowed} allowed, {refused} refused, {isolated} isolated)",
        routes.len(),
        creds.len(),
        routes.len() * creds.len()
    );
    assert!(failures.is_empty(), "{} of {} cases broke the matrix:\n{}", failures.len(), routes.len() * creds.len(), failures.join("\n"));
}
