//! The store: the only module that runs SQL.
//!
//! One `Store` over sqlx's `Any` driver, so the same portable SQL and the
//! same migrations run on SQLite (embedded default, WAL) and PostgreSQL
//! (several relay nodes on one database). Methods take and return domain
//! values; secrets are sealed with the master keyring (`envelope`) before
//! they are written and opened when read. No state lives in process memory
//! that a second node would need. The one exception to sqlx: the call
//! path's group commit on SQLite runs on a thread of its own with rusqlite
//! (`writer`), the same statements as on PostgreSQL (`calls::BatchPlan`).
//!
//! One file per aggregate, all `impl Store`:
//! - `keys`      master key check values, the keyring, online rotation
//! - `cache`     the device cache (invalidated by every device write, and
//!   across nodes by `events`)
//! - `apps`      apps and their credentials
//! - `api_keys`  API keys (hashes only)
//! - `users`     end users and password hashes
//! - `devices`   registrations (the device cap lives here), lookups
//! - `calls`     call reports, push claims, retention
//! - `tenants`   tenants, their SIP domains and limits
//! - `webhooks`  webhook replay keys
//! - `writer`    the call path's group commit (`CallQueue`): claims,
//!   claim outcomes and reports of concurrent calls in one batch
//! - `events`    what nodes tell each other (PostgreSQL `LISTEN/NOTIFY`,
//!   in-process on SQLite): registrations for `/sip/wake`, settled push
//!   claims, key changes
//!
//! On SQLite every write takes the in-process write queue (`writing()`):
//! SQLite has one writer at a time, and queueing here is cheaper than
//! sleeping in its busy handler.
//!
//! Depends on `domain`, `envelope`, `secret`, `config` (SQLite settings).
//! Never on `http`.

mod api_keys;
mod apps;
mod cache;
mod callbacks;
mod calls;
mod console;
mod devices;
mod events;
mod health;
mod keys;
mod tenants;
mod users;
mod webhooks;
mod writer;

pub use api_keys::{ApiKeyRecord, LiveKey};
pub use apps::{AppListing, StoredCredentials};
pub use cache::CacheOptions;
pub use callbacks::{CallbackTarget, LeasedCallback, PendingCallback};
pub use calls::{CallInfo, CallRecord, ClaimOutcome, ClaimRequest};
pub use console::{ProviderMinute, RecentCall, SessionSigner, LATENCY_BUCKETS_MS};
pub use devices::{DeviceSummary, RegisterOutcome, SipRemovals, StaleDevice};
pub use events::StoreEvent;
pub use health::{CredentialHealth, HealthState};
pub use keys::{KeyCheck, RotationReport, RETIRE_GRACE_MS};
pub use tenants::{TenantLimits, TenantRecord};
pub use webhooks::REPLAY_WINDOW_MS as WEBHOOK_REPLAY_WINDOW_MS;
pub use writer::CallQueue;
use writer::CallWriter;

use crate::envelope::{EnvelopeError, Keyring};
use sqlx::any::AnyPoolOptions;
use sqlx::{AnyPool, Executor, Row};
use std::sync::Arc;
use std::time::Duration;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Everything the store can fail with. `http::error` maps it to HTTP.
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
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{0}")]
    Config(String),
    #[error("a batched write failed: {0}")]
    Batch(String),
    /// A registration would give the user more devices than allowed.
    #[error("the user already has {0} devices")]
    DeviceLimit(u32),
    /// The master key does not fit this database (see `keys`).
    #[error("{0}")]
    MasterKey(String),
    /// An app that does not exist, or that the tenant acting does not see
    /// (the same error: no existence oracle).
    #[error("application {0} is not known to this relay")]
    UnknownApp(crate::domain::AppId),
    /// An app id a tenant may not take or change: a shared app, or another
    /// tenant's.
    #[error("application {0} belongs to the operator or another tenant")]
    AppTaken(crate::domain::AppId),
    #[error("tenant {0} does not exist")]
    UnknownTenant(crate::domain::TenantId),
    /// A SIP domain another tenant holds.
    #[error("the SIP domain {0} belongs to another tenant")]
    DomainTaken(String),
    #[error("the tenant default cannot be deleted")]
    DefaultTenant,
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// SQLite durability: `PRAGMA synchronous` (`full` by default, so an
/// acknowledged registration survives a power loss, not only a crash).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SqliteSynchronous {
    Normal,
    Full,
    Extra,
}

