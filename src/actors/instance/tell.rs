//! How the instance actor posts its Events: each told once, by the fact it names.

use tracing::info;

use super::InstanceArgs;
use crate::actors::metrics::MetricsMsg;
use crate::crd::RedisInstance;

/// Posts `event` on the instance.
pub(super) async fn tell(
    args: &InstanceArgs,
    instance: &RedisInstance,
    event: &crate::decide::Notice,
) {
    args.api.tell(instance, event.told());
}

/// Something the operator owns was changed by hand and has been put back: counted, logged,
/// and told with the drift's Event.
pub(super) async fn drift_repaired(
    args: &InstanceArgs,
    instance: &RedisInstance,
    drift: &crate::decide::Drift,
) {
    let key = &args.key;
    let kind = drift.kind;
    let _ = args.metrics.send_message(MetricsMsg::DriftRepaired {
        key: key.clone(),
        kind,
    });
    info!(kind, "drift repaired");
    tell(args, instance, &drift.event).await;
}

/// A refused config, by validation or by Redis itself: counted, and told with `event`, which
/// names what was refused, so it is told once whoever tells it.
pub(super) async fn report_refusal(
    args: &InstanceArgs,
    instance: &RedisInstance,
    event: &crate::decide::Notice,
) {
    let key = args.key.clone();
    let _ = args.metrics.send_message(MetricsMsg::InvalidConfig(key));
    tell(args, instance, event).await;
}
