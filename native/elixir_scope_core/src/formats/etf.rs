//! Just enough of the External Term Format to find the parts of a stored payload without
//! decoding it: where a term ends, the elements of a tuple or a list, an atom's name.
//!
//! Every read is bounds-checked and the walk keeps a counter instead of recursing, so malformed or
//! deeply nested bytes give an error (`None`), never a panic or a stack overflow.

/// The version byte that starts a complete encoding.
pub const VERSION: u8 = 131;

/// The External Term Format's tags (the first byte of each term), named once for both crates.
pub mod tag {
    pub const NEW_FLOAT: u8 = 70;
    pub const BIT_BINARY: u8 = 77;
    pub const NEW_PID: u8 = 88;
    pub const NEW_PORT: u8 = 89;
    pub const NEWER_REFERENCE: u8 = 90;
    pub const SMALL_INTEGER: u8 = 97;
    pub const INTEGER: u8 = 98;
    pub const FLOAT: u8 = 99;
    pub const ATOM: u8 = 100;
    pub const REFERENCE: u8 = 101;
    pub const PORT: u8 = 102;
    pub const PID: u8 = 103;
    pub const SMALL_TUPLE: u8 = 104;
    pub const LARGE_TUPLE: u8 = 105;
    pub const NIL: u8 = 106;
    pub const STRING: u8 = 107;
    pub const LIST: u8 = 108;
    pub const BINARY: u8 = 109;
    pub const SMALL_BIG: u8 = 110;
    pub const LARGE_BIG: u8 = 111;
    pub const NEW_FUN: u8 = 112;
    pub const EXPORT: u8 = 113;
    pub const NEW_REFERENCE: u8 = 114;
    pub const SMALL_ATOM: u8 = 115;
    pub const MAP: u8 = 116;
    pub const ATOM_UTF8: u8 = 118;
    pub const SMALL_ATOM_UTF8: u8 = 119;
    pub const V4_PORT: u8 = 120;
}

/// Whether `t` is a tag of an atom.
pub const fn is_atom_tag(t: u8) -> bool {
    matches!(
        t,
        tag::ATOM | tag::SMALL_ATOM | tag::ATOM_UTF8 | tag::SMALL_ATOM_UTF8
    )
}

/// Whether `t` is a tag of a reference.
pub const fn is_reference_tag(t: u8) -> bool {
    matches!(
        t,
        tag::NEWER_REFERENCE | tag::NEW_REFERENCE | tag::REFERENCE
    )
}

fn byte(b: &[u8], i: usize) -> Option<u8> {
    b.get(i).copied()
}

pub fn u16_at(b: &[u8], i: usize) -> Option<usize> {
    Some(u16::from_be_bytes(b.get(i..i + 2)?.try_into().ok()?) as usize)
}

pub fn u32_at(b: &[u8], i: usize) -> Option<usize> {
    Some(u32::from_be_bytes(b.get(i..i + 4)?.try_into().ok()?) as usize)
}

/// The position just after the atom (a node name) at `pos`; anything else is malformed.
fn skip_atom(b: &[u8], pos: usize) -> Option<usize> {
    let end = match byte(b, pos)? {
        tag::ATOM | tag::ATOM_UTF8 => pos + 3 + u16_at(b, pos + 1)?,
        tag::SMALL_ATOM | tag::SMALL_ATOM_UTF8 => pos + 2 + byte(b, pos + 1)? as usize,
        _ => return None,
    };
    (end <= b.len()).then_some(end)
}

/// The position just after the term that starts at `pos`.
#[inline]
pub fn skip(b: &[u8], pos: usize) -> Option<usize> {
    walk(b, pos, |_| {})
}

/// Whether the term at `pos` holds (or is) a term whose tag byte satisfies `pred`; `None` when
/// it is malformed.
pub fn holds_tag(b: &[u8], pos: usize, pred: impl Fn(u8) -> bool) -> Option<bool> {
    let mut found = false;
    walk(b, pos, |tag| found |= pred(tag))?;
    Some(found)
}

