//! coturn (Debian's `turnserver` 4.6), the reference TURN server, on loopback with a
//! TURN REST shared secret (`use-auth-secret`): checks that credentials Skylark mints
//! allocate and relay.

use super::{free_port, skip};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared secret the test coturn checks credentials with.
pub const SECRET: &str = "a-secret-shared-with-coturn";

/// `turnserver` on loopback; killed on drop.
pub struct Coturn {
    child: Child,
    pub port: u16,
}

impl Coturn {
    /// `None` (the test returns) outside CI when coturn is not installed; `skip` fails
    /// in CI.
    pub fn start(log: &std::path::Path) -> Option<Coturn> {
        let port = free_port();
        let child = Command::new("turnserver")
            .args(["-n", "--no-cli", "--no-tls", "--no-dtls", "--simple-log"])
            .args(["--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1"])
            .arg(format!("--listening-port={port}"))
            .args([
                "--use-auth-secret",
                "--realm=skylark",
                "--allow-loopback-peers",
            ])
            .arg(format!("--static-auth-secret={SECRET}"))
            .args(["--log-file", "stdout"])
            .stdout(Stdio::from(std::fs::File::create(log).unwrap()))
            .stderr(Stdio::null())
            .spawn();
        let Ok(child) = child else {
            skip("no turnserver (Debian coturn): scripts/test installs it");
            return None;
        };
        let c = Coturn { child, port };
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "coturn did not listen on {port}: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// `turn:127.0.0.1:port?transport=udp` and `…tcp`.
    pub fn urls(&self) -> [String; 2] {
        ["udp", "tcp"].map(|t| format!("turn:127.0.0.1:{}?transport={t}", self.port))
    }

    /// Whether `turnutils_uclient` allocates with `user`/`pass` and relays a few
    /// messages between two allocations. Blocking.
    pub fn relays(&self, user: &str, pass: &str) -> bool {
        super::turn::uclient_with(user, pass, self.port, &["-y", "-n", "3", "-m", "1"]).0
    }
}

impl Drop for Coturn {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