impl SqliteSynchronous {
    pub fn as_str(self) -> &'static str {
        match self {
            SqliteSynchronous::Normal => "NORMAL",
            SqliteSynchronous::Full => "FULL",
            SqliteSynchronous::Extra => "EXTRA",
        }
    }
}

/// How to open a store.
#[derive(Clone, Debug)]
pub struct StoreOptions {
    /// SQLite `PRAGMA synchronous` (ignored on PostgreSQL).
    pub synchronous: SqliteSynchronous,
    /// The device cache (see `cache`).
    pub device_cache: CacheOptions,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self { synchronous: SqliteSynchronous::Full, device_cache: CacheOptions::default() }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    keys: Keyring,
    /// SQLite has one writer at a time: in-process writers queue here
    /// instead of sleeping in SQLite's busy handler (1, 2, 5, 10 ms…),
    /// which under load cost more than the writes. `None` on PostgreSQL.
    write_gate: Option<Arc<tokio::sync::Mutex<()>>>,
    events: Arc<events::Events>,
    devices: Arc<cache::DeviceCache>,
    /// The connection of the call path's group commit (`write_batch`).
    call_writer: Arc<CallWriter>,
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

/// Create the SQLite database file, when missing, readable by its owner
/// only (mode 0600, whatever the umask): it holds full device tokens.
/// SQLite gives its WAL and shared-memory files the database file's mode.
fn create_private_file(url: &str) -> Result<()> {
    use std::str::FromStr;
    let options = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let path = options.get_filename();
    if path.as_os_str().is_empty() || path.as_os_str() == ":memory:" || url.contains(":memory:") || path.exists() {
        return Ok(());
    }
    let mut open = std::fs::OpenOptions::new();
    open.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        open.mode(0o600);
    }
    match open.open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(StoreError::Config(format!("cannot create the database file {}: {e}", path.display()))),
    }
}

/// The file of an open SQLite database (as SQLite resolved the URL's path).
async fn sqlite_file(pool: &AnyPool) -> Result<String> {
    let file: String = sqlx::query("SELECT file FROM pragma_database_list WHERE name = 'main'").fetch_one(pool).await?.get(0);
    if file.is_empty() {
        return Err(StoreError::Config("an in-memory SQLite database cannot be shared by the relay's connections: give a file".into()));
    }
    Ok(file)
}

/// ` AND tenant_id = $n` / ` AND app_id = $m` for what a reach sees of a
/// table with those columns, numbering parameters from `n`; and the values
/// to bind, in order.
pub(crate) fn reach_filter(reach: &crate::domain::Reach, mut n: usize) -> (String, Vec<String>) {
    let (mut sql, mut binds) = (String::new(), Vec::new());
    if let Some(t) = reach.tenant() {
        sql.push_str(&format!(" AND tenant_id = ${n}"));
        binds.push(t.as_str().to_string());
        n += 1;
    }
    if let Some(a) = reach.app() {
        sql.push_str(&format!(" AND app_id = ${n}"));
        binds.push(a.as_str().to_string());
    }
    (sql, binds)
}

/// `UserId::parse` etc. of a stored value: a failure means a corrupt row.
pub(crate) fn corrupt<E: std::fmt::Display>(what: &'static str) -> impl Fn(E) -> StoreError {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

/// The settings of every SQLite connection, the pool's and the call
/// writer's: wait for the lock, enforce foreign keys, and sync the log as
/// `synchronous` says.
fn sqlite_session(synchronous: &str) -> String {
    format!("PRAGMA busy_timeout = 5000; PRAGMA foreign_keys = ON; PRAGMA synchronous = {synchronous};")
}

/// How long a statement is tried again while the store says its
/// connection is gone: long enough for a PostgreSQL restart (measured
/// 0.3 s), short against a 30 s ring.
pub const RECONNECT_WITHIN: Duration = Duration::from_secs(3);

/// Whether `e` says the connection or the server went away, rather than
/// the statement being wrong: worth trying again on another connection.
pub fn connection_lost(e: &StoreError) -> bool {
    let StoreError::Db(e) = e else { return false };
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Protocol(_) | sqlx::Error::PoolTimedOut | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        // admin_shutdown, crash_shutdown, cannot_connect_now; connection exceptions.
        sqlx::Error::Database(d) => d.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")),
        _ => false,
    }
}

