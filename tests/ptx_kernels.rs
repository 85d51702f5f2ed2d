//! Every kernel in `kernels/` run on the CPU by the PTX executor, against the
//! reference, at small shapes that still cover several tiles and the ragged
//! edge tiles (so every predicated path runs), with NaN-poisoned outputs.
//!
//! Each launch follows the launch contract written in the kernel file's
//! header, exactly as the host code in `src/cuda/` does; the executor also
//! faults on out-of-bounds accesses, reads of unwritten shared memory, shared
//! memory races and diverged warp collectives. Shapes and tolerances come
//! from `tests/common`, shared with the GPU tests.

mod common;

use common::*;
use nnkern::{
    bf16, f16, reference, Activation, AdamConfig, AdamEpsilon, MatMut, MatRef, SgdConfig, Targets, WeightDecay,
};
use nnkern_ptx_exec::{launch, Buffer, Memory, Module, Param};
use std::sync::OnceLock;

const ACTIVATION: &str = include_str!("../kernels/activation.ptx");
const OPTIM: &str = include_str!("../kernels/optim.ptx");
const SOFTMAX_XENT: &str = include_str!("../kernels/softmax_xent.ptx");
const GEMM_F32: &str = include_str!("../kernels/gemm_f32.ptx");
const GEMM_TC: &str = include_str!("../kernels/gemm_tc.ptx");

