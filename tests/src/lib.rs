//! Helpers for black-box tests: find the `patron` binary, run it, and give each test a fresh
//! database (a SQLite file in a temporary directory, or a new PostgreSQL database).

#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output};
use std::sync::OnceLock;

use sqlx::{Connection, Executor, PgConnection};

/// Sends SIGINT (what Ctrl-C sends) to `child` and waits for it to exit.
pub fn interrupt(child: &mut Child) -> ExitStatus {
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success(),
        "kill -INT {pid}"
    );
    child.wait().unwrap()
}

/// The `patron` binary. Under `cargo test` it is (re)built first with the same cargo and
/// profile, so a stale binary is never tested; `PATRON_BIN` overrides.
pub fn patron_bin() -> PathBuf {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        if let Some(bin) = std::env::var_os("PATRON_BIN") {
            return bin.into();
        }
        let exe = std::env::current_exe().expect("test executable path");
        let dir = exe
            .parent()
            .and_then(|deps| deps.parent())
            .expect("target directory");
        if let Some(cargo) = std::env::var_os("CARGO") {
            let mut build = Command::new(cargo);
            build.args(["build", "--quiet", "-p", "patron", "--bin", "patron"]);
            if dir.file_name().is_some_and(|p| p == "release") {
                build.arg("--release");
            }
            let status = build.status().expect("run cargo build");
            assert!(status.success(), "cargo build -p patron failed");
        }
        let bin = dir.join(format!("patron{}", std::env::consts::EXE_SUFFIX));
        assert!(
            bin.exists(),
            "{} does not exist: build it with `cargo build -p patron`",
            bin.display()
        );
        bin
    })
    .clone()
}

/// What one run of `patron` printed.
pub struct Run {
    /// Exit status and output.
    pub output: Output,
}

impl Run {
    /// Standard output as text.
    pub fn stdout(&self) -> String {
        String::from_utf8_lossy(&self.output.stdout).into_owned()
    }

    /// Standard error as text.
    pub fn stderr(&self) -> String {
        String::from_utf8_lossy(&self.output.stderr).into_owned()
    }

    /// Panics with both streams unless the run succeeded.
    #[track_caller]
    pub fn success(self) -> Self {
        assert!(
            self.output.status.success(),
            "patron failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.output.status,
            self.stdout(),
            self.stderr()
        );
        self
    }
}

/// Runs `patron` with the given arguments against a database.
pub fn patron(database_url: &str, args: &[&str]) -> Run {
    let output = Command::new(patron_bin())
        .args(args)
        .env("PATRON_DATABASE_URL", database_url)
        .env("PATRON_LOG", "warn")
        .env("NO_COLOR", "1")
        .output()
        .expect("start the patron binary");
    Run { output }
}

pub use patron_store_sql::testing::postgres_url;

/// A database created for one test and dropped when this guard drops.
pub struct PgDatabase {
    /// URL of the new database.
    pub url: String,
    name: String,
}

impl PgDatabase {
    /// Creates an empty database.
    pub async fn create() -> Self {
        let admin_url = postgres_url();
        let mut admin = PgConnection::connect(&admin_url).await.unwrap_or_else(|e| {
            panic!("PostgreSQL is needed at {admin_url} ({e}); `make postgres` says how to get one")
        });
        let name = format!("patron_e2e_{}", uuid::Uuid::new_v4().simple());
        admin
            .execute(format!("CREATE DATABASE {name}").as_str())
            .await
            .expect("create the test database");
        let base = admin_url
            .rsplit_once('/')
            .map_or(admin_url.as_str(), |(b, _)| b);
        Self {
            url: format!("{base}/{name}"),
            name,
        }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let admin_url = postgres_url();
        let name = self.name.clone();
        // Best effort, on a thread of its own so that dropping inside a runtime is fine.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url)
                    .await
                    .map_err(std::io::Error::other)?;
                admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map_err(std::io::Error::other)?;
                Ok::<_, std::io::Error>(())
            })
        })
        .join();
    }
}

/// The example events shipped in `examples/events.jsonl`.
pub fn example_events() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/events.jsonl")
}

/// A small deterministic generator: tests seed it per run and print the seed, so a failure can be
/// replayed.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next number below `bound`.
    pub fn next(&mut self, bound: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % bound
    }
}
