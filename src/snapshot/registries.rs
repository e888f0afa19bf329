//! State that outlives snapshots.

use crate::cache::Caches;
use crate::dns::NameRegistry;
use crate::keys::KeyRegistry;
use crate::limits::LimiterRegistry;
use crate::peer::PeerRegistry;
use crate::shared::SharedTiers;
use crate::trace::export::Exporters;
use crate::upstream::TlsClients;

/// State that outlives snapshots: peers, the address sets behind named peers, API keys, limiters
/// (with the routes' retry budgets), caches, the clusters' TLS clients, the shared tier and the
/// trace exporter (by endpoint). A snapshot takes what it needs from here when it is built, so a
/// reload keeps what was learned.
#[derive(Default)]
pub struct Registries {
    pub peers: PeerRegistry,
    pub names: NameRegistry,
    pub keys: KeyRegistry,
    pub limiters: LimiterRegistry,
    pub caches: Caches,
    pub tls: TlsClients,
    pub shared: SharedTiers,
    pub exporters: Exporters,
}
