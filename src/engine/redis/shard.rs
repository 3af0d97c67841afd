//! One Redis as the parts of the cluster engine share it (centrifuge's `redis_shard.go`): the
//! command link, the key and channel names, this node's id and its catch-up state. The relay,
//! the registry and the membership store each own their own fields and meet only here.

use std::time::Duration;

use std::cell::RefCell;

use super::keys::Keys;
use super::link::Link;
use super::sync::CatchUp;
use crate::config::{ClusterConfig, Config};

pub struct Shard {
    pub link: Link,
    pub keys: Keys,
    pub server_id: String,
    pub config: ClusterConfig,
    /// Whether Redis holds all of this node's state; see `sync`.
    pub sync: CatchUp,
    /// This process's start (ms): the envelope epoch, so a restarted node numbers afresh.
    pub epoch: u64,
    /// This process's hold on `server_id` (see `registry`): while another live process holds
    /// it, this node stays out of the cluster.
    pub claim: Claim,
}

impl Shard {
    /// The shard of a cluster-mode config (`redis_url` set). Does not connect.
    pub fn new(config: &Config) -> Result<Shard, String> {
        let url = config.redis_url.as_deref().ok_or("cluster mode needs redis_url")?;
        let cluster = config.cluster.clone();
        let ca = match config.tls.redis_ca_file.as_str() {
            "" => None,
            path => Some(std::rc::Rc::from(crate::tls::read_ca_file(path)?)),
        };
        let link = Link::new(url, Duration::from_millis(cluster.command_timeout_ms), ca)?
            .sentinel_auth(&cluster.sentinel_username, &cluster.sentinel_password)?;
        Ok(Shard {
            link,
            keys: Keys::new(&cluster.key_prefix),
            server_id: config.server_id.clone(),
            config: cluster,
            sync: CatchUp::default(),
            epoch: crate::board::clock::now_ms(),
            claim: Claim::new(),
        })
    }

    /// Whether changes may go to Redis now (linked and caught up).
    pub fn in_sync(&self) -> bool {
        self.link.is_up() && self.sync.in_sync()
    }

    /// How long announcements that follow a catch-up wait: nodes that lost Redis with this one
    /// need one back-off cap and a heartbeat to listen again.
    pub fn announce_delay(&self) -> Duration {
        Duration::from_millis(self.config.reconnect_max_ms + self.config.heartbeat_ms)
    }
}

/// This process's hold on its server id (kept in the `Shard`, which the relay reads too).
pub struct Claim {
    /// Drawn at random per process: tells this process's entry from another's with the id.
    pub(super) instance: String,
    /// The other live instance holding this node's id, while one does.
    pub(super) held_by: RefCell<Option<String>>,
}

impl Claim {
    pub fn new() -> Claim {
        let a = super::connect::jitter_seed();
        let b = super::connect::jitter_seed().rotate_left(17) ^ u64::from(std::process::id());
        Claim { instance: format!("{a:016x}{b:016x}"), held_by: RefCell::new(None) }
    }

    /// Whether another live process holds this node's id (the node then stays out).
    pub fn is_held(&self) -> bool {
        self.held_by.borrow().is_some()
    }
}
