//! The invariants of docs/ARCHITECTURE.md that are about the code itself,
//! checked on the source tree: which module may use which, where SQL and
//! HTTP status codes may appear, and that every SQLite write takes the
//! store's write queue. A change that breaks one fails here, naming the
//! file.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Every `.rs` file under `src/<module>` (a folder or a single file).
fn files_of(module: &str) -> Vec<PathBuf> {
    let root = src();
    let dir = root.join(module);
    if dir.is_dir() {
        let mut out = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            for e in std::fs::read_dir(&d).unwrap() {
                let p = e.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    out.push(p);
                }
            }
        }
        out.sort();
        out
    } else {
        vec![root.join(format!("{module}.rs"))]
    }
}

/// A file's production code: everything before its `#[cfg(test)]` module,
/// and for a file that *is* a test module (`tests.rs`), nothing.
fn production_code(path: &Path) -> String {
    if path.file_name().is_some_and(|n| n == "tests.rs") {
        return String::new();
    }
    let text = std::fs::read_to_string(path).unwrap();
    match text.find("#[cfg(test)]") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

/// The top-level modules a piece of code names as `crate::<module>`,
/// grouped imports included (`use crate::{domain::X, telemetry};`).
fn crate_modules(code: &str) -> BTreeSet<String> {
    let ident = |s: &str| -> String { s.trim_start().chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect() };
    let mut out = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group at depth 0: each item's first identifier is a module.
            let (mut depth, mut start) = (0usize, 0usize);
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        out.insert(ident(&group[start..j]));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            out.insert(ident(rest));
        }
    }
    out.remove("");
    out.remove("self");
    out
}

/// The code map's "may depend on" column (docs/ARCHITECTURE.md), for every
/// module of `src`: a module missing here fails `every_module_has_a_layer`.
const LAYERS: &[(&str, &[&str])] = &[
    ("secret", &[]),
    ("domain", &["secret"]),
    ("envelope", &["secret"]),
    ("telemetry", &["domain"]),
    ("dialect", &["domain"]),
    ("jwe", &["domain"]),
    ("payload", &["domain", "jwe"]),
    ("provider", &["domain", "secret", "telemetry"]),
    ("store", &["domain", "envelope", "secret", "telemetry"]),
    ("register", &["domain", "store", "telemetry"]),
    ("wake", &["store", "telemetry"]),
    ("callbacks", &["domain", "provider", "store", "telemetry"]),
    ("dispatch", &["domain", "payload", "provider", "store", "telemetry"]),
    ("config", &["dialect", "domain", "provider", "secret", "store", "telemetry"]),
    ("http", &["config", "dialect", "dispatch", "domain", "payload", "provider", "register", "secret", "store", "telemetry", "wake"]),
    (
        "startup",
        &[
            "callbacks",
            "config",
            "dialect",
            "dispatch",
            "domain",
            "envelope",
            "http",
            "payload",
            "provider",
            "register",
            "store",
            "telemetry",
            "wake",
        ],
    ),
    ("cli", &["config", "domain", "envelope", "jwe", "payload", "startup", "store", "telemetry"]),
    ("main", &["cli"]),
    ("lib", &[]),
];

#[test]
fn every_module_has_a_layer() {
    let mut missing = Vec::new();
    for e in std::fs::read_dir(src()).unwrap() {
        let name = e.unwrap().path().file_stem().unwrap().to_string_lossy().to_string();
        if !LAYERS.iter().any(|(m, _)| *m == name) {
            missing.push(name);
        }
    }
    assert!(missing.is_empty(), "modules without a row in LAYERS and in the code map: {missing:?}");
    let map = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/ARCHITECTURE.md")).unwrap();
    for (module, deps) in LAYERS.iter().filter(|(m, _)| !["main", "lib"].contains(m)) {
        let row = map.lines().find(|l| l.starts_with(&format!("| `{module}"))).unwrap_or_else(|| panic!("no code map row for `{module}`"));
        for d in *deps {
            assert!(row.contains(&format!("`{d}`")), "the code map row of `{module}` does not name `{d}`: {row}");
        }
    }
}

#[test]
fn the_import_scan_sees_grouped_imports() {
    let used = crate_modules("use crate::{domain::{A, B}, telemetry};\nlet x = crate::store::Store::new();");
    assert_eq!(used.into_iter().collect::<Vec<_>>(), ["domain", "store", "telemetry"]);
}

