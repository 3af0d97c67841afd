//! What the boards of a cluster tell people and scripts about themselves: `GET /api/nodes`
//! (the live boards, each with its advertised URL) in `nodes`.

pub mod nodes;
