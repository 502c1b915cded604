//! The command line (interface.md §1). Each subcommand is a function that
//! returns an exit code; `main` only parses and calls `run`.

use crate::config::{CliOverrides, Settings};
use crate::startup::{open_store, shutdown_signal, Application};
use clap::{Parser, Subcommand};
use std::io::{Read, Write};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(name = "pushrelay", version, about = "Wakes phones for incoming calls: registrations in (CUCM UDS, Webex, SIP…), APNs VoIP and FCM v1 out")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the relay (defaults: 127.0.0.1:8787, SQLite at ./pushrelay.db).
    Serve {
        /// TOML config file; every key can also come from PUSHRELAY_* variables.
        #[arg(long, value_name = "FILE", env = "PUSHRELAY_CONFIG")]
        config: Option<PathBuf>,
        /// Address to listen on (overrides `listen`).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// sqlite://FILE or postgres://… (overrides `database_url`).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Apply database migrations and exit.
    Migrate {
        #[arg(long, value_name = "FILE", env = "PUSHRELAY_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Load and validate the configuration; non-zero exit with a message on error.
    CheckConfig {
        #[arg(long, value_name = "FILE", env = "PUSHRELAY_CONFIG")]
        config: Option<PathBuf>,
    },
    /// Make a new master key current and re-seal every stored secret under
    /// it, while nodes run (they follow within seconds and open both keys
    /// until the old one is retired). The new key file is created (mode 0600)
    /// if it does not exist; point `master_key_file` at it on every node.
    RotateMasterKey {
        #[arg(long, value_name = "FILE", env = "PUSHRELAY_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Where the new master key is (or will be written).
        #[arg(long, value_name = "F")]
        new_key_file: PathBuf,
    },
    /// Send one test push with an app's stored credentials and print the
    /// provider's answer as JSON (exit 0 only when it was delivered).
    /// Stores nothing but the credential health.
    Push {
        #[arg(long, value_name = "FILE", env = "PUSHRELAY_CONFIG")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// The app whose credentials sign the push.
        #[arg(long)]
        app: String,
        /// The device token (APNs hex, an FCM or Huawei token, a Web Push endpoint).
        #[arg(long)]
        token: String,
        /// APNS, APNS:dev, FCM, HMS or WEBPUSH.
        #[arg(long, default_value = "APNS")]
        channel: String,
        /// voip or alert (APNs).
        #[arg(long = "type", default_value = "voip")]
        kind: String,
    },
    /// The JWE codec (dir + A256GCM) as a tool, for support staff and interop tests.
    Jwe {
        #[command(subcommand)]
        op: JweOp,
    },
}

#[derive(Subcommand, Debug)]
pub enum JweOp {
    /// Encrypt stdin (the V2 JSON) into a compact JWE on stdout.
    Encrypt {
        #[command(flatten)]
        key: JweKey,
        /// Fixed IV, base64url of 12 bytes. For tests only: never reuse an IV.
        #[arg(long, value_name = "IV")]
        iv_b64url: Option<String>,
    },
    /// Decrypt a compact JWE from stdin; the plaintext goes to stdout.
    Decrypt {
        #[command(flatten)]
        key: JweKey,
    },
}

/// The device key (standard base64 of 16, 24 or 32 bytes, the UDS <key>):
/// from a file or the environment, so it stays out of `ps` and shell
/// history; `--key-b64` still works for tests.
#[derive(clap::Args, Debug)]
#[group(required = true, multiple = false)]
pub struct JweKey {
    /// A file holding the base64 key (surrounding whitespace ignored).
    #[arg(long, value_name = "FILE")]
    key_file: Option<PathBuf>,
    /// The base64 key in the environment.
    #[arg(long = "key-env", env = "PUSHRELAY_JWE_KEY", value_name = "K", hide_env_values = true)]
    key_env: Option<String>,
    /// The base64 key itself (visible to other users in `ps`: prefer the others).
    #[arg(long, value_name = "K")]
    key_b64: Option<String>,
}

impl JweKey {
    fn resolve(self) -> Result<String, String> {
        if let Some(path) = self.key_file {
            let text = std::fs::read_to_string(&path).map_err(|e| format!("--key-file {}: {e}", path.display()))?;
            return Ok(text.trim().to_string());
        }
        self.key_env.or(self.key_b64).ok_or_else(|| "a key is required: --key-file, PUSHRELAY_JWE_KEY or --key-b64".into())
    }
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(buf)
}

/// Exit code of a configuration error (EX_CONFIG): systemd's
/// `RestartPreventExitStatus=78` stops restart loops on a bad config.
pub const EXIT_CONFIG: i32 = 78;

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("pushrelay: {msg}");
    1
}

/// A start-up failure: 78 when its cause is a setting (a key whose file is
/// missing, unreadable or wrong), else 1.
fn fail_start(e: anyhow::Error) -> i32 {
    if e.chain().any(|c| c.is::<crate::config::ConfigError>()) {
        eprintln!("pushrelay: configuration error: {e:#}");
        return EXIT_CONFIG;
    }
    fail(format!("{e:#}"))
}

fn load(config: Option<PathBuf>, cli: CliOverrides) -> Result<Settings, i32> {
    let loaded = Settings::load(config.as_deref(), &cli).map_err(|e| {
        eprintln!("pushrelay: configuration error: {e}");
        EXIT_CONFIG
    });
    // Logging follows the settings (`log_format`); with no settings, text.
    crate::telemetry::init_tracing(loaded.as_ref().map(|s| s.log_format).unwrap_or_default());
    loaded
}

