//! Schedules: parsing and printing, typed errors for illegal directives, and
//! every legal schedule computing what the reference evaluator computes —
//! tails, size-1 dimensions, padding and scatter included.

mod common;
use common::*;
use einjit::schedule::{self, Schedule};
use einjit::{check_source, ir, lower};
use proptest::prelude::*;

/// Outputs of `src` under `sched` (one schedule for the first statement),
/// through lowering, the realising passes and the interpreter; also the dump.
fn scheduled(src: &str, inputs: &Inputs, sched: &str) -> Result<(Outputs, String), String> {
    let program = check_source(src, &shapes(inputs)).map_err(|e| e.to_string())?;
    let sched: Schedule = sched.parse().map_err(|e: einjit::Error| e.to_string())?;
    let specs = program
        .statements
        .iter()
        .enumerate()
        .map(|(n, st)| {
            let s = if n == 0 {
                sched.clone()
            } else {
                Schedule::default()
            };
            schedule::plan(&program, st, &s)
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    let func = lower::lower_with(&program, &specs);
    ir::verify(&func).map_err(|e| format!("built nest: {e}\n{func}"))?;
    let func = schedule::realise(&func).map_err(|e| e.to_string())?;
    ir::verify(&func).map_err(|e| format!("realised nest: {e}\n{func}"))?;
    let out = interpret(&program, &func, inputs);
    Ok((out, func.to_string()))
}

type Outputs = std::collections::HashMap<String, ArrayD<f32>>;

fn check(src: &str, inputs: &Inputs, sched: &str) -> String {
    let (got, dump) = scheduled(src, inputs, sched).unwrap_or_else(|e| panic!("{sched}: {e}"));
    let want = reference(src, inputs);
    for (name, w) in &want {
        assert_close(&got[name], w, 1e-4);
    }
    dump
}

#[test]
fn schedules_print_and_parse() {
    let text = "split i 4; reorder io jo ii ji; vectorize ji; unroll ii; parallel io; peel jo; accumulate k";
    let s: Schedule = text.parse().unwrap();
    assert_eq!(s.0.len(), 7);
    assert_eq!(s.to_string(), text);
    assert_eq!(s.to_string().parse::<Schedule>().unwrap(), s);
    let e = "split i".parse::<Schedule>().unwrap_err().to_string();
    assert!(e.contains("expected `split LOOP FACTOR`"), "{e}");
    let e = "tile i 4".parse::<Schedule>().unwrap_err().to_string();
    assert!(e.contains("unknown directive `tile`"), "{e}");
}

fn gemm_inputs(m: usize, n: usize, k: usize) -> Inputs {
    inputs(&[("A", rand(&[m, k], 1)), ("B", rand(&[k, n], 2))])
}

const GEMM: &str = "O[i,j] = A[i,k] * B[k,j]";

#[test]
fn illegal_directives_are_typed_errors_naming_the_loop() {
    let i = gemm_inputs(8, 8, 8);
    let err = |s: &str| scheduled(GEMM, &i, s).unwrap_err();
    assert!(err("split q 4").contains("no loop `q` (loops: i, j, k)"));
    assert!(err("split j 1").contains("the factor must be at least 2"));
    assert!(
        err("split j 4; vectorize ji").contains("cannot vectorize `ji`: only the innermost loop")
    );
    assert!(err("reorder k j; split j 8; vectorize ji").contains("it has 8 iterations"));
    assert!(err("parallel k").contains("cannot parallelize `k`: it is a reduction loop"));
    let e = err("reorder j k; split k 4; vectorize ki");
    assert!(
        e.contains(
            "cannot vectorize `ki`: the load from B does not step forward along its last dimension"
        ),
        "{e}"
    );
    let a = inputs(&[("A", rand(&[8, 8], 1))]);
    let e = scheduled(
        "O[j,i] = A[i,j]",
        &a,
        "reorder i j; split j 4; vectorize ji",
    )
    .unwrap_err();
    assert!(
        e.contains(
            "cannot vectorize `ji`: the store to O neither steps forward along its last dimension with it nor is a reduction over it"
        ),
        "{e}"
    );
    let big = gemm_inputs(100, 4, 4);
    let e = scheduled(GEMM, &big, "unroll i").unwrap_err();
    assert!(
        e.contains("cannot unroll `i`: 100 iterations (at most 64)"),
        "{e}"
    );
    // Nested unrolled loops multiply: a 64-cube GEMM wholly unrolled would
    // be 262144 copies of the body (it took minutes to compile).
    let cube = gemm_inputs(64, 64, 64);
    let e = scheduled(GEMM, &cube, "unroll i; unroll j; unroll k").unwrap_err();
    assert!(
        e.contains(
            "unrolling `i`, `j`, `k` together copies the loop body 262144 times (at most 1024)"
        ),
        "{e}"
    );
    assert!(scheduled(GEMM, &cube, "split k 4; unroll j; unroll ki").is_ok());
    let e = err("split i 4; split i 2");
    assert!(e.contains("no loop `i`"), "{e}");
    // A scatter: different `i` write the same elements.
    let t = inputs(&[
        ("I", rand(&[5], 1)),
        ("W", rand(&[4], 2)),
        ("O", rand(&[10], 3)),
    ]);
    let e = scheduled("O[2*i+rx-1] += I[i] * W[rx]", &t, "parallel i").unwrap_err();
    assert!(
        e.contains("cannot parallelize `i`: different iterations write the same output elements"),
        "{e}"
    );
    // Errors render with the statement's line.
    assert!(e.contains("1 | O[2*i+rx-1] += I[i] * W[rx]"), "{e}");
    // The middle loop of a double split writes distinct rows
    // (`i = 8*io + 4*iio + iii`): parallel is fine there.
    let dump = check(
        GEMM,
        &gemm_inputs(16, 16, 16),
        "split i 8; split ii 4; parallel iio",
    );
    assert!(dump.contains("for iio in 0..2 parallel"), "{dump}");
    // Packing: a read of the statement, once, and no blow-up of memory.
    assert!(err("pack C").contains("`pack C`: the statement reads no tensor `C`"));
    let e = err("accumulate k; accumulate k");
    assert!(
        e.contains("cannot accumulate across `k`: it is already accumulating"),
        "{e}"
    );
    let e = err("parallel i; accumulate i");
    assert!(
        e.contains("cannot accumulate across `i`: it is parallel"),
        "{e}"
    );
    assert!(err("pack O").contains("cannot pack `O`: it is the statement's output"));
    let e = scheduled("O[i,j] = A[i,k] * A[k,j]", &i, "pack A").unwrap_err();
    assert!(
        e.contains("cannot pack `A`: it is read at more than one index"),
        "{e}"
    );
    let c = inputs(&[("I", rand(&[10], 1)), ("W", rand(&[3], 2))]);
    let e = scheduled("O[i] = I[i+rx] * W[rx]", &c, "pack I").unwrap_err();
    assert!(
        e.contains(
            "cannot pack `I`: its packed copy would hold 24 elements, more than twice the 10 it reads"
        ),
        "{e}"
    );
}

#[test]
fn packed_operands_are_read_in_loop_order() {
    // B's panels: `B+pack[jo, k, jio, jii]` holds B[k, 8*jo + 4*jio + jii],
    // so the register tile's loads step by 8 floats along k.
    let sched = "split j 8; split ji 4; split i 6; reorder io jo k ii jio jii; unroll ii; unroll jio; vectorize jii; accumulate k; pack B";
    for (m, n, k) in [(12, 16, 5), (7, 17, 3), (1, 9, 1), (13, 30, 7)] {
        let dump = check(GEMM, &gemm_inputs(m, n, k), sched);
        assert!(
            dump.contains(&format!("B+pack: temp f32[{}, {k}, 2, 4]", n.div_ceil(8))),
            "{dump}"
        );
        if k > 1 {
            assert!(
                dump.contains("B+pack[jo, k, jio, 0]x4 = B[k, 8*jo + 4*jio]x4"),
                "{dump}"
            );
        }
        if m % 6 == 0 && n % 8 == 0 {
            assert!(
                dump.contains("acc6 += splat(A[6*io, k]) * B+pack[jo, k, 1, 0]x4"),
                "{dump}"
            );
        }
    }
    // Packing A too (by rows of the tile), and a split reduction.
    let sched = "split k 2; split i 3; reorder io j ko ii ki; pack A; pack B";
    let dump = check(GEMM, &gemm_inputs(7, 5, 9), sched);
    assert!(dump.contains("A+pack: temp f32[3, 5, 3, 2]"), "{dump}");
}

#[test]
fn vectorized_reductions_keep_partial_sums_in_lanes() {
    // GEMV: rows of vector partial sums across `ko`, lanes combined once.
    let sched = "split k 8; split ki 4; split i 4; reorder io ko ii kio kii; unroll ii; unroll kio; vectorize kii; accumulate ko";
    for (m, k) in [(8, 16), (10, 19), (1, 8), (5, 33)] {
        let i = inputs(&[("A", rand(&[m, k], 1)), ("B", rand(&[k], 2))]);
        let dump = check("O[i] = A[i,k] * B[k]", &i, sched);
        if k < 16 {
            // One trip of `ko`: the loop is gone, and with it the registers.
            assert!(
                dump.contains("O[4*io] += hsum(A[4*io, 0]x4 * B[0]x4)"),
                "{dump}"
            );
            continue;
        }
        assert!(dump.contains("acc0 = splat(0.0)"), "{dump}");
        assert!(
            dump.contains("acc0 += A[4*io, 8*ko]x4 * B[8*ko]x4"),
            "{dump}"
        );
        assert!(dump.contains("O[4*io] += hsum(acc0)"), "{dump}");
    }
    // A dot product: the accumulating loop is the whole nest, so its
    // registers and the loop are kept together in one compiled function.
    let i = inputs(&[("A", rand(&[13], 1)), ("B", rand(&[13], 2))]);
    let dump = check(
        "O[0] = A[k] * B[k]",
        &i,
        "split k 4; vectorize ki; accumulate ko",
    );
    assert!(
        dump.contains("for once in 0..1:\n    acc0 = splat(0.0)"),
        "{dump}"
    );
    // Max over a vectorized reduction starts from -inf in every lane.
    let i = inputs(&[("I", rand(&[3, 12], 3))]);
    let dump = check(
        "O[c] max= I[c, x]",
        &i,
        "split x 4; vectorize xi; accumulate xo",
    );
    assert!(dump.contains("acc0 = splat(-inf)"), "{dump}");
    assert!(dump.contains("O[c] max= hmax(acc0)"), "{dump}");
    // Without accumulation the lanes combine at every step.
    let dump = check("O[c] max= I[c, x]", &i, "split x 4; vectorize xi");
    assert!(dump.contains("O[c] max= hmax(I[c, 4*xo]x4)"), "{dump}");
}

/// [`check`], and the JIT's outputs on one and two threads against the
/// reference too (within `tolerance`).
fn check_jitted(src: &str, inputs: &Inputs, sched: &str, tolerance: f32) -> String {
    let dump = check(src, inputs, sched);
    let want = reference(src, inputs);
    for got in jitted(src, inputs, sched) {
        for (name, w) in &want {
            assert_close(&got[name], w, tolerance);
        }
    }
    dump
}

#[test]
fn an_unrolled_reduction_takes_turns_among_registers() {
    // One GEMV row at a time, eight vectors per step: eight partial sums
    // (one chain of FMAs each), added together after the loop.
    let sched = "split k 32; split ki 4; reorder i ko kio kii; unroll kio; vectorize kii; accumulate ko; parallel i";
    for (m, k) in [(3, 64), (5, 75), (2, 200)] {
        let i = inputs(&[("A", rand(&[m, k], 1)), ("B", rand(&[k], 2))]);
        let dump = check_jitted("O[i] = A[i,k] * B[k]", &i, sched, 1e-4);
        assert!(dump.contains("acc7 = splat(0.0)"), "{dump}");
        assert!(
            dump.contains("acc7 += A[i, 32*ko + 28]x4 * B[32*ko + 28]x4"),
            "{dump}"
        );
        assert!(
            dump.contains("acc0 += acc7\n    O[i] += hsum(acc0)"),
            "{dump}"
        );
    }
    // Max: the extra registers start at -inf; a scalar tile (no vector)
    // takes turns the same way, starting from the identity constant.
    let i = inputs(&[("I", rand(&[3, 37], 3))]);
    for (sched, first, turn) in [
        (
            "split x 16; split xi 4; reorder c xo xio xii; unroll xio; vectorize xii; accumulate xo",
            "acc3 = splat(-inf)",
            "acc0 max= acc3\n    O[c] max= hmax(acc0)",
        ),
        (
            "split x 4; reorder c xo xi; unroll xi; accumulate xo",
            "acc3 = -inf",
            "acc0 max= acc3\n    O[c] = acc0",
        ),
    ] {
        let dump = check_jitted("O[c] max= I[c, x]", &i, sched, 0.0);
        assert!(dump.contains(first), "{dump}");
        assert!(dump.contains(turn), "{dump}");
    }
    // A tile with enough registers already (8 rows) keeps one per element;
    // so does a loop of one pass (straight-line code).
    for (m, k, sched, first_copy) in [
        (8, 64, "split k 8; split ki 4; split i 8; reorder io ko ii kio kii; unroll ii; unroll kio; vectorize kii; accumulate ko", "acc8"),
        (2, 16, "split k 16; split ki 4; reorder i ko kio kii; unroll kio; vectorize kii; accumulate ko", "acc1"),
    ] {
        let i = inputs(&[("A", rand(&[m, k], 1)), ("B", rand(&[k], 2))]);
        let dump = check("O[i] = A[i,k] * B[k]", &i, sched);
        assert!(!dump.contains(first_copy), "{dump}");
    }
}

#[test]
fn register_blocked_gemm_with_tails() {
    // 4x8 tile: i by 4 (unrolled), j by 8 = 2 unrolled vectors, k accumulating.
    let sched = "split i 4; split j 8; split ji 4; reorder io jo k ii jio jii; unroll ii; unroll jio; vectorize jii; accumulate k";
    for (m, n, k) in [(8, 16, 5), (7, 17, 3), (1, 9, 1), (13, 24, 7)] {
        let dump = check(GEMM, &gemm_inputs(m, n, k), sched);
        if m % 4 == 0 && n % 8 == 0 {
            assert!(dump.contains("acc0 = splat(0.0)"), "{dump}");
            assert!(
                dump.contains("acc0 += splat(A[4*io, k]) * B[k, 8*jo]x4"),
                "{dump}"
            );
            assert!(dump.contains("O[4*io + 3, 8*jo + 4]x4 = acc7"), "{dump}");
        }
    }
}

#[test]
fn padded_convolution_peels_its_boundaries() {
    let i = input_and_weights(&[1, 3, 9, 10], &[5, 3, 3, 3]);
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..9, j in 0..10";
    let sched = "split j 4; reorder b k i jo c rx ry ji; vectorize ji; accumulate c";
    let dump = check(src, &i, sched);
    // The interior of `jo` (one trip, so inlined) runs vector code in
    // registers; its boundaries run scalar.
    // The nest starts each output element at zero itself (no separate fill).
    assert!(dump.contains("acc0 = splat(0.0)"), "{dump}");
    assert!(dump.contains("O[b, k, i, 4]x4 = acc0"), "{dump}");
    assert!(!dump.contains("for d0 in"), "{dump}");
    assert!(
        dump.contains("acc0 += I[b, c, i + rx - 1, ry + 3]x4 * splat(W[k, c, rx, ry])"),
        "{dump}"
    );
    assert!(
        dump.contains("O[b, k, i, ji + 8] += I[b, c, i + rx - 1, ry + ji + 7] * W[k, c, rx, ry]"),
        "{dump}"
    );
}

#[test]
fn scatter_and_pooling_schedules() {
    let t = inputs(&[
        ("I", rand(&[2, 3, 6], 1)),
        ("W", rand(&[3, 4, 4], 2)),
        ("O", rand(&[2, 4, 12], 3)),
    ]);
    check(
        "O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]",
        &t,
        "split i 4; reorder b k io c ii rx; unroll rx; parallel b",
    );
    let p = inputs(&[("I", rand(&[1, 2, 9, 16], 4))]);
    let pool = "O[b,c,i,j] max= I[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2";
    check(
        pool,
        &p,
        "split j 4; reorder b c i jo rx ry ji; unroll rx; unroll ry; parallel c",
    );
    // Stride 2 in the vectorized loop: a gather of every other element.
    let dump = check(
        pool,
        &p,
        "split j 4; reorder b c i jo rx ry ji; vectorize ji; accumulate rx",
    );
    assert!(dump.contains("I[b, c, 2*i + rx, 8*jo + ry]x4/2"), "{dump}");
    // The whole window unrolled, the tile still in a register across it:
    // one store per vector of outputs, after its four loads.
    let dump = check(
        pool,
        &p,
        "split j 4; reorder b c i jo rx ry ji; unroll rx; unroll ry; vectorize ji; accumulate rx",
    );
    assert!(
        !dump.contains("accumulating") && !dump.contains("for rx"),
        "{dump}"
    );
    assert_eq!(dump.matches("acc0 max= I[").count(), 4, "{dump}");
    assert_eq!(
        dump.matches("O[b, c, i, 4*jo]x4 = acc0").count(),
        1,
        "{dump}"
    );
    // Backwards it cannot be.
    let r = inputs(&[("A", rand(&[8], 1))]);
    let e = scheduled("O[i] = A[7 - i]", &r, "split i 4; vectorize ii").unwrap_err();
    assert!(
        e.contains("the load from A does not step forward along its last dimension with it"),
        "{e}"
    );
}

/// Random legal schedules: splits, a reorder, marks, on several operations.
/// Outputs of `src` under `sched` through the JIT, on one and two threads.
fn jitted(src: &str, inputs: &Inputs, sched: &str) -> Vec<Outputs> {
    let formula = einjit::Formula::new(src)
        .unwrap()
        .with_schedules(vec![Some(sched.parse().unwrap())]);
    let shapes: Vec<(&str, &[usize])> = inputs
        .iter()
        .map(|(n, a)| (n.as_str(), a.shape()))
        .collect();
    [1, 2]
        .into_iter()
        .map(|t| {
            let kernel = formula
                .compile(&shapes)
                .unwrap_or_else(|e| panic!("{sched}: {e}"));
            // Inputs against unmapped pages: after their end, then before their start.
            let guarded = GuardedInputs::new(inputs.iter().map(|(n, a)| (n.as_str(), a)), t == 1);
            kernel.with_threads(t).run(&guarded.views()).unwrap()
        })
        .collect()
}

/// A random legal schedule over `loops`, packing one of `packable` or not.
fn random_schedule(loops: &[&str], packable: &[&str], seed: &[u32]) -> String {
    let mut names: Vec<String> = loops.iter().map(|s| s.to_string()).collect();
    let mut out = Vec::new();
    let mut inners = Vec::new();
    let mut k = 0;
    let mut next = || {
        k += 1;
        seed[k % seed.len()]
    };
    for _ in 0..(next() % 3) {
        let at = next() as usize % names.len();
        let v = names[at].clone();
        let f = 2 + next() % 4;
        out.push(format!("split {v} {f}"));
        names.splice(at..=at, [format!("{v}o"), format!("{v}i")]);
        inners.push(format!("{v}i"));
    }
    // Reorder by a rotation of a random window.
    let a = next() as usize % names.len();
    let b = (a + 2 + next() as usize % 3).min(names.len());
    if b - a >= 2 {
        let mut w: Vec<String> = names[a..b].to_vec();
        w.rotate_left(1);
        out.push(format!("reorder {}", w.join(" ")));
    }
    // Marks that are always legal: peel, accumulate, unroll a split's inner loop.
    let pick = |k: u32, list: &[String]| list[k as usize % list.len()].clone();
    if next() % 2 == 0 {
        out.push(format!("peel {}", pick(next(), &names)));
    }
    if next() % 2 == 0 {
        out.push(format!("accumulate {}", pick(next(), &names)));
    }
    if !inners.is_empty() && next() % 2 == 0 {
        let v = pick(next(), &inners);
        if names.contains(&v) {
            out.push(format!("unroll {v}"));
        }
    }
    if next() % 2 == 0 {
        let t: Vec<String> = packable.iter().map(|s| s.to_string()).collect();
        out.push(format!("pack {}", pick(next(), &t)));
    }
    out.join("; ")
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, .. ProptestConfig::default() })]

    #[test]
    fn random_schedules_match_the_reference(seed in prop::collection::vec(0u32..1000, 8), shape in prop::collection::vec(1usize..7, 3)) {
        let cases: Vec<(&str, Inputs, Vec<&str>, Vec<&str>)> = vec![
            (GEMM, gemm_inputs(shape[0], shape[1], shape[2]), vec!["i", "j", "k"], vec!["A", "B"]),
            (
                "O[b,k,i] = I[b,c,i+rx-1] * W[k,c,rx] where i in 0..N",
                inputs(&[("I", rand(&[1, shape[0], shape[1] + 2], 1)), ("W", rand(&[shape[2], shape[0], 3], 2))]),
                vec!["b", "k", "i", "c", "rx"],
                vec!["W"],
            ),
            (
                "O[2*i+rx-1] += I[i] * W[rx]",
                inputs(&[("I", rand(&[shape[0] + 1], 1)), ("W", rand(&[3], 2)), ("O", rand(&[2 * shape[0] + 1], 3))]),
                vec!["i", "rx"],
                vec!["I", "W"],
            ),
        ];
        for (src, inp, loops, packable) in cases {
            let n = shape[1] + 2;
            let src = src.replace("N", &n.to_string());
            let sched = random_schedule(&loops, &packable, &seed);
            let (got, dump) = scheduled(&src, &inp, &sched).map_err(|e| TestCaseError::fail(format!("{sched}: {e}")))?;
            let want = reference(&src, &inp);
            // (A strided scatter runs by phases through the JIT: other loops.)
            let jit = if src.contains("+=") { Vec::new() } else { jitted(&src, &inp, &sched) };
            for (name, w) in &want {
                let close = |g: &ArrayD<f32>| g.shape() == w.shape() && g.iter().zip(w.iter()).all(|(a, b)| (a - b).abs() <= 1e-4 * (1.0 + b.abs()));
                let g = &got[name];
                prop_assert!(close(g), "{src} under `{sched}`:\ngot  {g}\nwant {w}\n{dump}");
                for (threads, out) in jit.iter().enumerate() {
                    let g = &out[name];
                    prop_assert!(close(g), "{src} under `{sched}`, JIT, {} thread(s):\ngot  {g}\nwant {w}\n{dump}", threads + 1);
                }
            }
        }
    }
}

