//! Segment writing and reading (issue 6 target: ≥ 2 M events/s written with CRC), with a plain
//! buffered write of the same bytes without framing as the peer.
//!
//! `cargo bench -p elixir_scope_core --bench segment` (EVENTS overrides the count).

use elixir_scope_core::persist::segment::{self, Record, SegmentWriter};
use std::hint::black_box;
use std::io::Write;
use std::time::Instant;

mod common;

fn main() {
    let events = common::env("EVENTS", 2_000_000);
    let dir = std::env::temp_dir().join(format!("escope-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    // A GenServer call's receive: {:"$gen_call", {pid, ref}, {:add, 1}}, ~60 bytes of ETF.
    let payload: Vec<u8> = (0..60).map(|i| i as u8).collect();
    let record = |i: u64| Record::Event {
        seq: i,
        ts: i as i64 * 1_000,
        pid: 0x0000_1234_0003 + (i % 1000) * 16,
        peer: 0,
        module: 0,
        function: 0,
        arity: 0,
        kind: 8,
        flags: 0,
        payload: &payload,
    };

    let path = dir.join("bench.seg");
    let t = Instant::now();
    let mut w = SegmentWriter::create(&path).expect("create");
    for i in 1..=events {
        w.append(&record(i)).expect("append");
    }
    w.flush().expect("flush");
    let write = t.elapsed();
    let bytes = w.len();
    drop(w);

    let raw_path = dir.join("raw.bin");
    let t = Instant::now();
    let mut raw =
        std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(&raw_path).expect("raw"));
    for i in 1..=events {
        raw.write_all(&i.to_le_bytes()).expect("raw write");
        raw.write_all(&payload).expect("raw write");
    }
    raw.flush().expect("raw flush");
    let raw_write = t.elapsed();

    let t = Instant::now();
    let data = std::fs::read(&path).expect("read");
    let scan = black_box(segment::read(&data).expect("segment"));
    let read = t.elapsed();
    assert_eq!(scan.records.len() as u64, events);

    let rate = |d: std::time::Duration| events as f64 / d.as_secs_f64() / 1e6;
    println!("{events} events of a 60-byte payload:");
    println!(
        "  write with CRC frames      {:>6.2} M events/s = {:.2}x the 2 M/s target ({:.1} B/event on disk)",
        rate(write),
        rate(write) / 2.0,
        bytes as f64 / events as f64
    );
    println!(
        "  plain buffered write (peer) {:>5.2} M events/s (framing costs {:.2}x its time)",
        rate(raw_write),
        write.as_secs_f64() / raw_write.as_secs_f64()
    );
    println!(
        "  read back and verify       {:>6.2} M events/s",
        rate(read)
    );
    std::fs::remove_dir_all(&dir).expect("cleanup");
}
