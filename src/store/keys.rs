//! Master keys in the store (interface.md §6).
//!
//! Settings rows:
//! - `master_key_check:<id>` = the key check value of every key in use;
//! - `master_key_current` = the id new envelopes are sealed under;
//! - `master_key_wrap:<id>:<by>` = key `<id>` sealed under key `<by>`, so a
//!   node holding either key of a rotation can open the other;
//! - `master_key_rotated_at` = when the current key became current.
//!
//! A node opens with its key file (`open_keyring`): the key must be one the
//! database knows, or — on a database without check values — open the
//! sealed data there is. `sync_keys` (every few seconds, and on a
//! `KeysChanged` event) follows rotations made elsewhere. `maintain`
//! re-seals rows under the current key in batches (compare-and-swap, so a
//! concurrent re-registration is never overwritten) and retires the old
//! key once nothing uses it and every node has had time to switch.

use super::{Result, Store, StoreError, StoreEvent};
use crate::envelope::{key_id_of, MasterKey};
use sqlx::Row;

const CHECK: &str = "master_key_check:";
const CURRENT: &str = "master_key_current";
const WRAP: &str = "master_key_wrap:";
const ROTATED_AT: &str = "master_key_rotated_at";

/// A key is retired no sooner than this after the rotation that replaced it
/// (every node syncs its keyring well within it).
pub const RETIRE_GRACE_MS: i64 = 60_000;
const RESEAL_BATCH: i64 = 500;

/// How a node's key fits the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyCheck {
    /// The database knows this key.
    Known,
    /// A database without check values: nothing sealed yet, or everything
    /// sealed opens with this key. Its check value is stored now.
    Adopted,
}

/// What a rotation did.
#[derive(Clone, Debug)]
pub struct RotationReport {
    pub new_id: String,
    pub old_ids: Vec<String>,
    pub resealed: u64,
}

/// A column holding envelopes: table, column, its key columns, the
/// envelope context from those key values (in that order).
struct Sealed {
    table: &'static str,
    column: &'static str,
    keys: &'static [&'static str],
    context: fn(&[String]) -> String,
}

impl Sealed {
    /// `a, b, …` of the key columns.
    fn key_list(&self) -> String {
        self.keys.join(", ")
    }

    /// The key values of a row selected as `keys…, column`, and its envelope.
    fn row(&self, r: &sqlx::any::AnyRow) -> (Vec<String>, String) {
        let n = self.keys.len();
        ((0..n).map(|i| r.get::<String, _>(i)).collect(), r.get(n))
    }
}

const SEALED: &[Sealed] = &[
    Sealed { table: "app_credentials", column: "secret", keys: &["app_id", "provider"], context: |k| super::apps::cred_context(&k[0], &k[1]) },
    Sealed {
        table: "devices",
        column: "push_key",
        keys: &["tenant_id", "user_id", "device_pkid"],
        context: |k| super::devices::key_context(&k[0], &k[1], &k[2]),
    },
    Sealed {
        table: "devices",
        column: "channel_secret",
        keys: &["tenant_id", "user_id", "device_pkid"],
        context: |k| super::devices::channel_secret_context(&k[0], &k[1], &k[2]),
    },
    Sealed {
        table: "app_callbacks",
        column: "secret",
        keys: &["tenant_id", "app_id"],
        context: |k| super::callbacks::callback_context(&k[0], &k[1]),
    },
];

