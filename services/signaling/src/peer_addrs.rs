//! The IP addresses in a p2p message's ICE candidates (`a=candidate` lines of an offer
//! or answer, a trickled `candidate`): where the other side's TURN allocation may send,
//! recorded in the bus for the TURN server (`skylark_bus::peers`).

use serde_json::Value;
use std::net::IpAddr;

/// The connection-address of each candidate line in `text` (SDP, or one candidate
/// attribute with or without `a=`); mDNS (`….local`) and other host names are skipped:
/// a TURN permission is for an IP. At most `max`, without repeats.
pub(crate) fn candidate_ips(text: &str, max: usize) -> Vec<IpAddr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let line = line.strip_prefix("a=").unwrap_or(line);
        if !line.starts_with("candidate:") {
            continue;
        }
        // foundation component transport priority connection-address port typ …
        let Some(ip) = line
            .split_ascii_whitespace()
            .nth(4)
            .and_then(|a| a.parse::<IpAddr>().ok())
        else {
            continue;
        };
        if !out.contains(&ip) {
            if out.len() == max {
                break;
            }
            out.push(ip);
        }
    }
    out
}

/// The candidate text of a relayed message: an offer's or answer's `sdp`, a trickled
/// `candidate` (an `RTCIceCandidateInit` or a bare string).
pub(crate) fn message_candidates(msg: &Value) -> &str {
    match (&msg["sdp"], &msg["candidate"]) {
        (Value::String(sdp), _) => sdp,
        (_, Value::String(c)) => c,
        (_, c) => c["candidate"].as_str().unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_candidates_ip_but_mdns_names() {
        let sdp = "v=0\r\n\
            a=candidate:1 1 udp 2122260223 192.168.1.20 54400 typ host generation 0\r\n\
            a=candidate:2 1 udp 2122194687 3f1c2a0e-8d4b-4c1e-9a51-1c8f0b2d9e11.local 54401 typ host\r\n\
            a=candidate:3 1 udp 1686052607 203.0.113.5 54400 typ srflx raddr 192.168.1.20 rport 54400\r\n\
            a=candidate:4 1 tcp 1518280447 2001:db8::5 9 typ host tcptype active\r\n\
            a=candidate:5 2 udp 1686052606 203.0.113.5 54402 typ srflx\r\n\
            a=candidate:6 1 udp\r\n\
            a=ice-ufrag:x\r\n";
        let ips = candidate_ips(sdp, 16);
        let want: Vec<IpAddr> = ["192.168.1.20", "203.0.113.5", "2001:db8::5"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(ips, want);
        assert_eq!(candidate_ips(sdp, 1), want[..1]);
        let trickled =
            "candidate:7 1 udp 41885439 198.51.100.9 60000 typ relay raddr 0.0.0.0 rport 0";
        assert_eq!(
            candidate_ips(trickled, 16),
            ["198.51.100.9".parse::<IpAddr>().unwrap()]
        );
        assert!(candidate_ips("", 16).is_empty());
    }

    #[test]
    fn the_candidate_text_of_offers_answers_and_trickles() {
        let init = serde_json::json!({"type": "candidate", "candidate": {"candidate": "candidate:1 1 udp 1 198.51.100.9 1 typ host", "sdpMid": "0"}});
        assert!(message_candidates(&init).contains("198.51.100.9"));
        let bare = serde_json::json!({"type": "candidate", "candidate": "candidate:x"});
        assert_eq!(message_candidates(&bare), "candidate:x");
        let offer = serde_json::json!({"type": "offer", "sdp": "v=0"});
        assert_eq!(message_candidates(&offer), "v=0");
        assert_eq!(
            message_candidates(&serde_json::json!({"type": "candidate"})),
            ""
        );
    }
}
