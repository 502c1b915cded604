//! Settings: defaults → TOML file → `PUSHRELAY_*` environment → CLI flags,
//! then `validate()`. The key → env-var table is explicit because keys
//! contain `_` (a generic separator would be ambiguous).
//!
//! Depends on `secret` only. Nothing here opens a socket or a database.

use crate::secret::Secret;
pub use crate::store::SqliteSynchronous;
pub use crate::telemetry::LogFormat;
use serde::Deserialize;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

/// Every configuration key with its environment variable (interface.md §1,
/// §6). A key here may be set in the TOML file (dotted keys are sections)
/// and overridden by its variable; nothing else is accepted in the file but
/// the `sip.user_agents.<name>` rules.
pub const ENV_KEYS: &[(&str, &str)] = &[
    ("listen", "PUSHRELAY_LISTEN"),
    ("database_url", "PUSHRELAY_DATABASE_URL"),
    ("admin_token", "PUSHRELAY_ADMIN_TOKEN"),
    ("master_key_file", "PUSHRELAY_MASTER_KEY_FILE"),
    ("apns.production_url", "PUSHRELAY_APNS_PRODUCTION_URL"),
    ("apns.sandbox_url", "PUSHRELAY_APNS_SANDBOX_URL"),
    ("fcm.base_url", "PUSHRELAY_FCM_BASE_URL"),
    ("hms.token_url", "PUSHRELAY_HMS_TOKEN_URL"),
    ("hms.base_url", "PUSHRELAY_HMS_BASE_URL"),
    ("webpush.allowed_hosts", "PUSHRELAY_WEBPUSH_ALLOWED_HOSTS"),
    ("tls.extra_ca_file", "PUSHRELAY_TLS_EXTRA_CA_FILE"),
    ("calls.ring_seconds", "PUSHRELAY_CALLS_RING_SECONDS"),
    ("limits.calls_per_second", "PUSHRELAY_LIMITS_CALLS_PER_SECOND"),
    ("limits.registrations_per_second", "PUSHRELAY_LIMITS_REGISTRATIONS_PER_SECOND"),
    ("limits.webhooks_per_second", "PUSHRELAY_LIMITS_WEBHOOKS_PER_SECOND"),
    ("limits.devices_per_user", "PUSHRELAY_LIMITS_DEVICES_PER_USER"),
    ("limits.auth_failures_per_minute", "PUSHRELAY_LIMITS_AUTH_FAILURES_PER_MINUTE"),
    ("limits.connections_per_address", "PUSHRELAY_LIMITS_CONNECTIONS_PER_ADDRESS"),
    ("retention.call_days", "PUSHRELAY_RETENTION_CALL_DAYS"),
    ("retention.stale_device_days", "PUSHRELAY_RETENTION_STALE_DEVICE_DAYS"),
    ("sqlite.synchronous", "PUSHRELAY_SQLITE_SYNCHRONOUS"),
    ("log_format", "PUSHRELAY_LOG_FORMAT"),
    ("metrics_listen", "PUSHRELAY_METRICS_LISTEN"),
    ("public_url", "PUSHRELAY_PUBLIC_URL"),
    ("providers.proxy", "PUSHRELAY_PROVIDERS_PROXY"),
    ("providers.answer_timeout_ms", "PUSHRELAY_PROVIDERS_ANSWER_TIMEOUT_MS"),
    ("calls.push_without_claim", "PUSHRELAY_CALLS_PUSH_WITHOUT_CLAIM"),
    ("tls.cert_file", "PUSHRELAY_TLS_CERT_FILE"),
    ("tls.key_file", "PUSHRELAY_TLS_KEY_FILE"),
];

/// The environment variable naming the config file (like `--config`).
pub const CONFIG_ENV: &str = "PUSHRELAY_CONFIG";

