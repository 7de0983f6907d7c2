//! JSON for ElixirScope's HTTP front door (the web UI's API), through `serde_json`.
//!
//! `json_encode/1` writes the answers the API builds: maps (keys: binaries, atoms or integers),
//! lists, UTF-8 binaries, integers, floats, `true`, `false` and `nil` (`null`); any other term
//! is an error naming it. `json_decode/1` reads a request body into terms whose object keys stay
//! binaries, so no atom is ever made from input. Both run on a dirty scheduler and bound nesting.

use crate::atoms;
use rustler::types::map::map_new;
use rustler::{Binary, Encoder, Env, NewBinary, NifResult, Term, TermType};
use serde_json::{Map, Number, Value};

/// Deepest nesting either way (serde_json's own reader stops at 128 too).
const MAX_DEPTH: usize = 128;

/// `json_encode(term)`: `{:ok, json}` or `{:error, {:not_json, what}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn json_encode<'a>(env: Env<'a>, term: Term<'a>) -> NifResult<Term<'a>> {
    let value = match to_value(term, 0) {
        Ok(v) => v,
        Err(what) => return Ok((atoms::error(), (atoms::not_json(), what)).encode(env)),
    };
    let text = serde_json::to_vec(&value).map_err(|_| rustler::Error::BadArg)?;
    let mut bin = NewBinary::new(env, text.len());
    bin.as_mut_slice().copy_from_slice(&text);
    Ok((atoms::ok(), Term::from(bin)).encode(env))
}

/// `json_decode(binary)`: `{:ok, term}` or `{:error, {:invalid_json, message}}`.
#[rustler::nif(schedule = "DirtyCpu")]
fn json_decode<'a>(env: Env<'a>, text: Binary<'a>) -> NifResult<Term<'a>> {
    match serde_json::from_slice::<Value>(text.as_slice()) {
        Ok(v) => Ok((atoms::ok(), from_value(env, &v)?).encode(env)),
        Err(e) => Ok((atoms::error(), (atoms::invalid_json(), e.to_string())).encode(env)),
    }
}

/// The JSON value of `t`, or a description of the first term that has none.
fn to_value(t: Term, depth: usize) -> Result<Value, String> {
    if depth > MAX_DEPTH {
        return Err(format!("nested deeper than {MAX_DEPTH} levels"));
    }
    Ok(match t.get_type() {
        TermType::Atom => {
            if t == atoms::nil().to_term(t.get_env()) {
                Value::Null
            } else if let Ok(b) = t.decode::<bool>() {
                Value::Bool(b)
            } else {
                Value::String(t.atom_to_string().map_err(|_| "an atom".to_string())?)
            }
        }
        TermType::Binary => Value::String(text(t)?),
        TermType::Integer => match (t.decode::<i64>(), t.decode::<u64>()) {
            (Ok(i), _) => Value::from(i),
            (_, Ok(u)) => Value::from(u),
            _ => return Err("an integer outside 64 bits".to_string()),
        },
        TermType::Float => {
            let f = t.decode::<f64>().map_err(|_| "a float".to_string())?;
            Value::Number(Number::from_f64(f).ok_or("a float JSON cannot hold")?)
        }
        TermType::List => {
            let items = crate::terms::proper_list(t).map_err(|_| "an improper list".to_string())?;
            let values: Result<Vec<Value>, String> =
                items.into_iter().map(|i| to_value(i, depth + 1)).collect();
            Value::Array(values?)
        }
        TermType::Map => {
            let mut map = Map::new();
            let iter = rustler::types::map::MapIterator::new(t).ok_or("a map")?;
            for (k, v) in iter {
                map.insert(key(k)?, to_value(v, depth + 1)?);
            }
            Value::Object(map)
        }
        other => return Err(format!("a {other:?} term")),
    })
}

/// A binary's text; an error when it is not UTF-8.
fn text(t: Term) -> Result<String, String> {
    let bin = t
        .decode::<Binary>()
        .map_err(|_| "a bitstring".to_string())?;
    String::from_utf8(bin.as_slice().to_vec()).map_err(|_| "a binary that is not UTF-8".to_string())
}

/// An object key: a binary, an atom or an integer, as text.
fn key(k: Term) -> Result<String, String> {
    match k.get_type() {
        TermType::Binary => text(k),
        TermType::Atom => k.atom_to_string().map_err(|_| "an atom".to_string()),
        TermType::Integer => k
            .decode::<i64>()
            .map(|i| i.to_string())
            .map_err(|_| "a map key outside 64 bits".to_string()),
        other => Err(format!("a map key that is a {other:?} term")),
    }
}

/// The term of a JSON value: objects as maps with binary keys, arrays as lists, strings as
/// binaries, `null` as `nil`.
fn from_value<'a>(env: Env<'a>, v: &Value) -> NifResult<Term<'a>> {
    Ok(match v {
        Value::Null => atoms::nil().encode(env),
        Value::Bool(b) => b.encode(env),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => i.encode(env),
            (_, Some(u), _) => u.encode(env),
            (_, _, Some(f)) => f.encode(env),
            _ => atoms::nil().encode(env),
        },
        Value::String(s) => s.encode(env),
        Value::Array(items) => items
            .iter()
            .map(|i| from_value(env, i))
            .collect::<NifResult<Vec<Term>>>()?
            .encode(env),
        Value::Object(map) => {
            let mut m = map_new(env);
            for (k, v) in map {
                m = m.map_put(k.encode(env), from_value(env, v)?)?;
            }
            m
        }
    })
}
