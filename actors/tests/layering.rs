//! The crate's layers run one way: `domain` <- `storage` <- `actors` <- `pipeline`, with the
//! small shared modules where [`RANKS`] puts them. This reads every source file's `crate::`
//! paths and fails on one that points up (or sideways into another layer of the same rank),
//! or that names a module by anything but its real path.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `actors/src` and its rank: a module may use its own layer and
/// those of a lower rank only.
const RANKS: &[(&str, u32)] = &[
    ("errors", 0),
    ("log_limit", 0),
    ("side_thread", 0),
    ("domain", 1),
    ("metrics", 2),
    ("relay_feed", 2),
    ("storage", 3),
    ("health", 3),
    ("progress", 3),
    ("actors", 4),
    ("pipeline", 5),
];

fn rank(module: &str) -> Option<u32> {
    RANKS.iter().find(|(m, _)| *m == module).map(|&(_, r)| r)
}

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The first component of every `crate::` path in `text`, outside comments.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    for line in text.lines() {
        let code = line.split("//").next().unwrap_or("");
        let mut rest = code;
        while let Some(at) = rest.find("crate::") {
            rest = &rest[at + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `crate::{a, b::{c, d}}`: the first component of each item at the top level.
                let mut depth = 0;
                let mut item_start = true;
                for (i, c) in group.char_indices() {
                    match c {
                        '{' => depth += 1,
                        '}' if depth == 0 => break,
                        '}' => depth -= 1,
                        ',' if depth == 0 => item_start = true,
                        c if item_start && (c.is_alphanumeric() || c == '_') => {
                            item_start = false;
                            found.insert(identifier(&group[i..]));
                        }
                        _ => {}
                    }
                }
                continue;
            }
            let name = identifier(rest);
            if !name.is_empty() {
                found.insert(name);
            }
        }
    }
    found
}

fn identifier(text: &str) -> String {
    text.chars()
        .take_while(|c| c.is_alphanumeric() || *c == '_')
        .collect()
}

#[test]
fn every_import_points_down_a_layer_by_its_real_path() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut edges = BTreeSet::new();
    for file in &files {
        let relative = file.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap();
        let module = first.as_os_str().to_str().unwrap().trim_end_matches(".rs");
        if module == "lib" {
            continue;
        }
        let own = rank(module)
            .unwrap_or_else(|| panic!("{module}: a top-level module with no rank in RANKS"));
        let text = std::fs::read_to_string(file).unwrap();
        for target in crate_paths(&text) {
            if target == module {
                continue;
            }
            match rank(&target) {
                None => wrong.push(format!(
                    "{}: crate::{target} is not a top-level module's real path",
                    relative.display()
                )),
                Some(r) if r >= own => wrong.push(format!(
                    "{}: {module} (rank {own}) uses {target} (rank {r})",
                    relative.display()
                )),
                Some(_) => {
                    edges.insert(format!("{module} -> {target}"));
                }
            }
        }
    }
    eprintln!("imports between top-level modules:");
    for edge in &edges {
        eprintln!("  {edge}");
    }
    assert!(
        wrong.is_empty(),
        "imports against the layers:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_finds_grouped_and_plain_paths_and_skips_comments() {
    let text = "use crate::{domain::{event, shard}, storage::store::Op};\n\
                let x = crate::metrics::Metrics::new(); // crate::pipeline\n";
    let found: Vec<String> = crate_paths(text).into_iter().collect();
    assert_eq!(found, ["domain", "metrics", "storage"]);
}
