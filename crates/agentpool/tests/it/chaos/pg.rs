//! A private PostgreSQL cluster for one test, so that the test may restart it: the shared test
//! cluster serves every other test at the same time.

use std::path::PathBuf;
use std::process::{Command, Stdio};

pub struct PrivatePg {
    bin: PathBuf,
    data: PathBuf,
    pub port: u16,
    _dir: tempfile::TempDir,
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// postgres refuses to run as root: as root, the cluster belongs to the `postgres` user.
fn as_pg(bin: PathBuf) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(bin);
        c
    } else {
        Command::new(bin)
    }
}

impl PrivatePg {
    /// initdb and start a cluster on a free port; `None` when PostgreSQL is not installed.
    pub fn start() -> Option<Self> {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
            .find(|b| b.join("postgres").is_file())?;
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("pg");
        std::fs::create_dir_all(&data).expect("data dir");
        if is_root() {
            let ok = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(dir.path())
                .status()
                .is_ok_and(|s| s.success());
            assert!(ok, "chown the cluster directory to postgres");
        }
        let port = crate::chaos::free_port();
        let ok = as_pg(bin.join("initdb"))
            .arg("-D")
            .arg(&data)
            .args(["-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-locale"])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "initdb");
        let conf = format!(
            "listen_addresses = '127.0.0.1'\nport = {port}\nunix_socket_directories = '{}'\n\
             max_connections = 200\nfsync = off\nsynchronous_commit = off\n",
            data.display()
        );
        let mut c = std::fs::read_to_string(data.join("postgresql.conf")).expect("conf");
        c.push_str(&conf);
        std::fs::write(data.join("postgresql.conf"), c).expect("write conf");
        let pg = Self {
            bin,
            data,
            port,
            _dir: dir,
        };
        pg.ctl(&["start"]);
        Some(pg)
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn ctl(&self, args: &[&str]) {
        let log = self.data.join("server.log");
        let ok = as_pg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .arg("-l")
            .arg(&log)
            .args(["-w", "-t", "60"])
            .args(args)
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "pg_ctl {args:?}");
    }

    /// What an operator's `pg_ctl restart -m fast` does: sessions are terminated, in-flight
    /// statements fail, and the server comes back.
    pub fn restart(&self) {
        self.ctl(&["-m", "fast", "restart"]);
    }

    /// `pg_ctl stop -m fast`: the database is gone until [`PrivatePg::resume`].
    pub fn stop(&self) {
        self.ctl(&["-m", "fast", "stop"]);
    }

    /// Start the cluster [`PrivatePg::stop`] stopped.
    pub fn resume(&self) {
        self.ctl(&["start"]);
    }
}

impl Drop for PrivatePg {
    fn drop(&mut self) {
        let _ = as_pg(self.bin.join("pg_ctl"))
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "stop"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
