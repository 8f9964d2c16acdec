//! `#[ss_runtime::main]`: the paper's main coroutine (§3.1) as an attribute.
//!
//! ```ignore
//! #[ss_runtime::main(workers = 2, priority = 0)]
//! async fn main() {
//!     // runs as the main coroutine of a fresh runtime
//! }
//! ```
//!
//! expands to a plain `fn main()` that builds a runtime (`workers` threads; all
//! CPUs when omitted) and runs the body with `Runtime::block_on`, i.e. as a
//! coroutine of kind `Main` at `priority` (0 when omitted). Written without
//! `syn`: the item is only taken apart into "everything before the body" and the
//! body.

use proc_macro::{Delimiter, TokenStream, TokenTree};

/// Runs an `async fn` as the main coroutine of a new SharedScheduler runtime.
///
/// Arguments: `workers = N` (worker threads; default: one per CPU), `priority = N`
/// (the main coroutine's priority; default 0). See the crate docs.
#[proc_macro_attribute]
pub fn main(args: TokenStream, item: TokenStream) -> TokenStream {
    match expand(args, item) {
        Ok(ts) => ts,
        Err(msg) => format!("::core::compile_error!({msg:?});")
            .parse()
            .unwrap_or_default(),
    }
}

fn expand(args: TokenStream, item: TokenStream) -> Result<TokenStream, String> {
    let mut builder = String::from("::ss_runtime::Runtime::builder()");
    for (key, value) in parse_args(args)? {
        match key.as_str() {
            "workers" => builder.push_str(&format!(".workers({value})")),
            "priority" => builder.push_str(&format!(".main_priority(::ss_runtime::prio({value}))")),
            other => {
                return Err(format!(
                    "unknown argument `{other}`; #[ss_runtime::main] takes `workers = N` and `priority = N`"
                ))
            }
        }
    }

    let mut tokens: Vec<TokenTree> = item.into_iter().collect();
    let body = match tokens.pop() {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Brace => g,
        _ => return Err("#[ss_runtime::main] goes on an `async fn` with a body".into()),
    };
    let before = tokens.len();
    tokens.retain(|t| !matches!(t, TokenTree::Ident(i) if i.to_string() == "async"));
    if tokens.len() != before - 1 {
        return Err("#[ss_runtime::main] goes on an `async fn`; add `async`".into());
    }
    let signature: TokenStream = tokens.into_iter().collect();
    let out = format!(
        "{signature} {{ \
            let runtime = {builder}.build().unwrap_or_else(|e| \
                ::core::panic!(\"cannot start the SharedScheduler runtime: {{e}}\")); \
            runtime.block_on(async move {body}) \
        }}"
    );
    out.parse()
        .map_err(|e| format!("#[ss_runtime::main] produced invalid code: {e}"))
}

/// `key = value, key = value`, values being integer literals.
fn parse_args(args: TokenStream) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    let mut it = args.into_iter().peekable();
    while let Some(key) = it.next() {
        let TokenTree::Ident(key) = key else {
            return Err(format!("expected an argument name, found `{key}`"));
        };
        match it.next() {
            Some(TokenTree::Punct(p)) if p.as_char() == '=' => {}
            _ => return Err(format!("expected `{key} = N`")),
        }
        let value = match it.next() {
            Some(TokenTree::Literal(l)) => l.to_string(),
            _ => return Err(format!("expected an integer after `{key} =`")),
        };
        if value.parse::<u64>().is_err() {
            return Err(format!("`{key}` takes an integer, not `{value}`"));
        }
        out.push((key.to_string(), value));
        match it.next() {
            None => break,
            Some(TokenTree::Punct(p)) if p.as_char() == ',' => {}
            Some(t) => return Err(format!("expected `,` between arguments, found `{t}`")),
        }
    }
    Ok(out)
}
