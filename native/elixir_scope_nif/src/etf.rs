//! A term → External Term Format encoder for the capture path.
//!
//! `enif_term_to_binary` allocates a fresh binary for every call; on the capture path that
//! allocation (and its release) cost as much as the rest of the event. This encoder walks the term
//! and appends ETF bytes to a reusable per-scheduler buffer instead. The common shapes (atoms,
//! small and 64-bit integers, floats, binaries, tuples, lists, maps) are written directly; atoms and
//! local pids are encoded once and cached per thread. Anything else (references, ports, funs,
//! bignums, bitstrings, atoms outside Latin-1) is encoded by the VM's own `enif_term_to_binary`
//! and spliced in, so every term round-trips through `:erlang.binary_to_term/1` exactly.
//!
//! Nesting deeper than [`MAX_DEPTH`] is also handed to the VM, whose encoder does not recurse on the
//! C stack, so a pathological term cannot overflow a scheduler's stack.
//!
//! Cost is bounded for big terms too: past the caller's byte `limit` nothing more is copied. The
//! walk goes on only to count the encoding's size (a binary's bytes are counted, never read), for
//! at most [`COUNT_BUDGET`] more terms; if that runs out, the size is reported as a lower bound.
//! Sending a 100 MB binary costs the VM O(1) (binaries are reference counted); tracing it costs
//! us the limit, not 100 MB.

use crate::terms::{from_raw, raw};
use rustler::sys::{
    enif_alloc_env, enif_clear_env, enif_get_atom, enif_get_double, enif_get_int64,
    enif_get_list_cell, enif_get_tuple, enif_inspect_binary, enif_is_identical, enif_make_copy,
    enif_release_binary, enif_term_to_binary, enif_term_type, ErlNifBinary, ErlNifCharEncoding,
    ErlNifEnv, ErlNifTerm, ErlNifTermType,
};
use rustler::types::map::MapIterator;
use rustler::Term;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};

/// Deepest nesting encoded by recursion; deeper subterms go to the VM's encoder.
pub const MAX_DEPTH: u32 = 64;
/// Terms visited past the byte limit, only to count the size (about a millisecond's worth).
pub const COUNT_BUDGET: u32 = 50_000;
/// While counting, the throwaway buffer is emptied whenever it grows past this.
const SPILL_FLUSH: usize = 1 << 16;
/// log2 of the slots per thread-local cache.
const CACHE_BITS: u32 = 12;

const VERSION: u8 = 131;
const SMALL_INTEGER_EXT: u8 = 97;
const INTEGER_EXT: u8 = 98;
const NEW_FLOAT_EXT: u8 = 70;
const SMALL_TUPLE_EXT: u8 = 104;
const LARGE_TUPLE_EXT: u8 = 105;
const NIL_EXT: u8 = 106;
const LIST_EXT: u8 = 108;
const BINARY_EXT: u8 = 109;
const SMALL_BIG_EXT: u8 = 110;
const MAP_EXT: u8 = 116;
const ATOM_UTF8_EXT: u8 = 118;
const SMALL_ATOM_UTF8_EXT: u8 = 119;

/// A direct-mapped cache from an immediate term's word (an atom or a local pid: stable for the
/// VM's lifetime) to its ETF bytes. One slot per bucket; a colliding entry replaces the old one,
/// so memory is bounded and a lookup is one multiply and one compare.
struct TermCache {
    slots: Vec<Option<(u64, Box<[u8]>)>>,
}

impl TermCache {
    const fn new() -> TermCache {
        TermCache { slots: Vec::new() }
    }

