//! deploy/ offline: every kustomization renders and passes kubernetes-validate, the wiring an
//! operator relies on is there, and the monitoring assets are valid and use real metrics.

use guild_gateway_dev::testing::*;
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;

const TARGETS: [&str; 3] = ["base", "overlays/staging", "overlays/production"];

fn deploy_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("deploy")
}

fn render(target: &str) -> String {
    let out = Command::new("kubectl")
        .args(["kustomize"])
        .arg(deploy_dir().join(target))
        .output()
        .expect("kubectl is installed");
    assert_success(&format!("kubectl kustomize {target}"), &out)
}

fn documents(rendered: &str) -> Vec<Value> {
    serde_yaml::Deserializer::from_str(rendered)
        .map(|d| Value::deserialize(d).unwrap())
        .collect()
}

use serde::Deserialize;

fn find<'a>(docs: &'a [Value], kind: &str, name_prefix: &str) -> Vec<&'a Value> {
    docs.iter()
        .filter(|d| {
            d["kind"] == kind
                && d["metadata"]["name"]
                    .as_str()
                    .is_some_and(|n| n.starts_with(name_prefix))
        })
        .collect()
}

fn container<'a>(pod_spec: &'a Value, list: &str, name: &str) -> &'a Value {
    pod_spec[list]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("{list} {name}"))
}

/// The names a container's environment provides: `env` names and the keys of `envFrom`
/// ConfigMaps.
fn env_names(c: &Value, docs: &[Value]) -> BTreeSet<String> {
    let mut names: BTreeSet<String> = c["env"]
        .as_sequence()
        .into_iter()
        .flatten()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .collect();
    for from in c["envFrom"].as_sequence().into_iter().flatten() {
        let cm = from["configMapRef"]["name"].as_str().expect("configMapRef");
        let map = find(docs, "ConfigMap", cm);
        assert_eq!(map.len(), 1, "ConfigMap {cm} exists once");
        names.extend(
            map[0]["data"]
                .as_mapping()
                .unwrap()
                .keys()
                .filter_map(|k| k.as_str().map(str::to_owned)),
        );
    }
    names
}

#[test]
fn every_kustomization_renders_and_validates() {
    for target in TARGETS {
        let rendered = render(target);
        assert!(
            !rendered.contains("CONFIG_SERVICE_URL"),
            "{target} mentions CONFIG_SERVICE_URL"
        );
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), &rendered).unwrap();
        let out = Command::new(tool("kubernetes-validate"))
            .arg(file.path())
            .output()
            .expect("kubernetes-validate is installed (scripts/test installs it)");
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        // A CRD (ServiceMonitor) has no schema offline: that is reported, not an error.
        assert!(
            out.status.success(),
            "kubernetes-validate {target}:\n{report}"
        );
        assert!(
            !report.to_lowercase().contains("error"),
            "kubernetes-validate {target}:\n{report}"
        );
    }
}

/// Each overlay, rendered, with what every wiring check needs.
struct Rendered {
    target: &'static str,
    docs: Vec<Value>,
}

impl Rendered {
    fn all() -> Vec<Rendered> {
        TARGETS
            .iter()
            .map(|&target| Rendered {
                target,
                docs: documents(&render(target)),
            })
            .collect()
    }

    fn statefulset(&self) -> &Value {
        let sts = find(&self.docs, "StatefulSet", "gateway");
        assert_eq!(sts.len(), 1, "{}: one StatefulSet", self.target);
        sts[0]
    }

    fn pod(&self) -> &Value {
        &self.statefulset()["spec"]["template"]["spec"]
    }

    fn gateway(&self) -> &Value {
        container(self.pod(), "containers", "gateway")
    }

    fn gateway_env(&self) -> &Vec<Value> {
        self.gateway()["env"].as_sequence().unwrap()
    }

