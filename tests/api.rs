//! The guild data API (`/v1`) end to end, on pods replaying the sample stream:
//! - the dashboard's own queries (as Kysely compiles them) through a 3-pod deployment give
//!   exactly what they give on one file that holds every guild;
//! - every refusal: writes, several statements, ATTACH, the time limit, the row and body caps,
//!   the token, a non-owner (421), an unreachable owner;
//! - settings patches commit through the writer, and GUILD_CREATE never overwrites them.

use guild_gateway_dev::testing::*;
use rusqlite::types::{Value as Sql, ValueRef};
use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

const TOKEN: &str = API_TOKEN;

type Deployment = ReplayDeployment;

/// A /v1 call with the test's token; returns the status and the JSON body.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> (u16, Value) {
    call_as(port, method, path, body, Some(TOKEN))
}

fn call_as(
    port: u16,
    method: &str,
    path: &str,
    body: Option<&Value>,
    token: Option<&str>,
) -> (u16, Value) {
    let text = body.map(Value::to_string).unwrap_or_default();
    api_request(port, token, method, path, &text).expect("the pod answers")
}

fn query(port: u16, guild: &str, sql: &str, params: &[Value]) -> (u16, Value) {
    call(
        port,
        "POST",
        &format!("/v1/guilds/{guild}/query"),
        Some(&json!({ "sql": sql, "parameters": params })),
    )
}

