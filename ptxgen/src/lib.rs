//! # nnkern-ptxgen
//!
//! The PTX kernels in `kernels/*.ptx` are what ptxas, the CUDA driver and the
//! PTX executor read, so they are complete files: unrolled loops, the shared
//! activation helpers in every file that calls them. They are written by this
//! crate from the templates in `kernels/src/`, which hold each piece once.
//! Edit a template, then run `cargo run -p nnkern-ptxgen --example ptxgen` to rewrite the
//! kernels (`-- --check` only compares); `cargo test` fails while a committed
//! kernel differs from what its template gives.
//!
//! ## Template language
//! A template is PTX with directives on lines of their own, written as PTX
//! comments so an editor's PTX mode still reads it:
//!
//! - `//@include FILE [NAME=VALUE ...]` — the expansion of `kernels/src/FILE`,
//!   with the variables in scope plus those given (values may use `${…}`);
//! - `//@for NAME in A..B` (integers, B excluded) or `//@for NAME in w1 w2 …`,
//!   then the body, then `//@end`;
//! - `//@if X OP Y` (`==`, `!=`, `<`, `<=`, `>`, `>=`; numbers compare as
//!   numbers), optionally `//@else`, then `//@end`;
//! - `//@let NAME = EXPR`, for the rest of the enclosing block;
//! - `//@#` a comment of the template itself, not copied.
//!
//! In every other line `${EXPR}` is replaced by the value of `EXPR`: a
//! variable's name, or integer arithmetic (`+ - * / %`, parentheses) over
//! integer literals and integer variables. Everything else is copied as is.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};

/// The generated kernel files and the template each comes from, both relative
/// to `kernels/` (templates under `kernels/src/`).
pub const OUTPUTS: [(&str, &str); 4] = [
    ("activation.ptx", "activation.ptx"),
    ("softmax_xent.ptx", "softmax_xent.ptx"),
    ("gemm_f32.ptx", "gemm_f32.ptx"),
    ("gemm_tc.ptx", "gemm_tc.ptx"),
];

/// A template error: the file, the 1-based line and what was wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Template file (relative to the template folder).
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// What was wrong.
    pub msg: String,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.msg)
    }
}

impl std::error::Error for Error {}

#[derive(Debug)]
enum Node {
    Text(String),
    For {
        var: String,
        range: ForRange,
        body: Vec<Node>,
    },
    If {
        cond: (String, String, String),
        then: Vec<Node>,
        els: Vec<Node>,
    },
    Let {
        var: String,
        expr: String,
    },
    Include {
        file: String,
        vars: Vec<(String, String)>,
    },
}

#[derive(Debug)]
enum ForRange {
    Ints(String, String),
    Words(Vec<String>),
}

/// One parsed line with where it came from.
struct Src<'a> {
    file: &'a str,
    lines: Vec<(usize, &'a str)>,
    pos: usize,
}

impl Src<'_> {
    fn err(&self, line: usize, msg: impl Into<String>) -> Error {
        Error {
            file: self.file.to_string(),
            line,
            msg: msg.into(),
        }
    }
}

