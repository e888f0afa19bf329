//! Per-request hot path, without sockets: what switchyard spends choosing where a request goes.
//! `route_split_pick` = route match + split pick + peer pick (round robin, 3 peers);
//! `breaker_admit_record` = a breaker admission and a recorded success (the per-try bookkeeping);
//! `snapshot_load` = the one `ArcSwap` load a request makes. Read the figures as nanoseconds per
//! request; compare them with the microseconds a proxied request costs end to end (benches/wrk).

use arc_swap::ArcSwap;
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use switchyard::breaker::{Breaker, Outcome};
use switchyard::config;
use switchyard::metrics::Metrics;
use switchyard::snapshot::{Registries, Snapshot};
use tokio::time::Instant;

const CONFIG: &str = r#"
listeners: [ { addr: "127.0.0.1:8080" } ]
clusters:
  primary:
    peers: [ { addr: "127.0.0.1:9001", weight: 2 }, { addr: "127.0.0.1:9002" }, { addr: "127.0.0.1:9003" } ]
  secondary:
    peers: [ { addr: "127.0.0.1:9011" } ]
routes:
  - name: health
    match: { path_prefix: "/health" }
    split: [ { cluster: primary } ]
  - name: chat
    match: { path_prefix: "/v1/", methods: [POST] }
    split: [ { cluster: primary, weight: 90 }, { cluster: secondary, weight: 10 } ]
"#;

fn snapshot() -> Snapshot {
    let cfg = config::parse(CONFIG, "bench").expect("bench config");
    Snapshot::build(
        cfg,
        1,
        String::new(),
        &Registries::default(),
        &Metrics::new(),
    )
}

fn benches(c: &mut Criterion) {
    let snap = snapshot();
    let method = http::Method::POST;
    c.bench_function("route_split_pick", |b| {
        b.iter(|| {
            let now = Instant::now();
            let ri = snap
                .match_route(None, black_box("/v1/chat/completions"), &method)
                .expect("route");
            let route = &snap.routes[ri];
            let ci = route.cfg.split[route.split.pick()].cluster;
            let cluster = &snap.clusters[ci];
            let checked = cluster.checked();
            black_box(cluster.balancer.pick(
                0,
                |pi| cluster.peers[pi].usable(checked, now),
                |pi| cluster.peers[pi].state.inflight() as f64,
            ))
        })
    });

    let breaker = Breaker::new("bench".into(), &snap.clusters[0].cfg.breaker);
    c.bench_function("breaker_admit_record", |b| {
        b.iter(|| {
            let now = Instant::now();
            let adm = breaker.try_acquire(now).expect("closed breaker admits");
            black_box(breaker.record(adm, Outcome::Success, now, || true))
        })
    });

    let swap = ArcSwap::from_pointee(snapshot());
    c.bench_function("snapshot_load", |b| b.iter(|| black_box(swap.load_full())));
}

criterion_group!(hot_path, benches);
criterion_main!(hot_path);
