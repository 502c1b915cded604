//! Devices: one row per (tenant, user, device) of every dialect, the JWE
//! key of UDS devices sealed. `register` is the one way in: it creates the
//! user if needed, holds the per-user device cap (the tenant's own, when it
//! sets one), removes the SIP bindings the request ends and writes every
//! registration of one request in one transaction (a refused request
//! writes nothing).
//!
//! Every method takes the `Scope` it acts in: the tenant is part of every
//! key, and a scope narrowed to an app sees and changes only that app's
//! devices.

use super::cache::user_key;
use super::{corrupt, Result, Store, StoreError, StoreEvent};
use crate::domain::{
    AppId, Channel, Device, DevicePkid, DeviceSet, DeviceToken, Dialect, DialectData, Email, MessageToken, PayloadVersion, PushKey, Reach,
    Registration, Scope, SipBinding, SipFormat, SubscriptionKeys, TenantId, UnreadableDevice, UserId,
};
use sqlx::any::AnyRow;
use sqlx::Row;
use std::collections::HashSet;
use std::sync::Arc;

const DEVICE_COLUMNS: &str = "user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at, \
     msg_token, msg_channel, msg_app_id, sip_aor, sip_contact, sip_format, sip_purr, spark_email, channel_secret";

/// The envelope context (AAD) of a device key: the row it belongs to. The
/// tenant `default` keeps the context keys were sealed with before tenants
/// (no `/` in a user id, so the two forms never meet).
pub(super) fn key_context(tenant: &str, user: &str, device: &str) -> String {
    if tenant == TenantId::DEFAULT {
        format!("device:{user}/{device}")
    } else {
        format!("device:{tenant}/{user}/{device}")
    }
}

/// The envelope context (AAD) of a device's channel secret (a Web Push
/// subscription's keys): the row it belongs to.
pub(super) fn channel_secret_context(tenant: &str, user: &str, device: &str) -> String {
    format!("device-channel:{tenant}/{user}/{device}")
}

/// ` AND app_id = $n` when the scope is narrowed to an app (`n` is the
/// next parameter number), and the app to bind.
fn app_filter(app: Option<&AppId>, n: usize) -> (String, Option<&str>) {
    match app {
        Some(a) => (format!(" AND app_id = ${n}"), Some(a.as_str())),
        None => (String::new(), None),
    }
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

/// A device not registered again for a while: its tenant, user and summary.
#[derive(Clone, Debug)]
pub struct StaleDevice {
    pub tenant: String,
    pub user: String,
    pub device: DeviceSummary,
}

/// The users whose rows a delete with `RETURNING user_id` removed.
fn users_of(rows: Vec<AnyRow>) -> Vec<String> {
    rows.iter().map(|r| r.get::<String, _>(0)).collect()
}

/// A stored device: ready, or with a key this node cannot open. (Lives
/// only until it is moved into a `DeviceSet`: not worth a box per device.)
#[allow(clippy::large_enum_variant)]
enum Loaded {
    Ready(Device),
    Unreadable(UnreadableDevice),
}

/// SIP bindings a REGISTER ends (per-contact `expires=0`), removed in the
/// same transaction as its new registrations: by device id, and by the
/// contact URI they registered, of one AOR.
#[derive(Clone, Debug, Default)]
pub struct SipRemovals {
    pub aor: String,
    pub devices: Vec<DevicePkid>,
    pub contacts: Vec<String>,
}

impl SipRemovals {
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty() && self.contacts.is_empty()
    }
}

/// What one `register` did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RegisterOutcome {
    /// Registration rows written.
    pub written: u64,
    /// Of them, devices the user did not have before.
    pub created: u64,
    /// SIP bindings removed.
    pub removed: u64,
}

