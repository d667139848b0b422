//! Decoding frames: a message and its guild, unknown kinds, and why a bad frame fails.

use super::*;

#[test]
fn decodes_a_message_and_its_guild() {
    let d = decode_frame(
        r#"{"op":0,"t":"MESSAGE_CREATE","s":3,"d":{"id":"175928847299117063","channel_id":"1","guild_id":"2","author":{"id":"3","bot":true},"content":"hi","reactions":[{},{}]}}"#,
    )
    .unwrap();
    assert_eq!(
        (d.kind, d.seq, d.guild_id),
        (EventKind::MessageCreate, Some(3), Some(Id(2)))
    );
    let Event::MessageCreate(m) = d.event else {
        panic!("not a message")
    };
    assert!(m.author.bot);
    assert_eq!(m.reactions, 2);
    assert_eq!(m.id.timestamp_ms(), 1462015105796);
}

#[test]
fn unknown_events_keep_their_guild() {
    let d = decode_frame(r#"{"op":0,"t":"SOMETHING_NEW","s":9,"d":{"guild_id":"42"}}"#).unwrap();
    assert_eq!((d.kind, d.guild_id), (EventKind::Other, Some(Id(42))));
}

#[test]
fn malformed_frames_say_why() {
    assert!(matches!(decode_frame("{"), Err(DecodeError::Frame(_))));
    assert!(matches!(
        decode_frame(r#"{"op":11}"#),
        Err(DecodeError::NotDispatch(11))
    ));
    let err = decode_frame(r#"{"op":0,"t":"MESSAGE_CREATE","s":1,"d":{"id":"x"}}"#).unwrap_err();
    assert!(
        err.to_string().starts_with("bad MESSAGE_CREATE payload"),
        "{err}"
    );
}