/// The automatic schedule of each statement, through the same path.
fn auto(src: &str, inputs: &Inputs) -> (String, String) {
    let program = check_source(src, &shapes(inputs)).unwrap();
    let sched = schedule::auto_schedule(&program, &program.statements[0]);
    let text = sched.to_string();
    (check(src, inputs, &text), text)
}

#[test]
fn automatic_schedules_block_gemm_and_convolutions() {
    let (dump, sched) = auto(GEMM, &gemm_inputs(13, 24, 200));
    assert_eq!(
        sched,
        "split j 8; split ji 4; split i 6; reorder io jo k ii jio jii; unroll ii; unroll jio; vectorize jii; accumulate k; parallel io; pack B"
    );
    // A `B` that fits in L1 with room to spare (16 KB) is read in place.
    let (_, small) = auto(GEMM, &gemm_inputs(64, 64, 64));
    assert!(!small.contains("pack"), "{small}");
    // Rows fitted to a short dimension: 28 rows in tiles of 6 would leave a
    // seventh of the work to a partial tile, in tiles of 4 none.
    let (_, fitted) = auto(GEMM, &gemm_inputs(28, 24, 9));
    assert!(fitted.contains("split i 4;"), "{fitted}");
    assert!(
        dump.contains("acc11 += splat(A[6*io + 5, k]) * B+pack[jo, k, 1, 0]x4"),
        "{dump}"
    );
    // Registers start at zero: no separate pass fills the output.
    assert!(dump.contains("acc0 = splat(0.0)"), "{dump}");
    assert!(!dump.contains("for d0 in"), "{dump}");
    let conv = input_and_weights(&[2, 3, 9, 11], &[7, 3, 3, 3]);
    let (dump, sched) = auto(
        "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..9, j in 0..11",
        &conv,
    );
    assert!(!dump.contains("for d0 in"), "{dump}");
    // (Three channels and a 3x3 window, all short loops: one-vector rows,
    // the 7 output channels.)
    assert!(sched.contains("reorder b i jo c rx ry k ji"), "{sched}");
    // Where the nest does not reach every output element (rows 3 and 4
    // read outside `A`), a separate fill initialises the output, in
    // vectors with a scalar tail.
    let (dump, _) = auto(
        "O[i,j] = A[i,j] * 2 where i in 0..5",
        &inputs(&[("A", rand(&[3, 11], 1))]),
    );
    assert!(
        dump.contains("for d1v in 0..2:\n      O[d0, 4*d1v]x4 = splat(0.0)\n    for d1 in 8..11:\n      O[d0, d1] = 0.0"),
        "{dump}"
    );
    // A 3x3 convolution's input is not packed (it would be an im2col, nine
    // copies); a 1x1 convolution's is (no copy is larger than the input).
    assert!(!sched.contains("pack"), "{sched}");
    let (dump, sched) = auto(
        "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0]",
        &input_and_weights(&[1, 64, 3, 24], &[13, 64, 1, 1]),
    );
    assert!(sched.ends_with("pack I"), "{sched}");
    assert!(
        dump.contains("I+pack: temp f32[1, 3, 3, 64, 2, 4]"),
        "{dump}"
    );
}

