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
//! The walk keeps its own stack rather than recursing, so a deeply nested term cannot overflow a
//! scheduler's stack.
//!
//! Cost is bounded for big terms too: past the caller's byte `limit` nothing more is copied. The
//! walk goes on only to count the encoding's size (a binary's bytes are counted, never read), for
//! at most the caller's `count` more terms (at most [`COUNT_BUDGET`]); if that runs out, the size
//! is reported as a lower bound.
//! Sending a 100 MB binary costs the VM O(1) (binaries are reference counted); tracing it costs
//! us the limit, not 100 MB. (Funs, bignums and odd-sized bitstrings under the limit are encoded
//! by the VM whole; past it they are not encoded and make the size a lower bound.)

use crate::terms::{from_raw, raw};
use rustler::sys::{
    enif_alloc_env, enif_clear_env, enif_get_atom, enif_get_double, enif_get_int64,
    enif_get_list_cell, enif_get_map_size, enif_get_tuple, enif_inspect_binary, enif_is_identical,
    enif_make_copy, enif_map_iterator_create, enif_map_iterator_destroy,
    enif_map_iterator_get_pair, enif_map_iterator_next, enif_release_binary, enif_term_to_binary,
    enif_term_type, ErlNifBinary, ErlNifCharEncoding, ErlNifEnv, ErlNifMapIterator,
    ErlNifMapIteratorEntry, ErlNifTerm, ErlNifTermType,
};
use rustler::Term;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

/// Terms visited past the byte limit, only to count the size (about a millisecond's worth).
pub const COUNT_BUDGET: u32 = 50_000;
/// While counting, the throwaway buffer is emptied whenever it grows past this.
const SPILL_FLUSH: usize = 1 << 16;
/// log2 of the slots per thread-local cache.
const CACHE_BITS: u32 = 12;

// The format's tags, named once in the core.
use elixir_scope_core::formats::etf::tag::{
    ATOM_UTF8 as ATOM_UTF8_EXT, BINARY as BINARY_EXT, INTEGER as INTEGER_EXT,
    LARGE_TUPLE as LARGE_TUPLE_EXT, LIST as LIST_EXT, MAP as MAP_EXT, NEW_FLOAT as NEW_FLOAT_EXT,
    NIL as NIL_EXT, SMALL_ATOM_UTF8 as SMALL_ATOM_UTF8_EXT, SMALL_BIG as SMALL_BIG_EXT,
    SMALL_INTEGER as SMALL_INTEGER_EXT, SMALL_TUPLE as SMALL_TUPLE_EXT,
};
use elixir_scope_core::formats::etf::VERSION;

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
/// every copy) after `REFS_PER_GENERATION` insertions or `REF_GENERATION_NS` of age, whichever
/// comes first: that bounds its memory, and how long a copied resource reference (a "magic"
/// reference keeps its resource alive) can delay the resource's destructor, as long as this
/// scheduler keeps tracing.
struct RefCache {
    env: *mut ErlNifEnv,
    /// Monotonic time of the generation's first insertion (0: empty).
    born: i64,
    /// (word of the encoded term, word of its copy in `env`, its ETF bytes)
    entries: [(u64, u64, Vec<u8>); REF_SLOTS],
    inserted: usize,
}

const REF_SLOTS: usize = 16;
const REFS_PER_GENERATION: usize = 1024;
const REF_GENERATION_NS: i64 = 1_000_000_000;

