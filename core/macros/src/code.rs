//! The code fingerprint of a `#[node]` function: its own tokens plus the
//! tokens of the helper functions it calls that live in the same crate,
//! followed transitively.
//!
//! Sources are the files of the crate target the macro expands in: its
//! root (`src/lib.rs`, `src/main.rs`, `src/bin/<name>.rs`, or the test,
//! example or bench file, found from the expanding file, `CARGO_MANIFEST_DIR`,
//! `CARGO_BIN_NAME` and `CARGO_CRATE_NAME`) and every module file the root
//! declares, followed (`mod x;`, with `#[path]`), plus the expanding file.
//! Another binary of the same package is another target: its functions are
//! never helpers.
//!
//! A name counts as a call when it is the last segment of a path expression
//! (calls, and functions passed as values), also inside macro arguments
//! that parse as expressions: it is followed to every function and method
//! of that name in the target. A method call (`value.name()`) is followed to
//! methods of that name only (functions in `impl` blocks), never to free
//! functions: `iter.count()` is not a call of a free `fn count`. A name
//! shared by several functions over-invalidates rather than misses a change.
//! Code in other crates (dependencies, std) is not covered.

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
    /// Whether it is a function of an `impl` or trait block.
    method: bool,
    calls: BTreeSet<Call>,
}

/// A name code refers to: `(name, through a method call)`.
type Call = (String, bool);

/// What one file holds: its functions by name, and the files of the
/// modules it declares (resolved).
#[derive(Default)]
struct FileIndex {
    fns: HashMap<String, Vec<Arc<FnInfo>>>,
    modules: Vec<PathBuf>,
}

/// Names a piece of code refers to.
#[derive(Default)]
struct Calls(BTreeSet<Call>);

impl<'ast> Visit<'ast> for Calls {
    fn visit_expr_path(&mut self, p: &'ast syn::ExprPath) {
        if let Some(seg) = p.path.segments.last() {
            self.0.insert((seg.ident.to_string(), false));
        }
        visit::visit_expr_path(self, p);
    }