/// Write to stdout; a closed pipe (`… | head -c1`) is a quiet, successful
/// end, not a panic.
fn out(bytes: &[u8]) -> i32 {
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(bytes).and_then(|()| stdout.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => fail(format!("cannot write stdout: {e}")),
    }
}

pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve { config, listen, database_url } => {
            let overrides = CliOverrides { listen, database_url };
            let settings = match load(config.clone(), overrides.clone()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let mut app = match Application::build(settings).await {
                Ok(a) => a,
                Err(e) => return fail_start(e),
            };
            if let Some(token) = &app.generated_admin_token {
                // Printed once, on the first start: only its hash is stored.
                out(format!("admin token (shown once, store it now): {token}\n").as_bytes());
            }
            app.reload_from(config, overrides);
            match app.run_until_stopped(shutdown_signal()).await {
                Ok(()) => 0,
                Err(e) => fail(format!("{e:#}")),
            }
        }
        Command::Migrate { config, database_url } => {
            let settings = match load(config, CliOverrides { listen: None, database_url }) {
                Ok(s) => s,
                Err(code) => return code,
            };
            match open_store(&settings).await {
                Ok(store) => {
                    store.close().await;
                    out(format!("migrations applied to {}\n", crate::startup::redact_url(&settings.database_url)).as_bytes())
                }
                Err(e) => fail_start(e),
            }
        }
        Command::RotateMasterKey { config, database_url, new_key_file } => {
            let settings = match load(config, CliOverrides { listen: None, database_url }) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let (new_key, created) = match crate::envelope::MasterKey::load_or_create(&new_key_file) {
                Ok(k) => k,
                Err(e) => return fail(e),
            };
            let store = match open_store(&settings).await {
                Ok(s) => s,
                Err(e) => return fail_start(e),
            };
            match store.rotate_master_key(new_key, crate::domain::now_ms()).await {
                Ok(r) => {
                    store.close().await;
                    out(format!(
                        "master key {} ({}, {}) is now current; re-sealed {} secrets. Running nodes switched to it already \
                         (they open both keys); old key(s) {} retire by themselves once nothing uses them (at least {} s from now). \
                         Set master_key_file = {:?} on every node before its next restart.\n",
                        r.new_id,
                        new_key_file.display(),
                        if created { "new key generated" } else { "existing key" },
                        r.resealed,
                        r.old_ids.join(", "),
                        crate::store::RETIRE_GRACE_MS / 1000,
                        new_key_file.display().to_string()
                    )
                    .as_bytes())
                }
                Err(e) => fail(format!("rotation failed: {e}")),
            }
        }
        Command::Push { config, database_url, app, token, channel, kind } => {
            let settings = match load(config, CliOverrides { listen: None, database_url }) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let parsed = (|| {
                let app = crate::domain::AppId::parse(&app).map_err(|e| format!("--app: {}", e.message))?;
                let channel = crate::domain::Channel::parse_any(&channel, "--channel").map_err(|e| e.message)?;
                let token = crate::domain::DeviceToken::for_channel(channel, &token).map_err(|e| format!("--token: {}", e.message))?;
                let kind = match kind.as_str() {
                    "voip" => crate::payload::TestKind::Voip,
                    "alert" => crate::payload::TestKind::Alert,
                    _ => return Err("--type must be voip or alert".to_string()),
                };
                Ok((app, channel, token, kind))
            })();
            let (app, channel, token, kind) = match parsed {
                Ok(p) => p,
                Err(e) => return fail(e),
            };
            match crate::startup::test_push(&settings, &app, channel, &token, kind).await {
                Ok(answer) => {
                    let code = out(format!("{answer}\n").as_bytes());
                    if answer["outcome"] == "delivered" {
                        code
                    } else {
                        1
                    }
                }
                Err(e) => fail_start(e),
            }
        }
        Command::CheckConfig { config } => {
            let settings = match load(config, CliOverrides::default()) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let key_path = settings.master_key_path();
            if key_path.exists() {
                if let Err(e) = crate::envelope::MasterKey::load(&key_path) {
                    eprintln!("pushrelay: configuration error: config key `master_key_file`: {e}");
                    return EXIT_CONFIG;
                }
            }
            out(format!("configuration ok: listen {}, database {}\n", settings.listen, crate::startup::redact_url(&settings.database_url)).as_bytes())
        }
        Command::Jwe { op } => {
            crate::telemetry::init_tracing(Default::default());
            let input = match read_stdin() {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            match op {
                JweOp::Encrypt { key, iv_b64url } => {
                    let key_b64 = match key.resolve() {
                        Ok(k) => k,
                        Err(e) => return fail(e),
                    };
                    match crate::jwe::cli_encrypt(&key_b64, iv_b64url.as_deref(), &input) {
                        Ok(compact) => out(format!("{compact}\n").as_bytes()),
                        Err(e) => fail(e),
                    }
                }
                JweOp::Decrypt { key } => {
                    let key_b64 = match key.resolve() {
                        Ok(k) => k,
                        Err(e) => return fail(e),
                    };
                    let text = String::from_utf8_lossy(&input);
                    match crate::jwe::cli_decrypt(&key_b64, &text) {
                        Ok(plain) => out(&plain),
                        Err(e) => fail(e),
                    }
                }
            }
        }
    }
}