fn module(src: &'static str) -> &'static Module {
    static MODS: OnceLock<std::sync::Mutex<Vec<(usize, &'static Module)>>> = OnceLock::new();
    let mods = MODS.get_or_init(Default::default);
    let key = src.as_ptr() as usize;
    let mut g = mods.lock().unwrap();
    if let Some((_, m)) = g.iter().find(|(k, _)| *k == key) {
        return m;
    }
    let m: &'static Module = Box::leak(Box::new(Module::parse(src).expect("PTX parses")));
    g.push((key, m));
    m
}

fn run(
    src: &'static str,
    name: &str,
    grid: (u32, u32, u32),
    block: (u32, u32, u32),
    mem: &mut Memory,
    params: &[Param],
) {
    let k = module(src).kernel(name).unwrap();
    launch(mem, k, grid, block, 0, params).unwrap_or_else(|e| panic!("{name}: {e}"));
}

fn act_code(act: Activation) -> u32 {
    Activation::ALL.iter().position(|&a| a == act).unwrap() as u32
}

fn ptr(b: Buffer) -> Param {
    Param::Ptr(b)
}
fn u64p(v: usize) -> Param {
    Param::U64(v as u64)
}

#[test]
fn activation_kernels_forward_backward_in_place() {
    // n = 600 over a grid of 2 blocks: the grid-stride loop runs a second round.
    let n = 600;
    let x = act_inputs(n, 3);
    let dy = KRng::new(4).vec(n, -3.0, 3.0);
    for act in Activation::ALL {
        let mut mem = Memory::new();
        let (bx, bdy) = (mem.alloc_f32(&x), mem.alloc_f32(&dy));
        let (by, bdx) = (mem.alloc(n * 4), mem.alloc(n * 4));
        run(
            ACTIVATION,
            "nk_act_fwd",
            (2, 1, 1),
            (256, 1, 1),
            &mut mem,
            &[ptr(bx), ptr(by), u64p(n), Param::U32(act_code(act))],
        );
        let want = act_forward_expected(act, &x);
        check_close(&format!("{act} forward"), &mem.read_f32(by).unwrap(), &want, |i| {
            act_tol(want[i])
        })
        .unwrap();
        run(
            ACTIVATION,
            "nk_act_bwd",
            (3, 1, 1),
            (256, 1, 1),
            &mut mem,
            &[ptr(bx), ptr(bdy), ptr(bdx), u64p(n), Param::U32(act_code(act))],
        );
        let want_b = act_backward_expected(act, &x, &dy);
        check_close(&format!("{act} backward"), &mem.read_f32(bdx).unwrap(), &want_b, |i| {
            act_backward_tol(act, x[i], dy[i])
        })
        .unwrap();
        // in place: x == y, dy == dx
        let bxi = mem.alloc_f32(&x);
        run(
            ACTIVATION,
            "nk_act_fwd",
            (3, 1, 1),
            (256, 1, 1),
            &mut mem,
            &[ptr(bxi), ptr(bxi), u64p(n), Param::U32(act_code(act))],
        );
        check_close(
            &format!("{act} forward in place"),
            &mem.read_f32(bxi).unwrap(),
            &want,
            |i| act_tol(want[i]),
        )
        .unwrap();
        let bg = mem.alloc_f32(&dy);
        run(
            ACTIVATION,
            "nk_act_bwd",
            (1, 1, 1),
            (256, 1, 1),
            &mut mem,
            &[ptr(bx), ptr(bg), ptr(bg), u64p(n), Param::U32(act_code(act))],
        );
        check_close(
            &format!("{act} backward in place"),
            &mem.read_f32(bg).unwrap(),
            &want_b,
            |i| act_backward_tol(act, x[i], dy[i]),
        )
        .unwrap();
    }
}

#[test]
fn bias_kernels() {
    for (s, (rows, cols)) in row_col_cases()
        .into_iter()
        .filter(|&(r, c)| r * c <= 12_000)
        .enumerate()
    {
        let mut r = KRng::new(20 + s as u64);
        let x = r.vec(rows * cols, -4.0, 4.0);
        let bias = r.vec(cols, -1.0, 1.0);
        for act in [Activation::Identity, Activation::Relu, Activation::GeluErf] {
            let mut mem = Memory::new();
            let (bx, bb, by) = (mem.alloc_f32(&x), mem.alloc_f32(&bias), mem.alloc(rows * cols * 4));
            // x column-major (rs = 1, cs = rows), y row-major; grid.y below rows to run the row loop.
            let grid = (cols.div_ceil(256) as u32, rows.clamp(1, 3) as u32, 1);
            run(
                ACTIVATION,
                "nk_bias_act",
                grid,
                (256, 1, 1),
                &mut mem,
                &[
                    ptr(bx),
                    u64p(rows),
                    u64p(cols),
                    u64p(1),
                    u64p(rows),
                    ptr(bb),
                    ptr(by),
                    u64p(cols),
                    u64p(1),
                    Param::U32(act_code(act)),
                    Param::U32(1),
                ],
            );
            let (mut xw, mut yw) = (x.clone(), vec![0.0f32; rows * cols]);
            reference::bias_add_activation(
                act,
                MatMut::col_major(&mut xw, rows, cols).unwrap(),
                &bias,
                MatMut::new(&mut yw, rows, cols).unwrap(),
            )
            .unwrap();
            check_close("bias_act x", &mem.read_f32(bx).unwrap(), &xw, |_| 0.0).unwrap();
            check_close(&format!("bias_act {act} y"), &mem.read_f32(by).unwrap(), &yw, |i| {
                act_tol(yw[i])
            })
            .unwrap();
        }
        // bias_grad over dy row-major and transposed
        for transposed in [false, true] {
            let mut mem = Memory::new();
            let bdy = mem.alloc_f32(&x);
            let (r_, c_, rs, cs) = if transposed {
                (cols, rows, 1, cols)
            } else {
                (rows, cols, cols, 1)
            };
            let bdb = mem.alloc(c_ * 4);
            run(
                ACTIVATION,
                "nk_bias_grad",
                (c_.div_ceil(32) as u32, 1, 1),
                (32, 8, 1),
                &mut mem,
                &[ptr(bdy), u64p(r_), u64p(c_), u64p(rs), u64p(cs), ptr(bdb)],
            );
            let view = MatRef::from_strides(&x, r_, c_, rs, cs).unwrap();
            let mut want = vec![0.0f32; c_];
            reference::bias_grad(view, &mut want).unwrap();
            let abs: Vec<f64> = (0..c_)
                .map(|j| (0..r_).map(|i| view[(i, j)].abs() as f64).sum())
                .collect();
            check_close("bias_grad", &mem.read_f32(bdb).unwrap(), &want, |j| {
                (r_ as f64 + 1.0) * 6e-8 * abs[j] + 1e-30
            })
            .unwrap();
        }
    }
}

fn xent_case(rows: usize, cols: usize, soft: bool, seed: u64) {
    let mut r = KRng::new(seed);
    let x = r.vec(rows * cols, -10.0, 10.0);
    let labels: Vec<u32> = (0..rows).map(|_| r.below(cols) as u32).collect();
    let mut t = r.vec(rows * cols, 0.0, 1.0);
    for row in t.chunks_mut(cols) {
        let s: f32 = row.iter().sum();
        row.iter_mut().for_each(|v| *v /= s);
    }
    let xv = MatRef::new(&x, rows, cols).unwrap();
    let targets = if soft {
        Targets::Soft(MatRef::new(&t, rows, cols).unwrap())
    } else {
        Targets::Labels(&labels)
    };
    let mut want_d = vec![0.0f32; rows * cols];
    let want = reference::softmax_xent(xv, targets, MatMut::new(&mut want_d, rows, cols).unwrap()).unwrap();
    let mut mem = Memory::new();
    let (bx, bl, bt, bd) = (
        mem.alloc_f32(&x),
        mem.alloc_u32(&labels),
        mem.alloc_f32(&t),
        mem.alloc(rows * cols * 4),
    );
    let scratch = mem.alloc_u32(&[0, 0, u32::MAX, u32::MAX]);
    run(
        SOFTMAX_XENT,
        "nk_softmax_xent",
        (rows.div_ceil(8) as u32, 1, 1),
        (256, 1, 1),
        &mut mem,
        &[
            ptr(bx),
            u64p(rows),
            u64p(cols),
            u64p(cols),
            u64p(1),
            ptr(bl),
            ptr(bt),
            u64p(cols),
            u64p(1),
            ptr(bd),
            u64p(cols),
            u64p(1),
            Param::F32((1.0 / rows as f64) as f32),
            ptr(scratch.slice(0, 8)),
            ptr(scratch.slice(8, 8)),
            Param::U32(soft as u32),
        ],
    );
    let out = mem.read_u32(scratch).unwrap();
    assert_eq!((out[2], out[3]), (u32::MAX, u32::MAX), "no bad label");
    let loss = f64::from_bits(u64::from(out[0]) | (u64::from(out[1]) << 32));
    assert!(
        (loss - want as f64).abs() <= 2e-5 * (1.0 + want.abs() as f64),
        "loss {loss} vs {want} ({rows}x{cols} soft={soft})"
    );
    check_close("dlogits", &mem.read_f32(bd).unwrap(), &want_d, |_| 5e-6 / rows as f64).unwrap();
    // softmax and log-softmax through a transposed x
    let xt: Vec<f32> = (0..cols)
        .flat_map(|j| (0..rows).map(move |i| (i, j)))
        .map(|(i, j)| x[i * cols + j])
        .collect();
    let bxt = mem.alloc_f32(&xt);
    for log in [false, true] {
        let by = mem.alloc(rows * cols * 4);
        run(
            SOFTMAX_XENT,
            "nk_softmax",
            (rows.div_ceil(8) as u32, 1, 1),
            (256, 1, 1),
            &mut mem,
            &[
                ptr(bxt),
                u64p(rows),
                u64p(cols),
                u64p(1),
                u64p(rows),
                ptr(by),
                u64p(cols),
                u64p(1),
                Param::U32(log as u32),
            ],
        );
        let mut want_y = vec![0.0f32; rows * cols];
        if log {
            reference::log_softmax(xv, MatMut::new(&mut want_y, rows, cols).unwrap()).unwrap();
        } else {
            reference::softmax(xv, MatMut::new(&mut want_y, rows, cols).unwrap()).unwrap();
        }
        check_close(
            &format!("softmax log={log}"),
            &mem.read_f32(by).unwrap(),
            &want_y,
            |i| 4e-6 * (1.0 + want_y[i].abs() as f64),
        )
        .unwrap();
    }
}

#[test]
fn softmax_xent_kernels() {
    for (i, (rows, cols)) in row_col_cases()
        .into_iter()
        .filter(|&(r, c)| r * c <= 12_000)
        .enumerate()
    {
        xent_case(rows, cols, false, i as u64);
        xent_case(rows, cols, true, 100 + i as u64);
    }
    // An out-of-range label is flagged with its row.
    let mut mem = Memory::new();
    let (bx, bl, bd) = (mem.alloc_f32(&[0.0; 6]), mem.alloc_u32(&[0, 3]), mem.alloc(24));
    let scratch = mem.alloc_u32(&[0, 0, u32::MAX, u32::MAX]);
    run(
        SOFTMAX_XENT,
        "nk_softmax_xent",
        (1, 1, 1),
        (256, 1, 1),
        &mut mem,
        &[
            ptr(bx),
            u64p(2),
            u64p(3),
            u64p(3),
            u64p(1),
            ptr(bl),
            Param::U64(0),
            u64p(0),
            u64p(0),
            ptr(bd),
            u64p(3),
            u64p(1),
            Param::F32(0.5),
            ptr(scratch.slice(0, 8)),
            ptr(scratch.slice(8, 8)),
            Param::U32(0),
        ],
    );
    // (row 1 << 32) | label 3
    assert_eq!(mem.read_u32(scratch).unwrap()[2..], [3, 1]);
}

/// A chunk table as src/cuda/ops.rs builds it (8192-element chunks, 48 bytes each).
fn chunk_table(mem: &mut Memory, tensors: &[[Option<Buffer>; 4]]) -> (Buffer, u32) {
    let mut words: Vec<u32> = Vec::new();
    for t in tensors {
        let len = t[0].unwrap().len / 4;
        let mut start = 0;
        while start < len {
            let count = 8192.min(len - start);
            for b in t {
                let a = b.map_or(0, |b| b.addr + (start * 4) as u64);
                words.extend([a as u32, (a >> 32) as u32]);
            }
            words.extend([count as u32, 0, 0, 0]);
            start += count;
        }
    }
    let n = words.len() / 12;
    (mem.alloc_u32(&words), n as u32)
}

#[test]
fn optimizer_kernels() {
    let sizes = [1usize, 300, 8193];
    let mut r = KRng::new(9);
    let cfgs = [
        AdamConfig::default(),
        AdamConfig::adamw(),
        AdamConfig::keras(),
        AdamConfig {
            weight_decay: 0.1,
            decay: WeightDecay::L2,
            epsilon: AdamEpsilon::PyTorch,
            ..AdamConfig::default()
        },
    ];
    for cfg in cfgs {
        let host: Vec<[Vec<f32>; 4]> = sizes
            .iter()
            .map(|&n| {
                [
                    r.vec(n, -1.0, 1.0),
                    r.vec(n, -0.1, 0.1),
                    r.vec(n, -0.01, 0.01),
                    r.vec(n, 0.0, 1e-3),
                ]
            })
            .collect();
        let mut mem = Memory::new();
        let bufs: Vec<[Buffer; 4]> = host
            .iter()
            .map(|t| {
                [
                    mem.alloc_f32(&t[0]),
                    mem.alloc_f32(&t[1]),
                    mem.alloc_f32(&t[2]),
                    mem.alloc_f32(&t[3]),
                ]
            })
            .collect();
        let (table, chunks) = chunk_table(&mut mem, &bufs.iter().map(|b| b.map(Some)).collect::<Vec<_>>());
        for step in 1..=2u64 {
            let (c1, c2) = cfg.bias_corrections(step);
            let lr = cfg.lr as f64;
            let flags =
                u32::from(cfg.decay == WeightDecay::Decoupled) | (u32::from(cfg.epsilon == AdamEpsilon::Keras) << 1);
            run(
                OPTIM,
                "nk_adam",
                (chunks, 1, 1),
                (256, 1, 1),
                &mut mem,
                &[
                    ptr(table),
                    Param::F32(cfg.lr),
                    Param::F32(cfg.beta1),
                    Param::F32(cfg.beta2),
                    Param::F32((1.0 - cfg.beta1 as f64) as f32),
                    Param::F32((1.0 - cfg.beta2 as f64) as f32),
                    Param::F32(cfg.eps),
                    Param::F32(cfg.weight_decay),
                    Param::F32((lr * cfg.weight_decay as f64) as f32),
                    Param::F32((1.0 / c1) as f32),
                    Param::F32((1.0 / c2.sqrt()) as f32),
                    Param::F32((lr * c2.sqrt() / c1) as f32),
                    Param::U32(flags),
                ],
            );
        }
        for (t, b) in host.iter().zip(&bufs) {
            let (mut w, mut m, mut v) = (t[0].clone(), t[2].clone(), t[3].clone());
            for step in 1..=2u64 {
                reference::adam_step(&cfg, step, &mut w, &t[1], &mut m, &mut v).unwrap();
            }
            check_close("adam w", &mem.read_f32(b[0]).unwrap(), &w, |i| {
                5e-7 * w[i].abs() as f64 + 3e-5 * cfg.lr as f64
            })
            .unwrap();
            check_close("adam m", &mem.read_f32(b[2]).unwrap(), &m, |i| {
                5e-7 * (m[i].abs() + t[1][i].abs()) as f64
            })
            .unwrap();
            check_close("adam v", &mem.read_f32(b[3]).unwrap(), &v, |i| {
                1e-6 * (v[i] + t[1][i] * t[1][i]) as f64
            })
            .unwrap();
        }
    }
    // SGD
    let cfg = SgdConfig {
        lr: 0.05,
        momentum: 0.9,
        weight_decay: 0.01,
    };
    let (w0, g, b0) = (r.vec(9000, -1.0, 1.0), r.vec(9000, -1.0, 1.0), r.vec(9000, -1.0, 1.0));
    let mut mem = Memory::new();
    let (bw, bg, bb) = (mem.alloc_f32(&w0), mem.alloc_f32(&g), mem.alloc_f32(&b0));
    let (table, chunks) = chunk_table(&mut mem, &[[Some(bw), Some(bg), Some(bb), None]]);
    run(
        OPTIM,
        "nk_sgd",
        (chunks, 1, 1),
        (256, 1, 1),
        &mut mem,
        &[
            ptr(table),
            Param::F32(cfg.lr),
            Param::F32(cfg.momentum),
            Param::F32(cfg.weight_decay),
        ],
    );
    let (mut w, mut b) = (w0.clone(), b0.clone());
    reference::sgd_step(&cfg, &mut w, &g, &mut b).unwrap();
    check_close("sgd w", &mem.read_f32(bw).unwrap(), &w, |i| {
        1e-6 * (1.0 + w[i].abs() as f64)
    })
    .unwrap();
    check_close("sgd buf", &mem.read_f32(bb).unwrap(), &b, |i| {
        1e-6 * (1.0 + b[i].abs() as f64)
    })
    .unwrap();
    // Sum of squares, then clipping (scale applied) and a second clip that does nothing.
    let gs: Vec<Vec<f32>> = sizes.iter().map(|&n| r.vec(n, -1.0, 1.0)).collect();
    let mut mem = Memory::new();
    let bufs: Vec<Buffer> = gs.iter().map(|g| mem.alloc_f32(g)).collect();
    let (table, chunks) = chunk_table(
        &mut mem,
        &bufs.iter().map(|&b| [Some(b), None, None, None]).collect::<Vec<_>>(),
    );
    let acc = mem.alloc_u32(&[0, 0]);
    run(
        OPTIM,
        "nk_sumsq",
        (chunks, 1, 1),
        (256, 1, 1),
        &mut mem,
        &[ptr(table), ptr(acc)],
    );
    let a = mem.read_u32(acc).unwrap();
    let norm = f64::from_bits(u64::from(a[0]) | (u64::from(a[1]) << 32)).sqrt();
    let refs: Vec<&[f32]> = gs.iter().map(|g| g.as_slice()).collect();
    let want = reference::global_norm(&refs) as f64;
    assert!((norm - want).abs() <= 1e-6 * want, "{norm} vs {want}");
    run(
        OPTIM,
        "nk_clip_scale",
        (chunks, 1, 1),
        (256, 1, 1),
        &mut mem,
        &[ptr(table), ptr(acc), Param::F32(1.5)],
    );
    let mut host = gs.clone();
    let mut hrefs: Vec<&mut [f32]> = host.iter_mut().map(|g| g.as_mut_slice()).collect();
    reference::clip_global_norm(&mut hrefs, 1.5).unwrap();
    for (b, h) in bufs.iter().zip(&host) {
        check_close("clipped", &mem.read_f32(*b).unwrap(), h, |i| {
            1e-6 * h[i].abs() as f64 + 1e-30
        })
        .unwrap();
    }
}

/// Runs one GEMM case through the kernels as the host code does (SGEMM with its
/// layout flags; bf16/f16 with packing when the layout is not the direct one),
/// optionally with the fused bias + activation epilogue.
fn gemm_case(case: &GemmCase, seed: u64, kind: &str, epilogue: Option<Activation>) {
    let (m, n, k) = (case.m, case.n, case.k);
    // "tf32-rounded": inputs not representable in tf32, so the kernel's rounding shows.
    let rounded = kind == "tf32-rounded";
    let kind = if rounded { "tf32" } else { kind };
    let mut d = gemm_data(case, seed, !rounded);
    let (mut want, scale) = gemm_expected(case, &d);
    let mut want_y = vec![0.0f32; m * n];
    if let Some(act) = epilogue {
        reference::bias_add_activation(
            act,
            MatMut::new(&mut want, m, n).unwrap(),
            &d.bias,
            MatMut::new(&mut want_y, m, n).unwrap(),
        )
        .unwrap();
    }
    if case.alpha == 0.0 {
        d.a.iter_mut().for_each(|x| *x = f32::NAN);
        d.b.iter_mut().for_each(|x| *x = f32::NAN);
    }
    let k_eff = if case.alpha == 0.0 { 0 } else { k };
    let mut mem = Memory::new();
    let bc = mem.alloc_f32(&d.c);
    let bbias = mem.alloc_f32(&d.bias);
    let by = mem.alloc(m * n * 4);
    let (pbias, py) = match epilogue {
        Some(_) => (ptr(bbias), ptr(by)),
        None => (Param::U64(0), Param::U64(0)),
    };
    let act = Param::U32(act_code(epilogue.unwrap_or(Activation::Identity)));
    let grid = (n.div_ceil(128) as u32, m.div_ceil(128) as u32, 1);
    // strides of A (m×k) and B (k×n) as stored
    let (ars, acs) = if case.ta { (1, m) } else { (k, 1) };
    let (brs, bcs) = if case.tb { (1, k) } else { (n, 1) };
    let rel;
    if kind == "f32" {
        rel = 6e-8;
        let (ba, bb) = (mem.alloc_f32(&d.a), mem.alloc_f32(&d.b));
        let flags = sgemm_flags((ars, acs), (brs, bcs), ba.addr, bb.addr);
        run(
            GEMM_F32,
            "nk_sgemm",
            grid,
            (256, 1, 1),
            &mut mem,
            &[
                ptr(ba),
                ptr(bb),
                ptr(bc),
                Param::U32(m as u32),
                Param::U32(n as u32),
                Param::U32(k_eff as u32),
                u64p(ars),
                u64p(acs),
                u64p(brs),
                u64p(bcs),
                u64p(n),
                u64p(1),
                Param::F32(case.alpha),
                Param::F32(case.beta),
                pbias,
                py,
                u64p(n),
                u64p(1),
                act,
                Param::U32(flags),
            ],
        );
    } else {
        rel = 2.5e-7;
        let alloc16 = |mem: &mut Memory, v: &[f32]| {
            if kind == "tf32" {
                return mem.alloc_f32(v);
            }
            if kind == "bf16" {
                mem.alloc_bf16(&v.iter().map(|&x| bf16::from_f32(x)).collect::<Vec<_>>())
            } else {
                mem.alloc_f16(&v.iter().map(|&x| f16::from_f32(x)).collect::<Vec<_>>())
            }
        };
        let (ba, bb) = (alloc16(&mut mem, &d.a), alloc16(&mut mem, &d.b));
        // Direct when K is contiguous with rows 8-aligned, else pack (nk_pack16).
        let pack = |mem: &mut Memory, src: Buffer, rows: usize, cols: usize, rs: usize, cs: usize| -> (Buffer, usize) {
            let (align, esize, packer) = if kind == "tf32" {
                (4, 4, "nk_pack32")
            } else {
                (8, 2, "nk_pack16")
            };
            if (cs == 1 || k_eff <= 1) && rs % align == 0 && rs >= k_eff.max(1) {
                return (src, rs);
            }
            let ld = k_eff.next_multiple_of(align).max(align);
            let dst = mem.alloc_bytes(&vec![0u8; rows * ld * esize]);
            if k_eff > 0 {
                let grid = (
                    cols.div_ceil(256).clamp(1, 65535) as u32,
                    rows.clamp(1, 65535) as u32,
                    1,
                );
                run(
                    GEMM_TC,
                    packer,
                    grid,
                    (256, 1, 1),
                    mem,
                    &[ptr(src), u64p(rows), u64p(cols), u64p(rs), u64p(cs), ptr(dst), u64p(ld)],
                );
            }
            (dst, ld)
        };
        let (pa, lda) = pack(&mut mem, ba, m, k_eff, ars, acs);
        // Bᵀ (n×k): element (j, p) at b[p*brs + j*bcs]
        let (pb, ldb) = pack(&mut mem, bb, n, k_eff, bcs, brs);
        let name = match kind {
            "bf16" => "nk_gemm_bf16",
            "f16" => "nk_gemm_f16",
            _ => "nk_gemm_tf32",
        };
        run(
            GEMM_TC,
            name,
            grid,
            (256, 1, 1),
            &mut mem,
            &[
                ptr(pa),
                ptr(pb),
                ptr(bc),
                Param::U32(m as u32),
                Param::U32(n as u32),
                Param::U32(k_eff as u32),
                u64p(lda),
                u64p(ldb),
                u64p(n),
                u64p(1),
                Param::F32(case.alpha),
                Param::F32(case.beta),
                pbias,
                py,
                u64p(n),
                u64p(1),
                act,
            ],
        );
    }
    // tf32 rounds each input by up to 2^-11: products off by 2^-10 of |a||b| at most.
    let extra = if rounded { 2f64.powi(-10) } else { 0.0 };
    let tol = |i: usize| ((k as f64 + 3.0) * rel + extra) * (scale[i] + d.bias[i % n].abs() as f64) + 1e-30;
    check_close(
        &format!("{kind} gemm C {case:?} epilogue {epilogue:?}"),
        &mem.read_f32(bc).unwrap(),
        &want,
        tol,
    )
    .unwrap();
    if epilogue.is_some() {
        check_close(
            &format!("{kind} gemm Y {case:?}"),
            &mem.read_f32(by).unwrap(),
            &want_y,
            |i| 1.2 * tol(i) + act_tol(want_y[i]),
        )
        .unwrap();
    }
}

/// GEMM cases small enough for the CPU executor: several 128×128 tiles and
/// ragged edges stay in; the largest shapes are left to the GPU tests.
fn small_gemm_cases() -> Vec<GemmCase> {
    gemm_cases()
        .into_iter()
        .filter(|c| c.m * c.n * c.k.max(1) <= 1_400_000)
        .collect()
}

#[test]
fn sgemm_kernel() {
    for (i, case) in small_gemm_cases().iter().enumerate() {
        gemm_case(case, i as u64, "f32", None);
    }
}

#[test]
fn sgemm_kernel_fused_epilogue() {
    let case = GemmCase {
        m: 129,
        n: 131,
        k: 9,
        ta: false,
        tb: true,
        alpha: 1.5,
        beta: 0.5,
    };
    gemm_case(&case, 1, "f32", Some(Activation::GeluTanh));
    gemm_case(&case, 2, "f32", Some(Activation::Relu));
}

#[test]
fn tensor_core_gemm_kernels() {
    for (i, case) in small_gemm_cases().iter().enumerate() {
        gemm_case(case, i as u64, "bf16", None);
        gemm_case(case, i as u64, "f16", None);
    }
    let case = GemmCase {
        m: 130,
        n: 129,
        k: 40,
        ta: false,
        tb: true,
        alpha: 1.0,
        beta: 0.25,
    };
    gemm_case(&case, 3, "bf16", Some(Activation::Sigmoid));
}

#[test]
fn tf32_gemm_kernel() {
    for (i, case) in small_gemm_cases().iter().enumerate() {
        gemm_case(case, i as u64, "tf32", None);
        gemm_case(case, 40 + i as u64, "tf32-rounded", None);
    }
    let case = GemmCase {
        m: 129,
        n: 130,
        k: 37,
        ta: true,
        tb: false,
        alpha: 1.0,
        beta: 0.0,
    };
    gemm_case(&case, 5, "tf32", Some(Activation::GeluErf));
}

fn prop_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16)
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(prop_cases()))]

    /// Random shapes (one or two tiles each way, ragged edges), layouts and scalars.
    #[test]
    fn gemm_kernels_random_shapes(m in 1usize..200, n in 1usize..200, k in 0usize..48, ta: bool, tb: bool,
                                  beta_zero: bool, seed: u64) {
        let case = GemmCase { m, n, k, ta, tb, alpha: 0.5, beta: if beta_zero { 0.0 } else { -1.25 } };
        gemm_case(&case, seed, "f32", None);
        gemm_case(&case, seed, "bf16", None);
        gemm_case(&case, seed, "f16", Some(Activation::Tanh));
        gemm_case(&case, seed, "tf32-rounded", None);
    }

    #[test]
    fn softmax_xent_random_shapes(rows in 1usize..40, cols in 1usize..100, soft: bool, seed: u64) {
        xent_case(rows, cols, soft, seed);
    }
}
