//! A real `redis-server` for the tests: started on a free loopback port, stopped (by PID) when
//! dropped. `scripts/test.sh` installs the Debian package when it is missing. Cluster and
//! Sentinel set-ups made of these are in [`super::topology`].

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` process owned by one test.
pub struct RedisServer {
    port: u16,
    /// Arguments after the common ones (cluster mode, `--replicaof`, a Sentinel's config file).
    extra: Vec<String>,
    child: Option<Child>,
}

/// A free loopback port (bound, then released for the server to take).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The highest port a Cluster node may listen on: Redis also listens on the port plus 10000
/// (the cluster bus) and refuses to start above this.
const MAX_CLUSTER_PORT: u16 = 55535;

/// A free loopback port for a Cluster node: at most [`MAX_CLUSTER_PORT`], with its bus port
/// (plus 10000) free too. The kernel hands out ports up to 60999, a fifth of them too high.
pub fn free_cluster_port() -> u16 {
    for _ in 0..1000 {
        let port = free_port();
        if port <= MAX_CLUSTER_PORT && TcpListener::bind(("127.0.0.1", port + 10000)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port pair for a Cluster node in 1000 tries");
}

/// Times a server is started on a new port when it does not come up (another process took
/// the port between the check and the start).
const START_TRIES: usize = 5;

impl RedisServer {
    /// Starts a server on a free port, without persistence, and waits until it answers PING.
    pub fn start() -> Self {
        Self::start_on_free_port(free_port, |_| Vec::new())
    }

    /// Starts a server on `port` with `extra` arguments and waits until it answers PING.
    pub fn start_with(port: u16, extra: Vec<String>) -> Self {
        let mut server = Self {
            port,
            extra,
            child: None,
        };
        server.spawn();
        server
    }

    /// Starts a server on a port from `port` with the arguments `extra(port)`, on another port
    /// when it does not come up (exits at once, or does not answer), up to [`START_TRIES`]
    /// times.
    pub fn start_on_free_port(port: fn() -> u16, extra: impl Fn(u16) -> Vec<String>) -> Self {
        for _ in 1..START_TRIES {
            let p = port();
            let mut server = Self {
                port: p,
                extra: extra(p),
                child: None,
            };
            if server.try_spawn() {
                return server;
            }
            server.kill();
        }
        let p = port();
        Self::start_with(p, extra(p))
    }

    /// [`start`](Self::start), or `None` when `redis-server` is not installed (benches skip
    /// their Redis part then; tests install it through `scripts/test.sh` and use `start`).
    pub fn try_start() -> Option<Self> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok();
        installed.then(Self::start)
    }

    /// Starts the process and waits until it answers PING; panics when it does not.
    fn spawn(&mut self) {
        assert!(
            self.try_spawn(),
            "redis-server did not answer on port {}",
            self.port
        );
    }

    /// Starts the process; `false` when it exits or does not answer PING within 30 s (a
    /// loaded test machine starts six at once for a Cluster).
    fn try_spawn(&mut self) -> bool {
        let mut cmd = Command::new("redis-server");
        // A Sentinel's config file must come first.
        let (first, rest) = match self.extra.first() {
            Some(conf) if conf.ends_with(".conf") => (Some(conf), &self.extra[1..]),
            _ => (None, &self.extra[..]),
        };
        cmd.args(first);
        cmd.args([
            "--port",
            &self.port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--protected-mode",
            "yes",
        ]);
        let child = cmd
            .args(rest)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server on PATH (scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if self
                .command(&["PING"])
                .is_some_and(|r| r.starts_with("+PONG"))
            {
                return true;
            }
            let exited = self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().is_ok_and(|s| s.is_some()));
            if exited {
                self.child = None;
                return false;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        false
    }

    /// `redis://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Whether the process runs (not killed by the test).
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// Kills the server (SIGKILL, by PID): Redis is gone, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port (empty: no persistence).
    pub fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// Sends one command and returns the raw reply, `None` when the server does not answer.
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// Sends one command with binary arguments.
    pub fn command_bytes(&self, args: &[&[u8]]) -> Option<String> {
        self.child.as_ref()?;
        send(self.port, args)
    }

    /// The keys matching `pattern` (`KEYS`; fine on a test server).
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        let reply = self.command(&["KEYS", pattern]).unwrap_or_default();
        reply
            .split("\r\n")
            .skip(1)
            .filter(|l| !l.starts_with('$') && !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// The value of `field` in the reply of `INFO <section>` (or `CLUSTER INFO`), if any.
    pub fn info_field(&self, args: &[&str], field: &str) -> Option<String> {
        let reply = self.command(args)?;
        reply
            .lines()
            .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
            .map(|v| v.trim().to_owned())
    }
}

/// Sends one command (RESP) to a loopback port and reads the reply (up to a bounded size,
/// with a read timeout), `None` when nothing answers.
pub fn send(port: u16, args: &[&[u8]]) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_secs(2)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    let mut req = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        req.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        req.extend_from_slice(a);
        req.extend_from_slice(b"\r\n");
    }
    stream.write_all(&req).ok()?;
    let mut buf = Vec::with_capacity(1 << 12);
    let mut chunk = [0u8; 1 << 12];
    // Read until one whole reply is in (KEYS and CLUSTER NODES may take several reads).
    while resp_len(&buf).is_none() && buf.len() < 1 << 22 {
        match stream.read(&mut chunk) {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    (!buf.is_empty()).then(|| String::from_utf8_lossy(&buf).into_owned())
}

/// The length of the first complete RESP value in `buf`, `None` while it is incomplete.
fn resp_len(buf: &[u8]) -> Option<usize> {
    let line_end = buf.windows(2).position(|w| w == b"\r\n")?;
    let line = std::str::from_utf8(&buf[1..line_end]).ok()?;
    let after = line_end + 2;
    match buf.first()? {
        b'+' | b'-' | b':' | b'_' | b',' | b'#' => Some(after),
        b'$' => {
            let n: i64 = line.parse().ok()?;
            if n < 0 {
                return Some(after);
            }
            let end = after + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        b'*' | b'~' | b'>' => {
            let n: i64 = line.parse().ok()?;
            let mut at = after;
            for _ in 0..n.max(0) {
                at += resp_len(&buf[at..])?;
            }
            Some(at)
        }
        _ => Some(buf.len()),
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
