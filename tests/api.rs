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

const TOKEN: &str = "test-api-token-0123456789";

/// N pods replaying the same stream into their own files, each serving the API on
/// `base + ordinal`.
struct Deployment {
    pods: Vec<Option<Proc>>,
    base: u16,
    dir: tempfile::TempDir,
}

impl Deployment {
    fn start(pods: u32, env: &[(&str, &str)]) -> Deployment {
        let dir = tempfile::tempdir().unwrap();
        let base = free_port_block(pods as u16);
        let lines = sample_lines().len() as u64;
        let procs = (0..pods)
            .map(|k| {
                let mut cmd = gateway();
                cmd.args(["replay", "--linger"])
                    .arg(sample_stream())
                    .env("API_TOKEN", TOKEN)
                    .env(
                        "POD_URL_TEMPLATE",
                        format!("http://127.0.0.1:{{ordinal+{base}}}"),
                    )
                    .env("NUM_GATEWAY_PODS", pods.to_string())
                    .env("POD_ORDINAL", k.to_string())
                    .env("HTTP_ADDR", format!("127.0.0.1:{}", base + k as u16))
                    .env("DATABASE_URL", dir.path().join(format!("pod{k}.sqlite3")))
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(dir.path().join(format!("pod{k}.log"))).unwrap());
                for (name, value) in env {
                    cmd.env(name, value);
                }
                Some(Proc(cmd.spawn().expect("starting a pod")))
            })
            .collect();
        let deployment = Deployment {
            pods: procs,
            base,
            dir,
        };
        for k in 0..pods {
            let port = deployment.port(k);
            let done = wait_for(Duration::from_secs(60), || {
                let s = get_json(port, "/status")?;
                (s["events_done"] == json!(lines) && s["in_flight"] == json!(0)).then_some(())
            });
            assert!(
                done.is_some(),
                "pod {k} did not commit the sample within 60 s"
            );
        }
        deployment
    }

    fn port(&self, ordinal: u32) -> u16 {
        self.base + ordinal as u16
    }

    fn log(&self, ordinal: u32) -> String {
        std::fs::read_to_string(self.dir.path().join(format!("pod{ordinal}.log"))).unwrap()
    }

    fn stop(&mut self, ordinal: u32) {
        // Dropping the Proc kills it by its PID and reaps it.
        self.pods[ordinal as usize] = None;
    }

    fn owner(&self, guild: &str) -> u32 {
        let (code, body) = call(
            self.port(0),
            "GET",
            &format!("/v1/guilds/{guild}/owner"),
            None,
        );
        assert_eq!(code, 200, "{body}");
        body["ordinal"].as_u64().unwrap() as u32
    }
}

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
    let mut pod = Proc(
        gateway()
            .args(["replay", "--linger"])
            .arg(sample_stream())
            .env("DATABASE_URL", dir.path().join("gateway.sqlite3"))
            .env("HTTP_ADDR", format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    // The replay must have finished its stream, or SIGTERM below would cut it short.
    let lines = sample_lines().len() as u64;
    let replayed = wait_for(Duration::from_secs(30), || {
        (get_json(port, "/status")?["events_done"] == json!(lines)).then_some(())
    });
    assert!(replayed.is_some(), "the replay did not commit the sample");
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
