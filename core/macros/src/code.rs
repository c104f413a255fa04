//! The code fingerprint of a `#[node]` function: its own tokens plus the
//! tokens of the helper functions it calls that live in the same crate,
//! followed transitively.
//!
//! Sources are found from the file the macro expands in
//! (`Span::local_file`) and `CARGO_MANIFEST_DIR`: every `.rs` file under the
//! crate's `src/`, plus the expanding file and the `.rs` files beside it
//! (for tests, examples and benches). A name counts as a call when it is the
//! last segment of any path expression (calls, and functions passed as
//! values) or a method call, also inside macro arguments that parse as
//! expressions. Every function or method of that name in those files is
//! hashed, so a name shared by several functions over-invalidates rather than
//! misses a change. Code in other crates (dependencies, std) is not covered.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::SystemTime;

use quote::ToTokens;
use syn::punctuated::Punctuated;
use syn::visit::{self, Visit};
use syn::{Expr, ItemFn, Token};

/// One function found in the sources.
struct FnInfo {
    tokens: String,
    calls: BTreeSet<String>,
}

/// Functions of one file, by name.
type FileIndex = HashMap<String, Vec<Arc<FnInfo>>>;

/// Names a piece of code refers to.
#[derive(Default)]
struct Calls(BTreeSet<String>);

impl<'ast> Visit<'ast> for Calls {
    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        if let Some(seg) = p.path.segments.last() {
            self.0.insert(seg.ident.to_string());
        }
        visit::visit_expr_path(self, p);
    }

    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        self.0.insert(m.method.to_string());
        visit::visit_expr_method_call(self, m);
    }

    fn visit_macro(&mut self, m: &'ast syn::Macro) {
        let parser = Punctuated::<Expr, Token![,]>::parse_terminated;
        if let Ok(args) = m.parse_body_with(parser) {
            for e in &args {
                self.visit_expr(e);
            }
        }
        visit::visit_macro(self, m);
    }
}

/// Collects every `fn` (free, in impls, in nested modules) of a file.
#[derive(Default)]
struct Collect(FileIndex);

impl Collect {
    fn add(&mut self, name: String, tokens: String, block: &syn::Block) {
        let mut calls = Calls::default();
        calls.visit_block(block);
        self.0.entry(name).or_default().push(Arc::new(FnInfo {
            tokens,
            calls: calls.0,
        }));
    }
}

impl<'ast> Visit<'ast> for Collect {
    fn visit_item_fn(&mut self, f: &'ast ItemFn) {
        self.add(f.sig.ident.to_string(), canonical_tokens(f), &f.block);
        visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let mut f2 = f.clone();
        f2.attrs.retain(|a| !a.path().is_ident("doc"));
        self.add(
            f.sig.ident.to_string(),
            f2.to_token_stream().to_string(),
            &f.block,
        );
        visit::visit_impl_item_fn(self, f);
    }
}

/// The tokens of a function without its doc comments (so editing a comment
/// does not invalidate the cache).
pub fn canonical_tokens(f: &ItemFn) -> String {
    let mut f = f.clone();
    f.attrs.retain(|a| !a.path().is_ident("doc"));
    f.to_token_stream().to_string()
}

fn index_of(path: &Path) -> Option<Arc<FileIndex>> {
    type Cache = Mutex<HashMap<PathBuf, (Option<SystemTime>, Arc<FileIndex>)>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let mtime = std::fs::metadata(path).and_then(|m| m.modified()).ok();
    let cache = CACHE.get_or_init(Default::default);
    if let Some((t, idx)) = cache.lock().ok()?.get(path)
        && *t == mtime
        && mtime.is_some()
    {
        return Some(idx.clone());
    }
    let text = std::fs::read_to_string(path).ok()?;
    let file = syn::parse_file(&text).ok()?;
    let mut c = Collect::default();
    c.visit_file(&file);
    let idx = Arc::new(c.0);
    cache
        .lock()
        .ok()?
        .insert(path.to_path_buf(), (mtime, idx.clone()));
    Some(idx)
}

fn rs_files(dir: &Path, recursive: bool, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            if recursive && !p.join("Cargo.toml").exists() {
                rs_files(&p, true, out);
            }
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

/// The source files that may hold helpers of code expanding here.
fn source_files() -> Vec<PathBuf> {
    let mut files = Vec::new();
    let cwd = std::env::current_dir().unwrap_or_default();
    if let Some(here) = proc_macro::Span::call_site().local_file() {
        let here = if here.is_absolute() {
            here
        } else {
            cwd.join(here)
        };
        if let Some(dir) = here.parent() {
            rs_files(dir, false, &mut files);
        }
        files.push(here);
    }
    if let Ok(manifest) = std::env::var("CARGO_MANIFEST_DIR") {
        rs_files(&Path::new(&manifest).join("src"), true, &mut files);
    }
    let mut seen = BTreeSet::new();
    files.retain(|f| seen.insert(f.canonicalize().unwrap_or_else(|_| f.clone())));
    files
}

/// The fingerprint of a node: a BLAKE3 hex digest, and the names of the
/// helpers it covers (sorted).
/// The fingerprint of a node, and its parts for explaining what changed:
/// `("body", hash)` and one `("helper <name>", hash)` per helper.
pub struct Fingerprint {
    pub hash: String,
    pub helpers: Vec<String>,
    pub parts: Vec<(String, String)>,
}

fn part_hash(items: &[&str]) -> String {
    let mut h = blake3::Hasher::new();
    for s in items {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    }
    h.finalize().to_hex()[..16].to_string()
}

pub fn fingerprint(func: &ItemFn, outputs: &[String], extra: &str) -> Fingerprint {
    let own = canonical_tokens(func);
    let mut calls = Calls::default();
    calls.visit_block(&func.block);
    let me = func.sig.ident.to_string();

    let indexes: Vec<Arc<FileIndex>> = source_files().iter().filter_map(|f| index_of(f)).collect();
    let lookup = |name: &str| -> Vec<Arc<FnInfo>> {
        indexes
            .iter()
            .filter_map(|i| i.get(name))
            .flatten()
            .cloned()
            .collect()
    };
    let mut helpers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut queue: VecDeque<String> = calls.0.into_iter().collect();
    while let Some(name) = queue.pop_front() {
        if name == me || helpers.contains_key(&name) {
            continue;
        }
        let found = lookup(&name);
        if found.is_empty() {
            continue;
        }
        let mut tokens: Vec<String> = found.iter().map(|f| f.tokens.clone()).collect();
        tokens.sort();
        tokens.dedup();
        for f in &found {
            queue.extend(f.calls.iter().cloned());
        }
        helpers.insert(name, tokens);
    }

    let mut h = blake3::Hasher::new();
    let mut put = |s: &str| {
        h.update(&(s.len() as u64).to_le_bytes());
        h.update(s.as_bytes());
    };
    put("hypernodes/code/v1");
    put(&own);
    put(&outputs.join("\u{1f}"));
    put(extra);
    for (name, bodies) in &helpers {
        put(name);
        for b in bodies {
            put(b);
        }
    }
    let outputs_joined = outputs.join("\u{1f}");
    let mut parts = vec![("body".to_string(), part_hash(&[&own, &outputs_joined]))];
    for (name, bodies) in &helpers {
        let refs: Vec<&str> = bodies.iter().map(String::as_str).collect();
        parts.push((format!("helper `{name}`"), part_hash(&refs)));
    }
    Fingerprint {
        hash: h.finalize().to_hex().to_string(),
        helpers: helpers.into_keys().collect(),
        parts,
    }
}
