//! A private PostgreSQL server for fault tests: a cluster made by `initdb` in a temporary
//! directory, served by `postgres` on a free loopback port, that a test can stop, start again
//! and freeze at will (an outage, a hung server) without touching the machine's own server.
//!
//! ```ignore
//! let mut pg = PgServer::start();          // initdb + postgres; returns once it accepts
//! let url = pg.create_database("app");      // postgres://postgres@127.0.0.1:PORT/app
//! pg.stop();                                // fast shutdown: sessions are cut at once
//! pg.restart();                             // same data, same port
//! pg.freeze(); pg.thaw();                   // SIGSTOP / SIGCONT: a server that hangs
//! ```
//!
//! - The binaries come from `pg_config --bindir`, else the newest `/usr/lib/postgresql/*/bin`
//!   (Debian's layout); `postgresql` must be installed (CI's `.ci/run` makes sure).
//! - `initdb` refuses to run as root, so as root (CI, this machine) every server command runs
//!   as the `postgres` OS user through `setpriv`, which execs the command itself (no extra
//!   process between the shell and the server), and the data directory is handed to it.
//! - The server dies with the test process: it runs under a shell that sends it SIGINT (fast
//!   shutdown) once the test's end of the shell's stdin closes, as `helpers::redis` does.
//! - Trust authentication on loopback and the unix socket in the temporary directory; fsync
//!   off (a test's data need not survive the machine).
//! - Every wait (start, stop) polls `pg_isready` with a bounded deadline, never a fixed sleep.

use std::{
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

/// How long starting or stopping may take before the test fails.
const DEADLINE: Duration = Duration::from_secs(30);

pub struct PgServer {
    pub port: u16,
    bindir: PathBuf,
    /// Holds `data/` (the cluster) and the unix socket.
    dir: tempfile::TempDir,
    /// The shell that runs the server (stdin closed: it stops it).
    child: Option<Child>,
    /// The server's own pid while it runs.
    pid: Option<u32>,
}

/// The folder of the PostgreSQL server binaries.
pub fn bindir() -> PathBuf {
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && dir.join("initdb").exists() {
            return dir;
        }
    }
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|d| d.filter_map(|e| Some(e.ok()?.path().join("bin"))).collect())
        .unwrap_or_default();
    found.retain(|d| d.join("initdb").exists());
    // Newest major version last (numeric folder names).
    found.sort_by_key(|d| {
        d.parent()
            .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found
        .pop()
        .expect("PostgreSQL's server binaries (apt-get install postgresql)")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// `id -u postgres` / `id -g postgres`.
fn postgres_ids() -> (u32, u32) {
    let id = |flag: &str| -> u32 {
        let out = Command::new("id").args([flag, "postgres"]).output().expect("id runs");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("a `postgres` OS user exists (Debian's postgresql package makes it)")
    };
    (id("-u"), id("-g"))
}

/// The words that run `program` as the server's OS user.
fn as_server_user(program: &Path) -> Vec<String> {
    let mut words = Vec::new();
    if is_root() {
        words.extend(
            ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", "--"]
                .iter()
                .map(|s| s.to_string()),
        );
    }
    words.push(program.display().to_string());
    words
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Quotes a word for `sh`.
fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl PgServer {
    /// Makes a cluster and starts it; returns once it accepts connections.
    pub fn start() -> PgServer {
        let bindir = bindir();
        let dir = tempfile::tempdir().unwrap();
        if is_root() {
            let (uid, gid) = postgres_ids();
            std::os::unix::fs::chown(dir.path(), Some(uid), Some(gid)).unwrap();
        }
        let data = dir.path().join("data");
        let mut initdb = as_server_user(&bindir.join("initdb"));
        initdb.extend(
            [
                "-D",
                &data.display().to_string(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
            .iter()
            .map(|s| s.to_string()),
        );
        let out = Command::new(&initdb[0])
            .args(&initdb[1..])
            .output()
            .expect("initdb runs");
        assert!(
            out.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut server = PgServer {
            port: free_port(),
            bindir,
            dir,
            child: None,
            pid: None,
        };
        server.restart();
        server
    }

    /// A URL of database `db` on this server.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates database `db` (with `createdb`) and returns its URL.
    pub fn create_database(&self, db: &str) -> String {
        let out = Command::new(self.bindir.join("createdb"))
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "-U", "postgres", db])
            .output()
            .expect("createdb runs");
        assert!(
            out.status.success(),
            "createdb failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.url(db)
    }

    /// Whether the server accepts connections.
    pub fn accepts(&self) -> bool {
        Command::new(self.bindir.join("pg_isready"))
            .args(["-q", "-h", "127.0.0.1", "-p", &self.port.to_string(), "-t", "1"])
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    }

    /// (Re)starts the server on the same data and port; returns once it accepts.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut postgres = as_server_user(&self.bindir.join("postgres"));
        postgres.extend([
            "-D".to_string(),
            self.dir.path().join("data").display().to_string(),
            "-p".into(),
            self.port.to_string(),
            "-k".into(),
            self.dir.path().display().to_string(),
            "-c".into(),
            "listen_addresses=127.0.0.1".into(),
            "-c".into(),
            "fsync=off".into(),
            "-c".into(),
            "max_connections=50".into(),
        ]);
        let words: Vec<String> = postgres.iter().map(|w| sh_quote(w)).collect();
        // `exec` in the server's place would lose the shell that stops it; the server's pid is
        // printed so that `freeze` can reach it.
        let cmd = format!(
            "{} >{}/server.log 2>&1 & pid=$!; echo $pid; read _; kill -INT $pid; wait $pid",
            words.join(" "),
            sh_quote(&self.dir.path().display().to_string())
        );
        let mut child = Command::new("sh")
            .args(["-c", &cmd])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh runs");
        let pid = {
            use std::io::BufRead;
            let mut line = String::new();
            std::io::BufReader::new(child.stdout.as_mut().unwrap())
                .read_line(&mut line)
                .unwrap();
            line.trim().parse::<u32>().expect("the server's pid")
        };
        self.child = Some(child);
        self.pid = Some(pid);
        let deadline = Instant::now() + DEADLINE;
        while !self.accepts() {
            assert!(
                Instant::now() < deadline,
                "postgres on port {} did not come up: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Fast shutdown (every session is cut at once); returns once the port is closed.
    pub fn stop(&mut self) {
        self.thaw();
        if let Some(mut child) = self.child.take() {
            drop(child.stdin.take());
            let _ = child.wait();
        }
        self.pid = None;
        let deadline = Instant::now() + DEADLINE;
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            assert!(Instant::now() < deadline, "postgres on port {} did not stop", self.port);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The server and its backends, by pid: the postmaster and its children.
    fn processes(&self) -> Vec<u32> {
        let Some(pid) = self.pid else { return Vec::new() };
        let mut out = vec![pid];
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(child) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
                continue;
            };
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // `pid (comm) state ppid …`; comm may hold spaces, so read after its `)`.
            let ppid = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<u32>().ok());
            if ppid == Some(pid) {
                out.push(child);
            }
        }
        out
    }

    fn signal(&self, signal: &str) {
        for pid in self.processes() {
            let _ = Command::new("kill").args([signal, &pid.to_string()]).status();
        }
    }

    /// Stops every process of the server (SIGSTOP): connections stay open and nothing
    /// answers, as with a server that hangs.
    pub fn freeze(&self) {
        self.signal("-STOP");
    }

    /// Lets a frozen server run again.
    pub fn thaw(&self) {
        self.signal("-CONT");
    }
}

impl Drop for PgServer {
    fn drop(&mut self) {
        self.stop();
    }
}
