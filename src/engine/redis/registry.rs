//! The server registry: each live node keeps a key with a TTL (`servers:{id}:alive`, its value
//! the JSON `{"url":"http://…","connections":N,"at":ms}` that `/api/nodes` lists) and its
//! name in `servers:known`, and its STOMP sessions on the contract's session keys. On every
//! heartbeat a node refreshes its key (a missing key means Redis lost it: catch up) and looks
//! for known nodes whose key expired; one survivor, chosen by `SET NX`, hands a dead node's
//! sessions to the node's state owners (the chat's membership announces their LEAVE once) and
//! removes them.
//!
//! A server id is one board. The entry carries a token drawn at random by each process
//! (`instance`), and a node writes its entry only while the key is absent or holds its own
//! token ([`CLAIM`], one atomic script). A second process started with the id of a live node
//! (an entry refreshed within the TTL by another instance) claims on its fresh connection before
//! the link is used, so it never joins: it logs why, says so in `/healthz`, serves its own
//! clients alone and leaves the live node's users untouched; it retries every heartbeat and
//! joins once that entry has expired. So a board restarted after a crash joins again within
//! `registry_ttl_ms`, once its own stale entry has run out.

use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::rc::{Rc, Weak};
use std::time::{Duration, Instant};

use redis::aio::MultiplexedConnection;
use serde::{Deserialize, Serialize};

use super::link::LinkError;
use super::shard::Shard;
use crate::board::clock::now_ms;
use crate::engine::{BrokerEventHandler, LocalBoxFuture, RegistryEntry};
use crate::observability::metrics::Counter;

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
const RELEASE_ENTRY: &str = r"
local v = redis.call('GET', KEYS[1])
if v then
  local ok, e = pcall(cjson.decode, v)
  if ok and type(e) == 'table' and e.instance == ARGV[1] then return redis.call('DEL', KEYS[1]) end
end
return 0
";

/// What the claim script answered.
enum Claimed {
    Ours,
    New,
    HeldBy(String),
}

/// Most boards `nodes` lists (a bound on one answer's size).
const MAX_NODES: usize = 256;

/// A part of the application that keeps state of this node's sessions in Redis (in
/// centrifuge's terms, a presence manager): the registry asks it to write its state back after
/// Redis missed some of it, and to clear what a dead node's session held.
pub trait NodeState {
    /// Brings Redis in line with this node's own truth (and announces, once, what the other
    /// nodes have not heard). Err: something failed; the next catch-up tries again.
    fn catch_up(&self) -> LocalBoxFuture<'_, Result<(), LinkError>>;

    /// A session of a dead node: remove what it held and tell everyone, once (the caller holds
    /// the node's clean-up lock).
    fn session_lost<'a>(
        &'a self,
        server: &'a str,
        session_id: &'a str,
    ) -> LocalBoxFuture<'a, Result<(), LinkError>>;
}

/// Counters of the registry, for `/metrics`.
#[derive(Default)]
pub struct RegistryStats {
    pub catch_ups: Counter,
    pub dead_nodes_cleaned: Counter,
    pub state_write_errors: Counter,
}

/// This node's entry and sessions, and the clean-up of dead nodes.
pub struct Registry {
    shard: Rc<Shard>,
    /// This node's live STOMP sessions: the truth the catch-up writes back.
    sessions: RefCell<HashSet<Rc<str>>>,
    /// Who else keeps state of sessions in Redis (the chat's membership store).
    states: RefCell<Vec<Weak<dyn NodeState>>>,
    /// Known nodes whose registry entry this node found missing, and since when. A node is
    /// only cleaned up once its entry stayed missing for `dead_grace`: after a Redis stall
    /// longer than the TTL every entry has expired, and live nodes need a moment to write
    /// theirs again. Bounded by the known nodes.
    suspects: RefCell<HashMap<String, Instant>>,
    /// The node, for what its entry says (advertised URL, connection count).
    handler: RefCell<Option<Weak<dyn BrokerEventHandler>>>,
    pub stats: RegistryStats,
}

impl Registry {
    pub fn new(shard: Rc<Shard>) -> Registry {
        Registry {
            shard,
            sessions: RefCell::new(HashSet::new()),
            states: RefCell::new(Vec::new()),
            suspects: RefCell::new(HashMap::new()),
            handler: RefCell::new(None),
            stats: RegistryStats::default(),
        }
    }

    pub fn set_handler(&self, handler: Weak<dyn BrokerEventHandler>) {
        *self.handler.borrow_mut() = Some(handler);
    }

