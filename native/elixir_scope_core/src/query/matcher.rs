//! Elixir patterns with guards, evaluated on stored ETF bytes without building terms.
//!
//! A [`Matcher`] is data — a pattern tree and a guard tree, compiled by the Elixir side from
//! user patterns such as `{:increment, n} when n > 5` — run against the payload of each event a
//! query scans. Atoms are compared by name, so nothing here needs (or creates) an atom. Bound
//! variables come back as byte ranges of the payload, which the caller decodes only for matches.
//!
//! Every read is bounds-checked; a malformed payload simply does not match. Recursion follows the
//! pattern (whose depth is limited by [`MAX_PATTERN_DEPTH`]), never the data.

use crate::formats::etf::{self, u16_at, u32_at};
use std::borrow::Cow;
use std::cmp::Ordering;
use std::ops::Range;

/// Deepest pattern accepted.
pub const MAX_PATTERN_DEPTH: usize = 64;
/// Most variables a pattern may bind.
pub const MAX_VARS: usize = 64;

/// A pattern node.
#[derive(Clone, Debug, PartialEq)]
pub enum Pat {
    /// `_`: anything.
    Any,
    /// A variable: binds on first use; later uses must be equal to the bound value.
    Var(usize),
    /// An atom, by name.
    Atom(String),
    /// An integer.
    Int(i128),
    /// A float (matches only floats equal to it, as `===` would).
    Float(f64),
    /// A binary, exactly.
    Binary(Vec<u8>),
    /// `"prefix" <> rest`.
    BinaryPrefix(Vec<u8>, Box<Pat>),
    /// A tuple of exactly these elements.
    Tuple(Vec<Pat>),
    /// A list: these elements, then the tail (`Pat::Nil` for a proper list).
    List(Vec<Pat>, Box<Pat>),
    /// `[]`.
    Nil,
    /// A map holding at least these keys (literal patterns) with values matching.
    Map(Vec<(Pat, Pat)>),
    /// A map holding exactly these keys (a pinned map, or a map literal in a guard).
    MapExact(Vec<(Pat, Pat)>),
    /// Exactly these ETF bytes (pids, references, ports, funs given as pinned values).
    Exact(Vec<u8>),
}

/// A comparison operator of a guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `===`
    StrictEq,
    /// `!==`
    StrictNe,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A type test of a guard.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TypeTest {
    /// `is_integer`
    Integer,
    /// `is_float`
    Float,
    /// `is_number`
    Number,
    /// `is_atom`
    Atom,
    /// `is_boolean`
    Boolean,
    /// `is_nil`
    Nil,
    /// `is_binary`
    Binary,
    /// `is_list`
    List,
    /// `is_tuple`
    Tuple,
    /// `is_map`
    Map,
    /// `is_pid`
    Pid,
    /// `is_reference`
    Reference,
}

/// An operand of a comparison: a bound variable or a literal.
#[derive(Clone, Debug, PartialEq)]
pub enum Operand {
    /// A variable of the pattern.
    Var(usize),
    /// A literal (a pattern without variables).
    Lit(Pat),
}

/// A guard.
#[derive(Clone, Debug, PartialEq)]
pub enum Guard {
    /// No guard.
    True,
    /// Both.
    And(Box<Guard>, Box<Guard>),
    /// Either.
    Or(Box<Guard>, Box<Guard>),
    /// Not.
    Not(Box<Guard>),
    /// A comparison. Ordering follows Elixir's term order between values of different types,
    /// and within numbers, atoms (by name) and binaries; two tuples, maps, lists, pids, ... are
    /// not ordered (the comparison is false).
    Cmp(CmpOp, Operand, Operand),
    /// A type test on a variable.
    Is(TypeTest, usize),
    /// `var in [literals]`, each compared with `===` as Elixir does in guards.
    In(usize, Vec<Pat>),
}

/// A compiled pattern with its guard.
#[derive(Clone, Debug, PartialEq)]
pub struct Matcher {
    /// The pattern.
    pub pattern: Pat,
    /// The guard, over the pattern's variables.
    pub guard: Guard,
    /// How many variables the pattern binds.
    pub vars: usize,
}

/// Why a matcher was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MatcherError {
    /// Nesting deeper than [`MAX_PATTERN_DEPTH`].
    #[error("the pattern is nested deeper than 64 levels")]
    TooDeep,
    /// More than [`MAX_VARS`] variables, or a variable index out of range.
    #[error("the pattern uses a variable it does not declare (or more than 64 variables)")]
    BadVar,
    /// A map key that is not a literal.
    #[error("map keys in patterns must be literals")]
    MapKey,
}

/// What a variable is bound to, within the payload given to [`Matcher::run`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bound {
    /// The term at this byte range.
    Term(Range<usize>),
    /// An element of a charlist stored as bytes (STRING_EXT).
    Int(i128),
    /// The list at this byte range without its first `n` elements (`t` in `[h | t]`).
    ListTail(Range<usize>, usize),
    /// The binary at this byte range without its first `n` bytes (`rest` in `"p" <> rest`).
    BinaryRest(Range<usize>, usize),
}

/// The matcher's variables, by index.
pub type Bindings = Vec<Option<Bound>>;

impl Matcher {
    /// Checks depth, variable indexes and map keys.
    ///
    /// # Errors
    /// [`MatcherError`] naming the problem.
    pub fn validate(&self) -> Result<(), MatcherError> {
        if self.vars > MAX_VARS {
            return Err(MatcherError::BadVar);
        }
        check_pat(&self.pattern, self.vars, 0, false)?;
        check_guard(&self.guard, self.vars, 0)
    }

    /// Matches `term` (ETF bytes of one term, without the version byte) and evaluates the
    /// guard; on success, the variables' byte ranges within `term` (what tests look at;
    /// scans reuse one bindings buffer through `matches`).
    #[cfg(test)]
    pub fn run(&self, term: &[u8]) -> Option<Bindings> {
        let mut b = Vec::new();
        self.matches(term, &mut b).then_some(b)
    }

    /// The tag every matching message has, when the pattern fixes one: an atom, or a tuple
    /// whose first element is an atom (so the tag index can stand in for a scan).
    pub fn tag(&self) -> Option<&str> {
        match &self.pattern {
            Pat::Atom(a) => Some(a),
            Pat::Tuple(els) => match els.first() {
                Some(Pat::Atom(a)) => Some(a),
                _ => None,
            },
            _ => None,
        }
    }

