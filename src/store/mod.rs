//! The store: the only module that runs SQL.
//!
//! One `Store` over sqlx's `Any` driver, so the same portable SQL and the
//! same migrations run on SQLite (embedded default, WAL) and PostgreSQL
//! (several relay nodes on one database). Methods take and return domain
//! values; secrets are sealed with the master key (`envelope`) before they
//! are written and opened when read. No state lives in process memory that
//! a second node would need.
//!
//! Depends on `domain`, `envelope`, `secret`. Never on `http`.

use crate::domain::{
    AppId, CallId, CallReport, Channel, Device, DevicePkid, DeviceToken, Dialect, MessageToken, PayloadVersion, Provider,
    PushKey, Registration, SipBinding, SipFormat, UserId,
};
use crate::envelope::{EnvelopeError, MasterKey};
use crate::secret::Secret;
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Executor, Row};
use std::sync::Arc;
use std::time::Duration;

const DEVICE_COLUMNS: &str = "user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at, \
     msg_token, msg_channel, msg_app_id, sip_aor, sip_contact, sip_format, sip_purr";

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the store can fail with. `http::error` maps it to 5xx.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(transparent)]
    Envelope(#[from] EnvelopeError),
    #[error("stored row is corrupt: {0}")]
    Corrupt(String),
    #[error("a batched write failed: {0}")]
    Batch(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// Provider credentials as stored: public summary + sealed secret.
#[derive(Clone, Debug)]
pub struct StoredCredentials {
    pub provider: String,
    pub summary: serde_json::Value,
    pub secret: Secret<String>,
    pub updated_at: i64,
}

/// One line of the operator's device list (no key, no full token).
#[derive(Clone, Debug)]
pub struct DeviceSummary {
    pub device: String,
    pub channel: String,
    pub application: String,
    pub dialect: String,
    pub token_suffix: String,
    pub updated_at: i64,
}

/// One device's push claim to take.
#[derive(Clone, Debug)]
pub struct ClaimRequest {
    pub push_id: String,
    pub user: UserId,
    pub device: DevicePkid,
    pub call: CallId,
    pub expires_at: i64,
}

/// The outcome the holder of a push claim had for its device.
#[derive(Clone, Debug)]
pub struct ClaimOutcome {
    pub push_id: String,
    pub user: UserId,
    pub call: CallId,
    pub delivery: crate::domain::Delivery,
}

/// An API key as stored (without the key).
#[derive(Clone, Debug)]
pub struct ApiKeyRecord {
    pub id: String,
    pub name: String,
    pub scopes: Vec<String>,
    pub app: Option<AppId>,
}

/// One call's report, as written.
#[derive(Clone, Debug)]
pub struct CallRecord {
    pub call: CallId,
    pub user: UserId,
    pub push_id: String,
    pub created_ms: i64,
    pub ring_ends_ms: i64,
    pub report: CallReport,
}

/// A `DeviceSummary` from `device_pkid, channel, app_id, dialect, token,
/// updated_at` starting at column `at`; only the token's last 8 characters leave.
fn summary_from_row(r: &AnyRow, at: usize) -> DeviceSummary {
    let token: String = r.get(at + 4);
    let n = token.len();
    DeviceSummary {
        device: r.get(at),
        channel: r.get(at + 1),
        application: r.get(at + 2),
        dialect: r.get(at + 3),
        token_suffix: token[n.saturating_sub(8)..].to_string(),
        updated_at: r.get(at + 5),
    }
}

/// A stored call, as a cancel needs it.
#[derive(Clone, Debug)]
pub struct CallInfo {
    pub user: UserId,
    pub push_id: String,
    pub report: CallReport,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    master: MasterKey,
    /// SQLite has one writer at a time: in-process writers queue here
    /// instead of sleeping in SQLite's busy handler (1, 2, 5, 10 ms…),
    /// which under load cost more than the writes. `None` on PostgreSQL.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("backend", &self.backend).finish()
    }
}

fn sqlite_url(url: &str) -> String {
    // Create the file when missing (`pushrelay serve` alone must work).
    if url.contains("mode=") || url.contains(":memory:") {
        url.to_string()
    } else if url.contains('?') {
        format!("{url}&mode=rwc")
    } else {
        format!("{url}?mode=rwc")
    }
}

impl Store {
    /// Connect (creating the SQLite file if needed). Does not migrate.
    pub async fn connect(url: &str, master: MasterKey) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        // No ping before each acquire: a broken connection fails its query
        // and is replaced; a ping per query costs more than it saves.
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5)).test_before_acquire(false);
        let pool = match backend {
            Backend::Sqlite => {
                opts.max_connections(8)
                    .after_connect(|conn, _| {
                        Box::pin(async move {
                            conn.execute("PRAGMA busy_timeout = 5000").await?;
                            conn.execute("PRAGMA foreign_keys = ON").await?;
                            conn.execute("PRAGMA synchronous = NORMAL").await?;
                            Ok(())
                        })
                    })
                    .connect(&sqlite_url(url))
                    .await?
            }
            Backend::Postgres => opts.max_connections(16).connect(url).await?,
        };
        if backend == Backend::Sqlite {
            // WAL is a property of the file: set once, kept across opens.
            sqlx::query("PRAGMA journal_mode = WAL").execute(&pool).await?;
        }
        let write_gate = (backend == Backend::Sqlite).then(|| Arc::new(tokio::sync::Mutex::new(())));
        Ok(Self { pool, backend, master, write_gate })
    }

    /// Hold this while writing (SQLite only; a no-op on PostgreSQL).
    async fn writing(&self) -> Option<tokio::sync::MutexGuard<'_, ()>> {
        match &self.write_gate {
            Some(gate) => Some(gate.lock().await),
            None => None,
        }
    }

    pub async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// For `/readyz`: can we run a query right now?
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Re-encrypt every stored secret under `new` in one transaction; the
    /// store keeps using `new` afterwards. Returns how many secrets moved.
    pub async fn rotate_master_key(&mut self, new: MasterKey) -> Result<u64> {
        // Every sealed column: (rows with their two key columns and the
        // envelope, the update, the envelope's context from the two keys).
        type Context = fn(&str, &str) -> String;
        let sealed: [(&str, &str, Context); 2] = [
            (
                "SELECT app_id, provider, secret FROM app_credentials",
                "UPDATE app_credentials SET secret = $1 WHERE app_id = $2 AND provider = $3",
                |app, provider| Self::cred_context_raw(app, provider),
            ),
            (
                "SELECT user_id, device_pkid, push_key FROM devices WHERE push_key IS NOT NULL",
                "UPDATE devices SET push_key = $1 WHERE user_id = $2 AND device_pkid = $3",
                |user, device| Self::key_context_raw(user, device),
            ),
        ];
        let mut tx = self.pool.begin().await?;
        let mut moved = 0u64;
        for (select, update, context) in sealed {
            for r in sqlx::query(select).fetch_all(&mut *tx).await? {
                let (a, b, envelope): (String, String, String) = (r.get(0), r.get(1), r.get(2));
                let ctx = context(&a, &b);
                let plain = self.master.open(&ctx, &envelope)?;
                sqlx::query(update).bind(new.seal(&ctx, plain.expose())).bind(&a).bind(&b).execute(&mut *tx).await?;
                moved += 1;
            }
        }
        tx.commit().await?;
        self.master = new;
        Ok(moved)
    }

    // ---- settings -------------------------------------------------------

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Insert unless present; returns the value now stored.
    pub async fn setting_insert_if_absent(&self, name: &str, value: &str) -> Result<String> {
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.setting(name).await?.ok_or_else(|| StoreError::Corrupt(format!("setting {name} vanished")))
    }

    // ---- apps and credentials ------------------------------------------

    fn cred_context(app: &AppId, provider: &str) -> String {
        Self::cred_context_raw(app.as_str(), provider)
    }

    /// The envelope context (AAD) of an app's credentials.
    fn cred_context_raw(app: &str, provider: &str) -> String {
        format!("app:{app}:{provider}")
    }

    /// Create the app if needed and replace its credentials for `provider`.
    pub async fn put_credentials(
        &self,
        app: &AppId,
        provider: &str,
        summary: &serde_json::Value,
        secret: &Secret<String>,
        lookup_key: Option<&str>,
        now_ms: i64,
    ) -> Result<()> {
        let sealed = self.master.seal(&Self::cred_context(app, provider), secret.expose().as_bytes());
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO apps (app_id, created_at) VALUES ($1, $2) ON CONFLICT (app_id) DO NOTHING")
            .bind(app.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO app_credentials (app_id, provider, summary, secret, updated_at, lookup_key) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (app_id, provider) DO UPDATE SET summary = excluded.summary, secret = excluded.secret, \
             updated_at = excluded.updated_at, lookup_key = excluded.lookup_key",
        )
        .bind(app.as_str())
        .bind(provider)
        .bind(summary.to_string())
        .bind(sealed)
        .bind(now_ms)
        .bind(lookup_key)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn delete_credentials(&self, app: &AppId, provider: &str) -> Result<bool> {
        let r = sqlx::query("DELETE FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(provider)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn app_exists(&self, app: &AppId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM apps WHERE app_id = $1").bind(app.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// Public summaries of an app's credentials; `None` if the app is unknown.
    pub async fn app_summary(&self, app: &AppId) -> Result<Option<Vec<(String, serde_json::Value, i64)>>> {
        if !self.app_exists(app).await? {
            return Ok(None);
        }
        let rows = sqlx::query("SELECT provider, summary, updated_at FROM app_credentials WHERE app_id = $1 ORDER BY provider")
            .bind(app.as_str())
            .fetch_all(&self.pool)
            .await?;
        let mut out = Vec::new();
        for r in rows {
            let summary: String = r.get(1);
            let v = serde_json::from_str(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            out.push((r.get::<String, _>(0), v, r.get::<i64, _>(2)));
        }
        Ok(Some(out))
    }

    /// The (opened) credentials of an app for one provider.
    pub async fn credentials(&self, app: &AppId, provider: &str) -> Result<Option<StoredCredentials>> {
        let row = sqlx::query("SELECT summary, secret, updated_at FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(provider)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let summary: String = r.get(0);
        let sealed: String = r.get(1);
        Ok(Some(StoredCredentials {
            provider: provider.to_string(),
            summary: serde_json::from_str(&summary).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            secret: self.master.open_string(&Self::cred_context(app, provider), &sealed)?,
            updated_at: r.get(2),
        }))
    }

    /// The app whose `provider` credentials carry `lookup_key` (APNs: the
    /// bundle id; FCM: the project id). With several, the oldest app id wins.
    pub async fn app_for_lookup(&self, provider: Provider, lookup_key: &str) -> Result<Option<AppId>> {
        let row = sqlx::query("SELECT app_id FROM app_credentials WHERE provider = $1 AND lookup_key = $2 ORDER BY app_id LIMIT 1")
            .bind(provider.as_str())
            .bind(lookup_key)
            .fetch_optional(&self.pool)
            .await?;
        match row {
            Some(r) => Ok(Some(AppId::parse(&r.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }

    pub async fn has_credentials(&self, app: &AppId, provider: Provider) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM app_credentials WHERE app_id = $1 AND provider = $2")
            .bind(app.as_str())
            .bind(provider.as_str())
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }

    // ---- API keys ----------------------------------------------------------

    pub async fn create_api_key(&self, key: &ApiKeyRecord, key_hash: &str, now_ms: i64) -> Result<()> {
        sqlx::query("INSERT INTO api_keys (id, name, key_hash, scopes, app_id, created_at) VALUES ($1, $2, $3, $4, $5, $6)")
            .bind(&key.id)
            .bind(&key.name)
            .bind(key_hash)
            .bind(key.scopes.join(","))
            .bind(key.app.as_ref().map(|a| a.as_str()))
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Revoke a key; false if unknown or already revoked.
    pub async fn revoke_api_key(&self, id: &str, now_ms: i64) -> Result<bool> {
        let r = sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(now_ms)
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// The live (not revoked) key with this hash. Read on every request, so
    /// a revocation on any node is in effect at once everywhere.
    pub async fn api_key_by_hash(&self, key_hash: &str) -> Result<Option<ApiKeyRecord>> {
        let row = sqlx::query("SELECT id, name, scopes, app_id FROM api_keys WHERE key_hash = $1 AND revoked_at IS NULL")
            .bind(key_hash)
            .fetch_optional(&self.pool)
            .await?;
        let Some(r) = row else { return Ok(None) };
        let app = match r.get::<Option<String>, _>(3) {
            Some(a) => Some(AppId::parse(&a).map_err(|e| StoreError::Corrupt(e.to_string()))?),
            None => None,
        };
        Ok(Some(ApiKeyRecord {
            id: r.get(0),
            name: r.get(1),
            scopes: r.get::<String, _>(2).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect(),
            app,
        }))
    }

    // ---- users -----------------------------------------------------------

    /// Create or replace a user's password hash; true when created. Two
    /// single statements (no read-then-write transaction, which SQLite
    /// refuses under concurrent writers with SQLITE_BUSY_SNAPSHOT).
    pub async fn upsert_user(&self, user: &UserId, password_hash: Option<&str>, now_ms: i64) -> Result<bool> {
        let _gate = self.writing().await;
        let created = sqlx::query(
            "INSERT INTO users (user_id, password_hash, created_at, updated_at) VALUES ($1, $2, $3, $3) ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(user.as_str())
        .bind(password_hash)
        .bind(now_ms)
        .execute(&self.pool)
        .await?
        .rows_affected()
            > 0;
        if !created {
            sqlx::query("UPDATE users SET password_hash = $1, updated_at = $2 WHERE user_id = $3")
                .bind(password_hash)
                .bind(now_ms)
                .bind(user.as_str())
                .execute(&self.pool)
                .await?;
        }
        Ok(created)
    }

    /// Create a user without a password (Webex person, SIP AOR user) unless present.
    pub async fn ensure_user(&self, user: &UserId, now_ms: i64) -> Result<()> {
        let _gate = self.writing().await;
        sqlx::query("INSERT INTO users (user_id, password_hash, created_at, updated_at) VALUES ($1, NULL, $2, $2) ON CONFLICT (user_id) DO NOTHING")
            .bind(user.as_str())
            .bind(now_ms)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Delete a user and their devices; false if unknown.
    pub async fn delete_user(&self, user: &UserId) -> Result<bool> {
        let mut tx = self.pool.begin().await?;
        sqlx::query("DELETE FROM devices WHERE user_id = $1").bind(user.as_str()).execute(&mut *tx).await?;
        let r = sqlx::query("DELETE FROM users WHERE user_id = $1").bind(user.as_str()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(r.rows_affected() > 0)
    }

    pub async fn user_exists(&self, user: &UserId) -> Result<bool> {
        let row = sqlx::query("SELECT 1 FROM users WHERE user_id = $1").bind(user.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.is_some())
    }

    /// The stored password hash (`None`: unknown user or no password).
    pub async fn password_hash(&self, user: &UserId) -> Result<Option<String>> {
        let row = sqlx::query("SELECT password_hash FROM users WHERE user_id = $1").bind(user.as_str()).fetch_optional(&self.pool).await?;
        Ok(row.and_then(|r| r.get::<Option<String>, _>(0)))
    }

    // ---- devices ---------------------------------------------------------

    fn key_context(user: &UserId, device: &DevicePkid) -> String {
        Self::key_context_raw(user.as_str(), device.as_str())
    }

    /// The envelope context (AAD) of a device key.
    fn key_context_raw(user: &str, device: &str) -> String {
        format!("device:{user}/{device}")
    }

    /// Create or replace one device registration (one statement: atomic).
    /// Returns the number of rows written (always 1 on success).
    pub async fn upsert_device(&self, reg: &Registration, now_ms: i64) -> Result<u64> {
        let _gate = self.writing().await;
        let sealed_key = reg.key.as_ref().map(|k| self.master.seal(&Self::key_context(&reg.user, &reg.device), k.to_b64().as_bytes()));
        let r = sqlx::query(
            "INSERT INTO devices (user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at, \
             msg_token, msg_channel, msg_app_id, sip_aor, sip_contact, sip_format, sip_purr) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9, $10, $11, $12, $13, $14, $15, $16) \
             ON CONFLICT (user_id, device_pkid) DO UPDATE SET dialect = excluded.dialect, channel = excluded.channel, \
             token = excluded.token, push_key = excluded.push_key, app_id = excluded.app_id, \
             payload_version = excluded.payload_version, updated_at = excluded.updated_at, \
             msg_token = CASE WHEN excluded.msg_token IS NULL THEN devices.msg_token ELSE excluded.msg_token END, \
             msg_channel = CASE WHEN excluded.msg_token IS NULL THEN devices.msg_channel ELSE excluded.msg_channel END, \
             msg_app_id = CASE WHEN excluded.msg_token IS NULL THEN devices.msg_app_id ELSE excluded.msg_app_id END, \
             sip_aor = excluded.sip_aor, sip_contact = excluded.sip_contact, sip_format = excluded.sip_format, sip_purr = excluded.sip_purr",
        )
        .bind(reg.user.as_str())
        .bind(reg.device.as_str())
        .bind(reg.dialect.as_str())
        .bind(reg.channel.as_str())
        .bind(reg.token.as_str())
        .bind(sealed_key)
        .bind(reg.app.as_str())
        .bind(reg.payload_version.map(|v| v.as_str()))
        .bind(now_ms)
        .bind(reg.msg.as_ref().map(|m| m.token.as_str()))
        .bind(reg.msg.as_ref().map(|m| m.channel.as_str()))
        .bind(reg.msg.as_ref().map(|m| m.app.as_str()))
        .bind(reg.sip.as_ref().map(|b| b.aor.as_str()))
        .bind(reg.sip.as_ref().and_then(|b| b.contact.as_deref()))
        .bind(reg.sip.as_ref().map(|b| b.format.as_str()))
        .bind(reg.sip.as_ref().and_then(|b| b.purr.as_deref()))
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected().max(1))
    }

    pub async fn delete_device(&self, user: &UserId, device: &DevicePkid) -> Result<bool> {
        let _gate = self.writing().await;
        let r = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_pkid = $2")
            .bind(user.as_str())
            .bind(device.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Remove a dead token — only if the device still has that token (a
    /// re-registration that raced the push is kept).
    pub async fn remove_dead_token(&self, user: &UserId, device: &DevicePkid, token: &DeviceToken) -> Result<bool> {
        let _gate = self.writing().await;
        let r = sqlx::query("DELETE FROM devices WHERE user_id = $1 AND device_pkid = $2 AND token = $3")
            .bind(user.as_str())
            .bind(device.as_str())
            .bind(token.as_str())
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected() > 0)
    }

    fn device_from_row(&self, r: &AnyRow) -> Result<Device> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("device row: {what}"));
        let user = UserId::parse(&r.get::<String, _>("user_id")).map_err(|e| corrupt(&e.to_string()))?;
        let device = DevicePkid::parse(&r.get::<String, _>("device_pkid")).map_err(|e| corrupt(&e.to_string()))?;
        let dialect = Dialect::from_stored(&r.get::<String, _>("dialect")).ok_or_else(|| corrupt("dialect"))?;
        let channel = Channel::parse(&r.get::<String, _>("channel")).map_err(|_| corrupt("channel"))?;
        let token = DeviceToken::for_channel(channel, &r.get::<String, _>("token")).map_err(|_| corrupt("token"))?;
        let app = AppId::parse(&r.get::<String, _>("app_id")).map_err(|_| corrupt("app_id"))?;
        let key = match r.get::<Option<String>, _>("push_key") {
            Some(sealed) => {
                let b64 = self.master.open_string(&Self::key_context(&user, &device), &sealed)?;
                Some(PushKey::parse_b64(b64.expose()).map_err(|_| corrupt("push_key"))?)
            }
            None => None,
        };
        let payload_version = match r.get::<Option<String>, _>("payload_version") {
            Some(v) => Some(PayloadVersion::parse(&v).map_err(|_| corrupt("payload_version"))?),
            None => None,
        };
        let msg = match (r.get::<Option<String>, _>("msg_token"), r.get::<Option<String>, _>("msg_channel"), r.get::<Option<String>, _>("msg_app_id")) {
            (Some(t), Some(c), Some(a)) => {
                let channel = Channel::parse(&c).map_err(|_| corrupt("msg_channel"))?;
                Some(MessageToken {
                    app: AppId::parse(&a).map_err(|_| corrupt("msg_app_id"))?,
                    channel,
                    token: DeviceToken::for_channel(channel, &t).map_err(|_| corrupt("msg_token"))?,
                })
            }
            _ => None,
        };
        let sip = match (r.get::<Option<String>, _>("sip_aor"), r.get::<Option<String>, _>("sip_format")) {
            (Some(aor), Some(f)) => Some(SipBinding {
                aor,
                contact: r.get::<Option<String>, _>("sip_contact"),
                format: SipFormat::from_stored(&f).ok_or_else(|| corrupt("sip_format"))?,
                purr: r.get::<Option<String>, _>("sip_purr"),
            }),
            _ => None,
        };
        Ok(Device {
            registration: Registration { user, device, dialect, channel, token, key, app, payload_version, msg, sip },
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        })
    }

    /// The devices to wake for a user (one device, or all of them), keys opened.
    pub async fn devices_for(&self, user: &UserId, device: Option<&DevicePkid>) -> Result<Vec<Device>> {
        let cols = DEVICE_COLUMNS;
        let rows = match device {
            Some(d) => {
                sqlx::query(&format!("SELECT {cols} FROM devices WHERE user_id = $1 AND device_pkid = $2"))
                    .bind(user.as_str())
                    .bind(d.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
            None => {
                sqlx::query(&format!("SELECT {cols} FROM devices WHERE user_id = $1 ORDER BY device_pkid"))
                    .bind(user.as_str())
                    .fetch_all(&self.pool)
                    .await?
            }
        };
        rows.iter().map(|r| self.device_from_row(r)).collect()
    }

    /// Devices registered over SIP for an address of record.
    pub async fn devices_for_aor(&self, aor: &str) -> Result<Vec<Device>> {
        let rows = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE sip_aor = $1 ORDER BY user_id, device_pkid"))
            .bind(aor)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| self.device_from_row(r)).collect()
    }

    /// Forget a dead message token (the device and its call token stay).
    pub async fn clear_msg_token(&self, user: &UserId, device: &DevicePkid, token: &DeviceToken) -> Result<bool> {
        let r = sqlx::query(
            "UPDATE devices SET msg_token = NULL, msg_channel = NULL, msg_app_id = NULL WHERE user_id = $1 AND device_pkid = $2 AND msg_token = $3",
        )
        .bind(user.as_str())
        .bind(device.as_str())
        .bind(token.as_str())
        .execute(&self.pool)
        .await?;
        Ok(r.rows_affected() > 0)
    }

    /// Remove the SIP bindings of an AOR (a de-REGISTER); how many went.
    pub async fn delete_devices_for_aor(&self, aor: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM devices WHERE sip_aor = $1").bind(aor).execute(&self.pool).await?;
        Ok(r.rows_affected())
    }

    /// Delete every device of `dialect` whose call token is `token`.
    pub async fn delete_devices_by_token(&self, dialect: Dialect, token: &str) -> Result<u64> {
        let r = sqlx::query("DELETE FROM devices WHERE dialect = $1 AND token = $2")
            .bind(dialect.as_str())
            .bind(token)
            .execute(&self.pool)
            .await?;
        Ok(r.rows_affected())
    }

    /// The operator's view: no key is opened, only the token suffix leaves.
    pub async fn device_summaries(&self, user: &UserId) -> Result<Vec<DeviceSummary>> {
        let rows = sqlx::query(
            "SELECT device_pkid, channel, app_id, dialect, token, updated_at FROM devices WHERE user_id = $1 ORDER BY device_pkid",
        )
        .bind(user.as_str())
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| summary_from_row(r, 0)).collect())
    }

    // ---- calls -------------------------------------------------------------

    pub async fn save_call(&self, record: &CallRecord) -> Result<()> {
        self.save_calls(std::slice::from_ref(record)).await
    }

    /// Store several call reports in one transaction (group commit).
    pub async fn save_calls(&self, records: &[CallRecord]) -> Result<()> {
        self.write_batch(records, &[]).await
    }

    /// Call reports and push-claim outcomes, in one transaction.
    pub async fn write_batch(&self, records: &[CallRecord], outcomes: &[ClaimOutcome]) -> Result<()> {
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        for o in outcomes {
            let json = serde_json::to_string(&o.delivery).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query("UPDATE push_claims SET delivery = $1 WHERE push_id = $2 AND user_id = $3 AND device_pkid = $4 AND call_id = $5")
                .bind(json)
                .bind(&o.push_id)
                .bind(o.user.as_str())
                .bind(&o.delivery.device)
                .bind(o.call.as_str())
                .execute(&mut *tx)
                .await?;
        }
        for rec in records {
            let json = serde_json::to_string(&rec.report).map_err(|e| StoreError::Corrupt(e.to_string()))?;
            sqlx::query(
                "INSERT INTO calls (call_id, user_id, push_id, created_at, ring_ends_at, report) VALUES ($1, $2, $3, $4, $5, $6) \
                 ON CONFLICT (call_id) DO UPDATE SET report = excluded.report",
            )
            .bind(rec.call.as_str())
            .bind(rec.user.as_str())
            .bind(rec.push_id.as_str())
            .bind(rec.created_ms)
            .bind(rec.ring_ends_ms)
            .bind(json)
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Claim the push of `push_id` to one device for `call` until
    /// `expires_at`. `None`: claimed now; `Some(other)`: another call
    /// (possibly on another node) holds a live claim.
    pub async fn claim_push(&self, push_id: &str, user: &UserId, device: &DevicePkid, call: &CallId, expires_at: i64, now_ms: i64) -> Result<Option<CallId>> {
        let req = ClaimRequest { push_id: push_id.to_string(), user: user.clone(), device: device.clone(), call: call.clone(), expires_at };
        Ok(self.claim_pushes(std::slice::from_ref(&req), now_ms).await?.remove(0))
    }

    /// `claim_push` for several devices in one transaction (group commit).
    pub async fn claim_pushes(&self, reqs: &[ClaimRequest], now_ms: i64) -> Result<Vec<Option<CallId>>> {
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        let mut out = Vec::with_capacity(reqs.len());
        for r in reqs {
            let claimed = sqlx::query(
                "INSERT INTO push_claims (push_id, user_id, device_pkid, call_id, expires_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (push_id, user_id, device_pkid) DO UPDATE SET call_id = excluded.call_id, expires_at = excluded.expires_at, delivery = NULL \
                 WHERE push_claims.expires_at < $6",
            )
            .bind(&r.push_id)
            .bind(r.user.as_str())
            .bind(r.device.as_str())
            .bind(r.call.as_str())
            .bind(r.expires_at)
            .bind(now_ms)
            .execute(&mut *tx)
            .await?
            .rows_affected()
                > 0;
            if claimed {
                out.push(None);
                continue;
            }
            let row = sqlx::query("SELECT call_id FROM push_claims WHERE push_id = $1 AND user_id = $2 AND device_pkid = $3")
                .bind(&r.push_id)
                .bind(r.user.as_str())
                .bind(r.device.as_str())
                .fetch_optional(&mut *tx)
                .await?;
            out.push(match row {
                Some(row) => Some(CallId::parse(&row.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?),
                None => None,
            });
        }
        tx.commit().await?;
        Ok(out)
    }

    /// The outcome the holder of a push claim recorded, if any yet.
    pub async fn claim_outcome(&self, push_id: &str, user: &UserId, device: &DevicePkid) -> Result<Option<crate::domain::Delivery>> {
        let row = sqlx::query("SELECT delivery FROM push_claims WHERE push_id = $1 AND user_id = $2 AND device_pkid = $3")
            .bind(push_id)
            .bind(user.as_str())
            .bind(device.as_str())
            .fetch_optional(&self.pool)
            .await?;
        match row.and_then(|r| r.get::<Option<String>, _>(0)) {
            Some(j) => Ok(Some(serde_json::from_str(&j).map_err(|e| StoreError::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }

    /// Delete expired push claims and call reports older than `calls_before`.
    pub async fn prune(&self, now_ms: i64, calls_before: i64) -> Result<(u64, u64)> {
        let claims = sqlx::query("DELETE FROM push_claims WHERE expires_at < $1").bind(now_ms).execute(&self.pool).await?.rows_affected();
        let calls = sqlx::query("DELETE FROM calls WHERE created_at < $1").bind(calls_before).execute(&self.pool).await?.rows_affected();
        Ok((claims, calls))
    }

    /// Devices not registered again since `before` (epoch ms), oldest first.
    pub async fn stale_devices(&self, before: i64, limit: i64) -> Result<Vec<(String, DeviceSummary)>> {
        let rows = sqlx::query(
            "SELECT user_id, device_pkid, channel, app_id, dialect, token, updated_at FROM devices WHERE updated_at < $1 ORDER BY updated_at LIMIT $2",
        )
        .bind(before)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0), summary_from_row(r, 1))).collect())
    }

    /// PostgreSQL: tell every node's wake listener that `aor` registered.
    pub async fn notify_wake(&self, aor: &str, contact: &str, registered_at: i64) -> Result<()> {
        if self.backend == Backend::Postgres {
            let payload = serde_json::json!({ "aor": aor, "contact": contact, "at": registered_at }).to_string();
            sqlx::query("SELECT pg_notify('pushrelay_wake', $1)").bind(payload).execute(&self.pool).await?;
        }
        Ok(())
    }

    /// Who a call was for, its pushid, and its report (for cancels).
    pub async fn call_info(&self, call: &CallId) -> Result<Option<CallInfo>> {
        let row = sqlx::query("SELECT user_id, push_id, report FROM calls WHERE call_id = $1").bind(call.as_str()).fetch_optional(&self.pool).await?;
        let Some(r) = row else { return Ok(None) };
        Ok(Some(CallInfo {
            user: UserId::parse(&r.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
            push_id: r.get(1),
            report: serde_json::from_str(&r.get::<String, _>(2)).map_err(|e| StoreError::Corrupt(e.to_string()))?,
        }))
    }

    pub async fn call_report(&self, call: &CallId) -> Result<Option<CallReport>> {
        let row = sqlx::query("SELECT report FROM calls WHERE call_id = $1").bind(call.as_str()).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => Ok(Some(serde_json::from_str(&r.get::<String, _>(0)).map_err(|e| StoreError::Corrupt(e.to_string()))?)),
            None => Ok(None),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{Delivery, Outcome};

    async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = Store::connect(&url, MasterKey::generate()).await.unwrap();
        s.migrate().await.unwrap();
        (s, dir)
    }

    #[tokio::test]
    async fn a_push_claim_is_held_until_it_expires_and_carries_the_outcome() {
        let (s, _d) = store().await;
        let (u, d) = (UserId::parse("alice").unwrap(), DevicePkid::parse("phone").unwrap());
        let (c1, c2) = (CallId::new(), CallId::new());
        assert_eq!(s.claim_push("p", &u, &d, &c1, 10_000, 1_000).await.unwrap(), None);
        assert_eq!(s.claim_push("p", &u, &d, &c2, 10_000, 2_000).await.unwrap(), Some(c1.clone()));
        assert_eq!(s.claim_outcome("p", &u, &d).await.unwrap(), None);
        let delivery = Delivery::new(&d, Channel::Apns, Outcome::Delivered, Some(200), None, 1);
        s.write_batch(&[], &[ClaimOutcome { push_id: "p".into(), user: u.clone(), call: c1.clone(), delivery: delivery.clone() }]).await.unwrap();
        assert_eq!(s.claim_outcome("p", &u, &d).await.unwrap(), Some(delivery));
        // After the ring end the pushid may be pushed again.
        assert_eq!(s.claim_push("p", &u, &d, &c2, 50_000, 20_000).await.unwrap(), None);
        assert_eq!(s.claim_outcome("p", &u, &d).await.unwrap(), None, "a new claim starts without an outcome");
    }

    #[tokio::test]
    async fn prune_deletes_old_calls_and_expired_claims_only() {
        let (s, _d) = store().await;
        let u = UserId::parse("alice").unwrap();
        for (created, id) in [(1_000, CallId::new()), (90_000, CallId::new())] {
            let rec = CallRecord { call: id.clone(), user: u.clone(), push_id: "p".into(), created_ms: created, ring_ends_ms: created + 30_000, report: CallReport::new(&id, vec![]) };
            s.save_call(&rec).await.unwrap();
        }
        s.claim_push("old", &u, &DevicePkid::parse("a").unwrap(), &CallId::new(), 5_000, 0).await.unwrap();
        s.claim_push("live", &u, &DevicePkid::parse("a").unwrap(), &CallId::new(), 500_000, 0).await.unwrap();
        assert_eq!(s.prune(100_000, 50_000).await.unwrap(), (1, 1));
        assert_eq!(s.prune(100_000, 50_000).await.unwrap(), (0, 0));
    }
}
