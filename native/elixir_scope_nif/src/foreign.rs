//! Terms from ETF that may come from another VM (a trace read from disk).
//!
//! `binary_to_term(bytes, [:safe])` refuses a whole term when one atom in it does not exist in
//! this VM, and atoms are never created from a file. So when the safe decode fails, the term is
//! rebuilt piece by piece: containers as themselves, every leaf by a safe decode of its own bytes,
//! and a leaf that still fails as a stand-in:
//!
//! * an unknown atom becomes its name (a binary);
//! * a pid, port or reference of a node this VM has no atom for keeps being one, of a stand-in
//!   node `:elixir_scope_node_<i>` (at most [`MAX_FOREIGN_NODES`] of them; the store's
//!   [`Symbols`] remember which name each stands for), so it can be compared, matched and
//!   passed back to queries;
//! * anything else (a fun, or a node past the limit) a description such as
//!   `"#PID<app@host.85.0>"`.

use crate::terms::binary_to_term;
use elixir_scope_core::etf::{self, atom_name, skip};
use elixir_scope_core::persist::{Symbols, MAX_FOREIGN_NODES};
use rustler::{Atom, Encoder, Env, NewBinary, Term};

/// Containers nested deeper than this are not rebuilt (the stack of a NIF thread is small).
const MAX_DEPTH: usize = 256;

/// The term encoded by `bytes` (ETF with its version byte): exactly as `binary_to_term` gives
/// it when every atom exists, else with stand-ins for what this VM cannot represent (node
/// stand-ins only with `symbols`, a loaded store's). `None` when the bytes are not one
/// well-formed term.
pub fn decode<'a>(env: Env<'a>, symbols: Option<&Symbols>, bytes: &[u8]) -> Option<Term<'a>> {
    if let Some(t) = binary_to_term(env, bytes) {
        return Some(t);
    }
    let body = bytes.strip_prefix(&[etf::VERSION])?;
    let cx = Cx { env, symbols };
    let (term, end) = rebuild(&cx, body, 0, 0)?;
    (end == body.len()).then_some(term)
}

struct Cx<'a, 's> {
    env: Env<'a>,
    symbols: Option<&'s Symbols>,
}

/// The stand-in atom of foreign node `i`. Its name is ours, never taken from the input, and
/// there are at most [`MAX_FOREIGN_NODES`] of them.
pub fn node_atom(env: Env<'_>, i: usize) -> Option<Atom> {
    (i < MAX_FOREIGN_NODES)
        .then(|| Atom::from_str(env, &format!("elixir_scope_node_{i}")).ok())
        .flatten()
}

fn binary<'a>(env: Env<'a>, bytes: &[u8]) -> Term<'a> {
    let mut out = NewBinary::new(env, bytes.len());
    out.as_mut_slice().copy_from_slice(bytes);
    out.into()
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
    if let Some(t) = binary_to_term(env, &one) {
        return t;
    }
    if let Some(t) = with_node_stand_in(cx, b, pos, end) {
        return t;
    }
    let node = || node_name(b, pos + 1);
    let text = match b[pos] {
        100 | 115 | 118 | 119 => return binary(env, &atom_bytes(b, pos)),
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
        _ => return binary(env, &one),
    };
    text.encode(env)
}

/// A pid, port or reference whose node atom does not exist here, decoded with the node's
/// stand-in atom in its place.
fn with_node_stand_in<'a>(cx: &Cx<'a, '_>, b: &[u8], pos: usize, end: usize) -> Option<Term<'a>> {
    let symbols = cx.symbols?;
    let node_at = match b[pos] {
        88 | 103 | 89 | 102 | 120 | 101 => pos + 1,
        90 | 114 => pos + 3,
        _ => return None,
    };
    let node_end = skip(b, node_at)?;
    let name = atom_bytes_checked(b, node_at);
    let atom = node_atom(cx.env, symbols.node_index(&name)?)?;
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