    #[inline]
    fn index(word: u64) -> usize {
        // Fibonacci hashing: immediates differ in their middle bits, the product spreads them.
        (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - CACHE_BITS)) as usize
    }

    #[inline]
    fn get(&self, word: u64) -> Option<&[u8]> {
        match self.slots.get(Self::index(word)) {
            Some(Some((w, bytes))) if *w == word => Some(bytes),
            _ => None,
        }
    }

    fn put(&mut self, word: u64, bytes: &[u8]) {
        if self.slots.is_empty() {
            self.slots.resize_with(1 << CACHE_BITS, || None);
        }
        self.slots[Self::index(word)] = Some((word, bytes.into()));
    }
}

/// Recently encoded references. A GenServer call's reference appears in four events in a row
/// (the request's receive, `handle_call`'s arguments, the reply's destination and the reply), and
/// only the VM can encode a reference, with an allocation each time. Entries are keyed by the
/// term's word and confirmed with `enif_is_identical` against a copy kept in a private
/// environment, so a hit is always the same reference. The environment is cleared (dropping
/// every copy) after `REFS_PER_GENERATION` insertions, which bounds its memory.
struct RefCache {
    env: *mut ErlNifEnv,
    /// (word of the encoded term, word of its copy in `env`, its ETF bytes)
    entries: [(u64, u64, Vec<u8>); REF_SLOTS],
    inserted: usize,
}

const REF_SLOTS: usize = 16;
const REFS_PER_GENERATION: usize = 1024;

impl RefCache {
    const fn new() -> RefCache {
        RefCache {
            env: std::ptr::null_mut(),
            entries: [const { (0, 0, Vec::new()) }; REF_SLOTS],
            inserted: 0,
        }
    }
}

/// The per-thread state of the encoder: its caches, and the byte limit and counters of the call
/// in progress. The tracer keeps one per scheduler thread.
pub struct Encoder {
    atoms: TermCache,
    pids: TermCache,
    refs: RefCache,
    limit: usize,
    /// Past the limit: writes go to `spill` and only their length matters.
    counting: bool,
    spill: Vec<u8>,
    /// Bytes of the encoding not kept in the output.
    overflow: u64,
    count_left: u32,
    exact: bool,
}

/// What [`Encoder::encode`] produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Encoded {
    /// Size of the whole encoding (the output holds its first `min(total, limit)` bytes, give or
    /// take the last term written before the limit).
    pub total: u64,
    /// False when counting stopped early: `total` is then a lower bound.
    pub exact: bool,
}

/// Whether immediates can be recognised from their tag bits (checked once at load against the
/// NIF API; see `check_immediate_tags`). When false, every term goes through `enif_term_type`.
static FAST_IMMEDIATES: AtomicBool = AtomicBool::new(false);

/// Verifies at load that this VM tags small integers as `(value << 4) | 0xF` and atoms with
/// low bits `0x0B` (true of every 64-bit BEAM for decades), enabling the encoder's fast path
/// that skips `enif_term_type` for them.
pub fn check_immediate_tags(env: rustler::Env) {
    use rustler::Encoder as _;
    let ok = [-1i64, 0, 5, 1 << 40]
        .iter()
        .all(|&v| raw(v.encode(env).as_c_arg()) == (((v << 4) | 0xF) as u64))
        && [crate::atoms::ok(), crate::atoms::nil()]
            .iter()
            .all(|a| raw(a.as_c_arg()) & 0x3F == 0x0B);
    FAST_IMMEDIATES.store(ok, Ordering::Relaxed);
}

impl Encoder {
    /// An encoder with empty caches.
    pub const fn new() -> Encoder {
        Encoder {
            atoms: TermCache::new(),
            pids: TermCache::new(),
            refs: RefCache::new(),
            limit: usize::MAX,
            counting: false,
            spill: Vec::new(),
            overflow: 0,
            count_left: 0,
            exact: true,
        }
    }

    fn begin(&mut self, limit: usize) {
        self.limit = limit;
        self.counting = false;
        self.overflow = 0;
        self.count_left = COUNT_BUDGET;
        self.exact = true;
    }