/// The truth: the statement on one file that holds every guild, values as the API's JSON.
fn run_on_file(db: &Path, sql: &str, params: &[Value]) -> Value {
    let conn = open(db);
    let mut stmt = conn.prepare(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let params: Vec<Sql> = params
        .iter()
        .map(|p| match p {
            Value::Null => Sql::Null,
            Value::Number(n) if n.is_i64() => Sql::Integer(n.as_i64().unwrap()),
            Value::Number(n) => Sql::Real(n.as_f64().unwrap()),
            Value::String(s) => Sql::Text(s.clone()),
            other => panic!("parameter {other}"),
        })
        .collect();
    let mut rows = Vec::new();
    let mut cursor = stmt.query(rusqlite::params_from_iter(params)).unwrap();
    while let Some(row) = cursor.next().unwrap() {
        rows.push(Value::Array(
            (0..columns.len())
                .map(|i| match row.get_ref(i).unwrap() {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(n) => json!(n),
                    ValueRef::Real(f) => json!(f),
                    ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    ValueRef::Blob(b) => json!(b),
                })
                .collect(),
        ));
    }
    json!({ "columns": columns, "rows": rows })
}

/// The dashboard's fill of a dependent query: the `author_id` column of the query it depends
/// on replaces the marker with that many `?`, inserted at `param_index` (fixtures README).
fn filled(query: &Value, earlier: Option<&Value>) -> (String, Vec<Value>) {
    let sql = query["sql"].as_str().unwrap().to_owned();
    let mut params = query["parameters"].as_array().unwrap().clone();
    let Some(earlier) = earlier else {
        return (sql, params);
    };
    let columns = earlier["columns"].as_array().unwrap();
    let column = columns
        .iter()
        .position(|c| c == query["param_from"].as_str().unwrap())
        .expect("the earlier query has the column");
    let ids: Vec<Value> = earlier["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row[column].clone())
        .collect();
    let marks = vec!["?"; ids.len()].join(", ");
    let sql = sql.replace(query["marker"].as_str().unwrap(), &marks);
    let at = query["param_index"].as_u64().unwrap() as usize;
    params.splice(at..at, ids);
    (sql, params)
}

fn sorted_rows(result: &Value) -> Vec<Value> {
    sorted(result["rows"].as_array().unwrap().clone())
}

#[test]
fn the_dashboards_queries_through_three_pods_equal_one_file_with_every_guild() {
    let single = tempfile::tempdir().unwrap();
    let truth_db = single.path().join("single.sqlite3");
    replay(&truth_db, 0, 1, "md5", &sample_stream());
    let pods = 3;
    let deployment = Deployment::start(pods, &[]);

    let queries: Vec<Value> =
        serde_json::from_str(&std::fs::read_to_string(fixture("dashboard_queries.json")).unwrap())
            .unwrap();
    // Results by (name, guild), through the API and on the file, for dependent queries.
    let mut api_results: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut truth_results: BTreeMap<(String, String), Value> = BTreeMap::new();
    let mut names_with_rows = BTreeSet::new();
    for q in &queries {
        let name = q["name"].as_str().unwrap().to_owned();
        let guild = q["guild_id"].as_str().unwrap_or("").to_owned();
        let depends = q["depends_on"]
            .as_str()
            .map(|d| (d.to_owned(), guild.clone()));
        let (sql, params) = filled(q, depends.as_ref().map(|d| &api_results[d]));
        let (truth_sql, truth_params) = filled(q, depends.as_ref().map(|d| &truth_results[d]));
        assert_eq!(
            (&sql, &params),
            (&truth_sql, &truth_params),
            "{name}: the dependency differs"
        );
        let truth = run_on_file(&truth_db, &sql, &params);
        if !truth["rows"].as_array().unwrap().is_empty() {
            names_with_rows.insert(name.clone());
        }
        truth_results.insert((name.clone(), guild.clone()), truth.clone());

        if q["scope"] == "guild" {
            let owner = deployment.owner(&guild);
            let (code, answer) = query(deployment.port(owner), &guild, &sql, &params);
            assert_eq!(code, 200, "{name} on pod {owner}: {answer}");
            assert_eq!(
                answer, truth,
                "{name} for guild {guild}: the owner's answer differs from the single file"
            );
            // Any other pod sends the client to the owner.
            let other = (owner + 1) % pods;
            let (code, moved) = query(deployment.port(other), &guild, &sql, &params);
            assert_eq!(code, 421, "{name} on non-owner {other}: {moved}");
            assert_eq!(moved["ordinal"], json!(owner));
            assert_eq!(
                moved["url"],
                json!(format!("http://127.0.0.1:{}", deployment.port(owner)))
            );
            // ... and answers it as a guild list, through the owner: the same rows.
            let (code, via) = call(
                deployment.port(other),
                "POST",
                "/v1/query",
                Some(&json!({ "guilds": [guild], "sql": sql, "parameters": params })),
            );
            assert_eq!(code, 200, "{name} via pod {other}: {via}");
            assert_eq!(via["columns"], truth["columns"], "{name}");
            assert_eq!(
                sorted_rows(&via),
                sorted_rows(&truth),
                "{name} via pod {other}"
            );
            api_results.insert((name, guild), answer);
        } else {
            let guilds = q["guild_ids"].as_array().unwrap();
            let spanned: BTreeSet<u32> = guilds
                .iter()
                .map(|g| deployment.owner(g.as_str().unwrap()))
                .collect();
            assert_eq!(
                spanned.len(),
                pods as usize,
                "{name}: the guild list should span every pod"
            );
            // Any pod answers for the whole list.
            let mut answers = Vec::new();
            for k in 0..pods {
                let (code, answer) = call(
                    deployment.port(k),
                    "POST",
                    "/v1/query",
                    Some(&json!({ "guilds": guilds, "sql": sql, "parameters": params })),
                );
                assert_eq!(code, 200, "{name} via pod {k}: {answer}");
                assert_eq!(answer["columns"], truth["columns"], "{name}");
                assert_eq!(
                    sorted_rows(&answer),
                    sorted_rows(&truth),
                    "{name} via pod {k}"
                );
                let per_pod: Vec<u64> = answer["pods"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|p| p["rows"].as_u64().unwrap())
                    .collect();
                assert_eq!(per_pod.len(), pods as usize, "{name}: every owner answered");
                assert_eq!(
                    per_pod.iter().sum::<u64>() as usize,
                    truth["rows"].as_array().unwrap().len()
                );
                answers.push(answer);
            }
            api_results.insert((name, guild), answers.swap_remove(0));
        }
    }
    // The top participants keep the dashboard's thresholds (250 messages or 2,200 words), which
    // no author of the sample reaches: empty on both sides above. Lowered, they return rows,
    // and those must agree too.
    let top = queries
        .iter()
        .find(|q| q["name"] == "getTopParticipants.topMembersQuery")
        .unwrap();
    let (sql, mut params) = filled(top, None);
    let n = params.len();
    params[n - 3..].clone_from_slice(&[json!(1), json!(1), json!(100)]);
    let truth = run_on_file(&truth_db, &sql, &params);
    assert!(!truth["rows"].as_array().unwrap().is_empty());
    let guild = top["guild_id"].as_str().unwrap();
    let (code, answer) = query(
        deployment.port(deployment.owner(guild)),
        guild,
        &sql,
        &params,
    );
    assert_eq!((code, &answer), (200, &truth));
    names_with_rows.insert(top["name"].as_str().unwrap().to_owned());

    let names: BTreeSet<String> = queries
        .iter()
        .map(|q| q["name"].as_str().unwrap().to_owned())
        .filter(|name| name != "getTopParticipants.dailyParticipationQuery")
        .collect();
    assert_eq!(
        names_with_rows, names,
        "every other dashboard query should return rows for some guild"
    );
}

/// Guilds of the sample, by owner, in a deployment of `pods`.
fn guilds_by_owner(deployment: &Deployment) -> BTreeMap<u32, Vec<String>> {
    let guilds: BTreeSet<u64> = sample_lines().iter().filter_map(dispatch_guild).collect();
    let mut by_owner: BTreeMap<u32, Vec<String>> = BTreeMap::new();
    for g in guilds {
        let g = g.to_string();
        by_owner.entry(deployment.owner(&g)).or_default().push(g);
    }
    by_owner
}

#[test]
fn refusals_are_clear_and_leave_the_pod_healthy() {
    let mut deployment = Deployment::start(
        3,
        &[
            ("QUERY_TIMEOUT_MS", "300"),
            ("QUERY_MAX_ROWS", "50"),
            ("API_MAX_BODY_BYTES", "4096"),
        ],
    );
    let by_owner = guilds_by_owner(&deployment);
    let guild = by_owner[&1][0].clone();
    let port = deployment.port(1);

    let refused = |sql: &str, status: u16, says: &str| {
        let (code, body) = query(port, &guild, sql, &[]);
        assert_eq!(code, status, "{sql}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{sql}: {error:?} should say {says:?}");
    };
    refused("DELETE FROM message_stats", 400, "DELETE");
    refused("UPDATE guilds SET settings = '{}'", 400, "UPDATE");
    refused("INSERT INTO guilds (id) VALUES ('1')", 400, "INSERT");
    refused("select 1; select 2", 400, "more than one SQL statement");
    refused(
        "select 1; delete from message_stats",
        400,
        "more than one SQL statement",
    );
    refused(
        "ATTACH DATABASE '/tmp/other.sqlite3' AS other",
        400,
        "ATTACH",
    );
    refused("select load_extension('/tmp/x.so')", 400, "load_extension");
    refused("PRAGMA journal_mode = DELETE", 400, "PRAGMA");
    refused("select nope from message_stats", 400, "no such column");
    let endless =
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) SELECT count(*) FROM n";
    refused(endless, 504, "interrupted");
    refused(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n LIMIT 51) SELECT i FROM n",
        422,
        "more than 50 rows",
    );
    // Nothing was written, and the pod answers the next query.
    let (code, body) = query(
        port,
        &guild,
        "select count(*) from message_stats where guild_id = ?",
        &[json!(guild)],
    );
    assert_eq!(code, 200, "{body}");
    assert!(body["rows"][0][0].as_i64().unwrap() > 0);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);

    let big = format!("select 1 {}", " ".repeat(5000));
    refused(&big, 413, "API_MAX_BODY_BYTES");

    // The token: missing, wrong.
    let path = format!("/v1/guilds/{guild}/owner");
    let (code, body) = call_as(port, "GET", &path, None, None);
    assert_eq!(code, 401, "{body}");
    let (code, body) = call_as(port, "GET", &path, None, Some("test-api-token-0123456780"));
    assert_eq!(
        (code, body["error"].as_str()),
        (401, Some("wrong API token"))
    );

    // A non-owner, for reads and for writes: 421 naming the owner.
    for (method, route, body) in [
        (
            "POST",
            "query",
            Some(json!({"sql": "select 1", "parameters": []})),
        ),
        ("GET", "settings", None),
        ("PATCH", "settings", Some(json!({"a": 1}))),
    ] {
        let (code, moved) = call(
            deployment.port(0),
            method,
            &format!("/v1/guilds/{guild}/{route}"),
            body.as_ref(),
        );
        assert_eq!(code, 421, "{method} {route}: {moved}");
        assert_eq!(
            (moved["ordinal"].as_u64(), moved["url"].as_str()),
            (Some(1), Some(format!("http://127.0.0.1:{port}").as_str()))
        );
    }

    // No SQL text in the logs (the statement above was refused, logged or not).
    for k in 0..3 {
        assert!(
            !deployment.log(k).contains("load_extension"),
            "pod {k} logged SQL text"
        );
    }
    let page = http_get(deployment.port(0), "/metrics").unwrap().1;
    assert_promtool_accepts(&page);
    assert!(metric(&page, "guild_gateway_api_misdirected_total") >= 3.0);
    assert!(
        metric(
            &page,
            r#"guild_gateway_api_requests_total{route="/v1/guilds/{guild_id}/query",status="421"}"#
        ) >= 1.0
    );

    // An unreachable owner: a clear error naming it and its guilds, no partial rows.
    let lost = by_owner[&2].clone();
    deployment.stop(2);
    let every: Vec<&String> = by_owner.values().flatten().collect();
    let (code, body) = call(
        deployment.port(0),
        "POST",
        "/v1/query",
        Some(&json!({
            "guilds": every, "sql": "select guild_id, count(*) from message_stats group by guild_id", "parameters": []
        })),
    );
    assert_eq!(code, 502, "{body}");
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("pod 2") && error.contains("unreachable"),
        "{error}"
    );
    for g in &lost {
        assert!(error.contains(g.as_str()), "{error} should name guild {g}");
    }
    assert!(body.get("rows").is_none(), "no partial rows: {body}");
    let page = http_get(deployment.port(0), "/metrics").unwrap().1;
    assert!(
        metric(
            &page,
            r#"guild_gateway_api_pod_calls_total{outcome="unreachable"}"#
        ) >= 1.0
    );
}

