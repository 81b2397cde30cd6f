//! coturn (Debian's `turnserver` 4.6), the reference TURN server, on loopback with a
//! TURN REST shared secret (`use-auth-secret`), over UDP and TCP and, given a
//! certificate, TLS: checks that credentials Skylark mints allocate and relay.

use super::{free_port, skip};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The shared secret the test coturn checks credentials with.
pub const SECRET: &str = "a-secret-shared-with-coturn";

/// `turnserver` on loopback; killed on drop.
pub struct Coturn {
    child: Child,
    pub port: u16,
    /// The TURN-over-TLS port, when started with a certificate.
    pub tls_port: Option<u16>,
}

impl Coturn {
    /// UDP and TCP only. `None` (the test returns) outside CI when coturn is not
    /// installed; `skip` fails in CI.
    pub fn start(log: &std::path::Path) -> Option<Coturn> {
        Self::start_with(log, None)
    }

    /// Like [`Coturn::start`], TLS too (`turns:`) with the certificate and key (PEM
    /// files) of `tls`.
    pub fn start_with(log: &std::path::Path, tls: Option<(&str, &str)>) -> Option<Coturn> {
        let port = free_port();
        let mut cmd = Command::new("turnserver");
        let tls_port = match tls {
            Some((cert, key)) => {
                let tls_port = free_port();
                cmd.arg(format!("--cert={cert}"))
                    .arg(format!("--pkey={key}"))
                    .arg(format!("--tls-listening-port={tls_port}"));
                Some(tls_port)
            }
            None => {
                cmd.arg("--no-tls");
                None
            }
        };
        let child = cmd
            .args(["-n", "--no-cli", "--no-dtls", "--simple-log"])
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
        let c = Coturn {
            child,
            port,
            tls_port,
        };
        let listening = |p: u16| std::net::TcpStream::connect(("127.0.0.1", p)).is_ok();
        for _ in 0..100 {
            if listening(port) && tls_port.is_none_or(listening) {
                return Some(c);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "coturn did not listen on {port} (TLS {tls_port:?}): {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }

    /// `turn:127.0.0.1:port?transport=udp` and `…tcp`.
    pub fn urls(&self) -> [String; 2] {
        ["udp", "tcp"].map(|t| format!("turn:127.0.0.1:{}?transport={t}", self.port))
    }

    /// `turns:127.0.0.1:tls_port?transport=tcp`, when started with a certificate.
    pub fn turns_url(&self) -> Option<String> {
        self.tls_port
            .map(|p| format!("turns:127.0.0.1:{p}?transport=tcp"))
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