impl Store {
    /// Store the registrations of one request for `user` in the scope's
    /// tenant (creating the user without a password if needed) and remove
    /// the SIP bindings it ends, all or nothing. A device the user does not
    /// have yet counts against the device cap (the tenant's
    /// `devices_per_user`, else `max_devices`); past it, nothing is written
    /// or removed and the answer is `StoreError::DeviceLimit`. Re-registering
    /// an existing device always works. Every app named must be visible to
    /// the tenant (its own or a shared one), else `StoreError::UnknownApp`.
    /// A token is one phone: a device of the same dialect that already holds
    /// a registered token under another id is replaced (in the same
    /// transaction), never kept to ring twice.
    pub async fn register(
        &self,
        scope: &Scope,
        user: &UserId,
        regs: &[Registration],
        removals: &SipRemovals,
        now_ms: i64,
        max_devices: u32,
    ) -> Result<RegisterOutcome> {
        let tenant = scope.tenant_id().as_str();
        let sealed: Vec<(Option<String>, Option<String>)> = regs
            .iter()
            .map(|r| {
                let (u, d) = (r.user.as_str(), r.device.as_str());
                (
                    r.key().map(|k| self.keys.seal(&key_context(tenant, u, d), k.to_b64().as_bytes())),
                    r.subscription_keys.as_ref().map(|k| self.keys.seal(&channel_secret_context(tenant, u, d), k.to_stored().as_bytes())),
                )
            })
            .collect();
        let mut apps: Vec<&AppId> = regs.iter().flat_map(|r| std::iter::once(&r.app).chain(r.msg().map(|m| &m.app))).collect();
        apps.sort();
        apps.dedup();
        if let Some(outside) = apps.iter().find(|a| !scope.admits(a)) {
            return Err(StoreError::UnknownApp((*outside).clone()));
        }
        let _gate = self.writing().await;
        let mut tx = self.pool.begin().await?;
        let Some(limit) = sqlx::query("SELECT devices_per_user FROM tenants WHERE tenant_id = $1").bind(tenant).fetch_optional(&mut *tx).await?
        else {
            return Err(StoreError::UnknownTenant(scope.tenant_id().clone()));
        };
        let max_devices = limit.get::<Option<i64>, _>(0).map_or(max_devices, |n| n.clamp(0, i64::from(u32::MAX)) as u32);
        for app in &apps {
            let visible = sqlx::query("SELECT 1 FROM apps WHERE app_id = $1 AND (owner_tenant IS NULL OR owner_tenant = $2)")
                .bind(app.as_str())
                .bind(tenant)
                .fetch_optional(&mut *tx)
                .await?;
            if visible.is_none() {
                return Err(StoreError::UnknownApp((*app).clone()));
            }
        }
        if !regs.is_empty() {
            sqlx::query(
                "INSERT INTO users (tenant_id, user_id, password_hash, created_at, updated_at) VALUES ($1, $2, NULL, $3, $3) ON CONFLICT (tenant_id, user_id) DO NOTHING",
            )
            .bind(tenant)
            .bind(user.as_str())
            .bind(now_ms)
            .execute(&mut *tx)
            .await?;
        }
        if self.backend == super::Backend::Postgres && !regs.is_empty() {
            // Registrations of one user queue here across nodes, so two new
            // devices at once cannot both slip under the cap.
            sqlx::query("SELECT 1 FROM users WHERE tenant_id = $1 AND user_id = $2 FOR UPDATE")
                .bind(tenant)
                .bind(user.as_str())
                .execute(&mut *tx)
                .await?;
        }
        let mut changed_users = vec![user.as_str().to_string()];
        let removed = if removals.is_empty() { 0 } else { remove_sip_bindings(&mut tx, scope, removals, &mut changed_users).await? };
        let rows = sqlx::query("SELECT device_pkid, dialect, token FROM devices WHERE tenant_id = $1 AND user_id = $2")
            .bind(tenant)
            .bind(user.as_str())
            .fetch_all(&mut *tx)
            .await?;
        let existing: HashSet<String> = rows.iter().map(|r| r.get::<String, _>(0)).collect();
        let replaced: HashSet<String> = rows
            .iter()
            .filter(|r| {
                let (id, dialect, token) = (r.get::<String, _>(0), r.get::<String, _>(1), r.get::<String, _>(2));
                regs.iter().any(|g| g.dialect().as_str() == dialect && g.token.as_str() == token && g.device.as_str() != id)
            })
            .map(|r| r.get::<String, _>(0))
            .filter(|id| !regs.iter().any(|g| g.device.as_str() == id))
            .collect();
        let new: HashSet<&str> = regs.iter().map(|r| r.device.as_str()).filter(|d| !existing.contains(*d)).collect();
        let created = new.len() as u64;
        if !new.is_empty() && existing.len() - replaced.len() + new.len() > max_devices as usize {
            return Err(StoreError::DeviceLimit(max_devices));
        }
        for id in &replaced {
            sqlx::query("DELETE FROM devices WHERE tenant_id = $1 AND user_id = $2 AND device_pkid = $3")
                .bind(tenant)
                .bind(user.as_str())
                .bind(id)
                .execute(&mut *tx)
                .await?;
        }
        let mut written = 0;
        for (reg, (sealed_key, sealed_channel)) in regs.iter().zip(sealed) {
            debug_assert_eq!(&reg.user, user, "one request registers for one user");
            written += sqlx::query(
                "INSERT INTO devices (tenant_id, user_id, device_pkid, dialect, channel, token, push_key, app_id, payload_version, created_at, updated_at, \
                 msg_token, msg_channel, msg_app_id, sip_aor, sip_contact, sip_format, sip_purr, spark_email, channel_secret) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
                 ON CONFLICT (tenant_id, user_id, device_pkid) DO UPDATE SET dialect = excluded.dialect, channel = excluded.channel, \
                 token = excluded.token, push_key = excluded.push_key, app_id = excluded.app_id, channel_secret = excluded.channel_secret, \
                 payload_version = excluded.payload_version, updated_at = excluded.updated_at, \
                 msg_token = CASE WHEN excluded.msg_token IS NULL THEN devices.msg_token ELSE excluded.msg_token END, \
                 msg_channel = CASE WHEN excluded.msg_token IS NULL THEN devices.msg_channel ELSE excluded.msg_channel END, \
                 msg_app_id = CASE WHEN excluded.msg_token IS NULL THEN devices.msg_app_id ELSE excluded.msg_app_id END, \
                 sip_aor = excluded.sip_aor, sip_contact = excluded.sip_contact, sip_format = excluded.sip_format, sip_purr = excluded.sip_purr, \
                 spark_email = CASE WHEN excluded.spark_email IS NULL THEN devices.spark_email ELSE excluded.spark_email END",
            )
            .bind(tenant)
            .bind(reg.user.as_str())
            .bind(reg.device.as_str())
            .bind(reg.dialect().as_str())
            .bind(reg.channel.as_str())
            .bind(reg.token.as_str())
            .bind(sealed_key)
            .bind(reg.app.as_str())
            .bind(match &reg.data {
                DialectData::Uds { version, .. } => Some(version.as_str()),
                _ => None,
            })
            .bind(now_ms)
            .bind(reg.msg().map(|m| m.token.as_str()))
            .bind(reg.msg().map(|m| m.channel.as_str()))
            .bind(reg.msg().map(|m| m.app.as_str()))
            .bind(reg.sip().map(|b| b.aor.as_str()))
            .bind(reg.sip().and_then(|b| b.contact.as_deref()))
            .bind(reg.sip().map(|b| b.format.as_str()))
            .bind(reg.sip().and_then(|b| b.purr.as_deref()))
            .bind(match &reg.data {
                DialectData::Spark { email, .. } => email.as_ref().map(|e| e.as_str()),
                _ => None,
            })
            .bind(sealed_channel)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            .max(1);
        }
        tx.commit().await?;
        self.devices_changed(scope.tenant_id(), changed_users).await;
        if let Some(binding) = regs.iter().find_map(Registration::sip) {
            // Releases a `/sip/wake` held for this AOR, here or on any node.
            let contact = binding.contact.clone().unwrap_or_default();
            self.publish(StoreEvent::Registered { tenant: tenant.to_string(), aor: binding.aor.clone(), contact, at: now_ms }).await;
        }
        Ok(RegisterOutcome { written, created, removed })
    }

