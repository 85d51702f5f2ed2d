//! PTX module parser and instruction decoder.

use std::collections::HashMap;
use std::sync::Arc;

use crate::ir::*;
use crate::lex::{lex, Tok, Token};
use crate::Error;

/// A parsed PTX module: its kernels, decoded and ready to launch.
#[derive(Debug, Clone)]
pub struct Module {
    kernels: Vec<Kernel>,
}

/// One `.entry` of a [`Module`].
#[derive(Debug, Clone)]
pub struct Kernel {
    pub(crate) name: String,
    pub(crate) params: Vec<ParamDecl>,
    pub(crate) param_bytes: usize,
    pub(crate) reg_mask: Vec<u64>,
    /// Register names, by index (for messages).
    pub(crate) reg_names: Vec<String>,
    pub(crate) code: Vec<Instr>,
    pub(crate) static_shared: u32,
    pub(crate) dyn_shared_offset: u32,
    pub(crate) local_bytes: u32,
    pub(crate) reqntid: Option<[u32; 3]>,
    pub(crate) maxntid: Option<[u32; 3]>,
    /// `.maxnreg`, when given: the per-thread register count at entry (`setmaxnreg` needs it).
    pub(crate) maxnreg: Option<u32>,
    pub(crate) lines: Arc<Vec<String>>,
    /// Shared variables: name, offset, size (`None` for the dynamic ones).
    pub(crate) shared_vars: Vec<(String, u32, Option<u32>)>,
}

#[derive(Debug, Clone)]
pub(crate) struct ParamDecl {
    pub name: String,
    pub size: usize,
    pub offset: usize,
}

impl Module {
    /// Parses PTX text. Errors name the line.
    pub fn parse(src: &str) -> Result<Module, Error> {
        let toks = lex(src)?;
        let lines: Arc<Vec<String>> = Arc::new(src.lines().map(|l| l.trim().to_string()).collect());
        let mut p = Parser { toks, pos: 0 };
        let mut module_shared: Vec<VarDecl> = Vec::new();
        let mut kdefs: Vec<KernelDef> = Vec::new();
        let mut funcs: HashMap<String, FuncDef> = HashMap::new();
        while let Some(t) = p.peek().cloned() {
            match &t.tok {
                Tok::Word(w) if w.starts_with('.') => match w.as_str() {
                    ".version" | ".address_size" => {
                        p.pos += 2;
                    }
                    ".target" => {
                        p.pos += 1;
                        p.skip_line(t.line);
                    }
                    ".file" | ".loc" => {
                        p.pos += 1;
                        p.skip_line(t.line);
                    }
                    ".visible" | ".weak" => {
                        p.pos += 1;
                    }
                    ".extern" | ".shared" => {
                        let v = p.var_decl()?;
                        if v.space != ".shared" {
                            return Err(perr(
                                t.line,
                                format!("module-scope `{}` variables are not supported", v.space),
                            ));
                        }
                        module_shared.push(v);
                    }
                    ".entry" => {
                        p.pos += 1;
                        let mut k = p.kernel_def()?;
                        k.shared_before = module_shared.len();
                        kdefs.push(k);
                    }
                    ".func" => {
                        p.pos += 1;
                        if let Some(f) = p.func_def()? {
                            if funcs.contains_key(&f.name) {
                                return Err(perr(t.line, format!("function `{}` defined twice", f.name)));
                            }
                            funcs.insert(f.name.clone(), f);
                        }
                    }
                    ".global" | ".const" => {
                        return Err(perr(t.line, format!("module-scope `{w}` variables are not supported")))
                    }
                    ".section" => return Err(perr(t.line, "`.section` is not supported".into())),
                    _ => return Err(perr(t.line, format!("unknown directive `{w}`"))),
                },
                _ => {
                    return Err(perr(
                        t.line,
                        format!("unexpected `{}` at module scope", tok_str(&t.tok)),
                    ))
                }
            }
        }
        let mut kernels = Vec::new();
        for k in kdefs {
            kernels.push(build_kernel(k, &module_shared, &funcs, lines.clone())?);
        }
        Ok(Module { kernels })
    }

    /// The kernel named `name`.
    pub fn kernel(&self, name: &str) -> Result<&Kernel, Error> {
        self.kernels
            .iter()
            .find(|k| k.name == name)
            .ok_or_else(|| Error::NoKernel(name.to_string()))
    }

    /// Names of all kernels, in source order.
    pub fn kernel_names(&self) -> Vec<&str> {
        self.kernels.iter().map(|k| k.name.as_str()).collect()
    }
}

impl Kernel {
    /// The kernel's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Number of declared parameters.
    pub fn param_count(&self) -> usize {
        self.params.len()
    }
    /// Byte sizes of the declared parameters, in order.
    pub fn param_sizes(&self) -> Vec<usize> {
        self.params.iter().map(|p| p.size).collect()
    }
    /// Bytes of statically declared shared memory.
    pub fn static_shared_bytes(&self) -> u32 {
        self.static_shared
    }
    /// The shared variable holding byte `offset` and the offset within it, e.g. `tile+64`.
    pub fn shared_location(&self, offset: u32) -> Option<String> {
        self.shared_vars
            .iter()
            .filter(|(_, o, size)| offset >= *o && size.is_none_or(|s| offset < o + s))
            .max_by_key(|(_, o, _)| *o)
            .map(|(name, o, _)| format!("{name}+{}", offset - o))
    }

    /// Number of decoded instructions.
    pub fn instruction_count(&self) -> usize {
        self.code.len()
    }
}

fn perr(line: u32, msg: String) -> Error {
    Error::Parse { line, msg }
}

fn tok_str(t: &Tok) -> String {
    match t {
        Tok::Word(w) => w.clone(),
        Tok::Str(s) => format!("\"{s}\""),
        Tok::Punct(c) => c.to_string(),
    }
}

#[derive(Debug, Clone)]
struct VarDecl {
    space: String,
    name: String,
    align: u32,
    /// `None` for `.extern` arrays of unknown size (dynamic shared).
    size: Option<u32>,
}

#[derive(Debug, Clone)]
pub(crate) enum Lit {
    Int(u64),
    F32(u32),
    F64(u64),
    Dec(f64),
}

#[derive(Debug, Clone)]
pub(crate) enum ROp {
    Word(String),
    NegPred(String),
    Lit(Lit),
    Vec(Vec<ROp>),
    Mem {
        base: Option<String>,
        lit: Option<u64>,
        off: i64,
    },
    Pair(String, String),
    /// `[tensorMap, {c0, c1, ...}]` of the bulk tensor copies.
    MemVec(String, Vec<ROp>),
    Sink,
}

#[derive(Debug)]
pub(crate) struct RawInst {
    pub(crate) guard: Option<(String, bool)>,
    pub(crate) opcode: String,
    pub(crate) ops: Vec<ROp>,
    pub(crate) line: u32,
}

#[derive(Debug, Default)]
struct Body {
    /// Declared registers: name, type, line.
    regs: Vec<(String, Ty, u32)>,
    shared: Vec<VarDecl>,
    locals: Vec<VarDecl>,
    /// Label name to index into `raws`.
    labels: HashMap<String, u32>,
    raws: Vec<RawInst>,
    end_line: u32,
}

#[derive(Debug)]
struct KernelDef {
    name: String,
    params: Vec<ParamDecl>,
    param_bytes: usize,
    reqntid: Option<[u32; 3]>,
    maxntid: Option<[u32; 3]>,
    maxnreg: Option<u32>,
    body: Body,
    /// How many module-scope shared variables precede the kernel.
    shared_before: usize,
}

#[derive(Debug)]
struct FuncDef {
    name: String,
    rets: Vec<(String, Ty)>,
    params: Vec<(String, Ty)>,
    body: Body,
}

type Scope = HashMap<String, (u32, Ty)>;

/// Largest variable (and static shared total) accepted: far above any GPU's shared memory.
const MAX_VAR_BYTES: u64 = 1 << 24;
/// Local memory a thread may have (the hardware limit).
const MAX_LOCAL_BYTES: u32 = 512 * 1024;
/// Registers one `.reg %r<N>` may declare.
const MAX_REGS: u64 = 1 << 16;
type Dims = [u32; 3];
/// `.reqntid`, `.maxntid`, `.maxnreg`.
type PerfDirectives = (Option<Dims>, Option<Dims>, Option<u32>);

/// Builds a kernel's flat code. Calls to `.func`s are inlined: each function
/// has one set of registers in the kernel's register file (no recursion),
/// arguments and results are moved in and out, and `ret` jumps to the end of
/// the inlined body — so warps reconverge after a call as they do after a branch.
struct Builder<'a> {
    funcs: &'a HashMap<String, FuncDef>,
    syms: HashMap<String, Sym>,
    reg_mask: Vec<u64>,
    reg_names: Vec<String>,
    fscopes: HashMap<String, Scope>,
    code: Vec<Instr>,
}