/// Random `I` and `W` of these shapes (a convolution's input and weights).
fn input_and_weights(i: &[usize], w: &[usize]) -> Inputs {
    inputs(&[("I", rand(i, 1)), ("W", rand(w, 2))])
}

/// The automatic schedule of `src`'s last statement, after checking the
/// compiled kernel against the reference on one and two threads.
fn automatic_schedule_checked(src: &str, inp: &Inputs) -> String {
    automatic_schedules_checked(src, inp)
        .pop()
        .expect("a statement")
}

/// [`automatic_schedule_checked`] for every statement the kernel runs (a
/// widened convolution's and its copy's).
fn automatic_schedules_checked(src: &str, inp: &Inputs) -> Vec<String> {
    let shapes: Vec<(&str, &[usize])> = inp.iter().map(|(n, a)| (n.as_str(), a.shape())).collect();
    let mut kernel = einjit::Kernel::compile(src, &shapes).unwrap();
    let want = reference(src, inp);
    for threads in [1, 2] {
        kernel = kernel.with_threads(threads);
        // Inputs against unmapped pages: after their end, then before their start.
        let guarded = GuardedInputs::new(inp.iter().map(|(n, a)| (n.as_str(), a)), threads == 1);
        let got = kernel.run(&guarded.views()).unwrap();
        assert_close(&got["O"], &want["O"], 1e-4);
    }
    kernel.schedules().iter().map(|s| s.to_string()).collect()
}

