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
    let mut out = BTreeSet::new();
    for line in code.lines().filter(|l| !l.trim_start().starts_with("//")) {
        let mut rest = line;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            // The deepest listed module of the path: `crate::capture::log::X` uses `log`,
            // `crate::query::Filter` uses `query`.
            let mut used = None;
            for segment in rest.split("::") {
                let name: String = segment
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                if modules.contains_key(&name) {
                    used = Some(name.clone());
                }
                if name.len() != segment.len() || name.is_empty() {
                    break;
                }
            }
            if let Some(name) = used {
                out.insert(name);
            }
        }
    }
    out
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
