//! The layout's import rules, checked on the source: which of the crate's top modules each
//! one may use, and which outside crates it must not (`cargo test --test architecture`).
//!
//! Reading down the table, nothing imports a module above it: no cycle is possible, and
//! nothing below the edge (the hub, the bus, the store, the rules) knows HTTP.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
};

/// What a module of pure code must not use: the web framework, the runtime, any database.
const PURE: &[&str] = &[
    "actix_web",
    "actix_http",
    "tokio",
    "redis",
    "rusqlite",
    "tokio_postgres",
];

/// Each top module, with the crate's modules it may use and the outside crates it must not.
const RULES: &[(&str, &[&str], &[&str])] = &[
    ("memo", &[], PURE),
    ("domain", &["memo"], PURE),
    ("event", &["domain"], PURE),
    ("rules", &["domain", "event"], PURE),
    ("protocol", &["domain", "event"], PURE),
    (
        "presence",
        &["domain"],
        &["actix_web", "actix_http", "redis", "rusqlite", "tokio_postgres"],
    ),
    ("config", &[], &["actix_web", "actix_http"]),
    ("metrics", &[], &["actix_web", "actix_http"]),
    ("cursor", &["domain"], &["actix_web", "actix_http", "tokio"]),
    ("auth", &["config", "domain", "memo"], &["actix_web", "actix_http"]),
    ("limits", &["auth", "config", "domain"], &["actix_web", "actix_http"]),
    (
        "store",
        &["config", "domain", "event", "rules", "metrics"],
        &["actix_web", "actix_http", "actix_ws"],
    ),
    (
        "bus",
        &["config", "domain", "event", "metrics", "presence", "store"],
        &["actix_web", "actix_http", "actix_ws"],
    ),
    (
        "hub",
        &["bus", "domain", "event", "metrics", "presence", "protocol", "rules"],
        &["actix_web", "actix_http", "actix_ws"],
    ),
    (
        "session",
        &[
            "auth", "bus", "config", "domain", "event", "hub", "presence", "protocol", "store",
        ],
        &[],
    ),
    ("telemetry", &["metrics"], &[]),
    ("error", &["auth", "domain", "store"], &[]),
    (
        "routes",
        &[
            "auth", "bus", "config", "cursor", "domain", "error", "event", "hub", "limits", "metrics", "presence",
            "protocol", "session", "store",
        ],
        &[],
    ),
    (
        "startup",
        &[
            "auth",
            "bus",
            "config",
            "cursor",
            "domain",
            "error",
            "event",
            "hub",
            "limits",
            "metrics",
            "presence",
            "protocol",
            "routes",
            "session",
            "store",
            "telemetry",
        ],
        &[],
    ),
];

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top module a source file belongs to (`src/hub/outbox.rs` → `hub`).
fn module_of(src: &Path, file: &Path) -> String {
    let first = file.strip_prefix(src).unwrap().components().next().unwrap();
    first.as_os_str().to_string_lossy().trim_end_matches(".rs").to_owned()
}

/// The source without comments and without its `#[cfg(test)]` part (tests may use anything).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]").next().unwrap();
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) => &l[..i],
            None => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The crate's top modules `code` names: `crate::x` paths, and the first names in
/// `use crate::{x::…, y}` groups.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let name = |s: &str| -> String { s.chars().take_while(|c| c.is_ascii_lowercase() || *c == '_').collect() };
    let mut rest = code;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Top-level items of the group, at brace depth 1.
            let mut depth = 1;
            let mut item_start = true;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            rest = &group[j..];
                            break;
                        }
                    }
                    ',' if depth == 1 => item_start = true,
                    c if item_start && !c.is_whitespace() => {
                        item_start = false;
                        let n = name(&group[j..]);
                        if !n.is_empty() {
                            out.insert(n);
                        }
                    }
                    _ => {}
                }
            }
        } else {
            let n = name(rest);
            if !n.is_empty() {
                out.insert(n);
            }
        }
    }
    out
}

/// Whether `code` uses the outside crate `krate` (`use krate::`, `krate::` paths).
fn uses_crate(code: &str, krate: &str) -> bool {
    code.match_indices(&format!("{krate}::")).any(|(i, _)| {
        code[..i]
            .chars()
            .last()
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
    })
}

#[test]
fn every_module_imports_only_what_the_layout_allows_and_nothing_imports_upward() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let rules: BTreeMap<&str, (&[&str], &[&str])> = RULES.iter().map(|(m, may, not)| (*m, (*may, *not))).collect();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut broken = Vec::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue;
        }
        let Some((may, must_not)) = rules.get(module.as_str()) else {
            broken.push(format!(
                "{}: module {module} has no rule in tests/architecture.rs",
                file.display()
            ));
            continue;
        };
        let code = code(&fs::read_to_string(file).unwrap());
        for used in crate_modules(&code) {
            if used != module && !may.contains(&used.as_str()) && used != "self" {
                broken.push(format!("{}: {module} uses crate::{used}", file.display()));
            }
        }
        for krate in *must_not {
            if uses_crate(&code, krate) {
                broken.push(format!("{}: {module} uses the crate {krate}", file.display()));
            }
        }
    }
    assert!(
        broken.is_empty(),
        "imports the layout does not allow:\n{}",
        broken.join("\n")
    );
}

#[test]
fn the_allowed_imports_have_no_cycle() {
    // Each module may only use modules listed before it in `RULES`.
    for (i, (module, may, _)) in RULES.iter().enumerate() {
        for used in *may {
            let at = RULES.iter().position(|(m, _, _)| m == used);
            assert!(
                at.is_some_and(|at| at < i),
                "{module} may use {used}, which is not listed before it"
            );
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_imports() {
    let code = "use crate::{\n    bus::EventSink,\n    domain::{Id, model::{A, B}},\n    protocol,\n};\nfn f() { crate::store::x(); }";
    let got: Vec<String> = crate_modules(code).into_iter().collect();
    assert_eq!(got, ["bus", "domain", "protocol", "store"]);
    assert!(uses_crate("use actix_web::HttpResponse;", "actix_web"));
    assert!(!uses_crate("use my_actix_web::X;", "actix_web"));
}
