//! The shape of `src/`, read as text: the module graph has no cycles, no file is over
//! [`MAX_FILE_LINES`] lines and no function over [`MAX_FN_LINES`] lines (tests modules not
//! counted). `cargo test --test architecture -- --nocapture` prints the module graph.
//!
//! A node of the graph is a top-level module (`crate::credentials::cache::X` counts as
//! `credentials`); an edge is any `crate::` path (in `use` or anywhere in the code, `{..}` groups
//! included) or `super::` path that leaves the top-level module. Comments, string literals and
//! `#[cfg(test)] mod ..` blocks are ignored. `src/main.rs` is its own crate (it reaches the
//! library as `scopegate::`) and is not a node; `src/lib.rs` is the root and only declares.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

const MAX_FILE_LINES: usize = 600;
const MAX_FN_LINES: usize = 60;

/// One source file, with comments and literals blanked out (line structure kept).
struct Source {
    /// Relative to the crate root, e.g. `src/credentials/cache.rs`.
    rel: String,
    /// Module path from the file path: `src/credentials/mod.rs` -> `["credentials"]`.
    module: Vec<String>,
    original: Vec<String>,
    /// Code only: comments, strings and char literals replaced by spaces.
    code: String,
    /// 1-based inclusive line ranges of `#[cfg(test)] mod .. { .. }` blocks.
    test_blocks: Vec<(usize, usize)>,
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Path,
    Punct(char),
}

struct Token {
    tok: Tok,
    line: usize,
}

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

fn module_path(rel_to_src: &Path) -> Vec<String> {
    let mut parts: Vec<String> = rel_to_src
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    let file = parts.pop().unwrap();
    let stem = file.trim_end_matches(".rs");
    let crate_root = parts.is_empty() && matches!(stem, "lib" | "main");
    if stem != "mod" && !crate_root {
        parts.push(stem.to_owned());
    }
    parts
}

fn sources() -> Vec<Source> {
    let src = root().join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    assert!(!files.is_empty(), "no .rs files under {}", src.display());
    files
        .into_iter()
        .map(|path| {
            let text = std::fs::read_to_string(&path).unwrap();
            let code = blank_comments_and_literals(&text);
            let test_blocks = test_blocks(&code);
            let code = blank_lines(&code, &test_blocks);
            Source {
                rel: path
                    .strip_prefix(root())
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
                module: module_path(path.strip_prefix(&src).unwrap()),
                original: text.lines().map(str::to_owned).collect(),
                code,
                test_blocks,
            }
        })
        .collect()
}

/// Replaces comments, string literals (plain, byte, raw) and char literals with spaces, keeping
/// newlines, so that braces and paths left are code.
fn blank_comments_and_literals(text: &str) -> String {
    let c: Vec<char> = text.chars().collect();
    let mut out: Vec<char> = c.clone();
    let blank = |out: &mut Vec<char>, from: usize, to: usize| {
        for ch in &mut out[from..to.min(c.len())] {
            if *ch != '\n' {
                *ch = ' ';
            }
        }
    };
    let ident = |ch: char| ch.is_alphanumeric() || ch == '_';
    let mut i = 0;
    while i < c.len() {
        let next = c.get(i + 1).copied();
        if c[i] == '/' && next == Some('/') {
            let end = c[i..]
                .iter()
                .position(|&ch| ch == '\n')
                .map_or(c.len(), |p| i + p);
            blank(&mut out, i, end);
            i = end;
        } else if c[i] == '/' && next == Some('*') {
            let (mut depth, mut j) = (1, i + 2);
            while j < c.len() && depth > 0 {
                if c[j] == '/' && c.get(j + 1) == Some(&'*') {
                    depth += 1;
                    j += 2;
                } else if c[j] == '*' && c.get(j + 1) == Some(&'/') {
                    depth -= 1;
                    j += 2;
                } else {
                    j += 1;
                }
            }
            blank(&mut out, i, j);
            i = j;
        } else if c[i] == 'r'
            && (i == 0 || !ident(c[i - 1]) || (c[i - 1] == 'b' && (i < 2 || !ident(c[i - 2]))))
            && matches!(next, Some('"') | Some('#'))
        {
            let hashes = c[i + 1..].iter().take_while(|&&ch| ch == '#').count();
            if c.get(i + 1 + hashes) != Some(&'"') {
                i += 1; // a raw identifier, `r#type`
                continue;
            }
            let (start, closing) = (i + 2 + hashes, vec!['#'; hashes]);
            let mut j = start;
            while j < c.len() && !(c[j] == '"' && c[j + 1..].starts_with(&closing)) {
                j += 1;
            }
            blank(&mut out, start, j);
            i = j + 1 + hashes;
        } else if c[i] == '"' {
            let mut j = i + 1;
            while j < c.len() && c[j] != '"' {
                j += if c[j] == '\\' { 2 } else { 1 };
            }
            blank(&mut out, i + 1, j);
            i = j + 1;
        } else if c[i] == '\'' {
            if next == Some('\\') {
                let mut j = i + 2;
                while j < c.len() && c[j] != '\'' {
                    j += 1;
                }
                blank(&mut out, i + 1, j);
                i = j + 1;
            } else if c.get(i + 2) == Some(&'\'') {
                blank(&mut out, i + 1, i + 2);
                i += 3;
            } else {
                i += 1; // a lifetime or label
            }
        } else {
            i += 1;
        }
    }
    out.into_iter().collect()
}

