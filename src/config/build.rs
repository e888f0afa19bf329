//! The top of `FileConfig -> Config`: each part of the document goes to its builder
//! ([`super::process`], [`super::cluster`], [`super::route`]); what takes more than one part
//! (an admin address that is also a listener, routes naming clusters, route names) is checked
//! here.

use super::check::{err, Result};
use super::file::FileConfig;
use super::types::Config;
use super::{cluster, process, route, shared, upstream};
use std::collections::HashSet;

/// Check the whole document and build the runtime config from it.
pub(super) fn build(f: FileConfig) -> Result<Config> {
    let server = process::server(&f.server)?;
    let listeners = process::listeners(&f.listeners)?;
    let admin = process::admin(f.admin.as_ref())?;
    if listeners.iter().any(|l| l.addr == admin.addr) {
        return err("admin.addr", format!("{} is also a listener", admin.addr));
    }

    if f.clusters.is_empty() {
        return err("clusters", "at least one cluster is required");
    }
    let mut clusters = Vec::new();
    for (name, c) in &f.clusters {
        clusters.push(cluster::cluster(name, c)?);
    }

    if f.routes.is_empty() {
        return err("routes", "at least one route is required");
    }
    let mut names = HashSet::new();
    let mut routes = Vec::new();
    for (i, r) in f.routes.iter().enumerate() {
        let route = route::route(&format!("routes[{i}]"), r, &clusters)?;
        if !names.insert(route.name.clone()) {
            return err(
                format!("routes[{i}].name"),
                format!("duplicate route name {:?}", route.name),
            );
        }
        routes.push(route);
    }

    let mut cfg = Config {
        server,
        listeners,
        admin,
        clusters,
        routes,
        limits: process::limits(&f.limits)?,
        access_log: process::access_log(f.access_log.as_ref())?,
        resolver: upstream::resolver(f.resolver.as_ref())?,
        trusted_proxies: process::trusted_proxies(&f.trusted_proxies)?,
        tracing: process::tracing(f.tracing.as_ref())?,
        shared: shared::shared(f.shared.as_ref())?,
    };
    shared::localize(&f, &mut cfg)?;
    Ok(cfg)
}
