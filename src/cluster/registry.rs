//! The server registry: each live node keeps a key with a TTL (`servers:{id}:alive`, its value
//! the JSON `{"url":"http://…","connections":N,"at":ms}` that `/api/nodes` lists) and its
//! name in `servers:known`. On every heartbeat a node refreshes its key (a missing key means
//! Redis lost it: resync) and looks for known nodes whose key expired; one survivor, chosen by
//! `SET NX`, removes a dead node's sessions and members and announces their LEAVE once.

use serde::{Deserialize, Serialize};

use super::link::LinkError;
use super::RedisEngine;
use crate::engine::RegistryEntry;

/// The value of a registry entry: what other boards learn about this one at each heartbeat.
#[derive(Serialize, Deserialize)]
struct Entry {
    /// The advertised URL (`cluster.advertise_url`).
    url: String,
    /// Open STOMP connections at the last heartbeat.
    connections: u64,
    /// When it was written, epoch ms.
    at: u64,
}

/// Most boards `nodes` lists (a bound on one answer's size).
const MAX_NODES: usize = 256;

impl RedisEngine {
    /// This node's registry entry value now.
    fn entry(&self) -> String {
        let (url, connections) = match self.node() {
            Some(node) => (node.advertise_url().to_string(), node.connection_count() as u64),
            None => (String::new(), 0),
        };
        let entry = Entry { url, connections, at: crate::chat::room::now_ms() };
        serde_json::to_string(&entry).unwrap_or_default()
    }

