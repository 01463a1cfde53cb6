//! What the harness reads from the operating system and how it runs the server apart: the
//! server in a child process of this binary (so its CPU and memory are its own), CPU time of
//! a process and of every PostgreSQL process from `/proc`, resident memory, the fd limit.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};

/// First argument that makes this binary serve instead of benchmark.
pub const SERVE_CHILD: &str = "__serve";

/// Child mode: serve the database in argv[2] on a free loopback port with token auth and the
/// default maintenance loop, print `listening ADDR`, stop when stdin closes.
pub fn serve_child() {
    let url = std::env::args().nth(2).expect("database url");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(async move {
        let mut cfg = agentpool_server::ServerConfig::new(url, "127.0.0.1:0".parse().expect("addr"));
        cfg.body_limit = 16 * 1024 * 1024;
        cfg.max_waiting_claims = 100_000;
        let server = agentpool_server::start(cfg).await.expect("start server");
        println!("listening {}", server.addr);
        std::io::stdout().flush().ok();
        // Stop when the parent closes our stdin (or goes away).
        tokio::task::spawn_blocking(|| {
            let mut s = String::new();
            while std::io::stdin().read_line(&mut s).map(|n| n > 0).unwrap_or(false) {
                s.clear();
            }
        })
        .await
        .ok();
        server.shutdown().await.ok();
    });
}

/// The server running in a child process.
pub struct ServerProc {
    child: Child,
    pub base: String,
}

impl ServerProc {
    pub fn start(db_url: &str) -> Self {
        let exe = std::env::current_exe().expect("own path");
        let mut child = Command::new(exe)
            .arg(SERVE_CHILD)
            .arg(db_url)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start the server process");
        let out = child.stdout.take().expect("child stdout");
        let mut line = String::new();
        BufReader::new(out).read_line(&mut line).expect("server address");
        let addr = line
            .trim()
            .strip_prefix("listening ")
            .unwrap_or_else(|| panic!("server said {line:?}"))
            .to_string();
        Self {
            child,
            base: format!("http://{addr}"),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop it (drain, finish requests) and wait.
    pub fn stop(mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.wait();
    }
}

/// Clock ticks per second for `/proc/*/stat` times (USER_HZ, 100 on Linux).
fn ticks_per_sec() -> f64 {
    // SAFETY: sysconf only reads a configuration value.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

/// utime + stime of `pid` in seconds (threads included), or 0 if it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return 0.0;
    };
    // Fields after the command name (which may contain spaces) start after the last ')'.
    let Some(rest) = s.rfind(')').map(|i| &s[i + 2..]) else {
        return 0.0;
    };
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest[0] is field 3 (state); utime is field 14, stime field 15.
    let get = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (get(14) + get(15)) / ticks_per_sec()
}

/// CPU seconds of every process named `postgres` (the whole cluster: backends, WAL writer,
/// checkpointer, autovacuum). Backends that exit between two readings take their time with
/// them; connection pools keep theirs open for the run.
pub fn postgres_cpu_secs() -> f64 {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return 0.0;
    };
    dir.filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .map(|c| c.trim() == "postgres")
                .unwrap_or(false)
        })
        .map(cpu_secs)
        .sum()
}

/// Resident memory of `pid` in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse::<f64>().ok())
        })
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// Thousands of workers hold thousands of sockets: lift the soft fd limit to the hard one.
pub fn raise_fd_limit() {
    let mut l = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: plain getrlimit/setrlimit on a stack value.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut l) == 0 && l.rlim_cur < l.rlim_max {
            l.rlim_cur = l.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &l);
        }
    }
}

/// CPU of the server process and of PostgreSQL between two moments.
#[derive(Debug, Clone, Copy)]
pub struct CpuMark {
    server: f64,
    pg: f64,
}

impl CpuMark {
    pub fn now(server_pid: u32) -> Self {
        Self {
            server: cpu_secs(server_pid),
            pg: postgres_cpu_secs(),
        }
    }

    /// (server, PostgreSQL) CPU seconds since `self`.
    pub fn since(&self, server_pid: u32) -> (f64, f64) {
        let now = Self::now(server_pid);
        (now.server - self.server, now.pg - self.pg)
    }
}