fn build_kernel(
    k: KernelDef,
    module_shared: &[VarDecl],
    funcs: &HashMap<String, FuncDef>,
    lines: Arc<Vec<String>>,
) -> Result<Kernel, Error> {
    // shared-memory layout: static variables in order, dynamic ones after, all aliased
    let shared: Vec<&VarDecl> = module_shared[..k.shared_before]
        .iter()
        .chain(k.body.shared.iter())
        .collect();
    let mut syms: HashMap<String, Sym> = HashMap::new();
    let mut off = 0u32;
    let mut dyn_align = 16u32;
    for v in &shared {
        if let Some(sz) = v.size {
            off = off.div_ceil(v.align.max(1)) * v.align.max(1);
            syms.insert(v.name.clone(), Sym::Shared(off));
            off = off.saturating_add(sz);
        } else {
            dyn_align = dyn_align.max(v.align);
        }
    }
    if off as u64 > MAX_VAR_BYTES {
        return Err(perr(
            k.body.end_line,
            format!("more than {MAX_VAR_BYTES} bytes of static shared memory"),
        ));
    }
    let static_shared = off;
    let mut shared_vars = Vec::new();
    let dyn_off = off.div_ceil(dyn_align) * dyn_align;
    for v in &shared {
        if v.size.is_none() {
            syms.insert(v.name.clone(), Sym::Shared(dyn_off));
        }
        if let Some(Sym::Shared(o)) = syms.get(&v.name) {
            shared_vars.push((v.name.clone(), *o, v.size));
        }
    }
    let mut loff = 0u32;
    for v in &k.body.locals {
        let a = v.align.max(1);
        loff = loff.div_ceil(a) * a;
        syms.insert(v.name.clone(), Sym::Local(loff));
        loff = loff.saturating_add(v.size.unwrap_or(0));
    }
    if loff > MAX_LOCAL_BYTES {
        return Err(perr(
            k.body.end_line,
            format!("more than {MAX_LOCAL_BYTES} bytes of local memory per thread"),
        ));
    }
    for p in &k.params {
        syms.insert(p.name.clone(), Sym::Param(p.offset as u32));
    }
    let mut b = Builder {
        funcs,
        syms,
        reg_mask: Vec::new(),
        reg_names: Vec::new(),
        fscopes: HashMap::new(),
        code: Vec::new(),
    };
    let scope = b.scope(&k.body.regs, &[])?;
    b.emit_body(&k.body, &scope, false, &mut Vec::new())?;
    // falling off the end of the body exits
    b.code.push(Instr {
        guard: None,
        inst: Inst::Exit,
        line: k.body.end_line,
        regs: Box::new([]),
    });
    Ok(Kernel {
        name: k.name,
        params: k.params,
        param_bytes: k.param_bytes,
        reg_mask: b.reg_mask,
        reg_names: b.reg_names,
        code: b.code,
        static_shared,
        dyn_shared_offset: dyn_off,
        local_bytes: loff,
        reqntid: k.reqntid,
        maxntid: k.maxntid,
        maxnreg: k.maxnreg,
        lines,
        shared_vars,
    })
}

impl Builder<'_> {
    fn scope(&mut self, regs: &[(String, Ty, u32)], extra: &[(String, Ty)]) -> Result<Scope, Error> {
        let mut sc = Scope::new();
        let all = regs
            .iter()
            .cloned()
            .chain(extra.iter().map(|(n, t)| (n.clone(), *t, 0)));
        for (name, ty, line) in all {
            let idx = self.reg_mask.len() as u32;
            if sc.insert(name.clone(), (idx, ty)).is_some() {
                return Err(perr(line, format!("register `{name}` declared twice")));
            }
            self.reg_mask.push(ty.mask());
            self.reg_names.push(name);
        }
        Ok(sc)
    }

    fn emit_body(&mut self, body: &Body, scope: &Scope, in_func: bool, stack: &mut Vec<String>) -> Result<(), Error> {
        let mut starts = Vec::with_capacity(body.raws.len() + 1);
        let mut fixups: Vec<(usize, u32)> = Vec::new();
        for r in &body.raws {
            starts.push(self.code.len() as u32);
            let cx = Ctx {
                regs: scope,
                syms: &self.syms,
                labels: &body.labels,
            };
            let guard = match &r.guard {
                Some((p, neg)) => Some((cx.pred_reg(p).map_err(|m| perr(r.line, m))?, *neg)),
                None => None,
            };
            if r.opcode == "call" || r.opcode.starts_with("call.") {
                self.emit_call(r, guard, scope, stack)?;
                continue;
            }
            let inst = decode(r, &cx).map_err(|m| perr(r.line, m))?;
            let regs = raw_regs(r, scope);
            let inst = match inst {
                Inst::Bra { target } => {
                    fixups.push((self.code.len(), target));
                    inst
                }
                Inst::Exit if in_func && r.opcode.starts_with("ret") => {
                    fixups.push((self.code.len(), body.raws.len() as u32));
                    Inst::Bra { target: 0 }
                }
                other => other,
            };
            self.code.push(Instr {
                guard,
                inst,
                line: r.line,
                regs,
            });
        }
        starts.push(self.code.len() as u32);
        for (i, t) in fixups {
            if let Inst::Bra { target } = &mut self.code[i].inst {
                *target = starts[t as usize];
            }
        }
        Ok(())
    }

    fn emit_call(
        &mut self,
        r: &RawInst,
        guard: Option<(u32, bool)>,
        scope: &Scope,
        stack: &mut Vec<String>,
    ) -> Result<(), Error> {
        let e = |m: String| perr(r.line, m);
        let (rets, rest) = match r.ops.first() {
            Some(ROp::Vec(v)) => (v.as_slice(), &r.ops[1..]),
            _ => (&[][..], &r.ops[..]),
        };
        let fname = match rest.first() {
            Some(ROp::Word(w)) => w.clone(),
            _ => return Err(e("call needs a function name".into())),
        };
        let args = match rest.get(1) {
            Some(ROp::Vec(v)) => v.as_slice(),
            None => &[][..],
            Some(_) => return Err(e("indirect calls and call prototypes are not supported".into())),
        };
        if rest.len() > 2 {
            return Err(e("indirect calls and call prototypes are not supported".into()));
        }
        let f = self
            .funcs
            .get(&fname)
            .ok_or_else(|| e(format!("call to unknown function `{fname}`")))?;
        if stack.contains(&fname) {
            return Err(e(format!("recursive call of `{fname}` is not supported")));
        }
        if args.len() != f.params.len() || rets.len() != f.rets.len() {
            return Err(e(format!(
                "`{fname}` takes {} arguments and returns {} values; the call passes {} and expects {}",
                f.params.len(),
                f.rets.len(),
                args.len(),
                rets.len()
            )));
        }
        let fscope = match self.fscopes.get(&fname) {
            Some(s) => s.clone(),
            None => {
                let extra: Vec<(String, Ty)> = f.params.iter().chain(f.rets.iter()).cloned().collect();
                let s = self.scope(&f.body.regs, &extra)?;
                self.fscopes.insert(fname.clone(), s.clone());
                s
            }
        };
        let skip = guard.map(|(p, neg)| {
            self.code.push(Instr {
                guard: Some((p, !neg)),
                inst: Inst::Bra { target: 0 },
                line: r.line,
                regs: Box::new([p]),
            });
            self.code.len() - 1
        });
        let labels = HashMap::new();
        let cx = Ctx {
            regs: scope,
            syms: &self.syms,
            labels: &labels,
        };
        let mut moves_in = Vec::new();
        for (a, (pname, pty)) in args.iter().zip(&f.params) {
            let src = cx.op(a, *pty).map_err(e)?;
            moves_in.push(Instr {
                guard: None,
                inst: Inst::Mov {
                    d: fscope[pname].0,
                    a: src,
                },
                line: r.line,
                regs: match src {
                    Op::Reg(s) => Box::new([fscope[pname].0, s]),
                    _ => Box::new([fscope[pname].0]),
                },
            });
        }
        let mut moves_out = Vec::new();
        for (d, (rname, _)) in rets.iter().zip(&f.rets) {
            let dst = cx.reg(d).map_err(e)?;
            moves_out.push(Instr {
                guard: None,
                inst: Inst::Mov {
                    d: dst,
                    a: Op::Reg(fscope[rname].0),
                },
                line: r.line,
                regs: Box::new([dst, fscope[rname].0]),
            });
        }
        self.code.extend(moves_in);
        stack.push(fname);
        let funcs = self.funcs;
        self.emit_body(&funcs[stack.last().unwrap()].body, &fscope, true, stack)?;
        stack.pop();
        self.code.extend(moves_out);
        if let Some(i) = skip {
            let end = self.code.len() as u32;
            if let Inst::Bra { target } = &mut self.code[i].inst {
                *target = end;
            }
        }
        Ok(())
    }
}