    /// After a committed write to these users' devices (of one tenant):
    /// drop them from this node's device cache, and tell the other nodes to.
    pub(super) async fn devices_changed(&self, tenant: &TenantId, users: Vec<String>) {
        let mut keys: Vec<String> = users.iter().map(|u| user_key(tenant, u)).collect();
        keys.sort_unstable();
        keys.dedup();
        if keys.is_empty() {
            return;
        }
        self.devices.invalidate(Some(keys.iter().map(String::as_str)));
        self.publish(StoreEvent::DevicesChanged { users: Some(keys) }).await;
    }

    /// After a committed write to devices of users too many to name (a
    /// tenant deleted): drop the whole device cache, here and on every node.
    pub(super) async fn all_devices_changed(&self) {
        self.devices.clear();
        self.publish(StoreEvent::DevicesChanged { users: None }).await;
    }

    /// Delete one device of a user of the scope; false if there is none.
    pub async fn delete_device(&self, scope: &Scope, user: &UserId, device: &DevicePkid) -> Result<bool> {
        self.change_device(scope, "DELETE FROM devices WHERE tenant_id = $1 AND user_id = $2 AND device_pkid = $3", user, device, None).await
    }

    /// Remove a dead token — only if the device still has that token (a
    /// re-registration that raced the push is kept).
    pub async fn remove_dead_token(&self, scope: &Scope, user: &UserId, device: &DevicePkid, token: &DeviceToken) -> Result<bool> {
        self.change_device(
            scope,
            "DELETE FROM devices WHERE tenant_id = $1 AND user_id = $2 AND device_pkid = $3 AND token = $4",
            user,
            device,
            Some(token),
        )
        .await
    }