/// Walks the term that starts at `pos`, calling `visit` with the tag of every term in it;
/// returns the position just after it.
#[inline]
fn walk(b: &[u8], pos: usize, mut visit: impl FnMut(u8)) -> Option<usize> {
    let mut pos = pos;
    // Terms still to skip: a compound adds its elements.
    let mut todo: usize = 1;
    while todo > 0 {
        todo -= 1;
        let tag = byte(b, pos)?;
        visit(tag);
        pos += 1;
        let (len, more): (usize, usize) = match tag {
            tag::SMALL_INTEGER => (1, 0),
            tag::INTEGER => (4, 0),
            tag::NEW_FLOAT => (8, 0),
            tag::FLOAT => (31, 0), // FLOAT (old)
            tag::ATOM | tag::ATOM_UTF8 => (2 + u16_at(b, pos)?, 0),
            tag::SMALL_ATOM | tag::SMALL_ATOM_UTF8 => (1 + byte(b, pos)? as usize, 0),
            tag::NIL => (0, 0),
            tag::STRING => (2 + u16_at(b, pos)?, 0),
            tag::BINARY => (4 + u32_at(b, pos)?, 0),
            tag::BIT_BINARY => (5 + u32_at(b, pos)?, 0),
            tag::SMALL_BIG => (2 + byte(b, pos)? as usize, 0),
            tag::LARGE_BIG => (5 + u32_at(b, pos)?, 0),
            tag::SMALL_TUPLE => (1, byte(b, pos)? as usize),
            tag::LARGE_TUPLE => (4, u32_at(b, pos)?),
            tag::LIST => (4, u32_at(b, pos)?.checked_add(1)?), // LIST: elements + tail
            tag::MAP => (4, u32_at(b, pos)?.checked_mul(2)?),
            tag::NEW_FUN => (u32_at(b, pos)?, 0), // NEW_FUN: size counts itself
            tag::EXPORT => (0, 3),                // EXPORT: M, F, A
            // Node-carrying terms: the node atom, then fixed fields.
            tag::NEW_PID => (skip_atom(b, pos)? - pos + 12, 0),
            tag::PID => (skip_atom(b, pos)? - pos + 9, 0),
            tag::NEW_PORT => (skip_atom(b, pos)? - pos + 8, 0),
            tag::PORT => (skip_atom(b, pos)? - pos + 5, 0),
            tag::V4_PORT => (skip_atom(b, pos)? - pos + 12, 0),
            tag::REFERENCE => (skip_atom(b, pos)? - pos + 5, 0),
            tag::NEWER_REFERENCE | tag::NEW_REFERENCE => {
                // NEWER_REFERENCE / NEW_REFERENCE: u16 count, node, creation, count words.
                let n = u16_at(b, pos)?;
                let node_end = skip_atom(b, pos + 2)?;
                let creation = if tag == tag::NEWER_REFERENCE { 4 } else { 1 };
                (node_end - pos + creation + 4 * n, 0)
            }
            _ => return None,
        };
        pos = pos.checked_add(len)?;
        if pos > b.len() {
            return None;
        }
        todo = todo.checked_add(more)?;
    }
    Some(pos)
}

/// `(arity, where its first element starts)` of the tuple at `pos`; `None` when no tuple
/// starts there.
pub fn tuple_header(b: &[u8], pos: usize) -> Option<(usize, usize)> {
    match byte(b, pos)? {
        tag::SMALL_TUPLE => Some((byte(b, pos + 1)? as usize, pos + 2)),
        tag::LARGE_TUPLE => Some((u32_at(b, pos + 1)?, pos + 5)),
        _ => None,
    }
}

/// The byte ranges of a tuple's elements, for a tuple starting at `pos`.
pub fn tuple_elements(b: &[u8], pos: usize) -> Option<Vec<&[u8]>> {
    let (n, mut p) = tuple_header(b, pos)?;
    let mut out = Vec::with_capacity(n.min(16));
    for _ in 0..n {
        let end = skip(b, p)?;
        out.push(&b[p..end]);
        p = end;
    }
    Some(out)
}

