//! Terms from ETF that may come from another VM (a trace read from disk).
//!
//! `binary_to_term(bytes, [:safe])` refuses a whole term when one atom in it does not exist in
//! this VM, and atoms are never created from a file. So when the safe decode fails, the term is
//! rebuilt piece by piece: containers as themselves, every leaf by a safe decode of its own bytes,
//! and a leaf that still fails as a stand-in:
//!
//! * an unknown atom becomes its name (a binary);
//! * a pid, port or reference of a node this VM has no atom for keeps being one, of a stand-in
//!   node `:elixir_scope_node_<i>` (at most [`MAX_FOREIGN_NODES`] of them, one per node name
//!   for the whole VM: see [`foreign_nodes`]), so it can be compared, matched and passed back
//!   to queries;
//! * anything else (a fun, or a node past the limit) a description such as
//!   `"#PID<app@host.85.0>"`.
//!
//! A trace captured by another run of a VM gets stand-in nodes for *all* its pids, ports and
//! references, even of a node this VM knows: a pid `<0.85.0>` of another run is not this VM's
//! `<0.85.0>` (see [`run_token`]).

use crate::terms::{binary_term, binary_to_term};
use elixir_scope_core::formats::etf::{self, atom_name, skip};
use elixir_scope_core::persist::Symbols;
use parking_lot::Mutex;
use rustler::{Atom, Encoder, Env, Term};
use std::sync::atomic::{AtomicU64, Ordering};

/// Nodes given a stand-in atom at most; beyond, their terms become descriptions.
pub const MAX_FOREIGN_NODES: usize = 64;

/// Names of the nodes given stand-ins, by index: one table for the whole VM, so a node has the
/// same stand-in in every trace opened.
static NODES: Mutex<Vec<Box<[u8]>>> = Mutex::new(Vec::new());

/// The index of the stand-in for the node named `name`, made on first use.
fn node_index(name: &[u8]) -> Option<usize> {
    let mut nodes = NODES.lock();
    if let Some(i) = nodes.iter().position(|n| &n[..] == name) {
        return Some(i);
    }
    (nodes.len() < MAX_FOREIGN_NODES).then(|| {
        nodes.push(name.into());
        nodes.len() - 1
    })
}

/// The nodes given stand-ins so far: `(index, name)`.
pub fn foreign_nodes() -> Vec<(usize, Box<[u8]>)> {
    NODES.lock().iter().cloned().enumerate().collect()
}

static RUN: AtomicU64 = AtomicU64::new(0);

/// A token of this run of the VM, written into every trace it captures: 64 random bits, made
/// once.
pub fn run_token() -> u64 {
    let t = RUN.load(Ordering::Relaxed);
    if t != 0 {
        return t;
    }
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    let fresh = h.finish() | 1;
    match RUN.compare_exchange(0, fresh, Ordering::Relaxed, Ordering::Relaxed) {
        Ok(_) => fresh,
        Err(existing) => existing,
    }
}

/// Whether terms of a store with these symbols come from another run (no symbols: a live
/// store, this run).
pub fn other_run(symbols: Option<&Symbols>) -> bool {
    symbols.is_some_and(|s| s.run() != Some(run_token()))
}

/// Containers nested deeper than this are not rebuilt (the stack of a NIF thread is small).
const MAX_DEPTH: usize = 256;

/// The term encoded by `bytes` (ETF with its version byte): exactly as `binary_to_term` gives
/// it when every atom exists, else with stand-ins for what this VM cannot represent (node
/// stand-ins only with `symbols`, a loaded store's). `None` when the bytes are not one
/// well-formed term.
pub fn decode<'a>(env: Env<'a>, symbols: Option<&Symbols>, bytes: &[u8]) -> Option<Term<'a>> {
    let other_run = other_run(symbols);
    // A term of another run may hold pids that decode as this VM's: rebuilt, whatever it is.
    if !other_run || !may_hold_node(bytes) {
        if let Some(t) = binary_to_term(env, bytes) {
            return Some(t);
        }
    }
    let body = bytes.strip_prefix(&[etf::VERSION])?;
    let cx = Cx {
        env,
        symbols,
        other_run,
    };
    let (term, end) = rebuild(&cx, body, 0, 0)?;
    (end == body.len()).then_some(term)
}

struct Cx<'a, 's> {
    env: Env<'a>,
    symbols: Option<&'s Symbols>,
    /// Every node-carrying term gets a stand-in node.
    other_run: bool,
}

/// Whether ETF bytes (version byte included) may hold a pid, port or reference: walks the
/// term's structure (a malformed term counts as holding one, to take the careful path).
fn may_hold_node(bytes: &[u8]) -> bool {
    let Some(body) = bytes.strip_prefix(&[etf::VERSION]) else {
        return true;
    };
    etf::holds_tag(body, 0, |t| {
        matches!(t, 88 | 103 | 89 | 102 | 120 | 101 | 90 | 114)
    })
    .unwrap_or(true)
}

/// The stand-in atom of foreign node `i`. Its name is ours, never taken from the input, and
/// there are at most [`MAX_FOREIGN_NODES`] of them.
pub fn node_atom(env: Env<'_>, i: usize) -> Option<Atom> {
    (i < MAX_FOREIGN_NODES)
        .then(|| Atom::from_str(env, &format!("elixir_scope_node_{i}")).ok())
        .flatten()
}

