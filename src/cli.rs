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
        #[arg(long, value_name = "FILE")]
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
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Load and validate the configuration; non-zero exit with a message on error.
    CheckConfig {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
    },
    /// Make a new master key current and re-seal every stored secret under
    /// it, while nodes run (they follow within seconds and open both keys
    /// until the old one is retired). The new key file is created (mode 0600)
    /// if it does not exist; point `master_key_file` at it on every node.
    RotateMasterKey {
        #[arg(long, value_name = "FILE")]
        config: Option<PathBuf>,
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        /// Where the new master key is (or will be written).
        #[arg(long, value_name = "F")]
        new_key_file: PathBuf,
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
        /// The device key: standard base64 of 32 bytes (the UDS <key>).
        #[arg(long, value_name = "K")]
        key_b64: String,
        /// Fixed IV, base64url of 12 bytes. For tests only: never reuse an IV.
        #[arg(long, value_name = "IV")]
        iv_b64url: Option<String>,
    },
    /// Decrypt a compact JWE from stdin; the plaintext goes to stdout.
    Decrypt {
        /// Standard base64 of the key (16, 24 or 32 bytes).
        #[arg(long, value_name = "K")]
        key_b64: String,
    },
}

fn read_stdin() -> Result<Vec<u8>, String> {
    let mut buf = Vec::new();
    std::io::stdin().read_to_end(&mut buf).map_err(|e| format!("cannot read stdin: {e}"))?;
    Ok(buf)
}

fn fail(msg: impl std::fmt::Display) -> i32 {
    eprintln!("pushrelay: {msg}");
    1
}

fn load(config: Option<PathBuf>, cli: CliOverrides) -> Result<Settings, i32> {
    Settings::load(config.as_deref(), &cli).map_err(|e| {
        eprintln!("pushrelay: configuration error: {e}");
        2
    })
}

pub async fn run(cli: Cli) -> i32 {
    match cli.command {
        Command::Serve { config, listen, database_url } => {
            let settings = match load(config, CliOverrides { listen, database_url }) {
                Ok(s) => s,
                Err(code) => return code,
            };
            let app = match Application::build(settings).await {
                Ok(a) => a,
                Err(e) => return fail(format!("{e:#}")),
            };
            if let Some(token) = &app.generated_admin_token {
                // Printed once, on the first start: only its hash is stored.
                println!("admin token (shown once, store it now): {token}");
                let _ = std::io::stdout().flush();
            }
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
                    println!("migrations applied to {}", crate::startup::redact_url(&settings.database_url));
                    0
                }
                Err(e) => fail(format!("{e:#}")),
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
                Err(e) => return fail(format!("{e:#}")),
            };
            match store.rotate_master_key(new_key, crate::domain::now_ms()).await {
                Ok(r) => {
                    store.close().await;
                    println!(
                        "master key {} ({}, {}) is now current; re-sealed {} secrets. Running nodes switched to it already \
                         (they open both keys); old key(s) {} retire by themselves once nothing uses them (at least {} s from now). \
                         Set master_key_file = {:?} on every node before its next restart.",
                        r.new_id,
                        new_key_file.display(),
                        if created { "new key generated" } else { "existing key" },
                        r.resealed,
                        r.old_ids.join(", "),
                        crate::store::RETIRE_GRACE_MS / 1000,
                        new_key_file.display().to_string()
                    );
                    0
                }
                Err(e) => fail(format!("rotation failed: {e}")),
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
                    return 2;
                }
            }
            println!("configuration ok: listen {}, database {}", settings.listen, crate::startup::redact_url(&settings.database_url));
            0
        }
        Command::Jwe { op } => {
            let input = match read_stdin() {
                Ok(b) => b,
                Err(e) => return fail(e),
            };
            match op {
                JweOp::Encrypt { key_b64, iv_b64url } => match crate::jwe::cli_encrypt(&key_b64, iv_b64url.as_deref(), &input) {
                    Ok(compact) => {
                        println!("{compact}");
                        0
                    }
                    Err(e) => fail(e),
                },
                JweOp::Decrypt { key_b64 } => {
                    let text = String::from_utf8_lossy(&input);
                    match crate::jwe::cli_decrypt(&key_b64, &text) {
                        Ok(plain) => {
                            let _ = std::io::stdout().write_all(&plain);
                            let _ = std::io::stdout().flush();
                            0
                        }
                        Err(e) => fail(e),
                    }
                }
            }
        }
    }
}
