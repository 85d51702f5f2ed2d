//! The parser answers every input with a module or an error, never a panic:
//! mutated copies of a module that uses most of the grammar.

mod common;
use common::Rng;

const SEED_MODULE: &str = r#"
.version 8.0
.target sm_80
.address_size 64
.shared .align 16 .b8 glob[256];
.func (.reg .f32 r) helper(.reg .f32 x, .reg .b32 n)
{
    .reg .pred big;
    setp.gt.u32 big, n, 3;
    @big bra L;
    mul.rn.f32 r, x, 0f40000000;
    ret;
L:
    mov.f32 r, x;
    ret;
}
.visible .entry k(.param .u64 p, .param .align 8 .b8 agg[16], .param .f32 s)
.maxntid 256, 1, 1
{
    .reg .pred %p<4>;
    .reg .b16 %h<4>;
    .reg .b32 %r<16>;
    .reg .f32 %f<16>;
    .reg .b64 %rd<8>;
    .shared .align 4 .b32 buf[64];
    .extern .shared .align 16 .b8 dyn[];
    .local .align 8 .b8 loc[16];
    ld.param.u64 %rd1, [p];
    ld.param.v2.u32 {%r1, %r2}, [agg+8];
    mov.u32 %r3, %tid.x;
    setp.lt.and.u32 %p1|%p2, %r3, 17, !%p3;
    @!%p1 bra DONE;
    cvta.to.global.u64 %rd2, %rd1;
    mul.wide.u32 %rd3, %r3, 4;
    add.s64 %rd4, %rd2, %rd3;
    ld.global.nc.f32 %f1, [%rd4+-4];
    call (%f2), helper, (%f1, %r3);
    cvt.rn.bf16x2.f32 %r4, %f1, %f2;
    mov.b32 {%h1, %h2}, %r4;
    shfl.sync.bfly.b32 %r5|%p2, %r4, 1, 0x1f, -1;
    st.shared.v2.f32 [buf+8], {%f1, 0f3F800000};
    bar.sync 0;
    mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%f3, %f4, %f5, %f6}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f3, %f4, %f5, %f6};
    cp.async.cg.shared.global [dyn], [%rd4], 16, %r7;
    cp.async.wait_all;
    atom.global.cas.b32 %r8, [%rd4], 1, 2;
    st.global.f32 [%rd4], %f2;
DONE:
    ret;
}
"#;

#[test]
fn mutated_modules_parse_or_fail_cleanly() {
    nnkern_ptx_exec::Module::parse(SEED_MODULE).unwrap_or_else(|e| panic!("{e}"));
    let pieces = [
        "{",
        "}",
        "[",
        "]",
        "(",
        ")",
        ",",
        ";",
        ":",
        "@",
        "!",
        "|",
        "<",
        ">",
        "-",
        "+",
        "%r",
        "%r99",
        "0x",
        "0f",
        "99999999999999999999",
        "4294967296",
        ".v4",
        ".shared",
        ".reg .b32 %q<4000000>;",
        "[%rd1+",
        "ret;",
        "\n",
        ".align 3",
        "bra DONE;",
        "call",
        "mov.b64 {}, %rd1;",
        "//",
        "/*",
        "\"",
    ];
    let bytes = SEED_MODULE.as_bytes();
    let mut rng = Rng(0x5eed);
    let n = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3000);
    for _ in 0..n {
        let mut s = bytes.to_vec();
        for _ in 0..1 + rng.u32() % 3 {
            let at = rng.u32() as usize % s.len();
            match rng.u32() % 3 {
                0 => {
                    let len = (rng.u32() as usize % 12).min(s.len() - at);
                    s.drain(at..at + len);
                }
                1 => {
                    let p = pieces[rng.u32() as usize % pieces.len()].as_bytes();
                    s.splice(at..at, p.iter().copied());
                }
                _ => {
                    let from = rng.u32() as usize % s.len();
                    let len = (rng.u32() as usize % 40).min(s.len() - from);
                    let chunk: Vec<u8> = s[from..from + len].to_vec();
                    s.splice(at..at, chunk);
                }
            }
            if s.is_empty() {
                break;
            }
        }
        let text = String::from_utf8_lossy(&s);
        let _ = nnkern_ptx_exec::Module::parse(&text);
    }
}