    /// [`Matcher::run`] into a reused buffer (no allocation per event once it has grown):
    /// whether `term` matches; on success `binds` holds the variables.
    pub fn matches(&self, term: &[u8], binds: &mut Bindings) -> bool {
        binds.clear();
        binds.resize(self.vars, None);
        match_pat(&self.pattern, term, 0, binds) == Some(term.len())
            && guard(&self.guard, term, binds) == Some(true)
    }
}

fn check_pat(p: &Pat, vars: usize, depth: usize, literal: bool) -> Result<(), MatcherError> {
    if depth > MAX_PATTERN_DEPTH {
        return Err(MatcherError::TooDeep);
    }
    match p {
        Pat::Var(i) if *i >= vars || literal => Err(MatcherError::BadVar),
        Pat::BinaryPrefix(_, rest) => check_pat(rest, vars, depth + 1, literal),
        Pat::Tuple(els) => els
            .iter()
            .try_for_each(|e| check_pat(e, vars, depth + 1, literal)),
        Pat::List(els, tail) => {
            els.iter()
                .try_for_each(|e| check_pat(e, vars, depth + 1, literal))?;
            check_pat(tail, vars, depth + 1, literal)
        }
        Pat::Map(kvs) | Pat::MapExact(kvs) => kvs.iter().try_for_each(|(k, v)| {
            check_pat(k, vars, depth + 1, true).map_err(|_| MatcherError::MapKey)?;
            check_pat(v, vars, depth + 1, literal)
        }),
        _ => Ok(()),
    }
}

fn check_guard(g: &Guard, vars: usize, depth: usize) -> Result<(), MatcherError> {
    if depth > MAX_PATTERN_DEPTH {
        return Err(MatcherError::TooDeep);
    }
    let operand = |o: &Operand| match o {
        Operand::Var(i) if *i >= vars => Err(MatcherError::BadVar),
        Operand::Lit(p) => check_pat(p, vars, depth + 1, true),
        _ => Ok(()),
    };
    match g {
        Guard::True => Ok(()),
        Guard::And(a, b) | Guard::Or(a, b) => {
            check_guard(a, vars, depth + 1)?;
            check_guard(b, vars, depth + 1)
        }
        Guard::Not(a) => check_guard(a, vars, depth + 1),
        Guard::Cmp(_, a, b) => {
            operand(a)?;
            operand(b)
        }
        Guard::Is(_, i) if *i >= vars => Err(MatcherError::BadVar),
        Guard::Is(_, _) => Ok(()),
        Guard::In(i, lits) => {
            if *i >= vars {
                return Err(MatcherError::BadVar);
            }
            lits.iter()
                .try_for_each(|l| check_pat(l, vars, depth + 1, true))
        }
    }
}

// Reading values out of ETF.

/// A number at `pos`: an integer (up to 16 bytes) or a float.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Num {
    Int(i128),
    Float(f64),
}

fn number(b: &[u8], pos: usize) -> Option<Num> {
    match *b.get(pos)? {
        97 => Some(Num::Int(*b.get(pos + 1)? as i128)),
        98 => Some(Num::Int(
            i32::from_be_bytes(b.get(pos + 1..pos + 5)?.try_into().ok()?) as i128,
        )),
        110 => {
            let n = *b.get(pos + 1)? as usize;
            let sign = *b.get(pos + 2)?;
            if n > 16 {
                return None;
            }
            let digits = b.get(pos + 3..pos + 3 + n)?;
            let mag = digits
                .iter()
                .rev()
                .fold(0u128, |acc, d| (acc << 8) | *d as u128);
            let v = i128::try_from(mag).ok()?;
            Some(Num::Int(if sign == 0 { v } else { -v }))
        }
        70 => Some(Num::Float(f64::from_bits(u64::from_be_bytes(
            b.get(pos + 1..pos + 9)?.try_into().ok()?,
        )))),
        _ => None,
    }
}

fn binary(b: &[u8], pos: usize) -> Option<&[u8]> {
    if *b.get(pos)? != 109 {
        return None;
    }
    let len = u32_at(b, pos + 1)?;
    b.get(pos + 5..pos + 5 + len)
}

fn cmp_num(a: Num, b: Num) -> Option<Ordering> {
    match (a, b) {
        (Num::Int(x), Num::Int(y)) => Some(x.cmp(&y)),
        (Num::Int(x), Num::Float(y)) => (x as f64).partial_cmp(&y),
        (Num::Float(x), Num::Int(y)) => x.partial_cmp(&(y as f64)),
        (Num::Float(x), Num::Float(y)) => x.partial_cmp(&y),
    }
}

// Matching.

/// Matches `p` against the term at `pos`; the position after it on success.
fn match_pat(p: &Pat, b: &[u8], pos: usize, binds: &mut Bindings) -> Option<usize> {
    // A tuple's end is where its last element ends: no need to walk it twice.
    if let Pat::Tuple(els) = p {
        let (arity, first) = etf::tuple_header(b, pos)?;
        if arity != els.len() {
            return None;
        }
        let mut next = first;
        for e in els {
            next = match_pat(e, b, next, binds)?;
        }
        return Some(next);
    }
    match p {
        Pat::Map(kvs) => return match_map(kvs, false, b, pos, binds),
        Pat::MapExact(kvs) => return match_map(kvs, true, b, pos, binds),
        _ => {}
    }
    let end = etf::skip(b, pos)?;
    let ok = match p {
        Pat::Any => true,
        Pat::Var(i) => match binds.get(*i)?.clone() {
            None => {
                binds[*i] = Some(Bound::Term(pos..end));
                true
            }
            Some(bound) => bound_is(b, &bound, &b[pos..end]),
        },
        Pat::Atom(name) => etf::atom_is(b, pos, name),
        Pat::Int(v) => number(b, pos) == Some(Num::Int(*v)),
        Pat::Float(v) => number(b, pos) == Some(Num::Float(*v)),
        Pat::Binary(bytes) => binary(b, pos) == Some(bytes.as_slice()),
        Pat::BinaryPrefix(prefix, rest) => match binary(b, pos) {
            Some(data) if data.starts_with(prefix) => match rest.as_ref() {
                Pat::Any => true,
                Pat::Binary(tail) => &data[prefix.len()..] == tail.as_slice(),
                Pat::Var(i) => match binds.get(*i)?.clone() {
                    None => {
                        binds[*i] = Some(Bound::BinaryRest(pos..end, prefix.len()));
                        true
                    }
                    // A repeated variable: the rest must equal the binary it is bound to.
                    Some(bound) => bound_binary(b, &bound) == Some(&data[prefix.len()..]),
                },
                _ => false,
            },
            _ => false,
        },
        Pat::Tuple(_) => false, // matched above
        Pat::Nil => *b.get(pos)? == 106,
        Pat::List(els, tail) => match_list(els, tail, b, pos, end, binds)?,
        Pat::Map(_) | Pat::MapExact(_) => false, // matched above
        Pat::Exact(bytes) => &b[pos..end] == bytes.as_slice(),
    };
    ok.then_some(end)
}

