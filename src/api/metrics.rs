//! The API's metrics, in the pod's registry. Labels are routes and statuses: never guild
//! ids or SQL.

use prometheus::{
    exponential_buckets, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, Opts, Registry,
};

pub struct ApiMetrics {
    /// By route pattern and HTTP status.
    pub requests: IntCounterVec,
    /// Time to run a statement on this pod's file, by route.
    pub query_seconds: HistogramVec,
    /// 421 answers: a client asked a pod that does not own the guild.
    pub misdirected: IntCounter,
    /// Calls to other pods for cross-guild reads, by outcome (ok, refused, unreachable).
    pub pod_calls: IntCounterVec,
}

impl ApiMetrics {
    pub fn register(registry: &Registry) -> Result<ApiMetrics, prometheus::Error> {
        let requests = IntCounterVec::new(
            Opts::new(
                "api_requests_total",
                "Data API requests, by route and status.",
            ),
            &["route", "status"],
        )?;
        let query_seconds = HistogramVec::new(
            HistogramOpts::new(
                "api_query_seconds",
                "Time to run a data API statement on this pod.",
            )
            .buckets(exponential_buckets(0.0005, 4.0, 9)?),
            &["route"],
        )?;
        let misdirected = IntCounter::new(
            "api_misdirected_total",
            "Data API requests for a guild this pod does not own (answered 421).",
        )?;
        let pod_calls = IntCounterVec::new(
            Opts::new(
                "api_pod_calls_total",
                "Calls to other pods for cross-guild reads, by outcome.",
            ),
            &["outcome"],
        )?;
        registry.register(Box::new(requests.clone()))?;
        registry.register(Box::new(query_seconds.clone()))?;
        registry.register(Box::new(misdirected.clone()))?;
        registry.register(Box::new(pod_calls.clone()))?;
        // Every series exists from the start, so rates and alerts see zeros, not gaps.
        for outcome in ["ok", "refused", "unreachable"] {
            pod_calls.with_label_values(&[outcome]);
        }
        for route in ["guild_query", "query"] {
            query_seconds.with_label_values(&[route]);
        }
        Ok(ApiMetrics {
            requests,
            query_seconds,
            misdirected,
            pod_calls,
        })
    }
}
