//! Launcher for moto's server (`moto_server`, installed by `cargo xtask setup`): one
//! process on a free loopback port, killed when the handle is dropped.

use crate::harness::ports::free_loopback_addr;
use crate::harness::tools;
use anyhow::{Context, bail};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// How long moto gets to start listening (it imports every AWS service model).
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running `moto_server`.
#[derive(Debug)]
pub struct Moto {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
}

impl Moto {
    /// Starts moto, or returns `None` after a loud `SKIP` when it is not installed.
    pub fn launch(dir: &std::path::Path) -> anyhow::Result<Option<Self>> {
        let program = match tools::moto_server() {
            Ok(path) => path,
            Err(why) => {
                eprintln!("SKIP: moto_server is needed for the EKS tests: {why}");
                return Ok(None);
            }
        };
        let addr = free_loopback_addr()?;
        let log = dir.join("moto.log");
        let out =
            std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = Command::new(&program)
            .args(["-H", "127.0.0.1", "-p", &addr.port().to_string()])
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut moto = Self { child, addr, log };
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            if let Some(status) = moto.child.try_wait()? {
                bail!("moto_server exited ({status}); log:\n{}", moto.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "moto_server not listening on {addr} after {START_TIMEOUT:?}; log:\n{}",
                    moto.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Some(moto))
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Its address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// What it logged (one line per request).
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
