//! What the board tells about itself: the Prometheus counters of `/metrics` (`metrics`) and the
//! cluster's status pages and APIs (`status`: `/api/nodes`, `/api/status`, `/status`).

pub(crate) mod metrics;
pub(crate) mod status;
