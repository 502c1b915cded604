#!/usr/bin/env python3
"""Shares of a flamegraph's samples by what the stacks contain (docs/BENCHMARKS.md, "v4.2 → v5").

Usage: FOLDED=stacks.txt bash docs/bench/flame.sh out.svg 0.1; python3 docs/bench/shares.py stacks.txt
A stack counts in every category it matches, so the shares overlap."""
import sys, re
R = {
 "parking/unparking (tokio park, driver turn, thread park, futex wake)": re.compile(r"(worker::Context::park|Parker::park|Driver::park|park_timeout|unpark|Unparker|futex_wake|try_to_wake_up|std::thread::Thread::unpark|Inner::park|CachedParkThread)"),
 "kernel scheduler/futex/epoll frames": re.compile(r";(__schedule|schedule|finish_task_switch[^;]*|futex_wait[^;]*|futex_wake[^;]*|do_futex|__x64_sys_futex|ep_poll|do_epoll_wait|__x64_sys_epoll_wait|try_to_wake_up|schedule_hrtimeout_range[^;]*)(;|$)"),
 "hyper HTTP/1.1 server": re.compile(r"hyper::proto::h1|hyper::server|hyper_util::server"),
 "h2 client (APNs)": re.compile(r"\bh2::"),
 "sqlite3 / rusqlite": re.compile(r"sqlite3|rusqlite"),
 "sqlx": re.compile(r"sqlx"),
}
for p in sys.argv[1:]:
    rows=[]
    for l in open(p):
        st,_,n=l.rstrip().rpartition(" "); rows.append((st,int(n)))
    tot=sum(n for _,n in rows)
    print(p, " | ".join(f"{k}: {sum(n for s,n in rows if r.search(s))*100/tot:.1f}%" for k,r in R.items()))
