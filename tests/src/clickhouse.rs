//! Launcher for a throwaway ClickHouse server (plain process, config in a temp dir,
//! loopback ports) used by the collector's store tests. Killed on drop.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the server binary.
pub const SERVER_BIN: &str = "/usr/sbin/clickhouse-server";

/// A second user with a password (the `default` user has none), for credential tests.
pub const PASSWORD_USER: (&str, &str) = ("gatehouse", "ch-test-password-7f3a");

/// A running (or stopped) ClickHouse server with its own data directory.
pub struct ClickHouse {
    dir: PathBuf,
    http_port: u16,
    child: Option<Child>,
}

fn free_port() -> std::io::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

impl ClickHouse {
    /// Start a server, or `Ok(None)` (with a loud message) when the binary is missing.
    pub fn launch() -> anyhow::Result<Option<Self>> {
        if !Path::new(SERVER_BIN).exists() {
            eprintln!("SKIP: {SERVER_BIN} missing; run `cargo xtask setup`");
            return Ok(None);
        }
        let dir = std::env::temp_dir().join(format!("gh-clickhouse-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("data"))?;
        let http_port = free_port()?;
        let tcp_port = free_port()?;
        let d = dir.display();
        let config = format!(
            "<yandex>\n  <logger><level>warning</level><console>1</console></logger>\n  \
             <listen_host>127.0.0.1</listen_host>\n  <http_port>{http_port}</http_port>\n  \
             <tcp_port>{tcp_port}</tcp_port>\n  <path>{d}/data/</path>\n  \
             <tmp_path>{d}/tmp/</tmp_path>\n  <user_files_path>{d}/user_files/</user_files_path>\n  \
             <format_schema_path>{d}/format_schemas/</format_schema_path>\n  \
             <mark_cache_size>5368709</mark_cache_size>\n  \
             <users_config>{d}/users.xml</users_config>\n  <default_profile>default</default_profile>\n  \
             <default_database>default</default_database>\n</yandex>\n"
        );
        std::fs::write(dir.join("config.xml"), config)?;
        let (user, password) = PASSWORD_USER;
        let users = format!(
            "<yandex>\n  <profiles><default/></profiles>\n  <users><default>\n    \
             <password></password>\n    <networks><ip>127.0.0.1</ip></networks>\n    \
             <profile>default</profile>\n    <quota>default</quota>\n  </default>\n  \
             <{user}><password>{password}</password><networks><ip>127.0.0.1</ip></networks>\
             <profile>default</profile><quota>default</quota></{user}></users>\n  \
             <quotas><default/></quotas>\n</yandex>\n"
        );
        std::fs::write(dir.join("users.xml"), users)?;
        let mut ch = Self {
            dir,
            http_port,
            child: None,
        };
        ch.start()?;
        Ok(Some(ch))
    }

    /// HTTP interface URL, e.g. `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Start the server (again) on the same data directory and wait until it answers.
    pub fn start(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            return Ok(());
        }
        let child = Command::new(SERVER_BIN)
            .arg(format!(
                "--config-file={}",
                self.dir.join("config.xml").display()
            ))
            .current_dir(&self.dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            // The server's own log (errors of refused queries included) stays out of the
            // test output; it is shown when the server fails to start.
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join("server.log"))?,
            )
            .spawn()?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            let exited = match self.child.as_mut() {
                Some(c) => c.try_wait()?,
                None => None,
            };
            if let Some(status) = exited {
                self.child = None;
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                anyhow::bail!("clickhouse-server exited early: {status}\n{log}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        self.stop();
        anyhow::bail!("clickhouse-server did not answer within 60s")
    }

    /// Kill the server (simulated outage); the data directory stays.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Runs one SQL statement over the HTTP interface and returns the response body
    /// (tab-separated for selects). An HTTP error is an `Err` carrying ClickHouse's message.
    pub fn query(&self, sql: &str) -> anyhow::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.http_port))?;
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        let head = format!(
            "POST / HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Length: {}\r\n\r\n",
            sql.len()
        );
        s.write_all(head.as_bytes())?;
        s.write_all(sql.as_bytes())?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        let (status, body) = out
            .split_once("\r\n\r\n")
            .ok_or_else(|| anyhow::anyhow!("malformed HTTP answer from clickhouse: {out}"))?;
        if !status.contains(" 200 ") {
            anyhow::bail!("clickhouse refused `{sql}`: {body}");
        }
        Ok(body.to_string())
    }

    /// Process id of the running server (for CPU accounting in benchmarks).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether `GET /ping` answers `Ok.`.
    pub fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.http_port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"GET /ping HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .is_err()
        {
            return false;
        }
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out.starts_with("HTTP/1.") && out.contains(" 200 ") && out.ends_with("Ok.\n")
    }
}

impl Drop for ClickHouse {
    fn drop(&mut self) {
        self.stop();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
