//! The data API against its OpenAPI document (`src/api/openapi.json`, served at
//! `GET /v1/openapi.json`): schemathesis generates requests for every `/v1` operation from the
//! document and sends them to pod 0 of a 3-pod deployment that replayed the sample stream
//! (cross-guild reads reach the other two). The run fails on any 5xx, on an answer the
//! document does not describe (status, content type, headers, body), on a request the
//! document calls invalid that is accepted, on a route that answers without the token, and on
//! a pod that stops answering. Its settings are in `tests/schemathesis.toml`; the test adds
//! dictionaries (the sample's guild ids, the dashboard's queries and the bot's writes) and
//! `tests/schemathesis_hooks.py`, so that many requests reach real rows.
//!
//! That the document lists exactly the routes the router mounts is checked in process, in
//! `src/api/openapi.rs`.
//!
//! schemathesis comes from PyPI; scripts/test installs it into `.venv`. Without it this test
//! fails, saying how to install it.

use guild_gateway_dev::testing::*;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const TOKEN: &str = API_TOKEN;

/// Cases per operation: with 14 operations, about 4,000 requests, a minute or two.
const CASES: u32 = 300;

/// The fixed seed, so that a failure reproduces; `SCHEMATHESIS_SEED` picks another.
const SEED: &str = "19";

/// A hang guard for the whole run, not an expectation of its speed.
const RUN_LIMIT: Duration = Duration::from_secs(900);

/// schemathesis's command, `st`: the project's .venv first, then PATH; panics unless it runs
/// and is a 4.x (the command line below is v4's).
fn schemathesis() -> PathBuf {
    let st = tool("st");
    let out = Command::new(&st).arg("--version").output();
    let version = match &out {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => panic!(
            "schemathesis is not installed ({} does not run: {:?}). scripts/test installs it into \
             .venv; by hand: `python3 -m venv .venv && .venv/bin/pip install schemathesis==4.32.5`",
            st.display(),
            out.as_ref().err()
        ),
    };
    assert!(
        version.contains("version 4."),
        "tests/openapi.rs needs schemathesis 4 (its `st run` command line), found: {version}"
    );
    st
}

#[test]
fn schemathesis_finds_no_answer_outside_the_document_on_three_pods() {
    let st = schemathesis();
    let pods = 3u32;
    let mut deployment = ReplayDeployment::start(pods, &[]);
    let base = deployment.port(0);
    let dir = deployment.dir().to_owned();
    let dir = dir.as_path();

    let seed = std::env::var("SCHEMATHESIS_SEED").unwrap_or_else(|_| SEED.into());
    let config = dir.join("schemathesis.toml");
    let settings = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis.toml");
    let settings = std::fs::read_to_string(&settings).expect("tests/schemathesis.toml");
    // A key of the whole file must come before its first table.
    let hooks = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis_hooks.py");
    let hooks = serde_json::Value::from(hooks.to_str().unwrap());
    let config_text = format!("hooks = {hooks}\n{settings}{}", dictionaries(dir));
    std::fs::write(&config, config_text).unwrap();
    let output = dir.join("schemathesis.txt");
    let started = Instant::now();
    let mut run = Command::new(&st)
        .arg("--config-file")
        .arg(&config)
        .arg("--no-color")
        .arg("run")
        .arg(format!("http://127.0.0.1:{base}/v1/openapi.json"))
        .args(["--header", &format!("Authorization: Bearer {TOKEN}")])
        .args(["--max-examples", &CASES.to_string()])
        .args(["--seed", &seed])
        // Its working files (none are expected) go to the test's directory, not the checkout.
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&output).unwrap())
        .stderr(std::fs::File::create(dir.join("schemathesis.err")).unwrap())
        .spawn()
        .expect("starting schemathesis");
    let status = wait_exit(&mut run, RUN_LIMIT);
    let report = std::fs::read_to_string(&output).unwrap();
    let errors = std::fs::read_to_string(dir.join("schemathesis.err")).unwrap();
    eprintln!(
        "schemathesis (seed {seed}) ran for {:.0?}:\n{}",
        started.elapsed(),
        summary(&report)
    );
    assert!(
        status.success(),
        "schemathesis failed ({status}; seed {seed}, SCHEMATHESIS_SEED reruns it):\n{report}\n{errors}"
    );
    assert!(
        report.contains("Operations:") && report.contains(" passed"),
        "schemathesis tested nothing:\n{report}\n{errors}"
    );

    // Every pod still answers, still runs, and holds no rescale: the fuzzing changed no
    // pod's ownership.
    for k in 0..pods {
        let port = deployment.port(k);
        assert_eq!(
            http_get(port, "/healthz").map(|(code, _)| code).ok(),
            Some(200),
            "pod {k} stopped answering /healthz after the run; its log:\n{}",
            deployment.log(k)
        );
        assert!(deployment.running(k), "pod {k} exited during the run");
        let (code, state) = api_request(port, Some(TOKEN), "GET", "/v1/rescale", "").unwrap();
        assert_eq!(code, 200, "{state}");
        assert_eq!(
            (state["epoch"].as_u64(), &state["next"]),
            (Some(1), &serde_json::Value::Null),
            "pod {k}'s ownership changed during the run: {state}"
        );
        let status = get_json(port, "/status").expect("/status answers");
        assert_eq!(status["events_failed"], 0, "pod {k}: {status}");
    }
    for k in 0..pods {
        let text = deployment.log(k);
        assert!(
            !text.contains("panicked"),
            "pod {k} panicked during the run:\n{text}"
        );
    }
}

