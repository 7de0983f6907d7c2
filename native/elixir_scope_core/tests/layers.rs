//! The core's modules keep the layering `lib.rs` states: each uses modules of its own layer or
//! lower ones only (a `crate::module` path outside comments and test modules), and the uses have
//! no cycle. A new dependency against the order, or a new cycle, fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// `(module, layer number)` from the list in `lib.rs`'s docs: lines `//! N. name: `a`, `b``, a
/// list going on over indented lines.
fn declared_layers(lib: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    let mut current = None;
    for line in lib.lines() {
        let Some(rest) = line.strip_prefix("//! ") else {
            current = None;
            continue;
        };
        let modules = match rest.split_once(". ") {
            Some((n, tail)) if n.parse::<usize>().is_ok() => {
                current = n.parse::<usize>().ok();
                tail.split_once(": ").map_or("", |(_, m)| m)
            }
            _ if current.is_some() && rest.starts_with("   ") => rest.trim(),
            _ => {
                current = None;
                continue;
            }
        };
        let Some(layer) = current else { continue };
        for m in modules.split(',').map(|m| m.trim().trim_matches('`')) {
            if !m.is_empty() {
                out.insert(m.to_string(), layer);
            }
        }
    }
    out
}

/// The modules `source` uses: `crate::…::name` paths outside comments and its test module.
fn uses(source: &str, modules: &BTreeMap<String, usize>) -> BTreeSet<String> {
    // The code before the test module (`#[cfg(test)]` then a `mod tests` line).
    let test_module = source.match_indices("#[cfg(test)]\n").find(|(i, m)| {
        source[i + m.len()..]
            .lines()
            .next()
            .is_some_and(|l| l.contains("mod tests"))
    });
    let code = match test_module {
        Some((i, _)) => &source[..i],
        None => source,
    };
    // Comments out, lines joined: a `use crate::{…}` group may span lines.
    let code: String = code
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect::<Vec<_>>()
        .join(" ");
    let mut out = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        let (paths, _) = use_tree(rest);
        for path in paths {
            // The deepest listed module of the path: `crate::capture::log::X` uses `log`,
            // `crate::query::Filter` uses `query`.
            if let Some(name) = path.iter().rev().find(|s| modules.contains_key(*s)) {
                out.insert(name.clone());
            }
        }
    }
    out
}

/// The paths a use tree at the start of `s` names (`a::b::{c, d::{e}}` names `a::b::c` and
/// `a::b::d::e`; an expression's path ends at its first other character), and its length.
fn use_tree(s: &str) -> (Vec<Vec<String>>, usize) {
    let skip_space = |at: usize| at + s[at..].len() - s[at..].trim_start().len();
    let mut prefix = Vec::new();
    let mut at = 0;
    loop {
        if s[at..].starts_with('{') {
            at += 1;
            let mut paths = Vec::new();
            loop {
                at = skip_space(at);
                if at >= s.len() || s[at..].starts_with('}') {
                    return (paths, (at + 1).min(s.len()));
                }
                let (inner, n) = use_tree(&s[at..]);
                at = skip_space(at + n);
                paths.extend(inner.into_iter().map(|p| [prefix.clone(), p].concat()));
                if s[at..].starts_with(',') {
                    at += 1;
                } else if !s[at..].starts_with('}') {
                    return (paths, at);
                }
            }
        }
        let name: String = s[at..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        at += name.len();
        if !name.is_empty() {
            prefix.push(name);
        }
        if s[at..].starts_with("::") {
            at += 2;
            continue;
        }
        // Anything else (` as alias`, `;`, `(`) ends the path.
        let end = s[at..].find([',', '}']).map_or(s.len(), |i| at + i);
        let end = if s[at..].trim_start().starts_with("as ") {
            end
        } else {
            at
        };
        return (vec![prefix], end);
    }
}

#[test]
fn modules_use_only_their_layer_or_lower_ones_and_never_in_a_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
    let layers = declared_layers(&lib);
    assert!(layers.len() > 10, "lib.rs lists the layers: {layers:?}");

    // Every source file is in the list, and every listed module has a file (a layer's folder
    // has a `mod.rs` that only declares its modules: not one itself).
    let mut files: BTreeMap<String, std::path::PathBuf> = BTreeMap::new();
    let mut dirs = vec![src.clone()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let stem = path.file_stem().unwrap().to_string_lossy().to_string();
            let name = if stem == "mod" {
                path.parent()
                    .unwrap()
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .to_string()
            } else {
                stem.clone()
            };
            let source = std::fs::read_to_string(&path).unwrap();
            let declares_only = stem == "mod" && !source.contains("crate::");
            if name != "lib" && (!declares_only || layers.contains_key(&name)) {
                files.insert(name, path);
            }
        }
    }
    let found: BTreeSet<String> = files.keys().cloned().collect();
    let listed: BTreeSet<String> = layers.keys().cloned().collect();
    assert_eq!(found, listed, "src/**/*.rs and the layers listed in lib.rs");

    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut wrong = Vec::new();
    for (module, &layer) in &layers {
        let source = std::fs::read_to_string(&files[module]).unwrap();
        let mut used = uses(&source, &layers);
        used.remove(module);
        for u in &used {
            if layers[u] > layer {
                wrong.push(format!(
                    "{module} (layer {layer}) uses {u} (layer {})",
                    layers[u]
                ));
            }
        }
        graph.insert(module.clone(), used);
    }
    assert!(
        wrong.is_empty(),
        "uses against the layers:\n{}",
        wrong.join("\n")
    );

    // No cycle: remove modules that use nothing left, until none remains.
    let mut left = graph.clone();
    while let Some(free) = left
        .iter()
        .find(|(_, used)| used.iter().all(|u| !left.contains_key(u)))
        .map(|(m, _)| m.clone())
    {
        left.remove(&free);
    }
    assert!(
        left.is_empty(),
        "modules in a cycle: {:?}",
        left.keys().collect::<Vec<_>>()
    );
}

#[test]
fn grouped_uses_are_seen() {
    let modules: BTreeMap<String, usize> = ["log", "index", "query", "event"]
        .iter()
        .map(|m| (m.to_string(), 1))
        .collect();
    let source =
        "use crate::{\n    capture::log::{CaptureLog, Limits},\n    index::Index as I,\n};\n\
                  fn f() { crate::query::plan(x); }\n// crate::event::Kind\n";
    let got: Vec<String> = uses(source, &modules).into_iter().collect();
    assert_eq!(got, ["index", "log", "query"]);
}
