//! Redis topologies for the multi-instance tests: one server, a Redis Cluster (3 masters with
//! a replica each), or Sentinel (a master, a replica and 3 sentinels). Each is started on
//! loopback, on free ports, in its own temporary directory, and stopped by PID when dropped
//! (the directory is removed then).
//!
//! Tests written once against a [`Topology`] run on each of them through
//! [`on_every_topology!`](crate::on_every_topology): `cargo test --test cache_redis cluster::`
//! runs the cluster's.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::redis::{free_cluster_port, free_port, send, RedisServer};

/// The name of the master the sentinels watch.
pub const SERVICE: &str = "mymaster";

/// Which topology.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// One `redis-server`.
    Single,
    /// Redis Cluster: 3 masters, 1 replica each.
    Cluster,
    /// Sentinel: 1 master, 1 replica, 3 sentinels.
    Sentinel,
}

/// A running topology. Processes stop (by PID) when it is dropped.
pub struct Topology {
    kind: Kind,
    /// Single: the server. Cluster: 6 nodes (the first 3 were made masters). Sentinel: the
    /// first master, then its replica.
    nodes: Vec<RedisServer>,
    sentinels: Vec<RedisServer>,
    /// Holds `nodes-<port>.conf` and the sentinels' files; removed after the processes stop.
    dir: TempDir,
}

/// A directory removed when dropped.
struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `cond` every 20 ms for up to `limit`; panics with `what` when it never holds.
pub fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(cond(), "{what} (waited {limit:?})");
}

impl Topology {
    /// Starts the topology and waits until it serves (cluster: every node says
    /// `cluster_state:ok` and every replica is in sync; Sentinel: the replica is in sync and
    /// every sentinel names the master).
    pub fn start(kind: Kind) -> Self {
        let first = free_port();
        let dir = std::env::temp_dir().join(format!(
            "tower-perf-{kind:?}-{}-{first}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let mut t = Self {
            kind,
            nodes: Vec::new(),
            sentinels: Vec::new(),
            dir: TempDir(dir),
        };
        match kind {
            Kind::Single => t.nodes.push(RedisServer::start()),
            Kind::Cluster => t.start_cluster(),
            Kind::Sentinel => t.start_sentinel(),
        }
        t
    }

    /// Which topology this is.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    fn dir(&self) -> String {
        self.dir.0.display().to_string()
    }