/// `==` between a literal and the term at `pos`: numbers compare by value at any depth of
/// tuples and proper lists (`{1} == {1.0}`); other literals as a pattern would.
fn loose_lit(p: &Pat, b: &[u8], pos: usize) -> Option<bool> {
    match p {
        Pat::Int(i) => Some(cmp_num(number(b, pos)?, Num::Int(*i)) == Some(Ordering::Equal)),
        Pat::Float(f) => Some(cmp_num(number(b, pos)?, Num::Float(*f)) == Some(Ordering::Equal)),
        Pat::Tuple(els) => {
            let Some((arity, mut at)) = etf::tuple_header(b, pos) else {
                return Some(false);
            };
            if arity != els.len() {
                return Some(false);
            }
            for e in els {
                if !loose_lit(e, b, at)? {
                    return Some(false);
                }
                at = etf::skip(b, at)?;
            }
            Some(true)
        }
        Pat::List(els, tail) if **tail == Pat::Nil => {
            if !matches!(*b.get(pos)?, 106..=108) || improper(b, pos)? {
                return Some(false);
            }
            let items = list_items(b, pos)?;
            if items.len() != els.len() {
                return Some(false);
            }
            for (e, item) in els.iter().zip(items) {
                let same = match item {
                    Item::Byte(m) => loose_lit(e, &[97, m], 0)?,
                    Item::At(q) => loose_lit(e, b, q)?,
                };
                if !same {
                    return Some(false);
                }
            }
            Some(true)
        }
        _ => {
            let end = etf::skip(b, pos)?;
            let mut none: Bindings = Vec::new();
            Some(match_pat(p, &b[..end], pos, &mut none) == Some(end))
        }
    }
}

/// Whether the list at `pos` ends in something other than `[]`.
fn improper(b: &[u8], pos: usize) -> Option<bool> {
    match *b.get(pos)? {
        106 | 107 => Some(false),
        108 => {
            let mut p = pos + 5;
            for _ in 0..u32_at(b, pos + 1)? {
                p = etf::skip(b, p)?;
            }
            Some(*b.get(p)? != 106)
        }
        _ => None,
    }
}

fn match_list(
    els: &[Pat],
    tail: &Pat,
    b: &[u8],
    pos: usize,
    end: usize,
    binds: &mut Bindings,
) -> Option<bool> {
    match *b.get(pos)? {
        // `[]`: no elements; the tail pattern meets `[]` itself.
        106 => Some(els.is_empty() && match_pat(tail, b, pos, binds).is_some()),
        107 => {
            // STRING_EXT: a list of small integers, stored as bytes.
            let len = u16_at(b, pos + 1)?;
            let bytes = b.get(pos + 3..pos + 3 + len)?;
            if els.len() > bytes.len() {
                return Some(false);
            }
            for (e, &byte) in els.iter().zip(bytes) {
                let ok = match e {
                    Pat::Any => true,
                    Pat::Int(v) => *v == byte as i128,
                    Pat::Var(i) => match binds.get(*i)? {
                        None => {
                            binds[*i] = Some(Bound::Int(byte as i128));
                            true
                        }
                        Some(bound) => bound_is(b, bound, &[97, byte]),
                    },
                    _ => false,
                };
                if !ok {
                    return Some(false);
                }
            }
            Some(rest_of_list(
                tail,
                els.len(),
                bytes.len(),
                b,
                pos..end,
                binds,
            ))
        }
        108 => {
            let n = u32_at(b, pos + 1)?;
            if els.len() > n {
                return Some(false);
            }
            let mut p = pos + 5;
            for e in els {
                p = match match_pat(e, b, p, binds) {
                    Some(p) => p,
                    None => return Some(false),
                };
            }
            if els.len() == n {
                // The list's own tail term follows its elements.
                return Some(match_pat(tail, b, p, binds).is_some());
            }
            Some(rest_of_list(tail, els.len(), n, b, pos..end, binds))
        }
        _ => Some(false),
    }
}

/// The pattern's tail against the list's remaining elements (`t` in `[h | t]`), when the pattern
/// named fewer elements than the list has: a wildcard, or a variable bound to the rest.
fn rest_of_list(
    tail: &Pat,
    taken: usize,
    len: usize,
    b: &[u8],
    list: Range<usize>,
    binds: &mut Bindings,
) -> bool {
    match tail {
        Pat::Any => true,
        Pat::Nil => taken == len,
        Pat::Var(i) => match binds.get(*i).cloned() {
            Some(None) => {
                binds[*i] = Some(Bound::ListTail(list, taken));
                true
            }
            // A repeated variable: the tail must be the same list as what it is bound to.
            Some(Some(bound)) => b
                .get(list)
                .and_then(|l| tail_term(l, taken))
                .is_some_and(|tail| bound_is(b, &bound, &tail)),
            None => false,
        },
        _ => false,
    }
}

/// Whether the variable bound as `bound` (in `b`) holds exactly `term` (a whole encoding), as
/// a repeated variable must: whatever way each occurrence was bound.
fn bound_is(b: &[u8], bound: &Bound, term: &[u8]) -> bool {
    match bound {
        Bound::Term(r) => b.get(r.clone()).is_some_and(|x| equal(x, term, true)),
        Bound::Int(v) => number(term, 0) == Some(Num::Int(*v)),
        Bound::BinaryRest(..) => binary(term, 0).is_some_and(|x| bound_binary(b, bound) == Some(x)),
        Bound::ListTail(r, n) => b
            .get(r.clone())
            .and_then(|l| tail_term(l, *n))
            .is_some_and(|t| equal(&t, term, true)),
    }
}

/// The binary a bound variable holds, if it holds one: a whole binary term, or the rest of one
/// after a prefix.
fn bound_binary<'b>(b: &'b [u8], bound: &Bound) -> Option<&'b [u8]> {
    match bound {
        Bound::Term(r) => binary(b, r.start),
        Bound::BinaryRest(r, n) => binary(b, r.start)?.get(*n..),
        Bound::Int(_) | Bound::ListTail(..) => None,
    }
}