    /// Forget a dead message token (the device and its call token stay).
    pub async fn clear_msg_token(&self, scope: &Scope, user: &UserId, device: &DevicePkid, token: &DeviceToken) -> Result<bool> {
        self.change_device(
            scope,
            "UPDATE devices SET msg_token = NULL, msg_channel = NULL, msg_app_id = NULL WHERE tenant_id = $1 AND user_id = $2 AND device_pkid = $3 AND msg_token = $4",
            user,
            device,
            Some(token),
        )
        .await
    }

    /// One write to one device row of the scope (`$1` tenant, `$2` user,
    /// `$3` device, `$4` token if given; the scope's app appended); whether
    /// a row changed.
    async fn change_device(&self, scope: &Scope, sql: &str, user: &UserId, device: &DevicePkid, token: Option<&DeviceToken>) -> Result<bool> {
        let (of_app, app) = app_filter(scope.app(), if token.is_some() { 5 } else { 4 });
        let sql = format!("{sql}{of_app}");
        let gate = self.writing().await;
        let mut q = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(user.as_str()).bind(device.as_str());
        if let Some(t) = token {
            q = q.bind(t.as_str());
        }
        if let Some(a) = app {
            q = q.bind(a);
        }
        let changed = q.execute(&self.pool).await?.rows_affected() > 0;
        drop(gate);
        if changed {
            self.devices_changed(scope.tenant_id(), vec![user.as_str().to_string()]).await;
        }
        Ok(changed)
    }

