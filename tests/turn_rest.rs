//! TURN credentials minted by the TURN REST scheme (`skylark_auth::TurnSecret`) are the
//! ones coturn, the reference TURN server (Debian's `coturn` 4.6), takes with
//! `use-auth-secret` + `static-auth-secret`: an operator can run coturn with Skylark's
//! secret. A fresh credential allocates and relays (coturn's `turnutils_uclient`
//! relays between two allocations); a wrong password and an expired credential are
//! refused. And the credentials a running `skylark` hands a WHEP viewer in its
//! `Link: rel="ice-server"` headers (RFC 9725 §4.6) allocate on that coturn; a WHIP
//! publisher's answer carries them too.

mod common;

use common::coturn::{Coturn, SECRET};
use common::turn::{ice_servers, offer};
use common::*;
use skylark_auth::TurnSecret;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

#[test]
fn coturn_takes_skylarks_turn_rest_credentials_and_refuses_bad_ones() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("coturn.log");
    let Some(coturn) = Coturn::start(&log) else {
        return;
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let secret = TurnSecret::new(SECRET.as_bytes());
    let fresh = secret.mint("session-1", now, Duration::from_secs(600));
    assert!(
        coturn.relays(&fresh.username, &fresh.credential),
        "coturn allocates with a fresh credential: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    assert!(
        !coturn.relays(&fresh.username, "d3JvbmcgcGFzc3dvcmQ="),
        "a wrong password is refused"
    );
    let expired = secret.mint("session-2", now - 700, Duration::from_secs(600));
    assert!(
        !coturn.relays(&expired.username, &expired.credential),
        "an expired credential is refused"
    );
    let other = TurnSecret::new(b"another deployment's secret").mint(
        "session-3",
        now,
        Duration::from_secs(600),
    );
    assert!(
        !coturn.relays(&other.username, &other.credential),
        "a credential of another secret is refused"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whep_answers_carry_turn_credentials_that_coturn_takes() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("coturn.log");
    let Some(coturn) = Coturn::start(&log) else {
        return;
    };
    let [udp, tcp] = coturn.urls();
    let mut opts = Options::default();
    opts.env
        .insert("SKYLARK_TURN_URLS".into(), format!("{udp},{tcp}"));
    opts.env.insert("SKYLARK_TURN_SECRET".into(), SECRET.into());
    let sk = Skylark::start_with(opts).await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let (_engine, _publisher) = publish(&sk.base, &room, &key).await;

    let res = reqwest::Client::new()
        .post(format!("{}/whep/{room}", sk.base))
        .header("content-type", "application/sdp")
        .body(offer(str0m::media::Direction::RecvOnly))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let servers = ice_servers(res.headers());
    let urls: Vec<&str> = servers.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(urls, [udp.as_str(), tcp.as_str()], "{:?}", res.headers());
    let (_, user, credential) = &servers[0];
    assert!(
        user.ends_with(
            res.headers()["location"]
                .to_str()
                .unwrap()
                .rsplit('/')
                .next()
                .unwrap()
        ),
        "the credential names the session: {user}"
    );
    let got = tokio::task::block_in_place(|| coturn.relays(user, credential));
    assert!(
        got,
        "coturn allocates with the credential of the WHEP answer: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// A WHIP publisher's answer carries the same `Link: rel="ice-server"` headers
/// (RFC 9725 §4.6), with a credential naming its session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn whip_answers_carry_turn_credentials() {
    let urls = "turn:turn.example.com:3478?transport=udp,turns:turn.example.com:5349?transport=tcp";
    let mut opts = Options::default();
    opts.env.insert("SKYLARK_TURN_URLS".into(), urls.into());
    opts.env.insert("SKYLARK_TURN_SECRET".into(), SECRET.into());
    let sk = Skylark::start_with(opts).await;
    let (_, room, key) = creator_with_room(&sk.base, "public").await;
    let res = reqwest::Client::new()
        .post(format!("{}/whip/{room}", sk.base))
        .bearer_auth(&key)
        .header("content-type", "application/sdp")
        .body(offer(str0m::media::Direction::SendOnly))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201, "{:?}", res.headers());
    let servers = ice_servers(res.headers());
    let got: Vec<&str> = servers.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        got,
        urls.split(',').collect::<Vec<_>>(),
        "{:?}",
        res.headers()
    );
    let session = res.headers()["location"].to_str().unwrap();
    let session = session.rsplit('/').next().unwrap();
    for (_, user, credential) in &servers {
        assert!(
            user.ends_with(&format!(":sfu:{session}")),
            "the credential is scoped to the session with the SFU: {user}"
        );
        assert_eq!(
            credential,
            &TurnSecret::new(SECRET.as_bytes()).password(user),
            "the TURN REST password of {user}"
        );
    }
}
