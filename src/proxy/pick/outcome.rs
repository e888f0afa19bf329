//! What a pick gives the try loop: where the try goes ([`Admitted`]), why none could start
//! ([`Refusal`]), and what the loop asks of it ([`Ask`]).

use super::super::verdict::Ticket;
use crate::limits::Reservation;
use crate::peer::InflightGuard;
use std::time::Duration;

/// Where a try goes.
pub struct Admitted<'a> {
    pub cluster: usize,
    pub peer: usize,
    /// Index of the API key in the cluster's pool, if it has one.
    pub key: Option<usize>,
    pub ticket: Ticket<'a>,
    /// The try's place among the peer's requests in flight.
    pub inflight: InflightGuard,
    /// The tokens taken from the cluster's token budget for this try, if it has one.
    pub reservation: Option<Reservation>,
}

/// Why no try could be started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No usable peer (or key) left.
    NoPeer,
    /// Every candidate cluster is over its request budget; free again after this long.
    OverBudget {
        cluster: usize,
        retry_after: Duration,
    },
    /// Every candidate peer is at `max_inflight`, and the queue is full or the wait timed out.
    Busy { cluster: usize },
    /// A candidate cluster's shared budget could not be decided (`shared.on_error: deny`), and
    /// no other cluster could take the request.
    Unavailable { cluster: usize },
}

/// What the try loop asks of a pick.
#[derive(Debug, Clone, Copy, Default)]
pub struct Ask {
    /// This is the last try the route allows.
    pub last_try: bool,
    /// A hedge: never wait, never go back to a peer already tried.
    pub hedge: bool,
}
