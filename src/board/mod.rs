//! Life on a Raspberry-Pi-class board: systemd readiness, watchdog and reload notifications
//! (`edge`), the process's memory budget every client-made buffer is charged to (`memory`),
//! what the tick asks of the allocator so freed memory goes back (`reclaim`), epoch
//! milliseconds (`clock`), and the URL this board is reached at (`advertise`).

pub(crate) mod advertise;
pub(crate) mod clock;
pub mod edge;
pub(crate) mod memory;
pub(crate) mod reclaim;
