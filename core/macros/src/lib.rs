//! Procedural macros of HyperNodes.
//!
//! - `#[node]` turns an ordinary `fn` into a pipeline node while leaving the
//!   function callable as plain Rust. It adds a handle type of the same name,
//!   so `my_fn::node()` returns the [`Node`](../hypernodes_core/node/struct.Node.html).
//! - `#[derive(ArrowValue)]` gives a serde struct an Arrow form.
//!
//! Both emit paths into the `hypernodes` facade when the calling crate
//! depends on it, and into `hypernodes_core` otherwise.

mod code;

use proc_macro::TokenStream;
use proc_macro_crate::{FoundCrate, crate_name};
use proc_macro2::{Span, TokenStream as TokenStream2};
use quote::{format_ident, quote};
use syn::parse::Parser;
use syn::spanned::Spanned;
use syn::{
    Error, Expr, ExprLit, FnArg, GenericParam, ItemFn, Lit, Pat, PathArguments, ReturnType, Type,
    parse_macro_input,
};

/// The path of the runtime crate as seen from the calling crate.
fn krate() -> TokenStream2 {
    let ident = |name: &str| syn::Ident::new(name, Span::call_site());
    match crate_name("hypernodes") {
        Ok(FoundCrate::Itself) => return quote!(::hypernodes),
        Ok(FoundCrate::Name(n)) => {
            let i = ident(&n);
            return quote!(::#i);
        }
        Err(_) => {}
    }
    match crate_name("hypernodes-core") {
        Ok(FoundCrate::Name(n)) => {
            let i = ident(&n);
            quote!(::#i)
        }
        _ => quote!(::hypernodes_core),
    }
}

struct NodeArgs {
    outputs: Option<Vec<String>>,
    retries: u32,
    name: Option<String>,
    version: Option<String>,
    env: Vec<String>,
    cache: bool,
    batch: Option<syn::Path>,
    /// `concurrency = N` (async fns only), with its span for errors.
    concurrency: Option<(usize, proc_macro2::Span)>,
    /// `max_per_second = N` (async fns only), with its span for errors.
    max_per_second: Option<(f64, proc_macro2::Span)>,
}

fn parse_node_args(attr: TokenStream) -> syn::Result<NodeArgs> {
    let mut args = NodeArgs {
        outputs: None,
        retries: 0,
        name: None,
        version: None,
        env: Vec::new(),
        cache: true,
        batch: None,
        concurrency: None,
        max_per_second: None,
    };
    let parser = syn::meta::parser(|meta| {
        if meta.path.is_ident("output") {
            let expr: Expr = meta.value()?.parse()?;
            args.outputs = Some(output_names(&expr)?);
            Ok(())
        } else if meta.path.is_ident("retries") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            args.retries = lit.base10_parse()?;
            Ok(())
        } else if meta.path.is_ident("version") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            args.version = Some(lit.value());
            Ok(())
        } else if meta.path.is_ident("cache") {
            let lit: syn::LitBool = meta.value()?.parse()?;
            args.cache = lit.value;
            Ok(())
        } else if meta.path.is_ident("env") {
            let expr: Expr = meta.value()?.parse()?;
            let Expr::Array(arr) = &expr else {
                return Err(Error::new(
                    expr.span(),
                    "env takes a list of names: env = [\"MODEL_DIR\"]",
                ));
            };
            for e in &arr.elems {
                match e {
                    Expr::Lit(ExprLit {
                        lit: Lit::Str(s), ..
                    }) => args.env.push(s.value()),
                    other => {
                        return Err(Error::new(
                            other.span(),
                            "environment variable names must be string literals",
                        ));
                    }
                }
            }
            Ok(())
        } else if meta.path.is_ident("batch") {
            let path: syn::Path = meta.value()?.parse()?;
            args.batch = Some(path);
            Ok(())
        } else if meta.path.is_ident("concurrency") {
            let lit: syn::LitInt = meta.value()?.parse()?;
            let calls: usize = lit.base10_parse()?;
            if calls == 0 {
                return Err(Error::new(
                    lit.span(),
                    "concurrency must be at least 1 call in flight",
                ));
            }
            args.concurrency = Some((calls, lit.span()));
            Ok(())
        } else if meta.path.is_ident("max_per_second") {
            let lit: Lit = meta.value()?.parse()?;
            let rate: f64 = match &lit {
                Lit::Int(i) => i.base10_parse()?,
                Lit::Float(f) => f.base10_parse()?,
                other => {
                    return Err(Error::new(
                        other.span(),
                        "max_per_second takes a number: max_per_second = 10",
                    ));
                }
            };
            if !(rate.is_finite() && rate > 0.0) {
                return Err(Error::new(
                    lit.span(),
                    "max_per_second must be a positive number of calls",
                ));
            }
            args.max_per_second = Some((rate, lit.span()));
            Ok(())
        } else if meta.path.is_ident("name") {
            let lit: syn::LitStr = meta.value()?.parse()?;
            args.name = Some(lit.value());
            Ok(())
        } else {
            Err(meta.error(
                "unknown #[node] setting; expected `output = \"name\"`, `output = (\"a\", \"b\")`, `retries = N`, `name = \"...\"`, `version = \"...\"`, `env = [\"VAR\"]`, `cache = false`, `batch = path`, `concurrency = N` or `max_per_second = N`",
            ))
        }
    });
    parser.parse(attr)?;
    Ok(args)
}