#[test]
fn deep_windows_get_whole_one_vector_tiles() {
    // A stride-2 window (four reduction loops) 12 wide with 32 channels:
    // 6x8 tiles would be partial in both dimensions (four copies of the
    // kernel to compile); 8x4 tiles cover it whole.
    let src = "O[b,k,i,j] = I[b,c,2*i+rx-1,2*j+ry-1] * W[k,c,rx,ry] where i in 0..5, j in 0..12";
    let inp = input_and_weights(&[1, 3, 10, 24], &[32, 3, 3, 3]);
    let conv = automatic_schedule_checked(src, &inp);
    assert!(
        conv.starts_with("split j 4; split k 8; reorder b i ko jo"),
        "{conv}"
    );
    assert!(!conv.contains("split ji"), "{conv}");
    // A 3x3 window of stride 1 that 8-wide vectors divide keeps 6x8 tiles
    // over 8 channels; over 3, every loop of the window is short (3 trips)
    // and its tile one vector of 8 rows.
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..5, j in 0..16";
    for (channels, tile) in [
        (8, "split j 8; split ji 4; split k 6;"),
        (3, "split j 4; split k 8; reorder b i ko jo c rx ry ki ji;"),
    ] {
        let inp = input_and_weights(&[1, channels, 5, 16], &[32, channels, 3, 3]);
        let conv = automatic_schedule_checked(src, &inp);
        assert!(conv.starts_with(tile), "{conv}");
    }
    // So does a window of short loops whose rows are widened to whole
    // vectors (a depthwise stride-2 window, 14 wide, computed 16 wide),
    // its 14 rows in two tiles of 7.
    let src = "O[b,c,i,j] = I[b,c,2*i+rx-1,2*j+ry-1] * W[c,0,rx,ry] where i in 0..14, j in 0..14";
    let inp = input_and_weights(&[1, 3, 28, 28], &[3, 1, 3, 3]);
    let all = automatic_schedules_checked(src, &inp);
    let [.., conv, _copy_back] = &all[..] else {
        panic!("{all:?}")
    };
    assert!(conv.starts_with("split j 4; split i 7;"), "{conv}");
}