    /// The live boards in the registry (known and with an unexpired entry), in server id
    /// order; None when Redis cannot answer now.
    pub(super) async fn registered_nodes(&self) -> Option<Vec<RegistryEntry>> {
        let known_key = self.keys.servers_known();
        let mut known: Vec<String> = self
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&known_key).query_async(&mut c).await })
            .await
            .ok()?;
        known.sort();
        known.truncate(MAX_NODES);
        if known.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = known.iter().map(|id| self.keys.server_alive(id)).collect();
        let values: Vec<Option<String>> = self
            .link
            .call(|mut c| async move { redis::cmd("MGET").arg(&keys).query_async(&mut c).await })
            .await
            .ok()?;
        Some(
            known
                .into_iter()
                .zip(values)
                .filter_map(|(server_id, value)| {
                    // An entry of an older version (a bare timestamp) still counts as alive.
                    let entry = serde_json::from_str::<Entry>(&value?).ok();
                    Some(RegistryEntry {
                        server_id,
                        url: entry.as_ref().map(|e| e.url.clone()).unwrap_or_default(),
                        connections: entry.map_or(0, |e| e.connections),
                    })
                })
                .collect(),
        )
    }

    /// Writes this node's registry entry.
    pub(super) async fn register(&self) -> Result<(), LinkError> {
        let alive = self.keys.server_alive(&self.server_id);
        let known = self.keys.servers_known();
        let ttl = self.config.registry_ttl_ms;
        let id = self.server_id.clone();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("SET")
            .arg(&alive)
            .arg(self.entry())
            .arg("PX")
            .arg(ttl)
            .ignore()
            .sadd(&known, &id)
            .ignore();
        self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Refreshes the registry entry and cleans up dead nodes.
    pub(super) async fn heartbeat(&self) {
        let alive = self.keys.server_alive(&self.server_id);
        let ttl = self.config.registry_ttl_ms;
        let entry = self.entry();
        // XX: only refresh an entry that is still there; a missing one means Redis lost it.
        let refreshed: Result<Option<String>, _> = self
            .link
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&alive)
                    .arg(&entry)
                    .arg("PX")
                    .arg(ttl)
                    .arg("XX")
                    .query_async(&mut c)
                    .await
            })
            .await;
        match refreshed {
            Ok(Some(_)) => {}
            Ok(None) => {
                log::warn!(
                    "this node's registry entry was gone (Redis restarted or flushed?): writing state back"
                );
                self.needs_resync.set(true);
                self.resync().await;
            }
            Err(_) => return,
        }
        self.clean_dead_nodes().await;
    }

    async fn clean_dead_nodes(&self) {
        let known_key = self.keys.servers_known();
        let known: Vec<String> = match self
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&known_key).query_async(&mut c).await })
            .await
        {
            Ok(k) => k,
            Err(_) => return,
        };
        let others: Vec<String> = known.into_iter().filter(|id| *id != self.server_id).collect();
        if others.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for id in &others {
            pipe.exists(self.keys.server_alive(id));
        }
        let alive: Vec<bool> =
            match self.link.call(|mut c| async move { pipe.query_async(&mut c).await }).await {
                Ok(a) => a,
                Err(_) => return,
            };
        for (id, alive) in others.iter().zip(alive) {
            if !alive {
                self.clean_dead_node(id).await;
            }
        }
    }

    /// Removes a dead node's sessions, if this node wins the clean-up lock.
    async fn clean_dead_node(&self, dead: &str) {
        let lock = self.keys.server_cleanup(dead);
        let me = self.server_id.clone();
        let hold_ms = self.config.registry_ttl_ms * 2;
        let won: Option<String> = match self
            .link
            .call(|mut c| async move {
                redis::cmd("SET")
                    .arg(&lock)
                    .arg(&me)
                    .arg("NX")
                    .arg("PX")
                    .arg(hold_ms)
                    .query_async(&mut c)
                    .await
            })
            .await
        {
            Ok(w) => w,
            Err(_) => return,
        };
        if won.is_none() {
            return; // another survivor is on it
        }
        let sessions_key = self.keys.server_sessions(dead);
        let sessions: Vec<String> = match self
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&sessions_key).query_async(&mut c).await })
            .await
        {
            Ok(s) => s,
            Err(_) => return self.release_cleanup(dead).await,
        };
        log::warn!("node {dead} is gone: removing its {} sessions", sessions.len());
        for sid in &sessions {
            if self.remove_session(dead, sid, true).await.is_err() {
                // What is done stays done (each removal is atomic); the next heartbeat of
                // some survivor picks up the rest.
                return self.release_cleanup(dead).await;
            }
        }
        let sessions_key = self.keys.server_sessions(dead);
        let known = self.keys.servers_known();
        let dead_id = dead.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&sessions_key).ignore().srem(&known, &dead_id).ignore();
        if self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await.is_ok() {
            self.stats.dead_nodes_cleaned.inc();
        }
    }

    /// Gives up the clean-up lock of `dead` if this node holds it, so a retry need not wait.
    async fn release_cleanup(&self, dead: &str) {
        const RELEASE: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        let lock = self.keys.server_cleanup(dead);
        let me = self.server_id.clone();
        let _ = self
            .link
            .call(|mut c| async move {
                redis::cmd("EVAL").arg(RELEASE).arg(1).arg(&lock).arg(&me).query_async::<i64>(&mut c).await
            })
            .await;
    }

    /// Graceful shutdown: removes this node's sessions (their rooms were left by the chat
    /// app already) and its registry entry.
    pub(super) async fn deregister(&self) {
        if !self.link.is_up() {
            return;
        }
        let sessions_key = self.keys.server_sessions(&self.server_id);
        let sessions: Vec<String> = self
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&sessions_key).query_async(&mut c).await })
            .await
            .unwrap_or_default();
        for sid in &sessions {
            let _ = self.remove_session(&self.server_id.clone(), sid, true).await;
        }
        let k = &self.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(k.server_alive(&self.server_id))
            .del(k.server_sessions(&self.server_id))
            .srem(k.servers_known(), &self.server_id)
            .ignore();
        match self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await {
            Ok(()) => log::info!("deregistered from the cluster"),
            Err(e) => log::warn!("could not deregister from the cluster: {e}"),
        }
    }
}