/// Matches a map pattern (its keys are literals) at `pos`; the map's end on success. Pattern
/// maps hold a key or two, so each key is looked up by walking the entries, allocating nothing.
fn match_map(
    kvs: &[(Pat, Pat)],
    exact: bool,
    b: &[u8],
    pos: usize,
    binds: &mut Bindings,
) -> Option<usize> {
    if *b.get(pos)? != 116 {
        return None;
    }
    let n = u32_at(b, pos + 1)?;
    if exact && n != kvs.len() {
        return None;
    }
    let first = pos + 5;
    let end = etf::skip(b, pos)?;
    for (kp, vp) in kvs {
        let mut p = first;
        let mut value_at = None;
        for _ in 0..n {
            let k_end = etf::skip(b, p)?;
            if match_pat(kp, &b[..k_end], p, &mut Vec::new()).is_some() {
                value_at = Some(k_end);
                break;
            }
            p = etf::skip(b, k_end)?;
        }
        match_pat(vp, b, value_at?, binds)?;
    }
    Some(end)
}

// Guards.

fn operand<'a>(o: &'a Operand, b: &'a [u8], binds: &Bindings) -> Option<Value<'a>> {
    match o {
        Operand::Var(i) => Some(match binds.get(*i)?.clone()? {
            Bound::Term(r) => Value::Bytes(Cow::Borrowed(&b[r])),
            Bound::Int(v) => Value::Int(v),
            Bound::BinaryRest(r, n) => Value::Bin(binary(b.get(r)?, 0)?.get(n..)?),
            // A tail is compared as the list it is, built aside (guards on tails are rare).
            Bound::ListTail(r, n) => Value::Bytes(Cow::Owned(tail_term(b.get(r)?, n)?)),
        }),
        Operand::Lit(p) => Some(Value::Lit(p)),
    }
}

enum Value<'a> {
    /// A bound term's encoding.
    Bytes(Cow<'a, [u8]>),
    /// An element of a byte string (STRING_EXT).
    Int(i128),
    /// A literal of the guard.
    Lit(&'a Pat),
    /// The rest of a binary after a prefix: its bytes.
    Bin(&'a [u8]),
}

/// The encoding of the tail of the list `list` after its first `n` elements.
fn tail_term(list: &[u8], n: usize) -> Option<Vec<u8>> {
    let cons = |elements: &mut dyn Iterator<Item = Vec<u8>>, count: usize, tail: &[u8]| {
        let mut out = vec![108];
        out.extend_from_slice(&(count as u32).to_be_bytes());
        elements.for_each(|e| out.extend_from_slice(&e));
        out.extend_from_slice(tail);
        out
    };
    match *list.first()? {
        106 => (n == 0).then(|| vec![106]),
        107 => {
            // A byte string: its elements are small integers.
            let len = u16_at(list, 1)?;
            let rest = list.get(3..3 + len)?.get(n..)?;
            Some(if rest.is_empty() {
                vec![106]
            } else {
                cons(&mut rest.iter().map(|&c| vec![97, c]), rest.len(), &[106])
            })
        }
        108 => {
            let (els, tail) = etf::list_elements(list, 0)?;
            let rest = els.get(n..)?;
            Some(if rest.is_empty() {
                tail.to_vec()
            } else {
                cons(&mut rest.iter().map(|e| e.to_vec()), rest.len(), tail)
            })
        }
        _ => None,
    }
}

fn num_of(v: &Value) -> Option<Num> {
    match v {
        Value::Bytes(b) => number(b, 0),
        Value::Int(i) => Some(Num::Int(*i)),
        Value::Lit(Pat::Int(i)) => Some(Num::Int(*i)),
        Value::Lit(Pat::Float(f)) => Some(Num::Float(*f)),
        _ => None,
    }
}

fn atom_of<'a>(v: &'a Value) -> Option<&'a str> {
    match v {
        Value::Bytes(b) => etf::atom_name(b, 0),
        Value::Lit(Pat::Atom(a)) => Some(a),
        _ => None,
    }
}

fn binary_of<'a>(v: &'a Value) -> Option<&'a [u8]> {
    match v {
        Value::Bytes(b) => binary(b, 0),
        Value::Bin(x) => Some(x),
        Value::Lit(Pat::Binary(x)) => Some(x),
        _ => None,
    }
}

/// The place of a value's type in the term order: number < atom < reference < fun < port < pid
/// < tuple < map < list < bitstring.
fn rank(v: &Value) -> Option<u8> {
    Some(match v {
        Value::Int(_) | Value::Lit(Pat::Int(_) | Pat::Float(_)) => 0,
        Value::Lit(Pat::Atom(_)) => 1,
        Value::Lit(Pat::Tuple(_)) => 6,
        Value::Lit(Pat::Map(_) | Pat::MapExact(_)) => 7,
        Value::Lit(Pat::List(..) | Pat::Nil) => 8,
        Value::Lit(Pat::Binary(_)) | Value::Bin(_) => 9,
        Value::Bytes(b) => match *b.first()? {
            97 | 98 | 110 | 111 | 70 | 99 => 0,
            100 | 115 | 118 | 119 => 1,
            101 | 114 | 90 => 2,
            117 | 112 | 113 => 3,
            102 | 89 | 120 => 4,
            103 | 88 => 5,
            104 | 105 => 6,
            116 => 7,
            106..=108 => 8,
            109 | 77 => 9,
            _ => return None,
        },
        _ => return None,
    })
}

/// Equality of a value and another value (`strict`: `===`, else `==`, where 1 == 1.0).
fn values_equal(a: &Value, b: &Value, strict: bool) -> bool {
    match (a, b) {
        (Value::Bin(_), _) | (_, Value::Bin(_)) => {
            return binary_of(a).is_some() && binary_of(a) == binary_of(b)
        }
        _ => {}
    }
    if let (Some(x), Some(y)) = (num_of(a), num_of(b)) {
        return if strict {
            x == y
        } else {
            cmp_num(x, y) == Some(Ordering::Equal)
        };
    }
    match (a, b) {
        (Value::Bytes(x), Value::Bytes(y)) => equal(x, y, strict),
        (Value::Bytes(x), Value::Lit(p)) | (Value::Lit(p), Value::Bytes(x)) => {
            if strict {
                let mut none: Bindings = Vec::new();
                match_pat(p, x, 0, &mut none) == Some(x.len())
            } else {
                loose_lit(p, x, 0) == Some(true)
            }
        }
        (Value::Lit(p), Value::Lit(q)) => p == q,
        _ => false,
    }
}