    fn start_cluster(&mut self) {
        let dir = self.dir();
        for _ in 0..6 {
            let args = |port: u16| {
                [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    &format!("nodes-{port}.conf"),
                    // A master is declared failed after 2 s without answers: long enough for
                    // a loaded test machine, short enough for a failover test.
                    "--cluster-node-timeout",
                    "2000",
                    "--dir",
                    &dir,
                ]
                .iter()
                .map(|s| s.to_string())
                .collect()
            };
            self.nodes
                .push(RedisServer::start_on_free_port(free_cluster_port, args));
        }
        let mut create = Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for n in &self.nodes {
            create.arg(format!("127.0.0.1:{}", n.port()));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]);
        run_bounded(create, Duration::from_secs(30));
        self.wait_cluster_ok();
    }

    /// Waits until every running node says `cluster_state:ok`, every slot has a master that
    /// runs, and every replica's link to its master is up.
    pub fn wait_cluster_ok(&self) {
        wait_for(Duration::from_secs(30), "the cluster is ok", || {
            self.running().all(|n| {
                n.info_field(&["CLUSTER", "INFO"], "cluster_state")
                    .as_deref()
                    == Some("ok")
                    && (role(n) == "master"
                        || n.info_field(&["INFO", "replication"], "master_link_status")
                            .as_deref()
                            == Some("up"))
            }) && self.masters().len() == 3
        });
    }

    fn start_sentinel(&mut self) {
        // In the temp dir: a replica writes the copy it receives to disk.
        let dir = vec!["--dir".to_owned(), self.dir()];
        let master = RedisServer::start_on_free_port(free_port, |_| dir.clone());
        let first = master.port();
        let replica_args: Vec<String> = ["--replicaof", "127.0.0.1", &first.to_string()]
            .iter()
            .map(|s| s.to_string())
            .chain(dir)
            .collect();
        let replica = RedisServer::start_on_free_port(free_port, |_| replica_args.clone());
        wait_for(Duration::from_secs(20), "the replica is in sync", || {
            replica
                .info_field(&["INFO", "replication"], "master_link_status")
                .as_deref()
                == Some("up")
        });
        self.nodes.push(master);
        self.nodes.push(replica);
        // Started once the replica is in sync, so each sentinel's first look at the master
        // lists it (the next look is 10 s later).
        for _ in 0..3 {
            let args = |port: u16| {
                let conf = self.dir.0.join(format!("sentinel-{port}.conf"));
                std::fs::write(
                    &conf,
                    format!(
                        "sentinel monitor {SERVICE} 127.0.0.1 {first} 2\n\
                         sentinel down-after-milliseconds {SERVICE} 2000\n\
                         sentinel failover-timeout {SERVICE} 10000\n"
                    ),
                )
                .expect("sentinel config");
                vec![
                    conf.display().to_string(),
                    "--sentinel".into(),
                    "--dir".into(),
                    self.dir(),
                ]
            };
            let sentinel = RedisServer::start_on_free_port(free_port, args);
            self.sentinels.push(sentinel);
        }
        wait_for(
            Duration::from_secs(20),
            "the sentinels know the master",
            || {
                self.sentinels
                    .iter()
                    .all(|s| self.sentinel_master_port(s) == Some(first))
            },
        );
    }

    /// The port of the master `sentinel` names.
    fn sentinel_master_port(&self, sentinel: &RedisServer) -> Option<u16> {
        let reply = sentinel.command(&["SENTINEL", "get-master-addr-by-name", SERVICE])?;
        reply
            .lines()
            .filter(|l| !l.starts_with(['*', '$']))
            .nth(1)?
            .parse()
            .ok()
    }

    /// The URL of the topology, in the form fred reads: `redis://`, `redis-cluster://` with
    /// every node, or `redis-sentinel://` with every sentinel and the service name.
    pub fn url(&self) -> String {
        let hosts = |servers: &[RedisServer]| {
            let (first, rest) = servers.split_first().expect("servers");
            let nodes: Vec<String> = rest
                .iter()
                .map(|s| format!("node=127.0.0.1:{}", s.port()))
                .collect();
            (first.port(), nodes.join("&"))
        };
        match self.kind {
            Kind::Single => self.nodes[0].url(),
            Kind::Cluster => {
                let (first, nodes) = hosts(&self.nodes);
                format!("redis-cluster://127.0.0.1:{first}?{nodes}")
            }
            Kind::Sentinel => {
                let (first, nodes) = hosts(&self.sentinels);
                format!("redis-sentinel://127.0.0.1:{first}?sentinelServiceName={SERVICE}&{nodes}")
            }
        }
    }

    fn running(&self) -> impl Iterator<Item = &RedisServer> {
        self.nodes.iter().filter(|n| n.is_running())
    }

    /// The running nodes that are masters now.
    pub fn masters(&self) -> Vec<&RedisServer> {
        self.running().filter(|n| role(n) == "master").collect()
    }

    /// The keys matching `pattern` on every master.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.masters()
            .iter()
            .flat_map(|m| m.keys(pattern))
            .collect()
    }

    /// How many keys matching `pattern` each master holds.
    pub fn keys_per_master(&self, pattern: &str) -> Vec<usize> {
        self.masters()
            .iter()
            .map(|m| m.keys(pattern).len())
            .collect()
    }

    /// Sends one command to the master that serves it (following a cluster's `MOVED`).
    pub fn command(&self, args: &[&str]) -> Option<String> {
        let args: Vec<&[u8]> = args.iter().map(|a| a.as_bytes()).collect();
        self.command_bytes(&args)
    }

    /// [`command`](Self::command) with binary arguments.
    pub fn command_bytes(&self, args: &[&[u8]]) -> Option<String> {
        let master = *self.masters().first()?;
        let reply = master.command_bytes(args)?;
        match moved_to(&reply) {
            Some(port) => send(port, args),
            None => Some(reply),
        }
    }

    /// The running master that holds `key`.
    pub fn master_of(&self, key: &str) -> Option<&RedisServer> {
        let port = match self.kind {
            Kind::Cluster => {
                let any = *self.masters().first()?;
                let reply = any.command(&["EXISTS", key])?;
                moved_to(&reply).unwrap_or(any.port())
            }
            _ => self.masters().first()?.port(),
        };
        self.running().find(|n| n.port() == port)
    }

    /// Kills (SIGKILL, by PID) the master that holds `key` (Sentinel: the master). A replica
    /// takes over once the others have noticed (the cluster's node timeout; Sentinel's
    /// `down-after-milliseconds` and an election). Returns the killed port.
    pub fn kill_master_of(&mut self, key: &str) -> u16 {
        if self.kind == Kind::Sentinel {
            // The sentinels must know each other to elect a leader, and the replica.
            self.wait_sentinels_ready();
        }
        let port = self.master_of(key).expect("a master holds the key").port();
        let node = self
            .nodes
            .iter_mut()
            .find(|n| n.port() == port)
            .expect("node");
        node.kill();
        port
    }

    /// Sentinel: waits until every sentinel knows the 2 others and the replica.
    pub fn wait_sentinels_ready(&self) {
        let entries = |s: &RedisServer, what: &str| {
            let reply = s.command(&["SENTINEL", what, SERVICE]).unwrap_or_default();
            reply.lines().filter(|l| *l == "name").count()
        };
        wait_for(
            Duration::from_secs(30),
            "the sentinels know each other",
            || {
                self.sentinels
                    .iter()
                    .all(|s| entries(s, "sentinels") == 2 && entries(s, "replicas") == 1)
            },
        );
    }

    /// Waits until a replica has taken over from a killed master: a cluster says it is ok
    /// on every running node, with 3 masters; every sentinel names a running master.
    pub fn wait_failed_over(&self) {
        wait_for(
            Duration::from_secs(60),
            "a replica took over",
            || match self.kind {
                Kind::Cluster => {
                    self.masters().len() == 3
                        && self.running().all(|n| {
                            n.info_field(&["CLUSTER", "INFO"], "cluster_state")
                                .as_deref()
                                == Some("ok")
                        })
                }
                _ => self.sentinels.iter().all(|s| {
                    self.sentinel_master_port(s).is_some_and(|p| {
                        self.running().any(|n| n.port() == p && role(n) == "master")
                    })
                }),
            },
        );
    }

    /// Sentinel: `SENTINEL FAILOVER`, then waits until every sentinel names the replica as
    /// master and the replica says it is one. Returns the new master's port.
    pub fn sentinel_failover(&self) -> u16 {
        assert_eq!(self.kind, Kind::Sentinel);
        let old = self
            .sentinel_master_port(&self.sentinels[0])
            .expect("master");
        // A sentinel needs to have seen the replica first (`NOGOODSLAVE` until then).
        wait_for(
            Duration::from_secs(30),
            "SENTINEL FAILOVER accepted",
            || {
                self.sentinels[0]
                    .command(&["SENTINEL", "FAILOVER", SERVICE])
                    .is_some_and(|r| r.starts_with("+OK"))
            },
        );
        wait_for(
            Duration::from_secs(60),
            "the sentinels promoted the replica",
            || {
                self.sentinels
                    .iter()
                    .all(|s| self.sentinel_master_port(s).is_some_and(|p| p != old))
            },
        );
        let new = self
            .sentinel_master_port(&self.sentinels[0])
            .expect("master");
        let node = self
            .running()
            .find(|n| n.port() == new)
            .expect("new master");
        wait_for(Duration::from_secs(30), "the new master says so", || {
            role(node) == "master"
        });
        new
    }
}

