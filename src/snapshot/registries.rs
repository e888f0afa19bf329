//! State that outlives snapshots.

use crate::cache::Caches;
use crate::keys::KeyRegistry;
use crate::limits::LimiterRegistry;
use crate::peer::PeerRegistry;

/// State that outlives snapshots: peers, API keys, limiters (with the routes' retry budgets) and
/// caches. A snapshot takes what it needs from here when it is built, so a reload keeps what was
/// learned.
#[derive(Default)]
pub struct Registries {
    pub peers: PeerRegistry,
    pub keys: KeyRegistry,
    pub limiters: LimiterRegistry,
    pub caches: Caches,
}
