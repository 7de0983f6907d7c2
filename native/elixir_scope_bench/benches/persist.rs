//! Persistence of a 10 M-event capture of 10 k processes (issue 6 targets: ≥ 2 M events/s
//! written with CRC, a 10 M-event trace opened in ≤ 1 s), bytes per event raw and archived, and
//! `state_at` on the opened trace: paged (the default), and loaded whole. The peer is a plain buffered write of the same headers and
//! payloads, without frames, symbols or CRC.
//!
//! `cargo bench -p elixir_scope_core --bench persist` (EVENTS and PIDS override the sizes).

use elixir_scope_core::formats::event::{Header, Kind};
use elixir_scope_core::index::At;
use elixir_scope_core::persist::open::Loading;
use elixir_scope_core::persist::{self, Clock, Mapped, Window};
use elixir_scope_core::query::history;
use elixir_scope_core::reader::Reader;
use elixir_scope_core::store::{Config, Store};
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

mod common;
use common::{env, CYCLE};

/// Pid words as a live VM makes them (tag `0b0011`); atom words (tag `0b00_1011`).
fn pid_word(i: u64) -> u64 {
    (i << 4) | 0x3
}

fn build(events: u64, pids: u64) -> Store {
    let store = Store::new(Config {
        max_events: events,
        max_bytes: events * 64,
        ..Config::default()
    })
    .expect("config");
    let mut scratch = Vec::new();
    // A GenServer call's message, roughly: {:"$gen_call", {pid, ref}, {:add, N}} is ~60 bytes;
    // here a 40-byte ETF binary whose last bytes vary.
    let mut payload = vec![131, 109, 0, 0, 0, 34];
    payload.extend_from_slice(&[b'x'; 34]);
    for i in 0..events {
        let p = i % pids;
        let kind = CYCLE[((i / pids) % 5) as usize];
        let h = Header {
            ts: i as i64 * 100,
            pid: pid_word(1 + p),
            peer: pid_word(1 + (p + 1) % pids),
            module: (7 << 6) | 0x0B,
            function: (9 << 6) | 0x0B,
            arity: 3,
            kind: kind as u8,
            flags: 0,
        };
        let n = i / pids / 5;
        payload[32..40].copy_from_slice(&n.to_le_bytes());
        if kind == Kind::State {
            store.append_state(&h, &payload, payload.len() as u64, true, &mut scratch);
        } else {
            store.append(&h, &payload, &mut scratch);
        }
    }
    store
}