#[test]
fn without_a_token_the_api_refuses_everything() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pod = start_replay_pod(
        lingering_replay(&dir.path().join("gateway.sqlite3"), port),
        port,
    );
    // The replay must have finished its stream, or SIGTERM below would cut it short.
    wait_replayed(port, sample_lines().len() as u64);
    for token in [None, Some(""), Some("anything-at-all-1234")] {
        let (code, body) = call_as(port, "GET", "/v1/guilds/1/owner", None, token);
        assert_eq!(code, 403, "{token:?}: {body}");
        assert!(body["error"]
            .as_str()
            .unwrap()
            .contains("API_TOKEN is not set"));
    }
    sigterm(&pod.0);
    assert!(wait_exit(&mut pod.0, Duration::from_secs(30)).success());
}

/// Writes a line to the replaying pod's stdin.
fn send(stdin: &mut impl Write, line: &Value) {
    writeln!(stdin, "{line}").expect("the pod reads its stdin");
}

fn events_done(port: u16) -> u64 {
    get_json(port, "/status").map_or(0, |s| s["events_done"].as_u64().unwrap_or(0))
}

#[test]
fn settings_patches_commit_through_the_writer_and_guild_create_never_overwrites_them() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut pod: Child = gateway()
        .args(["replay", "--linger", "-"])
        .env("API_TOKEN", TOKEN)
        .env("DATABASE_URL", dir.path().join("gateway.sqlite3"))
        .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("pod.log")).unwrap())
        .spawn()
        .unwrap();
    let mut stdin = pod.stdin.take().unwrap();
    let guard = Proc(pod);
    assert!(wait_for(Duration::from_secs(30), || get_json(port, "/status")).is_some());

    let create = sample_lines()
        .into_iter()
        .find(|l| l["t"] == "GUILD_CREATE")
        .unwrap();
    let guild = create["d"]["id"].as_str().unwrap().to_owned();
    let settings = format!("/v1/guilds/{guild}/settings");
    let (code, _) = call(port, "GET", &settings, None);
    assert_eq!(code, 404, "no row before onboarding or GUILD_CREATE");

    // Onboarding: a PATCH creates the row; a read right after the answer sees it.
    let (code, body) = call(
        port,
        "PATCH",
        &settings,
        Some(&json!({"modLog": "10", "restricted": ["a"]})),
    );
    assert_eq!(
        (code, &body["settings"]),
        (200, &json!({"modLog": "10", "restricted": ["a"]})),
        "{body}"
    );
    let (code, body) = call(port, "GET", &settings, None);
    assert_eq!(
        (code, &body["settings"]),
        (200, &json!({"modLog": "10", "restricted": ["a"]}))
    );
    let (code, body) = query(
        port,
        &guild,
        "select settings ->> 'modLog' from guilds where id = ?",
        &[json!(guild)],
    );
    assert_eq!((code, &body["rows"]), (200, &json!([["10"]])));

    // GUILD_CREATEs for the same guild, arriving while patches commit: the patches all land.
    let creates = 200;
    let feeder = std::thread::spawn(move || {
        for s in 0..creates {
            let mut line = create.clone();
            line["s"] = json!(s + 1);
            send(&mut stdin, &line);
        }
        stdin
    });
    for i in 0..50 {
        let (code, body) = call(port, "PATCH", &settings, Some(&json!({"counter": i})));
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["settings"]["counter"], json!(i));
    }
    let stdin = feeder.join().unwrap();
    assert!(
        wait_for(Duration::from_secs(30), || (events_done(port) == creates)
            .then_some(()))
        .is_some(),
        "the GUILD_CREATEs were not committed"
    );
    let (_, body) = call(port, "GET", &settings, None);
    assert_eq!(
        body["settings"],
        json!({"modLog": "10", "restricted": ["a"], "counter": 49})
    );

    // Merge patch semantics: null removes a key; a non-object is refused.
    let (_, body) = call(
        port,
        "PATCH",
        &settings,
        Some(&json!({"modLog": null, "restricted": ["b", "c"]})),
    );
    assert_eq!(
        body["settings"],
        json!({"restricted": ["b", "c"], "counter": 49})
    );
    let (code, body) = call(
        port,
        "PATCH",
        &settings,
        Some(&json!(["not", "an", "object"])),
    );
    assert_eq!(code, 400, "{body}");

    drop(stdin); // end of the stream: the replay drains, then lingers until SIGTERM
    let log = dir.path().join("pod.log");
    let lingering = wait_for(Duration::from_secs(30), || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("lingering")
            .then_some(())
    });
    assert!(lingering.is_some(), "the replay did not finish its stream");
    let mut pod = guard;
    sigterm(&pod.0);
    assert!(wait_exit(&mut pod.0, Duration::from_secs(30)).success());
}