struct Parser {
    toks: Vec<Token>,
    pos: usize,
}

fn parse_int(w: &str) -> Option<u64> {
    let w = w.strip_suffix('U').unwrap_or(w);
    if let Some(h) = w.strip_prefix("0x").or_else(|| w.strip_prefix("0X")) {
        u64::from_str_radix(h, 16).ok()
    } else if let Some(b) = w.strip_prefix("0b").or_else(|| w.strip_prefix("0B")) {
        u64::from_str_radix(b, 2).ok()
    } else if w.len() > 1 && w.starts_with('0') && w.bytes().all(|c| c.is_ascii_digit()) {
        u64::from_str_radix(&w[1..], 8).ok()
    } else {
        w.parse::<u64>().ok()
    }
}

fn parse_lit(w: &str) -> Option<Lit> {
    if let Some(h) = w.strip_prefix("0f").or_else(|| w.strip_prefix("0F")) {
        if h.len() == 8 {
            return u32::from_str_radix(h, 16).ok().map(Lit::F32);
        }
    }
    if let Some(h) = w.strip_prefix("0d").or_else(|| w.strip_prefix("0D")) {
        if h.len() == 16 {
            return u64::from_str_radix(h, 16).ok().map(Lit::F64);
        }
    }
    if let Some(v) = parse_int(w) {
        return Some(Lit::Int(v));
    }
    if w.contains(['.', 'e', 'E']) && !w.starts_with("0x") {
        return w.parse::<f64>().ok().map(Lit::Dec);
    }
    None
}

impl Parser {
    fn peek(&self) -> Option<&Token> {
        self.toks.get(self.pos)
    }
    fn line(&self) -> u32 {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map(|t| t.line)
            .unwrap_or(0)
    }
    fn next(&mut self) -> Result<Token, Error> {
        let t = self
            .toks
            .get(self.pos)
            .cloned()
            .ok_or_else(|| perr(self.line(), "unexpected end of input".into()))?;
        self.pos += 1;
        Ok(t)
    }
    fn is_punct(&self, c: char) -> bool {
        matches!(self.peek(), Some(Token { tok: Tok::Punct(p), .. }) if *p == c)
    }
    fn eat_punct(&mut self, c: char) -> bool {
        if self.is_punct(c) {
            self.pos += 1;
            true
        } else {
            false
        }
    }
    fn expect_punct(&mut self, c: char) -> Result<(), Error> {
        let t = self.next()?;
        if t.tok == Tok::Punct(c) {
            Ok(())
        } else {
            Err(perr(t.line, format!("expected `{c}`, found `{}`", tok_str(&t.tok))))
        }
    }
    fn word(&mut self) -> Result<(String, u32), Error> {
        let t = self.next()?;
        match t.tok {
            Tok::Word(w) => Ok((w, t.line)),
            other => Err(perr(t.line, format!("expected a name, found `{}`", tok_str(&other)))),
        }
    }
    fn number(&mut self) -> Result<u64, Error> {
        let (w, line) = self.word()?;
        parse_int(&w).ok_or_else(|| perr(line, format!("expected an integer, found `{w}`")))
    }
    fn skip_line(&mut self, line: u32) {
        while matches!(self.peek(), Some(t) if t.line == line) {
            self.pos += 1;
        }
    }

    /// `[.extern] .shared|.local [.align N] .type name[N]... [= {...}];`
    fn var_decl(&mut self) -> Result<VarDecl, Error> {
        let mut ext = false;
        let (mut w, line) = self.word()?;
        if w == ".extern" {
            ext = true;
            w = self.word()?.0;
        }
        let space = w;
        let mut align = 0;
        let mut ty = None;
        loop {
            let (w, l) = self.word()?;
            if w == ".align" {
                align = self.number()? as u32;
            } else if let Some(t) = w.strip_prefix('.').and_then(Ty::parse) {
                ty = Some(t);
            } else if w.starts_with(".v") {
                return Err(perr(l, "vector variables are not supported".into()));
            } else if w.starts_with('.') {
                // e.g. `.ptr` attributes: ignore
            } else {
                let ty = ty.ok_or_else(|| perr(l, format!("variable `{w}` has no type")))?;
                let mut count: Option<u64> = Some(1);
                while self.eat_punct('[') {
                    if self.eat_punct(']') {
                        count = None;
                    } else {
                        let n = self.number()?;
                        self.expect_punct(']')?;
                        count = count.map(|c| c.saturating_mul(n));
                    }
                }
                if self.eat_punct('=') {
                    return Err(perr(l, "initialised variables are not supported".into()));
                }
                self.expect_punct(';')?;
                if count.is_none() && !ext {
                    return Err(perr(l, format!("array `{w}` has no size")));
                }
                let elem = ty.bytes() as u64;
                let size = match count {
                    Some(c) => match c.checked_mul(elem).filter(|&b| b <= MAX_VAR_BYTES) {
                        Some(b) => Some(b as u32),
                        None => return Err(perr(l, format!("variable `{w}` is larger than {MAX_VAR_BYTES} bytes"))),
                    },
                    None => None,
                };
                if !align.is_power_of_two() && align != 0 {
                    return Err(perr(l, format!("alignment {align} is not a power of two")));
                }
                return Ok(VarDecl {
                    space,
                    name: w,
                    align: if align == 0 { elem as u32 } else { align },
                    size,
                });
            }
            let _ = line;
        }
    }

    /// `name ( .param ... ) directives { body }` after `.entry`.
    fn kernel_def(&mut self) -> Result<KernelDef, Error> {
        let (name, _) = self.word()?;
        // parameters
        let mut params = Vec::new();
        let mut param_bytes = 0usize;
        if self.eat_punct('(') {
            while !self.eat_punct(')') {
                let (w, l) = self.word()?;
                if w != ".param" {
                    return Err(perr(l, format!("expected `.param`, found `{w}`")));
                }
                let mut align = 0usize;
                let mut ty = None;
                let mut in_ptr = false;
                let pname;
                loop {
                    let (w, l) = self.word()?;
                    if w == ".align" {
                        let a = self.number()? as usize;
                        if !in_ptr {
                            align = a;
                        }
                    } else if w == ".ptr" {
                        in_ptr = true;
                    } else if let Some(t) = w.strip_prefix('.').and_then(Ty::parse) {
                        ty = Some(t);
                    } else if w.starts_with('.') {
                        // state-space attribute of `.ptr`
                    } else {
                        pname = (w, l);
                        break;
                    }
                }
                let ty = ty.ok_or_else(|| perr(pname.1, format!("parameter `{}` has no type", pname.0)))?;
                let mut count = 1usize;
                while self.eat_punct('[') {
                    count = count.saturating_mul(self.number()? as usize);
                    if count > MAX_VAR_BYTES as usize {
                        return Err(perr(self.line(), "parameter array too large".into()));
                    }
                    self.expect_punct(']')?;
                }
                let size = ty.bytes() * count;
                let align = if align == 0 { ty.bytes() } else { align };
                param_bytes = param_bytes.div_ceil(align) * align;
                params.push(ParamDecl {
                    name: pname.0,
                    size,
                    offset: param_bytes,
                });
                param_bytes += size;
                if !self.eat_punct(',') && !self.is_punct(')') {
                    return Err(perr(self.line(), "expected `,` or `)` in the parameter list".into()));
                }
            }
        }
        let (reqntid, maxntid, maxnreg) = self.perf_directives()?;
        let body = self
            .body()?
            .ok_or_else(|| perr(self.line(), format!("kernel `{name}` has no body")))?;
        Ok(KernelDef {
            name,
            params,
            param_bytes,
            reqntid,
            maxntid,
            maxnreg,
            body,
            shared_before: 0,
        })
    }

    /// `.reg` parameter list of a `.func`: `(.reg .f32 a, .reg .b32 b)`.
    fn reg_list(&mut self) -> Result<Vec<(String, Ty)>, Error> {
        let mut v = Vec::new();
        self.expect_punct('(')?;
        while !self.eat_punct(')') {
            let (w, l) = self.word()?;
            if w != ".reg" {
                return Err(perr(
                    l,
                    format!("only `.reg` function parameters are supported, found `{w}`"),
                ));
            }
            let (tw, l) = self.word()?;
            let ty = tw
                .strip_prefix('.')
                .and_then(Ty::parse)
                .ok_or_else(|| perr(l, format!("unknown parameter type `{tw}`")))?;
            let (name, _) = self.word()?;
            v.push((name, ty));
            if !self.eat_punct(',') && !self.is_punct(')') {
                return Err(perr(self.line(), "expected `,` or `)` in the parameter list".into()));
            }
        }
        Ok(v)
    }