/// Whole-number keys: (key, smallest, largest value).
const NUMBER_KEYS: &[(&str, i64, i64)] = &[
    ("calls.ring_seconds", 1, 300),
    ("limits.calls_per_second", 0, 1_000_000),
    ("limits.registrations_per_second", 0, 1_000_000),
    ("limits.webhooks_per_second", 0, 1_000_000),
    ("limits.devices_per_user", 1, 100_000),
    ("limits.auth_failures_per_minute", 0, 1_000_000),
    ("limits.connections_per_address", 0, 1_000_000),
    ("retention.call_days", 1, 3650),
    ("retention.stale_device_days", 1, 3650),
    ("providers.answer_timeout_ms", 100, 60_000),
];

#[derive(Clone, Debug)]
pub struct Settings {
    pub listen: SocketAddr,
    pub database_url: String,
    /// Bootstrap admin token; when absent one is generated on first start.
    pub admin_token: Option<Secret<String>>,
    /// Master key for secrets at rest; default: next to the SQLite file.
    pub master_key_file: Option<PathBuf>,
    pub apns: ApnsSettings,
    pub fcm: FcmSettings,
    pub hms: HmsSettings,
    pub webpush: WebPushSettings,
    pub tls: TlsSettings,
    pub calls: CallsSettings,
    pub sip: SipSettings,
    pub limits: LimitSettings,
    pub retention: RetentionSettings,
    pub sqlite: SqliteSettings,
    /// Log lines as `text` (default) or `json`.
    pub log_format: LogFormat,
    /// When set, `/metrics` is served on this address only.
    pub metrics_listen: Option<SocketAddr>,
    /// The relay's URL as clients see it (behind a TLS proxy: `https://…`),
    /// as its origin (`scheme://host[:port]`, lower case): the console's
    /// sign-in accepts it as `Origin`, and an `https` one makes the
    /// console cookie `Secure`.
    pub public_url: Option<String>,
    pub providers: ProviderNetwork,
}

/// How the relay reaches the push services and their OAuth endpoints.
#[derive(Clone, Debug)]
pub struct ProviderNetwork {
    /// An HTTP CONNECT proxy (`http://[user:pass@]host:port`).
    pub proxy: Option<String>,
    /// How long a provider may take to start answering a push before the
    /// connection is taken for dead and replaced (the push is retried).
    pub answer_timeout_ms: u32,
}

impl Default for ProviderNetwork {
    fn default() -> Self {
        Self { proxy: None, answer_timeout_ms: crate::provider::DEFAULT_ANSWER_TIMEOUT.as_millis() as u32 }
    }
}

/// Per-key request rates (per node; 0 = unlimited) and the caps every
/// Internet-facing endpoint lives under (interface.md §6).
#[derive(Clone, Debug)]
pub struct LimitSettings {
    pub calls_per_second: u32,
    pub registrations_per_second: u32,
    /// Webhook deliveries per app and second.
    pub webhooks_per_second: u32,
    /// Devices one user may have; a new device past it is refused (409).
    pub devices_per_user: u32,
    /// Failed authentications per user name / source address and minute
    /// before further attempts are answered 429 without hashing (0 = off).
    pub auth_failures_per_minute: u32,
    /// Open connections per source address (0 = unlimited).
    pub connections_per_address: u32,
}

/// How long records are kept.
#[derive(Clone, Debug)]
pub struct RetentionSettings {
    /// Call reports older than this are deleted (hourly).
    pub call_days: u32,
    /// Devices not registered again for this long are listed by `GET /v1/devices/stale` (never deleted).
    pub stale_device_days: u32,
}

#[derive(Clone, Debug)]
pub struct SqliteSettings {
    pub synchronous: SqliteSynchronous,
}

