//! `include/nnkern.h` declares exactly what `src/capi/` exports, with the
//! same C types: every `#[no_mangle] extern "C" fn`, every status / code
//! constant, the CBLAS enum values and the `nnkern_adam_config` layout.
//!
//! The Rust side is read with `syn`; the header with a small parser for the
//! plain C it is written in (one declaration per `;`, no macros in
//! declarations).

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use syn::{Expr, FnArg, Item, Lit, ReturnType, Type, UnOp};

type Sig = (Vec<String>, String);

/// Words and `*` separated by single spaces: `const float *const *`.
fn canon(c: &str) -> String {
    c.replace('*', " * ").split_whitespace().collect::<Vec<_>>().join(" ")
}

fn rust_type(t: &Type) -> String {
    match t {
        Type::Ptr(p) => {
            let inner = rust_type(&p.elem);
            let is_ptr = matches!(*p.elem, Type::Ptr(_));
            match (is_ptr, p.const_token.is_some()) {
                (true, true) => format!("{inner} const *"),
                (true, false) => format!("{inner} *"),
                (false, true) => format!("const {inner} *"),
                (false, false) => format!("{inner} *"),
            }
        }
        Type::Path(p) => {
            let last = p.path.segments.last().unwrap().ident.to_string();
            match last.as_str() {
                "f32" => "float",
                "f64" => "double",
                "i64" => "int64_t",
                "u64" => "uint64_t",
                "u32" => "uint32_t",
                "u16" => "uint16_t",
                "c_int" => "int",
                "c_char" => "char",
                "bf16" => "nnkern_bf16",
                "f16" => "nnkern_f16",
                "CblasOrder" => "enum CBLAS_ORDER",
                "CblasTranspose" => "enum CBLAS_TRANSPOSE",
                "NnkernCblasErrorHandler" => "nnkern_cblas_error_handler",
                "nnkern_adam_config" => "nnkern_adam_config",
                other => panic!("no C spelling for Rust type {other}"),
            }
            .to_string()
        }
        other => panic!("unexpected type in the C ABI: {}", quote_type(other)),
    }
}

fn quote_type(t: &Type) -> String {
    format!("{:?}", std::mem::discriminant(t))
}

fn int_value(e: &Expr) -> i64 {
    match e {
        Expr::Lit(l) => match &l.lit {
            Lit::Int(i) => i.base10_parse().unwrap(),
            _ => panic!("non-integer constant"),
        },
        Expr::Unary(u) if matches!(u.op, UnOp::Neg(_)) => -int_value(&u.expr),
        Expr::Paren(p) => int_value(&p.expr),
        _ => panic!("constant is not a literal"),
    }
}

#[derive(Default)]
struct Side {
    fns: BTreeMap<String, Sig>,
    consts: BTreeMap<String, i64>,
    adam_fields: Vec<(String, String)>,
}

fn rust_side() -> Side {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut side = Side::default();
    let mut files: Vec<_> = fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for path in files {
        let file = syn::parse_file(&fs::read_to_string(&path).unwrap()).unwrap();
        for item in file.items {
            match item {
                Item::Fn(f) => {
                    let exported = f.attrs.iter().any(|a| a.path().is_ident("no_mangle"));
                    if !exported {
                        continue;
                    }
                    assert!(
                        f.sig.abi.is_some(),
                        "{} is #[no_mangle] but not extern \"C\"",
                        f.sig.ident
                    );
                    let args = f
                        .sig
                        .inputs
                        .iter()
                        .map(|a| match a {
                            FnArg::Typed(t) => canon(&rust_type(&t.ty)),
                            FnArg::Receiver(_) => unreachable!(),
                        })
                        .collect();
                    let ret = match &f.sig.output {
                        ReturnType::Default => "void".to_string(),
                        ReturnType::Type(_, t) => canon(&rust_type(t)),
                    };
                    side.fns.insert(f.sig.ident.to_string(), (args, ret));
                }
                Item::Const(c) => {
                    let name = c.ident.to_string();
                    if name.starts_with("NNKERN_") || name.starts_with("CBLAS_") {
                        side.consts.insert(name, int_value(&c.expr));
                    }
                }
                Item::Struct(s) if s.ident == "nnkern_adam_config" => {
                    assert!(s.attrs.iter().any(|a| a.path().is_ident("repr")), "repr(C) missing");
                    for f in &s.fields {
                        side.adam_fields
                            .push((f.ident.as_ref().unwrap().to_string(), canon(&rust_type(&f.ty))));
                    }
                }
                _ => {}
            }
        }
    }
    side
}

fn strip_comments(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find("/*") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find("*/").expect("unterminated comment");
        rest = &rest[i + end + 2..];
    }
    out.push_str(rest);
    out.lines()
        .map(|l| l.split("//").next().unwrap())
        .collect::<Vec<_>>()
        .join("\n")
}