    /// `[(.reg rets)] name (.reg params) { body }` after `.func`; `None` for a prototype.
    fn func_def(&mut self) -> Result<Option<FuncDef>, Error> {
        let rets = if self.is_punct('(') {
            self.reg_list()?
        } else {
            Vec::new()
        };
        let (name, _) = self.word()?;
        let params = if self.is_punct('(') {
            self.reg_list()?
        } else {
            Vec::new()
        };
        self.perf_directives()?;
        Ok(self.body()?.map(|body| FuncDef {
            name,
            rets,
            params,
            body,
        }))
    }

    /// `.reqntid` and `.maxntid`, when given.
    fn perf_directives(&mut self) -> Result<PerfDirectives, Error> {
        let mut reqntid = None;
        let mut maxntid = None;
        let mut maxnreg = None;
        while !self.is_punct('{') && !self.is_punct(';') {
            let (w, l) = self.word()?;
            match w.as_str() {
                ".maxntid" | ".reqntid" => {
                    let mut dims = [1u32; 3];
                    dims[0] = self.number()? as u32;
                    for d in dims.iter_mut().skip(1) {
                        if self.eat_punct(',') {
                            *d = self.number()? as u32;
                        }
                    }
                    if w == ".maxntid" {
                        maxntid = Some(dims);
                    } else {
                        reqntid = Some(dims);
                    }
                }
                ".maxnreg" => {
                    maxnreg = Some(self.number()? as u32);
                }
                ".minnctapersm" | ".maxnctapersm" => {
                    self.number()?;
                }
                ".noreturn" => {}
                ".pragma" => {
                    self.next()?;
                    self.expect_punct(';')?;
                }
                _ => return Err(perr(l, format!("unexpected `{w}` before the body"))),
            }
        }
        Ok((reqntid, maxntid, maxnreg))
    }

    /// `{ declarations, labels and instructions }`, or `None` after a bare `;`.
    fn body(&mut self) -> Result<Option<Body>, Error> {
        if self.eat_punct(';') {
            return Ok(None);
        }
        self.expect_punct('{')?;
        let mut b = Body::default();
        let mut depth = 1;
        while depth > 0 {
            let t = self.next()?;
            match t.tok {
                Tok::Punct('{') => depth += 1,
                Tok::Punct('}') => depth -= 1,
                Tok::Punct('@') => {
                    let neg = self.eat_punct('!');
                    let (p, _) = self.word()?;
                    let (opcode, line) = self.word()?;
                    let ops = self.operands()?;
                    b.raws.push(RawInst {
                        guard: Some((p, neg)),
                        opcode,
                        ops,
                        line,
                    });
                }
                Tok::Word(w) => {
                    if self.is_punct(':') && !w.starts_with('.') {
                        self.pos += 1;
                        if b.labels.insert(w.clone(), b.raws.len() as u32).is_some() {
                            return Err(perr(t.line, format!("label `{w}` defined twice")));
                        }
                        continue;
                    }
                    match w.as_str() {
                        ".reg" => {
                            let (tw, l) = self.word()?;
                            if tw.starts_with(".v") {
                                return Err(perr(l, "vector registers are not supported".into()));
                            }
                            let ty = tw
                                .strip_prefix('.')
                                .and_then(Ty::parse)
                                .ok_or_else(|| perr(l, format!("unknown register type `{tw}`")))?;
                            loop {
                                let (name, _) = self.word()?;
                                if self.eat_punct('<') {
                                    let n = self.number()?;
                                    self.expect_punct('>')?;
                                    if n > MAX_REGS {
                                        return Err(perr(
                                            t.line,
                                            format!("more than {MAX_REGS} registers `{name}<{n}>`"),
                                        ));
                                    }
                                    for i in 0..n {
                                        b.regs.push((format!("{name}{i}"), ty, t.line));
                                    }
                                } else {
                                    b.regs.push((name, ty, t.line));
                                }
                                if !self.eat_punct(',') {
                                    break;
                                }
                            }
                            self.expect_punct(';')?;
                        }
                        ".shared" | ".extern" | ".local" => {
                            self.pos -= 1;
                            let v = self.var_decl()?;
                            match v.space.as_str() {
                                ".shared" => b.shared.push(v),
                                ".local" => b.locals.push(v),
                                s => return Err(perr(t.line, format!("`{s}` variables are not supported"))),
                            }
                        }
                        ".pragma" => {
                            self.next()?;
                            self.expect_punct(';')?;
                        }
                        ".loc" | ".file" => self.skip_line(t.line),
                        _ if w.starts_with('.') => {
                            return Err(perr(t.line, format!("unknown directive `{w}` in a body")))
                        }
                        _ => {
                            let ops = self.operands()?;
                            b.raws.push(RawInst {
                                guard: None,
                                opcode: w,
                                ops,
                                line: t.line,
                            });
                        }
                    }
                }
                other => return Err(perr(t.line, format!("unexpected `{}` in a body", tok_str(&other)))),
            }
        }
        b.end_line = self.toks[self.pos - 1].line;
        Ok(Some(b))
    }

    fn operands(&mut self) -> Result<Vec<ROp>, Error> {
        let mut ops = Vec::new();
        if self.eat_punct(';') {
            return Ok(ops);
        }
        loop {
            ops.push(self.operand()?);
            if self.eat_punct(';') {
                return Ok(ops);
            }
            self.expect_punct(',')?;
        }
    }

