//! History queries on 10 M synthetic events of 10 k processes (issue targets: `state_at` ≤ 10 µs,
//! `snapshot_at` ≤ 20 ms, a 1,000-event timeline page ≤ 1 ms), and memory per event.
//!
//! `cargo bench -p elixir_scope_core --bench history` (EVENTS and PIDS override the sizes).

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use elixir_scope_core::formats::event::{Header, Kind};
use elixir_scope_core::index::{At, Index};
use elixir_scope_core::query::history;
use elixir_scope_core::query::{self, Filter};
use elixir_scope_core::store::{Config, Store};
use std::time::{Duration, Instant};

mod common;
use common::{env, CYCLE};

fn build(events: u64, pids: u64) -> (Store, Index) {
    let store = Store::new(Config {
        max_events: events,
        max_bytes: events * 32,
        ..Config::default()
    })
    .expect("config");
    let mut scratch = Vec::new();
    let t = Instant::now();
    for i in 0..events {
        let pid = 1 + (i % pids);
        let kind = CYCLE[((i / pids) % 5) as usize];
        let h = Header {
            ts: i as i64,
            pid,
            peer: 1 + ((i + 1) % pids),
            module: 7,
            function: 9,
            arity: 3,
            kind: kind as u8,
            flags: 0,
        };
        let payload = (i / pids / 5).to_le_bytes();
        if kind == Kind::State {
            store.append_state(&h, &payload, 8, true, &mut scratch);
        } else {
            store.append(&h, &payload[..4], &mut scratch);
        }
    }
    let built = t.elapsed();
    let t = Instant::now();
    let mut idx = Index::new();
    idx.catch_up(&store.log());
    let indexed = t.elapsed();
    let st = store.stats();
    let index_bytes = idx.heap_bytes() as u64;
    eprintln!(
        "{events} events, {pids} processes: appended in {built:?} ({:.1} M events/s), indexed in {indexed:?}; \
         memory per event: {:.1} B in the log ({} B committed), {:.1} B with the index",
        events as f64 / built.as_secs_f64() / 1e6,
        st.bytes as f64 / events as f64,
        st.bytes,
        (st.bytes + index_bytes) as f64 / events as f64
    );
    (store, idx)
}

fn benches(c: &mut Criterion) {
    let events = env("EVENTS", 10_000_000);
    let pids = env("PIDS", 10_000);
    let (store, idx) = build(events, pids);
    let log = &store.log();
    let mut g = c.benchmark_group("history");
    g.sample_size(20).measurement_time(Duration::from_secs(3));

    let mut k = 0u64;
    g.bench_function("state_at (time)", |b| {
        b.iter(|| {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pid = 1 + (k >> 33) % pids;
            let at = At::Ts(((k >> 20) % events) as i64);
            black_box(history::state_at(log, &idx, pid, at))
        })
    });
    g.bench_function("state_at (seq)", |b| {
        b.iter(|| {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pid = 1 + (k >> 33) % pids;
            black_box(history::state_at(
                log,
                &idx,
                pid,
                At::Seq((k >> 20) % events),
            ))
        })
    });
    g.bench_function("snapshot_at (all processes)", |b| {
        b.iter(|| black_box(history::snapshot_at(log, &idx, At::Ts(events as i64 / 2)).len()))
    });
    g.bench_function("timeline page (1,000 events of one process)", |b| {
        b.iter(|| {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pid = 1 + (k >> 33) % pids;
            let seqs = &idx.pid(pid).expect("pid").events;
            let f = Filter {
                pids: vec![pid],
                limit: 1000,
                ..Filter::default()
            };
            black_box(query::run_on(log, seqs, &f).events.len())
        })
    });
    g.finish();
}

criterion_group!(history_benches, benches);
criterion_main!(history_benches);
