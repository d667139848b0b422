//! The reference data from the TypeScript services (../shared/fixtures): the sharding function
//! and the message statistics must match it exactly.

use gateway_actors::partition::{md5_u32, owner_of_str, Strategy};
use gateway_actors::stats::message_stats;
use serde_json::Value;
use std::path::PathBuf;

fn fixture(name: &str) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../shared/fixtures")
        .join(name);
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
        assert_eq!(
            u64::from(md5_u32(id)),
            row["md5_u32"].as_u64().unwrap(),
            "md5_u32 of {id:?}"
        );
        for (pods, expected) in row["shard"].as_object().expect("shard map") {
            let pods: u32 = pods.parse().unwrap();
            let got = owner_of_str(Strategy::Md5, id, pods).unwrap();
            assert_eq!(
                u64::from(got),
                expected.as_u64().unwrap(),
                "{id:?} with {pods} pods"
            );
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
            failures.push(format!(
                "{content:?}\n  expected {expected}\n  got      {got}"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} differ:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// Why ICU4X: on the fixture's messages without markdown (whose expected counts are those of
/// the whole content), count how often each library disagrees with Node's `Intl.Segmenter`.
/// ICU4X's dictionary segmenter never does; plain UAX #29 (`unicode-segmentation`, no
/// dictionaries) does, on Thai and CJK text. Prints both figures.
#[test]
fn icu4x_segmentation_matches_node_where_plain_uax29_does_not() {
    use gateway_actors::stats::{count_graphemes, count_words};
    use unicode_segmentation::UnicodeSegmentation;
    let cases = fixture("message_stats.json");
    let (mut plain, mut icu_misses, mut uax_word_misses, mut uax_char_misses) = (0, 0, 0, 0);
    for case in cases.as_array().unwrap() {
        let content = case["content"].as_str().unwrap();
        let expected = &case["expected"];
        if expected.is_null()
            || content.contains('`')
            || content.contains('[')
            || content.contains("http")
        {
            continue;
        }
        plain += 1;
        let (words, chars) = (
            expected["word_count"].as_u64().unwrap(),
            expected["char_count"].as_u64().unwrap(),
        );
        if count_words(content) as u64 != words || count_graphemes(content) as u64 != chars {
            icu_misses += 1;
        }
        // UAX #29 has no "word-like" flag; a segment with a letter or digit is the usual stand-in.
        let uax_words = content
            .split_word_bounds()
            .filter(|w| w.chars().any(char::is_alphanumeric))
            .count();
        if uax_words as u64 != words {
            uax_word_misses += 1;
        }
        if content.graphemes(true).count() as u64 != chars {
            uax_char_misses += 1;
        }
    }
    println!(
        "{plain} plain messages: ICU4X differs from Node on {icu_misses}; unicode-segmentation on {uax_word_misses} (words) and {uax_char_misses} (graphemes)"
    );
    assert!(plain > 20, "the fixture has plain messages to compare");
    assert_eq!(icu_misses, 0);
    assert!(
        uax_word_misses > 0,
        "no difference found: the choice of ICU4X would need revisiting"
    );
}