#[test]
fn reductions_across_rows_sweep_the_rows() {
    // GEMV with `A` transposed: the reduction steps across `A`'s rows, so
    // eight rows are swept at a time, the output's vectors in registers
    // across them; the output in two blocks, one per thread.
    let i = inputs(&[("A", rand(&[37, 150], 1)), ("B", rand(&[37], 2))]);
    let sched = automatic_schedule_checked("O[i] = A[k,i] * B[k]", &i);
    assert_eq!(
        sched,
        "split i 80; split ii 8; split iii 4; split k 8; reorder io ko iio ki iiio iiii; unroll ki; unroll iiio; vectorize iiii; accumulate ki; parallel io"
    );
    // Column sums and maxima (one block: too few columns to split), and a
    // batch of them (the batch loop outside, in parallel).
    let a = inputs(&[("A", rand(&[100, 37], 3))]);
    for src in ["O[j] = A[i,j]", "O[j] max= A[i,j]"] {
        let sched = automatic_schedule_checked(src, &a);
        assert!(
            sched.starts_with("split j 8; split ji 4; split i 8; reorder io jo ii jio jii;"),
            "{src}: {sched}"
        );
    }
    let b = inputs(&[("A", rand(&[3, 19, 70], 4)), ("X", rand(&[19], 5))]);
    let sched = automatic_schedule_checked("O[b,j] = A[b,k,j] * X[k]", &b);
    assert!(sched.contains("reorder b jo ko jio ki"), "{sched}");
    assert!(sched.ends_with("parallel b"), "{sched}");
    // GEMV (its reduction runs along `A`'s rows) streams one row at a time.
    let g = inputs(&[("A", rand(&[9, 40], 6)), ("B", rand(&[40], 7))]);
    assert_eq!(
        automatic_schedule_checked("O[i] = A[i,k] * B[k]", &g),
        "split k 32; split ki 4; reorder i ko kio kii; unroll kio; vectorize kii; accumulate ko; parallel i"
    );
}