/// `sip.user_agents.<name> = { regex, token_app, token_type, token_id }`
/// (Kazoo-style push parameters picked by User-Agent, seeds/004), in the
/// order of their names.
#[derive(Clone, Debug, Default)]
pub struct SipSettings {
    pub user_agents: Vec<UserAgentRule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserAgentRule {
    #[serde(skip)]
    pub name: String,
    pub regex: String,
    pub token_app: Option<String>,
    pub token_type: Option<String>,
    pub token_id: Option<String>,
}

#[derive(Clone, Debug)]
pub struct ApnsSettings {
    pub production_url: String,
    pub sandbox_url: String,
}

#[derive(Clone, Debug)]
pub struct FcmSettings {
    pub base_url: String,
}

/// Huawei Push Kit (interface.md §9).
#[derive(Clone, Debug)]
pub struct HmsSettings {
    /// The OAuth 2.0 client-credentials token endpoint.
    pub token_url: String,
    /// Push Kit's API: `{base_url}/v1/{appId}/messages:send`.
    pub base_url: String,
}

/// Web Push (interface.md §9).
#[derive(Clone, Debug)]
pub struct WebPushSettings {
    /// Hosts a subscription's endpoint may name: exact host names, or
    /// `*.`-wildcards for their subdomains. A host listed exactly may also
    /// resolve to a loopback or private address (tests, staging).
    pub allowed_hosts: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct TlsSettings {
    pub extra_ca_file: Option<PathBuf>,
    /// Serve HTTPS on `listen` with this certificate chain (PEM) …
    pub cert_file: Option<PathBuf>,
    /// … and its private key (PEM). Both or neither.
    pub key_file: Option<PathBuf>,
}

#[derive(Clone, Debug)]
pub struct CallsSettings {
    pub ring_seconds: u32,
    /// Push even when the claim that keeps a retried call from ringing
    /// twice cannot be written (default false: refuse the push).
    pub push_without_claim: bool,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8787".parse().expect("default listen address"),
            database_url: "sqlite://pushrelay.db".into(),
            admin_token: None,
            master_key_file: None,
            apns: ApnsSettings { production_url: "https://api.push.apple.com".into(), sandbox_url: "https://api.sandbox.push.apple.com".into() },
            fcm: FcmSettings { base_url: "https://fcm.googleapis.com".into() },
            hms: HmsSettings { token_url: crate::provider::DEFAULT_HMS_TOKEN_URL.into(), base_url: crate::provider::DEFAULT_HMS_BASE_URL.into() },
            webpush: WebPushSettings { allowed_hosts: crate::provider::DEFAULT_WEBPUSH_HOSTS.iter().map(|h| h.to_string()).collect() },
            tls: TlsSettings::default(),
            calls: CallsSettings { ring_seconds: 30, push_without_claim: false },
            sip: SipSettings::default(),
            limits: LimitSettings {
                calls_per_second: 1000,
                registrations_per_second: 1000,
                webhooks_per_second: 100,
                devices_per_user: 10,
                auth_failures_per_minute: 10,
                connections_per_address: 256,
            },
            retention: RetentionSettings { call_days: 30, stale_device_days: 90 },
            sqlite: SqliteSettings { synchronous: SqliteSynchronous::Full },
            log_format: LogFormat::Text,
            metrics_listen: None,
            public_url: None,
            providers: ProviderNetwork::default(),
        }
    }
}

/// A configuration problem, naming the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config key `{key}` ({env}): {message}")]
    Invalid { key: &'static str, env: &'static str, message: String },
}

/// A bad value of `key` (also for problems found at start-up, such as a
/// master key file that does not match the database: exit code 78).
pub fn invalid(key: &'static str, message: impl Into<String>) -> ConfigError {
    let env = ENV_KEYS.iter().find(|(k, _)| *k == key).map(|(_, e)| *e).unwrap_or("");
    ConfigError::Invalid { key, env, message: message.into() }
}

/// Overrides given on the command line (`serve --listen --database-url`).
#[derive(Default, Debug, Clone)]
pub struct CliOverrides {
    pub listen: Option<String>,
    pub database_url: Option<String>,
}

