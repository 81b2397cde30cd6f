//! The embedded TURN server under test and the clients that drive it: coturn's
//! `turnutils_uclient` (Debian coturn) and raw STUN over TCP.

use super::{skip, Options, Skylark};
use skylark_auth::{TurnCredential, TurnSecret};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Seconds since the epoch (TURN REST credentials expire on this clock).
pub fn now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Skylark with the embedded TURN server on a free loopback port, credentials signed
/// with `secret`, `env` on top.
pub async fn skylark_with_turn(secret: &str, env: &[(&str, &str)]) -> Skylark {
    let mut opts = Options::default();
    opts.env
        .insert("SKYLARK_TURN_ADDR".into(), "127.0.0.1:0".into());
    opts.env.insert("SKYLARK_TURN_SECRET".into(), secret.into());
    opts.env
        .insert("RUST_LOG".into(), "info,skylark_turn=debug".into());
    for (k, v) in env {
        opts.env.insert((*k).into(), (*v).into());
    }
    Skylark::start_with(opts).await
}

/// Whether coturn's client is installed; `skip` fails in CI when it is not.
pub fn has_uclient() -> bool {
    if Command::new("turnutils_uclient")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_err()
    {
        skip("no turnutils_uclient (Debian coturn): scripts/test installs it");
        return false;
    }
    true
}

/// A credential for `who`, valid 10 minutes from now, minted with `secret` (TURN REST).
pub fn fresh_credential(secret: &str, who: &str) -> TurnCredential {
    TurnSecret::new(secret.as_bytes()).mint(who, now_s(), Duration::from_secs(600))
}

/// `turnutils_uclient FLAGS -u USER -w PASS -p PORT 127.0.0.1`: whether it succeeded,
/// and what it printed.
pub fn uclient_with(user: &str, pass: &str, port: u16, flags: &[&str]) -> (bool, String) {
    let out = Command::new("turnutils_uclient")
        .args(flags)
        .args(["-u", user, "-w", pass, "-p", &port.to_string(), "127.0.0.1"])
        .stdin(Stdio::null())
        .output()
        .expect("turnutils_uclient (Debian coturn)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

/// [`uclient_with`] as `who` with a [`fresh_credential`] of `secret`.
pub fn uclient_as(secret: &str, who: &str, port: u16, flags: &[&str]) -> (bool, String) {
    let c = fresh_credential(secret, who);
    uclient_with(&c.username, &c.credential, port, flags)
}

/// One STUN message off a TURN-over-TCP stream.
pub async fn read_stun(conn: &mut TcpStream) -> Vec<u8> {
    let mut msg = vec![0u8; 20];
    tokio::time::timeout(Duration::from_secs(5), conn.read_exact(&mut msg))
        .await
        .expect("an answer within 5 s")
        .unwrap();
    let len = usize::from(u16::from_be_bytes([msg[2], msg[3]]));
    msg.resize(20 + len, 0);
    conn.read_exact(&mut msg[20..]).await.unwrap();
    msg
}
