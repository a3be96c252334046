//! A throw-away PostgreSQL server for tests, run from Debian's `postgresql` package.
//!
//! Each [`TestPostgres`] is its own cluster in a fresh directory under `/tmp`, on a free
//! loopback port, with trust authentication and `fsync=off` (durability is not under test and
//! syncing would slow every test down). Dropping it stops the server and removes the directory.
//! PostgreSQL refuses to run as root, so when the tests run as root its commands run as the
//! `postgres` user, which owns the directory.
//!
//! A missing installation is an error, never a skip: the PostgreSQL back end must be tested.

use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, anyhow, bail};

const INSTALL_HINT: &str = "PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin: \
     install Debian's postgresql package (apt-get install -y postgresql)";

/// Attempts to start on a fresh port if another process took the chosen one in the meantime.
const START_ATTEMPTS: usize = 3;

/// A running PostgreSQL server, stopped and deleted on drop.
pub struct TestPostgres {
    /// `postgres://postgres@127.0.0.1:PORT/postgres`: the default database of the server.
    pub url: String,
    pub port: u16,
    bin: PathBuf,
    data: PathBuf,
    /// Runs the server's commands as the `postgres` user (when the tests run as root).
    run_as_postgres: bool,
    dir: Option<tempfile::TempDir>,
}

impl std::fmt::Debug for TestPostgres {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestPostgres")
            .field("url", &self.url)
            .field("data", &self.data)
            .finish_non_exhaustive()
    }
}

impl TestPostgres {
    /// Creates a cluster and starts it; fails with an install hint when PostgreSQL is missing.
    pub fn start() -> anyhow::Result<TestPostgres> {
        let bin = find_bin_dir()?;
        let run_as_postgres = running_as_root();
        let dir = tempfile::Builder::new()
            .prefix("lotus-pg-")
            .tempdir_in("/tmp")
            .context("creating a directory for the test PostgreSQL")?;
        if run_as_postgres {
            give_to_postgres_user(dir.path())?;
        }
        let data = dir.path().join("data");
        let mut pg = TestPostgres {
            url: String::new(),
            port: 0,
            bin,
            data,
            run_as_postgres,
            dir: Some(dir),
        };
        pg.run(
            "initdb",
            &[
                "-D".as_ref(),
                pg.data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--no-sync".as_ref(),
                "--no-instructions".as_ref(),
            ],
        )?;

        let mut last_error = None;
        for _ in 0..START_ATTEMPTS {
            let port = free_port()?;
            match pg.start_on(port) {
                Ok(()) => {
                    pg.port = port;
                    pg.url = format!("postgres://postgres@127.0.0.1:{port}/postgres");
                    return Ok(pg);
                }
                Err(e) => last_error = Some(e),
            }
        }
        Err(last_error.unwrap_or_else(|| anyhow!("PostgreSQL did not start")))
    }

    /// Creates another database on this server and returns its URL, for tests that want
    /// isolation without the cost of another server.
    pub fn create_database(&self, name: &str) -> anyhow::Result<String> {
        let port = self.port.to_string();
        self.run(
            "createdb",
            &[
                "-h".as_ref(),
                "127.0.0.1".as_ref(),
                "-p".as_ref(),
                port.as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                name.as_ref(),
            ],
        )?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    fn dir(&self) -> &Path {
        self.dir
            .as_ref()
            .expect("the directory lives as long as the server")
            .path()
    }

    fn start_on(&self, port: u16) -> anyhow::Result<()> {
        let log = self.dir().join("server.log");
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
             -c synchronous_commit=off -c full_page_writes=off",
            self.dir().display()
        );
        let started = self.run(
            "pg_ctl",
            &[
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                self.data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "start".as_ref(),
            ],
        );
        started.map(|_| ()).map_err(|e| {
            let server_log = std::fs::read_to_string(&log).unwrap_or_default();
            e.context(format!(
                "starting PostgreSQL on port {port}; server log:\n{server_log}"
            ))
        })
    }

    /// Runs one of the server's programs (as `postgres` when needed); fails with its output.
    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
        let path = self.bin.join(program);
        let mut command = if self.run_as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&path);
            c
        } else {
            Command::new(&path)
        };
        command.args(args).current_dir("/tmp");
        let output = command
            .output()
            .with_context(|| format!("running {}", path.display()))?;
        if !output.status.success() {
            bail!(
                "{} failed ({}):\n{}{}",
                path.display(),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(output)
    }
}

impl Drop for TestPostgres {
    fn drop(&mut self) {
        if self.port != 0 {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    self.data.as_os_str(),
                    "-m".as_ref(),
                    "immediate".as_ref(),
                    "-w".as_ref(),
                    "stop".as_ref(),
                ],
            );
        }
        if let Some(dir) = self.dir.take() {
            let _ = dir.close();
        }
    }
}

/// The `bin` directory of the newest PostgreSQL installed by Debian's packages.
fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let entries = std::fs::read_dir("/usr/lib/postgresql").map_err(|_| anyhow!(INSTALL_HINT))?;
    entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version: Vec<u32> = e
                .file_name()
                .to_str()?
                .split('.')
                .map(|p| p.parse().ok())
                .collect::<Option<_>>()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((version, bin))
        })
        .max()
        .map(|(_, bin)| bin)
        .ok_or_else(|| anyhow!(INSTALL_HINT))
}

/// Is the effective user root? (Read from `/proc`, so no libc binding is needed.)
fn running_as_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| {
            let line = status.lines().find(|l| l.starts_with("Uid:"))?;
            // Uid: real effective saved filesystem
            line.split_whitespace().nth(2).map(|euid| euid == "0")
        })
        .unwrap_or(false)
}

/// Makes `dir` owned by the `postgres` user, which Debian's package creates.
fn give_to_postgres_user(dir: &Path) -> anyhow::Result<()> {
    let passwd = std::fs::read_to_string("/etc/passwd").context("reading /etc/passwd")?;
    let (uid, gid) = passwd
        .lines()
        .find_map(|line| {
            let mut fields = line.split(':');
            if fields.next()? != "postgres" {
                return None;
            }
            let _password = fields.next()?;
            Some((fields.next()?.parse().ok()?, fields.next()?.parse().ok()?))
        })
        .ok_or_else(|| {
            anyhow!(
                "running as root, and there is no 'postgres' user to run PostgreSQL as: {INSTALL_HINT}"
            )
        })?;
    std::os::unix::fs::chown(dir, Some(uid), Some(gid))
        .with_context(|| format!("giving {} to the postgres user", dir.display()))
}

/// A loopback port that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let listener =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).context("finding a free loopback port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_serves_and_cleans_up() {
        let pg = TestPostgres::start().expect("PostgreSQL starts");
        let dir = pg.dir().to_path_buf();
        assert!(pg.url.starts_with("postgres://postgres@127.0.0.1:"));
        std::net::TcpStream::connect(("127.0.0.1", pg.port)).expect("the server listens");
        let other = pg.create_database("second").expect("createdb works");
        assert!(other.ends_with("/second"));
        drop(pg);
        assert!(!dir.exists(), "the cluster directory is removed");
    }
}