#[test]
fn no_module_uses_one_it_may_not_depend_on() {
    let mut wrong = Vec::new();
    for (module, allowed) in LAYERS {
        for file in files_of(module) {
            for used in crate_modules(&production_code(&file)) {
                if used != *module && !allowed.contains(&used.as_str()) {
                    wrong.push(format!("{} uses crate::{used}", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "layering broken (docs/ARCHITECTURE.md code map):\n{}", wrong.join("\n"));
}

#[test]
fn parsers_and_payloads_do_no_io() {
    // Pure layers: bytes in, values out. No sockets, files, HTTP or SQL.
    let forbidden = ["sqlx", "reqwest", "axum", "hyper", "tokio", "std::fs", "std::net"];
    let mut wrong = Vec::new();
    for module in ["domain", "dialect", "payload", "jwe"] {
        for file in files_of(module) {
            // Address values are not I/O (`domain::endpoint` classifies them).
            let code = production_code(&file).replace("std::net::IpAddr", "IpAddr");
            for f in forbidden {
                if code.contains(&format!("{f}::")) || code.contains(&format!("use {f}")) {
                    wrong.push(format!("{} uses {f}", file.display()));
                }
            }
        }
    }
    assert!(wrong.is_empty(), "I/O in a pure layer:\n{}", wrong.join("\n"));
}

fn all_files() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(src()).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_stem().unwrap().to_string_lossy().to_string();
        out.extend(files_of(&name));
    }
    out.sort();
    out.dedup();
    out
}

#[test]
fn sql_lives_only_in_the_store_and_status_codes_only_in_http() {
    let mut wrong = Vec::new();
    for file in all_files() {
        let rel = file.strip_prefix(src()).unwrap().to_string_lossy().to_string();
        let code = production_code(&file);
        let sql = ["sqlx::query", "query_as", "query_scalar", "\"SELECT ", "\"INSERT ", "\"UPDATE ", "\"DELETE "];
        if !rel.starts_with("store") && sql.iter().any(|s| code.contains(s)) {
            wrong.push(format!("{rel}: SQL outside src/store"));
        }
        if !rel.starts_with("http") && code.contains("StatusCode") {
            wrong.push(format!("{rel}: an HTTP status outside src/http"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Every function of the store: (file, name, body); a body runs to the next `fn`.
fn store_functions() -> Vec<(PathBuf, String, String)> {
    let mut fns = Vec::new();
    for file in files_of("store") {
        let code = production_code(&file);
        let starts: Vec<usize> = code.match_indices("fn ").map(|(i, _)| i).collect();
        for (k, &at) in starts.iter().enumerate() {
            let body = code[at..starts.get(k + 1).copied().unwrap_or(code.len())].to_string();
            let name: String = body[3..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            fns.push((file.clone(), name, body));
        }
    }
    fns
}

#[test]
fn every_write_to_devices_invalidates_the_device_cache() {
    // The device cache (store/cache.rs) is only as right as its
    // invalidations: a function that writes the devices table must call
    // `devices_changed` (or a helper that does) after its write.
    let fns = store_functions();
    let invalidates = |b: &str| b.contains("self.devices_changed(") || b.contains("self.all_devices_changed(");
    let tells: Vec<&str> = fns.iter().filter(|(_, n, b)| !n.ends_with("devices_changed") && invalidates(b)).map(|(_, n, _)| n.as_str()).collect();
    // A free helper (`remove_sip_bindings(tx, …)`) is right when every
    // function that calls it invalidates.
    let called_only_by_invalidators = |name: &str| {
        let callers: Vec<_> = fns.iter().filter(|(_, c, b)| c != name && b.contains(&format!(" {name}("))).collect();
        !callers.is_empty() && callers.iter().all(|(_, _, b)| invalidates(b))
    };
    let (mut writers, mut wrong) = (0, Vec::new());
    for (file, name, body) in &fns {
        if ["INSERT INTO devices", "DELETE FROM devices", "UPDATE devices"].iter().any(|w| body.contains(w)) {
            writers += 1;
            if !invalidates(body) && !tells.iter().any(|t| body.contains(&format!("self.{t}("))) && !called_only_by_invalidators(name) {
                wrong.push(format!("{}: fn {name}", file.display()));
            }
        }
    }
    assert!(writers >= 6, "the scan found only {writers} functions writing devices");
    assert!(wrong.is_empty(), "writes to devices that leave the device cache stale:\n{}", wrong.join("\n"));
}

#[test]
fn every_store_write_takes_the_sqlite_write_queue() {
    // SQLite allows one writer; a write that skips `writing()` meets
    // SQLITE_BUSY under load instead of queueing.
    let mut wrong = Vec::new();
    let mut writes = 0;
    let fns = store_functions();
    // Helpers that take the queue themselves; calling one counts as taking it.
    // The SQLite call writer's thread takes it with `blocking_lock()`, and
    // `call_writer.write(` hands a batch to that thread.
    let takes_queue = |b: &str| b.contains("writing()") || b.contains("gate.blocking_lock()") || b.contains("call_writer.write(");
    let gated: Vec<&str> = fns.iter().filter(|(_, _, b)| takes_queue(b)).map(|(_, n, _)| n.as_str()).collect();
    // Free helpers (`batch_statements(conn, …)`, `claim_in(conn, …)`) count
    // when they are called from a function that holds the queue, directly
    // or through another such helper.
    let mut under_queue: std::collections::HashSet<&str> = gated.iter().copied().collect();
    loop {
        let more: Vec<&str> = fns
            .iter()
            .filter(|(_, n, _)| !under_queue.contains(n.as_str()))
            .filter(|(_, n, _)| fns.iter().any(|(_, c, b)| c != n && under_queue.contains(c.as_str()) && b.contains(&format!(" {n}("))))
            .map(|(_, n, _)| n.as_str())
            .collect();
        if more.is_empty() {
            break;
        }
        under_queue.extend(more);
    }
    for (file, name, body) in &fns {
        let writes_sql = ["INSERT ", "UPDATE ", "DELETE "].iter().any(|w| body.contains(w));
        if writes_sql {
            writes += 1;
            let queued = takes_queue(body)
                || under_queue.contains(name.as_str())
                || gated.iter().any(|g| *g != "writing" && body.contains(&format!("self.{g}(")))
                || (POSTGRES_ONLY_WRITES.iter().any(|(n, _)| n == name) && body.contains("if self.backend != super::Backend::Postgres {"));
            if !queued {
                wrong.push(format!("{}: fn {name}", file.display()));
            }
        }
    }
    assert!(writes >= 15, "the scan found only {writes} write paths: is it still reading the store?");
    assert!(wrong.is_empty(), "store writes without `writing()`:\n{}", wrong.join("\n"));
}

/// Store methods that write on PostgreSQL only (they return before any SQL
/// on SQLite, so they need no place in SQLite's write queue), each for a
/// reason. The test checks that each still returns early on SQLite.
const POSTGRES_ONLY_WRITES: &[(&str, &str)] = &[("wait_on_claim", "marks a claim for the other nodes' sake; on SQLite every waiter is on this node")];

/// Store methods that take no `Scope` or `Reach`, each for a reason: the
/// system's own work, or rows that carry their tenant themselves.
const UNSCOPED: &[(&str, &str)] = &[
    ("write_batch", "the call path's claims, outcomes and reports carry their tenant"),
    ("save_call", "a report carries its tenant"),
    ("prune", "retention, over every tenant"),
    ("lease_callbacks", "the outbox sender: each row carries its tenant"),
    ("callback_done", "the outbox sender, by row id"),
    ("callback_retry", "the outbox sender, by row id"),
    ("callbacks_queued", "a count for tests"),
    ("callback_targets", "the call path checks a report's own tenant against it"),
    ("create_api_key", "the record carries its tenant"),
    ("api_key_by_hash", "authentication: before there is a scope"),
    ("api_key_by_id", "a console session re-checks its key"),
    ("console_session_start", "a session names its key; its tenant comes from that key"),
    ("console_session", "by a random session id; the key it names is checked again"),
    ("console_session_end", "by a random session id"),
    ("record_credential_health", "the dispatcher, per app"),
    ("certificate_expiries", "the daily expiry check of the operator"),
    ("add_provider_minutes", "operator-level provider sums"),
    ("provider_minutes", "operator-level provider sums"),
    ("prune_console", "retention"),
    ("remember_webhook", "replay keys, per app"),
    ("put_tenant", "tenants themselves (operator routes)"),
    ("tenant", "tenants themselves"),
    ("tenants", "tenants themselves"),
    ("tenant_for_domain", "finds the tenant of an AOR"),
    ("delete_tenant", "tenants themselves"),
];

#[test]
fn every_store_method_on_tenant_data_takes_a_scope() {
    // interface.md §8: the tenant is part of every store query's key, so a
    // handler cannot forget it. Every public method of the aggregates that
    // hold users, devices, calls, claims, callbacks, sessions or apps takes
    // a `Scope` (one tenant) or a `Reach` (an operator's every tenant, or
    // one), unless it is listed in UNSCOPED with its reason.
    let aggregates = ["users", "devices", "calls", "callbacks", "console", "apps", "api_keys", "health", "webhooks", "tenants"];
    let (mut checked, mut wrong) = (0, Vec::new());
    for agg in aggregates {
        let file = src().join("store").join(format!("{agg}.rs"));
        let code = production_code(&file);
        for (at, _) in code.match_indices("pub async fn ") {
            let sig = &code[at..at + code[at..].find('{').unwrap()];
            let name: String = sig["pub async fn ".len()..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            checked += 1;
            let scoped = sig.contains("&Scope") || sig.contains("&Reach");
            if !scoped && !UNSCOPED.iter().any(|(n, _)| *n == name) {
                wrong.push(format!("store/{agg}.rs: fn {name} takes neither a Scope nor a Reach"));
            }
        }
    }
    assert!(checked >= 40, "the scan found only {checked} store methods");
    assert!(wrong.is_empty(), "unscoped store methods (add a Scope, or a reason to UNSCOPED):\n{}", wrong.join("\n"));
}