/// The term at `pos` of `b` (ETF without version byte) and where it ends.
fn rebuild<'a>(cx: &Cx<'a, '_>, b: &[u8], pos: usize, depth: usize) -> Option<(Term<'a>, usize)> {
    let env = cx.env;
    let end = skip(b, pos)?;
    let tag = *b.get(pos)?;
    let term = match tag {
        104 | 105 if depth < MAX_DEPTH => {
            let elems = etf::tuple_elements(b, pos)?;
            let mut p = if tag == 104 { pos + 2 } else { pos + 5 };
            let mut terms = Vec::with_capacity(elems.len());
            for _ in &elems {
                let (t, next) = rebuild(cx, b, p, depth + 1)?;
                terms.push(t);
                p = next;
            }
            rustler::types::tuple::make_tuple(env, &terms)
        }
        108 if depth < MAX_DEPTH => {
            let n = etf::u32_at(b, pos + 1)?;
            let mut p = pos + 5;
            let mut items = Vec::with_capacity(n.min(1024));
            for _ in 0..n {
                let (t, next) = rebuild(cx, b, p, depth + 1)?;
                items.push(t);
                p = next;
            }
            let (tail, _) = rebuild(cx, b, p, depth + 1)?;
            items
                .into_iter()
                .rev()
                .fold(tail, |acc, head| acc.list_prepend(head))
        }
        116 if depth < MAX_DEPTH => {
            let n = etf::u32_at(b, pos + 1)?;
            let mut p = pos + 5;
            let mut map = Term::map_new(env);
            for _ in 0..n {
                let (k, next) = rebuild(cx, b, p, depth + 1)?;
                let (v, next) = rebuild(cx, b, next, depth + 1)?;
                // Two stand-ins can collide (an unknown atom and the binary of its name): the
                // later pair wins, as in a map literal.
                map = map.map_put(k, v).ok()?;
                p = next;
            }
            map
        }
        _ => leaf(cx, b, pos, end),
    };
    Some((term, end))
}

/// A term with no container to rebuild: decoded safely from its own bytes, or a stand-in.
fn leaf<'a>(cx: &Cx<'a, '_>, b: &[u8], pos: usize, end: usize) -> Term<'a> {
    let env = cx.env;
    let mut one = Vec::with_capacity(end - pos + 1);
    one.push(etf::VERSION);
    one.extend_from_slice(&b[pos..end]);
    let node_carrying = matches!(b[pos], 88 | 103 | 89 | 102 | 120 | 101 | 90 | 114);
    if !(cx.other_run && node_carrying) {
        if let Some(t) = binary_to_term(env, &one) {
            return t;
        }
    }
    if let Some(t) = with_node_stand_in(cx, b, pos, end) {
        return t;
    }
    let node = || node_name(b, pos + 1);
    let text = match b[pos] {
        100 | 115 | 118 | 119 => return binary_term(env, &atom_bytes(b, pos)),
        88 | 103 => {
            let after = etf::skip(b, pos + 1).unwrap_or(end);
            let id = etf::u32_at(b, after).unwrap_or(0);
            let serial = etf::u32_at(b, after + 4).unwrap_or(0);
            format!("#PID<{}.{id}.{serial}>", node())
        }
        89 | 102 | 120 => format!("#Port<{}>", node()),
        101 => format!("#Reference<{}>", node()),
        90 | 114 => format!("#Reference<{}>", node_name(b, pos + 3)),
        112 | 113 => "#Fun<unknown>".to_string(),
        // Anything else holds no atom and decodes; a malformed leaf keeps its bytes.
        _ => return binary_term(env, &one),
    };
    text.encode(env)
}

/// A pid, port or reference of a loaded trace whose node atom does not exist here (or of
/// another run), decoded with the node's stand-in atom in its place.
fn with_node_stand_in<'a>(cx: &Cx<'a, '_>, b: &[u8], pos: usize, end: usize) -> Option<Term<'a>> {
    cx.symbols?;
    let node_at = match b[pos] {
        88 | 103 | 89 | 102 | 120 | 101 => pos + 1,
        90 | 114 => pos + 3,
        _ => return None,
    };
    let node_end = skip(b, node_at)?;
    let name = atom_bytes_checked(b, node_at);
    let atom = node_atom(cx.env, node_index(&name)?)?;
    let mut bytes = Vec::with_capacity(end - pos + 32);
    bytes.push(etf::VERSION);
    bytes.extend_from_slice(&b[pos..node_at]);
    bytes.extend_from_slice(&atom.to_term(cx.env).to_binary().as_slice()[1..]);
    bytes.extend_from_slice(b.get(node_end..end)?);
    binary_to_term(cx.env, &bytes)
}

/// An atom's name as UTF-8 (Latin-1 names converted).
fn atom_bytes(b: &[u8], pos: usize) -> Vec<u8> {
    if let Some(name) = atom_name(b, pos) {
        return name.as_bytes().to_vec();
    }
    let (len, start) = match b[pos] {
        100 | 118 => (etf::u16_at(b, pos + 1).unwrap_or(0), pos + 3),
        _ => (b.get(pos + 1).map_or(0, |&n| n as usize), pos + 2),
    };
    let raw = b.get(start..start + len).unwrap_or_default();
    if matches!(b[pos], 100 | 115) {
        raw.iter()
            .map(|&c| c as char)
            .collect::<String>()
            .into_bytes()
    } else {
        String::from_utf8_lossy(raw).into_owned().into_bytes()
    }
}

fn node_name(b: &[u8], pos: usize) -> String {
    String::from_utf8_lossy(&atom_bytes_checked(b, pos)).into_owned()
}

fn atom_bytes_checked(b: &[u8], pos: usize) -> Vec<u8> {
    match b.get(pos) {
        Some(100 | 115 | 118 | 119) => atom_bytes(b, pos),
        _ => b"?".to_vec(),
    }
}