/// The pod's peak resident memory so far (VmHWM), in bytes.
fn peak_rss(deployment: &Deployment, ordinal: u32) -> u64 {
    let pid = deployment.pods[ordinal as usize].as_ref().unwrap().0.id();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kb * 1024
}

/// The hostile pass over `/v1/guilds/{id}/query`: functions and virtual tables that reach
/// into the process are refused by name, and an answer is bounded in bytes, in memory and in
/// time, and the pod goes on answering.
#[test]
fn hostile_queries_cannot_crash_a_pod_or_take_its_memory() {
    let deployment = Deployment::start(1, &[("QUERY_MAX_BYTES", "1048576")]);
    let guild = guilds_by_owner(&deployment)[&0][0].clone();
    let port = deployment.port(0);
    let refused = |sql: &str, params: &[Value], status: u16, says: &str| {
        let (code, body) = query(port, &guild, sql, params);
        assert_eq!(code, status, "{sql}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{sql}: {error:?} should say {says:?}");
    };
    refused(
        "SELECT hex(fts3_tokenizer(?1))",
        &[json!("simple")],
        400,
        "the function fts3_tokenizer",
    );
    refused(
        "SELECT fts3_tokenizer('simple', ?1)",
        &[json!("AAAAAAAA")],
        400,
        "the function fts3_tokenizer",
    );
    refused(
        "SELECT * FROM fts3tokenize WHERE input = 'a b'",
        &[],
        400,
        "the table fts3tokenize",
    );
    refused("SELECT * FROM dbstat", &[], 400, "the table dbstat");
    refused(
        "SELECT name FROM pragma_function_list",
        &[],
        400,
        "pragma_function_list",
    );

    // 4 x 16 MB of zeros: 422 at the byte budget, and the pod's peak memory stays near it.
    let before = peak_rss(&deployment, 0);
    refused(
        "SELECT zeroblob(16000000) FROM message_stats LIMIT 4",
        &[],
        422,
        "QUERY_MAX_BYTES",
    );
    let grew = peak_rss(&deployment, 0).saturating_sub(before);
    assert!(grew < 48 << 20, "the peak RSS grew by {} MB", grew >> 20);
    // Blobs come as base64 in a tagged object.
    let (code, body) = query(port, &guild, "SELECT x'0001ff'", &[]);
    assert_eq!(
        (code, &body["rows"]),
        (200, &json!([[{"$blob": "AAH/"}]])),
        "{body}"
    );
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
}

