//! The server registry: each live node keeps a key with a TTL (`servers:{id}:alive`, its value
//! the JSON `{"url":"http://…","connections":N,"at":ms}` that `/api/nodes` lists) and its
//! name in `servers:known`. On every heartbeat a node refreshes its key (a missing key means
//! Redis lost it: resync) and looks for known nodes whose key expired; one survivor, chosen by
//! `SET NX`, removes a dead node's sessions and members and announces their LEAVE once.
//!
//! A server id is one board. The entry carries a token drawn at random by each process
//! (`instance`), and a node writes its entry only while the key is absent or holds its own
//! token ([`CLAIM`], one atomic script). A second process started with the id of a live node
//! (an entry refreshed within the TTL by another instance) does not join: it logs why, says so
//! in `/healthz`, serves its own clients alone and leaves the live node's users untouched; it
//! retries every heartbeat, and joins once that entry has expired. So a board restarted after a
//! crash joins again within `registry_ttl_ms`, once its own stale entry has run out.

use std::cell::RefCell;

use redis::aio::MultiplexedConnection;
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
    /// The writing process's token (see the module doc); empty in entries of older versions.
    #[serde(default)]
    instance: String,
}

/// Writes the entry `ARGV[1]` with TTL `ARGV[3]` ms unless another instance than `ARGV[2]`
/// holds the key. Returns `"ours"` (refreshed), `"new"` (the key was absent) or the holder's
/// instance token (`"?"` for an entry without one).
const CLAIM: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  local holder = '?'
  if ok and type(e) == 'table' and type(e.instance) == 'string' and e.instance ~= '' then
    holder = e.instance
  end
  if holder ~= ARGV[2] then return holder end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
if v then return 'ours' end
return 'new'
";

/// Deletes the entry `KEYS[1]` only if it holds the instance token `ARGV[1]`.
const RELEASE: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' and e.instance == ARGV[1] then return redis.call('DEL', KEYS[1]) end
end
return 0
";

/// This process's hold on its server id.
pub(super) struct Claim {
    /// Drawn at random per process: tells this process's entry from another's with the id.
    instance: String,
    /// The other live instance holding this node's id, while one does.
    held_by: RefCell<Option<String>>,
}

impl Claim {
    pub(super) fn new() -> Claim {
        let a = super::link::jitter_seed();
        let b = super::link::jitter_seed().rotate_left(17) ^ u64::from(std::process::id());
        Claim { instance: format!("{a:016x}{b:016x}"), held_by: RefCell::new(None) }
    }

    /// Whether another live process holds this node's id (the node then stays out).
    pub(super) fn is_held(&self) -> bool {
        self.held_by.borrow().is_some()
    }
}

/// What the claim script answered.
enum Claimed {
    Ours,
    New,
    HeldBy(String),
}

impl Claimed {
    fn from(answer: String) -> Claimed {
        match answer.as_str() {
            "ours" => Claimed::Ours,
            "new" => Claimed::New,
            _ => Claimed::HeldBy(answer),
        }
    }
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
        let entry = Entry {
            url,
            connections,
            at: crate::chat::room::now_ms(),
            instance: self.claim.instance.clone(),
        };
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

    /// The claim script, on `connection` (a fresh one the link has not taken into use yet)
    /// or else through the link; bounded by the link's timeout either way.
    async fn run_claim(&self, connection: Option<MultiplexedConnection>) -> Result<Claimed, LinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(1)
            .arg(self.keys.server_alive(&self.server_id))
            .arg(self.entry())
            .arg(&self.claim.instance)
            .arg(self.config.registry_ttl_ms);
        let answer: String = match connection {
            Some(mut c) => match tokio::time::timeout(self.link.timeout(), cmd.query_async(&mut c)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err(LinkError::Redis(e.to_string())),
                Err(_) => return Err(LinkError::Timeout),
            },
            None => self.link.call(|mut c| async move { cmd.query_async(&mut c).await }).await?,
        };
        Ok(Claimed::from(answer))
    }

    /// Claims this node's id on a fresh connection before the link takes it into use: true
    /// when the id is this process's (the node may join), false while another live instance
    /// holds it (logged once, shown in `/healthz`).
    pub(super) async fn claim_id(&self, connection: MultiplexedConnection) -> Result<bool, LinkError> {
        match self.run_claim(Some(connection)).await? {
            Claimed::Ours | Claimed::New => {
                if let Some(holder) = self.claim.held_by.borrow_mut().take() {
                    log::info!(
                        "server id {} is free again (instance {holder} is gone): joining the cluster",
                        self.server_id
                    );
                }
                Ok(true)
            }
            Claimed::HeldBy(holder) => {
                self.step_aside(holder);
                Ok(false)
            }
        }
    }

    /// Another live instance holds this node's id: stay out of the cluster (drop the link, so
    /// nothing of this node reaches Redis) and say so once.
    fn step_aside(&self, holder: String) {
        let mut held = self.claim.held_by.borrow_mut();
        if held.as_deref() != Some(holder.as_str()) {
            log::error!(
                "server id {} is in use by another live node (instance {holder}): not joining the cluster; \
                 serving this board's clients alone until that node is gone. Give each board its own server_id.",
                self.server_id
            );
        }
        *held = Some(holder);
        drop(held);
        self.link.disconnect();
    }

    /// The reason this node stays out of the cluster, for `/healthz`.
    pub(super) fn refusal(&self) -> Option<String> {
        self.claim.held_by.borrow().as_ref().map(|holder| {
            format!("server id {} is in use by another live node (instance {holder})", self.server_id)
        })
    }

    /// Writes this node's registry entry (if the id is still this process's).
    pub(super) async fn register(&self) -> Result<(), LinkError> {
        let known = self.keys.servers_known();
        let id = self.server_id.clone();
        if let Claimed::HeldBy(holder) = self.run_claim(None).await? {
            self.step_aside(holder);
            return Err(LinkError::Down);
        }
        self.link.call(|mut c| async move { redis::cmd("SADD").arg(&known).arg(&id).query_async::<()>(&mut c).await }).await
    }

    /// Refreshes the registry entry and cleans up dead nodes.
    pub(super) async fn heartbeat(&self) {
        match self.run_claim(None).await {
            Ok(Claimed::Ours) => {}
            Ok(Claimed::New) => {
                log::warn!(
                    "this node's registry entry was gone (Redis restarted or flushed?): writing state back"
                );
                self.needs_resync.set(true);
                self.resync().await;
            }
            Ok(Claimed::HeldBy(holder)) => return self.step_aside(holder),
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
            .cmd("EVAL")
            .arg(RELEASE)
            .arg(1)
            .arg(k.server_alive(&self.server_id))
            .arg(&self.claim.instance)
            .ignore()
            .del(k.server_sessions(&self.server_id))
            .srem(k.servers_known(), &self.server_id)
            .ignore();
        match self.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await {
            Ok(()) => log::info!("deregistered from the cluster"),
            Err(e) => log::warn!("could not deregister from the cluster: {e}"),
        }
    }
}
