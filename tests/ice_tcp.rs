//! WebRTC where UDP is blocked: a Chromium viewer in a network namespace whose outgoing
//! UDP is dropped (nftables) plays a room over ICE-TCP (RFC 6544) from the SFU's TCP
//! port, and the same viewer without the block still picks UDP. The room is published
//! over WHIP by Chromium drawing the wall clock on its frames (pages/latency-source.html);
//! the viewer is the real watch page, reading that clock back off each frame it shows:
//! glass-to-glass latency, printed for each path.

mod common;

use common::browser::{glass_to_glass, plays_over, TimecodeSource, WatchPage};
use common::*;
use serde_json::Value;
use skylark_loadgen::stats::{percentiles, Percentiles};
use std::process::{Command, Stdio};
use std::time::Duration;

/// The nftables table the test adds inside the viewer's namespace.
const TABLE: &str = "skylark_no_udp";

/// Runs `nft ARGS` inside namespace `ns`; the error says what failed.
fn nft(ns: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("nft {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "nft {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Drops every UDP datagram leaving namespace `ns` (STUN, DTLS, media: all of it).
fn block_udp(ns: &str) -> Result<(), String> {
    nft(ns, &["add", "table", "inet", TABLE])?;
    nft(
        ns,
        &[
            "add",
            "chain",
            "inet",
            TABLE,
            "out",
            "{ type filter hook output priority 0 ; policy accept ; }",
        ],
    )?;
    nft(
        ns,
        &[
            "add", "rule", "inet", TABLE, "out", "meta", "l4proto", "udp", "counter", "drop",
        ],
    )
}

/// How many UDP datagrams the block dropped (so the test knows the browser tried).
fn dropped_udp(ns: &str) -> u64 {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "list", "table", "inet", TABLE])
        .output()
        .expect("nft");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .skip_while(|w| *w != "packets")
        .nth(1)
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Glass-to-glass samples taken from each viewer once it plays (~5 s of frames).
const GLASS_SAMPLES: usize = 150;

/// What one watch page did: how long from its WHEP POST to its first decoded frame, the
/// ICE candidate pair it played over and its glass-to-glass latency once playing; the
/// page plays on until this drops.
struct Played {
    join_ms: i64,
    pair: Value,
    glass: Percentiles,
    _page: WatchPage,
}

/// Opens the watch page of `room` inside `ns`, waits until it decodes 30 frames over
/// WebRTC, reporting the selected candidate pair then, and reads the time code off the
/// next [`GLASS_SAMPLES`] frames it shows.
async fn watch(sk: &Skylark, ns: &str, room: &str, log: &std::path::Path) -> Option<Played> {
    let url = format!("{}/watch/{room}", sk.base);
    let mut page = WatchPage::open_with(Some(ns), &url, &sk.base, log, &["--timecode"])?;
    let whep = page
        .until(Duration::from_secs(30), |l| l["type"] == "whep")
        .await
        .unwrap_or_else(|| panic!("the page POSTs its WHEP offer: {}", read(log)));
    assert_eq!(whep["status"], 201, "{whep}");
    let sent = whep["sent"].as_i64().expect("WHEP send time");
    let mut first_frame = None;
    let playing = page
        .until(Duration::from_secs(30), |l| {
            if l["type"] == "event" && l["name"] == "firstFrame" {
                first_frame = l["t"].as_i64();
            }
            plays_over(l, "webrtc")
        })
        .await
        .unwrap_or_else(|| {
            panic!(
                "Chromium plays the room over WebRTC: {}\n{}",
                read(log),
                sk.logs()
            )
        });
    let first = first_frame.expect("a firstFrame event before 30 frames decoded");
    let samples = glass_to_glass(&mut page, GLASS_SAMPLES, Duration::from_secs(30)).await;
    let glass = percentiles(&samples).unwrap_or_else(|| {
        panic!(
            "the page reads the source's time code off the frames it shows: {}",
            read(log)
        )
    });
    Some(Played {
        join_ms: first - sent,
        pair: playing["pair"].clone(),
        glass,
        _page: page,
    })
}

/// `glass-to-glass p50 … ms p95 … ms over N frames`.
fn glass_line(p: &Percentiles) -> String {
    format!(
        "glass-to-glass p50 {:.1} ms p95 {:.1} ms max {:.1} ms over {} frames",
        p.p50, p.p95, p.max, p.count
    )
}

fn read(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_viewer_without_udp_plays_over_ice_tcp_and_with_udp_stays_on_udp() {
    let Some(ns) = NetNs::create() else { return };
    // Every listener on our end of the link: the viewer reaches HTTP, UDP and TCP there.
    let sk = Skylark::start_at(&ns.host_ip, Options::default()).await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let dir = tempfile::tempdir().unwrap();
    let whip = format!("{}/whip/{room}", sk.base);
    let source_log = dir.path().join("timecode-source.log");
    let Some(_source) = TimecodeSource::live(&whip, &key, &source_log).await else {
        return;
    };

    if let Err(why) = block_udp(&ns.name) {
        skip(&format!(
            "cannot drop UDP in a namespace ({why}): scripts/test installs nftables"
        ));
        return;
    }
    let log = dir.path().join("chromium-tcp.log");
    let Some(tcp) = watch(&sk, &ns.name, &room, &log).await else {
        return;
    };
    assert_eq!(
        tcp.pair["protocol"], "tcp",
        "UDP dropped: the selected pair is ICE-TCP: {}",
        tcp.pair
    );
    let tcp_port = logged_port(&sk, "ICE-TCP listening");
    assert_eq!(tcp.pair["remotePort"], tcp_port, "{}", tcp.pair);
    assert!(
        dropped_udp(&ns.name) > 0,
        "Chromium tried UDP first and the block dropped it"
    );
    let metrics = sk.metrics().await;
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("skylark_sfu_tcp_connections ") && !l.ends_with(" 0")),
        "the SFU counts the open ICE-TCP connection:\n{metrics}"
    );
    println!(
        "ICE-TCP viewer: WHEP POST to first frame {} ms, {}, pair {}",
        tcp.join_ms,
        glass_line(&tcp.glass),
        tcp.pair
    );

    drop(tcp);

    // The same viewer on a network that passes UDP: UDP is preferred.
    nft(&ns.name, &["delete", "table", "inet", TABLE]).unwrap();
    let log = dir.path().join("chromium-udp.log");
    let Some(udp) = watch(&sk, &ns.name, &room, &log).await else {
        return;
    };
    assert_eq!(
        udp.pair["protocol"], "udp",
        "UDP open: the selected pair is UDP: {}",
        udp.pair
    );
    println!(
        "UDP viewer: WHEP POST to first frame {} ms, {}, pair {}",
        udp.join_ms,
        glass_line(&udp.glass),
        udp.pair
    );
}

/// Whether the server closes `conn` within `within` (a read returns end of stream or
/// an error rather than timing out).
async fn closed_within(conn: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(within, conn.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// The ICE-TCP port takes only what a WebRTC peer sends: a first frame that is not a
/// STUN check of ours, a check no session accepts, a frame past the size limit, or
/// silence past the first-frame timeout closes the connection, and the SFU says why in
/// its metrics.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ice_tcp_port_closes_strangers_oversize_frames_and_silence() {
    use tokio::io::AsyncWriteExt;
    let sk = Skylark::start().await;
    let port = logged_port(&sk, "ICE-TCP listening");
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));

    // RTP-looking junk first: not a check, closed at once.
    let mut junk = connect().await.unwrap();
    junk.write_all(&[0, 4, 0x80, 0x60, 0, 1]).await.unwrap();
    assert!(closed_within(&mut junk, Duration::from_secs(5)).await);
    // A STUN Binding request naming a ufrag no session has: closed too.
    let mut check = vec![0, 1, 0, 12, 0x21, 0x12, 0xa4, 0x42];
    check.extend_from_slice(&[7; 12]);
    check.extend_from_slice(&[0, 6, 0, 8]);
    check.extend_from_slice(b"zzzz:abc");
    let mut framed = (check.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&check);
    let mut stranger = connect().await.unwrap();
    stranger.write_all(&framed).await.unwrap();
    assert!(closed_within(&mut stranger, Duration::from_secs(5)).await);
    // A check naming worker 0 by its ufrag's first character, but no session: the
    // worker lets it go once it has been open 5 s without a session's accepted check.
    framed[2 + 20 + 4] = b'0';
    let mut plausible = connect().await.unwrap();
    plausible.write_all(&framed).await.unwrap();
    assert!(closed_within(&mut plausible, Duration::from_secs(15)).await);
    // A 65,535-byte frame announced: closed before it is read.
    let mut big = connect().await.unwrap();
    big.write_all(&[0xff, 0xff, 1, 2, 3]).await.unwrap();
    assert!(closed_within(&mut big, Duration::from_secs(5)).await);
    // Nothing at all: closed after the first-frame timeout (5 s).
    let mut silent = connect().await.unwrap();
    let opened = std::time::Instant::now();
    assert!(closed_within(&mut silent, Duration::from_secs(20)).await);
    assert!(
        opened.elapsed() >= Duration::from_secs(4),
        "{:?}",
        opened.elapsed()
    );

    let mut ends = String::new();
    for _ in 0..30 {
        ends = sk.metrics().await;
        if ends.contains("skylark_sfu_tcp_connections_total{end=\"no_check\"} 3")
            && ends.contains("skylark_sfu_tcp_connections_total{end=\"released\"} 1")
            && ends.contains("skylark_sfu_tcp_connections_total{end=\"oversize\"} 1")
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("the SFU counts why each connection ended:\n{ends}");
}