/// Ids that are not snowflakes, settings keys with NUL, and numbers JavaScript cannot hold:
/// all refused with 400 naming them, and nothing is written.
#[test]
fn bad_ids_keys_and_numbers_are_refused() {
    let deployment = Deployment::start(2, &[]);
    let port = deployment.port(0);
    let bad_ids = [
        "abc".to_string(),
        "-1".into(),
        "00012".into(),
        "0".into(),
        "18446744073709551616".into(),
        "%F0%9F%98%80".into(),
        "1%002".into(),
        "9".repeat(10_000),
    ];
    for id in &bad_ids {
        for (method, route, body) in [
            ("GET", "owner", None),
            (
                "POST",
                "query",
                Some(json!({"sql": "select 1", "parameters": []})),
            ),
            ("GET", "settings", None),
            ("PATCH", "settings", Some(json!({"a": 1}))),
        ] {
            let (code, answer) = call(
                port,
                method,
                &format!("/v1/guilds/{id}/{route}"),
                body.as_ref(),
            );
            let shown: String = id.chars().take(20).collect();
            assert_eq!(code, 400, "{method} {route} {shown}: {answer}");
            assert!(
                answer["error"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("not a Discord snowflake"),
                "{shown}: {answer}"
            );
        }
    }
    let good = guilds_by_owner(&deployment)[&0][0].clone();
    let (code, answer) = call(
        port,
        "POST",
        "/v1/query",
        Some(&json!({"guilds": [good, "00012"], "sql": "select 1", "parameters": []})),
    );
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("\"00012\""),
        "{answer}"
    );

    // A NUL inside a key would be cut by SQLite's JSON and overwrite another key.
    let settings = format!("/v1/guilds/{good}/settings");
    assert_eq!(
        call(port, "PATCH", &settings, Some(&json!({"a": 1}))).0,
        200
    );
    let (code, answer) = call(port, "PATCH", &settings, Some(&json!({"a\u{0}b": 2})));
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("NUL"),
        "{answer}"
    );
    // Integers beyond 2^53, in settings and in parameters.
    let (code, answer) = api_request(
        port,
        Some(TOKEN),
        "PATCH",
        &settings,
        r#"{"n": {"m": [1, 9007199254740993]}}"#,
    )
    .unwrap();
    assert_eq!(code, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("/n/m/1"),
        "{answer}"
    );
    let (code, answer) = api_request(
        port,
        Some(TOKEN),
        "POST",
        &format!("/v1/guilds/{good}/query"),
        r#"{"sql": "select ?1", "parameters": [18446744073709551616]}"#,
    )
    .unwrap();
    assert_eq!(code, 400, "{answer}");
    let (code, answer) = call(port, "GET", &settings, None);
    assert_eq!(
        (code, &answer["settings"]),
        (200, &json!({"a": 1})),
        "{answer}"
    );

    // No guilds row was created for any bad id, on either pod.
    for k in 0..2 {
        let db = deployment.dir().join(format!("pod{k}.sqlite3"));
        let ids = run_on_file(&db, "select id from guilds", &[]);
        for row in ids["rows"].as_array().unwrap() {
            let id = row[0].as_str().unwrap();
            assert!(
                gateway_actors::partition::parse_snowflake(id).is_ok(),
                "pod {k} holds a guilds row {id:?}"
            );
        }
    }
}

