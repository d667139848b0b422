//! The reference data from the TypeScript services (../shared/fixtures): the sharding function
//! and the message statistics must match it exactly.

use gateway_actors::shard::{md5_u32, owner_of_str, Strategy};
use gateway_actors::stats::message_stats;
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures").join(name);
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

#[test]
fn shard_vectors_match_the_typescript_function() {
    let rows = fixture("shard_vectors.json");
    let rows = rows.as_array().expect("an array");
    assert!(rows.len() > 50, "the fixture has its rows");
    for row in rows {
        let id = row["guild_id"].as_str().expect("guild_id is a string");
        assert_eq!(u64::from(md5_u32(id)), row["md5_u32"].as_u64().unwrap(), "md5_u32 of {id:?}");
        for (pods, expected) in row["shard"].as_object().expect("shard map") {
            let pods: u32 = pods.parse().unwrap();
            let got = owner_of_str(Strategy::Md5, id, pods).unwrap();
            assert_eq!(u64::from(got), expected.as_u64().unwrap(), "{id:?} with {pods} pods");
        }
    }
}

#[test]
fn message_stats_match_the_typescript_bot() {
    let cases = fixture("message_stats.json");
    let mut failures = Vec::new();
    let cases = cases.as_array().expect("an array");
    for case in cases {
        let content = case["content"].as_str().expect("content");
        let expected = &case["expected"];
        if expected.is_null() {
            assert!(content.is_empty(), "only empty content stores no row");
            continue;
        }
        let got = message_stats(content);
        let got = serde_json::json!({
            "char_count": got.char_count, "word_count": got.word_count,
            "code_stats": got.code_stats, "link_stats": got.link_stats,
        });
        if &got != expected {
            failures.push(format!("{content:?}\n  expected {expected}\n  got      {got}"));
        }
    }
    assert!(failures.is_empty(), "{} of {} differ:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