fn main() {
    let events = env("EVENTS", 10_000_000);
    let pids = env("PIDS", 10_000);
    let dir = std::env::temp_dir().join(format!("escope-bench-persist-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let store = build(events, pids);
    let clock = Clock::default();
    let mut symbol = |w: u64| Some(w.to_le_bytes().to_vec());

    let t = Instant::now();
    let manifest = persist::save(store.reader(), &dir, clock, &mut symbol).expect("save");
    let write = t.elapsed();
    let raw_bytes: u64 = manifest.segments.iter().map(|s| s.bytes).sum();

    // The peer: the same headers and payloads, buffered, no frames.
    let peer_path = dir.join("peer.bin");
    let t = Instant::now();
    let mut out = std::io::BufWriter::with_capacity(
        1 << 20,
        std::fs::File::create(&peer_path).expect("peer"),
    );
    for ev in store.log().range(1, events) {
        let h = ev.header;
        for v in [ev.seq, h.ts as u64, h.pid, h.peer, h.module, h.function] {
            out.write_all(&v.to_le_bytes()).expect("peer write");
        }
        out.write_all(&[h.arity, h.kind, h.flags])
            .expect("peer write");
        out.write_all(&(ev.payload.len() as u32).to_le_bytes())
            .expect("peer write");
        out.write_all(ev.payload).expect("peer write");
    }
    out.flush().expect("peer flush");
    let peer = t.elapsed();
    drop(out);
    std::fs::remove_file(&peer_path).expect("peer cleanup");

    // Archived: each segment compressed as rotation with `archive: true` does.
    let t = Instant::now();
    let mut archived = 0u64;
    for s in &manifest.segments {
        let raw = std::fs::read(dir.join(&s.file)).expect("segment");
        archived += compress(&raw).len() as u64;
    }
    let compress = t.elapsed();

    let mut map =
        |etf: &[u8], _: &_| Mapped::Key(u64::from_le_bytes(etf.try_into().unwrap_or([0; 8])));
    // Paged: the footers give the index; events are read when a query needs them.
    let t = Instant::now();
    let paged =
        elixir_scope_core::persist::open::load(&dir, &mut map, &mut |_, _| {}).expect("load");
    let open = t.elapsed();
    assert_eq!(paged.report.events, events);
    assert_eq!(paged.report.paged, manifest.segments.len());
    let queries = |store: &Reader, n: u64, seed: u64| {
        let idx = store.index();
        let log = &store.log();
        let mut k = seed;
        let t = Instant::now();
        for _ in 0..n {
            k = k
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let pid = pid_word(1 + (k >> 33) % pids);
            black_box(history::state_at(
                log,
                &idx,
                pid,
                At::Ts(((k >> 20) % events) as i64 * 100),
            ));
        }
        t.elapsed() / n as u32
    };
    let first = queries(&paged.reader, 1, 1);
    let cold = queries(&paged.reader, 1_000, 2);
    let touched = paged.reader.stats().bytes;
    let warm = queries(&paged.reader, 100_000, 3);
    drop(paged);

    // Loaded whole, as a window or a trace without footers is.
    let t = Instant::now();
    let mut loading = Loading::eager(&dir).expect("eager");
    while loading.step(&mut map).expect("step") {}
    let eager = loading.finish();
    let open_eager = t.elapsed();
    let t = Instant::now();
    drop(eager.reader.index());
    let indexed = t.elapsed();
    let eager_bytes = eager.reader.stats().bytes;
    let eager_state_at = queries(&eager.reader, 100_000, 3);
    drop(eager);

    // The last tenth of the trace, with each process's state at its start.
    let t = Instant::now();
    let window = Window {
        since: Some((events * 9 / 10) as i64 * 100),
        until: None,
    };
    let mut loading = Loading::window(&dir, window).expect("window");
    while loading.step(&mut map).expect("step") {}
    let tenth = loading.finish();
    let open_tenth = t.elapsed();
    assert!(tenth.report.carried > 0);
    drop(tenth);

    let rate = |d: std::time::Duration| events as f64 / d.as_secs_f64() / 1e6;
    println!(
        "{events} events of {pids} processes, {} segments:",
        manifest.segments.len()
    );
    println!(
        "  write with CRC frames     {:>6.2} M events/s = {:.2}x the 2 M/s target; peer (plain buffered write) {:.2} M events/s: {:.2}x its time",
        rate(write),
        rate(write) / 2.0,
        rate(peer),
        write.as_secs_f64() / peer.as_secs_f64()
    );
    println!(
        "  bytes per event           {:>6.1} raw, {:.1} archived (lz4, {:.2} M events/s compressed)",
        raw_bytes as f64 / events as f64,
        archived as f64 / events as f64,
        rate(compress)
    );
    let ms = |d: std::time::Duration| d.as_secs_f64() * 1e3;
    println!(
        "  open (paged)              {:>6.0} ms, and its first state_at {:.1} ms: {:.2}x the 1 s target",
        ms(open),
        ms(first),
        (open + first).as_secs_f64()
    );
    println!(
        "  state_at, paged           {:>6.1} µs cold (1000 queries, {:.0} MB read in), {:.2} µs warm; loaded whole {:.2} µs",
        cold.as_secs_f64() * 1e6,
        touched as f64 / 1e6,
        warm.as_secs_f64() * 1e6,
        eager_state_at.as_secs_f64() * 1e6
    );
    println!(
        "  loaded whole              {:>6.2} s ({:.0} MB), index built by the first query in {:.2} s",
        open_eager.as_secs_f64(),
        eager_bytes as f64 / 1e6,
        indexed.as_secs_f64()
    );
    println!(
        "  open the last tenth         {:>6.2} s whole (with every process's state at its start)",
        open_tenth.as_secs_f64()
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

/// An lz4 frame of `raw`, as rotation with `archive: true` writes it.
fn compress(raw: &[u8]) -> Vec<u8> {
    let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
    enc.write_all(raw).expect("compress");
    enc.finish().expect("compress")
}