/// The file's values as dotted keys → text, plus the UA rules. Unknown keys
/// are refused by name.
fn read_file(path: &Path) -> Result<(HashMap<&'static str, String>, Vec<UserAgentRule>), ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
    let parse_err = |message: String| ConfigError::Parse { path: path.into(), message };
    let mut table: toml::Table = toml::from_str(&text).map_err(|e| parse_err(e.message().to_string()))?;
    let mut rules = Vec::new();
    if let Some(toml::Value::Table(sip)) = table.get_mut("sip") {
        if let Some(uas) = sip.remove("user_agents") {
            let map: std::collections::BTreeMap<String, UserAgentRule> =
                uas.try_into().map_err(|e: toml::de::Error| parse_err(format!("sip.user_agents: {}", e.message())))?;
            rules = map.into_iter().map(|(name, r)| UserAgentRule { name, ..r }).collect();
        }
        if sip.is_empty() {
            table.remove("sip");
        }
    }
    let mut out = HashMap::new();
    let mut flat = Vec::new();
    for (k, v) in table {
        match v {
            toml::Value::Table(section) => flat.extend(section.into_iter().map(|(sk, sv)| (format!("{k}.{sk}"), sv))),
            other => flat.push((k, other)),
        }
    }
    for (key, value) in flat {
        let Some((known, _)) = ENV_KEYS.iter().find(|(k, _)| *k == key) else {
            return Err(parse_err(format!("unknown key `{key}`")));
        };
        let text = match value {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            // A list (`allowed_hosts = ["a", "*.b"]`) is its comma-separated form.
            toml::Value::Array(items) if items.iter().all(toml::Value::is_str) => {
                items.iter().filter_map(toml::Value::as_str).collect::<Vec<_>>().join(",")
            }
            other => return Err(parse_err(format!("`{key}` must be a string, a number or a list of strings, not {}", other.type_str()))),
        };
        out.insert(*known, text);
    }
    Ok((out, rules))
}

impl Settings {
    /// Load from the process environment.
    pub fn load(file: Option<&Path>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let env: HashMap<String, String> = std::env::vars().filter(|(k, _)| k.starts_with("PUSHRELAY_")).collect();
        Self::load_from(file, &env, cli)
    }