    fn device_from_row(&self, tenant: &TenantId, r: &AnyRow) -> Result<Loaded> {
        let corrupt_row = |what: &str| StoreError::Corrupt(format!("device row: {what}"));
        let user = UserId::parse(&r.get::<String, _>("user_id")).map_err(corrupt("device row: user_id"))?;
        let device = DevicePkid::parse(&r.get::<String, _>("device_pkid")).map_err(corrupt("device row: device_pkid"))?;
        let dialect = Dialect::from_stored(&r.get::<String, _>("dialect")).ok_or_else(|| corrupt_row("dialect"))?;
        let channel = Channel::parse_any(&r.get::<String, _>("channel"), "channel").map_err(|_| corrupt_row("channel"))?;
        let token = DeviceToken::for_channel(channel, &r.get::<String, _>("token")).map_err(|_| corrupt_row("token"))?;
        let app = AppId::parse(&r.get::<String, _>("app_id")).map_err(|_| corrupt_row("app_id"))?;
        let msg = match (r.get::<Option<String>, _>("msg_token"), r.get::<Option<String>, _>("msg_channel"), r.get::<Option<String>, _>("msg_app_id"))
        {
            (Some(t), Some(c), Some(a)) => {
                let channel = Channel::parse_any(&c, "channel").map_err(|_| corrupt_row("msg_channel"))?;
                Some(MessageToken {
                    app: AppId::parse(&a).map_err(|_| corrupt_row("msg_app_id"))?,
                    channel,
                    token: DeviceToken::for_channel(channel, &t).map_err(|_| corrupt_row("msg_token"))?,
                })
            }
            _ => None,
        };
        // Sealed secrets: the JWE key, a Web Push subscription's keys. One
        // that cannot be opened makes the device unreadable, never the call.
        let unreadable = |e: &dyn std::fmt::Display| {
            tracing::error!(error = %e, user = %user, device = %device, "a device secret cannot be opened");
            Loaded::Unreadable(UnreadableDevice { user: user.clone(), device: device.clone(), dialect, app: app.clone(), channel })
        };
        let key = match r.get::<Option<String>, _>("push_key") {
            Some(sealed) => match self.keys.open_string(&key_context(tenant.as_str(), user.as_str(), device.as_str()), &sealed) {
                Ok(b64) => Some(PushKey::parse_b64(b64.expose()).map_err(|_| corrupt_row("push_key"))?),
                Err(e) => return Ok(unreadable(&e)),
            },
            None => None,
        };
        let subscription_keys = match r.get::<Option<String>, _>("channel_secret") {
            Some(sealed) => match self.keys.open_string(&channel_secret_context(tenant.as_str(), user.as_str(), device.as_str()), &sealed) {
                Ok(raw) => Some(SubscriptionKeys::from_stored(raw.expose()).map_err(|_| corrupt_row("channel_secret"))?),
                Err(e) => return Ok(unreadable(&e)),
            },
            None => None,
        };
        let data = match dialect {
            Dialect::Uds => {
                let key = key.ok_or_else(|| corrupt_row("a UDS device without push_key"))?;
                let version = r.get::<Option<String>, _>("payload_version").ok_or_else(|| corrupt_row("a UDS device without payload_version"))?;
                DialectData::Uds { key, version: PayloadVersion::parse(&version).map_err(|_| corrupt_row("payload_version"))? }
            }
            Dialect::Spark => DialectData::Spark {
                msg,
                email: match r.get::<Option<String>, _>("spark_email") {
                    Some(e) => Some(Email::parse(&e).map_err(|_| corrupt_row("spark_email"))?),
                    None => None,
                },
            },
            Dialect::Acrobits => DialectData::Acrobits { msg },
            Dialect::Native => DialectData::Native { key },
            Dialect::Sip => {
                let (Some(aor), Some(f)) = (r.get::<Option<String>, _>("sip_aor"), r.get::<Option<String>, _>("sip_format")) else {
                    return Err(corrupt_row("a SIP device without its binding"));
                };
                DialectData::Sip {
                    binding: SipBinding {
                        aor,
                        contact: r.get::<Option<String>, _>("sip_contact"),
                        format: SipFormat::from_stored(&f).ok_or_else(|| corrupt_row("sip_format"))?,
                        purr: r.get::<Option<String>, _>("sip_purr"),
                    },
                    msg,
                }
            }
        };
        Ok(Loaded::Ready(Device {
            registration: Registration { user, device, channel, token, subscription_keys, app, data },
            created_at: r.get("created_at"),
            updated_at: r.get("updated_at"),
        }))
    }

    fn device_set(&self, tenant: &TenantId, rows: &[AnyRow]) -> Result<DeviceSet> {
        let mut set = DeviceSet::empty(tenant.clone());
        for r in rows {
            match self.device_from_row(tenant, r)? {
                Loaded::Ready(d) => set.ready.push(d),
                Loaded::Unreadable(u) => set.unreadable.push(u),
            }
        }
        Ok(set)
    }

    /// Webex registrations of the scope made with this e-mail address (of
    /// one app, or of all the scope sees), oldest person first; at most `limit`.
    pub async fn spark_devices_by_email(&self, scope: &Scope, email: &Email, app: Option<&AppId>, limit: u32) -> Result<Vec<Device>> {
        if app.is_some_and(|a| !scope.admits(a)) {
            return Ok(Vec::new());
        }
        let (of_app, bound) = app_filter(app.or(scope.app()), 5);
        let sql = format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1 AND spark_email = $2 AND dialect = $3{of_app} ORDER BY user_id, device_pkid LIMIT $4"
        );
        let mut q = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(email.as_str()).bind(Dialect::Spark.as_str()).bind(i64::from(limit));
        if let Some(a) = bound {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        Ok(self.device_set(scope.tenant_id(), &rows)?.ready)
    }

