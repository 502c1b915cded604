//! CPU and memory accounting from /proc: per thread group of this
//! process, the PostgreSQL server's processes, the rest of the machine;
//! RSS, listen-queue overflows, load average, CPU model.

use std::path::{Path, PathBuf};

/// CPU seconds of the whole process and per thread group.
#[derive(Clone, Copy, Default, Debug)]
pub(crate) struct Cpu {
    pub(crate) total: f64,
    pub(crate) relay_rt: f64,
    pub(crate) sqlite: f64,
    pub(crate) mock: f64,
    pub(crate) gen: f64,
    /// The PostgreSQL server's processes (postmaster, its live children and
    /// the children it already reaped), when the database is a local server.
    pub(crate) db: f64,
    /// Busy CPU seconds of the whole machine (/proc/stat), all processes.
    pub(crate) machine: f64,
    /// Heap allocations on the relay runtime's threads, and their bytes (`alloc`).
    pub(crate) relay_allocs: f64,
    pub(crate) relay_alloc_bytes: f64,
    /// Voluntary context switches of the relay's threads (its runtime and
    /// the SQLite threads): each is the thread going to sleep, to be woken
    /// again. Per call, the wake-ups a call costs.
    pub(crate) relay_wakeups: f64,
}

impl std::ops::Sub for Cpu {
    type Output = Cpu;
    fn sub(self, o: Cpu) -> Cpu {
        Cpu {
            total: self.total - o.total,
            relay_rt: self.relay_rt - o.relay_rt,
            sqlite: self.sqlite - o.sqlite,
            mock: self.mock - o.mock,
            gen: self.gen - o.gen,
            db: self.db - o.db,
            machine: self.machine - o.machine,
            relay_allocs: self.relay_allocs - o.relay_allocs,
            relay_alloc_bytes: self.relay_alloc_bytes - o.relay_alloc_bytes,
            relay_wakeups: self.relay_wakeups - o.relay_wakeups,
        }
    }
}

impl Cpu {
    /// Everything that is not the mock or the generator: relay runtime, SQLite
    /// worker threads, exited blocking threads, main thread.
    pub(crate) fn relay(&self) -> f64 {
        self.total - self.mock - self.gen
    }
    /// The relay without its store: `relay()` minus the SQLite worker threads.
    /// total = relay_code + store + mock + gen on both backends.
    pub(crate) fn relay_code(&self) -> f64 {
        self.relay() - self.sqlite
    }
    /// CPU seconds other processes on the machine used meanwhile (not this
    /// process, not the benchmark's PostgreSQL server).
    pub(crate) fn others(&self) -> f64 {
        (self.machine - self.total - self.db).max(0.0)
    }
    /// Everything the benchmark used: this process and its database server.
    pub(crate) fn all(&self) -> f64 {
        self.total + self.db
    }
    /// The store's CPU: SQLite worker threads (in process) or the PostgreSQL server.
    pub(crate) fn store(&self) -> f64 {
        self.sqlite + self.db
    }
}

/// The pid of the PostgreSQL postmaster serving the benchmark (found once
/// by the port in its command line), so its CPU is not counted as "others".
pub(crate) static POSTMASTER: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();

pub(crate) fn find_postmaster(port: u16) -> Option<u32> {
    let want = port.to_string();
    for e in std::fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_pg = args.first().map(|a| a.ends_with(b"/postgres") || *a == b"postgres").unwrap_or(false);
        let has_port = args.windows(2).any(|w| w[0] == b"-p" && w[1] == want.as_bytes());
        if is_pg && has_port {
            return Some(pid);
        }
    }
    None
}