    /// Load with an explicit environment (tests): defaults → file →
    /// environment → command line, then `validate()`.
    pub fn load_from(file: Option<&Path>, env: &HashMap<String, String>, cli: &CliOverrides) -> Result<Self, ConfigError> {
        let (mut raw, user_agents) = match file {
            Some(path) => read_file(path)?,
            None => (HashMap::new(), Vec::new()),
        };
        for (key, var) in ENV_KEYS {
            if let Some(v) = env.get(*var) {
                raw.insert(key, v.clone());
            }
        }
        if let Some(v) = &cli.listen {
            raw.insert("listen", v.clone());
        }
        if let Some(v) = &cli.database_url {
            raw.insert("database_url", v.clone());
        }
        let mut s = Settings::default();
        for &(key, min, max) in NUMBER_KEYS {
            let Some(v) = raw.remove(key) else { continue };
            let n = v.trim().parse::<i64>().map_err(|_| invalid(key, format!("{v:?} is not a whole number")))?;
            if !(min..=max).contains(&n) {
                return Err(invalid(key, format!("must be between {min} and {max} (got {n})")));
            }
            let n = n as u32;
            match key {
                "calls.ring_seconds" => s.calls.ring_seconds = n,
                "limits.calls_per_second" => s.limits.calls_per_second = n,
                "limits.registrations_per_second" => s.limits.registrations_per_second = n,
                "limits.webhooks_per_second" => s.limits.webhooks_per_second = n,
                "limits.devices_per_user" => s.limits.devices_per_user = n,
                "limits.auth_failures_per_minute" => s.limits.auth_failures_per_minute = n,
                "limits.connections_per_address" => s.limits.connections_per_address = n,
                "retention.call_days" => s.retention.call_days = n,
                "retention.stale_device_days" => s.retention.stale_device_days = n,
                "providers.answer_timeout_ms" => s.providers.answer_timeout_ms = n,
                _ => unreachable!("every NUMBER_KEYS entry has a field"),
            }
        }
        for (key, v) in raw {
            match key {
                "listen" => s.listen = v.trim().parse().map_err(|_| invalid("listen", format!("{v:?} is not an address like 127.0.0.1:8787")))?,
                "database_url" => s.database_url = v,
                "admin_token" => s.admin_token = Some(Secret::new(v)),
                "master_key_file" => s.master_key_file = Some(PathBuf::from(v)),
                "apns.production_url" => s.apns.production_url = v,
                "apns.sandbox_url" => s.apns.sandbox_url = v,
                "fcm.base_url" => s.fcm.base_url = v,
                "hms.token_url" => s.hms.token_url = v,
                "hms.base_url" => s.hms.base_url = v,
                "webpush.allowed_hosts" => {
                    s.webpush.allowed_hosts = v.split(',').map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect();
                    if let Some(bad) = s.webpush.allowed_hosts.iter().find(|h| !allowed_host_pattern(h)) {
                        return Err(invalid("webpush.allowed_hosts", format!("{bad:?} is not a host name, an IP address or *.domain")));
                    }
                }
                "tls.extra_ca_file" => s.tls.extra_ca_file = Some(PathBuf::from(v)),
                "tls.cert_file" => s.tls.cert_file = Some(PathBuf::from(v)),
                "tls.key_file" => s.tls.key_file = Some(PathBuf::from(v)),
                "log_format" => {
                    s.log_format = match v.trim().to_ascii_lowercase().as_str() {
                        "text" => LogFormat::Text,
                        "json" => LogFormat::Json,
                        _ => return Err(invalid("log_format", format!("must be text or json (got {v:?})"))),
                    }
                }
                "metrics_listen" => {
                    s.metrics_listen =
                        Some(v.trim().parse().map_err(|_| invalid("metrics_listen", format!("{v:?} is not an address like 127.0.0.1:9090")))?)
                }
                "providers.proxy" => s.providers.proxy = Some(v.trim().to_string()),
                "calls.push_without_claim" => {
                    s.calls.push_without_claim = match v.trim().to_ascii_lowercase().as_str() {
                        "true" | "1" | "yes" => true,
                        "false" | "0" | "no" => false,
                        _ => return Err(invalid("calls.push_without_claim", format!("must be true or false (got {v:?})"))),
                    }
                }
                "public_url" => s.public_url = Some(public_origin(&v)?),
                "sqlite.synchronous" => {
                    s.sqlite.synchronous = match v.trim().to_ascii_lowercase().as_str() {
                        "normal" => SqliteSynchronous::Normal,
                        "full" => SqliteSynchronous::Full,
                        "extra" => SqliteSynchronous::Extra,
                        _ => return Err(invalid("sqlite.synchronous", format!("must be full, normal or extra (got {v:?})"))),
                    }
                }
                other => unreachable!("key {other} is in ENV_KEYS but not handled"),
            }
        }
        s.sip.user_agents = user_agents;
        s.validate()?;
        Ok(s)
    }