    fn visit_expr_method_call(&mut self, m: &'ast syn::ExprMethodCall) {
        self.0.insert((m.method.to_string(), true));
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

/// Collects every `fn` (free, in impls and traits, in nested modules) of a
/// file, and the files of the modules it declares.
struct Collect {
    index: FileIndex,
    /// The directory `mod x;` resolves in at this point of the file.
    module_dir: PathBuf,
}

impl Collect {
    fn add(&mut self, name: String, tokens: String, method: bool, block: &syn::Block) {
        let mut calls = Calls::default();
        calls.visit_block(block);
        self.index
            .fns
            .entry(name)
            .or_default()
            .push(Arc::new(FnInfo {
                tokens,
                method,
                calls: calls.0,
            }));
    }
}

/// The value of a `#[path = "..."]` attribute.
fn path_attr(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find_map(|a| match &a.meta {
        syn::Meta::NameValue(nv) if nv.path.is_ident("path") => match &nv.value {
            Expr::Lit(syn::ExprLit {
                lit: syn::Lit::Str(s),
                ..
            }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

impl<'ast> Visit<'ast> for Collect {
    fn visit_item_fn(&mut self, f: &'ast ItemFn) {
        self.add(
            f.sig.ident.to_string(),
            canonical_tokens(f),
            false,
            &f.block,
        );
        visit::visit_item_fn(self, f);
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        let mut f2 = f.clone();
        strip_docs(&mut f2.attrs);
        self.add(
            f.sig.ident.to_string(),
            f2.to_token_stream().to_string(),
            true,
            &f.block,
        );
        visit::visit_impl_item_fn(self, f);
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            let mut f2 = f.clone();
            strip_docs(&mut f2.attrs);
            self.add(
                f.sig.ident.to_string(),
                f2.to_token_stream().to_string(),
                true,
                block,
            );
        }
        visit::visit_trait_item_fn(self, f);
    }

    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        let name = m.ident.to_string();
        match &m.content {
            // `mod x;`: a file of its own.
            None => {
                let file = match path_attr(&m.attrs) {
                    Some(p) => self.module_dir.join(p),
                    None => {
                        let flat = self.module_dir.join(format!("{name}.rs"));
                        if flat.exists() {
                            flat
                        } else {
                            self.module_dir.join(&name).join("mod.rs")
                        }
                    }
                };
                self.index.modules.push(file);
            }
            // `mod x { ... }`: its own `mod y;` live in `x/`.
            Some(_) => {
                let outer = self.module_dir.clone();
                self.module_dir = match path_attr(&m.attrs) {
                    Some(p) => outer.join(p),
                    None => outer.join(&name),
                };
                visit::visit_item_mod(self, m);
                self.module_dir = outer;
            }
        }
    }
}

/// The tokens of a function without its doc comments (so editing a comment
/// does not invalidate the cache).
pub fn canonical_tokens(f: &ItemFn) -> String {
    let mut f = f.clone();
    strip_docs(&mut f.attrs);
    f.to_token_stream().to_string()
}

/// Removes doc comments (so editing one does not change a fingerprint).
fn strip_docs(attrs: &mut Vec<syn::Attribute>) {
    attrs.retain(|a| !a.path().is_ident("doc"));
}

/// The index of one source file; `module_dir` is where its `mod x;`
/// declarations resolve (its own directory for a crate root, a `mod.rs` or
/// a file loaded with `#[path]`, else the directory named after it).
fn index_of(path: &Path, module_dir: &Path) -> Option<Arc<FileIndex>> {
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
    let mut c = Collect {
        index: FileIndex::default(),
        module_dir: module_dir.to_path_buf(),
    };
    c.visit_file(&file);
    let idx = Arc::new(c.index);
    cache
        .lock()
        .ok()?
        .insert(path.to_path_buf(), (mtime, idx.clone()));
    Some(idx)
}

/// The root file of the crate target that file `here` belongs to.
fn target_root(here: &Path) -> PathBuf {
    let Some(manifest) = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from) else {
        return here.to_path_buf();
    };
    let Ok(rel) = here.strip_prefix(&manifest) else {
        return here.to_path_buf();
    };
    let parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let first_existing = |candidates: Vec<PathBuf>| {
        candidates
            .into_iter()
            .find(|p| p.is_file())
            .unwrap_or_else(|| here.to_path_buf())
    };
    match parts
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["src", "bin", file] if file.ends_with(".rs") => manifest.join("src/bin").join(file),
        ["src", "bin", dir, ..] => {
            first_existing(vec![manifest.join("src/bin").join(dir).join("main.rs")])
        }
        ["src", ..] => {
            let (lib, main) = (manifest.join("src/lib.rs"), manifest.join("src/main.rs"));
            if std::env::var_os("CARGO_BIN_NAME").is_some() {
                first_existing(vec![main, lib])
            } else {
                first_existing(vec![lib, main])
            }
        }
        [dir @ ("tests" | "examples" | "benches"), ..] => {
            let base = manifest.join(dir);
            let mut candidates = Vec::new();
            if let Ok(krate) = std::env::var("CARGO_CRATE_NAME") {
                for name in [krate.clone(), krate.replace('_', "-")] {
                    candidates.push(base.join(format!("{name}.rs")));
                    candidates.push(base.join(&name).join("main.rs"));
                }
            }
            first_existing(candidates)
        }
        _ => here.to_path_buf(),
    }
}

/// The indexes of the source files of the crate target code expanding here
/// belongs to: its root and its module files (followed from the root), and
/// the expanding file itself.
fn target_indexes() -> Vec<Arc<FileIndex>> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let Some(here) = proc_macro::Span::call_site().local_file() else {
        return Vec::new();
    };
    let dir_of = |p: &Path| p.parent().map(Path::to_path_buf).unwrap_or_default();
    let here = if here.is_absolute() {
        here
    } else {
        cwd.join(here)
    };
    let root = target_root(&here);
    let mut indexes = Vec::new();
    let mut seen = BTreeSet::new();
    // (file, directory its `mod x;` resolve in)
    let mut queue = VecDeque::from([(root.clone(), dir_of(&root))]);
    while let Some((file, module_dir)) = queue.pop_front() {
        let key = file.canonicalize().unwrap_or_else(|_| file.clone());
        if !seen.insert(key) {
            continue;
        }
        if let Some(index) = index_of(&file, &module_dir) {
            for module in &index.modules {
                let named_after_file = module.file_name().is_some_and(|n| n != "mod.rs")
                    && module.extension().is_some_and(|e| e == "rs");
                // `a.rs` declares its modules in `a/`; `a/mod.rs` in `a/`.
                let dir = if named_after_file {
                    module.with_extension("")
                } else {
                    dir_of(module)
                };
                queue.push_back((module.clone(), dir));
            }
            indexes.push(index);
        }
    }
    let key = here.canonicalize().unwrap_or_else(|_| here.clone());
    if !seen.contains(&key)
        && let Some(index) = index_of(&here, &dir_of(&here))
    {
        indexes.push(index);
    }
    indexes
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

    let indexes = target_indexes();
    // A path call reaches functions and methods; a method call, methods.
    let lookup = |(name, method): &Call| -> Vec<Arc<FnInfo>> {
        indexes
            .iter()
            .filter_map(|i| i.fns.get(name))
            .flatten()
            .filter(|f| f.method || !method)
            .cloned()
            .collect()
    };
    let mut helpers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut followed: BTreeSet<Call> = BTreeSet::new();
    let mut queue: VecDeque<Call> = calls.0.into_iter().collect();
    while let Some(call) = queue.pop_front() {
        if call.0 == me || !followed.insert(call.clone()) {
            continue;
        }
        let found = lookup(&call);
        if found.is_empty() {
            continue;
        }
        let tokens = helpers.entry(call.0.clone()).or_default();
        tokens.extend(found.iter().map(|f| f.tokens.clone()));
        tokens.sort();
        tokens.dedup();
        for f in &found {
            queue.extend(f.calls.iter().cloned());
        }
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
