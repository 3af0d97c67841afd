//! `GET /api/nodes`: the live boards of the cluster, this one first, each with the URL it
//! advertises, so browsers can fail over and the `/status` page can reach every board.
//! In local mode, or while Redis is away, the list is this board alone.

use serde::Serialize;

use crate::node::Node;

/// One board in `/api/nodes`:
/// `{"serverId":"b1","url":"http://10.0.0.7:8080","self":true,"alive":true,"connections":3}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct NodeInfo {
    pub server_id: String,
    pub url: String,
    /// Whether this entry is the board that answered.
    #[serde(rename = "self")]
    pub is_self: bool,
    /// Whether its registry entry is unexpired (always true for listed boards: a board whose
    /// entry expired is dropped from the list and cleaned up by a survivor).
    pub alive: bool,
    /// Open STOMP connections: live for this board, as of its last heartbeat for the others.
    pub connections: u64,
}

/// The live boards, this one first, then the others in server id order.
pub async fn list(node: &Node) -> Vec<NodeInfo> {
    let me = node.server_id();
    let mut out = vec![NodeInfo {
        server_id: me.clone(),
        url: node.advertise_url().to_string(),
        is_self: true,
        alive: true,
        connections: node.connection_count() as u64,
    }];
    if let Some(entries) = node.broker.nodes().await {
        out.extend(entries.into_iter().filter(|e| e.server_id != me).map(|e| NodeInfo {
            server_id: e.server_id,
            url: e.url,
            is_self: false,
            alive: true,
            connections: e.connections,
        }));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::rc::Rc;

    use super::*;
    use crate::config::Config;
    use crate::engine::memory::MemoryBroker;

    #[test]
    fn local_mode_lists_this_board_alone() {
        let mut config = Config::embedded();
        config.server_id = "b1".into();
        let node = Rc::new(Node::new(config, Rc::new(MemoryBroker)));
        node.set_advertise_url("http://10.0.0.7:8080");
        let _conn = node.register_connection().unwrap();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let list = rt.block_on(list(&node));
        assert_eq!(
            list,
            vec![NodeInfo {
                server_id: "b1".into(),
                url: "http://10.0.0.7:8080".into(),
                is_self: true,
                alive: true,
                connections: 1
            }]
        );
        let json = serde_json::to_string(&list).unwrap();
        assert_eq!(
            json,
            r#"[{"serverId":"b1","url":"http://10.0.0.7:8080","self":true,"alive":true,"connections":1}]"#
        );
    }
}