    /// NUM_GATEWAY_PODS from its one ConfigMap.
    fn pods(&self) -> u64 {
        self.docs
            .iter()
            .find(|d| d["kind"] == "ConfigMap" && !d["data"]["NUM_GATEWAY_PODS"].is_null())
            .expect("a ConfigMap with NUM_GATEWAY_PODS")["data"]["NUM_GATEWAY_PODS"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    }

    fn database_url(&self) -> String {
        let env = self.gateway_env();
        env.iter().find(|e| e["name"] == "DATABASE_URL").unwrap()["value"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    fn litestream_config(&self) -> String {
        let config_map = find(&self.docs, "ConfigMap", "gateway-litestream");
        config_map[0]["data"]["litestream.yml"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}

#[test]
fn statefulset_service_and_budget_are_wired() {
    for r in Rendered::all() {
        let (target, docs) = (r.target, &r.docs);
        let spec = &r.statefulset()["spec"];
        assert_eq!(spec["podManagementPolicy"], "Parallel", "{target}");
        assert_eq!(spec["serviceName"], "gateway", "{target}");
        let svc = find(docs, "Service", "gateway");
        assert_eq!(
            svc[0]["spec"]["clusterIP"], "None",
            "{target}: headless Service"
        );
        assert_eq!(
            find(docs, "PodDisruptionBudget", "gateway").len(),
            1,
            "{target}: PDB"
        );
        assert!(
            r.pod()["terminationGracePeriodSeconds"].as_u64().unwrap() >= 30,
            "{target}: grace period"
        );
        assert_eq!(
            spec["template"]["metadata"]["annotations"]["prometheus.io/scrape"],
            "true"
        );
    }
}

#[test]
fn the_network_policy_opens_port_3000_to_api_clients_gateways_and_prometheus_only() {
    for r in Rendered::all() {
        let target = r.target;
        let policies = find(&r.docs, "NetworkPolicy", "gateway");
        assert_eq!(policies.len(), 1, "{target}: one NetworkPolicy");
        let spec = &policies[0]["spec"];
        // It selects exactly the StatefulSet's pods.
        assert_eq!(
            spec["podSelector"]["matchLabels"],
            r.statefulset()["spec"]["selector"]["matchLabels"],
            "{target}"
        );
        assert_eq!(spec["policyTypes"][0], "Ingress", "{target}");
        let rules = spec["ingress"].as_sequence().unwrap();
        let api_rule = rules
            .iter()
            .find(|rule| rule["ports"][0]["port"] == 3000)
            .expect("a rule for port 3000");
        assert_eq!(
            api_rule["ports"].as_sequence().unwrap().len(),
            1,
            "{target}: only 3000"
        );
        let from = api_rule["from"].as_sequence().unwrap();
        assert_eq!(
            from.len(),
            3,
            "{target}: HTTP services, gateways, Prometheus"
        );
        assert!(from
            .iter()
            .any(|peer| peer["podSelector"]["matchLabels"]["guild-gateway/api-client"] == "true"));
        assert!(from.iter().any(|peer| peer["podSelector"]["matchLabels"]
            == r.statefulset()["spec"]["template"]["metadata"]["labels"]
            || peer["podSelector"]["matchLabels"] == spec["podSelector"]["matchLabels"]));
        assert!(from
            .iter()
            .any(|peer| peer["namespaceSelector"].is_mapping()
                && peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"] == "prometheus"));
        // The relay's port admits the bot's processes only.
        let relay_rule = rules
            .iter()
            .find(|rule| rule["ports"][0]["port"] == 7878)
            .expect("a rule for the relay's port");
        let relay_from = relay_rule["from"]
            .as_sequence()
            .expect("the relay rule lists who may connect");
        assert_eq!(
            relay_from.len(),
            1,
            "{target}: the relay admits one kind of peer"
        );
        assert_eq!(
            relay_from[0]["podSelector"]["matchLabels"]["guild-gateway/relay-client"], "true",
            "{target}: relay clients only"
        );
        assert!(relay_from[0]["namespaceSelector"].is_null(), "{target}");
        // Every container port is covered by some rule (nothing scraped is blocked).
        for c in r.pod()["containers"].as_sequence().unwrap() {
            for port in c["ports"].as_sequence().into_iter().flatten() {
                let n = &port["containerPort"];
                assert!(
                    rules.iter().any(|rule| rule["ports"][0]["port"] == *n),
                    "{target}: port {n:?} has no rule"
                );
            }
        }
    }
}

#[test]
fn num_gateway_pods_has_one_source_equal_to_replicas() {
    for r in Rendered::all() {
        let target = r.target;
        let sources: Vec<&Value> = r
            .docs
            .iter()
            .filter(|d| d["kind"] == "ConfigMap" && !d["data"]["NUM_GATEWAY_PODS"].is_null())
            .collect();
        assert_eq!(sources.len(), 1, "{target}: NUM_GATEWAY_PODS defined once");
        assert_eq!(
            sources[0]["metadata"]["name"], "gateway-sharding",
            "{target}: a stable name the HTTP services can use"
        );
        assert_eq!(
            r.statefulset()["spec"]["replicas"].as_u64(),
            Some(r.pods()),
            "{target}: replicas == NUM_GATEWAY_PODS"
        );
        assert!(
            r.gateway_env()
                .iter()
                .all(|e| e["name"] != "NUM_GATEWAY_PODS"),
            "{target}: NUM_GATEWAY_PODS only from the ConfigMap"
        );
    }
}

#[test]
fn the_gateway_container_has_its_settings_probes_and_resources() {
    for r in Rendered::all() {
        let target = r.target;
        let (gateway, env) = (r.gateway(), r.gateway_env());
        let ordinal = env
            .iter()
            .find(|e| e["name"] == "POD_ORDINAL")
            .expect("POD_ORDINAL");
        assert_eq!(
            ordinal["valueFrom"]["fieldRef"]["fieldPath"],
            "metadata.labels['apps.kubernetes.io/pod-index']"
        );
        let gateway_env = env_names(gateway, &r.docs);
        for name in [
            "POD_ORDINAL",
            "NUM_GATEWAY_PODS",
            "SHARD_STRATEGY",
            "DATABASE_URL",
            "DISCORD_TOKEN",
            "HTTP_ADDR",
            "API_TOKEN",
            "POD_URL_TEMPLATE",
            "DISCORD_SHARDS",
        ] {
            assert!(gateway_env.contains(name), "{target}: gateway lacks {name}");
        }
        for secret in ["DISCORD_TOKEN", "API_TOKEN"] {
            let token = env.iter().find(|e| e["name"] == secret).unwrap();
            assert!(
                token["valueFrom"]["secretKeyRef"].is_mapping(),
                "{target}: {secret} from a Secret"
            );
        }
        assert_eq!(gateway["startupProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(gateway["livenessProbe"]["httpGet"]["path"], "/healthz");
        assert_eq!(gateway["readinessProbe"]["httpGet"]["path"], "/readyz");
        assert!(
            gateway["resources"]["requests"].is_mapping()
                && gateway["resources"]["limits"].is_mapping()
        );
    }
}

#[test]
fn litestream_replicates_the_database_from_both_of_its_containers() {
    for r in Rendered::all() {
        let target = r.target;
        let (pod, db, config) = (r.pod(), r.database_url(), r.litestream_config());
        let settings: String = config
            .lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .collect::<Vec<_>>()
            .join("\n");
        let vars: BTreeSet<String> = settings
            .split("${")
            .skip(1)
            .filter_map(|rest| rest.split_once('}').map(|(v, _)| v.to_owned()))
            .collect();
        assert!(
            vars.contains("POD_NAME") && vars.contains("LITESTREAM_BUCKET"),
            "{vars:?}"
        );
        assert!(
            config.contains(&format!("path: {db}")),
            "{target}: Litestream replicates DATABASE_URL ({db})"
        );
        let restore = container(pod, "initContainers", "litestream-restore");
        let sidecar = container(pod, "containers", "litestream");
        let args = |c: &Value| {
            c["args"]
                .as_sequence()
                .unwrap()
                .iter()
                .map(|a| a.as_str().unwrap().to_owned())
                .collect::<Vec<_>>()
        };
        for flag in ["restore", "-if-db-not-exists", "-if-replica-exists"] {
            assert!(
                args(restore).contains(&flag.to_string()),
                "{target}: restore {flag}"
            );
        }
        assert_eq!(args(sidecar)[0], "replicate");
        for (role, c) in [("init", restore), ("sidecar", sidecar)] {
            let names = env_names(c, &r.docs);
            for var in vars.iter().chain(
                [
                    "LITESTREAM_ACCESS_KEY_ID".to_string(),
                    "LITESTREAM_SECRET_ACCESS_KEY".to_string(),
                ]
                .iter(),
            ) {
                assert!(
                    names.contains(var),
                    "{target}: the {role} container lacks {var}"
                );
            }
            let pod_name = c["env"]
                .as_sequence()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "POD_NAME")
                .unwrap();
            assert_eq!(
                pod_name["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name",
                "{target}: POD_NAME is the pod's name"
            );
            let mounts: Vec<&str> = c["volumeMounts"]
                .as_sequence()
                .unwrap()
                .iter()
                .filter_map(|m| m["mountPath"].as_str())
                .collect();
            assert!(
                mounts.contains(&"/data") && db.starts_with("/data/"),
                "{target}: {role} sees the database volume"
            );
        }
    }
}

#[test]
fn each_pod_has_its_own_replica_path() {
    for r in Rendered::all() {
        let (target, pods, config) = (r.target, r.pods(), r.litestream_config());
        let path_template = config
            .lines()
            .find_map(|l| l.trim().strip_prefix("path: gateway/"))
            .expect("replica path");
        let paths: BTreeSet<String> = (0..pods)
            .map(|k| path_template.replace("${POD_NAME}", &format!("gateway-{k}")))
            .collect();
        assert_eq!(
            paths.len() as u64,
            pods,
            "{target}: one replica path per pod"
        );
    }
}

#[test]
fn every_container_is_hardened() {
    for r in Rendered::all() {
        let (target, pod) = (r.target, r.pod());
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
        for c in pod["containers"]
            .as_sequence()
            .unwrap()
            .iter()
            .chain(pod["initContainers"].as_sequence().unwrap())
        {
            let sc = &c["securityContext"];
            assert_eq!(
                sc["readOnlyRootFilesystem"], true,
                "{target}: {:?}",
                c["name"]
            );
            assert_eq!(
                sc["allowPrivilegeEscalation"], false,
                "{target}: {:?}",
                c["name"]
            );
            assert_eq!(
                sc["capabilities"]["drop"][0], "ALL",
                "{target}: {:?}",
                c["name"]
            );
        }
    }
}

#[test]
fn the_service_monitor_is_only_where_its_component_is_used() {
    for r in Rendered::all() {
        let target = r.target;
        let monitors = find(&r.docs, "ServiceMonitor", "gateway").len();
        assert_eq!(
            monitors,
            usize::from(target == "overlays/production"),
            "{target}: ServiceMonitor only where the component is used"
        );
    }
}

fn monitoring(name: &str) -> String {
    std::fs::read_to_string(deploy_dir().join("monitoring").join(name)).unwrap()
}

/// Every `guild_gateway_*` metric the dashboard and alerts use, base names.
fn referenced_metrics(prefix: &str) -> BTreeSet<String> {
    let text = monitoring("dashboard.json") + &monitoring("alerts.yaml");
    let mut names = BTreeSet::new();
    for (i, _) in text.match_indices(prefix) {
        let name: String = text[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(name.clone(), |n, s| {
                n.strip_suffix(s).map(str::to_owned).unwrap_or(n)
            });
        names.insert(base);
    }
    names
}

#[test]
fn alerts_pass_promtool_and_use_exported_metrics() {
    let alerts: Value = serde_yaml::from_str(&monitoring("alerts.yaml")).unwrap();
    let rules = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        rules.path(),
        serde_yaml::to_string(&alerts["spec"]).unwrap(),
    )
    .unwrap();
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(rules.path())
        .output()
        .expect("promtool");
    assert_success("promtool check rules", &out);
    let dashboard: serde_json::Value =
        serde_json::from_str(&monitoring("dashboard.json")).expect("the dashboard is JSON");
    assert!(dashboard["panels"].as_array().unwrap().len() >= 10);

    // A live pod's exposition (serve adds the gateway_* metrics to replay's).
    let dir = tempfile::tempdir().unwrap();
    let (_fake, fake_port) = start_fake_discord("t", &[]);
    let port = free_port();
    // With a relay, so that its metrics (the relay alerts') are exported too.
    let mut pod = Proc(
        serving_pod(&dir.path().join("g.sqlite3"), port, fake_port, "t")
            .env("RELAY_ADDR", format!("127.0.0.1:{}", free_port()))
            .spawn()
            .unwrap(),
    );
    // One data API request, so its per-route series exist.
    let asked = wait_for(std::time::Duration::from_secs(30), || {
        let (code, _) = http_request(port, "GET", "/v1/guilds/1/owner", &[], "").ok()?;
        (code == 403).then_some(())
    });
    assert!(
        asked.is_some(),
        "the data API answers (403: no token configured)"
    );
    let page = wait_for(std::time::Duration::from_secs(30), || {
        let (_, page) = http_get(port, "/metrics").ok()?;
        page.contains("guild_gateway_gateway_connected 1")
            .then_some(page)
    })
    .expect("the pod connects");
    let exported: BTreeSet<&str> = page
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for metric in referenced_metrics("guild_gateway_") {
        assert!(
            exported.contains(metric.as_str()),
            "the dashboard or alerts use {metric}, which the service does not export"
        );
    }
    sigterm(&pod.0);
    wait_exit(&mut pod.0, std::time::Duration::from_secs(30));
}