    /// The devices to wake for a user of the scope (one device, or all of
    /// them the scope sees), keys opened; from the device cache when it
    /// holds the user (see `cache`).
    pub async fn devices_for(&self, scope: &Scope, user: &UserId, device: Option<&DevicePkid>) -> Result<DeviceSet> {
        let key = user_key(scope.tenant_id(), user.as_str());
        let all = match self.devices.get(&key) {
            Some(set) => set,
            None => {
                let ticket = self.devices.ticket();
                let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1 AND user_id = $2 ORDER BY device_pkid");
                let mut reconnect = super::Reconnect::new();
                let read = loop {
                    let rows = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(user.as_str()).fetch_all(&self.pool).await;
                    match rows.map_err(StoreError::from) {
                        Err(e) if reconnect.again(&e).await => continue,
                        other => break other,
                    }
                };
                match read {
                    Ok(rows) => {
                        let set = Arc::new(self.device_set(scope.tenant_id(), &rows)?);
                        self.devices.fill(&key, ticket, &set);
                        set
                    }
                    // The store is down: a call is worth ringing on what this
                    // node last knew (marked stale in the report).
                    Err(e) => match self.devices.get_stale(&key) {
                        Some(set) if super::connection_lost(&e) => {
                            tracing::warn!(error = %e, "store unreadable: serving the user's devices from the stale device cache");
                            Arc::new(DeviceSet { stale: true, ..DeviceSet::clone(&set) })
                        }
                        _ => return Err(e),
                    },
                }
            }
        };
        let mut set = DeviceSet::clone(&all);
        if device.is_some() || scope.app().is_some() {
            set.retain(|_, id, _, app| device.is_none_or(|d| id == d) && scope.admits(app));
        }
        Ok(set)
    }

    /// Devices of the scope registered over SIP for an address of record.
    pub async fn devices_for_aor(&self, scope: &Scope, aor: &str) -> Result<DeviceSet> {
        let (of_app, app) = app_filter(scope.app(), 3);
        let sql = format!("SELECT {DEVICE_COLUMNS} FROM devices WHERE tenant_id = $1 AND sip_aor = $2{of_app} ORDER BY user_id, device_pkid");
        let mut q = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(aor);
        if let Some(a) = app {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        self.device_set(scope.tenant_id(), &rows)
    }

    /// Remove the scope's SIP bindings of an AOR (`Contact: *`); how many went.
    pub async fn delete_devices_for_aor(&self, scope: &Scope, aor: &str) -> Result<u64> {
        let (of_app, app) = app_filter(scope.app(), 3);
        let sql = format!("DELETE FROM devices WHERE tenant_id = $1 AND sip_aor = $2{of_app} RETURNING user_id");
        let gate = self.writing().await;
        let mut q = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(aor);
        if let Some(a) = app {
            q = q.bind(a);
        }
        let users = users_of(q.fetch_all(&self.pool).await?);
        drop(gate);
        let removed = users.len() as u64;
        self.devices_changed(scope.tenant_id(), users).await;
        Ok(removed)
    }

    /// Delete every device of the scope of `dialect` whose call token is `token`.
    pub async fn delete_devices_by_token(&self, scope: &Scope, dialect: Dialect, token: &str) -> Result<u64> {
        let (of_app, app) = app_filter(scope.app(), 4);
        let sql = format!("DELETE FROM devices WHERE tenant_id = $1 AND dialect = $2 AND token = $3{of_app} RETURNING user_id");
        let gate = self.writing().await;
        let mut q = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(dialect.as_str()).bind(token);
        if let Some(a) = app {
            q = q.bind(a);
        }
        let rows = q.fetch_all(&self.pool).await?;
        drop(gate);
        let users = users_of(rows);
        let removed = users.len() as u64;
        self.devices_changed(scope.tenant_id(), users).await;
        Ok(removed)
    }

    /// The operator's view of a user's devices the scope sees: no key is
    /// opened, only the token suffix leaves.
    pub async fn device_summaries(&self, scope: &Scope, user: &UserId) -> Result<Vec<DeviceSummary>> {
        let (of_app, app) = app_filter(scope.app(), 3);
        let sql = format!(
            "SELECT device_pkid, channel, app_id, dialect, token, updated_at FROM devices WHERE tenant_id = $1 AND user_id = $2{of_app} ORDER BY device_pkid"
        );
        let mut q = sqlx::query(&sql).bind(scope.tenant_id().as_str()).bind(user.as_str());
        if let Some(a) = app {
            q = q.bind(a);
        }
        Ok(q.fetch_all(&self.pool).await?.iter().map(|r| summary_from_row(r, 0)).collect())
    }

    /// Devices the reach sees not registered again since `before` (epoch
    /// ms), oldest first.
    pub async fn stale_devices(&self, reach: &Reach, before: i64, limit: i64) -> Result<Vec<StaleDevice>> {
        let (filter, binds) = super::reach_filter(reach, 2);
        let sql = format!(
            "SELECT tenant_id, user_id, device_pkid, channel, app_id, dialect, token, updated_at FROM devices WHERE updated_at < $1{filter} ORDER BY updated_at LIMIT ${}",
            binds.len() + 2
        );
        let mut q = sqlx::query(&sql).bind(before);
        for b in &binds {
            q = q.bind(b.as_str());
        }
        let rows = q.bind(limit).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(|r| StaleDevice { tenant: r.get(0), user: r.get(1), device: summary_from_row(r, 2) }).collect())
    }
}