#[test]
fn a_long_channel_loop_beside_one_short_tap_loop_goes_innermost() {
    // A 1D transposed convolution's phases: 20 channels and 2 taps each;
    // the channels run innermost around the tile (GEMM's loop), the taps
    // outside. (With two tap loops, 2D, the taps stay innermost.)
    let src = "O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]";
    let inp = inputs(&[
        ("I", rand(&[2, 20, 9], 1)),
        ("W", rand(&[20, 7, 4], 2)),
        ("O", rand(&[2, 7, 18], 3)),
    ]);
    let sched = automatic_schedule_checked(src, &inp);
    assert!(sched.contains(" rx c ki "), "{sched}");
    assert!(sched.contains("accumulate rx"), "{sched}");
    let src = "O[b,k,2*i+rx-1,2*j+ry-1] += I[b,c,i,j] * W[c,k,rx,ry]";
    let inp = inputs(&[
        ("I", rand(&[1, 20, 5, 9], 1)),
        ("W", rand(&[20, 7, 4, 4], 2)),
        ("O", rand(&[1, 7, 10, 18], 3)),
    ]);
    let sched = automatic_schedule_checked(src, &inp);
    assert!(sched.contains("accumulate c"), "{sched}");
}

#[test]
fn scattered_weight_broadcasts_are_packed_or_read_by_channel() {
    // 6×8 tiles of a 3x3 convolution over 256 channels of 14×14: each
    // sweep of `c` broadcasts from six rows of W 9 elements apart (54 KB
    // of lines), once per tap, for 28 tiles (14 rows, 2 column tiles):
    // W is packed in loop order, the tile's six weights adjacent.
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..14, j in 0..14";
    let inp = input_and_weights(&[1, 256, 14, 14], &[12, 256, 3, 3]);
    automatic_schedule_checked(src, &inp);
    let (dump, sched) = auto(src, &inp);
    assert!(sched.contains("pack W"), "{sched}");
    assert!(dump.contains("W+pack: temp f32[2, 3, 3, 256, 6]"), "{dump}");
    assert!(
        dump.contains("W+pack[ko, rx, ry, c, ki] = W[6*ko + ki, c, rx, ry]"),
        "{dump}"
    );
    // Not when the copy would be read by only 7 tiles (7×8: the copy of
    // the weights costs more than it saves): one-vector tiles of 8 output
    // channels then, the channels outside the taps; nor when a sweep's
    // lines fit in L1 (64 channels): 6×8 tiles, unpacked.
    let src7 = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..7, j in 0..8";
    let inp = input_and_weights(&[1, 256, 7, 8], &[16, 256, 3, 3]);
    automatic_schedule_checked(src7, &inp);
    let (_, sched) = auto(src7, &inp);
    assert!(
        sched.contains("split j 4; split k 8; reorder b i ko jo c rx ry ki ji;")
            && sched.contains("accumulate c")
            && !sched.contains("pack"),
        "{sched}"
    );
    let inp = input_and_weights(&[1, 64, 14, 14], &[12, 64, 3, 3]);
    let (_, sched) = auto(src, &inp);
    assert!(
        sched.contains("split j 8; split ji 4; split k 6;") && !sched.contains("pack"),
        "{sched}"
    );
}

