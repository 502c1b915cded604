//! The store fails, the call does not (issue "A push that follows the
//! call"): PostgreSQL restarted under load on two nodes, and SQLite on a
//! full filesystem. Every call either rings once or answers 503 (the
//! backend may retry); none answers 500, none rings twice.
use crate::helpers::*;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A PostgreSQL cluster of this test alone (restarting the suite's shared
/// one would fail the tests running beside it), on the binaries the
/// PostgreSQL pass installed.
struct OwnPostgres {
    _dir: tempfile::TempDir,
    ctl: PgCtl,
}

/// What `pg_ctl` needs: the binaries, the cluster's directory, its port.
#[derive(Clone)]
struct PgCtl {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
}

impl PgCtl {
    fn run(&self, program: &str, args: &[&str]) -> bool {
        let exe = self.bin.join(program);
        let mut cmd = if is_root() {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(exe);
            c
        } else {
            Command::new(exe)
        };
        cmd.args(args).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null()).status().unwrap().success()
    }

    fn ctl(&self, action: &str) {
        let data = self.dir.join("data");
        let log = self.dir.join("server.log");
        let opts = format!("-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200", self.port, self.dir.display());
        let mut args = vec!["-D", data.to_str().unwrap(), "-l", log.to_str().unwrap(), "-w", "-o", &opts];
        if action != "start" {
            args.extend(["-m", "fast"]);
        }
        args.push(action);
        assert!(self.run("pg_ctl", &args), "pg_ctl {action}");
    }
}

impl OwnPostgres {
    fn start() -> OwnPostgres {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("PostgreSQL binaries (tests/pg.sh installs them)")
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .filter(|b| b.join("pg_ctl").exists())
            .max()
            .expect("a PostgreSQL version with pg_ctl");
        let dir = tempfile::tempdir().unwrap();
        let ctl = PgCtl { bin, dir: dir.path().to_path_buf(), port: free_port() };
        if is_root() {
            assert!(Command::new("chown").args(["-R", "postgres"]).arg(dir.path()).status().unwrap().success());
        }
        let data = dir.path().join("data");
        assert!(ctl.run("initdb", &["-D", data.to_str().unwrap(), "-A", "trust", "-U", "postgres"]), "initdb");
        ctl.ctl("start");
        OwnPostgres { _dir: dir, ctl }
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.ctl.port)
    }
}

impl Drop for OwnPostgres {
    fn drop(&mut self) {
        let data = self.ctl.dir.join("data");
        let _ = self.ctl.run("pg_ctl", &["-D", data.to_str().unwrap(), "-m", "immediate", "stop"]);
    }
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().map(|o| o.stdout.starts_with(b"0")).unwrap_or(false)
}

/// How many times the mock APNs accepted a push for each token.
fn pushes_by_token(m: &Mocks) -> HashMap<String, usize> {
    let mut by = HashMap::new();
    for r in m.apns.requests().iter().filter(|r| r.status == 200) {
        *by.entry(r.path.trim_start_matches("/3/device/").to_string()).or_default() += 1;
    }
    by
}