fn guard(g: &Guard, b: &[u8], binds: &Bindings) -> Option<bool> {
    Some(match g {
        Guard::True => true,
        Guard::And(x, y) => guard(x, b, binds)? && guard(y, b, binds)?,
        Guard::Or(x, y) => guard(x, b, binds)? || guard(y, b, binds)?,
        Guard::Not(x) => !guard(x, b, binds)?,
        Guard::Cmp(op, x, y) => {
            let (x, y) = (operand(x, b, binds)?, operand(y, b, binds)?);
            match op {
                CmpOp::Eq => values_equal(&x, &y, false),
                CmpOp::Ne => !values_equal(&x, &y, false),
                CmpOp::StrictEq => values_equal(&x, &y, true),
                CmpOp::StrictNe => !values_equal(&x, &y, true),
                _ => {
                    let ord = match (num_of(&x), num_of(&y)) {
                        (Some(m), Some(n)) => cmp_num(m, n),
                        _ => match (atom_of(&x), atom_of(&y)) {
                            (Some(m), Some(n)) => Some(m.cmp(n)),
                            _ => match (binary_of(&x), binary_of(&y)) {
                                (Some(m), Some(n)) => Some(m.cmp(n)),
                                _ => match (rank(&x), rank(&y)) {
                                    (Some(m), Some(n)) if m != n => Some(m.cmp(&n)),
                                    _ => None,
                                },
                            },
                        },
                    };
                    match (op, ord) {
                        // An order this matcher does not compute (two lists, two tuples):
                        // the guard is not decided, and the event not matched.
                        (_, None) => return None,
                        (CmpOp::Lt, Some(o)) => o == Ordering::Less,
                        (CmpOp::Le, Some(o)) => o != Ordering::Greater,
                        (CmpOp::Gt, Some(o)) => o == Ordering::Greater,
                        (CmpOp::Ge, Some(o)) => o != Ordering::Less,
                        _ => false,
                    }
                }
            }
        }
        Guard::Is(t, i) => {
            let r = match binds.get(*i)?.clone()? {
                Bound::Term(r) => r,
                Bound::Int(_) => return Some(matches!(t, TypeTest::Integer | TypeTest::Number)),
                Bound::ListTail(..) => return Some(*t == TypeTest::List),
                Bound::BinaryRest(..) => return Some(*t == TypeTest::Binary),
            };
            let v = &b[r];
            let tag = *v.first()?;
            match t {
                TypeTest::Integer => matches!(tag, 97 | 98 | 110 | 111),
                TypeTest::Float => matches!(tag, 70 | 99),
                TypeTest::Number => matches!(tag, 97 | 98 | 110 | 111 | 70 | 99),
                TypeTest::Atom => matches!(tag, 100 | 115 | 118 | 119),
                TypeTest::Boolean => matches!(etf::atom_name(v, 0), Some("true" | "false")),
                TypeTest::Nil => etf::atom_name(v, 0) == Some("nil"),
                TypeTest::Binary => tag == 109,
                TypeTest::List => matches!(tag, 106..=108),
                TypeTest::Tuple => matches!(tag, 104 | 105),
                TypeTest::Map => tag == 116,
                TypeTest::Pid => matches!(tag, 88 | 103),
                TypeTest::Reference => matches!(tag, 90 | 114 | 101),
            }
        }
        Guard::In(i, lits) => {
            let var = Operand::Var(*i);
            let v = operand(&var, b, binds)?;
            lits.iter().any(|l| values_equal(&v, &Value::Lit(l), true))
        }
    })
}

/// Structural equality of two ETF terms (bytes may differ for equal terms: a charlist can be
/// STRING_EXT or LIST_EXT, an atom Latin-1 or UTF-8 encoded). `strict` = `===`.
pub fn equal(a: &[u8], b: &[u8], strict: bool) -> bool {
    if a == b {
        return true;
    }
    eq_at(a, 0, b, 0, strict, 0).unwrap_or(false)
}

fn eq_at(a: &[u8], pa: usize, b: &[u8], pb: usize, strict: bool, depth: usize) -> Option<bool> {
    if depth > MAX_PATTERN_DEPTH {
        return Some(a.get(pa..etf::skip(a, pa)?)? == b.get(pb..etf::skip(b, pb)?)?);
    }
    if let (Some(x), Some(y)) = (number(a, pa), number(b, pb)) {
        return Some(if strict {
            x == y
        } else {
            cmp_num(x, y) == Some(Ordering::Equal)
        });
    }
    if let (Some(x), Some(y)) = (etf::atom_name(a, pa), etf::atom_name(b, pb)) {
        return Some(x == y);
    }
    let (ta, tb) = (*a.get(pa)?, *b.get(pb)?);
    match (ta, tb) {
        (104 | 105, 104 | 105) => {
            let ((n, mut i), (m, mut j)) = (etf::tuple_header(a, pa)?, etf::tuple_header(b, pb)?);
            if n != m {
                return Some(false);
            }
            for _ in 0..n {
                if !eq_at(a, i, b, j, strict, depth + 1)? {
                    return Some(false);
                }
                i = etf::skip(a, i)?;
                j = etf::skip(b, j)?;
            }
            Some(true)
        }
        (106..=108, 106..=108) => {
            let (x, y) = (list_items(a, pa)?, list_items(b, pb)?);
            // `[1, 2]` and `[1 | 2]` have the same items here: their tails tell them apart.
            if x.len() != y.len() || improper(a, pa)? != improper(b, pb)? {
                return Some(false);
            }
            for (ix, iy) in x.iter().zip(&y) {
                let same = match (ix, iy) {
                    (Item::Byte(m), Item::Byte(n)) => m == n,
                    (Item::Byte(m), Item::At(q)) | (Item::At(q), Item::Byte(m)) => {
                        let (bytes, pos) = if matches!(ix, Item::At(_)) {
                            (a, *q)
                        } else {
                            (b, *q)
                        };
                        number(bytes, pos) == Some(Num::Int(*m as i128))
                    }
                    (Item::At(p), Item::At(q)) => eq_at(a, *p, b, *q, strict, depth + 1)?,
                };
                if !same {
                    return Some(false);
                }
            }
            Some(true)
        }
        (116, 116) => {
            // Maps: same size and every key of one found, with an equal value, in the other.
            let (na, nb) = (u32_at(a, pa + 1)?, u32_at(b, pb + 1)?);
            if na != nb {
                return Some(false);
            }
            // Large maps: the pairwise search below is quadratic, so compare their encodings
            // (equal maps of the same keys encode alike; `1` and `1.0` values then differ).
            if na > 32 {
                return Some(a.get(pa..etf::skip(a, pa)?)? == b.get(pb..etf::skip(b, pb)?)?);
            }
            let pairs = |bytes: &[u8], pos: usize, n: usize| -> Option<Vec<(usize, usize)>> {
                let mut out = Vec::with_capacity(n.min(64));
                let mut p = pos + 5;
                for _ in 0..n {
                    let v = etf::skip(bytes, p)?;
                    out.push((p, v));
                    p = etf::skip(bytes, v)?;
                }
                Some(out)
            };
            let (xa, xb) = (pairs(a, pa, na)?, pairs(b, pb, nb)?);
            for (ka, va) in &xa {
                let mut found = false;
                for (kb, vb) in &xb {
                    if eq_at(a, *ka, b, *kb, true, depth + 1)? {
                        if !eq_at(a, *va, b, *vb, strict, depth + 1)? {
                            return Some(false);
                        }
                        found = true;
                        break;
                    }
                }
                if !found {
                    return Some(false);
                }
            }
            Some(true)
        }
        _ => Some(a.get(pa..etf::skip(a, pa)?)? == b.get(pb..etf::skip(b, pb)?)?),
    }
}