#[test]
fn a_two_trip_residue_loop_does_not_stay_innermost() {
    // A 7x7 stride-2 window over 3 channels (a network's stem): its column
    // taps split into a residue `ryq` (2) and a step `rya` (4, unrolled);
    // `ryq` goes outside `rx`, so that the loop around the tile is `rx`'s
    // seven trips, not `ryq`'s two.
    let src = "O[b,k,i,j] = I[b,c,2*i+rx-3,2*j+ry-3] * W[k,c,rx,ry] where i in 0..3, j in 0..16";
    let inp = input_and_weights(&[1, 3, 6, 32], &[12, 3, 7, 7]);
    let sched = automatic_schedule_checked(src, &inp);
    assert!(sched.contains(" c ryq rx rya "), "{sched}");
    assert!(
        sched.contains("unroll rya;") && !sched.contains("unroll ryq"),
        "{sched}"
    );
    // Not past the loop the tile accumulates across (a 5x5 stride-2
    // depthwise window: `rx ryq rya`, accumulating across `rx`).
    let src = "O[b,c,i,j] = I[b,c,2*i+rx-2,2*j+ry-2] * W[c,0,rx,ry] where i in 0..7, j in 0..8";
    let inp = input_and_weights(&[1, 3, 14, 16], &[3, 1, 5, 5]);
    let sched = automatic_schedule_checked(src, &inp);
    assert!(sched.contains(" rx ryq rya "), "{sched}");
    assert!(sched.contains("accumulate rx"), "{sched}");
}

#[test]
fn transposing_statements_get_cache_tiles() {
    // The read walks a column of `X` per output row: tiles of 16 output
    // columns (a cache line of each output row) by 8 elements of each row
    // of `X` (the innermost loop, unrolled; partial tiles at both edges
    // here), the tile rows in parallel.
    let x = inputs(&[("X", rand(&[37, 45], 1))]);
    assert_eq!(
        automatic_schedule_checked("O[i,j] = X[j,i]", &x),
        "split i 8; split j 16; reorder io jo ji ii; unroll ii; parallel io"
    );
    // NCHW -> NHWC (`h` and `w` always together: one loop `hw`): the
    // batch outside, in parallel.
    let nchw = inputs(&[("X", rand(&[2, 19, 5, 11], 2))]);
    assert_eq!(
        automatic_schedule_checked("O[n,h,w,c] = X[n,c,h,w]", &nchw),
        "split hw 8; split c 16; reorder n hwo co ci hwi; unroll hwi; parallel n"
    );
    // An elementwise sum with one operand transposed, and a 3D permute.
    let ab = inputs(&[("A", rand(&[13, 21], 3)), ("B", rand(&[21, 13], 4))]);
    let sched = automatic_schedule_checked("O[i,j] = A[i,j] + B[j,i]", &ab);
    assert!(sched.starts_with("split i 8; split j 16;"), "{sched}");
    let y = inputs(&[("Y", rand(&[3, 17, 40], 5))]);
    let sched = automatic_schedule_checked("O[b,j,i] = Y[b,i,j]", &y);
    assert_eq!(
        sched,
        "split j 8; split i 16; reorder b jo io ii ji; unroll ji; parallel b"
    );
    // One output row: nothing to tile, the lowered nest.
    let row = inputs(&[("X", rand(&[1, 40], 6))]);
    assert_eq!(automatic_schedule_checked("O[i,j] = X[j,i]", &row), "");
}

#[test]
fn short_rows_of_a_deep_window_take_a_second_row_dimension() {
    // Four output channels per group fill only four accumulators of a
    // one-vector tile; two output rows make eight, and 12-wide rows in
    // 4-lane vectors leave no partial tile. `rx` steps through the input's
    // rows with `i`, so it goes innermost, unrolled with the rows; around
    // a one-vector tile the channels stay outside the taps.
    let src = "O[b,4*g+k,i,j] = I[b,4*g+c,i+rx-1,j+ry-1] * W[4*g+k,c,rx,ry] \
               where g in 0..3, k in 0..4, i in 0..6, j in 0..12";
    let inp = input_and_weights(&[1, 12, 6, 12], &[12, 4, 3, 3]);
    assert_eq!(
        automatic_schedule_checked(src, &inp),
        "split j 4; split i 2; reorder b g io jo c ry rx ii k ji; unroll ii; unroll k; \
         unroll rx; vectorize ji; accumulate c; parallel g"
    );
    // With 16-wide rows (whole in 8-lane tiles) the 4x8 tile stays.
    let src = "O[b,4*g+k,i,j] = I[b,4*g+c,i+rx-1,j+ry-1] * W[4*g+k,c,rx,ry] \
               where g in 0..3, k in 0..4, i in 0..6, j in 0..16";
    let inp = input_and_weights(&[1, 12, 6, 16], &[12, 4, 3, 3]);
    let conv = automatic_schedule_checked(src, &inp);
    assert!(conv.starts_with("split j 8; split ji 4; reorder"), "{conv}");
}