/// The first word of `ROLE`: `master`, `slave`, or empty when the node does not answer.
pub fn role(node: &RedisServer) -> String {
    let reply = node.command(&["ROLE"]).unwrap_or_default();
    let word = reply.lines().find(|l| !l.starts_with(['*', '$']));
    word.unwrap_or_default().to_owned()
}

/// The port a `-MOVED <slot> <host>:<port>` (or `-ASK`) reply points to.
fn moved_to(reply: &str) -> Option<u16> {
    let rest = reply
        .strip_prefix("-MOVED ")
        .or_else(|| reply.strip_prefix("-ASK "))?;
    let addr = rest.split_whitespace().nth(1)?;
    addr.rsplit(':').next()?.parse().ok()
}

/// Runs `cmd` to its end, killing it (by PID) after `limit`; panics when it fails.
fn run_bounded(mut cmd: Command, limit: Duration) {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("redis-cli on PATH (scripts/test.sh installs redis-server, which brings it)");
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            assert!(status.success(), "{cmd:?} failed: {status}");
            return;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Runs each named test body (an `async fn(Topology)`) on every topology, as
/// `single::<name>`, `cluster::<name>` and `sentinel::<name>`.
#[macro_export]
macro_rules! on_every_topology {
    ($($test:ident),* $(,)?) => {
        $crate::on_topology!(single, Single, $($test),*);
        $crate::on_topology!(cluster, Cluster, $($test),*);
        $crate::on_topology!(sentinel, Sentinel, $($test),*);
    };
}

/// Runs each named test body on one topology, in a module named after it.
#[macro_export]
macro_rules! on_topology {
    ($module:ident, $kind:ident, $($test:ident),*) => {
        mod $module {
            use $crate::common::topology::{Kind, Topology};
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() {
                    let topology = tokio::task::spawn_blocking(|| Topology::start(Kind::$kind))
                        .await
                        .expect("topology");
                    super::$test(topology).await
                }
            )*
        }
    };
}
