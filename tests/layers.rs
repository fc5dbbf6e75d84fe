//! The module graph of `host/src`: which top-level modules import which (`crate::<module>`
//! outside `#[cfg(test)]`). Every module has a layer; a module may import modules of its own
//! layer or below, never above, and the graph has no cycle. The test fails when either breaks.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers of `host/src`, lowest first (the map in `host/src/lib.rs` and the README's
/// Layout section say the same).
const LAYERS: &[(&str, &[&str])] = &[
    (
        "domain",
        &[
            "wit",
            "event",
            "event_time",
            "duration",
            "rows",
            "keys",
            "fault",
            "metrics",
        ],
    ),
    ("stores and bus", &["store", "bus"]),
    ("plugins, steps and monitoring", &["plugin", "steps", "monitor"]),
    ("config", &["config"]),
    (
        "reads, writes and on-disk state",
        &["online", "sources", "targets", "catalog", "capture"],
    ),
    ("plan and runtime", &["graph", "plan", "runner", "runtime"]),
    ("batch jobs", &["offline"]),
    ("http", &["http"]),
    ("composition root", &["pipeline"]),
    ("command line", &["cli"]),
];

/// The layer of a module (its index in [`LAYERS`]).
fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|(_, modules)| modules.contains(&module))
}

fn edges(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(src).unwrap();
            let top = relative
                .iter()
                .next()
                .unwrap()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "lib" || top == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (at, _) in code.match_indices("crate::") {
                let name: String = code[at + 7..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                // `crate::x` where x is a module of its own (not a macro such as `crate::invalid`).
                let module = src.join(format!("{name}.rs")).exists() || src.join(&name).is_dir();
                if !name.is_empty() && name != top && module {
                    edges.entry(top.clone()).or_default().insert(name);
                }
            }
        }
    }
    edges
}

/// Tarjan's strongly connected components with more than one module.
fn cycles(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<Vec<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeSet<String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        found: Vec<Vec<String>>,
    }
    fn visit<'a>(v: &'a str, s: &mut State<'a>) {
        let n = s.index.len();
        s.index.insert(v, n);
        s.low.insert(v, n);
        s.stack.push(v);
        for w in s.edges.get(v).into_iter().flatten() {
            let w = w.as_str();
            if !s.index.contains_key(w) {
                visit(w, s);
                let low = s.low[v].min(s.low[w]);
                s.low.insert(v, low);
            } else if s.stack.contains(&w) {
                let low = s.low[v].min(s.index[w]);
                s.low.insert(v, low);
            }
        }
        if s.low[v] == s.index[v] {
            let mut component = Vec::new();
            while let Some(w) = s.stack.pop() {
                component.push(w.to_string());
                if w == v {
                    break;
                }
            }
            if component.len() > 1 {
                component.sort();
                s.found.push(component);
            }
        }
    }
    let mut state = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        found: Vec::new(),
    };
    for v in edges.keys() {
        if !state.index.contains_key(v.as_str()) {
            visit(v, &mut state);
        }
    }
    state.found.sort();
    state.found
}

/// Each import of a higher layer, and each module without a layer.
fn violations(edges: &BTreeMap<String, BTreeSet<String>>) -> Vec<String> {
    let mut wrong = Vec::new();
    for (from, tos) in edges {
        let Some(at) = layer(from) else {
            wrong.push(format!("{from} has no layer: add it to LAYERS"));
            continue;
        };
        for to in tos {
            match layer(to) {
                None => wrong.push(format!("{to} (imported by {from}) has no layer: add it to LAYERS")),
                Some(above) if above > at => wrong.push(format!(
                    "{from} ({}) imports {to} ({}), a higher layer",
                    LAYERS[at].0, LAYERS[above].0
                )),
                _ => {}
            }
        }
    }
    wrong
}

#[test]
fn no_module_imports_a_higher_layer_and_there_is_no_cycle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/src");
    let edges = edges(&src);
    assert!(
        edges.contains_key("pipeline") && edges["graph"].contains("steps"),
        "{edges:?}"
    );
    let wrong = violations(&edges);
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    let found = cycles(&edges);
    assert!(
        found.is_empty(),
        "import cycles between host modules: {found:?}; imports: {edges:#?}"
    );
}

#[test]
fn an_import_of_a_higher_layer_or_an_unplaced_module_is_found() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("plan", "steps"), ("steps", "plan"), ("newthing", "event")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(
        violations(&edges),
        vec![
            "newthing has no layer: add it to LAYERS".to_string(),
            "steps (plugins, steps and monitoring) imports plan (plan and runtime), a higher layer".into(),
        ]
    );
}

#[test]
fn the_cycle_finder_finds_a_cycle() {
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (a, b) in [("a", "b"), ("b", "c"), ("c", "a"), ("c", "d")] {
        edges.entry(a.into()).or_default().insert(b.into());
    }
    assert_eq!(cycles(&edges), vec![vec!["a".to_string(), "b".into(), "c".into()]]);
}