fn output_names(expr: &Expr) -> syn::Result<Vec<String>> {
    let one = |e: &Expr| match e {
        Expr::Lit(ExprLit {
            lit: Lit::Str(s), ..
        }) => Ok(s.value()),
        other => Err(Error::new(
            other.span(),
            "output names must be string literals",
        )),
    };
    match expr {
        Expr::Tuple(t) => t.elems.iter().map(one).collect(),
        Expr::Paren(p) => Ok(vec![one(&p.expr)?]),
        e => Ok(vec![one(e)?]),
    }
}

/// How a parameter is taken from its value.
enum Take {
    /// By value: clone the stored value.
    Owned(Type),
    /// By reference to the stored value.
    Ref(Type),
    /// `&str` from a stored `String`.
    Str,
    /// `&[T]` from a stored `Vec<T>`.
    Slice(Type),
}

impl Take {
    fn stored(&self) -> TokenStream2 {
        match self {
            Take::Owned(t) | Take::Ref(t) => quote!(#t),
            Take::Str => quote!(::std::string::String),
            Take::Slice(t) => quote!(::std::vec::Vec<#t>),
        }
    }

    /// Converts `v: &Stored` into the parameter.
    fn convert(&self, v: &syn::Ident) -> TokenStream2 {
        match self {
            Take::Owned(_) => quote!(::std::clone::Clone::clone(#v)),
            Take::Ref(_) => quote!(#v),
            Take::Str => quote!(::std::string::String::as_str(#v)),
            Take::Slice(_) => quote!(::std::vec::Vec::as_slice(#v)),
        }
    }
}

fn classify(ty: &Type) -> syn::Result<Take> {
    match ty {
        Type::Reference(r) => {
            if r.mutability.is_some() {
                return Err(Error::new(
                    ty.span(),
                    "#[node] parameters cannot be `&mut`: nodes receive shared values",
                ));
            }
            match &*r.elem {
                Type::Path(p) if p.qself.is_none() && p.path.is_ident("str") => Ok(Take::Str),
                Type::Slice(s) => Ok(Take::Slice((*s.elem).clone())),
                inner => {
                    check_nameable(inner)?;
                    Ok(Take::Ref(inner.clone()))
                }
            }
        }
        other => {
            check_nameable(other)?;
            Ok(Take::Owned(other.clone()))
        }
    }
}

fn check_nameable(ty: &Type) -> syn::Result<()> {
    match ty {
        Type::ImplTrait(_) => Err(Error::new(
            ty.span(),
            "#[node] does not support `impl Trait` types; use a concrete type",
        )),
        Type::Infer(_) => Err(Error::new(ty.span(), "#[node] needs explicit types")),
        _ => Ok(()),
    }
}

/// `Result<T, E>` (or `Result<T>` aliases): the success type.
fn result_ok_type(ty: &Type) -> Option<Type> {
    let Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    if last.ident != "Result" {
        return None;
    }
    let PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    match args.args.first()? {
        syn::GenericArgument::Type(t) => Some(t.clone()),
        _ => None,
    }
}

/// `prefix0`, `prefix1`, ...: the identifiers of generated locals.
fn indexed(prefix: &str, n: usize) -> Vec<syn::Ident> {
    (0..n).map(|i| format_ident!("{}{}", prefix, i)).collect()
}

/// The `#[node]` attribute: see the crate docs.
///
/// Settings: `output = "name"` (default: the function's name),
/// `output = ("a", "b")` with a tuple return, `retries = N`, `name = "..."`,
/// `version = "..."` and `env = ["VAR"]` (part of the signature),
/// `cache = false`, and `batch = path` naming the node's batch
/// implementation over Arrow arrays (`fn(&[ArrayRef]) -> Result<Vec<ArrayRef>, BoxError>`,
/// see `Node::with_batch`), which columnar engines call instead of the
/// function row by row. For an `async fn`: `concurrency = N`, the most calls
/// in flight at once (see `Node::concurrency`), and `max_per_second = N`,
/// the most calls started per second (see `Node::max_per_second`); neither
/// is part of the signature.
#[proc_macro_attribute]
pub fn node(attr: TokenStream, item: TokenStream) -> TokenStream {
    let args = match parse_node_args(attr) {
        Ok(a) => a,
        Err(e) => return e.to_compile_error().into(),
    };
    let func = parse_macro_input!(item as ItemFn);
    match expand_node(args, &func) {
        Ok(ts) => ts.into(),
        Err(e) => {
            let err = e.to_compile_error();
            quote!(#func #err).into()
        }
    }
}

fn expand_node(args: NodeArgs, func: &ItemFn) -> syn::Result<TokenStream2> {
    let krate = krate();
    let sig = &func.sig;
    let ident = &sig.ident;
    let vis = &func.vis;
    for g in &sig.generics.params {
        if !matches!(g, GenericParam::Lifetime(_)) {
            return Err(Error::new(
                g.span(),
                "#[node] functions cannot be generic: a node has concrete input and output types",
            ));
        }
    }
    if let Some(v) = &sig.variadic {
        return Err(Error::new(v.span(), "#[node] functions cannot be variadic"));
    }
    let mut params = Vec::new();
    for arg in &sig.inputs {
        match arg {
            FnArg::Receiver(r) => {
                return Err(Error::new(
                    r.span(),
                    "#[node] cannot be used on methods: a node is a free function of its inputs (no `self`)",
                ));
            }
            FnArg::Typed(pt) => {
                let Pat::Ident(pi) = &*pt.pat else {
                    return Err(Error::new(
                        pt.pat.span(),
                        "#[node] parameters must be plain names: the name is the input's name",
                    ));
                };
                let name = pi.ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
                params.push((name, classify(&pt.ty)?));
            }
        }
    }
    let ret = match &sig.output {
        ReturnType::Default => {
            return Err(Error::new(
                sig.span(),
                "#[node] functions must return a value: the node's output",
            ));
        }
        ReturnType::Type(_, t) => (**t).clone(),
    };
    check_nameable(&ret)?;
    let (fallible, value_ty) = match result_ok_type(&ret) {
        Some(ok) => (true, ok),
        None => (false, ret.clone()),
    };
    let fn_name = ident.to_string();
    let fn_name = fn_name.strip_prefix("r#").unwrap_or(&fn_name).to_string();
    let outputs = args.outputs.unwrap_or_else(|| vec![fn_name.clone()]);
    if outputs.is_empty() {
        return Err(Error::new(
            sig.span(),
            "#[node] needs at least one output name",
        ));
    }
    let out_types: Vec<Type> = if outputs.len() == 1 {
        vec![value_ty.clone()]
    } else {
        match &value_ty {
            Type::Tuple(t) if t.elems.len() == outputs.len() => t.elems.iter().cloned().collect(),
            Type::Tuple(t) => {
                return Err(Error::new(
                    value_ty.span(),
                    format!(
                        "#[node] declares {} outputs but the function returns a tuple of {}",
                        outputs.len(),
                        t.elems.len()
                    ),
                ));
            }
            _ => {
                return Err(Error::new(
                    value_ty.span(),
                    format!(
                        "#[node] declares {} outputs, so the function must return a tuple of {} values",
                        outputs.len(),
                        outputs.len()
                    ),
                ));
            }
        }
    };
    let node_name = args.name.unwrap_or_else(|| fn_name.clone());
    let retries = args.retries;
    let extra = format!(
        "{node_name}\u{1f}version={}\u{1f}env={}",
        args.version.as_deref().unwrap_or(""),
        args.env.join(",")
    );
    let code::Fingerprint {
        hash: code_hash,
        helpers,
        mut parts,
    } = code::fingerprint(func, &outputs, &extra);
    if let Some(v) = &args.version {
        parts.push(("version".to_string(), v.clone()));
    }
    if !args.env.is_empty() {
        parts.push(("declared env vars".to_string(), args.env.join(",")));
    }
    let part_names = parts.iter().map(|(k, _)| k.clone());
    let part_values = parts.iter().map(|(_, v)| v.clone());
    let env = &args.env;
    let cache = args.cache;
    // `concurrency` and `max_per_second` bound an async node's calls.
    let mut limits = quote!();
    if let Some((calls, span)) = args.concurrency {
        if sig.asyncness.is_none() {
            return Err(Error::new(
                span,
                "concurrency bounds the calls in flight of an `async fn` node; this function is not async",
            ));
        }
        limits.extend(quote!(.with_concurrency(#calls)));
    }
    if let Some((rate, span)) = args.max_per_second {
        if sig.asyncness.is_none() {
            return Err(Error::new(
                span,
                "max_per_second limits the calls of an `async fn` node; this function is not async",
            ));
        }
        limits.extend(quote!(.with_max_per_second(#rate)));
    }
    // `batch = path`: the node's batch implementation over Arrow arrays.
    let batch = match &args.batch {
        Some(path) => quote!(.with_batch(#path)),
        None => quote!(),
    };

    let in_ports = params.iter().map(|(name, take)| {
        let stored = take.stored();
        quote!(#krate::Port::new(#name, #krate::value_type!(#stored)))
    });
    let out_ports = outputs
        .iter()
        .zip(&out_types)
        .map(|(name, ty)| quote!(#krate::Port::new(#name, #krate::value_type!(#ty))));

    let handle_result = if fallible {
        quote! {
            let __r = match __r {
                ::std::result::Result::Ok(v) => v,
                ::std::result::Result::Err(e) => {
                    return ::std::result::Result::Err(#krate::NodeError::user(e));
                }
            };
        }
    } else {
        quote!()
    };
    let pack = if outputs.len() == 1 {
        quote! {
            let mut __o = #krate::Outs::new();
            __o.push(#krate::Value::new(__r));
        }
    } else {
        let names = indexed("__o", outputs.len());
        quote! {
            let (#(#names,)*) = __r;
            let mut __o = #krate::Outs::new();
            #( __o.push(#krate::Value::new(#names)); )*
        }
    };

    let arg_idents: Vec<_> = (0..params.len())
        .map(|i| format_ident!("__a{}", i))
        .collect();
    let body = if sig.asyncness.is_none() {
        let extract = params.iter().enumerate().map(|(i, (_, take))| {
            let stored = take.stored();
            let a = &arg_idents[i];
            let v = format_ident!("__v{}", i);
            let conv = take.convert(&v);
            quote! {
                let #v: &#stored = __args.get::<#stored>(#i)?;
                let #a = #conv;
            }
        });
        quote! {
            #krate::NodeFn::Sync(#krate::__private::Arc::new(
                |__args: #krate::Args<'_>| -> ::std::result::Result<#krate::Outs, #krate::NodeError> {
                    #( #extract )*
                    let __r = #ident(#(#arg_idents),*);
                    #handle_result
                    #pack
                    ::std::result::Result::Ok(__o)
                }
            ))
        }
    } else {
        let hold = params.iter().enumerate().map(|(i, (_, take))| {
            let stored = take.stored();
            let h = format_ident!("__h{}", i);
            quote! {
                __args.get::<#stored>(#i)?;
                let #h: #krate::Value = ::std::clone::Clone::clone(__args.value(#i)?);
            }
        });
        let extract = params.iter().enumerate().map(|(i, (name, take))| {
            let stored = take.stored();
            let a = &arg_idents[i];
            let h = format_ident!("__h{}", i);
            let v = format_ident!("__v{}", i);
            let conv = take.convert(&v);
            quote! {
                let #v: &#stored = match #h.downcast_ref::<#stored>() {
                    ::std::option::Option::Some(v) => v,
                    ::std::option::Option::None => {
                        return ::std::result::Result::Err(#krate::NodeError::InputType {
                            input: ::std::string::String::from(#name),
                            expected: ::std::any::type_name::<#stored>(),
                            actual: #h.type_name(),
                        });
                    }
                };
                let #a = #conv;
            }
        });
        quote! {
            #krate::NodeFn::Async(#krate::__private::Arc::new(
                |__args: #krate::Args<'_>| {
                    #( #hold )*
                    ::std::result::Result::Ok(#krate::__private::boxed(async move {
                        #( #extract )*
                        let __r = #ident(#(#arg_idents),*).await;
                        #handle_result
                        #pack
                        ::std::result::Result::<#krate::Outs, #krate::NodeError>::Ok(__o)
                    }))
                }
            ))
        }
    };

    // The typed row loop columnar engines call (synchronous functions).
    let rows = if sig.asyncness.is_none() {
        let n_params = params.len();
        let sources = params.iter().enumerate().map(|(i, (name, take))| {
            let s = format_ident!("__s{}", i);
            match take {
                Take::Str => quote! {
                    let #s = #krate::rows::StrSource::new(__cols[#i], #name)?;
                },
                _ => {
                    let stored = take.stored();
                    quote! {
                        let #s = #krate::rows::Source::<#stored>::new(__cols[#i], #name, |__a| {
                            (&&#krate::rows::Probe::<#stored>::new()).decode(__a)
                        })?;
                    }
                }
            }
        });
        let args_at = params.iter().enumerate().map(|(i, (_, take))| {
            let s = format_ident!("__s{}", i);
            let a = &arg_idents[i];
            match take {
                Take::Str => quote!(let #a = #s.at(__i);),
                _ => {
                    let v = format_ident!("__v{}", i);
                    let conv = take.convert(&v);
                    quote! {
                        let #v = #s.at(__i);
                        let #a = #conv;
                    }
                }
            }
        });
        let outs = indexed("__out", outputs.len());
        let push = if outputs.len() == 1 {
            let o = &outs[0];
            quote!(#o.push(__r);)
        } else {
            let names = indexed("__o", outputs.len());
            quote! {
                let (#(#names,)*) = __r;
                #( #outs.push(#names); )*
            }
        };
        let encode = outputs
            .iter()
            .zip(&out_types)
            .zip(&outs)
            .map(|((name, ty), o)| {
                quote! {
                    #krate::rows::encoded(#name, (&&#krate::rows::Probe::<#ty>::new()).encode(&#o))?
                }
            });
        quote! {
            .with_rows(#krate::__private::Arc::new(
                |__cols: &[#krate::rows::RowsArg<'_>], __n: usize, __retries: u32|
                    -> ::std::result::Result<#krate::rows::RowsOut, #krate::NodeError> {
                    #[allow(unused_imports)]
                    use #krate::rows::{ArrowRows as _, OpaqueRows as _};
                    if __cols.len() != #n_params {
                        return ::std::result::Result::Err(#krate::NodeError::user(::std::format!(
                            "the row loop got {} arguments for {} inputs",
                            __cols.len(),
                            #n_params
                        )));
                    }
                    #( #sources )*
                    #( let mut #outs = ::std::vec::Vec::with_capacity(__n); )*
                    let mut __failures = ::std::vec::Vec::new();
                    let mut __retried = ::std::vec::Vec::new();
                    for __i in 0..__n {
                        let __retry = |attempt, error| {
                            __retried.push(#krate::rows::RowRetry { row: __i, attempt, error });
                        };
                        match #krate::rows::attempt(__retries, __retry, || {
                            #( #args_at )*
                            let __r = #ident(#(#arg_idents),*);
                            #handle_result
                            ::std::result::Result::Ok(__r)
                        }) {
                            ::std::result::Result::Ok(__r) => { #push }
                            ::std::result::Result::Err((attempts, error)) => {
                                __failures.push(#krate::rows::RowFailure { row: __i, attempts, error });
                            }
                        }
                    }
                    ::std::result::Result::Ok(#krate::rows::RowsOut {
                        columns: ::std::vec![#(#encode),*],
                        failures: __failures,
                        retries: __retried,
                    })
                }
            ))
        }
    } else {
        quote!()
    };

    let doc = format!("The pipeline node of [`{fn_name}()`]: `{fn_name}::node()`.");
    Ok(quote! {
        #func

        #[doc = #doc]
        #[allow(non_camel_case_types, dead_code)]
        #vis struct #ident {}

        #[allow(dead_code)]
        impl #ident {
            /// Builds the node.
            #vis fn node() -> #krate::Node {
                #krate::Node::from_parts(
                    #node_name,
                    ::std::vec![#(#in_ports),*],
                    ::std::vec![#(#out_ports),*],
                    #body,
                    #retries,
                    #code_hash,
                    &[#(#helpers),*],
                )
                .with_env(&[#(#env),*])
                .with_code_parts(&[#((#part_names, #part_values)),*])
                .with_cache_enabled(#cache)
                #limits
                #batch
                #rows
            }
        }
    })
}

/// Derives `ArrowValue` for a struct or enum that implements serde's
/// `Serialize` and `Deserialize`.
///
/// A struct with named fields, no `#[serde(...)]` attributes, and fields
/// whose types all have an Arrow form is encoded column by column: its
/// Arrow form is a struct of its fields' own columns, and each field is
/// converted a column at a time by its type's `ArrowValue`. Any other type
/// (an enum, a tuple struct, serde attributes that reshape it, a field
/// without an Arrow form such as a map) goes through `serde_arrow`.
#[proc_macro_derive(ArrowValue)]
pub fn derive_arrow_value(item: TokenStream) -> TokenStream {
    let input = parse_macro_input!(item as syn::DeriveInput);
    if !input.generics.params.is_empty() {
        return Error::new(
            input.generics.span(),
            "#[derive(ArrowValue)] does not support generic types",
        )
        .to_compile_error()
        .into();
    }
    let krate = krate();
    let ident = &input.ident;
    let serde = quote! { #krate::__private::serde_support };
    let serde_path = quote! {
        fn data_type() -> #krate::__private::DataType {
            #serde::data_type::<Self>(&__FIELD)
        }
        fn to_array(
            values: &[&Self],
        ) -> ::std::result::Result<#krate::__private::ArrayRef, #krate::ValueError> {
            #serde::encode(&__FIELD, values)
        }
        fn from_array(
            array: &dyn #krate::__private::Array,
        ) -> ::std::result::Result<::std::vec::Vec<Self>, #krate::ValueError> {
            #serde::decode(&__FIELD, array)
        }
    };
    let (helper, body) = match by_columns(&input) {
        None => (TokenStream2::new(), serde_path),
        Some(fields) => columns_path(&krate, &fields),
    };
    quote! {
        const _: () = {
            static __FIELD: #krate::__private::OnceLock<
                ::std::result::Result<#krate::__private::FieldRef, ::std::string::String>,
            > = #krate::__private::OnceLock::new();
            #helper
            impl #krate::ArrowValue for #ident {
                #body
            }
        };
    }
    .into()
}

/// The named fields of a struct that may be encoded column by column (see
/// `derive_arrow_value`), or `None` for the serde path.
fn by_columns(input: &syn::DeriveInput) -> Option<Vec<(syn::Ident, Type)>> {
    let serde_attr = |attrs: &[syn::Attribute]| attrs.iter().any(|a| a.path().is_ident("serde"));
    if serde_attr(&input.attrs) {
        return None;
    }
    let syn::Data::Struct(data) = &input.data else {
        return None;
    };
    let syn::Fields::Named(named) = &data.fields else {
        return None;
    };
    if named.named.is_empty() || named.named.iter().any(|f| serde_attr(&f.attrs)) {
        return None;
    }
    named
        .named
        .iter()
        .map(|f| Some((f.ident.clone()?, f.ty.clone())))
        .collect()
}

/// The helper and the `ArrowValue` methods of a struct encoded column by
/// column. `__columns()` gives the struct's Arrow fields when every field's
/// type has an Arrow form (the row probes decide at compile time), else
/// `None`, and the methods then take the serde path.
fn columns_path(
    krate: &TokenStream2,
    fields: &[(syn::Ident, Type)],
) -> (TokenStream2, TokenStream2) {
    use syn::ext::IdentExt;
    let serde = quote! { #krate::__private::serde_support };
    let names: Vec<String> = fields.iter().map(|(f, _)| f.unraw().to_string()).collect();
    let idents: Vec<&syn::Ident> = fields.iter().map(|(f, _)| f).collect();
    let iters = indexed("__it", fields.len());
    let index = 0..fields.len();
    let probes: Vec<TokenStream2> = fields
        .iter()
        .map(|(_, ty)| quote! { (&&#krate::rows::Probe::<#ty>::new()) })
        .collect();
    let helper = quote! {
        fn __columns() -> ::std::option::Option<&'static #krate::__private::Fields> {
            use #krate::rows::{ArrowRows as _, OpaqueRows as _};
            static __COLUMNS: #krate::__private::OnceLock<
                ::std::option::Option<#krate::__private::Fields>,
            > = #krate::__private::OnceLock::new();
            __COLUMNS
                .get_or_init(|| {
                    ::std::option::Option::Some(#krate::__private::Fields::from(
                        ::std::vec![#(#probes.field(#names)?),*],
                    ))
                })
                .as_ref()
        }
    };
    let body = quote! {
        fn data_type() -> #krate::__private::DataType {
            match __columns() {
                ::std::option::Option::Some(fields) => {
                    #krate::__private::DataType::Struct(fields.clone())
                }
                ::std::option::Option::None => #serde::data_type::<Self>(&__FIELD),
            }
        }
        fn to_array(
            values: &[&Self],
        ) -> ::std::result::Result<#krate::__private::ArrayRef, #krate::ValueError> {
            use #krate::rows::{ArrowRows as _, OpaqueRows as _};
            let ::std::option::Option::Some(fields) = __columns() else {
                return #serde::encode(&__FIELD, values);
            };
            let columns = ::std::vec![#(
                #probes.encode_refs(
                    &values.iter().map(|v| &v.#idents).collect::<::std::vec::Vec<_>>(),
                )?
            ),*];
            #krate::__private::struct_support::to_array::<Self>(fields, columns, values.len())
        }
        fn from_array(
            array: &dyn #krate::__private::Array,
        ) -> ::std::result::Result<::std::vec::Vec<Self>, #krate::ValueError> {
            use #krate::rows::{ArrowRows as _, OpaqueRows as _};
            let ::std::option::Option::Some(fields) = __columns() else {
                return #serde::decode(&__FIELD, array);
            };
            let columns = #krate::__private::struct_support::columns::<Self>(array, fields)?;
            #(
                let mut #iters = #probes.decode(columns[#index].as_ref())?.into_iter();
            )*
            let values: ::std::vec::Vec<Self> = (0..array.len())
                .map_while(|_| {
                    ::std::option::Option::Some(Self {
                        #(#idents: #iters.next()?),*
                    })
                })
                .collect();
            #krate::__private::struct_support::decoded(values, array.len())
        }
    };
    (helper, body)
}