    /// Checks that do not need the network or the database.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let db = &self.database_url;
        if !(db.starts_with("sqlite:") || db.starts_with("postgres://") || db.starts_with("postgresql://")) {
            return Err(invalid("database_url", "must start with sqlite: or postgres://"));
        }
        for (key, url) in [
            ("apns.production_url", &self.apns.production_url),
            ("apns.sandbox_url", &self.apns.sandbox_url),
            ("fcm.base_url", &self.fcm.base_url),
            ("hms.token_url", &self.hms.token_url),
            ("hms.base_url", &self.hms.base_url),
        ] {
            let ok = (url.starts_with("https://") || url.starts_with("http://")) && url.len() > 8 && !url.contains(char::is_whitespace);
            if !ok {
                return Err(invalid(key, format!("{url:?} is not an http(s) URL")));
            }
        }
        for rule in &self.sip.user_agents {
            if let Err(e) = self.compile_rule(rule) {
                return Err(ConfigError::Invalid { key: "sip.user_agents", env: "", message: format!("rule {:?}: {}", rule.name, e.message) });
            }
        }
        if let Some(t) = &self.admin_token {
            if t.expose().len() < 16 {
                return Err(invalid("admin_token", "must be at least 16 characters"));
            }
        }
        if let Some(proxy) = &self.providers.proxy {
            let ok = (proxy.starts_with("http://") || proxy.starts_with("https://")) && proxy.len() > 8 && !proxy.contains(char::is_whitespace);
            if !ok {
                return Err(invalid("providers.proxy", "must be an http:// URL of an HTTP CONNECT proxy"));
            }
        }
        match (&self.tls.cert_file, &self.tls.key_file) {
            (None, None) => {}
            (Some(_), None) => return Err(invalid("tls.key_file", "is required with tls.cert_file")),
            (None, Some(_)) => return Err(invalid("tls.cert_file", "is required with tls.key_file")),
            (Some(_), Some(_)) => {
                self.server_identity()?;
            }
        }
        if self.metrics_listen == Some(self.listen) {
            return Err(invalid("metrics_listen", "must differ from listen"));
        }
        if let Some(path) = &self.tls.extra_ca_file {
            let pem = std::fs::read(path).map_err(|e| invalid("tls.extra_ca_file", format!("cannot read {}: {e}", path.display())))?;
            let n = crate::domain::credentials_cert::pem_certs(&pem).map(|c| c.len()).unwrap_or(0);
            if n == 0 {
                return Err(invalid("tls.extra_ca_file", format!("{} holds no PEM certificate", path.display())));
            }
        }
        Ok(())
    }

    fn compile_rule(&self, r: &UserAgentRule) -> Result<crate::dialect::sip::UaRule, crate::domain::FieldError> {
        crate::dialect::sip::UaRule::new(&r.name, &r.regex, r.token_app.as_deref(), r.token_type.as_deref(), r.token_id.as_deref())
    }

    /// The User-Agent rules, compiled (validated at load, so this cannot fail
    /// for loaded settings).
    pub fn user_agent_rules(&self) -> Vec<crate::dialect::sip::UaRule> {
        self.sip.user_agents.iter().filter_map(|r| self.compile_rule(r).ok()).collect()
    }

    /// The SQLite file, if the store is SQLite on a file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let rest = self.database_url.strip_prefix("sqlite://").or_else(|| self.database_url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or(rest);
        if path.is_empty() || path.starts_with(":memory:") {
            return None;
        }
        Some(PathBuf::from(path))
    }

    /// Where the master key lives: configured, or next to the SQLite file.
    pub fn master_key_path(&self) -> PathBuf {
        if let Some(p) = &self.master_key_file {
            return p.clone();
        }
        match self.sqlite_path() {
            Some(db) => db.with_extension("master.key"),
            None => PathBuf::from("pushrelay.master.key"),
        }
    }

    /// The HTTPS certificate chain and key (`tls.cert_file`, `tls.key_file`),
    /// read now (start-up and SIGHUP); `None` when serving plain HTTP.
    #[allow(clippy::type_complexity)]
    pub fn server_identity(
        &self,
    ) -> Result<Option<(Vec<rustls_pki_types::CertificateDer<'static>>, rustls_pki_types::PrivateKeyDer<'static>)>, ConfigError> {
        let (Some(cert), Some(key)) = (&self.tls.cert_file, &self.tls.key_file) else { return Ok(None) };
        let read = |k: &'static str, p: &Path| std::fs::read(p).map_err(|e| invalid(k, format!("cannot read {}: {e}", p.display())));
        let chain = crate::domain::credentials_cert::pem_certs(&read("tls.cert_file", cert)?)
            .map_err(|e| invalid("tls.cert_file", format!("{} is not PEM: {e}", cert.display())))?;
        if chain.is_empty() {
            return Err(invalid("tls.cert_file", format!("{} holds no PEM certificate", cert.display())));
        }
        let key_der = crate::domain::credentials_cert::pem_private_key(&read("tls.key_file", key)?)
            .map_err(|e| invalid("tls.key_file", format!("{} is not PEM: {e}", key.display())))?
            .ok_or_else(|| invalid("tls.key_file", format!("{} holds no private key", key.display())))?;
        Ok(Some((chain, key_der)))
    }

    /// The extra CA roots (PEM text), if configured.
    pub fn extra_ca_pem(&self) -> Option<String> {
        self.tls.extra_ca_file.as_ref().and_then(|p| std::fs::read_to_string(p).ok())
    }
}