/// Heavy calls (a 110k-id cross-guild read, three at once) run off the thread that answers
/// the probes; a body of exactly the cap forwarded to another pod is not refused for the
/// forwarding's overhead; a body that never finishes is timed out.
#[test]
fn probes_answer_during_heavy_calls_and_slow_bodies_time_out() {
    let deployment = Deployment::start(2, &[("API_BODY_TIMEOUT_MS", "500")]);
    let port = deployment.port(0);
    let ids: Vec<String> = (1..=110_000u64).map(|i| i.to_string()).collect();
    let heavy = json!({"guilds": ids, "sql": "select 1", "parameters": []}).to_string();
    assert!(heavy.len() < 1 << 20, "{}", heavy.len());
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let probes = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut times = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::SeqCst) && times.len() < 10_000 {
                let started = std::time::Instant::now();
                let (code, _) = http_get(port, "/healthz").expect("the probe is answered");
                assert_eq!(code, 200);
                times.push(started.elapsed());
                std::thread::sleep(Duration::from_millis(20));
            }
            times
        })
    };
    let callers: Vec<_> = (0..3)
        .map(|_| {
            let heavy = heavy.clone();
            std::thread::spawn(move || {
                for _ in 0..3 {
                    let (code, body) =
                        api_request(port, Some(TOKEN), "POST", "/v1/query", &heavy).unwrap();
                    assert_eq!(code, 200, "{body}");
                }
            })
        })
        .collect();
    for caller in callers {
        caller.join().expect("a heavy caller failed");
    }
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut times = probes.join().expect("the prober failed");
    times.sort();
    assert!(times.len() >= 5, "{}", times.len());
    // The kubelet's timeout is 1 s; the probes must stay far inside it.
    let (median, worst) = (times[times.len() / 2], times[times.len() - 1]);
    assert!(
        median < Duration::from_millis(100),
        "median probe {median:?}"
    );
    assert!(worst < Duration::from_secs(1), "slowest probe {worst:?}");

    // A body of exactly the cap, for guilds of the other pod: its re-encoded copy is longer
    // (1E9 becomes 1000000000.0), and the other pod still takes it.
    let other: Vec<String> = guilds_by_owner(&deployment)[&1]
        .iter()
        .take(3)
        .cloned()
        .collect();
    let columns: Vec<String> = (1..=50).map(|i| format!("?{i}")).collect();
    let params = vec!["1E9"; 50].join(",");
    let build = |pad: usize| {
        format!(
            r#"{{"guilds":{},"sql":"select {}{}","parameters":[{params}]}}"#,
            json!(other),
            columns.join(","),
            " ".repeat(pad)
        )
    };
    let body = build(1_048_576 - build(0).len());
    assert_eq!(body.len(), 1_048_576);
    let (code, answer) = api_request(port, Some(TOKEN), "POST", "/v1/query", &body).unwrap();
    assert_eq!(code, 200, "{answer}");
    assert_eq!(answer["rows"][0][0], json!(1e9));
    let (code, _) = api_request(
        port,
        Some(TOKEN),
        "POST",
        "/v1/query",
        &build(1_048_577 - build(0).len()),
    )
    .unwrap();
    assert_eq!(code, 413);

    // A body that stops half way: 408 after API_BODY_TIMEOUT_MS, and the pod answers.
    use std::io::Read;
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        slow,
        "POST /v1/query HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"guilds\""
    )
    .unwrap();
    let mut answer = String::new();
    let _ = slow.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("API_BODY_TIMEOUT_MS"), "{answer}");
    assert_eq!(http_get(port, "/healthz").unwrap().0, 200);
}