    fn operand(&mut self) -> Result<ROp, Error> {
        let t = self.next()?;
        match t.tok {
            Tok::Punct(open @ ('{' | '(')) => {
                let close = if open == '{' { '}' } else { ')' };
                let mut v = Vec::new();
                if self.eat_punct(close) {
                    return Ok(ROp::Vec(v));
                }
                loop {
                    v.push(self.operand()?);
                    if self.eat_punct(close) {
                        return Ok(ROp::Vec(v));
                    }
                    self.expect_punct(',')?;
                }
            }
            Tok::Punct('[') => {
                let (w, l) = self.word()?;
                let (base, lit) = match parse_lit(&w) {
                    Some(Lit::Int(v)) => (None, Some(v)),
                    Some(_) => return Err(perr(l, format!("bad address `{w}`"))),
                    None => (Some(w.clone()), None),
                };
                if base.is_some() && self.eat_punct(',') {
                    let v = self.operand()?;
                    self.expect_punct(']')?;
                    return match v {
                        ROp::Vec(v) => Ok(ROp::MemVec(w, v)),
                        _ => Err(perr(l, "expected `{coordinates}` after the tensor map".into())),
                    };
                }
                let mut off = 0i64;
                while !self.eat_punct(']') {
                    let neg = if self.eat_punct('+') {
                        self.eat_punct('-')
                    } else {
                        self.expect_punct('-')?;
                        true
                    };
                    let n = self.number()? as i64;
                    off += if neg { -n } else { n };
                }
                Ok(ROp::Mem { base, lit, off })
            }
            Tok::Punct('!') => Ok(ROp::NegPred(self.word()?.0)),
            Tok::Punct('-') => {
                let (w, l) = self.word()?;
                match parse_lit(&w) {
                    Some(Lit::Int(v)) => Ok(ROp::Lit(Lit::Int(v.wrapping_neg()))),
                    Some(Lit::Dec(v)) => Ok(ROp::Lit(Lit::Dec(-v))),
                    Some(Lit::F32(b)) => Ok(ROp::Lit(Lit::F32(b ^ 0x8000_0000))),
                    Some(Lit::F64(b)) => Ok(ROp::Lit(Lit::F64(b ^ (1 << 63)))),
                    None => Err(perr(l, format!("expected a number after `-`, found `{w}`"))),
                }
            }
            Tok::Word(w) => {
                if w == "_" {
                    return Ok(ROp::Sink);
                }
                if w.starts_with(|c: char| c.is_ascii_digit()) {
                    return parse_lit(&w)
                        .map(ROp::Lit)
                        .ok_or_else(|| perr(t.line, format!("bad number `{w}`")));
                }
                if self.eat_punct('|') {
                    let (w2, _) = self.word()?;
                    return Ok(ROp::Pair(w, w2));
                }
                Ok(ROp::Word(w))
            }
            other => Err(perr(t.line, format!("unexpected `{}` in an operand", tok_str(&other)))),
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Sym {
    Shared(u32),
    Local(u32),
    Param(u32),
}

pub(crate) struct Ctx<'a> {
    pub(crate) regs: &'a HashMap<String, (u32, Ty)>,
    pub(crate) syms: &'a HashMap<String, Sym>,
    labels: &'a HashMap<String, u32>,
}

fn special(name: &str) -> Option<Sreg> {
    let dim = |s: &str| match s {
        "x" => Some(0u8),
        "y" => Some(1),
        "z" => Some(2),
        _ => None,
    };
    if let Some((base, d)) = name.split_once('.') {
        let d = dim(d)?;
        return Some(match base {
            "%tid" => Sreg::Tid(d),
            "%ntid" => Sreg::Ntid(d),
            "%ctaid" => Sreg::Ctaid(d),
            "%nctaid" => Sreg::Nctaid(d),
            _ => return None,
        });
    }
    Some(match name {
        "%laneid" => Sreg::LaneId,
        "%warpid" => Sreg::WarpId,
        "%nwarpid" => Sreg::NWarpId,
        "%lanemask_eq" => Sreg::LaneMaskEq,
        "%lanemask_lt" => Sreg::LaneMaskLt,
        "%lanemask_le" => Sreg::LaneMaskLe,
        "%lanemask_gt" => Sreg::LaneMaskGt,
        "%lanemask_ge" => Sreg::LaneMaskGe,
        "%clock" => Sreg::Clock,
        "%clock64" => Sreg::Clock64,
        "%smid" => Sreg::SmId,
        "%gridid" => Sreg::GridId,
        "%dynamic_smem_size" => Sreg::DynSmemSize,
        "%total_smem_size" => Sreg::TotalSmemSize,
        _ => return None,
    })
}

fn lit_bits(l: &Lit, ty: Ty) -> Result<u64, String> {
    use half::{bf16, f16};
    let as_f64 = |l: &Lit| -> f64 {
        match *l {
            Lit::Int(v) => v as i64 as f64,
            Lit::F32(b) => f32::from_bits(b) as f64,
            Lit::F64(b) => f64::from_bits(b),
            Lit::Dec(x) => x,
        }
    };
    Ok(match ty {
        Ty::F32 | Ty::Tf32 => match *l {
            Lit::F32(b) => b as u64,
            _ => (as_f64(l) as f32).to_bits() as u64,
        },
        Ty::F64 => match *l {
            Lit::F64(b) => b,
            _ => as_f64(l).to_bits(),
        },
        Ty::F16 => match *l {
            Lit::Int(v) => v & 0xffff,
            _ => f16::from_f64(as_f64(l)).to_bits() as u64,
        },
        Ty::Bf16 => match *l {
            Lit::Int(v) => v & 0xffff,
            _ => bf16::from_f64(as_f64(l)).to_bits() as u64,
        },
        _ => match *l {
            Lit::Int(v) => v & ty.mask(),
            Lit::F32(b) => b as u64 & ty.mask(),
            Lit::F64(b) => b & ty.mask(),
            Lit::Dec(x) => return Err(format!("float literal {x} for a .{ty:?} operand")),
        },
    })
}

impl Ctx<'_> {
    pub(crate) fn reg(&self, r: &ROp) -> Result<u32, String> {
        match r {
            ROp::Word(w) => self
                .regs
                .get(w)
                .map(|r| r.0)
                .ok_or_else(|| format!("`{w}` is not a declared register")),
            other => Err(format!("expected a register, found {other:?}")),
        }
    }
    pub(crate) fn pred_reg(&self, w: &str) -> Result<u32, String> {
        match self.regs.get(w) {
            Some((i, Ty::Pred)) => Ok(*i),
            Some(_) => Err(format!("`{w}` is not a predicate register")),
            None => Err(format!("`{w}` is not a declared register")),
        }
    }
    pub(crate) fn op(&self, r: &ROp, ty: Ty) -> Result<Op, String> {
        match r {
            ROp::Word(w) => {
                if let Some((i, _)) = self.regs.get(w) {
                    Ok(Op::Reg(*i))
                } else if let Some(s) = special(w) {
                    Ok(Op::Sreg(s))
                } else if let Some(s) = self.syms.get(w) {
                    Ok(Op::Imm(match *s {
                        Sym::Shared(o) | Sym::Local(o) | Sym::Param(o) => o as u64,
                    }))
                } else {
                    Err(format!("unknown operand `{w}`"))
                }
            }
            ROp::Lit(l) => Ok(Op::Imm(lit_bits(l, ty)?)),
            other => Err(format!("expected a register or immediate, found {other:?}")),
        }
    }
    pub(crate) fn pred_op(&self, r: &ROp) -> Result<(Op, bool), String> {
        match r {
            ROp::NegPred(w) => Ok((Op::Reg(self.pred_reg(w)?), true)),
            ROp::Word(w) => Ok((Op::Reg(self.pred_reg(w)?), false)),
            ROp::Lit(Lit::Int(v)) => Ok((Op::Imm(*v & 1), false)),
            other => Err(format!("expected a predicate, found {other:?}")),
        }
    }
    pub(crate) fn addr(&self, r: &ROp) -> Result<Addr, String> {
        match r {
            ROp::Mem { base, lit, off } => match (base, lit) {
                (Some(w), _) => {
                    if let Some((i, _)) = self.regs.get(w) {
                        Ok(Addr {
                            base: Some(*i),
                            off: *off,
                        })
                    } else if let Some(s) = self.syms.get(w) {
                        let o = match *s {
                            Sym::Shared(o) | Sym::Local(o) | Sym::Param(o) => o as i64,
                        };
                        Ok(Addr {
                            base: None,
                            off: o + off,
                        })
                    } else {
                        Err(format!("unknown address base `{w}`"))
                    }
                }
                (None, Some(v)) => Ok(Addr {
                    base: None,
                    off: *v as i64 + off,
                }),
                (None, None) => Err("empty address".into()),
            },
            other => Err(format!("expected an address `[...]`, found {other:?}")),
        }
    }
    pub(crate) fn vec_regs(&self, r: &ROp) -> Result<Vec<u32>, String> {
        match r {
            ROp::Vec(v) => v.iter().map(|x| self.reg(x)).collect(),
            other => Err(format!("expected a register vector `{{...}}`, found {other:?}")),
        }
    }
    fn label(&self, r: &ROp) -> Result<u32, String> {
        match r {
            ROp::Word(w) => self
                .labels
                .get(w)
                .copied()
                .ok_or_else(|| format!("unknown label `{w}`")),
            other => Err(format!("expected a label, found {other:?}")),
        }
    }
}

pub(crate) fn space_of(flags: &[&str]) -> Space {
    for f in flags {
        match *f {
            "global" => return Space::Global,
            "shared" | "shared::cta" => return Space::Shared,
            "local" => return Space::Local,
            "param" => return Space::Param,
            _ => {}
        }
    }
    Space::Generic
}

fn rnd_of(flags: &[&str]) -> (Option<Rnd>, bool) {
    for f in flags {
        match *f {
            "rn" => return (Some(Rnd::Rn), false),
            "rz" => return (Some(Rnd::Rz), false),
            "rm" => return (Some(Rnd::Rm), false),
            "rp" => return (Some(Rnd::Rp), false),
            "rna" => return (Some(Rnd::Rna), false),
            "rni" => return (Some(Rnd::Rn), true),
            "rzi" => return (Some(Rnd::Rz), true),
            "rmi" => return (Some(Rnd::Rm), true),
            "rpi" => return (Some(Rnd::Rp), true),
            _ => {}
        }
    }
    (None, false)
}

pub(crate) fn nops(r: &RawInst, n: usize) -> Result<(), String> {
    if r.ops.len() != n {
        Err(format!("`{}` takes {n} operands, found {}", r.opcode, r.ops.len()))
    } else {
        Ok(())
    }
}

fn decode(r: &RawInst, cx: &Ctx) -> Result<Inst, String> {
    let parts: Vec<&str> = r.opcode.split('.').collect();
    let name = parts[0];
    let flags: Vec<&str> = parts[1..].to_vec();
    let types: Vec<Ty> = flags.iter().filter_map(|f| Ty::parse(f)).collect();
    let has = |f: &str| flags.contains(&f);
    let ty = || {
        types
            .last()
            .copied()
            .ok_or_else(|| format!("`{}` has no type", r.opcode))
    };
    let o = &r.ops;
    let (rnd, int_rnd) = rnd_of(&flags);
    let fl = FFlags {
        rnd: rnd.unwrap_or(Rnd::Rn),
        ftz: has("ftz"),
        sat: has("sat"),
        nan: has("NaN"),
    };
    let unknown = || Err(format!("unknown instruction `{}`", r.opcode));
    if let Some(inst) = crate::hopper::decode(r, cx, name, &flags) {
        return inst;
    }

    Ok(match name {
        "mov" => {
            nops(r, 2)?;
            let t = ty()?;
            match (&o[0], &o[1]) {
                (ROp::Vec(ds), _) | (_, ROp::Vec(ds)) if ds.is_empty() || ds.len() > 8 => {
                    return Err("bad vector operand in mov".into());
                }
                (ROp::Vec(ds), a) => {
                    let bits = t.bits() / ds.len() as u32;
                    let ds = ds
                        .iter()
                        .map(|x| {
                            if matches!(x, ROp::Sink) {
                                Ok(None)
                            } else {
                                cx.reg(x).map(Some)
                            }
                        })
                        .collect::<Result<_, _>>()?;
                    Inst::Unpack {
                        ds,
                        a: cx.op(a, t)?,
                        bits,
                    }
                }
                (d, ROp::Vec(ps)) => {
                    let bits = t.bits() / ps.len() as u32;
                    let pt = match bits {
                        8 => Ty::B8,
                        16 => Ty::B16,
                        32 => Ty::B32,
                        _ => return Err("bad vector in mov".into()),
                    };
                    let parts = ps.iter().map(|x| cx.op(x, pt)).collect::<Result<_, _>>()?;
                    Inst::Pack {
                        d: cx.reg(d)?,
                        parts,
                        bits,
                    }
                }
                (d, a) => Inst::Mov {
                    d: cx.reg(d)?,
                    a: cx.op(a, t)?,
                },
            }
        }
        "add" | "sub" | "mul" | "div" | "rem" | "min" | "max" | "and" | "or" | "xor" | "shl" | "shr" | "copysign"
        | "mul24" => {
            nops(r, 3)?;
            let t = ty()?;
            let d = cx.reg(&o[0])?;
            let bt = if matches!(name, "shl" | "shr") { Ty::U32 } else { t };
            if t.is_float() && !matches!(name, "and" | "or" | "xor") {
                let op = match name {
                    "add" => FBin::Add,
                    "sub" => FBin::Sub,
                    "mul" => FBin::Mul,
                    "div" => FBin::Div,
                    "min" => FBin::Min,
                    "max" => FBin::Max,
                    "copysign" => FBin::Copysign,
                    _ => return unknown(),
                };
                if !matches!(t, Ty::F32 | Ty::F64 | Ty::F16 | Ty::F16x2 | Ty::Bf16 | Ty::Bf16x2) {
                    return Err(format!("unsupported type in `{}`", r.opcode));
                }
                Inst::FBin {
                    op,
                    ty: t,
                    fl,
                    d,
                    a: cx.op(&o[1], t)?,
                    b: cx.op(&o[2], t)?,
                }
            } else {
                let op = match name {
                    "add" => IntOp::Add,
                    "sub" => IntOp::Sub,
                    "mul24" if has("hi") => IntOp::Mul24Hi,
                    "mul24" => IntOp::Mul24Lo,
                    "mul" if has("wide") => IntOp::MulWide,
                    "mul" if has("hi") => IntOp::MulHi,
                    "mul" => IntOp::MulLo,
                    "div" => IntOp::Div,
                    "rem" => IntOp::Rem,
                    "min" => IntOp::Min,
                    "max" => IntOp::Max,
                    "and" => IntOp::And,
                    "or" => IntOp::Or,
                    "xor" => IntOp::Xor,
                    "shl" => IntOp::Shl,
                    "shr" => IntOp::Shr,
                    _ => return unknown(),
                };
                if has("cc") {
                    return Err(format!("carry instructions (`{}`) are not supported", r.opcode));
                }
                Inst::Int {
                    op,
                    ty: t,
                    sat: has("sat"),
                    d,
                    a: cx.op(&o[1], t)?,
                    b: cx.op(&o[2], bt)?,
                }
            }
        }
        "neg" | "abs" | "not" | "cnot" | "popc" | "clz" | "brev" | "bfind" => {
            nops(r, 2)?;
            let t = ty()?;
            let d = cx.reg(&o[0])?;
            if t.is_float() && matches!(name, "neg" | "abs") {
                let op = if name == "neg" { FUn::Neg } else { FUn::Abs };
                Inst::FUn {
                    op,
                    ty: t,
                    fl,
                    d,
                    a: cx.op(&o[1], t)?,
                }
            } else {
                let op = match name {
                    "neg" => IntUn::Neg,
                    "abs" => IntUn::Abs,
                    "not" => IntUn::Not,
                    "cnot" => IntUn::Cnot,
                    "popc" => IntUn::Popc,
                    "clz" => IntUn::Clz,
                    "brev" => IntUn::Brev,
                    _ => IntUn::Bfind {
                        shiftamt: has("shiftamt"),
                    },
                };
                Inst::IntUn {
                    op,
                    ty: t,
                    d,
                    a: cx.op(&o[1], t)?,
                }
            }
        }
        "sqrt" | "rsqrt" | "rcp" | "ex2" | "lg2" | "sin" | "cos" | "tanh" => {
            nops(r, 2)?;
            let t = ty()?;
            if !matches!(t, Ty::F32 | Ty::F64 | Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2) {
                return Err(format!("unsupported type in `{}`", r.opcode));
            }
            let op = match name {
                "sqrt" => FUn::Sqrt,
                "rsqrt" => FUn::Rsqrt,
                "rcp" => FUn::Rcp,
                "ex2" => FUn::Ex2,
                "lg2" => FUn::Lg2,
                "sin" => FUn::Sin,
                "cos" => FUn::Cos,
                _ => FUn::Tanh,
            };
            Inst::FUn {
                op,
                ty: t,
                fl,
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], t)?,
            }
        }
        "fma" | "mad" => {
            nops(r, 4)?;
            let t = ty()?;
            let d = cx.reg(&o[0])?;
            if t.is_float() {
                Inst::Fma {
                    ty: t,
                    fl,
                    d,
                    a: cx.op(&o[1], t)?,
                    b: cx.op(&o[2], t)?,
                    c: cx.op(&o[3], t)?,
                }
            } else {
                let kind = if has("wide") {
                    MadKind::Wide
                } else if has("hi") {
                    MadKind::Hi
                } else {
                    MadKind::Lo
                };
                if has("cc") || has("sat") {
                    return Err(format!("`{}` is not supported", r.opcode));
                }
                let ct = if kind == MadKind::Wide {
                    match t.bits() {
                        16 => Ty::B32,
                        _ => Ty::B64,
                    }
                } else {
                    t
                };
                Inst::Mad {
                    kind,
                    ty: t,
                    d,
                    a: cx.op(&o[1], t)?,
                    b: cx.op(&o[2], t)?,
                    c: cx.op(&o[3], ct)?,
                }
            }
        }
        "bfe" => {
            nops(r, 4)?;
            let t = ty()?;
            Inst::Bfe {
                ty: t,
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], t)?,
                b: cx.op(&o[2], Ty::U32)?,
                c: cx.op(&o[3], Ty::U32)?,
            }
        }
        "bfi" => {
            nops(r, 5)?;
            let t = ty()?;
            Inst::Bfi {
                ty: t,
                d: cx.reg(&o[0])?,
                f: cx.op(&o[1], t)?,
                b: cx.op(&o[2], t)?,
                c: cx.op(&o[3], Ty::U32)?,
                len: cx.op(&o[4], Ty::U32)?,
            }
        }
        "prmt" => {
            nops(r, 4)?;
            if flags.len() > 1 {
                return Err(format!("`{}`: only the default prmt mode is supported", r.opcode));
            }
            Inst::Prmt {
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], Ty::B32)?,
                b: cx.op(&o[2], Ty::B32)?,
                c: cx.op(&o[3], Ty::B32)?,
            }
        }
        "lop3" => {
            nops(r, 5)?;
            let lut = match cx.op(&o[4], Ty::B32)? {
                Op::Imm(v) => v as u8,
                _ => return Err("lop3 LUT must be an immediate".into()),
            };
            Inst::Lop3 {
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], Ty::B32)?,
                b: cx.op(&o[2], Ty::B32)?,
                c: cx.op(&o[3], Ty::B32)?,
                lut,
            }
        }
        "testp" => {
            nops(r, 2)?;
            let t = ty()?;
            let op = match flags.first().copied() {
                Some("finite") => TestP::Finite,
                Some("infinite") => TestP::Infinite,
                Some("number") => TestP::Number,
                Some("notanumber") => TestP::NotANumber,
                Some("normal") => TestP::Normal,
                Some("subnormal") => TestP::Subnormal,
                _ => return unknown(),
            };
            Inst::Testp {
                op,
                ty: t,
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], t)?,
            }
        }
        "setp" => {
            let t = ty()?;
            let cmp = match flags.first().copied() {
                Some("eq") => Cmp::Eq,
                Some("ne") => Cmp::Ne,
                Some("lt") => Cmp::Lt,
                Some("le") => Cmp::Le,
                Some("gt") => Cmp::Gt,
                Some("ge") => Cmp::Ge,
                Some("lo") => Cmp::Lo,
                Some("ls") => Cmp::Ls,
                Some("hi") => Cmp::Hi,
                Some("hs") => Cmp::Hs,
                Some("equ") => Cmp::Equ,
                Some("neu") => Cmp::Neu,
                Some("ltu") => Cmp::Ltu,
                Some("leu") => Cmp::Leu,
                Some("gtu") => Cmp::Gtu,
                Some("geu") => Cmp::Geu,
                Some("num") => Cmp::Num,
                Some("nan") => Cmp::Nan,
                _ => return Err(format!("`{}`: unknown comparison", r.opcode)),
            };
            let bop = match flags.get(1).copied() {
                Some("and") => Some(BoolOp::And),
                Some("or") => Some(BoolOp::Or),
                Some("xor") => Some(BoolOp::Xor),
                _ => None,
            };
            nops(r, if bop.is_some() { 4 } else { 3 })?;
            if matches!(t, Ty::F16x2 | Ty::Bf16x2) {
                return Err(format!("`{}` (paired comparison) is not supported", r.opcode));
            }
            let (p, q) = match &o[0] {
                ROp::Pair(a, b) => (cx.pred_reg(a)?, Some(cx.pred_reg(b)?)),
                ROp::Word(a) => (cx.pred_reg(a)?, None),
                other => return Err(format!("bad setp destination {other:?}")),
            };
            let comb = match bop {
                Some(b) => {
                    let (c, neg) = cx.pred_op(&o[3])?;
                    Some((b, c, neg))
                }
                None => None,
            };
            Inst::Setp {
                cmp,
                ty: t,
                ftz: has("ftz"),
                p,
                q,
                a: cx.op(&o[1], t)?,
                b: cx.op(&o[2], t)?,
                comb,
            }
        }
        "selp" => {
            nops(r, 4)?;
            let t = ty()?;
            let (c, neg) = cx.pred_op(&o[3])?;
            if neg {
                return Err("selp takes a plain predicate".into());
            }
            Inst::Selp {
                ty: t,
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], t)?,
                b: cx.op(&o[2], t)?,
                c,
            }
        }
        "cvt" => {
            if types.len() != 2 {
                return Err(format!("`{}` needs a destination and a source type", r.opcode));
            }
            let (dty, sty) = (types[0], types[1]);
            if matches!(dty, Ty::Bf16x2 | Ty::F16x2) {
                nops(r, 3)?;
                if sty != Ty::F32 {
                    return Err(format!("`{}` is not supported", r.opcode));
                }
                Inst::CvtPack {
                    bf16: dty == Ty::Bf16x2,
                    rnd: rnd.unwrap_or(Rnd::Rn),
                    relu: has("relu"),
                    d: cx.reg(&o[0])?,
                    hi: cx.op(&o[1], Ty::F32)?,
                    lo: cx.op(&o[2], Ty::F32)?,
                }
            } else {
                nops(r, 2)?;
                if (dty.is_float() && dty != sty || (sty.is_float() && !dty.is_float())) && rnd.is_none() {
                    // PTX requires a rounding modifier for narrowing and float<->int conversions,
                    // but not for widening float conversions.
                    let widening = dty.is_float() && sty.is_float() && dty.bits() > sty.bits();
                    if !widening {
                        return Err(format!("`{}` needs a rounding modifier", r.opcode));
                    }
                }
                Inst::Cvt {
                    dty,
                    sty,
                    rnd,
                    int_rnd,
                    ftz: has("ftz"),
                    sat: has("sat"),
                    satfinite: has("satfinite"),
                    d: cx.reg(&o[0])?,
                    a: cx.op(&o[1], sty)?,
                }
            }
        }
        "cvta" => {
            nops(r, 2)?;
            let to = has("to");
            let space = space_of(&flags);
            if space == Space::Generic || (space == Space::Param && to) {
                return Err(format!("`{}` is not supported", r.opcode));
            }
            Inst::Cvta {
                to,
                space,
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], ty()?)?,
            }
        }
        "ld" | "ldu" => {
            nops(r, 2)?;
            if has("const") {
                return Err("the .const state space is not supported".into());
            }
            let t = ty()?;
            let mut space = space_of(&flags);
            if name == "ldu" && space == Space::Generic {
                space = Space::Global;
            }
            let ds = match &o[0] {
                ROp::Vec(v) => v
                    .iter()
                    .map(|x| {
                        if matches!(x, ROp::Sink) {
                            Ok(None)
                        } else {
                            cx.reg(x).map(Some)
                        }
                    })
                    .collect::<Result<Vec<_>, _>>()?,
                x => vec![Some(cx.reg(x)?)],
            };
            check_vec(&flags, ds.len())?;
            Inst::Ld {
                space,
                ty: t,
                ds,
                addr: cx.addr(&o[1])?,
            }
        }
        "st" => {
            nops(r, 2)?;
            let t = ty()?;
            let srcs = match &o[1] {
                ROp::Vec(v) => v.iter().map(|x| cx.op(x, t)).collect::<Result<Vec<_>, _>>()?,
                x => vec![cx.op(x, t)?],
            };
            check_vec(&flags, srcs.len())?;
            Inst::St {
                space: space_of(&flags),
                ty: t,
                srcs,
                addr: cx.addr(&o[0])?,
            }
        }
        "atom" | "red" => {
            let t = ty()?;
            let mut op = None;
            for f in &flags {
                op = op.or(match *f {
                    "add" => Some(AtomOp::Add),
                    "min" => Some(AtomOp::Min),
                    "max" => Some(AtomOp::Max),
                    "and" => Some(AtomOp::And),
                    "or" => Some(AtomOp::Or),
                    "xor" => Some(AtomOp::Xor),
                    "exch" => Some(AtomOp::Exch),
                    "cas" => Some(AtomOp::Cas),
                    "inc" => Some(AtomOp::Inc),
                    "dec" => Some(AtomOp::Dec),
                    _ => None,
                });
            }
            let op = op.ok_or_else(|| format!("`{}`: no atomic operation", r.opcode))?;
            if has("v2") || has("v4") || matches!(t, Ty::F16 | Ty::Bf16 | Ty::F16x2 | Ty::Bf16x2) {
                return Err(format!("`{}` is not supported", r.opcode));
            }
            let space = space_of(&flags);
            let (d, rest) = if name == "atom" {
                (Some(cx.reg(&o[0])?), &o[1..])
            } else {
                (None, &o[..])
            };
            let want = if op == AtomOp::Cas { 3 } else { 2 };
            if rest.len() != want {
                return Err(format!("`{}` takes {} operands", r.opcode, want + d.is_some() as usize));
            }
            Inst::Atom {
                space,
                op,
                ty: t,
                d,
                addr: cx.addr(&rest[0])?,
                b: cx.op(&rest[1], t)?,
                c: if op == AtomOp::Cas {
                    Some(cx.op(&rest[2], t)?)
                } else {
                    None
                },
            }
        }
        "cp" => {
            if flags.first() != Some(&"async") || has("bulk") || has("mbarrier") {
                return unknown();
            }
            if has("commit_group") {
                Inst::CpAsyncCommit
            } else if has("wait_group") {
                nops(r, 1)?;
                match cx.op(&o[0], Ty::U32)? {
                    Op::Imm(n) => Inst::CpAsyncWait {
                        n: n as u32,
                        all: false,
                    },
                    _ => return Err("cp.async.wait_group takes an immediate".into()),
                }
            } else if has("wait_all") {
                Inst::CpAsyncWait { n: 0, all: true }
            } else {
                if !(has("ca") || has("cg")) || !has("shared") && !has("shared::cta") || !has("global") {
                    return unknown();
                }
                if o.len() < 3 || o.len() > 5 {
                    return Err(format!("`{}` takes 3 or 4 operands", r.opcode));
                }
                let size = match cx.op(&o[2], Ty::U32)? {
                    Op::Imm(n) if [4, 8, 16].contains(&n) => n as u32,
                    _ => return Err("cp.async size must be 4, 8 or 16".into()),
                };
                if has("cg") && size != 16 {
                    return Err("cp.async.cg copies 16 bytes".into());
                }
                let (mut src_size, mut ignore_src) = (None, None);
                if has("L2::cache_hint") {
                    return Err("cp.async cache hints are not supported".into());
                }
                if let Some(x) = o.get(3) {
                    let is_pred = matches!(x, ROp::NegPred(_))
                        || matches!(x, ROp::Word(w) if matches!(cx.regs.get(w), Some((_, Ty::Pred))));
                    if is_pred {
                        let (p, neg) = cx.pred_op(x)?;
                        if neg {
                            return Err("negated ignore-src predicate is not supported".into());
                        }
                        ignore_src = Some(p);
                    } else {
                        src_size = Some(cx.op(x, Ty::U32)?);
                    }
                }
                Inst::CpAsync {
                    dst: cx.addr(&o[0])?,
                    src: cx.addr(&o[1])?,
                    size,
                    src_size,
                    ignore_src,
                }
            }
        }
        "ldmatrix" => {
            nops(r, 2)?;
            if !has("m8n8") || !has("b16") {
                return Err(format!("`{}` is not supported (m8n8 .b16 only)", r.opcode));
            }
            let num = if has("x1") {
                1
            } else if has("x2") {
                2
            } else if has("x4") {
                4
            } else {
                return Err("ldmatrix needs .x1, .x2 or .x4".into());
            };
            let ds = cx.vec_regs(&o[0])?;
            if ds.len() != num as usize {
                return Err(format!("ldmatrix .x{num} needs {num} destination registers"));
            }
            let generic = space_of(&flags) != Space::Shared;
            Inst::Ldmatrix {
                num,
                trans: has("trans"),
                ds,
                addr: cx.addr(&o[1])?,
                generic,
            }
        }
        "mma" => {
            nops(r, 4)?;
            if !has("sync") || !has("aligned") || !has("row") || !has("col") || types.len() != 4 {
                return Err(format!("`{}` is not supported", r.opcode));
            }
            let (dt, at, bt, ct) = (types[0], types[1], types[2], types[3]);
            if at != bt || dt != ct || !matches!(dt, Ty::F32 | Ty::F16) {
                return Err(format!("`{}` is not supported", r.opcode));
            }
            let kind = match (flags.iter().find(|f| f.starts_with('m')).copied(), at) {
                (Some("m16n8k16"), Ty::Bf16) => MmaKind::M16n8k16 { bf16: true },
                (Some("m16n8k16"), Ty::F16) => MmaKind::M16n8k16 { bf16: false },
                (Some("m16n8k8"), Ty::Bf16) => MmaKind::M16n8k8 { bf16: true },
                (Some("m16n8k8"), Ty::F16) => MmaKind::M16n8k8 { bf16: false },
                (Some("m16n8k8"), Ty::Tf32) => MmaKind::M16n8k8Tf32,
                _ => return Err(format!("`{}` is not supported", r.opcode)),
            };
            let f16_acc = dt == Ty::F16;
            if f16_acc && at != Ty::F16 {
                return Err(format!("`{}` is not supported", r.opcode));
            }
            let (na, nb) = match kind {
                MmaKind::M16n8k16 { .. } => (4, 2),
                MmaKind::M16n8k8 { .. } => (2, 1),
                MmaKind::M16n8k8Tf32 => (4, 2),
            };
            let nc = if f16_acc { 2 } else { 4 };
            let d = cx.vec_regs(&o[0])?;
            let a = cx.vec_regs(&o[1])?;
            let b = cx.vec_regs(&o[2])?;
            let c = match &o[3] {
                ROp::Vec(v) => v.iter().map(|x| cx.op(x, dt)).collect::<Result<Vec<_>, _>>()?,
                other => return Err(format!("expected a vector, found {other:?}")),
            };
            if d.len() != nc || a.len() != na || b.len() != nb || c.len() != nc {
                return Err(format!("`{}`: wrong number of fragment registers", r.opcode));
            }
            Inst::Mma {
                kind,
                f16_acc,
                d,
                a,
                b,
                c,
            }
        }
        "shfl" => {
            nops(r, 5)?;
            if !has("sync") {
                return Err("shfl without .sync is not supported on sm_70+".into());
            }
            let mode = if has("up") {
                ShflMode::Up
            } else if has("down") {
                ShflMode::Down
            } else if has("bfly") {
                ShflMode::Bfly
            } else if has("idx") {
                ShflMode::Idx
            } else {
                return unknown();
            };
            let (d, p) = match &o[0] {
                ROp::Pair(a, b) => (cx.reg(&ROp::Word(a.clone()))?, Some(cx.pred_reg(b)?)),
                x => (cx.reg(x)?, None),
            };
            Inst::Shfl {
                mode,
                d,
                p,
                a: cx.op(&o[1], Ty::B32)?,
                b: cx.op(&o[2], Ty::B32)?,
                c: cx.op(&o[3], Ty::B32)?,
                mask: cx.op(&o[4], Ty::B32)?,
            }
        }
        "vote" => {
            nops(r, 3)?;
            if !has("sync") {
                return Err("vote without .sync is not supported on sm_70+".into());
            }
            let mode = if has("all") {
                VoteMode::All
            } else if has("any") {
                VoteMode::Any
            } else if has("uni") {
                VoteMode::Uni
            } else if has("ballot") {
                VoteMode::Ballot
            } else {
                return unknown();
            };
            let (a, neg) = cx.pred_op(&o[1])?;
            Inst::Vote {
                mode,
                d: cx.reg(&o[0])?,
                a,
                neg,
                mask: cx.op(&o[2], Ty::B32)?,
            }
        }
        "activemask" => {
            nops(r, 1)?;
            Inst::Activemask { d: cx.reg(&o[0])? }
        }
        "bar" | "barrier" => {
            if has("warp") {
                nops(r, 1)?;
                Inst::WarpSync {
                    mask: cx.op(&o[0], Ty::B32)?,
                }
            } else if has("sync") || (name == "bar" && flags.is_empty()) {
                if o.is_empty() || o.len() > 2 {
                    return Err(format!("`{}` takes 1 or 2 operands", r.opcode));
                }
                cx.op(&o[0], Ty::U32)?;
                Inst::Bar {
                    count: o.get(1).map(|x| cx.op(x, Ty::U32)).transpose()?,
                    aligned: name == "bar" || has("aligned"),
                }
            } else {
                return Err(format!("`{}` is not supported", r.opcode));
            }
        }
        "shf" => {
            nops(r, 4)?;
            if !(has("l") || has("r")) {
                return unknown();
            }
            Inst::Shf {
                left: has("l"),
                clamp: has("clamp"),
                d: cx.reg(&o[0])?,
                lo: cx.op(&o[1], Ty::B32)?,
                hi: cx.op(&o[2], Ty::B32)?,
                n: cx.op(&o[3], Ty::U32)?,
            }
        }
        "slct" => {
            nops(r, 4)?;
            if types.len() != 2 {
                return Err(format!("`{}` needs two types", r.opcode));
            }
            let (dt, ct) = (types[0], types[1]);
            Inst::Slct {
                cty: ct,
                ftz: has("ftz"),
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], dt)?,
                b: cx.op(&o[2], dt)?,
                c: cx.op(&o[3], ct)?,
            }
        }
        "redux" => {
            nops(r, 3)?;
            let t = ty()?;
            let op = if has("add") {
                IntOp::Add
            } else if has("min") {
                IntOp::Min
            } else if has("max") {
                IntOp::Max
            } else if has("and") {
                IntOp::And
            } else if has("or") {
                IntOp::Or
            } else if has("xor") {
                IntOp::Xor
            } else {
                return unknown();
            };
            if !has("sync") || t.is_float() {
                return Err(format!("`{}` is not supported", r.opcode));
            }
            Inst::Redux {
                op,
                ty: t,
                d: cx.reg(&o[0])?,
                a: cx.op(&o[1], t)?,
                mask: cx.op(&o[2], Ty::B32)?,
            }
        }
        "bra" => {
            nops(r, 1)?;
            Inst::Bra {
                target: cx.label(&o[0])?,
            }
        }
        "ret" | "exit" => Inst::Exit,
        "trap" => Inst::Trap,
        "membar" | "fence" | "prefetch" | "prefetchu" | "nanosleep" | "griddepcontrol" | "pmevent" => Inst::Nop,
        _ => return unknown(),
    })
}