/// The byte ranges of a list's elements and of its tail, for a list starting at `pos`
/// (`[]` has no elements and the tail `NIL`).
pub fn list_elements(b: &[u8], pos: usize) -> Option<(Vec<&[u8]>, &[u8])> {
    match byte(b, pos)? {
        tag::NIL => Some((Vec::new(), &b[pos..pos + 1])),
        tag::STRING => {
            // A string of bytes: each element is one SMALL_INTEGER, not addressable as bytes of
            // the encoding, so callers comparing elements see no match.
            None
        }
        tag::LIST => {
            let n = u32_at(b, pos + 1)?;
            let mut p = pos + 5;
            let mut out = Vec::with_capacity(n.min(16));
            for _ in 0..n {
                let end = skip(b, p)?;
                out.push(&b[p..end]);
                p = end;
            }
            let end = skip(b, p)?;
            Some((out, &b[p..end]))
        }
        _ => None,
    }
}

/// The name of an atom starting at `pos` (UTF-8 or Latin-1 encodings; Latin-1 names are given
/// back only when ASCII).
pub fn atom_name(b: &[u8], pos: usize) -> Option<&str> {
    let (len, start) = match byte(b, pos)? {
        tag::ATOM | tag::ATOM_UTF8 => (u16_at(b, pos + 1)?, pos + 3),
        tag::SMALL_ATOM | tag::SMALL_ATOM_UTF8 => (byte(b, pos + 1)? as usize, pos + 2),
        _ => return None,
    };
    let name = std::str::from_utf8(b.get(start..start + len)?).ok()?;
    let latin1 = matches!(byte(b, pos)?, tag::ATOM | tag::SMALL_ATOM);
    (!latin1 || name.is_ascii()).then_some(name)
}

/// Whether the atom at `pos` is named `name`: [`atom_name`]'s answer, comparing bytes without
/// validating UTF-8 (the hot path of content queries).
#[inline]
pub fn atom_is(b: &[u8], pos: usize, name: &str) -> bool {
    let (len, start, latin1) = match byte(b, pos) {
        Some(tag::ATOM_UTF8) => (u16_at(b, pos + 1), pos + 3, false),
        Some(tag::SMALL_ATOM_UTF8) => (byte(b, pos + 1).map(usize::from), pos + 2, false),
        Some(tag::ATOM) => (u16_at(b, pos + 1), pos + 3, true),
        Some(tag::SMALL_ATOM) => (byte(b, pos + 1).map(usize::from), pos + 2, true),
        _ => return false,
    };
    len == Some(name.len())
        && b.get(start..start + name.len()) == Some(name.as_bytes())
        && (!latin1 || name.is_ascii())
}

/// The term of a complete encoding (after its version byte), or `None` when `b` does not start
/// with the version byte or holds anything after the term.
pub fn body(b: &[u8]) -> Option<&[u8]> {
    if byte(b, 0)? != VERSION {
        return None;
    }
    (skip(b, 1)? == b.len()).then(|| &b[1..])
}