#[test]
fn automatic_schedules_of_every_kind_of_statement_are_correct() {
    let cases: Vec<(&str, Inputs)> = vec![
        ("O[i] = A[i,k] * B[k]", inputs(&[("A", rand(&[9, 7], 1)), ("B", rand(&[7], 2))])),
        ("O[i,j] = A[k,i] * B[j,k]", inputs(&[("A", rand(&[5, 9], 1)), ("B", rand(&[17, 5], 2))])),
        ("O[b,i,j] = A[b,i,k] * B[b,k,j]", inputs(&[("A", rand(&[2, 3, 4], 1)), ("B", rand(&[2, 4, 9], 2))])),
        ("O[i,j] = A[i] * B[j]", inputs(&[("A", rand(&[7], 1)), ("B", rand(&[3], 2))])),
        (
            "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..6, j in 0..13",
            inputs(&[("I", rand(&[1, 5, 6, 13], 1)), ("W", rand(&[5, 1, 3, 3], 2))]),
        ),
        (
            "O[b,k,i,j] = I[b,c,i+2*rx-2,j+2*ry-2] * W[k,c,rx,ry] where i in 0..7, j in 0..9",
            inputs(&[("I", rand(&[1, 2, 7, 9], 1)), ("W", rand(&[3, 2, 3, 3], 2))]),
        ),
        (
            "O[b,4*g+k,i,j] = I[b,2*g+c,i+rx,j+ry] * W[4*g+k,c,rx,ry] where g in 0..2, k in 0..4",
            inputs(&[("I", rand(&[1, 4, 6, 9], 1)), ("W", rand(&[8, 2, 3, 3], 2))]),
        ),
        (
            "O[b,k,i,j,l] = I[b,c,i+rx-1,j+ry-1,l+rz-1] * W[k,c,rx,ry,rz] where i in 0..3, j in 0..4, l in 0..9",
            inputs(&[("I", rand(&[1, 2, 3, 4, 9], 1)), ("W", rand(&[3, 2, 3, 3, 3], 2))]),
        ),
        ("O[b,c,i,j] max= I[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2", inputs(&[("I", rand(&[1, 3, 8, 9], 1))])),
        (
            "O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]",
            inputs(&[("I", rand(&[2, 3, 5], 1)), ("W", rand(&[3, 4, 4], 2)), ("O", rand(&[2, 4, 10], 3))]),
        ),
        ("O[k,i] = relu(T[k,i] + Bias[k])", inputs(&[("T", rand(&[5, 11], 1)), ("Bias", rand(&[5], 2))])),
        ("O[i,j] = A[i,j] / (1 + exp(-A[i,j]))", inputs(&[("A", rand(&[3, 4], 1))])),
    ];
    for (src, i) in cases {
        auto(src, &i);
    }
}

#[test]
fn packing_names_a_padded_read_by_its_tensor() {
    // `B` is read at `k - 1`: the statement reads its zero-bordered copy,
    // and `pack B` packs that.
    let src = "O[i,j] = A[i,k] * B[k-1,j] where k in 0..10";
    let i = inputs(&[("A", rand(&[6, 10], 1)), ("B", rand(&[9, 8], 2))]);
    let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
        i.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
    let kernel = einjit::Formula::new(src)
        .unwrap()
        .with_schedules(vec![Some("pack B".parse().unwrap())])
        .compile(&shapes)
        .unwrap();
    assert!(
        kernel.scheduled_ir().contains("B+pad+pack"),
        "{}",
        kernel.scheduled_ir()
    );
    assert_close(
        &kernel.run(&views).unwrap()["O"],
        &reference(src, &i)["O"],
        1e-4,
    );
}

/// A store stepping by `s > 1` along a vectorized loop scatters its lanes
/// (`O[..]x4/2`): alone, held in a register across a reduction (loaded
/// from the elements, or from the input a `+=` adds into), in a register
/// tile of several rows, with partial vectors — through the interpreter and
/// the JIT, against the reference.
#[test]
fn strided_stores_vectorize_as_scatters() {
    let cases: [(&str, Inputs, &str); 5] = [
        (
            "O[k,2*i+1] = A[k,i] * 2",
            inputs(&[("A", rand(&[3, 9], 1))]),
            "split i 4; vectorize ii",
        ),
        (
            "O[k,2*i+1] = A[k,c,i] * W[c]",
            inputs(&[("A", rand(&[3, 5, 9], 1)), ("W", rand(&[5], 2))]),
            "split i 4; reorder k io c ii; vectorize ii; accumulate c",
        ),
        (
            "O[k,3*i+2] max= A[k,c,i]",
            inputs(&[("A", rand(&[5, 4, 7], 1))]),
            "split i 4; split k 2; reorder ko io c ki ii; unroll ki; vectorize ii; accumulate c",
        ),
        (
            "O[k,2*i] += A[k,c,i] * W[c]",
            inputs(&[
                ("A", rand(&[4, 3, 8], 1)),
                ("W", rand(&[3], 2)),
                ("O", rand(&[4, 16], 3)),
            ]),
            "split i 4; split k 2; reorder ko io c ki ii; unroll ki; vectorize ii; accumulate c",
        ),
        (
            "O[2*i+1] += A[i] where i in 0..6",
            inputs(&[("A", rand(&[6], 1)), ("O", rand(&[13], 2))]),
            "split i 4; vectorize ii",
        ),
    ];
    for (src, inp, sched) in cases {
        let (got, dump) = scheduled(src, &inp, sched).unwrap_or_else(|e| panic!("{src}: {e}"));
        assert!(
            dump.contains("]x4/2 ") || dump.contains("]x4/3 "),
            "{src}\n{dump}"
        );
        let want = reference(src, &inp);
        for (name, w) in &want {
            assert_close(&got[name], w, 1e-4);
            for out in jitted(src, &inp, sched) {
                assert_close(&out[name], w, 1e-4);
            }
        }
    }
}