/// A parsed block and what ended it (`end` or `else`, with its line), if anything.
type Block = (Vec<Node>, Option<(usize, &'static str)>);

/// Parses until `//@end` / `//@else` (returned as the terminator) or the end of the file.
fn parse_block(src: &mut Src<'_>) -> Result<Block, Error> {
    let mut out = Vec::new();
    while src.pos < src.lines.len() {
        let (no, line) = src.lines[src.pos];
        src.pos += 1;
        let Some(d) = line.trim_start().strip_prefix("//@") else {
            out.push(Node::Text(line.to_string()));
            continue;
        };
        let mut words = d.split_whitespace();
        match words.next() {
            Some("#") | None => {}
            Some(w) if w.starts_with('#') => {}
            Some("end") => return Ok((out, Some((no, "end")))),
            Some("else") => return Ok((out, Some((no, "else")))),
            Some("for") => {
                let var = words.next().ok_or_else(|| src.err(no, "for: no variable"))?.to_string();
                if words.next() != Some("in") {
                    return Err(src.err(no, "for: expected `in`"));
                }
                let rest: Vec<&str> = words.collect();
                let range = match rest.as_slice() {
                    [r] if r.contains("..") => {
                        let (a, b) = r.split_once("..").unwrap();
                        ForRange::Ints(a.to_string(), b.to_string())
                    }
                    [] => return Err(src.err(no, "for: nothing to iterate over")),
                    ws => ForRange::Words(ws.iter().map(|w| w.to_string()).collect()),
                };
                let (body, end) = parse_block(src)?;
                match end {
                    Some((_, "end")) => {}
                    _ => return Err(src.err(no, "for without //@end")),
                }
                out.push(Node::For { var, range, body });
            }
            Some("if") => {
                let w: Vec<&str> = words.collect();
                let [a, op, b] = w.as_slice() else {
                    return Err(src.err(no, "if: expected `X OP Y`"));
                };
                if !["==", "!=", "<", "<=", ">", ">="].contains(op) {
                    return Err(src.err(no, format!("if: unknown operator `{op}`")));
                }
                let (then, end) = parse_block(src)?;
                let els = match end {
                    Some((_, "end")) => Vec::new(),
                    Some((eno, "else")) => {
                        let (els, end) = parse_block(src)?;
                        if !matches!(end, Some((_, "end"))) {
                            return Err(src.err(eno, "else without //@end"));
                        }
                        els
                    }
                    _ => return Err(src.err(no, "if without //@end")),
                };
                out.push(Node::If {
                    cond: (a.to_string(), op.to_string(), b.to_string()),
                    then,
                    els,
                });
            }
            Some("let") => {
                let rest = d.trim_start().strip_prefix("let").unwrap_or("");
                let (var, expr) = rest
                    .split_once('=')
                    .ok_or_else(|| src.err(no, "let: expected `NAME = EXPR`"))?;
                out.push(Node::Let {
                    var: var.trim().to_string(),
                    expr: expr.trim().to_string(),
                });
            }
            Some("include") => {
                let file = words.next().ok_or_else(|| src.err(no, "include: no file"))?.to_string();
                let mut vars = Vec::new();
                for w in words {
                    let (k, v) = w
                        .split_once('=')
                        .ok_or_else(|| src.err(no, format!("include: `{w}` is not NAME=VALUE")))?;
                    vars.push((k.to_string(), v.to_string()));
                }
                out.push(Node::Include { file, vars });
            }
            Some(other) => return Err(src.err(no, format!("unknown directive `{other}`"))),
        }
    }
    Ok((out, None))
}

/// Integer arithmetic over literals and variables: + - * / % and parentheses.
fn eval(expr: &str, vars: &HashMap<String, String>) -> Result<i64, String> {
    #[derive(Debug, Clone, PartialEq)]
    enum T {
        N(i64),
        Op(char),
    }
    let mut toks = Vec::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while i < b.len() {
        let c = b[i] as char;
        if c.is_whitespace() {
            i += 1;
        } else if c.is_ascii_digit() {
            let s = i;
            while i < b.len() && (b[i] as char).is_ascii_digit() {
                i += 1;
            }
            toks.push(T::N(expr[s..i].parse().map_err(|e| format!("{e}"))?));
        } else if c.is_ascii_alphabetic() || c == '_' {
            let s = i;
            while i < b.len() && ((b[i] as char).is_ascii_alphanumeric() || b[i] == b'_') {
                i += 1;
            }
            let name = &expr[s..i];
            let v = vars.get(name).ok_or_else(|| format!("unknown variable `{name}`"))?;
            toks.push(T::N(
                v.parse()
                    .map_err(|_| format!("variable `{name}` = `{v}` is not an integer"))?,
            ));
        } else if "+-*/%()".contains(c) {
            toks.push(T::Op(c));
            i += 1;
        } else {
            return Err(format!("unexpected `{c}` in `{expr}`"));
        }
    }
    fn prec(op: char) -> u8 {
        if op == '+' || op == '-' {
            1
        } else {
            2
        }
    }
    // Precedence climbing.
    fn primary(t: &[T], p: &mut usize) -> Result<i64, String> {
        match t.get(*p) {
            Some(T::N(n)) => {
                *p += 1;
                Ok(*n)
            }
            Some(T::Op('-')) => {
                *p += 1;
                Ok(-primary(t, p)?)
            }
            Some(T::Op('(')) => {
                *p += 1;
                let v = binary(t, p, 0)?;
                if t.get(*p) != Some(&T::Op(')')) {
                    return Err("missing `)`".into());
                }
                *p += 1;
                Ok(v)
            }
            other => Err(format!("expected a number, found {other:?}")),
        }
    }
    fn binary(t: &[T], p: &mut usize, min: u8) -> Result<i64, String> {
        let mut lhs = primary(t, p)?;
        while let Some(T::Op(op)) = t.get(*p) {
            let op = *op;
            if op == ')' || op == '(' || prec(op) < min.max(1) {
                break;
            }
            *p += 1;
            let rhs = binary(t, p, prec(op) + 1)?;
            lhs = match op {
                '+' => lhs.checked_add(rhs),
                '-' => lhs.checked_sub(rhs),
                '*' => lhs.checked_mul(rhs),
                '/' => lhs.checked_div(rhs),
                _ => lhs.checked_rem(rhs),
            }
            .ok_or_else(|| format!("overflow or division by zero in {lhs} {op} {rhs}"))?;
        }
        Ok(lhs)
    }
    let mut p = 0;
    let v = binary(&toks, &mut p, 0)?;
    if p != toks.len() {
        return Err(format!("trailing tokens in `{expr}`"));
    }
    Ok(v)
}

/// A variable's value, or the expression's.
fn value(expr: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let e = expr.trim();
    if let Some(v) = vars.get(e) {
        return Ok(v.clone());
    }
    eval(e, vars).map(|n| n.to_string())
}

fn substitute(line: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(line.len());
    let mut rest = line;
    while let Some(i) = rest.find("${") {
        out.push_str(&rest[..i]);
        let end = rest[i..].find('}').ok_or("`${` without `}`")? + i;
        out.push_str(&value(&rest[i + 2..end], vars)?);
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Where templates are read from.
pub trait Sources {
    /// The text of template `name`.
    fn read(&self, name: &str) -> Result<String, String>;
}

impl Sources for PathBuf {
    fn read(&self, name: &str) -> Result<String, String> {
        std::fs::read_to_string(self.join(name)).map_err(|e| format!("{}: {e}", self.join(name).display()))
    }
}

impl Sources for HashMap<&str, &str> {
    fn read(&self, name: &str) -> Result<String, String> {
        self.get(name)
            .map(|s| s.to_string())
            .ok_or_else(|| format!("no template {name}"))
    }
}

fn run(
    file: &str,
    nodes: &[Node],
    vars: &mut HashMap<String, String>,
    srcs: &dyn Sources,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    let err = |msg: String| Error {
        file: file.to_string(),
        line: 0,
        msg,
    };
    for n in nodes {
        match n {
            Node::Text(t) => {
                out.push_str(&substitute(t, vars).map_err(|m| err(format!("`{t}`: {m}")))?);
                out.push('\n');
            }
            Node::Let { var, expr } => {
                let v = value(expr, vars).map_err(|m| err(format!("let {var}: {m}")))?;
                vars.insert(var.clone(), v);
            }
            Node::For { var, range, body } => {
                let items: Vec<String> = match range {
                    ForRange::Ints(a, b) => {
                        let (a, b) = (
                            eval(a, vars).map_err(|m| err(format!("for {var}: {m}")))?,
                            eval(b, vars).map_err(|m| err(format!("for {var}: {m}")))?,
                        );
                        (a..b).map(|i| i.to_string()).collect()
                    }
                    ForRange::Words(w) => w.clone(),
                };
                let saved = vars.clone();
                for it in items {
                    vars.insert(var.clone(), it);
                    run(file, body, vars, srcs, depth, out)?;
                }
                *vars = saved;
            }
            Node::If { cond, then, els } => {
                let (a, op, b) = cond;
                let (x, y) = (
                    value(a, vars).unwrap_or_else(|_| a.clone()),
                    value(b, vars).unwrap_or_else(|_| b.clone()),
                );
                let ord = match (x.parse::<i64>(), y.parse::<i64>()) {
                    (Ok(p), Ok(q)) => p.cmp(&q),
                    _ => x.cmp(&y),
                };
                let yes = match op.as_str() {
                    "==" => ord.is_eq(),
                    "!=" => ord.is_ne(),
                    "<" => ord.is_lt(),
                    "<=" => ord.is_le(),
                    ">" => ord.is_gt(),
                    _ => ord.is_ge(),
                };
                let saved = vars.clone();
                run(file, if yes { then } else { els }, vars, srcs, depth, out)?;
                *vars = saved;
            }
            Node::Include { file: inc, vars: extra } => {
                let mut v = vars.clone();
                for (k, val) in extra {
                    let val = substitute(val, vars).map_err(|m| err(format!("include {inc}: {m}")))?;
                    v.insert(k.clone(), val);
                }
                expand_into(inc, srcs, &mut v, depth + 1, out)?;
            }
        }
    }
    Ok(())
}

fn expand_into(
    name: &str,
    srcs: &dyn Sources,
    vars: &mut HashMap<String, String>,
    depth: usize,
    out: &mut String,
) -> Result<(), Error> {
    if depth > 16 {
        return Err(Error {
            file: name.to_string(),
            line: 0,
            msg: "includes nested more than 16 deep".into(),
        });
    }
    let text = srcs.read(name).map_err(|msg| Error {
        file: name.to_string(),
        line: 0,
        msg,
    })?;
    let mut src = Src {
        file: name,
        lines: text.lines().enumerate().map(|(i, l)| (i + 1, l)).collect(),
        pos: 0,
    };
    let (nodes, end) = parse_block(&mut src)?;
    if let Some((no, what)) = end {
        return Err(src.err(no, format!("//@{what} without an opening directive")));
    }
    run(name, &nodes, vars, srcs, depth, out)
}

/// The expansion of template `name`.
pub fn expand(name: &str, srcs: &dyn Sources) -> Result<String, Error> {
    let mut out = String::new();
    expand_into(name, srcs, &mut HashMap::new(), 0, &mut out)?;
    Ok(out)
}

/// The repository's `kernels/` folder (this crate lives beside it).
pub fn kernels_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../kernels")
}

/// Every output file under `kernels` and its generated text, which starts with
/// a line naming its template.
pub fn generate(kernels: &Path) -> Result<Vec<(PathBuf, String)>, Error> {
    let src = kernels.join("src");
    OUTPUTS
        .iter()
        .map(|(out, tpl)| {
            let text = format!(
                "// Generated from kernels/src/{tpl} by `cargo run -p nnkern-ptxgen --example ptxgen`: edit the template, not this file.\n{}",
                expand(tpl, &src)?
            );
            Ok((kernels.join(out), text))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gen(files: &[(&'static str, &'static str)]) -> Result<String, Error> {
        let m: HashMap<&str, &str> = files.iter().copied().collect();
        expand(files[0].0, &m)
    }

    #[test]
    fn loops_conditions_lets_and_arithmetic() {
        let out = gen(&[(
            "t",
            "a {x}\n//@for i in 0..3\n//@let j = (i + 1) * 10 % 7\n//@if i < 2\nr${i} ${j} ${i*2-1}\n//@else\nlast ${i}\n//@end\n//@end\n//@# not copied\n//@for w in x y\n${w}_E${3}\n//@end\n",
        )])
        .unwrap();
        assert_eq!(out, "a {x}\nr0 3 -1\nr1 6 1\nlast 2\nx_E3\ny_E3\n");
    }

    #[test]
    fn includes_see_their_variables() {
        let e = gen(&[
            ("main", "//@for T in bf16 f16\n//@include k SH=1 L=E${SH0+1}\n//@end\n"),
            ("k", "k_${T} ${SH+2} ${L}\n"),
        ])
        .unwrap_err();
        assert!(e.msg.contains("SH0"), "{e}");
        let out = gen(&[
            (
                "main",
                "//@let SH0 = 4\n//@for T in bf16 f16\n//@include k SH=1 L=E${SH0+1}\n//@end\n",
            ),
            ("k", "k_${T} ${SH+2} ${L}\n"),
        ])
        .unwrap();
        assert_eq!(out, "k_bf16 3 E5\nk_f16 3 E5\n");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = gen(&[("t", "x\n//@for i in 0..2\ny\n")]).unwrap_err();
        assert_eq!((e.file.as_str(), e.line), ("t", 2));
        let e = gen(&[("t", "x\n//@end\n")]).unwrap_err();
        assert_eq!(e.line, 2);
        assert!(gen(&[("t", "${nope}\n")]).unwrap_err().msg.contains("nope"));
        assert!(gen(&[("t", "${1/0}\n")]).unwrap_err().msg.contains("division"));
        assert!(gen(&[("t", "//@frobnicate\n")]).is_err());
        assert!(gen(&[("t", "//@include t\n")]).unwrap_err().msg.contains("nested"));
    }
}