/// The origin of `public_url` (`scheme://host[:port]`, lower case, no
/// path): what a browser sends as `Origin`.
fn public_origin(raw: &str) -> Result<String, ConfigError> {
    let url = reqwest::Url::parse(raw.trim())
        .map_err(|_| invalid("public_url", format!("{raw:?} is not an absolute URL like https://push.example.com")))?;
    if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
        return Err(invalid("public_url", "must be an http:// or https:// URL"));
    }
    Ok(url.origin().ascii_serialization().to_ascii_lowercase())
}

/// A `webpush.allowed_hosts` entry: a host name, an IP address (IPv6 in
/// brackets or bare), or `*.` and a domain.
fn allowed_host_pattern(h: &str) -> bool {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ip = name.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>().is_ok();
    ip || (!name.is_empty() && name.len() <= 253 && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-') && !name.starts_with('.'))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_match_the_interface() {
        let s = Settings::load_from(None, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(s.listen.to_string(), "127.0.0.1:8787");
        assert_eq!(s.database_url, "sqlite://pushrelay.db");
        assert_eq!(s.apns.production_url, "https://api.push.apple.com");
        assert_eq!(s.apns.sandbox_url, "https://api.sandbox.push.apple.com");
        assert_eq!(s.fcm.base_url, "https://fcm.googleapis.com");
        assert_eq!(s.calls.ring_seconds, 30);
        assert_eq!(s.master_key_path(), PathBuf::from("pushrelay.master.key"));
    }

    #[test]
    fn file_then_env_then_cli() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "listen = \"127.0.0.1:9000\"\n[calls]\nring_seconds = 45\n[apns]\nsandbox_url = \"https://sandbox.test\"\n").unwrap();
        let s = Settings::load_from(Some(&f), &env(&[("PUSHRELAY_CALLS_RING_SECONDS", "20")]), &CliOverrides::default()).unwrap();
        assert_eq!(s.listen.port(), 9000);
        assert_eq!(s.calls.ring_seconds, 20);
        assert_eq!(s.apns.sandbox_url, "https://sandbox.test");
        let cli = CliOverrides { listen: Some("127.0.0.1:9001".into()), database_url: None };
        let s = Settings::load_from(Some(&f), &env(&[("PUSHRELAY_LISTEN", "127.0.0.1:9002")]), &cli).unwrap();
        assert_eq!(s.listen.port(), 9001);
    }

    #[test]
    fn huawei_and_web_push_keys_from_the_file_and_the_environment() {
        let s = Settings::load_from(None, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(s.hms.token_url, crate::provider::DEFAULT_HMS_TOKEN_URL);
        assert_eq!(s.webpush.allowed_hosts, crate::provider::DEFAULT_WEBPUSH_HOSTS);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(
            &f,
            "[webpush]\nallowed_hosts = [\"push.example.net\", \"*.Push.Example.org\", \"10.0.0.7\"]\n[hms]\nbase_url = \"https://hms.test\"\n",
        )
        .unwrap();
        let s = Settings::load_from(Some(&f), &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!(s.webpush.allowed_hosts, ["push.example.net", "*.push.example.org", "10.0.0.7"]);
        assert_eq!(s.hms.base_url, "https://hms.test");
        for bad in ["push example", "*.", "https://push.example.net"] {
            let e = Settings::load_from(None, &env(&[("PUSHRELAY_WEBPUSH_ALLOWED_HOSTS", bad)]), &CliOverrides::default()).unwrap_err();
            assert!(e.to_string().contains("webpush.allowed_hosts"), "{bad}: {e}");
        }
        let e = Settings::load_from(None, &env(&[("PUSHRELAY_HMS_TOKEN_URL", "ftp://x")]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("hms.token_url"), "{e}");
    }

    #[test]
    fn bad_values_name_the_key() {
        let e = Settings::load_from(None, &env(&[("PUSHRELAY_CALLS_RING_SECONDS", "0")]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("calls.ring_seconds"), "{e}");
        let e = Settings::load_from(None, &env(&[("PUSHRELAY_FCM_BASE_URL", "ftp://x")]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("fcm.base_url"), "{e}");
        let e = Settings::load_from(None, &env(&[("PUSHRELAY_LISTEN", "nowhere")]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("PUSHRELAY_LISTEN"), "{e}");
    }

    #[test]
    fn unknown_key_in_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[apns]\nproduction_ur = \"https://x\"\n").unwrap();
        let e = Settings::load_from(Some(&f), &env(&[]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("production_ur"), "{e}");
    }

    #[test]
    fn user_agent_rules_load_in_name_order_and_a_bad_regex_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[sip.user_agents.myapp]\nregex = \"^MyApp\"\n[sip.user_agents.acme]\nregex = \"^Acme\"\ntoken_id = \"tok\"\n").unwrap();
        let s = Settings::load_from(Some(&f), &env(&[]), &CliOverrides::default()).unwrap();
        let rules = s.user_agent_rules();
        assert_eq!(rules.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), vec!["acme", "myapp"]);
        assert_eq!(rules[0].token_id, "tok");
        assert_eq!(rules[1].token_app, "app-id");
        std::fs::write(&f, "[sip.user_agents.bad]\nregex = \"(\"\n").unwrap();
        let e = Settings::load_from(Some(&f), &env(&[]), &CliOverrides::default()).unwrap_err().to_string();
        assert!(e.contains("sip.user_agents") && e.contains("bad"), "{e}");
    }

    #[test]
    fn limits_have_the_interface_defaults_and_are_bounded() {
        let s = Settings::load_from(None, &env(&[]), &CliOverrides::default()).unwrap();
        assert_eq!((s.limits.devices_per_user, s.limits.auth_failures_per_minute), (10, 10));
        assert_eq!(s.sqlite.synchronous, SqliteSynchronous::Full);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.toml");
        std::fs::write(&f, "[limits]\ndevices_per_user = 3\n[sqlite]\nsynchronous = \"normal\"\n").unwrap();
        let s = Settings::load_from(Some(&f), &env(&[("PUSHRELAY_LIMITS_AUTH_FAILURES_PER_MINUTE", "4")]), &CliOverrides::default()).unwrap();
        assert_eq!((s.limits.devices_per_user, s.limits.auth_failures_per_minute), (3, 4));
        assert_eq!(s.sqlite.synchronous, SqliteSynchronous::Normal);
        let e = Settings::load_from(None, &env(&[("PUSHRELAY_LIMITS_DEVICES_PER_USER", "0")]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("limits.devices_per_user"), "{e}");
        let e = Settings::load_from(None, &env(&[("PUSHRELAY_SQLITE_SYNCHRONOUS", "off")]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("sqlite.synchronous"), "{e}");
        std::fs::write(&f, "[limits]\ncall_days = 3\n").unwrap();
        let e = Settings::load_from(Some(&f), &env(&[]), &CliOverrides::default()).unwrap_err();
        assert!(e.to_string().contains("limits.call_days"), "{e}");
    }

    #[test]
    fn master_key_sits_next_to_the_sqlite_file() {
        let s = Settings::load_from(None, &env(&[("PUSHRELAY_DATABASE_URL", "sqlite:///var/lib/pr/relay.db?mode=rwc")]), &CliOverrides::default())
            .unwrap();
        assert_eq!(s.master_key_path(), PathBuf::from("/var/lib/pr/relay.master.key"));
    }
}