fn execute(port: u16, guild: &str, sql: &str, params: &[Value]) -> (u16, Value) {
    call(
        port,
        "POST",
        &format!("/v1/guilds/{guild}/execute"),
        Some(&json!({ "sql": sql, "parameters": params })),
    )
}

const REPORT: &str = r#"insert into "reported_messages" ("id", "reported_message_id", "reported_channel_id", "reported_user_id", "guild_id", "log_message_id", "log_channel_id", "reason", "created_at") values (?, ?, ?, ?, ?, ?, ?, ?, ?)"#;

fn report(id: &str, guild: &str, user: &str, reason: &str) -> Vec<Value> {
    [
        id,
        "900",
        "901",
        user,
        guild,
        "902",
        "903",
        reason,
        "2026-12-01T00:00:00.000Z",
    ]
    .map(|v| json!(v))
    .to_vec()
}

/// The bot's writes through `/execute` on a 3-pod deployment: each commits on its guild's
/// owner (answering with RETURNING rows), the bot's cross-guild spam rule counts them across
/// the pods, and every refusal is clear and changes nothing.
#[test]
fn the_bots_writes_commit_on_the_owner_and_stay_in_their_guild() {
    let deployment = Deployment::start(3, &[]);
    let by_owner = guilds_by_owner(&deployment);
    let owned: Vec<(u32, String)> = (0..3).map(|k| (k, by_owner[&k][0].clone())).collect();
    // A spam report in one guild of each pod, and a second in the first guild.
    for (i, (k, guild)) in owned.iter().enumerate() {
        let id = format!("report-{i}");
        let (code, body) = execute(
            deployment.port(*k),
            guild,
            &format!("{REPORT} returning \"id\", \"guild_id\""),
            &report(&id, guild, "spammer", "spam"),
        );
        assert_eq!(code, 200, "{body}");
        assert_eq!(body["rows_affected"], 1, "{body}");
        assert_eq!(body["rows"], json!([[id, guild]]), "{body}");
        assert!(body["last_insert_rowid"].as_i64().unwrap() > 0, "{body}");
    }
    let (k0, g0) = &owned[0];
    let (code, body) = execute(
        deployment.port(*k0),
        g0,
        REPORT,
        &report("report-x", g0, "spammer", "track"),
    );
    assert_eq!((code, &body["rows"]), (200, &json!([])), "{body}");
    // The bot's getSpamReportGuildCount, as Kysely compiles it, over every guild.
    let all: Vec<String> = by_owner.values().flatten().cloned().collect();
    let (code, counted) = call(
        deployment.port(2),
        "POST",
        "/v1/query",
        Some(&json!({
            "guilds": all,
            "sql": r#"select count(distinct "guild_id") as "count" from "reported_messages" where "reported_user_id" = ? and "reason" = ?"#,
            "parameters": ["spammer", "spam"],
        })),
    );
    assert_eq!(code, 200, "{counted}");
    let per_pod: i64 = counted["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_i64().unwrap())
        .sum();
    assert_eq!(per_pod, 3, "{counted}");

    // Refusals, each naming why; none changes a row.
    let (k1, g1) = &owned[1];
    let port = deployment.port(*k1);
    let refused = |sql: &str, params: &[Value], status: u16, says: &str| {
        let (code, body) = execute(port, g1, sql, params);
        assert_eq!(code, status, "{sql}: {body}");
        let error = body["error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{sql}: {error:?} should say {says:?}");
        if status == 403 {
            assert_eq!(body["table"], says, "{body}");
        }
    };
    // Another guild's row: in VALUES, and in WHERE (g0's report lives on pod k0, but a
    // statement naming it in WHERE on g1's pod finds none; g1's own pod holds other guilds).
    refused(
        REPORT,
        &report("r-v", g0, "u", "spam"),
        403,
        "reported_messages",
    );
    let other_here = by_owner[k1]
        .iter()
        .find(|g| *g != g1)
        .expect("two guilds on a pod");
    let (code, body) = execute(
        port,
        other_here,
        REPORT,
        &report("r-w", other_here, "u", "spam"),
    );
    assert_eq!(code, 200, "{body}");
    refused(
        r#"update "reported_messages" set "reason" = ? where "reported_user_id" = ?"#,
        &[json!("stolen"), json!("u")],
        403,
        "reported_messages",
    );
    refused("delete from guild_channels", &[], 403, "guild_channels");
    refused(
        "insert into users (id, externalId) values ('1', '2')",
        &[],
        400,
        "no such table",
    );
    refused("create table x (a)", &[], 400, "not allowed");
    refused(
        "delete from honeypot_config; delete from reported_messages",
        &[],
        400,
        "more than one SQL statement",
    );
    refused("select 1", &[], 400, "only reads");
    // The UNIQUE report key, as the bot's duplicate report meets it.
    let (code, body) = execute(
        port,
        other_here,
        REPORT,
        &report("r-w2", other_here, "u", "spam"),
    );
    assert_eq!(code, 409, "{body}");
    // A non-owner names the owner.
    let (code, body) = execute(
        deployment.port((*k1 + 1) % 3),
        g1,
        REPORT,
        &report("r-n", g1, "u", "spam"),
    );
    assert_eq!(code, 421, "{body}");
    assert_eq!(body["ordinal"], *k1, "{body}");
    let (code, rows) = query(
        port,
        other_here,
        r#"select "id", "reason" from "reported_messages" where "guild_id" = ?"#,
        &[json!(other_here)],
    );
    assert_eq!(
        (code, &rows["rows"]),
        (200, &json!([["r-w", "spam"]])),
        "{rows}"
    );
    // The pod holds g1's report and other_here's: nothing refused left a row.
    let (code, rows) = query(port, g1, r#"select count(*) from "reported_messages""#, &[]);
    assert_eq!((code, &rows["rows"]), (200, &json!([[2]])), "{rows}");
}

/// A flood of writes that each run to their limit cannot starve the pod's writer: the writes
/// are interrupted (504) or wait their turn and give up (503), while a settings patch, which
/// goes through the same writer, still commits each time and the pod stays ready.
#[test]
fn a_flood_of_slow_writes_cannot_starve_the_writer() {
    let deployment = Deployment::start(1, &[("API_WRITE_TIMEOUT_MS", "200")]);
    let guild = guilds_by_owner(&deployment)[&0][0].clone();
    let port = deployment.port(0);
    let slow = "insert into honeypot_config (guild_id, channel_id) select ?, x from (with recursive n(x) as (select 1 union all select x + 1 from n) select x from n) limit 100000000";
    let stop = std::sync::atomic::AtomicBool::new(false);
    let answers: std::sync::Mutex<BTreeMap<u16, u64>> = Default::default();
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let (code, _) = execute(port, &guild, slow, &[json!(guild)]);
                    *answers.lock().unwrap().entry(code).or_default() += 1;
                }
            });
        }
        for i in 0..10 {
            let (code, body) = call(
                port,
                "PATCH",
                &format!("/v1/guilds/{guild}/settings"),
                Some(&json!({ "flood": i })),
            );
            assert_eq!(code, 200, "{body}");
            assert_eq!(body["settings"]["flood"], i, "{body}");
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let answers = answers.into_inner().unwrap();
    assert!(answers.get(&504).copied().unwrap_or(0) > 0, "{answers:?}");
    assert!(
        answers.keys().all(|code| [503, 504].contains(code)),
        "{answers:?}"
    );
    let (code, rows) = query(port, &guild, "select count(*) from honeypot_config", &[]);
    assert_eq!((code, &rows["rows"]), (200, &json!([[0]])), "{rows}");
    assert_eq!(http_get(port, "/readyz").unwrap().0, 200);
}