/// Hand-made ETF bodies (no version byte) for tests: atoms, small integers, tuples, lists.
#[cfg(test)]
pub(crate) mod build {
    pub fn atom(s: &str) -> Vec<u8> {
        let mut v = vec![119, s.len() as u8];
        v.extend_from_slice(s.as_bytes());
        v
    }
    pub fn int(i: u8) -> Vec<u8> {
        vec![97, i]
    }
    pub fn tuple(els: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![104, els.len() as u8];
        els.iter().for_each(|e| v.extend_from_slice(e));
        v
    }
    pub fn list(els: &[Vec<u8>]) -> Vec<u8> {
        let mut v = vec![108, 0, 0, 0, els.len() as u8];
        els.iter().for_each(|e| v.extend_from_slice(e));
        v.push(106);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // {:"$gen_call", {<pid>, [:alias | <ref>]}, {:inc, 1}} as the VM of OTP 25 encodes it.
    fn sample() -> Vec<u8> {
        let mut v = vec![131, 104, 3, 119, 9];
        v.extend_from_slice(b"$gen_call");
        v.extend_from_slice(&[104, 2, 88, 119, 13]);
        v.extend_from_slice(b"nonode@nohost");
        v.extend_from_slice(&[0, 0, 0, 96, 0, 0, 0, 0, 0, 0, 0, 0]);
        v.extend_from_slice(&[108, 0, 0, 0, 1, 119, 5]);
        v.extend_from_slice(b"alias");
        v.extend_from_slice(&[90, 0, 3, 119, 13]);
        v.extend_from_slice(b"nonode@nohost");
        v.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3]);
        v.extend_from_slice(&[104, 2, 119, 3]);
        v.extend_from_slice(b"inc");
        v.extend_from_slice(&[97, 1]);
        v
    }

    #[test]
    fn atom_is_agrees_with_atom_name() {
        let utf8 = [119, 3, b'i', b'n', b'c'];
        let latin1 = [100, 0, 3, b'i', b'n', b'c'];
        let accented = [115, 1, 0xE9]; // :é in Latin-1
        for b in [&utf8[..], &latin1[..]] {
            assert!(atom_is(b, 0, "inc"));
            assert!(!atom_is(b, 0, "in"));
            assert!(!atom_is(b, 0, "incr"));
        }
        assert_eq!(atom_name(&accented, 0), None);
        assert!(!atom_is(&accented, 0, "é"));
        assert!(!atom_is(&[97, 1], 0, "inc"));
        assert!(!atom_is(&[119, 9, b'i'], 0, "increment"));
    }

    #[test]
    fn walks_a_gen_call_message() {
        let b = sample();
        let body = body(&b).unwrap();
        let els = tuple_elements(body, 0).unwrap();
        assert_eq!(els.len(), 3);
        assert_eq!(atom_name(els[0], 0), Some("$gen_call"));
        let from = tuple_elements(els[1], 0).unwrap();
        let (alias, tail) = list_elements(from[1], 0).unwrap();
        assert_eq!(atom_name(alias[0], 0), Some("alias"));
        assert_eq!(tail[0], 90);
        assert_eq!(tuple_elements(els[2], 0).unwrap()[1], &[97, 1]);
    }

    #[test]
    fn holds_tag_sees_nested_terms_not_bytes() {
        let b = sample();
        let body = body(&b).unwrap();
        let pid = |t| t == 88;
        assert_eq!(holds_tag(body, 0, pid), Some(true));
        let els = tuple_elements(body, 0).unwrap();
        assert_eq!(holds_tag(els[2], 0, pid), Some(false), "{{:inc, 1}}");
        // A binary whose bytes look like a pid tag holds none.
        let bin = [109, 0, 0, 0, 3, 88, 88, 88];
        assert_eq!(holds_tag(&bin, 0, pid), Some(false));
        assert_eq!(holds_tag(&bin[..6], 0, pid), None, "malformed");
    }

    #[test]
    fn rejects_truncated_and_trailing_bytes() {
        let b = sample();
        for cut in 1..b.len() {
            assert!(body(&b[..cut]).is_none(), "cut at {cut}");
        }
        let mut extra = b.clone();
        extra.push(106);
        assert!(body(&extra).is_none());
        assert!(body(&[130, 106]).is_none());
    }

    #[test]
    fn node_names_must_be_atoms() {
        // A pid whose "node" is another pid, and so on: rejected, not recursed into.
        let b: Vec<u8> = std::iter::repeat_n(88, 100_000).collect();
        assert_eq!(skip(&b, 0), None);
    }

    #[test]
    fn deep_nesting_costs_no_stack() {
        let mut b = vec![131];
        for _ in 0..1_000_000 {
            b.extend_from_slice(&[104, 1]);
        }
        b.push(106);
        assert_eq!(skip(&b, 1), Some(b.len()));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn never_panics_on_random_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let _ = skip(&bytes, 0);
            let _ = tuple_elements(&bytes, 0);
            let _ = list_elements(&bytes, 0);
            let _ = atom_name(&bytes, 0);
            let _ = body(&bytes);
        }

        #[test]
        fn never_panics_on_mutated_samples(i in 0usize..120, v in any::<u8>()) {
            let mut b = sample();
            let i = i % b.len();
            b[i] = v;
            if let Some(t) = body(&b) {
                let _ = tuple_elements(t, 0);
            }
        }
    }
}
