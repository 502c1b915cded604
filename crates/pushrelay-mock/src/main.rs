//! `pushrelay-mock`: the strict mock APNs (production and sandbox), FCM
//! v1 + OAuth, Huawei Push Kit + OAuth and Web Push servers as a standalone
//! program, for operators who want to try a staging relay end to end
//! without Apple, Google, Huawei or a browser.
//!
//! It generates a test CA, an APNs `.p8` key, a service account, Huawei app
//! credentials and one Web Push subscription, writes them to `--out`, prints
//! the relay settings that point at the mocks, and serves until Ctrl-C /
//! SIGTERM. Every request is logged as one line on stdout (token suffix only).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Parser;
use pushrelay_mock::{fixtures, MockApns, MockApnsConfig, MockApnsKey, MockFcm, MockHms, MockWebPush, TestPki};
use rand::Rng;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Parser, Debug)]
#[command(name = "pushrelay-mock", version, about = "Strict mock APNs, FCM, Huawei Push Kit and Web Push servers for a staging pushrelay")]
struct Args {
    /// Address to bind (the generated server certificate covers 127.0.0.1 and localhost).
    #[arg(long, default_value = "127.0.0.1", env = "PUSHRELAY_MOCK_BIND")]
    bind: IpAddr,
    /// Port of the production APNs mock; sandbox APNs, FCM, HMS and Web Push take the next four (0: any free ports).
    #[arg(long, default_value_t = 0, env = "PUSHRELAY_MOCK_PORT")]
    port: u16,
    /// Bundle ids the APNs mocks accept (repeat, or comma-separated).
    #[arg(long = "bundle", value_delimiter = ',', default_value = "com.example.KitchenSink")]
    bundles: Vec<String>,
    /// FCM project id of the generated service account.
    #[arg(long, default_value = "pushrelay-staging")]
    project: String,
    /// Where the CA, the `.p8` and the service account are written.
    #[arg(long, default_value = "pushrelay-mock")]
    out: PathBuf,
}

fn port(base: u16, offset: u16) -> u16 {
    if base == 0 {
        0
    } else {
        base + offset
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let pki = TestPki::generate();
    let (p8, key_id) = fixtures::apns_p8();
    let team_id = fixtures::apple_id();
    let cfg = |sandbox| MockApnsConfig {
        sandbox,
        bundles: args.bundles.clone(),
        keys: vec![MockApnsKey { team_id: team_id.clone(), key_id: key_id.clone(), p8_pem: p8.clone() }],
        token_update_limit: Some(Duration::from_secs(20 * 60)),
        pki: Some(pki.clone()),
    };
    let at = |offset| SocketAddr::new(args.bind, port(args.port, offset));
    let apns = MockApns::start_on(at(0), cfg(false)).await?;
    let apns_dev = MockApns::start_on(at(1), cfg(true)).await?;
    let fcm = MockFcm::start_on(at(2), pki.clone()).await?;
    let service_account = fixtures::service_account_json(&fcm.token_uri(), &args.project);
    fcm.register_service_account(&service_account);
    let hms = MockHms::start_on(at(3), pki.clone()).await?;
    let hms_app_id = format!("{}", rand::thread_rng().gen_range(100_000_000u64..1_000_000_000));
    let hms_secret = format!("{:032x}", rand::thread_rng().gen::<u128>());
    hms.register_app(&hms_app_id, &hms_secret);
    let webpush = MockWebPush::start_on(at(4), pki.clone()).await?;
    let subscription = webpush.subscribe(None);

    std::fs::create_dir_all(&args.out)?;
    let ca = args.out.join("mock-ca.pem");
    std::fs::write(&ca, pki.ca_pem())?;
    std::fs::write(args.out.join(format!("AuthKey_{key_id}.p8")), &p8)?;
    std::fs::write(args.out.join("service-account.json"), &service_account)?;
    let apns_body = serde_json::json!({
        "keyId": key_id, "teamId": team_id, "bundleId": args.bundles.first().cloned().unwrap_or_default(), "keyFile": STANDARD.encode(&p8),
    });
    std::fs::write(args.out.join("apns-credentials.json"), apns_body.to_string())?;
    let fcm_body = serde_json::json!({ "serviceAccount": STANDARD.encode(&service_account) });
    std::fs::write(args.out.join("fcm-credentials.json"), fcm_body.to_string())?;
    let hms_body = serde_json::json!({ "appId": hms_app_id, "clientSecret": hms_secret });
    std::fs::write(args.out.join("hms-credentials.json"), hms_body.to_string())?;
    std::fs::write(args.out.join("webpush-subscription.json"), subscription.to_json().to_string())?;

    println!("mock APNs (production): {}", apns.url());
    println!("mock APNs (sandbox):    {}", apns_dev.url());
    println!("mock FCM + OAuth:       {}", fcm.base_url());
    println!("mock HMS + OAuth:       {}", hms.base_url());
    println!("mock Web Push:          {}", webpush.origin());
    println!();
    println!("Point a relay at them:");
    println!("  PUSHRELAY_APNS_PRODUCTION_URL={}", apns.url());
    println!("  PUSHRELAY_APNS_SANDBOX_URL={}", apns_dev.url());
    println!("  PUSHRELAY_FCM_BASE_URL={}", fcm.base_url());
    println!("  PUSHRELAY_HMS_TOKEN_URL={}", hms.token_url());
    println!("  PUSHRELAY_HMS_BASE_URL={}", hms.base_url());
    println!("  PUSHRELAY_WEBPUSH_ALLOWED_HOSTS={}", args.bind);
    println!("  PUSHRELAY_TLS_EXTRA_CA_FILE={}", ca.display());
    println!("and store the credentials the mocks accept:");
    println!("  PUT /v1/apps/<app>/apns with {}", args.out.join("apns-credentials.json").display());
    println!("  PUT /v1/apps/<app>/fcm  with {}", args.out.join("fcm-credentials.json").display());
    println!("  PUT /v1/apps/<app>/hms  with {}", args.out.join("hms-credentials.json").display());
    println!("A browser subscription (no applicationServerKey) to register for Web Push:");
    println!("  {}", subscription.to_json());

    let mut seen = [0usize; 5];
    let mut tick = tokio::time::interval(Duration::from_millis(50));
    let stop = shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = tick.tick() => {
                report("apns", &apns.requests(), &mut seen[0]);
                report("apns-sandbox", &apns_dev.requests(), &mut seen[1]);
                report("fcm", &fcm.requests(), &mut seen[2]);
                report("hms", &hms.requests(), &mut seen[3]);
                report("webpush", &webpush.requests(), &mut seen[4]);
            }
        }
    }
    Ok(())
}

/// One stdout line per request not reported yet.
fn report(name: &str, requests: &[pushrelay_mock::RecordedRequest], seen: &mut usize) {
    for r in requests.iter().skip(*seen) {
        let tail = target(r);
        let suffix: String = tail.chars().skip(tail.chars().count().saturating_sub(8)).collect();
        println!("{name}: {} …{suffix} → {} {}", r.method, r.status, r.reason.as_deref().unwrap_or(""));
    }
    *seen = requests.len();
}

/// The device a request was for: the last path segment, or for FCM / HMS
/// sends (`…/messages:send`) the `message.token` of the body.
fn target(r: &pushrelay_mock::RecordedRequest) -> String {
    if r.path.ends_with(":send") {
        let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap_or_default();
        let t = &v["message"]["token"];
        if let Some(t) = t.as_str().or_else(|| t[0].as_str()) {
            return t.to_string();
        }
    }
    r.path.rsplit('/').next().unwrap_or("").to_string()
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term => {} }
}