enum Item {
    /// An element of a STRING_EXT.
    Byte(u8),
    /// An element (or the non-nil tail, last) at this position.
    At(usize),
}

/// A list's elements, and an improper tail as a last element.
fn list_items(b: &[u8], pos: usize) -> Option<Vec<Item>> {
    match *b.get(pos)? {
        106 => Some(Vec::new()),
        107 => {
            let len = u16_at(b, pos + 1)?;
            Some(
                b.get(pos + 3..pos + 3 + len)?
                    .iter()
                    .map(|&x| Item::Byte(x))
                    .collect(),
            )
        }
        108 => {
            let n = u32_at(b, pos + 1)?;
            let mut out = Vec::with_capacity(n.min(1024));
            let mut p = pos + 5;
            for _ in 0..n {
                out.push(Item::At(p));
                p = etf::skip(b, p)?;
            }
            if *b.get(p)? != 106 {
                out.push(Item::At(p));
            }
            Some(out)
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    use crate::formats::etf::build::{atom, int, tuple};

    fn m(pattern: Pat, guard: Guard, vars: usize) -> Matcher {
        let m = Matcher {
            pattern,
            guard,
            vars,
        };
        m.validate().unwrap();
        m
    }

    #[test]
    fn tuple_with_guard_binds_its_variable() {
        // {:increment, n} when n > 5
        let matcher = m(
            Pat::Tuple(vec![Pat::Atom("increment".into()), Pat::Var(0)]),
            Guard::Cmp(CmpOp::Gt, Operand::Var(0), Operand::Lit(Pat::Int(5))),
            1,
        );
        let seven = tuple(&[atom("increment"), int(7)]);
        let b = matcher.run(&seven).unwrap();
        assert_eq!(b[0], Some(Bound::Term(13..15)));
        assert_eq!(&seven[13..15], &[97, 7]);
        assert!(matcher.run(&tuple(&[atom("increment"), int(3)])).is_none());
        assert!(matcher.run(&tuple(&[atom("decrement"), int(7)])).is_none());
        assert!(matcher.run(&atom("increment")).is_none());
    }

    #[test]
    fn ordering_across_types_follows_the_term_order() {
        // x when x > 5: an atom is greater than any number, a tuple greater than an atom.
        let gt5 = m(
            Pat::Var(0),
            Guard::Cmp(CmpOp::Gt, Operand::Var(0), Operand::Lit(Pat::Int(5))),
            1,
        );
        assert!(gt5.run(&atom("a")).is_some());
        assert!(gt5.run(&int(3)).is_none());
        let below_atom = m(
            Pat::Var(0),
            Guard::Cmp(
                CmpOp::Lt,
                Operand::Var(0),
                Operand::Lit(Pat::Atom("a".into())),
            ),
            1,
        );
        assert!(below_atom.run(&int(200)).is_some());
        assert!(below_atom.run(&tuple(&[])).is_none());
        // Two tuples are not ordered here: the comparison is false either way.
        let t = tuple(&[int(1)]);
        let tuples = m(
            Pat::Tuple(vec![Pat::Var(0), Pat::Var(1)]),
            Guard::Cmp(CmpOp::Lt, Operand::Var(0), Operand::Var(1)),
            2,
        );
        assert!(tuples.run(&tuple(&[t.clone(), t])).is_none());
    }

    #[test]
    fn binary_rests_and_list_tails_take_part_in_guards() {
        // "GE" <> rest when rest > 2 and rest == "T /a"
        let mut bin = vec![109, 0, 0, 0, 6];
        bin.extend_from_slice(b"GET /a");
        let rest = m(
            Pat::BinaryPrefix(b"GE".to_vec(), Box::new(Pat::Var(0))),
            Guard::And(
                Box::new(Guard::Cmp(
                    CmpOp::Gt,
                    Operand::Var(0),
                    Operand::Lit(Pat::Int(2)),
                )),
                Box::new(Guard::Cmp(
                    CmpOp::Eq,
                    Operand::Var(0),
                    Operand::Lit(Pat::Binary(b"T /a".to_vec())),
                )),
            ),
            1,
        );
        assert!(rest.run(&bin).is_some());
        // [_ | t] when t == [] and t > 2: one element left no tail, a list is above numbers.
        let tail_empty = m(
            Pat::List(vec![Pat::Any], Box::new(Pat::Var(0))),
            Guard::And(
                Box::new(Guard::Cmp(
                    CmpOp::Eq,
                    Operand::Var(0),
                    Operand::Lit(Pat::Nil),
                )),
                Box::new(Guard::Cmp(
                    CmpOp::Gt,
                    Operand::Var(0),
                    Operand::Lit(Pat::Int(2)),
                )),
            ),
            1,
        );
        let one = vec![108, 0, 0, 0, 1, 97, 1, 106];
        let two = vec![108, 0, 0, 0, 2, 97, 1, 97, 2, 106];
        assert!(tail_empty.run(&one).is_some());
        assert!(tail_empty.run(&two).is_none());
        assert!(tail_empty.run(&[107, 0, 1, 5]).is_some());
    }

    #[test]
    fn loose_equality_reaches_into_literals() {
        // x == {1, [2]} holds for {1.0, [2.0]}; x === {1, [2]} does not.
        let lit = Pat::Tuple(vec![
            Pat::Int(1),
            Pat::List(vec![Pat::Int(2)], Box::new(Pat::Nil)),
        ]);
        let float = |f: f64| {
            let mut v = vec![70];
            v.extend_from_slice(&f.to_bits().to_be_bytes());
            v
        };
        let mut t = vec![104, 2];
        t.extend(float(1.0));
        t.extend([108, 0, 0, 0, 1]);
        t.extend(float(2.0));
        t.push(106);
        let cmp = |op| {
            m(
                Pat::Var(0),
                Guard::Cmp(op, Operand::Var(0), Operand::Lit(lit.clone())),
                1,
            )
        };
        assert!(cmp(CmpOp::Eq).run(&t).is_some());
        assert!(cmp(CmpOp::StrictEq).run(&t).is_none());
        assert!(cmp(CmpOp::Eq)
            .run(&tuple(&[int(1), vec![107, 0, 1, 2]]))
            .is_some());
        assert!(cmp(CmpOp::Eq).run(&tuple(&[int(1), int(2)])).is_none());
    }

    #[test]
    fn proper_and_improper_lists_differ() {
        let proper = vec![108, 0, 0, 0, 2, 97, 1, 97, 2, 106];
        let improper = vec![108, 0, 0, 0, 1, 97, 1, 97, 2];
        assert!(!equal(&proper, &improper, false));
        assert!(equal(&proper, &[107, 0, 2, 1, 2], true));
    }

    #[test]
    fn repeated_variables_must_be_equal() {
        let matcher = m(Pat::Tuple(vec![Pat::Var(0), Pat::Var(0)]), Guard::True, 1);
        assert!(matcher.run(&tuple(&[int(1), int(1)])).is_some());
        assert!(matcher.run(&tuple(&[int(1), int(2)])).is_none());
        // {x, [x]} against {104, ~c"h"}: the charlist's element is the same integer.
        let in_charlist = m(
            Pat::Tuple(vec![
                Pat::Var(0),
                Pat::List(vec![Pat::Var(0)], Box::new(Pat::Nil)),
            ]),
            Guard::True,
            1,
        );
        assert!(in_charlist
            .run(&tuple(&[int(104), vec![107, 0, 1, 104]]))
            .is_some());
        assert!(in_charlist
            .run(&tuple(&[int(105), vec![107, 0, 1, 104]]))
            .is_none());
    }

    #[test]
    fn guards_compare_list_tails_as_lists() {
        let tail_is = |op, lit: Pat| {
            m(
                Pat::List(vec![Pat::Any], Box::new(Pat::Var(0))),
                Guard::Cmp(op, Operand::Var(0), Operand::Lit(lit)),
                1,
            )
        };
        let one_float = || Pat::List(vec![Pat::Float(1.0)], Box::new(Pat::Nil));
        let list = [108, 0, 0, 0, 2, 97, 7, 97, 1, 106]; // [7, 1]
                                                         // [_ | t] when t == [1.0]: true, as in Elixir; t === [1.0]: false.
        assert!(tail_is(CmpOp::Eq, one_float()).run(&list).is_some());
        assert!(tail_is(CmpOp::StrictEq, one_float()).run(&list).is_none());
        assert!(tail_is(CmpOp::Ne, Pat::Nil).run(&list).is_some());
        assert!(tail_is(CmpOp::Eq, Pat::Nil)
            .run(&[108, 0, 0, 0, 1, 97, 7, 106])
            .is_some());
        // A byte string's tail is a list of small integers.
        let string = [107, 0, 2, 104, 105]; // ~c"hi"
        let i = || Pat::List(vec![Pat::Int(105)], Box::new(Pat::Nil));
        assert!(tail_is(CmpOp::StrictEq, i()).run(&string).is_some());
        // An improper tail.
        let improper = [108, 0, 0, 0, 2, 97, 7, 97, 1, 97, 9]; // [7, 1 | 9]
        let one_nine = Pat::List(vec![Pat::Int(1)], Box::new(Pat::Int(9)));
        assert!(tail_is(CmpOp::Eq, one_nine).run(&improper).is_some());
    }

    #[test]
    fn a_repeated_variable_on_list_tails_compares_the_lists() {
        let tail = |v| Pat::List(vec![Pat::Any], Box::new(Pat::Var(v)));
        let l = |els: &[Vec<u8>]| {
            let mut v = vec![108, 0, 0, 0, els.len() as u8];
            els.iter().for_each(|e| v.extend_from_slice(e));
            v.push(106);
            v
        };
        // {[_ | t], t} and {[_ | t], [_ | t]}, as Elixir matches them.
        let then_whole = m(Pat::Tuple(vec![tail(0), Pat::Var(0)]), Guard::True, 1);
        assert!(then_whole
            .run(&tuple(&[l(&[int(1), int(2)]), l(&[int(2)])]))
            .is_some());
        assert!(then_whole
            .run(&tuple(&[l(&[int(1), int(2)]), l(&[int(3)])]))
            .is_none());
        let both = m(Pat::Tuple(vec![tail(0), tail(0)]), Guard::True, 1);
        assert!(both
            .run(&tuple(&[l(&[int(1), int(2)]), l(&[int(9), int(2)])]))
            .is_some());
        assert!(both
            .run(&tuple(&[l(&[int(1), int(2)]), l(&[int(9), int(3)])]))
            .is_none());
        let whole_then = m(Pat::Tuple(vec![Pat::Var(0), tail(0)]), Guard::True, 1);
        assert!(whole_then
            .run(&tuple(&[l(&[int(2)]), l(&[int(1), int(2)])]))
            .is_some());
        // An order it does not compute decides nothing, even under `not`.
        let lt = Guard::Cmp(
            CmpOp::Lt,
            Operand::Var(0),
            Operand::Lit(Pat::List(vec![Pat::Int(3)], Box::new(Pat::Nil))),
        );
        let list = l(&[int(1), int(2)]);
        assert!(m(tail(0), lt.clone(), 1).run(&list).is_none());
        assert!(m(tail(0), Guard::Not(Box::new(lt)), 1).run(&list).is_none());
    }

    #[test]
    fn a_repeated_variable_on_binary_rests_compares_the_rests() {
        let bin = |s: &[u8]| {
            let mut v = vec![109, 0, 0, 0, s.len() as u8];
            v.extend_from_slice(s);
            v
        };
        let rest = || Pat::BinaryPrefix(b"ab".to_vec(), Box::new(Pat::Var(0)));
        // {"ab" <> v, "ab" <> v}, as Elixir matches it.
        let both = m(Pat::Tuple(vec![rest(), rest()]), Guard::True, 1);
        assert!(both.run(&tuple(&[bin(b"abX"), bin(b"abX")])).is_some());
        assert!(both.run(&tuple(&[bin(b"abX"), bin(b"abY")])).is_none());
        assert!(both.run(&tuple(&[bin(b"ab"), bin(b"ab")])).is_some());
        // {"ab" <> v, v} and {v, "ab" <> v}.
        let then_whole = m(Pat::Tuple(vec![rest(), Pat::Var(0)]), Guard::True, 1);
        assert!(then_whole.run(&tuple(&[bin(b"abX"), bin(b"X")])).is_some());
        assert!(then_whole
            .run(&tuple(&[bin(b"abX"), bin(b"abX")]))
            .is_none());
        assert!(then_whole.run(&tuple(&[bin(b"abX"), int(1)])).is_none());
        let whole_then = m(Pat::Tuple(vec![Pat::Var(0), rest()]), Guard::True, 1);
        assert!(whole_then.run(&tuple(&[bin(b"X"), bin(b"abX")])).is_some());
        assert!(whole_then.run(&tuple(&[int(1), bin(b"ab")])).is_none());
    }

    #[test]
    fn maps_match_partially_and_numbers_compare_loosely() {
        // %{count: c} when c == 10.0
        let mut map = vec![116, 0, 0, 0, 2];
        map.extend(atom("count"));
        map.extend(int(10));
        map.extend(atom("name"));
        map.extend(atom("x"));
        let matcher = m(
            Pat::Map(vec![(Pat::Atom("count".into()), Pat::Var(0))]),
            Guard::Cmp(CmpOp::Eq, Operand::Var(0), Operand::Lit(Pat::Float(10.0))),
            1,
        );
        assert!(matcher.run(&map).is_some());
        let strict = m(
            Pat::Map(vec![(Pat::Atom("count".into()), Pat::Var(0))]),
            Guard::Cmp(
                CmpOp::StrictEq,
                Operand::Var(0),
                Operand::Lit(Pat::Float(10.0)),
            ),
            1,
        );
        assert!(strict.run(&map).is_none());
        let missing = m(
            Pat::Map(vec![(Pat::Atom("nope".into()), Pat::Any)]),
            Guard::True,
            0,
        );
        assert!(missing.run(&map).is_none());
    }

    #[test]
    fn lists_heads_tails_and_strings() {
        // [h | _] when is_integer(h)
        let matcher = m(
            Pat::List(vec![Pat::Var(0)], Box::new(Pat::Any)),
            Guard::Is(TypeTest::Integer, 0),
            1,
        );
        let list = [108, 0, 0, 0, 2, 97, 1, 97, 2, 106];
        assert!(matcher.run(&list).is_some());
        // [h | t]: t is the rest of the list.
        let head_tail = m(
            Pat::List(vec![Pat::Var(0)], Box::new(Pat::Var(1))),
            Guard::True,
            2,
        );
        let b = head_tail.run(&list).unwrap();
        assert_eq!(b[1], Some(Bound::ListTail(0..10, 1)));
        assert!(matcher.run(&[106]).is_none());
        let string = [107, 0, 2, 104, 105]; // ~c"hi"
        let exact = m(
            Pat::List(vec![Pat::Int(104), Pat::Int(105)], Box::new(Pat::Nil)),
            Guard::True,
            0,
        );
        assert!(exact.run(&string).is_some());
        assert!(equal(
            &string,
            &[108, 0, 0, 0, 2, 97, 104, 97, 105, 106],
            true
        ));
    }

    #[test]
    fn binaries_prefixes_and_in() {
        let bin = [109, 0, 0, 0, 5, b'h', b'e', b'l', b'l', b'o'];
        let prefix = m(
            Pat::BinaryPrefix(b"he".to_vec(), Box::new(Pat::Var(0))),
            Guard::True,
            1,
        );
        assert_eq!(
            prefix.run(&bin).unwrap()[0],
            Some(Bound::BinaryRest(0..10, 2))
        );
        let within = m(
            Pat::Var(0),
            Guard::In(
                0,
                vec![Pat::Atom("a".into()), Pat::Binary(b"hello".to_vec())],
            ),
            1,
        );
        assert!(within.run(&bin).is_some());
        assert!(within.run(&atom("b")).is_none());
    }

    #[test]
    fn invalid_matchers_are_refused() {
        let bad_var = Matcher {
            pattern: Pat::Var(3),
            guard: Guard::True,
            vars: 1,
        };
        assert_eq!(bad_var.validate(), Err(MatcherError::BadVar));
        let mut deep = Pat::Any;
        for _ in 0..100 {
            deep = Pat::Tuple(vec![deep]);
        }
        let too_deep = Matcher {
            pattern: deep,
            guard: Guard::True,
            vars: 0,
        };
        assert_eq!(too_deep.validate(), Err(MatcherError::TooDeep));
        let var_key = Matcher {
            pattern: Pat::Map(vec![(Pat::Var(0), Pat::Any)]),
            guard: Guard::True,
            vars: 1,
        };
        assert_eq!(var_key.validate(), Err(MatcherError::MapKey));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]
        #[test]
        fn malformed_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
            let matchers = [
                m(Pat::Tuple(vec![Pat::Atom("a".into()), Pat::Var(0)]), Guard::Cmp(CmpOp::Gt, Operand::Var(0), Operand::Lit(Pat::Int(1))), 1),
                m(Pat::List(vec![Pat::Var(0)], Box::new(Pat::Any)), Guard::Is(TypeTest::Map, 0), 1),
                m(Pat::Map(vec![(Pat::Atom("k".into()), Pat::Var(0))]), Guard::In(0, vec![Pat::Int(1)]), 1),
                m(Pat::Var(0), Guard::Cmp(CmpOp::Eq, Operand::Var(0), Operand::Lit(Pat::Binary(vec![1]))), 1),
            ];
            for matcher in &matchers {
                let _ = matcher.run(&bytes);
            }
            let _ = equal(&bytes, &bytes[bytes.len() / 2..], false);
        }
    }
}