fn tokens(code: &str) -> Vec<Token> {
    let mut out = Vec::new();
    let mut line = 1;
    let c: Vec<char> = code.chars().collect();
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch.is_alphanumeric() || ch == '_' {
            let start = i;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[start..i].iter().collect();
            out.push(Token {
                tok: Tok::Word(word),
                line,
            });
        } else if ch == ':' && c.get(i + 1) == Some(&':') {
            out.push(Token {
                tok: Tok::Path,
                line,
            });
            i += 2;
        } else {
            out.push(Token {
                tok: Tok::Punct(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

fn word(t: Option<&Token>) -> Option<&str> {
    match t.map(|t| &t.tok) {
        Some(Tok::Word(w)) => Some(w),
        _ => None,
    }
}

fn is(t: Option<&Token>, expected: &Tok) -> bool {
    t.is_some_and(|t| &t.tok == expected)
}

/// Index of the `}` closing the `{` at `open`.
fn matching_brace(toks: &[Token], open: usize) -> usize {
    let mut depth = 0usize;
    for (i, t) in toks.iter().enumerate().skip(open) {
        match t.tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    toks.len() - 1
}

/// Line ranges of `#[cfg(test)]` followed (after any other attributes) by `mod name { .. }` or
/// `mod name;`.
fn test_blocks(code: &str) -> Vec<(usize, usize)> {
    let toks = tokens(code);
    let attr = ["#", "[", "cfg", "(", "test", ")", "]"];
    let text = |t: &Token| match &t.tok {
        Tok::Word(w) => w.clone(),
        Tok::Path => "::".to_owned(),
        Tok::Punct(c) => c.to_string(),
    };
    let mut blocks = Vec::new();
    let mut i = 0;
    while i + attr.len() <= toks.len() {
        if !toks[i..i + attr.len()]
            .iter()
            .zip(attr)
            .all(|(t, a)| text(t) == a)
        {
            i += 1;
            continue;
        }
        let start_line = toks[i].line;
        let mut j = i + attr.len();
        while is(toks.get(j), &Tok::Punct('#')) {
            while j < toks.len() && !is(toks.get(j), &Tok::Punct(']')) {
                j += 1;
            }
            j += 1;
        }
        if word(toks.get(j)) == Some("pub") {
            j += 1;
        }
        if word(toks.get(j)) == Some("mod") && word(toks.get(j + 1)).is_some() {
            let end = if is(toks.get(j + 2), &Tok::Punct('{')) {
                matching_brace(&toks, j + 2)
            } else {
                j + 2
            };
            blocks.push((start_line, toks[end.min(toks.len() - 1)].line));
            i = end + 1;
        } else {
            i += attr.len();
        }
    }
    blocks
}

fn blank_lines(code: &str, ranges: &[(usize, usize)]) -> String {
    code.split('\n')
        .enumerate()
        .map(|(n, l)| {
            if ranges.iter().any(|&(a, b)| (a..=b).contains(&(n + 1))) {
                ""
            } else {
                l
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where an edge was seen first, and how often.
struct Evidence {
    file: String,
    line: usize,
    text: String,
    count: usize,
}

type Graph = BTreeMap<String, BTreeMap<String, Evidence>>;

/// The first segments named by a path that starts at `toks[at]` (a word or a `{ .. }` group).
fn first_segments(toks: &[Token], at: usize) -> Vec<(String, usize)> {
    if let Some(w) = word(toks.get(at)) {
        return vec![(w.to_owned(), toks[at].line)];
    }
    if !is(toks.get(at), &Tok::Punct('{')) {
        return Vec::new();
    }
    let end = matching_brace(toks, at);
    let mut out = Vec::new();
    let mut depth = 0;
    let mut expecting = true;
    for t in &toks[at + 1..end] {
        match &t.tok {
            Tok::Punct('{') => depth += 1,
            Tok::Punct('}') => depth -= 1,
            Tok::Punct(',') if depth == 0 => expecting = true,
            Tok::Word(w) if depth == 0 && expecting => {
                out.push((w.clone(), t.line));
                expecting = false;
            }
            _ if depth == 0 => expecting = false,
            _ => {}
        }
    }
    out
}

fn module_graph(sources: &[Source]) -> (BTreeSet<String>, Graph) {
    let nodes: BTreeSet<String> = sources
        .iter()
        .filter(|s| s.rel != "src/main.rs")
        .filter_map(|s| s.module.first().cloned())
        .collect();
    let mut graph: Graph = nodes.iter().map(|n| (n.clone(), BTreeMap::new())).collect();
    for s in sources
        .iter()
        .filter(|s| s.rel != "src/main.rs" && !s.module.is_empty())
    {
        let from = &s.module[0];
        let toks = tokens(&s.code);
        // Inline `mod name { .. }` blocks: (name, index of their closing brace).
        let mut inline: Vec<(String, usize)> = Vec::new();
        for i in 0..toks.len() {
            while inline.last().is_some_and(|&(_, end)| i > end) {
                inline.pop();
            }
            if word(toks.get(i)) == Some("mod")
                && let Some(name) = word(toks.get(i + 1))
                && is(toks.get(i + 2), &Tok::Punct('{'))
            {
                inline.push((name.to_owned(), matching_brace(&toks, i + 2)));
            }
            let mut named = Vec::new();
            if word(toks.get(i)) == Some("crate") && is(toks.get(i + 1), &Tok::Path) {
                named = first_segments(&toks, i + 2);
            } else if word(toks.get(i)) == Some("super")
                && is(toks.get(i + 1), &Tok::Path)
                && !(i >= 1 && is(toks.get(i - 1), &Tok::Path))
            {
                let mut here: Vec<String> = s.module.clone();
                here.extend(inline.iter().map(|(n, _)| n.clone()));
                let mut j = i;
                while word(toks.get(j)) == Some("super") && is(toks.get(j + 1), &Tok::Path) {
                    here.pop();
                    j += 2;
                }
                named = match here.first() {
                    Some(top) => vec![(top.clone(), toks[i].line)],
                    None => first_segments(&toks, j),
                };
            }
            for (to, line) in named {
                if &to == from || !nodes.contains(&to) {
                    continue;
                }
                let e = graph
                    .get_mut(from)
                    .unwrap()
                    .entry(to)
                    .or_insert_with(|| Evidence {
                        file: s.rel.clone(),
                        line,
                        text: s.original[line - 1].trim().to_owned(),
                        count: 0,
                    });
                e.count += 1;
            }
        }
    }
    (nodes, graph)
}

/// Strongly connected components with more than one module (Tarjan).
fn tangles(graph: &Graph) -> Vec<Vec<String>> {
    struct State<'a> {
        graph: &'a Graph,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(st: &mut State<'a>, v: &'a str) {
        let n = st.index.len();
        st.index.insert(v, n);
        st.low.insert(v, n);
        st.stack.push(v);
        st.on_stack.insert(v);
        for w in st.graph[v].keys() {
            let w = w.as_str();
            if !st.index.contains_key(w) {
                visit(st, w);
                let lw = st.low[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if st.on_stack.contains(w) {
                let iw = st.index[w];
                let lv = st.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if st.low[v] == st.index[v] {
            let mut scc = Vec::new();
            loop {
                let w = st.stack.pop().unwrap();
                st.on_stack.remove(w);
                scc.push(w.to_owned());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                scc.sort();
                st.out.push(scc);
            }
        }
    }
    let mut st = State {
        graph,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in graph.keys() {
        if !st.index.contains_key(v.as_str()) {
            visit(&mut st, v);
        }
    }
    st.out.sort();
    st.out
}

/// Every elementary cycle (each once, starting at its smallest module), at most `cap`.
fn cycles(graph: &Graph, cap: usize) -> Vec<Vec<String>> {
    fn walk(
        graph: &Graph,
        start: &str,
        path: &mut Vec<String>,
        out: &mut Vec<Vec<String>>,
        cap: usize,
    ) {
        let last = path.last().unwrap().clone();
        for next in graph[&last].keys() {
            if out.len() >= cap {
                return;
            }
            if next == start {
                let mut cycle = path.clone();
                cycle.push(start.to_owned());
                out.push(cycle);
            } else if next.as_str() > start && !path.contains(next) {
                path.push(next.clone());
                walk(graph, start, path, out, cap);
                path.pop();
            }
        }
    }
    let mut out = Vec::new();
    for start in graph.keys() {
        walk(graph, start, &mut vec![start.clone()], &mut out, cap);
    }
    out.sort_by_key(|c| (c.len(), c.clone()));
    out
}

/// Dependencies first; `None` if there is a cycle.
fn topological(graph: &Graph) -> Option<Vec<String>> {
    let mut done: BTreeSet<&str> = BTreeSet::new();
    let mut order = Vec::new();
    while order.len() < graph.len() {
        let ready: Vec<&str> = graph
            .iter()
            .filter(|(n, deps)| {
                !done.contains(n.as_str()) && deps.keys().all(|d| done.contains(d.as_str()))
            })
            .map(|(n, _)| n.as_str())
            .collect();
        if ready.is_empty() {
            return None;
        }
        for n in ready {
            done.insert(n);
            order.push(n.to_owned());
        }
    }
    Some(order)
}

#[test]
fn the_module_graph_has_no_cycles() {
    let sources = sources();
    let (nodes, graph) = module_graph(&sources);
    assert!(
        nodes.len() > 5,
        "found only {nodes:?}: is this reading src/?"
    );
    let tangled = tangles(&graph);
    let Some(order) = topological(&graph) else {
        println!("module graph (has cycles):");
        for n in graph.keys() {
            println!("  {n:<12} -> {}", dependencies(&graph, n));
        }
        panic!("{}", cycle_report(&graph, &tangled));
    };
    assert!(tangled.is_empty(), "{tangled:?}");
    println!(
        "module graph, dependencies first ({} modules):",
        order.len()
    );
    for n in &order {
        println!("  {n:<12} -> {}", dependencies(&graph, n));
    }
}

fn dependencies(graph: &Graph, n: &str) -> String {
    let deps: Vec<&str> = graph[n].keys().map(String::as_str).collect();
    if deps.is_empty() {
        "(nothing)".to_owned()
    } else {
        deps.join(", ")
    }
}

fn cycle_report(graph: &Graph, tangled: &[Vec<String>]) -> String {
    let all = cycles(graph, 200);
    let mut msg = String::new();
    writeln!(
        msg,
        "the module graph has cycles: a top-level module must not depend, directly or through \
         others, on a module that depends on it. Break each cycle by moving the shared item into \
         the lower module (or a new leaf module both can use), or by passing it in as a \
         parameter/trait.\n"
    )
    .unwrap();
    for scc in tangled {
        writeln!(msg, "tangled together: {}", scc.join(", ")).unwrap();
        writeln!(msg, "  edges inside (first reference, references):").unwrap();
        for from in scc {
            for (to, e) in &graph[from] {
                if scc.contains(to) {
                    writeln!(
                        msg,
                        "    {from} -> {to}   {}:{}  `{}`  ({}x)",
                        e.file, e.line, e.text, e.count
                    )
                    .unwrap();
                }
            }
        }
    }
    writeln!(
        msg,
        "\n{} elementary cycle(s){}, shortest first:",
        all.len(),
        if all.len() >= 200 { " (first 200)" } else { "" }
    )
    .unwrap();
    for c in &all {
        writeln!(msg, "  {}", c.join(" -> ")).unwrap();
    }
    msg
}

#[test]
fn no_source_file_is_over_600_lines_outside_its_tests() {
    let mut offenders = Vec::new();
    for s in sources() {
        let tests: usize = s.test_blocks.iter().map(|(a, b)| b - a + 1).sum();
        let n = s.original.len() - tests;
        if n > MAX_FILE_LINES {
            offenders.push(format!(
                "  {}: {n} lines ({} over; {} more in tests modules, not counted)",
                s.rel,
                n - MAX_FILE_LINES,
                tests
            ));
        }
    }
    assert!(
        offenders.is_empty(),
        "{} file(s) under src/ over {MAX_FILE_LINES} lines, not counting `#[cfg(test)] mod` \
         blocks; split each into submodules along its responsibilities:\n{}",
        offenders.len(),
        offenders.join("\n")
    );
}

#[test]
fn no_function_is_over_60_lines() {
    let mut offenders = Vec::new();
    for s in sources() {
        let toks = tokens(&s.code);
        for i in 0..toks.len() {
            if word(toks.get(i)) != Some("fn") {
                continue;
            }
            let Some(name) = word(toks.get(i + 1)) else {
                continue; // a `fn(..)` pointer type
            };
            // The body's `{`, past the signature (`;` first: a declaration without a body).
            let (mut parens, mut j) = (0i32, i + 2);
            let open = loop {
                match toks.get(j).map(|t| &t.tok) {
                    None => break None,
                    Some(Tok::Punct('(' | '[')) => parens += 1,
                    Some(Tok::Punct(')' | ']')) => parens -= 1,
                    Some(Tok::Punct(';')) if parens == 0 => break None,
                    Some(Tok::Punct('{')) if parens == 0 => break Some(j),
                    _ => {}
                }
                j += 1;
            };
            let Some(open) = open else { continue };
            let end = toks[matching_brace(&toks, open)].line;
            let n = end - toks[i].line + 1;
            if n > MAX_FN_LINES {
                offenders.push((s.rel.clone(), toks[i].line, name.to_owned(), n));
            }
        }
    }
    offenders.sort_by(|a, b| b.3.cmp(&a.3).then((&a.0, a.1).cmp(&(&b.0, b.1))));
    let list: Vec<String> = offenders
        .iter()
        .map(|(f, l, name, n)| format!("  {f}:{l} fn {name} ({n} lines)"))
        .collect();
    assert!(
        offenders.is_empty(),
        "{} function(s) over {MAX_FN_LINES} lines (from the `fn` line to the closing brace, \
         tests modules not counted), longest first; extract the steps into named functions:\n{}",
        offenders.len(),
        list.join("\n")
    );
}

#[test]
fn the_reader_sees_through_comments_literals_and_tests() {
    let text = r##"use crate::{a::X, b::{self, Y}};
// use crate::c;
/* crate::d:: */ const S: &str = "crate::e::";
const R: &str = r#"crate::f" {"#;
fn x<'a>(c: char) -> bool { c == '{' && crate::g::ok() }
#[cfg(test)]
mod tests {
    use crate::h;
}
"##;
    let code = blank_comments_and_literals(text);
    let blocks = test_blocks(&code);
    assert_eq!(blocks, vec![(6, 9)]);
    let code = blank_lines(&code, &blocks);
    for gone in ["crate::c", "crate::d", "crate::e", "crate::f", "crate::h"] {
        assert!(!code.contains(gone), "{gone} left in:\n{code}");
    }
    let toks = tokens(&code);
    let open = toks
        .iter()
        .position(|t| t.tok == Tok::Punct('{') && t.line == 5)
        .unwrap();
    assert_eq!(toks[matching_brace(&toks, open)].line, 5);
    let groups = first_segments(&toks, 3);
    let names: Vec<&str> = groups.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["a", "b"]);
    assert!(code.contains("crate::g::ok()"));
    assert_eq!(
        module_path(Path::new("credentials/mod.rs")),
        ["credentials"]
    );
    assert_eq!(
        module_path(Path::new("credentials/cache.rs")),
        ["credentials", "cache"]
    );
    assert_eq!(module_path(Path::new("lib.rs")), Vec::<String>::new());
    assert_eq!(module_path(Path::new("config.rs")), ["config"]);
}