    fn finish(&mut self, out: &[u8]) -> Encoded {
        if self.spill.capacity() > 4 * SPILL_FLUSH {
            self.spill = Vec::new();
        }
        Encoded {
            total: out.len() as u64 + self.overflow,
            exact: self.exact,
        }
    }

    /// Appends the ETF encoding of `term` (version byte included) to `out`, copying at most about
    /// `limit` bytes; see the module docs.
    pub fn encode(&mut self, term: Term<'_>, out: &mut Vec<u8>, limit: usize) -> Encoded {
        self.begin(limit);
        out.push(VERSION);
        encode_term(term.get_env().as_c_arg(), term.as_c_arg(), out, self, 0);
        self.finish(out)
    }

    /// Appends the ETF encoding of the 2-tuple `{a, b}` without building the tuple on a heap.
    pub fn encode_pair(
        &mut self,
        a: Term<'_>,
        b: Term<'_>,
        out: &mut Vec<u8>,
        limit: usize,
    ) -> Encoded {
        self.begin(limit);
        out.push(VERSION);
        out.extend_from_slice(&[SMALL_TUPLE_EXT, 2]);
        let env = a.get_env().as_c_arg();
        encode_term(env, a.as_c_arg(), out, self, 1);
        encode_term(env, b.as_c_arg(), out, self, 1);
        self.finish(out)
    }
}

