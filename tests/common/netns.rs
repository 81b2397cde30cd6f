//! Several hosts on one machine: a bridge in the test's own namespace (where the test,
//! the API, signaling and Redis live) and one network namespace per node, each joined to
//! the bridge by its own veth pair, with its own address. Cutting a node's link
//! (`ip link set … down` on the bridge side) takes it off the network without killing it,
//! the way a failed switch port or a partition does.

use super::{peers, ports, Options, Skylark};
use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::time::Duration;

/// A bridge and its hosts; every namespace, link and the bridge go on drop.
pub struct Lan {
    bridge: String,
    /// The bridge's address: this namespace as seen from the hosts.
    pub gateway: String,
    pub hosts: Vec<Host>,
}

/// One namespace on the bridge.
pub struct Host {
    pub ns: String,
    /// Its address on the bridge's subnet.
    pub ip: String,
    /// The bridge-side end of its veth pair (what [`Lan::cut`] takes down).
    link: String,
}

/// Runs `ip ARGS`; the error says which step failed and why.
fn ip(args: &str) -> Result<(), String> {
    let out = Command::new("ip").args(args.split(' ')).output();
    match out {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!(
            "ip {args}: {}",
            String::from_utf8_lossy(&o.stderr).trim()
        )),
        Err(e) => Err(format!("ip {args}: {e}")),
    }
}

impl Lan {
    /// A bridge with `hosts` namespaces. `None` outside CI when namespaces can't be made
    /// (not root, no iproute2); a failure in CI.
    pub fn create(hosts: usize) -> Option<Lan> {
        // Interface names and subnets are machine-wide: the number is claimed, not derived.
        let id = ports::claim_slot("lan", 20..220);
        let bridge = format!("skb{id}");
        // A crashed run (SIGKILL skips Drop) may have left links under this number.
        let _ = Command::new("ip")
            .args(["link", "del", &bridge])
            .stderr(Stdio::null())
            .status();
        for i in 0..hosts {
            let _ = Command::new("ip")
                .args(["link", "del", &format!("skb{id}h{i}")])
                .stderr(Stdio::null())
                .status();
        }
        let mut lan = Lan {
            bridge: bridge.clone(),
            gateway: format!("10.214.{id}.1"),
            hosts: Vec::new(),
        };
        let made = (|| {
            ip(&format!("link add {bridge} type bridge"))?;
            ip(&format!("addr add {}/24 dev {bridge}", lan.gateway))?;
            ip(&format!("link set {bridge} up"))?;
            for i in 0..hosts {
                let host = Host {
                    ns: format!("skylark-test-{}-{id}-{i}", std::process::id()),
                    ip: format!("10.214.{id}.{}", 10 + i),
                    link: format!("skb{id}h{i}"),
                };
                let peer = format!("skb{id}p{i}");
                ip(&format!("netns add {}", host.ns))?;
                let (ns, link, addr) = (host.ns.clone(), host.link.clone(), host.ip.clone());
                lan.hosts.push(host);
                ip(&format!("link add {link} type veth peer name {peer}"))?;
                ip(&format!("link set {peer} netns {ns}"))?;
                ip(&format!("link set {link} master {bridge}"))?;
                ip(&format!("link set {link} up"))?;
                ip(&format!("-n {ns} addr add {addr}/24 dev {peer}"))?;
                ip(&format!("-n {ns} link set {peer} up"))?;
                ip(&format!("-n {ns} link set lo up"))?;
            }
            Ok::<_, String>(())
        })();
        match made {
            Ok(()) => Some(lan),
            Err(why) => {
                peers::skip(&format!(
                    "cannot build the test network ({why}); run as root with iproute2"
                ));
                None
            }
        }
    }

    /// Takes host `i` off the network: its link goes down on the bridge side.
    pub fn cut(&self, i: usize) {
        ip(&format!("link set {} down", self.hosts[i].link)).unwrap();
    }

