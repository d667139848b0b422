//! The ownership a pod starts under (what the database committed, or its settings on a
//! fresh database), whether its settings are stale against it, and the gauges that show it.

use super::config::PipelineConfig;
use crate::domain::rescale::ownership::{Layout, Ownership};
use crate::metrics::Metrics;
use crate::storage::database::StoreError;
use crate::storage::rescale::handoff;

/// The ownership persisted in the database, or (first start) the configured one, persisted
/// now. With md5 the Discord shard count moves no guild, so a configured count (or
/// `DISCORD_SHARDS=auto`'s recommendation) replaces the committed one while no rescale runs.
pub(super) fn committed_ownership(
    conn: &rusqlite::Connection,
    config: &PipelineConfig,
) -> Result<Ownership, StoreError> {
    let configured = Layout::of(&config.sharding);
    let ownership = match handoff::load(conn, config.sharding.ordinal)? {
        Some(mut ownership) => {
            let md5 = crate::domain::partition::Strategy::Md5;
            if ownership.next.is_none()
                && ownership.layout.strategy == md5
                && configured.strategy == md5
                && ownership.layout.pods == configured.pods
                && ownership.layout.shards != configured.shards
            {
                ownership.layout.shards = configured.shards;
                handoff::save(conn, &ownership)?;
            }
            ownership
        }
        None => {
            let ownership = Ownership::initial(&config.sharding);
            handoff::save(conn, &ownership)?;
            ownership
        }
    };
    Ok(ownership)
}

/// How the settings (`configured`) differ from the committed ownership, if the pod started
/// with them against another ownership: a pod restarted with a stale NUM_GATEWAY_PODS. A pod
/// whose settings were right when it started and that ran through a rescale is not flagged
/// (its settings cannot change without a restart; the ConfigMap's are what matter next).
pub(super) fn stale_config(
    ownership: &Ownership,
    configured: Layout,
    started_under: Layout,
) -> Option<String> {
    (ownership.layout != configured && started_under != configured).then(|| {
        format!(
            "the settings say {configured}, the committed ownership (epoch {}) says {}: the pod follows the committed ownership; set NUM_GATEWAY_PODS, SHARD_STRATEGY and DISCORD_SHARDS to match",
            ownership.epoch, ownership.layout
        )
    })
}

/// The ownership gauges.
pub(super) fn publish(
    metrics: &Metrics,
    ownership: &Ownership,
    configured: Layout,
    started_under: Layout,
) {
    metrics.config_stale.set(i64::from(
        stale_config(ownership, configured, started_under).is_some(),
    ));
    metrics.epoch.set(ownership.epoch as i64);
    metrics.pods.set(i64::from(ownership.layout.pods));
    let phase = match ownership.next {
        None => 0,
        Some(t) if t.live => 3,
        Some(t) if t.frozen => 2,
        Some(_) => 1,
    };
    metrics.rescale_phase.set(phase);
}