fn encode_term(env: *mut ErlNifEnv, t: ErlNifTerm, out: &mut Vec<u8>, c: &mut Encoder, depth: u32) {
    if c.counting {
        if c.count_left == 0 {
            c.exact = false;
            return;
        }
        c.count_left -= 1;
        if out.len() > SPILL_FLUSH {
            c.overflow += out.len() as u64;
            out.clear();
        }
    } else if out.len() >= c.limit {
        // Past the limit: encode into the throwaway buffer, keeping only the size.
        c.counting = true;
        let mut spill = std::mem::take(&mut c.spill);
        spill.clear();
        encode_term(env, t, &mut spill, c, depth);
        c.overflow += spill.len() as u64;
        c.spill = spill;
        c.counting = false;
        return;
    }
    if depth > MAX_DEPTH {
        return vm_encode(env, t, out);
    }
    let w = raw(t);
    if FAST_IMMEDIATES.load(Ordering::Relaxed) {
        if w & 0xF == 0xF {
            // A small integer: the value is the word shifted right (arithmetically) by 4.
            return encode_int((w as i64) >> 4, out);
        }
        if w & 0x3F == 0x0B {
            if let Some(bytes) = c.atoms.get(w) {
                out.extend_from_slice(bytes);
                return;
            }
        }
    }
    // SAFETY (for every enif_* call below): `env` is the environment of the running NIF call and
    // `t` (and every subterm taken from it) is a valid term in it.
    let ty = unsafe { enif_term_type(env, t) };
    match ty {
        ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => encode_atom(env, t, out, c),
        ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
            let mut v: i64 = 0;
            if unsafe { enif_get_int64(env, t, &mut v) } == 0 {
                return vm_encode(env, t, out); // bignum
            }
            encode_int(v, out);
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_FLOAT => {
            let mut f: f64 = 0.0;
            unsafe { enif_get_double(env, t, &mut f) };
            out.push(NEW_FLOAT_EXT);
            out.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_BITSTRING => {
            let mut bin = MaybeUninit::<ErlNifBinary>::uninit();
            if unsafe { enif_inspect_binary(env, t, bin.as_mut_ptr()) } == 0 {
                return vm_encode(env, t, out); // not byte-aligned
            }
            let bin = unsafe { bin.assume_init() };
            let Ok(len) = u32::try_from(bin.size) else {
                return vm_encode(env, t, out);
            };
            out.push(BINARY_EXT);
            out.extend_from_slice(&len.to_be_bytes());
            // Copy what fits under the limit; count the rest without reading it.
            let keep = if c.counting {
                0
            } else {
                c.limit.saturating_sub(out.len()).min(bin.size)
            };
            // SAFETY: enif_inspect_binary succeeded, so `data` points at `size` readable bytes.
            out.extend_from_slice(unsafe { std::slice::from_raw_parts(bin.data, keep) });
            c.overflow += (bin.size - keep) as u64;
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_TUPLE => {
            let mut arity: i32 = 0;
            let mut elems: *const ErlNifTerm = std::ptr::null();
            unsafe { enif_get_tuple(env, t, &mut arity, &mut elems) };
            let n = arity.max(0) as usize;
            if n < 256 {
                out.push(SMALL_TUPLE_EXT);
                out.push(n as u8);
            } else {
                out.push(LARGE_TUPLE_EXT);
                out.extend_from_slice(&(n as u32).to_be_bytes());
            }
            for i in 0..n {
                // SAFETY: `elems` points at `arity` terms of the tuple.
                let e = unsafe { *elems.add(i) };
                encode_term(env, e, out, c, depth + 1);
            }
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_LIST => encode_list(env, t, out, c, depth),
        ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => {
            // SAFETY: `t` is a valid term of `env` (see above).
            let term = unsafe { Term::new(rustler::Env::new(&(), env), t) };
            let (Ok(size), Some(iter)) = (term.map_size(), MapIterator::new(term)) else {
                return vm_encode(env, t, out);
            };
            out.push(MAP_EXT);
            out.extend_from_slice(&(size as u32).to_be_bytes());
            for (k, v) in iter {
                encode_term(env, k.as_c_arg(), out, c, depth + 1);
                encode_term(env, v.as_c_arg(), out, c, depth + 1);
            }
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_PID if raw(t) & 0xF == 0x3 => {
            if let Some(bytes) = c.pids.get(raw(t)) {
                out.extend_from_slice(bytes);
                return;
            }
            let start = out.len();
            vm_encode(env, t, out);
            c.pids.put(raw(t), &out[start..]);
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_REFERENCE => encode_ref(env, t, out, &mut c.refs),
        _ => vm_encode(env, t, out),
    }
}

fn encode_ref(env: *mut ErlNifEnv, t: ErlNifTerm, out: &mut Vec<u8>, c: &mut RefCache) {
    let word = raw(t);
    let i = (word.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 60) as usize % REF_SLOTS;
    let (w, copy, bytes) = &c.entries[i];
    // SAFETY: `copy` lives in `c.env`, which is only cleared together with resetting every entry
    // (`w == 0`), so a non-zero `w` means `copy` is a valid term.
    if *w == word && word != 0 && unsafe { enif_is_identical(from_raw(*copy), t) } != 0 {
        out.extend_from_slice(bytes);
        return;
    }
    let start = out.len();
    vm_encode(env, t, out);
    // SAFETY: enif_alloc_env has no preconditions; the env is this thread's and never shared.
    unsafe {
        if c.env.is_null() {
            c.env = enif_alloc_env();
            if c.env.is_null() {
                return;
            }
        }
        if c.inserted >= REFS_PER_GENERATION {
            enif_clear_env(c.env);
            for e in c.entries.iter_mut() {
                e.0 = 0;
            }
            c.inserted = 0;
        }
        let copy = enif_make_copy(c.env, t);
        let entry = &mut c.entries[i];
        entry.0 = word;
        entry.1 = raw(copy);
        entry.2.clear();
        entry.2.extend_from_slice(&out[start..]);
    }
    c.inserted += 1;
}

fn encode_int(v: i64, out: &mut Vec<u8>) {
    if (0..=255).contains(&v) {
        out.push(SMALL_INTEGER_EXT);
        out.push(v as u8);
    } else if let Ok(v32) = i32::try_from(v) {
        out.push(INTEGER_EXT);
        out.extend_from_slice(&v32.to_be_bytes());
    } else {
        let mag = v.unsigned_abs();
        let digits = (8 - mag.leading_zeros() / 8) as usize;
        out.push(SMALL_BIG_EXT);
        out.push(digits as u8);
        out.push(u8::from(v < 0));
        out.extend_from_slice(&mag.to_le_bytes()[..digits]);
    }
}

fn encode_atom(env: *mut ErlNifEnv, t: ErlNifTerm, out: &mut Vec<u8>, c: &mut Encoder) {
    if let Some(bytes) = c.atoms.get(raw(t)) {
        out.extend_from_slice(bytes);
        return;
    }
    // Atom names are at most 255 characters, so 256 Latin-1 bytes always fit.
    let mut buf = [0u8; 256];
    // SAFETY: `buf` is 256 writable bytes; enif_get_atom writes at most that many.
    let n = unsafe {
        enif_get_atom(
            env,
            t,
            buf.as_mut_ptr().cast(),
            buf.len() as u32,
            ErlNifCharEncoding::ERL_NIF_LATIN1,
        )
    };
    if n <= 0 {
        // Not representable in Latin-1 (OTP 25's enif_get_atom has no UTF-8 mode).
        return vm_encode(env, t, out);
    }
    let latin1 = &buf[..(n as usize - 1)];
    let utf8: String = latin1.iter().map(|&b| b as char).collect();
    let mut bytes = Vec::with_capacity(utf8.len() + 3);
    if utf8.len() < 256 {
        bytes.push(SMALL_ATOM_UTF8_EXT);
        bytes.push(utf8.len() as u8);
    } else {
        bytes.push(ATOM_UTF8_EXT);
        bytes.extend_from_slice(&(utf8.len() as u16).to_be_bytes());
    }
    bytes.extend_from_slice(utf8.as_bytes());
    out.extend_from_slice(&bytes);
    c.atoms.put(raw(t), &bytes);
}

fn encode_list(env: *mut ErlNifEnv, t: ErlNifTerm, out: &mut Vec<u8>, c: &mut Encoder, depth: u32) {
    let mut head = ErlNifTerm::default();
    let mut tail = ErlNifTerm::default();
    // SAFETY: see `encode_term`.
    if unsafe { enif_get_list_cell(env, t, &mut head, &mut tail) } == 0 {
        out.push(NIL_EXT);
        return;
    }
    out.push(LIST_EXT);
    let len_at = out.len();
    out.extend_from_slice(&[0; 4]);
    let mut len: u32 = 0;
    let mut cell = t;
    // Elements are encoded iteratively, so a long list costs no stack.
    while unsafe { enif_get_list_cell(env, cell, &mut head, &mut tail) } != 0 {
        encode_term(env, head, out, c, depth + 1);
        len = len.wrapping_add(1);
        cell = tail;
    }
    // (While counting, the buffer may have been emptied meanwhile; the bytes do not matter then.)
    if let Some(slot) = out.get_mut(len_at..len_at + 4) {
        slot.copy_from_slice(&len.to_be_bytes());
    }
    // The tail: `[]` for a proper list, anything else for an improper one.
    encode_term(env, cell, out, c, depth + 1);
}

/// Encodes `t` with the VM's encoder and appends it without its version byte.
fn vm_encode(env: *mut ErlNifEnv, t: ErlNifTerm, out: &mut Vec<u8>) {
    let mut bin = MaybeUninit::<ErlNifBinary>::uninit();
    // SAFETY: `env`/`t` are valid (see `encode_term`); on success the binary is ours to release.
    unsafe {
        if enif_term_to_binary(env, t, bin.as_mut_ptr()) == 0 {
            // Out of memory in the VM: record an empty list rather than fail the event.
            out.push(NIL_EXT);
            return;
        }
        let mut bin = bin.assume_init();
        let bytes = std::slice::from_raw_parts(bin.data, bin.size);
        out.extend_from_slice(bytes.get(1..).unwrap_or(&[]));
        enif_release_binary(&mut bin);
    }
}