impl Store {
    /// Rows of settings whose name starts with `prefix`: (rest of the name, value).
    async fn settings_like(&self, prefix: &str) -> Result<Vec<(String, String)>> {
        let rows = sqlx::query("SELECT name, value FROM settings WHERE name LIKE $1").bind(format!("{prefix}%")).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| (r.get::<String, _>(0)[prefix.len()..].to_string(), r.get::<String, _>(1))).collect())
    }

    /// One sealed value (and its context) if any is stored.
    async fn sealed_sample(&self) -> Result<Option<(String, String)>> {
        for s in SEALED {
            let q = format!("SELECT {k}, {c} FROM {t} WHERE {c} IS NOT NULL LIMIT 1", k = s.key_list(), c = s.column, t = s.table);
            if let Some(r) = sqlx::query(&q).fetch_optional(&self.pool).await? {
                let (keys, sealed) = s.row(&r);
                return Ok(Some(((s.context)(&keys), sealed)));
            }
        }
        Ok(None)
    }

    /// Whether only an existing key can open this database (check values or
    /// sealed data are present): then a missing key file is an error, never
    /// a reason to generate a new key.
    pub async fn needs_existing_key(&self) -> Result<bool> {
        Ok(!self.settings_like(CHECK).await?.is_empty() || self.sealed_sample().await?.is_some())
    }

    /// Install the node's key file key, checked against the database.
    pub async fn open_keyring(&self, key: MasterKey) -> Result<KeyCheck> {
        let checks = self.settings_like(CHECK).await?;
        let outcome = if checks.is_empty() {
            if let Some((context, sealed)) = self.sealed_sample().await? {
                if key.open(&context, &sealed).is_err() {
                    return Err(StoreError::MasterKey(format!(
                        "master_key_file holds key {} which does not open the secrets already in this database",
                        key.id()
                    )));
                }
            }
            let _gate = self.writing().await;
            let mut tx = self.pool.begin().await?;
            for (name, value) in [(format!("{CHECK}{}", key.id()), key.check_value()), (CURRENT.to_string(), key.id().to_string())] {
                sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING")
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            KeyCheck::Adopted
        } else {
            KeyCheck::Known
        };
        let checks = self.settings_like(CHECK).await?;
        match checks.iter().find(|(id, _)| id == key.id()) {
            Some((_, value)) if *value == key.check_value() => {}
            _ => {
                let known: Vec<&str> = checks.iter().map(|(id, _)| id.as_str()).collect();
                return Err(StoreError::MasterKey(format!(
                    "master_key_file holds key {}, which this database does not know (its keys: {}); point master_key_file at the key this database was sealed with",
                    key.id(),
                    known.join(", ")
                )));
            }
        }
        self.keys.set(key, Vec::new());
        self.sync_keys().await?;
        Ok(outcome)
    }

    /// Follow the keys the database lists: unwrap keys this node lacks,
    /// seal under the current one, drop retired ones.
    pub async fn sync_keys(&self) -> Result<()> {
        let checks = self.settings_like(CHECK).await?;
        let wraps = self.settings_like(WRAP).await?;
        let current_id = self.setting(CURRENT).await?;
        let mut held: Vec<MasterKey> =
            self.keys.keys().into_iter().filter(|k| checks.iter().any(|(id, v)| id == k.id() && *v == k.check_value())).collect();
        // Unwrap until nothing new opens (a chain of rotations opens in turn).
        loop {
            let mut added = false;
            for (id, _) in &checks {
                if held.iter().any(|k| k.id() == id) {
                    continue;
                }
                let found = wraps.iter().find_map(|(name, wrapped)| {
                    let (of, by) = name.split_once(':')?;
                    (of == id).then_some(())?;
                    held.iter().find(|k| k.id() == by)?.unwrap_key(id, wrapped).ok()
                });
                if let Some(k) = found {
                    held.push(k);
                    added = true;
                }
            }
            if !added {
                break;
            }
        }
        let current = current_id.as_deref().and_then(|id| held.iter().find(|k| k.id() == id)).cloned();
        match current {
            Some(current) => self.keys.set(current, held),
            None if !held.is_empty() => {
                tracing::error!(
                    current = current_id.as_deref().unwrap_or("?"),
                    "this node cannot open the current master key; it keeps sealing under its own"
                );
                let own = self.keys.current();
                self.keys.set(own, held);
            }
            None => {}
        }
        Ok(())
    }

    /// Make `new` the current master key: store its check value, wrap it
    /// under every key in use (and those under it), then re-seal every row.
    /// Running nodes follow through `sync_keys`; the old key is retired by
    /// `maintain` once nothing uses it.
    pub async fn rotate_master_key(&self, new: MasterKey, now_ms: i64) -> Result<RotationReport> {
        self.sync_keys().await?;
        let old: Vec<MasterKey> = self.keys.keys().into_iter().filter(|k| k.id() != new.id()).collect();
        {
            let _gate = self.writing().await;
            let mut tx = self.pool.begin().await?;
            let mut rows = vec![
                (format!("{CHECK}{}", new.id()), new.check_value()),
                (CURRENT.to_string(), new.id().to_string()),
                (ROTATED_AT.to_string(), now_ms.to_string()),
            ];
            for k in &old {
                rows.push((format!("{WRAP}{}:{}", new.id(), k.id()), k.wrap(&new)));
                rows.push((format!("{WRAP}{}:{}", k.id(), new.id()), new.wrap(k)));
            }
            for (name, value) in rows {
                sqlx::query("INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO UPDATE SET value = excluded.value")
                    .bind(name)
                    .bind(value)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
        }
        self.keys.set(new.clone(), old.clone());
        self.publish(StoreEvent::KeysChanged).await;
        let mut resealed = 0;
        loop {
            let n = self.reseal_batch().await?;
            if n == 0 {
                break;
            }
            resealed += n;
        }
        Ok(RotationReport { new_id: new.id().to_string(), old_ids: old.iter().map(|k| k.id().to_string()).collect(), resealed })
    }

    /// Re-seal up to `RESEAL_BATCH` rows of each sealed column that are not
    /// under the current key. Each row is replaced only if it still holds the
    /// envelope read (a re-registration meanwhile wins). Returns rows moved.
    pub async fn reseal_batch(&self) -> Result<u64> {
        let current = self.keys.current_id();
        let mut moved = 0;
        for s in SEALED {
            let select = format!(
                "SELECT {k}, {c} FROM {t} WHERE {c} IS NOT NULL AND {c} NOT LIKE $1 ORDER BY {k} LIMIT {RESEAL_BATCH}",
                k = s.key_list(),
                c = s.column,
                t = s.table
            );
            let rows = sqlx::query(&select).bind(format!("v2.{current}.%")).fetch_all(&self.pool).await?;
            let matches: Vec<String> = s.keys.iter().enumerate().map(|(i, k)| format!("{k} = ${}", i + 2)).collect();
            let update = format!(
                "UPDATE {t} SET {c} = $1 WHERE {m} AND {c} = ${n}",
                t = s.table,
                c = s.column,
                m = matches.join(" AND "),
                n = s.keys.len() + 2
            );
            let _gate = self.writing().await;
            for r in rows {
                let (keys, sealed) = s.row(&r);
                let context = (s.context)(&keys);
                let Ok(plain) = self.keys.open(&context, &sealed) else {
                    tracing::warn!(table = s.table, "a sealed row opens under no key held: left as it is");
                    continue;
                };
                let mut q = sqlx::query(&update).bind(self.keys.seal(&context, plain.expose()));
                for k in &keys {
                    q = q.bind(k.as_str());
                }
                moved += q.bind(&sealed).execute(&self.pool).await?.rows_affected();
            }
        }
        Ok(moved)
    }

    /// Rows still sealed under key `id`.
    async fn rows_under(&self, id: &str) -> Result<i64> {
        let mut n = 0;
        for s in SEALED {
            let q = format!("SELECT COUNT(*) FROM {t} WHERE {c} LIKE $1", t = s.table, c = s.column);
            n += sqlx::query(&q).bind(format!("v2.{id}.%")).fetch_one(&self.pool).await?.get::<i64, _>(0);
        }
        Ok(n)
    }

    /// Background upkeep on every node: follow key changes, re-seal a batch,
    /// retire keys nothing uses (at least `RETIRE_GRACE_MS` after the
    /// rotation). Returns the ids retired now.
    pub async fn maintain_keys(&self, now_ms: i64) -> Result<Vec<String>> {
        self.sync_keys().await?;
        let current = self.keys.current_id();
        let others: Vec<String> = self.settings_like(CHECK).await?.into_iter().map(|(id, _)| id).filter(|id| *id != current).collect();
        if others.is_empty() || self.setting(CURRENT).await?.as_deref() != Some(current.as_str()) {
            return Ok(Vec::new());
        }
        self.reseal_batch().await?;
        let rotated_at = self.setting(ROTATED_AT).await?.and_then(|v| v.parse::<i64>().ok()).unwrap_or(0);
        if now_ms < rotated_at + RETIRE_GRACE_MS {
            return Ok(Vec::new());
        }
        let mut retired = Vec::new();
        for id in others {
            if self.rows_under(&id).await? > 0 {
                continue;
            }
            let _gate = self.writing().await;
            sqlx::query("DELETE FROM settings WHERE name = $1 OR name LIKE $2 OR name LIKE $3")
                .bind(format!("{CHECK}{id}"))
                .bind(format!("{WRAP}{id}:%"))
                .bind(format!("{WRAP}%:{id}"))
                .execute(&self.pool)
                .await?;
            retired.push(id);
        }
        if !retired.is_empty() {
            tracing::info!(retired = ?retired, "master keys retired: nothing is sealed under them any more");
            self.sync_keys().await?;
            self.publish(StoreEvent::KeysChanged).await;
        }
        Ok(retired)
    }

    /// The id of the key new secrets are sealed under on this node.
    pub fn current_key_id(&self) -> String {
        self.keys.current_id()
    }

    /// Key ids of the envelopes of every sealed row (tests, `rotate` reports).
    pub async fn sealed_key_ids(&self) -> Result<Vec<Option<String>>> {
        let mut out = Vec::new();
        for s in SEALED {
            let q = format!("SELECT {c} FROM {t} WHERE {c} IS NOT NULL", c = s.column, t = s.table);
            for r in sqlx::query(&q).fetch_all(&self.pool).await? {
                out.push(key_id_of(&r.get::<String, _>(0)).map(str::to_string));
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::{AppId, CredentialKind};
    use crate::secret::Secret;
    use crate::store::StoreOptions;

    async fn fresh() -> (Store, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("k.db").display());
        let s = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        s.migrate().await.unwrap();
        (s, url, dir)
    }

    async fn put_secret(s: &Store, app: &str, secret: &str) {
        s.put_credentials(
            &crate::domain::Reach::every_tenant(),
            &AppId::parse(app).unwrap(),
            CredentialKind::Webex,
            &serde_json::json!({}),
            &Secret::new(secret.into()),
            None,
            1,
        )
        .await
        .unwrap();
    }

    #[tokio::test]
    async fn a_wrong_key_is_refused_and_a_known_one_opens() {
        let (s, url, _d) = fresh().await;
        let key = MasterKey::generate();
        assert!(!s.needs_existing_key().await.unwrap());
        assert_eq!(s.open_keyring(key.clone()).await.unwrap(), KeyCheck::Adopted);
        put_secret(&s, "app.one", "s1").await;
        let again = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        assert!(again.needs_existing_key().await.unwrap());
        let e = again.open_keyring(MasterKey::generate()).await.unwrap_err().to_string();
        assert!(e.contains("master_key_file") && e.contains(key.id()), "{e}");
        assert_eq!(again.open_keyring(key).await.unwrap(), KeyCheck::Known);
        let got = again
            .credentials(&crate::domain::Reach::every_tenant(), &AppId::parse("app.one").unwrap(), CredentialKind::Webex)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got.secret.expose(), "s1");
    }

    #[tokio::test]
    async fn a_rotation_reseals_everything_and_the_old_key_retires_after_the_grace() {
        let (s, url, _d) = fresh().await;
        let old = MasterKey::generate();
        s.open_keyring(old.clone()).await.unwrap();
        for i in 0..3 {
            put_secret(&s, &format!("app.n{i}"), "x").await;
        }
        // A second node that holds only the old key.
        let node = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        node.open_keyring(old.clone()).await.unwrap();
        let new = MasterKey::generate();
        let report = s.rotate_master_key(new.clone(), 1_000).await.unwrap();
        assert_eq!((report.resealed, report.old_ids.clone()), (3, vec![old.id().to_string()]));
        assert!(s.sealed_key_ids().await.unwrap().iter().all(|id| id.as_deref() == Some(new.id())));
        // The other node follows and seals under the new key too.
        node.sync_keys().await.unwrap();
        assert_eq!(node.current_key_id(), new.id());
        put_secret(&node, "app.late", "y").await;
        assert_eq!(
            s.credentials(&crate::domain::Reach::every_tenant(), &AppId::parse("app.late").unwrap(), CredentialKind::Webex)
                .await
                .unwrap()
                .unwrap()
                .secret
                .expose(),
            "y"
        );
        assert!(s.maintain_keys(1_000 + RETIRE_GRACE_MS - 1).await.unwrap().is_empty(), "not within the grace period");
        assert_eq!(s.maintain_keys(1_000 + RETIRE_GRACE_MS).await.unwrap(), vec![old.id().to_string()]);
        // The old key alone no longer opens this database.
        let stale = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        assert!(stale.open_keyring(old).await.is_err());
        let fresh_node = Store::connect(&url, &StoreOptions::default()).await.unwrap();
        assert_eq!(fresh_node.open_keyring(new).await.unwrap(), KeyCheck::Known);
    }

    #[tokio::test]
    async fn resealing_never_overwrites_a_concurrent_write() {
        let (s, _url, _d) = fresh().await;
        let old = MasterKey::generate();
        s.open_keyring(old.clone()).await.unwrap();
        put_secret(&s, "app.one", "before").await;
        let app = AppId::parse("app.one").unwrap();
        let row_before: String = sqlx::query("SELECT secret FROM app_credentials").fetch_one(&s.pool).await.unwrap().get(0);
        // The row changes between the read and the compare-and-swap: simulate
        // by re-registering, then re-sealing with the stale envelope.
        put_secret(&s, "app.one", "after").await;
        let new = MasterKey::generate();
        s.keys.set(new.clone(), vec![old.clone()]);
        let swapped = sqlx::query("UPDATE app_credentials SET secret = $1 WHERE app_id = $2 AND provider = $3 AND secret = $4")
            .bind(new.seal(&super::super::apps::cred_context("app.one", "webex"), b"before"))
            .bind("app.one")
            .bind("webex")
            .bind(row_before)
            .execute(&s.pool)
            .await
            .unwrap()
            .rows_affected();
        assert_eq!(swapped, 0);
        assert_eq!(
            s.credentials(&crate::domain::Reach::every_tenant(), &app, CredentialKind::Webex).await.unwrap().unwrap().secret.expose(),
            "after"
        );
    }
}