    /// Puts host `i` back on the network.
    pub fn restore(&self, i: usize) {
        ip(&format!("link set {} up", self.hosts[i].link)).unwrap();
    }

    /// The body of a GET of `url` from inside host `i` (its own view, reachable even
    /// while its link is cut); `None` if the request fails.
    pub fn get_from(&self, i: usize, url: &str) -> Option<String> {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.hosts[i].ns,
                "curl",
                "-sf",
                "--max-time",
                "2",
                url,
            ])
            .output()
            .ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// A `skylark` target on host `i`: HTTP, gRPC, WebRTC media and the internal
    /// listener all bind its address, and it announces that address to peers.
    pub async fn start(&self, i: usize, opts: Options) -> Skylark {
        let host = &self.hosts[i];
        let addr = &host.ip;
        let dir = opts.dir.expect("a data dir for a process in a namespace");
        let http = ports::free_port();
        let base = format!("http://{addr}:{http}");
        let mut env: HashMap<String, String> = [
            ("SKYLARK_HTTP_ADDR", format!("{addr}:{http}")),
            ("SKYLARK_PUBLIC_URL", base.clone()),
            ("SKYLARK_DATA_DIR", dir.join("data").display().to_string()),
            ("SKYLARK_RTC_UDP_ADDR", format!("{addr}:0")),
            ("SKYLARK_RTC_TCP_ADDR", format!("{addr}:0")),
            ("SKYLARK_RTC_PUBLIC_IP", addr.clone()),
            ("SKYLARK_GRPC_ADDR", format!("{addr}:0")),
            ("SKYLARK_INTERNAL_ADDR", format!("{addr}:0")),
            ("SKYLARK_SFU_WORKERS", "2".into()),
            ("RUST_LOG", "info,skylark_sfu=debug".into()),
            // As `Skylark::start_at` gives every single-service process.
            ("SKYLARK_INTERNAL_SECRET", super::INTERNAL_SECRET.into()),
            // Tests sign up and get a token at once (no mail).
            ("SKYLARK_SIGNUP", "open".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        env.extend(opts.env);
        std::fs::create_dir_all(&dir).unwrap();
        let log_name = format!("skylark-{}-{http}.log", opts.target.unwrap_or("all"));
        // `ip netns exec` execs the program: the child is skylark itself, so kill() hits it.
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &host.ns, env!("CARGO_BIN_EXE_skylark")]);
        if let Some(t) = opts.target {
            cmd.arg(t);
        }
        let s = Skylark::spawn(cmd, &env, base, (dir, None), &log_name).await;
        s.with_internal_on(addr)
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        // The links go first: a namespace lives on after `netns del` while its TCP
        // sockets still retransmit into a cut link, and its veth pair with it.
        for h in &self.hosts {
            let _ = Command::new("ip")
                .args(["link", "del", &h.link])
                .stderr(Stdio::null())
                .status();
            let _ = Command::new("ip").args(["netns", "del", &h.ns]).status();
        }
        let _ = Command::new("ip")
            .args(["link", "del", &self.bridge])
            .status();
    }
}

/// A `redis-server` of the test's own on `addr` (the bridge, reachable from every host;
/// or loopback alone) and loopback, so a test can take it away; killed on drop.
pub struct OwnRedis {
    child: std::process::Child,
    pub url: String,
}

impl OwnRedis {
    pub fn start(addr: &str) -> OwnRedis {
        let port = ports::free_port();
        let bind: &[&str] = if addr == "127.0.0.1" {
            &[addr]
        } else {
            &[addr, "127.0.0.1"]
        };
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind"])
            .args(bind)
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (scripts/test installs it)");
        let url = format!("redis://{addr}:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect((addr, port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        OwnRedis { child, url }
    }

    /// Kills it now (SIGKILL) and reaps it.
    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()?;
        self.child.wait().map(drop)
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        let _ = self.kill();
    }
}