    /// This node's registry entry value now.
    fn entry(&self) -> String {
        let handler = self.handler.borrow().as_ref().and_then(Weak::upgrade);
        let (url, connections) = match handler {
            Some(node) => (node.advertise_url().to_string(), node.connection_count() as u64),
            None => (String::new(), 0),
        };
        let instance = self.shard.claim.instance.clone();
        serde_json::to_string(&Entry { url, connections, at: now_ms(), instance }).unwrap_or_default()
    }

    /// The live boards in the registry (known and with an unexpired entry), in server id
    /// order; None when Redis cannot answer now.
    pub async fn registered_nodes(&self) -> Option<Vec<RegistryEntry>> {
        let known_key = self.shard.keys.servers_known();
        let mut known: Vec<String> = self
            .shard
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&known_key).query_async(&mut c).await })
            .await
            .ok()?;
        known.sort();
        known.truncate(MAX_NODES);
        if known.is_empty() {
            return Some(Vec::new());
        }
        let keys: Vec<String> = known.iter().map(|id| self.shard.keys.server_alive(id)).collect();
        let values: Vec<Option<String>> = self
            .shard
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

    pub fn add_state(&self, state: Weak<dyn NodeState>) {
        self.states.borrow_mut().push(state);
    }

    fn states(&self) -> Vec<Rc<dyn NodeState>> {
        self.states.borrow().iter().filter_map(Weak::upgrade).collect()
    }

    /// The claim script, on `connection` (a fresh one the link has not taken into use yet)
    /// or else through the link; bounded by the link's timeout either way.
    async fn run_claim(&self, connection: Option<MultiplexedConnection>) -> Result<Claimed, LinkError> {
        let mut cmd = redis::cmd("EVAL");
        cmd.arg(CLAIM)
            .arg(1)
            .arg(self.shard.keys.server_alive(&self.shard.server_id))
            .arg(self.entry())
            .arg(&self.shard.claim.instance)
            .arg(self.shard.config.registry_ttl_ms);
        let link = &self.shard.link;
        let answer: String = match connection {
            Some(mut c) => match tokio::time::timeout(link.timeout(), cmd.query_async(&mut c)).await {
                Ok(Ok(answer)) => answer,
                Ok(Err(e)) => return Err(LinkError::Redis(e.to_string())),
                Err(_) => return Err(LinkError::Timeout),
            },
            None => link.call(|mut c| async move { cmd.query_async(&mut c).await }).await?,
        };
        Ok(match answer.as_str() {
            "ours" => Claimed::Ours,
            "new" => Claimed::New,
            _ => Claimed::HeldBy(answer),
        })
    }

    /// Claims this node's id on a fresh connection before the link takes it into use: true
    /// when the id is this process's (the node may join), false while another live instance
    /// holds it (logged once, shown in `/healthz`).
    pub async fn claim_id(&self, connection: MultiplexedConnection) -> Result<bool, LinkError> {
        match self.run_claim(Some(connection)).await? {
            Claimed::Ours | Claimed::New => {
                if let Some(holder) = self.shard.claim.held_by.borrow_mut().take() {
                    log::info!(
                        "server id {} is free again (instance {holder} is gone): joining the cluster",
                        self.shard.server_id
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
        let mut held = self.shard.claim.held_by.borrow_mut();
        if held.as_deref() != Some(holder.as_str()) {
            log::error!(
                "server id {} is in use by another live node (instance {holder}): not joining the cluster; \
                 serving this board's clients alone until that node is gone. Give each board its own server_id.",
                self.shard.server_id
            );
        }
        *held = Some(holder);
        drop(held);
        self.shard.link.disconnect();
    }

    /// Why this node stays out of the cluster, for `/healthz`; None while it does not.
    pub fn refusal(&self) -> Option<String> {
        self.shard.claim.held_by.borrow().as_ref().map(|holder| {
            format!("server id {} is in use by another live node (instance {holder})", self.shard.server_id)
        })
    }

    /// Writes this node's registry entry (while the id is this process's).
    async fn register(&self) -> Result<(), LinkError> {
        if let Claimed::HeldBy(holder) = self.run_claim(None).await? {
            self.step_aside(holder);
            return Err(LinkError::Down);
        }
        let known = self.shard.keys.servers_known();
        let id = self.shard.server_id.clone();
        self.shard
            .link
            .call(|mut c| async move { redis::cmd("SADD").arg(&known).arg(&id).query_async::<()>(&mut c).await })
            .await
    }

    /// Writes everything back after Redis missed some of it (a reconnect, a Redis restarted
    /// empty, a failed write): the registry entry, then each state owner's part (while this
    /// node's ended sessions are still listed, so their rooms are found), then the sessions.
    pub async fn catch_up(&self) -> Result<(), LinkError> {
        self.stats.catch_ups.inc();
        self.register().await?;
        let mut result = Ok(());
        for state in self.states() {
            if let Err(e) = state.catch_up().await {
                result = Err(e);
            }
        }
        result?;
        let server_sessions = self.shard.keys.server_sessions(&self.shard.server_id);
        let in_redis: Vec<String> = self
            .shard
            .link
            .call(
                |mut c| async move { redis::cmd("SMEMBERS").arg(&server_sessions).query_async(&mut c).await },
            )
            .await?;
        let live: Vec<Rc<str>> = self.sessions.borrow().iter().cloned().collect();
        for sid in in_redis.iter().filter(|sid| !live.iter().any(|l| &**l == sid.as_str())) {
            self.remove_session(&self.shard.server_id, sid).await?;
        }
        for sid in &live {
            self.write_session(sid).await?;
        }
        log::info!("cluster state written back to redis ({} sessions)", live.len());
        Ok(())
    }

    /// Refreshes the registry entry and cleans up dead nodes. Err(()) when the entry was gone
    /// (Redis lost it): the caller catches up.
    pub async fn heartbeat(&self) -> Result<(), ()> {
        match self.run_claim(None).await {
            Ok(Claimed::Ours) => {}
            Ok(Claimed::New) => {
                log::warn!(
                    "this node's registry entry was gone (Redis restarted or flushed?): writing state back"
                );
                return Err(());
            }
            Ok(Claimed::HeldBy(holder)) => {
                self.step_aside(holder);
                return Ok(());
            }
            Err(_) => return Ok(()),
        }
        self.clean_dead_nodes().await;
        Ok(())
    }

    async fn clean_dead_nodes(&self) {
        let known_key = self.shard.keys.servers_known();
        let Ok(known) = self
            .shard
            .link
            .call(|mut c| async move {
                redis::cmd("SMEMBERS").arg(&known_key).query_async::<Vec<String>>(&mut c).await
            })
            .await
        else {
            return;
        };
        let others: Vec<String> = known.into_iter().filter(|id| *id != self.shard.server_id).collect();
        if others.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for id in &others {
            pipe.exists(self.shard.keys.server_alive(id));
        }
        let Ok(alive) =
            self.shard.link.call(|mut c| async move { pipe.query_async::<Vec<bool>>(&mut c).await }).await
        else {
            return;
        };
        let grace = self.dead_grace();
        let mut dead = Vec::new();
        {
            let mut suspects = self.suspects.borrow_mut();
            suspects.retain(|id, _| others.contains(id));
            for (id, alive) in others.iter().zip(alive) {
                if alive {
                    suspects.remove(id);
                } else if suspects.entry(id.clone()).or_insert_with(Instant::now).elapsed() >= grace {
                    dead.push(id.clone());
                }
            }
        }
        for id in dead {
            self.clean_dead_node(&id).await;
        }
    }

    /// How long a registry entry must stay missing before its node counts as dead: long
    /// enough for a live node to notice a Redis stall or restart and register again (a
    /// heartbeat, a command timeout and a back-off cap).
    fn dead_grace(&self) -> Duration {
        let c = &self.shard.config;
        Duration::from_millis(c.heartbeat_ms + c.command_timeout_ms + c.reconnect_max_ms)
    }

    /// Removes a dead node's sessions, if this node wins the clean-up lock.
    async fn clean_dead_node(&self, dead: &str) {
        let lock = self.shard.keys.server_cleanup(dead);
        let me = self.shard.server_id.clone();
        let hold_ms = self.shard.config.registry_ttl_ms * 2;
        let won: Option<String> = match self
            .shard
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
        let sessions_key = self.shard.keys.server_sessions(dead);
        let sessions: Vec<String> = match self
            .shard
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&sessions_key).query_async(&mut c).await })
            .await
        {
            Ok(s) => s,
            Err(_) => return self.release_cleanup(dead).await,
        };
        log::warn!("node {dead} is gone: removing its {} sessions", sessions.len());
        let states = self.states();
        for sid in &sessions {
            let mut failed = false;
            for state in &states {
                failed |= state.session_lost(dead, sid).await.is_err();
            }
            // What is done stays done (each removal is atomic); the next heartbeat of some
            // survivor picks up the rest.
            if failed || self.remove_session(dead, sid).await.is_err() {
                return self.release_cleanup(dead).await;
            }
        }
        let sessions_key = self.shard.keys.server_sessions(dead);
        let known = self.shard.keys.servers_known();
        let dead_id = dead.to_string();
        let mut pipe = redis::pipe();
        pipe.atomic().del(&sessions_key).ignore().srem(&known, &dead_id).ignore();
        if self.shard.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await.is_ok() {
            self.stats.dead_nodes_cleaned.inc();
            self.suspects.borrow_mut().remove(dead);
        }
    }

    /// Gives up the clean-up lock of `dead` if this node holds it, so a retry need not wait.
    async fn release_cleanup(&self, dead: &str) {
        const RELEASE: &str =
            "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0";
        let lock = self.shard.keys.server_cleanup(dead);
        let me = self.shard.server_id.clone();
        let _ = self
            .shard
            .link
            .call(|mut c| async move {
                redis::cmd("EVAL").arg(RELEASE).arg(1).arg(&lock).arg(&me).query_async::<i64>(&mut c).await
            })
            .await;
    }

    /// Removes one session's keys (its room is the state owners' business).
    async fn remove_session(&self, server: &str, sid: &str) -> Result<(), LinkError> {
        let k = &self.shard.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(k.session(sid))
            .del(k.current_room(sid))
            .srem(k.sessions_active(), sid)
            .srem(k.server_sessions(server), sid)
            .ignore();
        self.shard.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Writes one live session's keys (atomically).
    async fn write_session(&self, sid: &str) -> Result<(), LinkError> {
        let k = &self.shard.keys;
        let server = self.shard.server_id.as_str();
        let mut pipe = redis::pipe();
        pipe.atomic()
            .hset_multiple(k.session(sid), &[("server", server), ("connectedAt", &now_ms().to_string())])
            .sadd(k.sessions_active(), sid)
            .sadd(k.server_sessions(server), sid)
            .ignore();
        self.shard.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await
    }

    /// Publishes a small JSON on the session connect/disconnect channels of the seed.
    fn session_event(self: &Rc<Self>, channel: String, sid: &str) {
        if !self.shard.link.is_up() {
            return;
        }
        let payload =
            serde_json::json!({"sessionId": sid, "serverId": self.shard.server_id, "timestamp": now_ms()})
                .to_string();
        let me = self.clone();
        tokio::task::spawn_local(async move {
            let _ = me
                .shard
                .link
                .call(|mut c| async move {
                    redis::cmd("PUBLISH").arg(&channel).arg(&payload).query_async::<()>(&mut c).await
                })
                .await;
        });
    }

    /// A STOMP session began on this node: written to Redis now, or by the next catch-up.
    pub fn session_started(self: &Rc<Self>, session_id: &Rc<str>) {
        self.sessions.borrow_mut().insert(session_id.clone());
        self.session_event(self.shard.keys.session_connect_channel(), session_id);
        if !self.shard.in_sync() {
            self.shard.sync.mark_stale();
            return;
        }
        let (me, sid) = (self.clone(), session_id.clone());
        tokio::task::spawn_local(async move {
            if me.write_session(&sid).await.is_err() {
                me.stats.state_write_errors.inc();
                me.shard.sync.mark_stale();
            }
        });
    }

    /// A STOMP session of this node ended (its room was left by the chat before): its keys go
    /// now, or at the next catch-up.
    pub fn session_ended(self: &Rc<Self>, session_id: &Rc<str>) {
        self.sessions.borrow_mut().remove(session_id);
        self.session_event(self.shard.keys.session_disconnect_channel(), session_id);
        if !self.shard.in_sync() {
            self.shard.sync.mark_stale();
            return;
        }
        let (me, sid) = (self.clone(), session_id.clone());
        tokio::task::spawn_local(async move {
            let server = me.shard.server_id.clone();
            if me.remove_session(&server, &sid).await.is_err() {
                me.stats.state_write_errors.inc();
                me.shard.sync.mark_stale();
            }
        });
    }

    /// Graceful shutdown: removes this node's sessions (their rooms were left by the chat
    /// already) and its registry entry.
    pub async fn deregister(&self) {
        if !self.shard.link.is_up() {
            return;
        }
        let sessions_key = self.shard.keys.server_sessions(&self.shard.server_id);
        let sessions: Vec<String> = self
            .shard
            .link
            .call(|mut c| async move { redis::cmd("SMEMBERS").arg(&sessions_key).query_async(&mut c).await })
            .await
            .unwrap_or_default();
        let server = self.shard.server_id.clone();
        for sid in &sessions {
            for state in self.states() {
                let _ = state.session_lost(&server, sid).await;
            }
            let _ = self.remove_session(&server, sid).await;
        }
        let k = &self.shard.keys;
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("EVAL")
            .arg(RELEASE_ENTRY)
            .arg(1)
            .arg(k.server_alive(&server))
            .arg(&self.shard.claim.instance)
            .ignore()
            .del(k.server_sessions(&server))
            .srem(k.servers_known(), &server)
            .ignore();
        match self.shard.link.call(|mut c| async move { pipe.query_async::<()>(&mut c).await }).await {
            Ok(()) => log::info!("deregistered from the cluster"),
            Err(e) => log::warn!("could not deregister from the cluster: {e}"),
        }
    }
}
