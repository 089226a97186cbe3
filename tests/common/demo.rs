//! The demo server as its own process: built by `cargo build --example demo_server` with the
//! running test's features, profile and target directory (so the crate is not compiled again),
//! started on a free loopback port and stopped by PID when dropped.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A child process stopped (by PID) and waited for when dropped.
pub struct Proc {
    /// What the process is, for messages.
    pub name: &'static str,
    /// The process.
    pub child: Child,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    /// Waits (60 s at most) until `url` answers 2xx; fails if the process exits first.
    pub async fn wait_until_ok(&mut self, client: &reqwest::Client, url: &str) {
        let up = eventually(Duration::from_secs(60), async || {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("{} exited early: {status}", self.name);
            }
            get_ok(client, url).await.then_some(())
        })
        .await;
        assert!(up.is_some(), "{} did not answer on {url}", self.name);
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free loopback port")
        .port()
}

/// The features this test was built with, for building the demo the same way (so the crate is
/// not compiled again).
pub fn features() -> String {
    let on = [
        ("default", cfg!(feature = "default")),
        ("full", cfg!(feature = "full")),
        ("axum", cfg!(feature = "axum")),
        ("tower-http", cfg!(feature = "tower-http")),
        ("redis", cfg!(feature = "redis")),
        ("redis-rustls", cfg!(feature = "redis-rustls")),
        ("compression-zstd", cfg!(feature = "compression-zstd")),
        ("compression-br", cfg!(feature = "compression-br")),
        ("compression-gzip", cfg!(feature = "compression-gzip")),
        ("compression-deflate", cfg!(feature = "compression-deflate")),
        ("compression-native", cfg!(feature = "compression-native")),
    ];
    let list: Vec<&str> = on.iter().filter(|f| f.1).map(|f| f.0).collect();
    list.join(",")
}

/// Builds the demo server with this test's features, profile and target directory, and
/// returns its path.
pub fn build_demo() -> PathBuf {
    // A test runs as <target dir>/<profile dir>/deps/<test>-<hash>.
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe.parent().and_then(Path::parent).expect("profile dir");
    let target_dir = profile_dir.parent().expect("target dir");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") | None => "dev",
        Some(name) => name,
    };
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "--example", "demo_server"])
        .args(["--manifest-path", manifest, "--profile", profile])
        .arg("--target-dir")
        .arg(target_dir)
        .args(["--no-default-features", "--features", &features()]);
    // The variables cargo sets for this test's run describe this package: build scripts that
    // watch them (ring's `rerun-if-env-changed=CARGO_PKG_NAME`, ...) would run again, and the
    // next `cargo test` would rebuild them once more.
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let set_for_the_test = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ]
        .iter()
        .any(|p| name.starts_with(p))
            || [
                "CARGO_PRIMARY_PACKAGE",
                "CARGO_TARGET_TMPDIR",
                "CARGO_RUSTC_CURRENT_DIR",
            ]
            .contains(&&*name)
            || name == "OUT_DIR";
        if set_for_the_test {
            cmd.env_remove(&*name);
        }
    }
    let status = cmd.status().expect("cargo");
    assert!(status.success(), "cargo build --example demo_server failed");
    let demo = profile_dir.join("examples/demo_server");
    assert!(demo.exists(), "{} missing after the build", demo.display());
    demo
}

/// Polls `check` every 250 ms until it gives a value or `limit` passes.
pub async fn eventually<T>(
    limit: Duration,
    mut check: impl AsyncFnMut() -> Option<T>,
) -> Option<T> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = check().await {
            return Some(v);
        }
        if Instant::now() >= deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

pub async fn get_ok(client: &reqwest::Client, url: &str) -> bool {
    client
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .is_ok_and(|r| r.status().is_success())
}

/// Starts the demo on a free port with `env` set (after the defaults below, so it may override
/// them), and waits until its `/health` answers. `REDIS_URL` turns on its Redis tier and
/// shared quota.
pub async fn start_demo(client: &reqwest::Client, env: &[(&str, &str)]) -> (Proc, String) {
    let port = free_port();
    let mut cmd = Command::new(build_demo());
    cmd.env("HOST", "127.0.0.1")
        .env("PORT", port.to_string())
        // The dashboard (a 50 ms query) counts as slow.
        .env("SLOW_THRESHOLD_MS", "10")
        .env("RUST_LOG", "error,tower_http=off")
        .env_remove("ADMIN_TOKEN")
        .env_remove("REDIS_URL")
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    let mut demo = Proc {
        name: "demo_server",
        child: cmd.spawn().expect("demo_server"),
    };
    let base = format!("http://127.0.0.1:{port}");
    demo.wait_until_ok(client, &format!("{base}/health")).await;
    (demo, base)
}
