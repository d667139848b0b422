//! `GET /v1/openapi.json`: the OpenAPI 3.1 document of `/v1` (`openapi.json` beside this
//! file, compiled in), and the tests that hold it and the router together.
//!
//! The document is behind the token like every other `/v1` route. It holds nothing secret
//! (it is in the repository), but the guard has no exceptions: "/v1 is never open, and with
//! no API_TOKEN answers 403 to everything" stays true without a list of open paths in the
//! guard, and every reader of the document (the HTTP services, schemathesis in the tests) is
//! a client of the API that holds the token anyway.

use actix_web::HttpResponse;

/// The document, as kept in the repository.
pub const DOCUMENT: &str = include_str!("openapi.json");

pub async fn document() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("application/json")
        .body(DOCUMENT)
}

#[cfg(test)]
mod tests {
    use super::DOCUMENT;
    use crate::api::routes::ROUTES;
    use serde_json::Value;
    use std::collections::BTreeSet;

    const METHODS: [&str; 8] = [
        "get", "put", "post", "delete", "options", "head", "patch", "trace",
    ];

    fn document() -> Value {
        serde_json::from_str(DOCUMENT).expect("src/api/openapi.json is JSON")
    }

    /// (METHOD, path) of every operation the document describes.
    fn documented() -> BTreeSet<(String, String)> {
        let doc = document();
        let paths = doc["paths"].as_object().expect("the document has paths");
        paths
            .iter()
            .flat_map(|(path, item)| {
                let item = item.as_object().expect("a path item is an object");
                item.keys()
                    .filter(|k| METHODS.contains(&k.as_str()))
                    .map(|m| (m.to_uppercase(), path.clone()))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// (METHOD, path) of every route the router mounts.
    fn mounted() -> BTreeSet<(String, String)> {
        ROUTES
            .iter()
            .map(|r| (r.method.to_owned(), format!("/v1{}", r.path)))
            .collect()
    }

    #[test]
    fn the_document_is_openapi_3_1_and_its_references_resolve() {
        let doc = document();
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1.")),
            "openapi.json is not OpenAPI 3.1: {}",
            doc["openapi"]
        );
        fn refs(value: &Value, out: &mut Vec<String>) {
            match value {
                Value::Object(map) => {
                    if let Some(Value::String(r)) = map.get("$ref") {
                        out.push(r.clone());
                    }
                    map.values().for_each(|v| refs(v, out));
                }
                Value::Array(items) => items.iter().for_each(|v| refs(v, out)),
                _ => {}
            }
        }
        let mut all = Vec::new();
        refs(&doc, &mut all);
        assert!(!all.is_empty());
        for r in all {
            let pointer = r
                .strip_prefix('#')
                .unwrap_or_else(|| panic!("{r}: only references inside the document"));
            assert!(doc.pointer(pointer).is_some(), "{r} does not resolve");
        }
        // Every operation answers the token's refusals, and names itself.
        for (method, path) in documented() {
            let op = &doc["paths"][&path][method.to_lowercase()];
            assert!(
                op["operationId"].is_string(),
                "{method} {path}: no operationId"
            );
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path}: no {status} answer"
                );
            }
        }
    }

    /// Every route the router mounts is documented, and every documented operation is a
    /// route the router mounts.
    #[test]
    fn the_routes_and_the_document_agree() {
        let (documented, mounted) = (documented(), mounted());
        let undocumented: Vec<_> = mounted.difference(&documented).collect();
        let unmounted: Vec<_> = documented.difference(&mounted).collect();
        assert!(
            undocumented.is_empty() && unmounted.is_empty(),
            "the router (src/api/routes.rs) and src/api/openapi.json disagree:\n  \
             mounted, not documented: {undocumented:?}\n  documented, not mounted: {unmounted:?}"
        );
        assert_eq!(mounted.len(), ROUTES.len(), "a route is listed twice");
    }

    /// The real router (`api::routes`, with a pod's state on a fresh database) answers every
    /// documented operation with its own handler, never the fallback's 404 or 405, and every
    /// other method, on a path that is documented or listed in the table, with a 405 whose
    /// `Allow` names exactly the documented methods. Bodies are left out, so no handler gets
    /// past its body (nothing is written).
    #[actix_rt::test]
    async fn the_router_mounts_every_documented_operation_and_no_other_method() {
        use actix_web::http::Method;
        use actix_web::test::{call_service, init_service, read_body, TestRequest};

        let dir = tempfile::tempdir().unwrap();
        let (api, pipeline) = one_pod_api(&dir.path().join("gateway.sqlite3"));
        let app = init_service(actix_web::App::new().configure(crate::api::routes(api))).await;
        let documented = documented();
        // The paths of both, so that a route missing from either side is asked for.
        let paths: BTreeSet<String> = documented
            .iter()
            .chain(mounted().iter())
            .map(|(_, p)| p.clone())
            .collect();
        for path in paths {
            let uri = path.replace("{guild_id}", "1");
            let methods: Vec<&str> = ["DELETE", "GET", "PATCH", "POST", "PUT"]
                .into_iter()
                .filter(|m| documented.contains(&(m.to_string(), path.clone())))
                .collect();
            for method in ["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"] {
                let req = TestRequest::default()
                    .method(Method::from_bytes(method.as_bytes()).unwrap())
                    .uri(&uri)
                    .insert_header(("Authorization", format!("Bearer {TOKEN}")))
                    .to_request();
                let res = call_service(&app, req).await;
                let status = res.status().as_u16();
                let allow = res
                    .headers()
                    .get("allow")
                    .map(|v| v.to_str().unwrap().to_owned());
                let body = String::from_utf8_lossy(&read_body(res).await).into_owned();
                if methods.contains(&method) {
                    assert!(
                        !(status == 404 && body.contains("no such /v1 endpoint")) && status != 405,
                        "{method} {path} is documented but not mounted: {status} {body}"
                    );
                } else {
                    assert_eq!(
                        (status, allow.as_deref()),
                        (405, Some(methods.join(", ").as_str()).filter(|a| !a.is_empty())),
                        "{method} {path}: the methods mounted are not the documented ones ({methods:?}): {body}"
                    );
                }
            }
        }
        // A path that is no route's.
        let req = TestRequest::get()
            .uri("/v1/no/such/route")
            .insert_header(("Authorization", format!("Bearer {TOKEN}")))
            .to_request();
        let res = call_service(&app, req).await;
        assert_eq!(res.status().as_u16(), 404);
        drop(app);
        if let Ok(pipeline) = std::sync::Arc::try_unwrap(pipeline) {
            pipeline.shutdown();
        }
    }

    const TOKEN: &str = "openapi-test-token-0123456789";

    /// The API's state of the only pod of a deployment, on a fresh database.
    fn one_pod_api(
        db: &std::path::Path,
    ) -> (
        actix_web::web::Data<crate::api::Api>,
        std::sync::Arc<gateway_actors::Pipeline>,
    ) {
        use gateway_actors::partition::{Partition, Strategy};
        let metrics = std::sync::Arc::new(gateway_actors::metrics::Metrics::new(0, 1).unwrap());
        let config =
            gateway_actors::PipelineConfig::new(Partition::new(Strategy::Md5, 0, 1), db.to_owned());
        let pipeline =
            std::sync::Arc::new(gateway_actors::Pipeline::start(config, metrics).unwrap());
        let api = crate::api::Api::new(
            crate::config::ApiConfig {
                token: Some(TOKEN.into()),
                pod_urls: crate::routing::UrlTemplate::parse("http://127.0.0.1:{ordinal+1}")
                    .unwrap(),
                limits: gateway_actors::query::QueryLimits {
                    timeout: std::time::Duration::from_secs(5),
                    max_rows: 1000,
                    max_bytes: 1 << 20,
                },
                pool_size: 1,
                max_body: 1 << 20,
                body_timeout: std::time::Duration::from_secs(5),
                write_timeout: std::time::Duration::from_secs(1),
            },
            pipeline.clone(),
            db,
            None,
        )
        .unwrap();
        (actix_web::web::Data::new(api), pipeline)
    }
}