/// Inside `register`'s transaction: remove single SIP bindings of an AOR of
/// the scope (contacts with `expires=0`), by device id and by contact URI;
/// how many went. The users they belonged to join `changed`.
async fn remove_sip_bindings(
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    scope: &Scope,
    removals: &SipRemovals,
    changed: &mut Vec<String>,
) -> Result<u64> {
    let (of_app, app) = app_filter(scope.app(), 4);
    let mut removed = 0;
    let by_device = format!("DELETE FROM devices WHERE tenant_id = $1 AND sip_aor = $2 AND device_pkid = $3{of_app} RETURNING user_id");
    let by_contact = format!("DELETE FROM devices WHERE tenant_id = $1 AND sip_aor = $2 AND sip_contact = $3{of_app} RETURNING user_id");
    let targets = removals.devices.iter().map(|d| (&by_device, d.as_str())).chain(removals.contacts.iter().map(|c| (&by_contact, c.as_str())));
    for (sql, value) in targets {
        let mut q = sqlx::query(sql).bind(scope.tenant_id().as_str()).bind(removals.aor.as_str()).bind(value);
        if let Some(a) = app {
            q = q.bind(a);
        }
        let users = users_of(q.fetch_all(&mut **tx).await?);
        removed += users.len() as u64;
        changed.extend(users);
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_support::store;

    fn reg(user: &str, device: &str) -> Registration {
        Registration {
            user: UserId::parse(user).unwrap(),
            device: DevicePkid::parse(device).unwrap(),
            channel: Channel::Apns,
            // One token per device name: a token is one phone.
            token: DeviceToken::for_channel(Channel::Apns, &format!("{:0<64}", hex::encode(device))).unwrap(),
            subscription_keys: None,
            app: AppId::parse("com.example.app").unwrap(),
            data: DialectData::Uds {
                key: PushKey::parse_b64("JH/VEZ9YjinNA+AvUrjI+ncgVVycPbIVJixFOOm/xIU=").unwrap(),
                version: PayloadVersion::parse("V2").unwrap(),
            },
        }
    }

    /// The app the test registrations use, shared.
    async fn with_app(s: &Store) {
        let app = AppId::parse("com.example.app").unwrap();
        let secret = crate::secret::Secret::new("s".to_string());
        s.put_credentials(&Reach::every_tenant(), &app, crate::domain::CredentialKind::Webex, &serde_json::json!({}), &secret, None, 0)
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn the_device_cap_refuses_a_new_device_and_writes_nothing() {
        let (s, _d) = store().await;
        with_app(&s).await;
        let alice = UserId::parse("alice").unwrap();
        s.register(&Scope::default_tenant(), &alice, &[reg("alice", "a"), reg("alice", "b")], &SipRemovals::default(), 1, 2).await.unwrap();
        assert_eq!(
            s.register(&Scope::default_tenant(), &alice, &[reg("alice", "a")], &SipRemovals::default(), 2, 2).await.unwrap().written,
            1,
            "re-registering always works"
        );
        let e =
            s.register(&Scope::default_tenant(), &alice, &[reg("alice", "a"), reg("alice", "c")], &SipRemovals::default(), 3, 2).await.unwrap_err();
        assert!(matches!(e, StoreError::DeviceLimit(2)), "{e}");
        let set = s.devices_for(&Scope::default_tenant(), &alice, None).await.unwrap();
        assert_eq!(set.ready.len(), 2);
        assert!(set.ready.iter().all(|d| d.updated_at <= 2), "the refused request changed nothing");
    }

    #[tokio::test]
    async fn a_token_registered_under_a_new_id_replaces_the_old_device_even_at_the_cap() {
        let (s, _d) = store().await;
        with_app(&s).await;
        let alice = UserId::parse("alice").unwrap();
        s.register(&Scope::default_tenant(), &alice, &[reg("alice", "a"), reg("alice", "b")], &SipRemovals::default(), 1, 2).await.unwrap();
        // The phone that was "a" comes back as "c" with the same token.
        let mut c = reg("alice", "c");
        c.token = reg("alice", "a").token;
        s.register(&Scope::default_tenant(), &alice, &[c], &SipRemovals::default(), 2, 2).await.unwrap();
        let set = s.devices_for(&Scope::default_tenant(), &alice, None).await.unwrap();
        let mut ids: Vec<&str> = set.ready.iter().map(|d| d.registration.device.as_str()).collect();
        ids.sort();
        assert_eq!(ids, vec!["b", "c"], "one row per phone, so one call rings it once");
    }

    #[tokio::test]
    async fn an_unreadable_key_makes_that_device_unreadable_not_the_user() {
        let (s, _d) = store().await;
        with_app(&s).await;
        let alice = UserId::parse("alice").unwrap();
        s.register(&Scope::default_tenant(), &alice, &[reg("alice", "a"), reg("alice", "b")], &SipRemovals::default(), 1, 10).await.unwrap();
        sqlx::query("UPDATE devices SET push_key = 'v2.deadbeef.AAAA.AAAA' WHERE device_pkid = 'b'").execute(&s.pool).await.unwrap();
        let set = s.devices_for(&Scope::default_tenant(), &alice, None).await.unwrap();
        assert_eq!(set.ready.len(), 1);
        assert_eq!(set.unreadable.iter().map(|u| u.device.as_str()).collect::<Vec<_>>(), vec!["b"]);
    }

    /// The bound the device cache documents for writes it is not told of
    /// (another process on the same SQLite file): stale until the time to
    /// live, fresh after it.
    #[tokio::test]
    async fn a_write_by_another_process_is_served_stale_for_at_most_the_time_to_live() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("t.db").display());
        let ttl = std::time::Duration::from_millis(400);
        let options = crate::store::StoreOptions { device_cache: crate::store::CacheOptions { entries: 100, ttl }, ..Default::default() };
        let key = crate::envelope::MasterKey::generate();
        let node = Store::connect(&url, &options).await.unwrap();
        node.migrate().await.unwrap();
        node.open_keyring(key.clone()).await.unwrap();
        let other = Store::connect(&url, &options).await.unwrap();
        other.open_keyring(key).await.unwrap();
        with_app(&node).await;
        let alice = UserId::parse("alice").unwrap();
        node.register(&Scope::default_tenant(), &alice, &[reg("alice", "a")], &SipRemovals::default(), 1, 10).await.unwrap();
        assert_eq!(node.devices_for(&Scope::default_tenant(), &alice, None).await.unwrap().ready.len(), 1);
        let written = std::time::Instant::now();
        other.register(&Scope::default_tenant(), &alice, &[reg("alice", "b")], &SipRemovals::default(), 2, 10).await.unwrap();
        let mut stale_for = std::time::Duration::ZERO;
        loop {
            let n = node.devices_for(&Scope::default_tenant(), &alice, None).await.unwrap().ready.len();
            if n == 2 {
                break;
            }
            stale_for = written.elapsed();
            assert!(stale_for < ttl + std::time::Duration::from_millis(100), "still stale after {stale_for:?} (time to live {ttl:?})");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        assert!(stale_for > std::time::Duration::ZERO, "the other process's write is not seen at once: that is what the time to live bounds");
        // A write through this node's own store is seen at once.
        node.register(&Scope::default_tenant(), &alice, &[reg("alice", "c")], &SipRemovals::default(), 3, 10).await.unwrap();
        assert_eq!(node.devices_for(&Scope::default_tenant(), &alice, None).await.unwrap().ready.len(), 3);
    }
}