impl RefCache {
    const fn new() -> RefCache {
        RefCache {
            env: std::ptr::null_mut(),
            born: 0,
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
    /// The walk's stack, kept between calls to avoid allocating.
    stack: Vec<Work>,
    /// The event's monotonic time, for aging the reference cache.
    now: i64,
    /// The [`EPOCH`] the caches were filled in.
    epoch: u64,
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

/// Bumped to invalidate every thread's caches (see [`invalidate_caches`]).
static EPOCH: AtomicU64 = AtomicU64::new(0);

/// Makes every encoder drop its caches before its next use. Cached pid and reference encodings
/// embed the node name, which `Node.start/2` changes; a new store calls this, so each capture
/// starts with encodings of the node as it is.
pub fn invalidate_caches() {
    EPOCH.fetch_add(1, Ordering::Relaxed);
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
            stack: Vec::new(),
            now: 0,
            epoch: 0,
            overflow: 0,
            count_left: 0,
            exact: true,
        }
    }

    /// Sets the current monotonic time (ns); the reference cache ages by it.
    pub fn set_clock(&mut self, now: i64) {
        self.now = now;
    }

    fn begin(&mut self, limit: usize, count: u32) {
        let epoch = EPOCH.load(Ordering::Relaxed);
        if epoch != self.epoch {
            self.epoch = epoch;
            self.atoms = TermCache::new();
            self.pids = TermCache::new();
            self.refs.age(i64::MAX);
        }
        self.limit = limit;
        self.counting = false;
        self.overflow = 0;
        self.count_left = count.min(COUNT_BUDGET);
        self.exact = true;
    }

    fn finish(&mut self, out: &[u8]) -> Encoded {
        if self.stack.capacity() > 4096 {
            self.stack = Vec::new();
        }
        Encoded {
            total: out.len() as u64 + self.overflow,
            exact: self.exact,
        }
    }

    /// Appends the ETF encoding of `term` (version byte included) to `out`, copying at most about
    /// `limit` bytes and counting the size of the rest over at most `count` more terms; see the
    /// module docs.
    pub fn encode(
        &mut self,
        term: Term<'_>,
        out: &mut Vec<u8>,
        limit: usize,
        count: u32,
    ) -> Encoded {
        self.begin(limit, count);
        out.push(VERSION);
        walk(self, term.get_env().as_c_arg(), &[term.as_c_arg()], out);
        self.finish(out)
    }

    /// Appends the ETF encoding of the 2-tuple `{a, b}` without building the tuple on a heap.
    pub fn encode_pair(
        &mut self,
        a: Term<'_>,
        b: Term<'_>,
        out: &mut Vec<u8>,
        limit: usize,
        count: u32,
    ) -> Encoded {
        self.begin(limit, count);
        out.push(VERSION);
        out.extend_from_slice(&[SMALL_TUPLE_EXT, 2]);
        walk(
            self,
            a.get_env().as_c_arg(),
            &[a.as_c_arg(), b.as_c_arg()],
            out,
        );
        self.finish(out)
    }
}

/// One pending step of the walk. The walk keeps its own stack instead of recursing, so neither a
/// deep term nor a long one costs the scheduler's stack anything.
enum Work {
    Term(ErlNifTerm),
    /// The elements `next..len` of a tuple.
    Tuple {
        elems: *const ErlNifTerm,
        next: usize,
        len: usize,
    },
    /// The rest of a list: `cell`, after `len` elements; the length goes at `len_at` of the
    /// output (`in_out`) or of the throwaway buffer.
    List {
        cell: ErlNifTerm,
        len_at: usize,
        len: u32,
        in_out: bool,
    },
    /// A map's remaining pairs (boxed: the iterator is large, and every other step moves `Work`
    /// values around).
    Map(Box<ErlNifMapIterator>),
}

/// Encodes `roots` (as consecutive terms) into `out`, then the rest only counted; see the module
/// docs.
fn walk(c: &mut Encoder, env: *mut ErlNifEnv, roots: &[ErlNifTerm], out: &mut Vec<u8>) {
    let mut stack = std::mem::take(&mut c.stack);
    let mut spill = std::mem::take(&mut c.spill);
    stack.clear();
    spill.clear();
    stack.extend(roots.iter().rev().map(|t| Work::Term(*t)));
    while let Some(work) = stack.pop() {
        if c.counting && c.count_left == 0 {
            c.exact = false;
            stack.push(work);
            break;
        }
        // SAFETY (all enif_* calls in this loop): `env` is the running NIF call's environment,
        // and every term and iterator on the stack was taken from terms valid in it.
        match work {
            Work::Term(t) => step(c, env, t, out, &mut spill, &mut stack),
            Work::Tuple { elems, next, len } => {
                if next < len {
                    stack.push(Work::Tuple {
                        elems,
                        next: next + 1,
                        len,
                    });
                    // SAFETY: `elems` points at the tuple's `len` elements.
                    stack.push(Work::Term(unsafe { *elems.add(next) }));
                }
            }
            Work::List {
                mut cell,
                len_at,
                mut len,
                in_out,
            } => {
                let (mut head, mut tail) = (ErlNifTerm::default(), ErlNifTerm::default());
                // Within the limit, the elements are written here, a cell at a time: only one
                // with contents of its own (a tuple, list or map) leaves the rest of the list
                // on the stack, beneath its contents, so a list of immediates or binaries takes
                // no trip through the stack per cell.
                loop {
                    // SAFETY: `env` is the running NIF call's; `cell` is a list cell (or the
                    // tail) of a term valid in it.
                    if unsafe { enif_get_list_cell(env, cell, &mut head, &mut tail) } == 0 {
                        // (A throwaway buffer may have been emptied meanwhile; its bytes do not
                        // matter.)
                        let buf = if in_out { &mut *out } else { &mut spill };
                        if let Some(slot) = buf.get_mut(len_at..len_at + 4) {
                            slot.copy_from_slice(&len.to_be_bytes());
                        }
                        // The tail: `[]` for a proper list, anything else for an improper one.
                        stack.push(Work::Term(cell));
                        break;
                    }
                    cell = tail;
                    len = len.wrapping_add(1);
                    let rest = Work::List {
                        cell,
                        len_at,
                        len,
                        in_out,
                    };
                    if !in_out || c.counting {
                        // Counting: the loop above checks the budget before every term.
                        stack.push(rest);
                        stack.push(Work::Term(head));
                        break;
                    }
                    if out.len() < c.limit && immediate(c, head, out) {
                        continue;
                    }
                    let before = stack.len();
                    step(c, env, head, out, &mut spill, &mut stack);
                    if stack.len() != before || c.counting {
                        stack.insert(before, rest);
                        break;
                    }
                }
            }
            Work::Map(mut iter) => {
                let (mut k, mut v) = (ErlNifTerm::default(), ErlNifTerm::default());
                // As for a list: the pairs are written here while they are leaves.
                loop {
                    // SAFETY: `iter` was created by enif_map_iterator_create in `env` and not
                    // destroyed yet.
                    if unsafe { enif_map_iterator_get_pair(env, &mut *iter, &mut k, &mut v) } == 0 {
                        // SAFETY: a live iterator of `env`, destroyed once (it leaves the stack
                        // here).
                        unsafe { enif_map_iterator_destroy(env, &mut *iter) };
                        break;
                    }
                    // SAFETY: as above: a live iterator of `env`.
                    unsafe { enif_map_iterator_next(env, &mut *iter) };
                    if c.counting {
                        stack.push(Work::Map(iter));
                        stack.push(Work::Term(v));
                        stack.push(Work::Term(k));
                        break;
                    }
                    let before = stack.len();
                    step(c, env, k, out, &mut spill, &mut stack);
                    if stack.len() != before || c.counting {
                        stack.splice(before..before, [Work::Map(iter), Work::Term(v)]);
                        break;
                    }
                    step(c, env, v, out, &mut spill, &mut stack);
                    if stack.len() != before || c.counting {
                        stack.insert(before, Work::Map(iter));
                        break;
                    }
                }
            }
        }
    }
    // Walk cut short: release the map iterators still open.
    for work in stack.drain(..) {
        if let Work::Map(mut iter) = work {
            // SAFETY: each iterator still on the stack is live and destroyed once, here.
            unsafe { enif_map_iterator_destroy(env, &mut *iter) };
        }
    }
    c.overflow += spill.len() as u64;
    if spill.capacity() > 4 * SPILL_FLUSH {
        spill = Vec::new();
    }
    c.stack = stack;
    c.spill = spill;
}

/// Writes `t` when it is an immediate written without the NIF API (a small integer, an atom
/// already encoded); false otherwise, writing nothing. The caller checks the limit.
#[inline]
fn immediate(c: &Encoder, t: ErlNifTerm, out: &mut Vec<u8>) -> bool {
    if !FAST_IMMEDIATES.load(Ordering::Relaxed) {
        return false;
    }
    let w = raw(t);
    if w & 0xF == 0xF {
        // A small integer: the value is the word shifted right (arithmetically) by 4.
        encode_int((w as i64) >> 4, out);
        return true;
    }
    match c.atoms.get(w) {
        Some(bytes) if w & 0x3F == 0x0B => {
            out.extend_from_slice(bytes);
            true
        }
        _ => false,
    }
}

/// Writes one term (an immediate whole, a compound's header) and queues a compound's contents.
fn step(
    c: &mut Encoder,
    env: *mut ErlNifEnv,
    t: ErlNifTerm,
    out: &mut Vec<u8>,
    spill: &mut Vec<u8>,
    stack: &mut Vec<Work>,
) {
    if !c.counting && out.len() >= c.limit {
        // Past the limit: from here on, only the size of what follows is counted.
        c.counting = true;
    }
    if c.counting {
        c.count_left -= 1;
        if spill.len() > SPILL_FLUSH {
            c.overflow += spill.len() as u64;
            spill.clear();
        }
    }
    let counting = c.counting;
    let buf = if counting { spill } else { out };
    let w = raw(t);
    if FAST_IMMEDIATES.load(Ordering::Relaxed) {
        if w & 0xF == 0xF {
            // A small integer: the value is the word shifted right (arithmetically) by 4.
            return encode_int((w as i64) >> 4, buf);
        }
        if w & 0x3F == 0x0B {
            if let Some(bytes) = c.atoms.get(w) {
                buf.extend_from_slice(bytes);
                return;
            }
        }
    }
    // Terms only the VM can encode; while counting, the unbounded ones are not encoded at all
    // and the size becomes a lower bound.
    let opaque = |c: &mut Encoder, buf: &mut Vec<u8>, bounded: bool| {
        if counting && !bounded {
            c.exact = false;
        } else {
            vm_encode(env, t, buf);
        }
    };
    // SAFETY: `env` is the running NIF call's environment and `t` is valid in it.
    match unsafe { enif_term_type(env, t) } {
        ErlNifTermType::ERL_NIF_TERM_TYPE_ATOM => encode_atom(env, t, buf, c),
        ErlNifTermType::ERL_NIF_TERM_TYPE_INTEGER => {
            let mut v: i64 = 0;
            // SAFETY: `t` is an integer term of `env`; `v` is a valid out-pointer.
            if unsafe { enif_get_int64(env, t, &mut v) } == 0 {
                return opaque(c, buf, false); // bignum
            }
            encode_int(v, buf);
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_FLOAT => {
            let mut f: f64 = 0.0;
            // SAFETY: `t` is a float term of `env`; `f` is a valid out-pointer.
            unsafe { enif_get_double(env, t, &mut f) };
            buf.push(NEW_FLOAT_EXT);
            buf.extend_from_slice(&f.to_bits().to_be_bytes());
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_BITSTRING => {
            let mut bin = MaybeUninit::<ErlNifBinary>::uninit();
            // SAFETY: `t` is a bitstring term of `env`; `bin` is valid for writes.
            if unsafe { enif_inspect_binary(env, t, bin.as_mut_ptr()) } == 0 {
                return opaque(c, buf, false); // not byte-aligned
            }
            // SAFETY: enif_inspect_binary succeeded, so it initialized `bin`.
            let bin = unsafe { bin.assume_init() };
            let Ok(len) = u32::try_from(bin.size) else {
                return opaque(c, buf, false);
            };
            buf.push(BINARY_EXT);
            buf.extend_from_slice(&len.to_be_bytes());
            // Copy what fits under the limit; count the rest without reading it.
            let keep = if counting {
                0
            } else {
                c.limit.saturating_sub(buf.len()).min(bin.size)
            };
            // SAFETY: enif_inspect_binary succeeded, so `data` points at `size` readable bytes.
            buf.extend_from_slice(unsafe { std::slice::from_raw_parts(bin.data, keep) });
            c.overflow += (bin.size - keep) as u64;
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_TUPLE => {
            let mut arity: i32 = 0;
            let mut elems: *const ErlNifTerm = std::ptr::null();
            // SAFETY: `t` is a tuple term of `env`; the out-pointers are valid.
            unsafe { enif_get_tuple(env, t, &mut arity, &mut elems) };
            let len = arity.max(0) as usize;
            if counting && len > c.count_left as usize {
                c.exact = false;
                c.count_left = 0;
                return;
            }
            if len < 256 {
                buf.extend_from_slice(&[SMALL_TUPLE_EXT, len as u8]);
            } else {
                buf.push(LARGE_TUPLE_EXT);
                buf.extend_from_slice(&(len as u32).to_be_bytes());
            }
            if len <= 16 {
                // Small tuples (nearly all): queue the elements themselves.
                for i in (0..len).rev() {
                    // SAFETY: `elems` points at the tuple's `len` elements.
                    stack.push(Work::Term(unsafe { *elems.add(i) }));
                }
            } else {
                stack.push(Work::Tuple {
                    elems,
                    next: 0,
                    len,
                });
            }
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_LIST => {
            let (mut head, mut tail) = (ErlNifTerm::default(), ErlNifTerm::default());
            // SAFETY: `t` is a list term of `env`; the out-pointers are valid.
            if unsafe { enif_get_list_cell(env, t, &mut head, &mut tail) } == 0 {
                buf.push(NIL_EXT);
                return;
            }
            buf.push(LIST_EXT);
            let len_at = buf.len();
            buf.extend_from_slice(&[0; 4]);
            // The first cell is read: its head next, then the rest from its tail.
            stack.push(Work::List {
                cell: tail,
                len_at,
                len: 1,
                in_out: !counting,
            });
            stack.push(Work::Term(head));
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_MAP => {
            let mut size = 0;
            let mut iter = MaybeUninit::<ErlNifMapIterator>::uninit();
            // SAFETY: `t` is a map term of `env`; `size` is a valid out-pointer.
            if unsafe { enif_get_map_size(env, t, &mut size) } == 0 {
                return opaque(c, buf, false);
            }
            if counting && 2 * size > c.count_left as usize {
                c.exact = false;
                c.count_left = 0;
                return;
            }
            let first = ErlNifMapIteratorEntry::ERL_NIF_MAP_ITERATOR_HEAD;
            // SAFETY: `t` is a map term of `env`; `iter` is valid for writes.
            if unsafe { enif_map_iterator_create(env, t, iter.as_mut_ptr(), first) } == 0 {
                return opaque(c, buf, false);
            }
            buf.push(MAP_EXT);
            buf.extend_from_slice(&(size as u32).to_be_bytes());
            // SAFETY: enif_map_iterator_create succeeded, so it initialized `iter`.
            stack.push(Work::Map(Box::new(unsafe { iter.assume_init() })));
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_PID if w & 0xF == 0x3 => {
            if let Some(bytes) = c.pids.get(w) {
                buf.extend_from_slice(bytes);
                return;
            }
            let start = buf.len();
            vm_encode(env, t, buf);
            c.pids.put(w, &buf[start..]);
        }
        ErlNifTermType::ERL_NIF_TERM_TYPE_REFERENCE => encode_ref(env, t, buf, &mut c.refs, c.now),
        // Remote pids, ports: small. Funs: their environment can be anything.
        ErlNifTermType::ERL_NIF_TERM_TYPE_FUN => opaque(c, buf, false),
        _ => opaque(c, buf, true),
    }
}

impl RefCache {
    /// Drops every copy (and entry) when the generation is full or old.
    fn age(&mut self, now: i64) {
        let old = self.born != 0 && now.saturating_sub(self.born) > REF_GENERATION_NS;
        if !self.env.is_null() && (old || self.inserted >= REFS_PER_GENERATION) {
            // SAFETY: the env is this thread's own; no term from it is used after this, since
            // every entry is reset.
            unsafe { enif_clear_env(self.env) };
            for e in self.entries.iter_mut() {
                e.0 = 0;
            }
            self.inserted = 0;
            self.born = 0;
        }
    }
}

fn encode_ref(env: *mut ErlNifEnv, t: ErlNifTerm, out: &mut Vec<u8>, c: &mut RefCache, now: i64) {
    c.age(now);
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
        if c.born == 0 {
            c.born = now.max(1);
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
