//! One store test suite, run against SQLite and against the real PostgreSQL.

mod common;

use common::TestDb;
use skylark_api::store::{now_ms, Mode, Room, RoomPatch, Store, StoreError, User, Visibility};

fn user(id: &str, email: &str) -> User {
    User {
        id: id.into(),
        email: email.into(),
        display_name: "D".into(),
        created_at_ms: now_ms(),
        password_hash: "$argon2id$x".into(),
    }
}

fn room(id: &str, owner: &str, vis: Visibility, at: i64) -> Room {
    Room {
        id: id.into(),
        owner_id: owner.into(),
        title: format!("title {id}"),
        slug: format!("slug-{id}"),
        visibility: vis,
        mode: Mode::Sfu,
        created_at_ms: at,
        updated_at_ms: at,
        viewer_generation: 0,
        record: false,
    }
}

async fn suite(s: &Store) {
    // Users: unique email.
    s.create_user(&user("u1", "a@x.io")).await.unwrap();
    s.create_user(&user("u2", "b@x.io")).await.unwrap();
    assert!(matches!(
        s.create_user(&user("u3", "a@x.io")).await,
        Err(StoreError::Conflict)
    ));
    assert_eq!(s.user_by_email("a@x.io").await.unwrap().unwrap().id, "u1");
    assert_eq!(s.user_by_id("u2").await.unwrap().unwrap().email, "b@x.io");
    assert!(s.user_by_id("nope").await.unwrap().is_none());

    // Rooms with their first key.
    s.create_room(&room("r1", "u1", Visibility::Public, 1), "k1", "h1")
        .await
        .unwrap();
    s.create_room(&room("r2", "u1", Visibility::Private, 2), "k2", "h2")
        .await
        .unwrap();
    s.create_room(&room("r3", "u2", Visibility::Public, 3), "k3", "h3")
        .await
        .unwrap();
    // A key hash is unique across rooms; the failed insert leaves no room behind.
    assert!(matches!(
        s.create_room(&room("r4", "u2", Visibility::Public, 4), "k4", "h1")
            .await,
        Err(StoreError::Conflict)
    ));
    assert!(
        s.room("r4").await.unwrap().is_none(),
        "transaction rolled back"
    );

    let r1 = s.room("r1").await.unwrap().unwrap();
    assert_eq!(r1, room("r1", "u1", Visibility::Public, 1));
    assert_eq!(
        s.room("slug-r2").await.unwrap().unwrap().id,
        "r2",
        "by slug"
    );
    let mine: Vec<_> = s
        .rooms_of("u1")
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(mine, vec!["r2", "r1"], "newest first");
    let public: Vec<_> = s
        .public_rooms(10)
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(public, vec!["r3", "r1"]);

    // Patch.
    let patched = s
        .update_room(
            "r1",
            &RoomPatch {
                title: Some("new".into()),
                visibility: Some(Visibility::Unlisted),
                mode: Some(Mode::P2p),
                record: None,
            },
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (patched.title.as_str(), patched.visibility, patched.mode),
        ("new", Visibility::Unlisted, Mode::P2p)
    );
    assert_eq!(s.room("r1").await.unwrap().unwrap(), patched);
    assert!(s
        .update_room("nope", &RoomPatch::default())
        .await
        .unwrap()
        .is_none());

    // Keys: rotation revokes the old one.
    assert_eq!(s.active_key("h1").await.unwrap().unwrap().room_id, "r1");
    s.rotate_stream_key(&patched, "k1b", "h1b").await.unwrap();
    assert!(s.active_key("h1").await.unwrap().is_none());
    let k = s.active_key("h1b").await.unwrap().unwrap();
    assert_eq!((k.id.as_str(), k.room_id.as_str()), ("k1b", "r1"));

    // Delete removes the room and its keys.
    assert_eq!(s.counts().await.unwrap(), (2, 3, 4));
    assert!(s.delete_room("r1").await.unwrap());
    assert!(!s.delete_room("r1").await.unwrap());
    assert!(s.active_key("h1b").await.unwrap().is_none());
    assert_eq!(s.counts().await.unwrap(), (2, 2, 2));

    recordings(s).await;

    // Migrations are idempotent.
    s.migrate().await.unwrap();
    s.ping().await.unwrap();
}