/// `const int M` → `int`; `const float *A` → `const float *`; a lone
/// parameter name is dropped. Top-level `const` on a value is not part of
/// the ABI.
fn c_param_type(p: &str) -> String {
    let mut toks: Vec<String> = canon(p).split(' ').map(str::to_string).collect();
    let last = toks.last().unwrap();
    if last != "*" && toks.len() > 1 && !matches!(last.as_str(), "int" | "float" | "char") {
        toks.pop();
    }
    if !toks.contains(&"*".to_string()) && toks.first().is_some_and(|t| t == "const") {
        toks.remove(0);
    }
    toks.join(" ")
}

fn header_side() -> Side {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include/nnkern.h");
    let text = strip_comments(&fs::read_to_string(path).unwrap());
    let mut side = Side::default();
    let mut body = String::new();
    for line in text.lines() {
        let t = line.trim();
        if let Some(def) = t.strip_prefix("#define ") {
            let mut parts = def.split_whitespace();
            let (name, value) = (parts.next().unwrap(), parts.next());
            if let Some(v) = value {
                let v = v.trim_matches(|c| c == '(' || c == ')');
                side.consts.insert(name.to_string(), v.parse().unwrap());
            }
        } else if !t.starts_with('#') {
            body.push_str(t);
            body.push(' ');
        }
    }
    // Enums: `enum NAME { A = 1, B = 2 };`
    let mut rest = body.as_str();
    while let Some(i) = rest.find("enum CBLAS_") {
        let open = rest[i..].find('{');
        let semi = rest[i..].find(';').unwrap();
        if let Some(open) = open.filter(|&o| o < semi) {
            let close = rest[i + open..].find('}').unwrap();
            for member in rest[i + open + 1..i + open + close].split(',') {
                let (name, value) = member.split_once('=').unwrap();
                side.consts
                    .insert(name.trim().to_string(), value.trim().parse().unwrap());
            }
        }
        rest = &rest[i + semi..];
    }
    // The struct.
    let s = body
        .find("typedef struct nnkern_adam_config {")
        .expect("nnkern_adam_config");
    let open = s + body[s..].find('{').unwrap();
    let close = open + body[open..].find('}').unwrap();
    for field in body[open + 1..close]
        .split(';')
        .map(str::trim)
        .filter(|f| !f.is_empty())
    {
        let (ty, name) = field.rsplit_once(' ').unwrap();
        side.adam_fields.push((name.to_string(), canon(ty)));
    }
    let body = format!("{}{}", &body[..s], &body[close..]);
    // Function declarations: `ret name(params);` (not typedefs, not enums).
    for decl in body.split(';').map(str::trim) {
        if decl.starts_with("typedef") || decl.starts_with("enum") || decl.starts_with('}') || !decl.contains('(') {
            continue;
        }
        let decl = decl.trim_start_matches("extern \"C\" {").trim();
        let open = decl.find('(').unwrap();
        let head = canon(&decl[..open]);
        let (ret, name) = head.rsplit_once(' ').unwrap();
        let params = decl[open + 1..decl.rfind(')').unwrap()].trim();
        let args = if params == "void" {
            vec![]
        } else {
            params.split(',').map(c_param_type).collect()
        };
        side.fns.insert(name.to_string(), (args, canon(ret)));
    }
    side
}

fn camel(rust_const: &str) -> String {
    rust_const
        .split('_')
        .map(|w| {
            let mut c = w.chars();
            let first = c.next().unwrap();
            first.to_string() + &c.as_str().to_ascii_lowercase()
        })
        .collect()
}

#[test]
fn header_declares_every_exported_function_with_the_same_types() {
    let (rust, header) = (rust_side(), header_side());
    assert!(rust.fns.len() >= 30, "found only {} exported functions", rust.fns.len());
    for (name, sig) in &rust.fns {
        let h = header
            .fns
            .get(name)
            .unwrap_or_else(|| panic!("{name} is exported but not in nnkern.h"));
        assert_eq!(h, sig, "{name}: header (left) and Rust (right) disagree");
    }
    for name in header.fns.keys() {
        assert!(rust.fns.contains_key(name), "{name} is in nnkern.h but not exported");
    }
}

#[test]
fn header_constants_match() {
    let (rust, header) = (rust_side(), header_side());
    for (name, value) in &rust.consts {
        let hname = if name.starts_with("CBLAS_") {
            camel(name)
        } else {
            name.clone()
        };
        assert_eq!(header.consts.get(&hname), Some(value), "{hname}");
    }
    assert_eq!(rust.consts.len(), header.consts.len(), "{:?}", header.consts.keys());
}

#[test]
fn adam_config_layout_matches() {
    let (rust, header) = (rust_side(), header_side());
    assert_eq!(rust.adam_fields, header.adam_fields);
    assert_eq!(
        std::mem::size_of::<nnkern_capi::nnkern_adam_config>(),
        5 * 4 + 2 * std::mem::size_of::<std::ffi::c_int>()
    );
}