/// The bot's writes, as Kysely compiles them (`?` parameters): statements `/execute` takes
/// when their parameters name the path's guild, and refuses (403, 409, 400) otherwise.
const WRITES: &[&str] = &[
    r#"update "guilds" set "settings" = json_set("settings", '$.moderator', ?) where "id" = ? returning "settings""#,
    r#"update "guilds" set "settings" = ? where "id" = ?"#,
    r#"insert into "guilds" ("id", "settings") values (?, '{}') on conflict ("id") do nothing"#,
    r#"delete from "guilds" where "id" = ?"#,
    r#"insert into "mod_actions" ("id", "user_id", "guild_id", "action_type", "reason", "created_at") values (?, ?, ?, 'ban', ?, ?) returning *"#,
    r#"update "mod_actions" set "reason" = ? where "guild_id" = ? and "user_id" = ?"#,
    r#"delete from "message_cache" where "guild_id" = ? and "message_id" = ?"#,
    r#"update "message_stats" set "react_count" = "react_count" + 1 where "guild_id" = ? and "message_id" = ?"#,
    r#"insert into "user_threads" ("user_id", "guild_id", "thread_id") values (?, ?, ?) on conflict ("user_id", "guild_id") do update set "thread_id" = excluded."thread_id""#,
    r#"insert into "honeypot_config" ("guild_id", "channel_id") values (?, ?)"#,
    r#"insert into "guild_subscriptions" ("guild_id", "product_tier") values (?, ?) returning *"#,
    r#"insert into "reported_messages" ("id", "reported_message_id", "reported_channel_id", "reported_user_id", "guild_id", "log_message_id", "log_channel_id", "reason") values (?, ?, ?, ?, ?, ?, ?, ?)"#,
    r#"insert into "escalations" ("id", "guild_id", "thread_id", "vote_message_id", "reported_user_id", "initiator_id", "flags") values (?, ?, ?, ?, ?, ?, '{}')"#,
    r#"insert into "escalation_records" ("id", "escalation_id", "voter_id", "vote") values (?, ?, ?, ?)"#,
    r#"update "channel_info" set "name" = ? where "id" = ?"#,
    r#"insert into "tickets_config" ("message_id", "channel_id", "role_id") values (?, ?, ?)"#,
    r#"delete from "gateway_ownership""#,
];

/// schemathesis's dictionaries (values it draws besides its own) and where it uses them: the
/// sample's guild ids (a third are pod 0's) for guild ids, and the dashboard's queries and the
/// bot's writes for `sql`, so that requests get past ownership and SQL parsing to the rows
/// (with `tests/schemathesis_hooks.py`, which gives a valid case as many parameters as its
/// statement has `?`s).
fn dictionaries(dir: &Path) -> String {
    let guilds: std::collections::BTreeSet<String> = sample_lines()
        .iter()
        .filter_map(dispatch_guild)
        .map(|g| g.to_string())
        .collect();
    let queries = std::fs::read_to_string(fixture("dashboard_queries.json")).unwrap();
    let queries: serde_json::Value = serde_json::from_str(&queries).unwrap();
    let sql = queries
        .as_array()
        .unwrap()
        .iter()
        .map(|q| q["sql"].as_str().unwrap().to_owned())
        .chain(WRITES.iter().map(|w| w.to_string()));
    // libFuzzer's format: one quoted entry a line.
    let entries = |values: &mut dyn Iterator<Item = String>| {
        values
            .map(|v| {
                let quoted = v
                    .replace('\\', "\\\\")
                    .replace('"', "\\\"")
                    .replace('\n', "\\n");
                format!("\"{quoted}\"\n")
            })
            .collect::<String>()
    };
    let (guilds_file, sql_file) = (dir.join("guilds.dict"), dir.join("sql.dict"));
    std::fs::write(&guilds_file, entries(&mut guilds.into_iter())).unwrap();
    std::fs::write(&sql_file, entries(&mut { sql })).unwrap();
    let path = |p: &Path| serde_json::Value::from(p.to_str().unwrap()).to_string();
    format!(
        r#"
[dictionaries.guilds]
from-file = {guilds}

[dictionaries.sql]
from-file = {sql}

[parameters]
"path.guild_id" = {{ dictionary = "guilds", probability = 0.5 }}
"body.guilds[*]" = {{ dictionary = "guilds", probability = 0.5 }}
"body.sql" = {{ dictionary = "sql", probability = 0.8 }}
"body.parameters[*]" = {{ dictionary = "guilds", probability = 0.5 }}
"body.params[*]" = {{ dictionary = "guilds", probability = 0.5 }}
"#,
        guilds = path(&guilds_file),
        sql = path(&sql_file),
    )
}

/// The end of schemathesis's report: the failures, warnings and summary sections.
fn summary(report: &str) -> &str {
    ["=== FAILURES", "=== WARNINGS", "=== SUMMARY"]
        .iter()
        .find_map(|section| report.find(section))
        .and_then(|i| report[..i].rfind('\n').map(|n| &report[n + 1..]))
        .unwrap_or(report)
}