/// PostgreSQL restarted while two nodes take 200 calls: not one 500; every
/// call is pushed (200, delivered) or answered 503; no push twice.
#[tokio::test]
async fn postgresql_restarted_under_load_on_two_nodes_loses_no_call() {
    if !on_postgres() {
        return;
    }
    let pg = OwnPostgres::start();
    let (a, m) = spawn_app_with_mocks_and_env("", &[("PUSHRELAY_DATABASE_URL", &pg.url())]).await;
    let b = spawn_with(tempfile::tempdir().unwrap(), a.env.clone()).await;
    a.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let mut tokens = HashMap::new();
    for i in 0..20 {
        let user = format!("u{i}");
        assert_eq!(a.put_user(&user, "pw").await.status(), 201);
        let t = apns_token();
        assert_eq!(a.put_uds(&user, "pw", "phone", uds_xml(&t, "APNS", &k, APP)).await.status(), 200);
        tokens.insert(user, t);
    }
    // Warm both nodes (device caches, connections), then 200 calls, 10 at a time, across the restart.
    for node in [&a, &b] {
        assert_eq!(node.post_call(&json!({"user": "u0", "pushid": format!("warm-{}", node.url(""))})).await.status(), 200);
    }
    let ctl = pg.ctl.clone();
    let restarted = tokio::task::spawn_blocking(move || {
        std::thread::sleep(Duration::from_millis(400));
        let started = Instant::now();
        ctl.ctl("restart");
        started.elapsed()
    });
    let mut statuses: HashMap<u16, usize> = HashMap::new();
    let mut pushed_calls = Vec::new();
    for round in 0..20 {
        let calls = (0..10).map(|i| {
            let n = round * 10 + i;
            let node = if n % 2 == 0 { &a } else { &b };
            let user = format!("u{}", n % 20);
            let pushid = format!("load-{n}");
            async move {
                let r = node.post_call(&json!({"user": user, "pushid": pushid, "ring_seconds": 30})).await;
                let status = r.status().as_u16();
                (status, user, r.json::<Value>().await.unwrap_or_default())
            }
        });
        for (status, user, body) in futures::future::join_all(calls).await {
            *statuses.entry(status).or_default() += 1;
            if status == 200 {
                assert_eq!(body["deliveries"][0]["outcome"], "delivered", "{body}");
                pushed_calls.push(user);
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let took = restarted.await.unwrap();
    println!("PostgreSQL restart took {took:?}; answers over 200 calls on two nodes: {statuses:?}");
    assert_eq!(statuses.get(&500), None, "no call answers 500: {statuses:?}");
    assert!(statuses.keys().all(|s| *s == 200 || *s == 503), "{statuses:?}");
    // Each call's pushid is new: every 200 is one push, and a 503 pushed nothing.
    let pushes: usize = pushes_by_token(&m).values().sum();
    assert_eq!(pushes, pushed_calls.len() + 2, "one push per 200 (plus the two warm-up calls), none for a 503");
}

/// A tmpfs of `mb` megabytes mounted on a fresh directory (unmounted on drop).
struct SmallDisk {
    dir: tempfile::TempDir,
}

impl SmallDisk {
    fn mount(mb: u32) -> SmallDisk {
        let dir = tempfile::tempdir().unwrap();
        let ok = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={mb}m"), "tmpfs"]).arg(dir.path()).status().unwrap().success();
        assert!(ok, "mounting a {mb} MB tmpfs (the full-disk test runs as root)");
        SmallDisk { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fill what is left with a file; returns its path.
    fn fill(&self) -> PathBuf {
        use std::io::Write;
        let f = self.path().join("filler");
        let mut file = std::fs::File::create(&f).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while file.write_all(&chunk).is_ok() {}
        let small = [0u8; 512];
        while file.write_all(&small).is_ok() {}
        f
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

/// SQLite on a full filesystem: the claim cannot be written, so the push
/// is refused (not sent without the guard) and the call answers 503; the
/// backend's retries ring nothing; once there is room, the call rings once.
#[tokio::test]
async fn a_full_disk_never_rings_a_phone_twice_and_never_answers_500() {
    if on_postgres() {
        return;
    }
    if !is_root() {
        panic!("the full-disk test mounts a tmpfs: run it as root (CI does)");
    }
    let disk = SmallDisk::mount(16);
    let db = disk.path().join("relay.db");
    let url = format!("sqlite://{}", db.display());
    let (app, m) = spawn_app_with_mocks_and_env("", &[("PUSHRELAY_DATABASE_URL", &url)]).await;
    app.with_mock_credentials(&m).await;
    let (k, _) = device_key();
    let t = apns_token();
    assert_eq!(app.put_uds("alice", "pw-alice", "phone", uds_xml(&t, "APNS", &k, APP)).await.status(), 200);
    // An empty write-ahead log, then no room: the next write must grow a file.
    sqlx::any::install_default_drivers();
    let side = sqlx::AnyPool::connect(&url).await.unwrap();
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(&side).await.unwrap();
    side.close().await;
    let filler = disk.fill();

    let body = json!({"user": "alice", "pushid": "full-disk", "ring_seconds": 30});
    let call = || app.post_call(&body);
    let mut seen = Vec::new();
    for _ in 0..3 {
        let r = call().await;
        let status = r.status().as_u16();
        let retry_after = r.headers().get("retry-after").map(|v| v.to_str().unwrap().to_string());
        let body: Value = r.json().await.unwrap_or_default();
        seen.push((status, body.clone()));
        assert_ne!(status, 500, "{body}");
        if status == 503 {
            assert_eq!(retry_after.as_deref(), Some("1"), "503 says when to retry");
        }
    }
    let rang = pushes_by_token(&m).get(&t).copied().unwrap_or(0);
    println!(
        "full disk, the same call three times: {:?}; pushes: {rang}",
        seen.iter().map(|(s, b)| (s, b["deliveries"][0]["reason"].clone(), b["report_saved"].clone())).collect::<Vec<_>>()
    );
    assert!(rang <= 1, "a full disk rang the phone {rang} times");
    assert!(seen.iter().all(|(s, _)| *s == 503), "nothing could be claimed, so every answer is 503: {seen:?}");
    // A registration cannot be stored either: 503, XML on UDS.
    let r = app.put_uds("alice", "pw-alice", "tablet", uds_xml(&apns_token(), "APNS", &k, APP)).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("retry-after").is_some());

    std::fs::remove_file(filler).unwrap();
    let r = call().await;
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["deliveries"][0]["outcome"], "delivered", "{v}");
    assert_eq!(pushes_by_token(&m).get(&t).copied(), Some(1), "rang exactly once, when there was room");
}