fn check_vec(flags: &[&str], n: usize) -> Result<(), String> {
    let want = if flags.contains(&"v2") {
        2
    } else if flags.contains(&"v4") {
        4
    } else if flags.contains(&"v8") {
        8
    } else {
        1
    };
    if want != n {
        Err(format!("vector width .v{want} does not match {n} operands"))
    } else {
        Ok(())
    }
}

/// The registers an instruction names (its guard too), for the `wgmma` register checks.
fn raw_regs(r: &RawInst, scope: &Scope) -> Box<[u32]> {
    fn walk(op: &ROp, scope: &Scope, out: &mut Vec<u32>) {
        let mut name = |w: &str| {
            if let Some((i, _)) = scope.get(w) {
                out.push(*i);
            }
        };
        match op {
            ROp::Word(w) | ROp::NegPred(w) => name(w),
            ROp::Mem { base: Some(w), .. } => name(w),
            ROp::Pair(a, b) => {
                name(a);
                name(b);
            }
            ROp::Vec(v) => v.iter().for_each(|x| walk(x, scope, out)),
            ROp::MemVec(w, v) => {
                name(w);
                v.iter().for_each(|x| walk(x, scope, out));
            }
            _ => {}
        }
    }
    let mut out = Vec::new();
    if let Some((p, _)) = &r.guard {
        if let Some((i, _)) = scope.get(p) {
            out.push(*i);
        }
    }
    for op in &r.ops {
        walk(op, scope, &mut out);
    }
    out.into_boxed_slice()
}