/// Trying a statement again after `connection_lost` errors, for at most
/// `RECONNECT_WITHIN`: a dead pooled connection fails its statement and is
/// dropped, so the next try gets another one or a new one; once those are
/// gone through, every 100 ms while the server is down.
pub(crate) struct Reconnect {
    deadline: tokio::time::Instant,
    failures: u32,
}

impl Reconnect {
    pub(crate) fn new() -> Self {
        Self { deadline: tokio::time::Instant::now() + RECONNECT_WITHIN, failures: 0 }
    }

    /// Whether to try again after `e` (having waited if it is time to).
    pub(crate) async fn again(&mut self, e: &StoreError) -> bool {
        if !connection_lost(e) || tokio::time::Instant::now() >= self.deadline {
            return false;
        }
        self.failures += 1;
        if self.failures == 1 {
            tracing::warn!(error = %e, "store connection lost; trying again");
        }
        if self.failures > 16 {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }
}

/// SQLite: move the write-ahead log into the database file every second
/// (`PASSIVE`: never waits for, or blocks, readers and writers), off the
/// call path's connection. Connections that write registrations still
/// checkpoint by themselves past 1000 pages.
async fn checkpoints(pool: AnyPool, stop: tokio_util::sync::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                    tracing::debug!(error = %e, "WAL checkpoint");
                }
            }
        }
    }
}

impl Store {
    /// Connect (creating the SQLite file if needed). Does not migrate and
    /// holds no usable key yet: `keys::open_keyring` installs it.
    pub async fn connect(url: &str, options: &StoreOptions) -> Result<Self> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") { Backend::Sqlite } else { Backend::Postgres };
        // No ping before each acquire: a broken connection fails its query
        // and is replaced; a ping per query costs more than it saves.
        let opts = AnyPoolOptions::new().acquire_timeout(Duration::from_secs(5)).test_before_acquire(false);
        let pool = match backend {
            Backend::Sqlite => {
                create_private_file(url)?;
                let synchronous = options.synchronous.as_str();
                opts.max_connections(8)
                    .after_connect(move |conn, _| {
                        Box::pin(async move {
                            conn.execute(sqlite_session(synchronous).as_str()).await?;
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
        let keys = Keyring::new(crate::envelope::MasterKey::generate());
        let devices = Arc::new(cache::DeviceCache::new(options.device_cache));
        let events = Arc::new(events::Events::new(url));
        let call_writer = Arc::new(match (backend, &write_gate) {
            (Backend::Sqlite, Some(gate)) => CallWriter::sqlite(sqlite_file(&pool).await?, gate.clone(), events.sender())?,
            _ => CallWriter::postgres(url),
        });
        if backend == Backend::Sqlite {
            tokio::spawn(checkpoints(pool.clone(), events.stopped()));
        }
        Ok(Self { pool, backend, keys, write_gate, events, devices, call_writer })
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

    /// The SQLite `PRAGMA synchronous` in effect (for the benchmark and tests).
    pub async fn sqlite_synchronous(&self) -> Result<Option<i64>> {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        Ok(Some(sqlx::query("PRAGMA synchronous").fetch_one(&self.pool).await?.get::<i64, _>(0)))
    }

    /// For `/readyz`: can we run a query right now?
    pub async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    pub async fn close(&self) {
        self.events.stop();
        self.pool.close().await;
    }

    // ---- settings -------------------------------------------------------

    pub async fn setting(&self, name: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM settings WHERE name = $1").bind(name).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| r.get::<String, _>(0)))
    }

    /// Insert unless present; returns the value now stored.
    pub async fn setting_insert_if_absent(&self, name: &str, value: &str) -> Result<String> {
        let _gate = self.writing().await;
        sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
            .bind(name)
            .bind(value)
            .execute(&self.pool)
            .await?;
        self.setting(name).await?.ok_or_else(|| StoreError::Corrupt(format!("setting {name} vanished")))
    }
}

#[cfg(test)]
pub(crate) mod test_support {
    use super::*;

    /// A fresh, migrated SQLite store with a new master key installed.
    pub async fn store() -> (Store, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let s = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        s.migrate().await.unwrap();
        s.open_keyring(crate::envelope::MasterKey::generate()).await.unwrap();
        (s, dir)
    }
}
