//! What a cached route adds to a request before any upstream work: `key/*` parses the JSON body
//! and digests its canonical form with the route, path and vary headers (the SHA-256 cache key);
//! `sha256_raw/*` digests the raw body alone, the floor any strong key pays; `lookup/*` is a
//! store lookup (hit and miss) among 10,000 entries. Read each as time per request: the key's
//! cost over the floor is the price of canonical keys, and lookups should stay flat as the store
//! grows. Run with `cargo bench --bench cache_key`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use http::{HeaderMap, HeaderValue, Method};
use sha2::{Digest, Sha256};
use std::hint::black_box;
use std::sync::Arc;
use switchyard::cache::key::{self, CacheKey};
use switchyard::cache::memory::MemoryStore as Store;
use switchyard::cache::store::{Entry, Found};
use tokio::time::Instant;

/// A chat request whose user message is `words` words long.
fn request(words: usize) -> Vec<u8> {
    let content: String = (0..words).map(|i| format!("word{i} ")).collect();
    serde_json::json!({
        "model": "llama-3.1-8b-instruct",
        "temperature": 0,
        "max_tokens": 256,
        "stream": false,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant. Answer briefly."},
            {"role": "user", "content": content},
        ],
    })
    .to_string()
    .into_bytes()
}

fn headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(
        "authorization",
        HeaderValue::from_static("Bearer sk-tenant-0123456789"),
    );
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h
}

fn key_of(body: &[u8], headers: &HeaderMap) -> CacheKey {
    let json = key::parse_json(body);
    key::key(
        key::Target {
            route: "chat",
            method: &Method::POST,
            path_and_query: "/v1/chat/completions",
            host: None,
        },
        headers,
        &[http::header::AUTHORIZATION],
        body,
        json.as_ref(),
    )
}

fn keys(c: &mut Criterion) {
    let h = headers();
    let mut g = c.benchmark_group("key");
    for words in [16, 256, 4096] {
        let body = request(words);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(body.len()), &body, |b, body| {
            b.iter(|| key_of(black_box(body), &h))
        });
    }
    g.finish();
    let mut g = c.benchmark_group("sha256_raw");
    for words in [16, 256, 4096] {
        let body = request(words);
        g.throughput(Throughput::Bytes(body.len() as u64));
        g.bench_with_input(BenchmarkId::from_parameter(body.len()), &body, |b, body| {
            b.iter(|| Sha256::digest(black_box(body)))
        });
    }
    g.finish();
}

fn lookups(c: &mut Criterion) {
    let store = Store::new(256 * 1024 * 1024);
    let now = Instant::now();
    let h = headers();
    let mut stored = Vec::new();
    for i in 0..10_000 {
        let k = key_of(
            &request(i % 50 + 1)
                .into_iter()
                .chain(i.to_string().into_bytes())
                .collect::<Vec<u8>>(),
            &h,
        );
        let ct = (
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        store.insert(Arc::new(Entry::new(
            k,
            now,
            vec![ct],
            vec![b'x'; 2048].into(),
            false,
        )));
        stored.push(k);
    }
    let ttl = std::time::Duration::from_secs(600);
    let zero = std::time::Duration::ZERO;
    let hit = stored[4242];
    assert!(matches!(
        store.lookup(&hit, now, ttl, zero),
        Found::Fresh(..)
    ));
    let miss = key_of(&request(7), &headers());
    let mut g = c.benchmark_group("lookup");
    g.bench_function("hit", |b| {
        b.iter(|| store.lookup(black_box(&hit), now, ttl, zero))
    });
    g.bench_function("miss", |b| {
        b.iter(|| store.lookup(black_box(&miss), now, ttl, zero))
    });
    g.finish();
}

criterion_group!(benches, keys, lookups);
criterion_main!(benches);