/// A recording listed in progress, announced again (a packager took the room over),
/// finished, finished again (a retry) unchanged; a start
/// that arrives after the finish changes nothing.
async fn recordings(s: &Store) {
    use skylark_api::recordings::{Recording, RecordingStatus, StartedRecording};
    s.create_room(&room("rr", "u1", Visibility::Public, 9), "kr", "hr")
        .await
        .unwrap();
    let started = StartedRecording {
        id: "rec_a".into(),
        room_id: "rr".into(),
        started_at_ms: now_ms() - 5_000,
        path: "rr/rec_a".into(),
        bytes: 100,
    };
    assert!(s.start_recording(&started).await.unwrap());
    assert!(s.start_recording(&started).await.unwrap(), "idempotent");
    let open = s.recording("rec_a").await.unwrap().unwrap();
    assert_eq!(open.status, RecordingStatus::Recording);
    assert_eq!(open.ended_at_ms, None);
    assert!(open.duration_ms >= 5_000, "so far: {}", open.duration_ms);
    assert_eq!(open.owner_id, "u1");
    assert_eq!(open.bytes, 100);
    // Progress: the size so far grows; a late, smaller report changes nothing.
    for (reported, stored) in [(500, 500), (300, 500)] {
        let progress = StartedRecording {
            bytes: reported,
            ..started.clone()
        };
        assert!(s.start_recording(&progress).await.unwrap());
        let open = s.recording("rec_a").await.unwrap().unwrap();
        assert_eq!(open.bytes, stored, "after a report of {reported}");
    }
    let finished = Recording {
        id: "rec_a".into(),
        room_id: "rr".into(),
        owner_id: String::new(),
        status: RecordingStatus::Ready,
        started_at_ms: started.started_at_ms,
        ended_at_ms: Some(started.started_at_ms + 20_000),
        duration_ms: 19_500,
        bytes: 1234,
        path: "rr/rec_a".into(),
    };
    assert!(s.finish_recording(&finished).await.unwrap());
    assert!(s.finish_recording(&finished).await.unwrap(), "a retry");
    let late = StartedRecording {
        bytes: 99_999,
        ..started.clone()
    };
    assert!(s.start_recording(&late).await.unwrap(), "a late start");
    let ready = s.recording("rec_a").await.unwrap().unwrap();
    assert_eq!(
        ready,
        Recording {
            owner_id: "u1".into(),
            ..finished.clone()
        }
    );
    assert_eq!(s.recordings_of("rr", 10).await.unwrap(), vec![ready]);
    // Finished without a start (the start never got through): listed ready.
    let direct = Recording {
        id: "rec_b".into(),
        path: "rr/rec_b".into(),
        ..finished.clone()
    };
    assert!(s.finish_recording(&direct).await.unwrap());
    assert_eq!(
        s.recording("rec_b").await.unwrap().unwrap().status,
        RecordingStatus::Ready
    );
    // A room that is gone: nothing stored.
    let orphan = StartedRecording {
        room_id: "gone".into(),
        path: "gone/rec_c".into(),
        id: "rec_c".into(),
        ..started
    };
    assert!(!s.start_recording(&orphan).await.unwrap());
    assert!(s.recording("rec_c").await.unwrap().is_none());
}

#[tokio::test]
async fn store_suite_sqlite() {
    let db = TestDb::sqlite().await;
    suite(&db.store).await;
    db.cleanup().await;
}

#[tokio::test]
async fn store_suite_postgres() {
    let Some(db) = TestDb::postgres().await else {
        return;
    };
    suite(&db.store).await;
    db.cleanup().await;
}

#[tokio::test]
async fn unreachable_database_is_unavailable() {
    let e = Store::connect("postgres://nobody@127.0.0.1:1/none")
        .await
        .unwrap_err();
    assert!(matches!(e, StoreError::Unavailable(_)), "{e:?}");
    assert!(e.to_string().contains("DATABASE_URL"));
}