/// utime+stime of the postmaster's live children, plus the postmaster's own
/// utime+stime+cutime+cstime (backends that already exited), in ticks.
pub(crate) fn postmaster_ticks(pm: u32) -> u64 {
    let fields = |path: &Path| -> Option<Vec<u64>> {
        let s = std::fs::read_to_string(path).ok()?;
        let rest = &s[s.rfind(')')? + 2..];
        Some(rest.split_whitespace().map(|x| x.parse::<u64>().unwrap_or(0)).collect())
    };
    let mut t = 0;
    if let Some(f) = fields(&PathBuf::from(format!("/proc/{pm}/stat"))) {
        // after the comm: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
        t += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0) + f.get(13).copied().unwrap_or(0) + f.get(14).copied().unwrap_or(0);
    }
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            if e.file_name().to_string_lossy().parse::<u32>().is_err() {
                continue;
            }
            let Some(f) = fields(&e.path().join("stat")) else {
                continue;
            };
            if f.get(1).copied() == Some(pm as u64) {
                t += f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
            }
        }
    }
    t
}

/// Busy seconds of all CPUs: user+nice+system+irq+softirq+steal from /proc/stat.
pub(crate) fn machine_busy() -> f64 {
    let s = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = s.lines().next() else {
        return 0.0;
    };
    let v: Vec<u64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    let get = |i: usize| v.get(i).copied().unwrap_or(0);
    (get(0) + get(1) + get(2) + get(5) + get(6) + get(7)) as f64 / clk_tck()
}

pub(crate) fn clk_tck() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    *TCK.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// utime + stime (ticks) from a `stat` file.
pub(crate) fn stat_ticks(path: &Path) -> Option<u64> {
    let s = std::fs::read_to_string(path).ok()?;
    let rest = &s[s.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

pub(crate) fn cpu_now() -> Cpu {
    let tck = clk_tck();
    let (allocs, bytes) = crate::alloc::counted();
    let mut c = Cpu {
        relay_allocs: allocs as f64,
        relay_alloc_bytes: bytes as f64,
        total: stat_ticks(Path::new("/proc/self/stat")).unwrap_or(0) as f64 / tck,
        machine: machine_busy(),
        db: POSTMASTER.get().copied().flatten().map(|pm| postmaster_ticks(pm) as f64 / tck).unwrap_or(0.0),
        ..Default::default()
    };
    if let Ok(dir) = std::fs::read_dir("/proc/self/task") {
        for e in dir.flatten() {
            let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
            let t = stat_ticks(&e.path().join("stat")).unwrap_or(0) as f64 / tck;
            let comm = comm.trim();
            if comm.starts_with("gen-rt") {
                c.gen += t;
            } else if comm.starts_with("mock-rt") {
                c.mock += t;
            } else if comm.starts_with("sqlx-sqlite") || comm.starts_with("sqlite-writer") {
                c.sqlite += t;
                c.relay_wakeups += voluntary_switches(&e.path());
            } else if comm.starts_with("relay-rt") {
                c.relay_rt += t;
                c.relay_wakeups += voluntary_switches(&e.path());
            }
        }
    }
    c
}

/// `voluntary_ctxt_switches` of a task (/proc/self/task/N/status).
fn voluntary_switches(task: &Path) -> f64 {
    std::fs::read_to_string(task.join("status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:").and_then(|v| v.trim().parse::<f64>().ok())))
        .unwrap_or(0.0)
}

/// Resident set size of this process (kB), from /proc/self/status.
pub(crate) fn rss_kb() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("VmRSS:")).and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok())))
        .unwrap_or(0)
}

/// TcpExt ListenOverflows (SYNs dropped because a listen queue was full),
/// machine-wide, from /proc/net/netstat.
pub(crate) fn listen_overflows() -> u64 {
    let s = std::fs::read_to_string("/proc/net/netstat").unwrap_or_default();
    let mut lines = s.lines();
    while let (Some(h), Some(v)) = (lines.next(), lines.next()) {
        if h.starts_with("TcpExt:") {
            let i = h.split_whitespace().position(|k| k == "ListenOverflows");
            return i.and_then(|i| v.split_whitespace().nth(i)).and_then(|x| x.parse().ok()).unwrap_or(0);
        }
    }
    0
}

/// The 1-minute load average before the run: other processes on the machine skew results.
pub(crate) fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg").ok().and_then(|s| s.split_whitespace().next().map(str::to_string)).unwrap_or_default()
}

pub(crate) fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("model name")).map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string()))
        .unwrap_or_else(|| "unknown CPU".into())
}
