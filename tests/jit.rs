//! Native code == reference evaluator == IR interpreter, for every operation
//! of the README's table, on shapes with dimensions of 1, 3, 7 and 17; with
//! strided and transposed views, two threads, and random programs.

mod common;
use common::ops::operations;
use common::*;
use einjit::{Formula, Kernel};
use proptest::prelude::*;

fn check_all(n: usize) {
    for (_, src, shapes) in operations(n) {
        let list: Vec<(&str, ArrayD<f32>)> = shapes
            .iter()
            .enumerate()
            .map(|(k, (name, s))| (*name, rand(s, k as u64 + 7 * n as u64)))
            .collect();
        let inp = inputs(&list);
        let want = reference(&src, &inp);
        let interp = interpreted(&src, &inp);
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
            list.iter().map(|(name, a)| (*name, a.view())).collect();
        let got = Formula::new(&src)
            .unwrap()
            .run(&views)
            .unwrap_or_else(|e| panic!("{src}: {e}"));
        assert_eq!(got.len(), want.len(), "{src}");
        for (name, w) in &want {
            assert_close(&interp[name], w, 1e-4);
            assert_close(&got[name], w, 1e-4);
        }
    }
}

#[test]
fn every_operation_with_dimensions_of_1_3_7_17() {
    for n in [1, 3, 7, 17] {
        check_all(n);
    }
}

/// Compile `src` for random inputs of `shapes` on one and two threads, check
/// every output against the reference evaluator, and hand each kernel's
/// scheduled dump to `dump`. The inputs border unmapped pages (see
/// `Guarded`): after their last element on one thread, before their first
/// on two, so a read outside them faults.
fn check_compiled(src: &str, shapes: &[(&str, &[usize])], dump: impl Fn(&str)) {
    let list: Vec<(&str, ArrayD<f32>)> = shapes
        .iter()
        .enumerate()
        .map(|(k, (name, s))| (*name, rand(s, k as u64 + 3)))
        .collect();
    let want = reference(src, &inputs(&list));
    for threads in [1, 2] {
        let guarded = GuardedInputs::new(list.iter().map(|(n, a)| (*n, a)), threads == 1);
        let views = guarded.views();
        let kernel = Kernel::compile(src, shapes)
            .unwrap_or_else(|e| panic!("{src}: {e}"))
            .with_threads(threads);
        dump(&kernel.scheduled_ir());
        let got = kernel.run(&views).unwrap();
        for (name, w) in &want {
            assert_close(&got[name], w, 1e-4);
        }
    }
}

/// A padded copy visits only where its source is in bounds, so its vector
/// tiles start at the source's row: a 28-wide row is seven whole vectors,
/// unrolled, with no scalar head or tail (they start at the padded copy's
/// column 1); a row of 30 (not a multiple of four) ends in a vector that
/// overlaps the one before (no scalar tail).
/// Fused per channel, the copy shrinks to one channel's slice on the
/// stack, zeroed on entry for its border (every channel's copy writes the
/// same elements), with no fill nest. Results against the reference, on
/// one and two threads.
#[test]
fn padded_copies_run_whole_vectors_from_the_in_bounds_start() {
    let src = "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..28, j in 0..28";
    check_compiled(
        src,
        &[("I", &[1, 3, 28, 28]), ("W", &[3, 1, 3, 3])],
        |dump| {
            let copy: Vec<&str> = dump
                .lines()
                .filter(|l| l.trim_start().starts_with("I+pad[p2, "))
                .collect();
            assert_eq!(copy.len(), 7, "{dump}");
            for (k, line) in copy.iter().enumerate() {
                let want = format!("I+pad[p2, {}]x4 = I[b, c, p2 - 1, {}]x4", 4 * k + 1, 4 * k);
                assert_eq!(line.trim(), want, "{dump}");
            }
            assert!(dump.contains("for p2 in 1..29:"), "{dump}");
            assert!(dump.contains("I+pad: stack zeroed f32[30, 30]"), "{dump}");
            assert!(!dump.contains("= 0.0"), "{dump}");
        },
    );
    let src = "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..30, j in 0..30";
    check_compiled(
        src,
        &[("I", &[1, 2, 30, 30]), ("W", &[2, 1, 3, 3])],
        |dump| {
            assert!(
                dump.contains("I+pad[p2, 25]x4 = I[b, c, p2 - 1, 24]x4"),
                "{dump}"
            );
            assert!(
                dump.contains("I+pad[p2, 27]x4 = I[b, c, p2 - 1, 26]x4"),
                "{dump}"
            );
            assert!(!dump.contains("I+pad[p2, 29] ="), "{dump}");
        },
    );
}

/// A fused slice of more than 32 KB (a padded channel of 100×100) keeps
/// the temporary whole: one slice per channel, in the kernel's storage.
#[test]
fn slices_over_32_kb_stay_off_the_stack() {
    let src = "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..100, j in 0..100";
    check_compiled(
        src,
        &[("I", &[1, 2, 100, 100]), ("W", &[2, 1, 3, 3])],
        |dump| {
            assert!(dump.contains("fused at tile granularity"), "{dump}");
            assert!(dump.contains("I+pad: temp f32[1, 2, 102, 102]"), "{dump}");
            assert!(!dump.contains("stack"), "{dump}");
        },
    );
}

/// Dimensions a statement always indexes together, whole and adjacent,
/// merge into one (`src/collapse.rs`): a 1x1 convolution over 14×14 pixels
/// runs over `ij in 0..196`, 49 whole vectors, where 14-wide rows left two
/// scalar columns each. The caller still gives and gets its own shapes
/// (`inputs()`, `outputs()`, `run_into`). Not merged: a range narrower than
/// its dimension, dimensions indexed in another order, a statement with a
/// schedule of its own. Against the reference on one and two threads.
#[test]
fn dimensions_indexed_together_merge() {
    let src = "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0]";
    let shapes: [(&str, &[usize]); 2] = [("I", &[1, 8, 14, 14]), ("W", &[16, 8, 1, 1])];
    check_compiled(src, &shapes, |dump| {
        assert!(
            dump.contains("#   ij in 0..196  (i and j merged: always indexed together, whole)"),
            "{dump}"
        );
        assert!(dump.contains("I: in f32[1, 8, 196]"), "{dump}");
        assert!(!dump.contains("for j"), "{dump}");
    });
    let kernel = Kernel::compile(src, &shapes).unwrap();
    assert_eq!(
        kernel.outputs(),
        vec![("O".to_string(), vec![1, 16, 14, 14])]
    );
    assert!(kernel
        .inputs()
        .contains(&("I".to_string(), vec![1, 8, 14, 14])));
    let (i, w) = (rand(&[1, 8, 14, 14], 1), rand(&[16, 8, 1, 1], 2));
    let want = reference(src, &inputs(&[("I", i.clone()), ("W", w.clone())]));
    let mut o = ArrayD::<f32>::zeros(ndarray::IxDyn(&[1, 16, 14, 14]));
    kernel
        .run_into(
            &[("I", i.view()), ("W", w.view())],
            &mut [("O", o.view_mut())],
        )
        .unwrap();
    assert_close(&o, &want["O"], 1e-4);
    let e = kernel
        .run(&[("I", rand(&[1, 8, 196], 1).view()), ("W", w.view())])
        .unwrap_err()
        .to_string();
    assert!(e.contains("[1, 8, 14, 14]"), "{e}");
    for (src, shapes) in [
        (
            "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0] where j in 0..13",
            [("I", &[1, 8, 14, 14][..]), ("W", &[16, 8, 1, 1][..])],
        ),
        (
            "O[b,k,j,i] = I[b,c,i,j] * W[k,c,0,0]",
            [("I", &[1, 8, 14, 14][..]), ("W", &[16, 8, 1, 1][..])],
        ),
    ] {
        check_compiled(src, &shapes, |dump| {
            assert!(!dump.contains("merged"), "{dump}")
        });
    }
    let scheduled = Formula::new(src)
        .unwrap()
        .with_schedules(vec![Some("split j 7".parse().unwrap())])
        .kernel(&shapes)
        .unwrap();
    assert!(!scheduled.scheduled_ir().contains("merged"));
}

/// A GEMM whose packed operand is large is cache-blocked: a row block per
/// thread (the parallel loop, outermost and unpeeled, so both threads
/// run), then blocks of 512 columns and 256 reduction points, the tile's
/// accumulators loaded from the output at each reduction block, the blocks
/// as even as whole tiles allow. Partial blocks and tiles in every
/// dimension (50 rows: 25 per block, tiles of 6; 522 columns: blocks of
/// 264 and 258, its last tile partial; 261 points: 131 and 130), plain, with `B` transposed, and with
/// epilogues (a hoisted divisor; bias and relu), which run once the last
/// reduction block is done; an odd row count, its column blocks in
/// parallel instead; and batched, the batch loop outermost: against the
/// reference on one and two threads.
#[test]
fn large_gemms_are_cache_blocked() {
    const GEMM_SRC: &str = "O[i,j] = A[i,k] * B[k,j]";
    for (src, b) in [
        ("O[i,j] = A[i,k] * B[k,j]", [261, 522]),
        ("O[i,j] = A[i,k] * B[j,k]", [522, 261]),
        ("O[i,j] = A[i,k] * B[k,j] / 4", [261, 522]),
        (
            "T[i,j] = A[i,k] * B[k,j]; O[i,j] = relu(T[i,j] + C[j])",
            [261, 522],
        ),
    ] {
        let shapes: [(&str, &[usize]); 3] = [("A", &[50, 261]), ("B", &b), ("C", &[522])];
        let shapes = if src.contains("C[") {
            &shapes[..]
        } else {
            &shapes[..2]
        };
        // (The plain GEMM's rows of 522 widen to 524: it writes `O+wide`
        // from a padded `B`, its cache blocks the same.)
        let widened = src == GEMM_SRC;
        let (n, out) = match widened {
            true => ("2", "O+wide"),
            false => ("1", "O"),
        };
        check_compiled(src, shapes, |dump| {
            let blocked = "split i 25; split ii 6; split j 264; split k 131; split ji 8; split jii 4; \
                reorder io jo ko iio jio ki iii jiio jiii; unroll iii; unroll jiio; vectorize jiii; \
                accumulate ki; parallel io; pack B";
            assert!(
                dump.contains(&format!("# schedule {n}: {blocked}")),
                "{dump}"
            );
            assert!(dump.contains("\n  for io in 0..2 parallel:\n"), "{dump}");
            let tile = format!("acc0 = {out}[25*io + 6*iio, 8*jio]x4");
            assert!(dump.contains(&tile), "{dump}");
        });
    }
    // Rows that do not split in two: the column blocks run in parallel.
    check_compiled(
        GEMM_SRC,
        &[("A", &[49, 260]), ("B", &[260, 1030])],
        |dump| {
            assert!(
                dump.contains("reorder jo ko io jio ki ii jiio jiii;")
                    && dump.contains("parallel jo;"),
                "{dump}"
            );
        },
    );
    // A batch loop goes outside the row blocks.
    let src = "O[b,i,j] = A[b,i,k] * B[b,k,j]";
    check_compiled(
        src,
        &[("A", &[2, 48, 260]), ("B", &[2, 260, 520])],
        |dump| {
            assert!(
                dump.contains("reorder b io jo ko iio jio ki iii jiio jiii;"),
                "{dump}"
            );
            assert!(dump.contains("\n    for io in 0..2 parallel:\n"), "{dump}");
        },
    );
}

/// A contraction whose operand steps along the output's last index in
/// another of its own dimensions (`B[j,k]` in `A·Bᵀ` and `Aᵀ·Bᵀ`) is
/// vectorized along `j` anyway: that operand is packed, its lanes copied
/// one by one (unrolled, four per vector of the copy), and the register
/// tile loads whole vectors of the copy. Sizes with partial tiles in every
/// dimension, against the reference on one and two threads. A read used
/// once per output element (GEMV's `A[i,k]`) is not transposed into a copy.
#[test]
fn transposed_operands_are_packed_for_the_vector_tile() {
    for (src, a) in [
        ("O[i,j] = A[i,k] * B[j,k]", [13, 11]),
        ("O[i,j] = A[k,i] * B[j,k]", [11, 13]),
    ] {
        check_compiled(src, &[("A", &a), ("B", &[19, 11])], |dump| {
            assert!(dump.contains("vectorize jii;"), "{dump}");
            assert!(dump.contains("pack B"), "{dump}");
            for lane in 1..4 {
                let copy = format!("B+pack[jo, k, jio, {lane}] = B[8*jo + 4*jio + {lane}, k]");
                assert!(dump.contains(&copy), "{copy}\n{dump}");
            }
            assert!(dump.contains("* B+pack[jo, k, 1, 0]x4"), "{dump}");
        });
    }
    check_compiled(
        "O[i] = A[i,k] * B[k]",
        &[("A", &[19, 11]), ("B", &[11])],
        |dump| {
            assert!(!dump.contains("pack A"), "{dump}");
        },
    );
}

/// A factor constant across a reduction (a divisor, a read indexed by
/// output variables only) is applied once to the sum, by an epilogue, and
/// the reduction adds the rest: against the reference on one and two
/// threads, with tails (`s[i-1]` reads its zero-padded copy, in bounds at
/// `i = 0`). Left inside: a sum into existing values (`+=`), `max=`, and a
/// quotient whose numerator alone is constant.
#[test]
fn factors_constant_across_a_reduction_scale_its_sum_once() {
    const HOISTED: &str = "(a factor constant across the reduction, applied once to its sum)";
    type Case = (
        &'static str,
        Vec<(&'static str, &'static [usize])>,
        Option<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            "O[b,c] = I[b,c,i,j] / 9",
            vec![("I", &[2, 5, 7, 9])],
            Some("O[b, c] = O[b, c] / 9"),
        ),
        (
            "O[b,c,i,j] = I[b,c,2*i+rx,2*j+ry] / 4 where rx in 0..2, ry in 0..2",
            vec![("I", &[1, 3, 10, 22])],
            Some("O[b, c, i, j] = O[b, c, i, j] / 4"),
        ),
        (
            "O[i] = A[i,k] * s[i] * 0.5",
            vec![("A", &[13, 11]), ("s", &[13])],
            Some("O[i] = O[i] * s[i] * 0.5"),
        ),
        (
            "O[i] = A[i,k] * s[i-1] where i in 0..13",
            vec![("A", &[13, 11]), ("s", &[13])],
            Some("O[i] = O[i] * s+pad[i]"),
        ),
        ("O[i] = 2 / A[i,k]", vec![("A", &[13, 11])], None),
        ("O[i] max= A[i,k] * 2", vec![("A", &[13, 11])], None),
        (
            "O[i] += A[i,k] * 2",
            vec![("A", &[13, 11]), ("O", &[13])],
            None,
        ),
    ];
    for (src, shapes, epilogue) in cases {
        check_compiled(src, &shapes, |dump| match epilogue {
            Some(e) => {
                let line = format!("then, in place on each finished element: {e} {HOISTED}");
                assert!(dump.contains(&line), "{line}\n{dump}");
                let in_sum = |l: &&str| l.contains("+=") && (l.contains(" / ") || l.contains("s["));
                assert!(!dump.lines().any(|l| in_sum(&l)), "{dump}");
            }
            None => assert!(!dump.contains(HOISTED), "{src}\n{dump}"),
        });
    }
}

/// A convolution over rows a few elements past a multiple of four (7,
/// 14; up to 64 when it sums over channels: 19, 29, 45; through a
/// stride-2 window too) computes into a
/// copy with whole-vector rows and copies its rows out; a 1x1 convolution
/// (its pixels merge into one long row instead), a row of 16, a row of 33
/// (one column past whole 8-column tiles), a depthwise one over rows of 25
/// (no channels summed) and a convolution followed by a residual add (its
/// extra columns would read outside the residual) keep their shapes. So
/// do a grouped convolution, a GEMM (rows of any length) whose padded
/// operand serves at least 32 rows, a depthwise convolution over rows
/// three past whole vectors (19) and a convolution followed by elementwise
/// steps (a ReLU, fused into its nest: only the last result is copied
/// out); a GEMM of 8 rows and a transposed GEMV do not. Against the
/// reference on one and two threads.
#[test]
fn short_rows_of_a_window_widen_to_whole_vectors() {
    let conv = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..H, j in 0..H";
    for (h, wide) in [(7, 8), (14, 16), (10, 12), (19, 20), (29, 32), (45, 48)] {
        let src = conv.replace('H', &h.to_string());
        let shapes: [(&str, &[usize]); 2] = [("I", &[1, 5, h, h]), ("W", &[13, 5, 3, 3])];
        check_compiled(&src, &shapes, |dump| {
            let widened = format!("O+wide: temp f32[1, 13, {h}, {wide}]");
            assert!(dump.contains(&widened), "{widened}\n{dump}");
            assert!(
                dump.contains("O[w0, w1, w2, w3] = O+wide[w0, w1, w2, w3]"),
                "{dump}"
            );
            assert!(dump.contains(&format!("j in 0..{wide}  (where")), "{dump}");
        });
    }
    let stride_2 =
        "O[b,k,i,j] = I[b,c,2*i+rx-1,2*j+ry-1] * W[k,c,rx,ry] where i in 0..19, j in 0..19";
    check_compiled(
        stride_2,
        &[("I", &[1, 3, 37, 37]), ("W", &[5, 3, 3, 3])],
        |dump| {
            assert!(dump.contains("O+wide: temp f32[1, 5, 19, 20]"), "{dump}");
            assert!(dump.contains("split by residue mod 2"), "{dump}");
        },
    );
    // A GEMM whose rows of `B` serve 40 rows of `O` (its padded copy of `B`
    // costs little), batched too (each batch's wide rows on the stack).
    check_compiled(
        "O[i,j] = A[i,k] * B[k,j]",
        &[("A", &[40, 20]), ("B", &[20, 30])],
        |dump| assert!(dump.contains("O+wide: temp f32[40, 32]"), "{dump}"),
    );
    check_compiled(
        "O[b,i,j] = A[b,i,k] * B[b,k,j]",
        &[("A", &[2, 33, 9]), ("B", &[2, 9, 27])],
        |dump| {
            assert!(
                dump.contains("O+wide[b, i, j] = A[b, i, k] * B+pad[b, k, j]"),
                "{dump}"
            );
            assert!(dump.contains("O+wide: stack f32[33, 28]"), "{dump}");
        },
    );
    let depthwise = "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..7, j in 0..7";
    check_compiled(
        depthwise,
        &[("I", &[1, 6, 7, 7]), ("W", &[6, 1, 3, 3])],
        |dump| assert!(dump.contains("O+wide"), "{dump}"),
    );
    // A grouped convolution: its output channels `4*g + k` tile their
    // dimension, so every element is still set.
    check_compiled(
        "O[b,4*g+k,i,j] = I[b,2*g+c,i+rx-1,j+ry-1] * W[4*g+k,c,rx,ry] where i in 0..19, j in 0..19, g in 0..2",
        &[("I", &[1, 4, 19, 19]), ("W", &[8, 2, 3, 3])],
        |dump| assert!(dump.contains("O+wide: temp f32[1, 8, 19, 20]"), "{dump}"),
    );
    // A depthwise row three past whole vectors (19), no channels summed.
    let depthwise_19 =
        "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..19, j in 0..19";
    check_compiled(
        depthwise_19,
        &[("I", &[1, 2, 19, 19]), ("W", &[2, 1, 3, 3])],
        |dump| assert!(dump.contains("O+wide: stack f32[19, 20]"), "{dump}"),
    );
    let one_by_one = "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0]";
    let sixteen = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..16, j in 0..16";
    let pipeline = "T[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..7, j in 0..7\nO[b,k,i,j] = relu(T[b,k,i,j])";
    check_compiled(
        pipeline,
        &[("I", &[1, 2, 7, 7]), ("W", &[3, 2, 3, 3])],
        |dump| {
            let fused =
                "then, in place on each finished element: O+wide[b, k, i, j] = relu(T[b, k, i, j])";
            assert!(dump.contains(fused), "{dump}");
            assert!(dump.contains("O+wide: temp f32[1, 3, 7, 8]"), "{dump}");
        },
    );
    // Depthwise, per channel: the epilogue updates `O+wide` in place, and
    // its slice still moves onto the stack beside the copy out.
    let depthwise_relu6 = "T[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..14, j in 0..14\nO[b,c,i,j] = min(relu(T[b,c,i,j] + Bias[c]), 6)";
    check_compiled(
        depthwise_relu6,
        &[("I", &[1, 3, 14, 14]), ("W", &[3, 1, 3, 3]), ("Bias", &[3])],
        |dump| {
            assert!(dump.contains("O+wide: stack f32[14, 16]"), "{dump}");
            assert!(
                dump.contains("then, in place on each finished element: O+wide"),
                "{dump}"
            );
        },
    );
    let residual = "T[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..7, j in 0..7\nO[b,k,i,j] = relu(T[b,k,i,j] + R[b,k,i,j])";
    check_compiled(
        residual,
        &[
            ("I", &[1, 2, 7, 7]),
            ("W", &[3, 2, 3, 3]),
            ("R", &[1, 3, 7, 7]),
        ],
        |dump| assert!(!dump.contains("+wide"), "{dump}"),
    );
    let depthwise_25 =
        "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..25, j in 0..25";
    let thirty_three =
        "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..33, j in 0..33";
    let (i7, i16, i25, i33): (&[usize], &[usize], &[usize], &[usize]) = (
        &[1, 2, 7, 7],
        &[1, 2, 16, 16],
        &[1, 2, 25, 25],
        &[1, 2, 33, 33],
    );
    let (w1, w3, wd): (&[usize], &[usize], &[usize]) =
        (&[5, 2, 1, 1], &[3, 2, 3, 3], &[2, 1, 3, 3]);
    // A GEMM of 8 rows and a transposed GEMV: each padded element of `W`
    // or `I` would serve fewer than 32 rows.
    let few_rows = "O[i,j] = I[i,k] * W[k,j]";
    let gemv_t = "O[i] = I[k,i] * W[k]";
    let (i8, w8, ig, wg): (&[usize], &[usize], &[usize], &[usize]) =
        (&[8, 16], &[16, 30], &[16, 30], &[16]);
    let unwidened = [
        (one_by_one, i7, w1),
        (sixteen, i16, w3),
        (depthwise_25, i25, wd),
        (thirty_three, i33, w3),
        (few_rows, i8, w8),
        (gemv_t, ig, wg),
    ];
    for (src, i, w) in unwidened {
        check_compiled(src, &[("I", i), ("W", w)], |dump| {
            assert!(!dump.contains("+wide"), "{src}\n{dump}")
        });
    }
}

/// A padding statement writes its interior once, straight from the source
/// (no copy of a padded temporary into it), and fills only the border
/// around it: rows outside whole, the interior rows' columns outside on
/// either side. Against the reference twice on one kernel (the border is
/// stored on every run, not left from the first).
#[test]
fn a_padding_statement_fills_only_its_border() {
    let src = "P[c,p,q] = I[c,p-1,q-2] where p in 0..9, q in 0..14";
    check_compiled(src, &[("I", &[2, 6, 9])], |dump| {
        let stores: Vec<&str> = dump
            .lines()
            .map(str::trim)
            .filter(|l| l.starts_with("P["))
            .collect();
        assert_eq!(
            stores,
            [
                "P[d0, 0, 4*d2v]x4 = splat(0.0)",
                "P[d0, 0, d2] = 0.0",
                "P[d0, d1, d2] = 0.0",
                "P[d0, d1, d2] = 0.0",
                "P[d0, d1, 4*d2v]x4 = splat(0.0)",
                "P[d0, d1, d2] = 0.0",
                "P[p0, p1, 2]x4 = I[p0, p1 - 1, 0]x4",
                "P[p0, p1, 6]x4 = I[p0, p1 - 1, 4]x4",
                "P[p0, p1, 10] = I[p0, p1 - 1, 8]",
            ],
            "{dump}"
        );
        for range in [
            "for d1 in 1..7:",
            "for d2 in 0..2:",
            "for d2 in 11..14:",
            "for d1 in 7..9:",
        ] {
            assert!(dump.contains(range), "{range}\n{dump}");
        }
    });
    let i = rand(&[2, 6, 9], 5);
    let want = reference(src, &inputs(&[("I", i.clone())]));
    let kernel = Kernel::compile(src, &[("I", &[2, 6, 9])]).unwrap();
    for _ in 0..2 {
        let got = kernel.run(&[("I", i.view())]).unwrap();
        assert_close(&got["P"], &want["P"], 0.0);
    }
}

/// Strided windows read a copy split by residue (`src/stride.rs`): strides
/// 2 and 3, widths the stride does not divide, padding before the window
/// and none, 1D/2D/3D, and a dilated stride (a tap stepping by 2: left as
/// a gather) — each against the reference, on one and two threads.
#[test]
fn strided_windows_read_a_copy_split_by_residue() {
    type Case = (String, Vec<(&'static str, Vec<usize>)>, bool);
    let cases: Vec<Case> = vec![
        (
            "O[b,k,i,j] = I[b,c,2*i+rx-1,2*j+ry-1] * W[k,c,rx,ry] where i in 0..9, j in 0..9"
                .into(),
            vec![("I", vec![1, 4, 17, 17]), ("W", vec![8, 4, 3, 3])],
            true,
        ),
        (
            "O[b,k,i,j] = I[b,c,2*i+rx,2*j+ry] * W[k,c,rx,ry]".into(),
            vec![("I", vec![2, 3, 12, 21]), ("W", vec![8, 3, 3, 3])],
            true,
        ),
        (
            "O[b,k,i] = I[b,c,3*i+r-2] * W[k,c,r] where i in 0..11".into(),
            vec![("I", vec![1, 6, 31]), ("W", vec![16, 6, 5])],
            true,
        ),
        (
            "O[b,k,i,j,l] = I[b,c,i+rx,2*j+ry,2*l+rz] * W[k,c,rx,ry,rz]".into(),
            vec![("I", vec![1, 3, 4, 9, 14]), ("W", vec![8, 3, 2, 3, 2])],
            true,
        ),
        (
            "O[b,k,i,j] = I[b,c,2*i+2*rx,2*j+2*ry] * W[k,c,rx,ry]".into(),
            vec![("I", vec![1, 4, 13, 13]), ("W", vec![8, 4, 3, 3])],
            false,
        ),
    ];
    for (src, shapes, split) in cases {
        let dims: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (*n, s.as_slice())).collect();
        check_compiled(&src, &dims, |dump| {
            assert_eq!(dump.contains("split by residue"), split, "{src}\n{dump}")
        });
    }
}

/// A split window is one statement whose tap is a residue and a step
/// (`r = 2*ra + rq`) when the pairs naming no tap read outside a tensor (a
/// weight indexed by the tap alone) or every pair is a tap; otherwise one
/// statement per residue. (The last two widen their rows of 10 to 12, so
/// they read a padded copy.) Each against the reference.
#[test]
fn split_windows_sum_their_residues_in_one_nest_when_the_domain_allows() {
    type Shapes<'a> = &'a [(&'a str, &'a [usize])];
    let cases: [(&str, Shapes, &str); 4] = [
        (
            "O[b,k,i,j] = I[b,c,2*i+rx-1,2*j+ry-1] * W[k,c,rx,ry] where i in 0..9, j in 0..9",
            &[("I", &[1, 4, 17, 17]), ("W", &[8, 4, 3, 3])],
            "* W[k, c, rx, ryq + 2*rya]",
        ),
        (
            "O[k,j] = I[c,3*j+r-1] * W[k,c,r] where j in 0..10",
            &[("I", &[3, 31]), ("W", &[16, 3, 5])],
            "* W[k, c, rq + 3*ra]",
        ),
        (
            "O[k,j] = I[c,2*j+r] * W[k,c] where r in 0..2, j in 0..10",
            &[("I", &[3, 21]), ("W", &[16, 3])],
            "I+pad/2[c, rq, j + ra]",
        ),
        (
            "O[k,j] = I[c,2*j+r] * W[k,c] where r in 0..3, j in 0..10",
            &[("I", &[3, 21]), ("W", &[16, 3])],
            "I+pad/2[c, 1, j + r1]",
        ),
    ];
    for (src, shapes, form) in cases {
        check_compiled(src, shapes, |dump| {
            assert!(dump.contains(form), "{src}\n{dump}")
        });
    }
}

/// Regressions from a review of the stride pass: a window whose last
/// column reaches past the input where the domain rule (not a padded copy)
/// leaves points out, with `max=` and with a sum that is not a product —
/// the copy's zero past the end must not stand in for them; and a copy of
/// a temporary that changes (`T += ..`) between two statements reading it.
#[test]
fn strided_windows_keep_the_domain_and_follow_their_source() {
    type Shapes<'a> = &'a [(&'a str, &'a [usize])];
    let cases: [(&str, Shapes); 3] = [
        (
            "O[k,j] max= I[c,2*j+r] * W[k,c,r] where j in 0..5",
            &[("I", &[2, 9]), ("W", &[8, 2, 3])],
        ),
        (
            "O[k,j] = I[c,2*j+r] + W[k,c,r] where j in 0..5",
            &[("I", &[2, 9]), ("W", &[8, 2, 3])],
        ),
        (
            "T[c,x] = I[c,x]; O[k,j] = T[c,2*j+r] * W[k,c,r]; T[c,x] += I[c,x]; P[k,j] = T[c,2*j+r] * W[k,c,r]",
            &[("I", &[4, 21]), ("W", &[8, 4, 5])],
        ),
    ];
    for (src, shapes) in cases {
        check_compiled(src, shapes, |_| {});
    }
}

/// `+=` into a caller's input: when the statement's points reach every
/// output element once (plain variables spanning it, or phases tiling it)
/// the nest adds to the input's element as it stores, with no copy pass;
/// otherwise the copy stays. Each against the reference.
#[test]
fn accumulating_into_an_input_copies_it_only_when_needed() {
    type Shapes<'a> = &'a [(&'a str, &'a [usize])];
    let cases: [(&str, Shapes, bool); 4] = [
        (
            "O[i,j] += A[i,j] * 2",
            &[("A", &[5, 9]), ("O", &[5, 9])],
            true,
        ),
        (
            "O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]",
            &[("I", &[2, 3, 7]), ("W", &[3, 4, 4]), ("O", &[2, 4, 14])],
            true,
        ),
        (
            "O[i] += A[i] where i in 0..3",
            &[("A", &[5]), ("O", &[5])],
            false,
        ),
        (
            "O[k,2*i+rx] += I[c,i] * W[c,k,rx]",
            &[("I", &[2, 5]), ("W", &[2, 3, 3]), ("O", &[3, 11])],
            false,
        ),
    ];
    for (src, shapes, in_nest) in cases {
        check_compiled(src, shapes, |dump| {
            assert_eq!(!dump.contains("O'[d0"), in_nest, "{src}\n{dump}")
        });
    }
}

/// A row's partial last vector tile (7 = 4 + 3) is a whole vector that
/// ends where the row ends and overlaps the tile before, so no scalar code
/// is left: its extra lanes store again what the tile before stored (plain
/// stores of values read from other buffers). A strided elementwise
/// statement, a padded copy and its copy-back of 7-wide rows; a tile that
/// accumulates across a loop keeps its scalar tail (storing twice would
/// add twice). Results against the reference on one and two threads.
#[test]
fn partial_vector_tiles_overlap_the_tile_before() {
    check_compiled("O[i,j,k] = relu(X[i,2*j,k])", &[("X", &[5, 6, 7])], |d| {
        assert!(d.contains("O[i, j, 3]x4 = relu(X[i, 2*j, 3]x4)"), "{d}");
        assert!(!d.contains("O[i, j, 6]"), "{d}");
    });
    check_compiled(
        "O[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * W[c,0,rx,ry] where i in 0..7, j in 0..7",
        &[("I", &[1, 16, 7, 7]), ("W", &[16, 1, 3, 3])],
        |d| {
            assert!(d.contains("I+pad[p2, 4]x4 = I[w0, w1, p2 - 1, 3]x4"), "{d}");
            assert!(d.contains("O[w0, w1, w2, 3]x4 = O+wide[w2, 3]x4"), "{d}");
            assert!(!d.contains("I+pad[p2, 7] ="), "{d}");
        },
    );
    check_compiled("O[i,k] = X[i,j,k]", &[("X", &[3, 5, 7])], |d| {
        assert!(d.contains("O[i, 6] = acc"), "{d}");
    });
}

/// No kernel touches memory outside its tensors: every operation of the
/// README's table with each input and each output (written in place by
/// `run_into`) bordering a page the process may not touch, after its last
/// element and then before its first (an access past either end faults),
/// on sizes with partial vectors and tiles; results against the reference.
#[test]
fn every_operation_stays_inside_its_tensors() {
    for n in [3, 7, 17] {
        for (_, src, shapes) in operations(n) {
            let list: Vec<(&str, ArrayD<f32>)> = shapes
                .iter()
                .enumerate()
                .map(|(k, (name, s))| (*name, rand(s, k as u64 + 5)))
                .collect();
            let want = reference(&src, &inputs(&list));
            let dims: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (*n, &s[..])).collect();
            let kernel = Formula::new(&src).unwrap().kernel(&dims).unwrap();
            for at_end in [true, false] {
                let guarded = GuardedInputs::new(list.iter().map(|(n, a)| (*n, a)), at_end);
                let views = guarded.views();
                let mut names: Vec<&String> = want.keys().collect();
                names.sort();
                let mut targets: Vec<Guarded> = names
                    .iter()
                    .map(|name| Guarded::new(&vec![f32::NAN; want[*name].len()], at_end))
                    .collect();
                let mut outputs: Vec<(&str, ndarray::ArrayViewMutD<f32>)> = names
                    .iter()
                    .zip(&mut targets)
                    .map(|(name, g)| (name.as_str(), g.view_mut(want[*name].shape())))
                    .collect();
                kernel.run_into(&views, &mut outputs).unwrap();
                for (name, out) in &outputs {
                    assert_close(&out.to_owned(), &want[*name], 1e-4);
                }
            }
        }
    }
}

/// Loads of every other element read whole pairs of vectors from an even
/// element, shared between a row's two residues, and never an element
/// outside the tensor: each input here borders a page the process may not
/// touch, after its last element and then before its first, so a read past
/// either end faults. The shapes put a stride-2 load's last lane on the
/// tensor's last element (where its pair would run one past it), its first
/// on element 1 (the pair's start is element 0), and residue copies of odd
/// and even rows; results against the reference on one and two threads.
#[test]
fn stride_2_loads_stay_inside_their_tensors() {
    // (formula, shape of X, shape of W or none)
    let cases: [(&str, &[usize], &[usize]); 7] = [
        ("O[i,j] = X[2*i, 2*j]", &[5, 15], &[]),
        ("O[i,j] = X[2*i, 2*j+1]", &[5, 16], &[]),
        (
            "O[b,c,i,j] max= X[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2",
            &[1, 3, 8, 16],
            &[],
        ),
        (
            "O[b,c,i,j] max= X[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2",
            &[1, 3, 9, 17],
            &[],
        ),
        (
            "O[b,c,i,j] = X[b,c,2*i+rx-1,2*j+ry-1] * W[c,0,rx,ry] where i in 0..8, j in 0..8",
            &[1, 3, 16, 16],
            &[3, 1, 3, 3],
        ),
        (
            "O[b,c,i,j] = X[b,c,2*i+rx-1,2*j+ry-1] * W[c,0,rx,ry] where i in 0..8, j in 0..8",
            &[1, 2, 15, 15],
            &[2, 1, 3, 3],
        ),
        (
            "O[b,k,i,j] = X[b,c,2*i+rx,2*j+ry] * W[k,c,rx,ry]",
            &[1, 2, 9, 17],
            &[3, 2, 3, 3],
        ),
    ];
    for (src, x_shape, w_shape) in cases {
        let x = rand(x_shape, 11);
        let w = (!w_shape.is_empty()).then(|| rand(w_shape, 12));
        let mut list = vec![("X", x.clone())];
        list.extend(w.clone().map(|w| ("W", w)));
        let want = reference(src, &inputs(&list));
        let mut shapes: Vec<(&str, &[usize])> = vec![("X", x_shape)];
        shapes.extend(w.as_ref().map(|_| ("W", w_shape)));
        for at_end in [true, false] {
            let guarded = Guarded::new(x.as_slice().unwrap(), at_end);
            let mut views = vec![("X", guarded.view(x_shape))];
            views.extend(w.as_ref().map(|w| ("W", w.view())));
            for threads in [1, 2] {
                let kernel = Kernel::compile(src, &shapes).unwrap().with_threads(threads);
                assert!(
                    kernel.scheduled_ir().contains("x4/2"),
                    "{src}: no stride-2 vector load"
                );
                let got = kernel.run(&views).unwrap();
                assert_close(&got["O"], &want["O"], 1e-4);
            }
        }
    }
}

#[test]
fn strided_and_transposed_views() {
    let a = rand(&[6, 8], 1);
    let b = rand(&[5, 6], 2);
    let at = a.t(); // 8 x 6, not row-major
    let b_step = b.slice(ndarray::s![..;2, ..]).into_dyn(); // 3 x 6
    let f = Formula::new("O[i,j] = A[i,k] * B[j,k]").unwrap();
    let got = f.run(&[("A", at.view()), ("B", b_step.view())]).unwrap();
    let want = reference(
        "O[i,j] = A[i,k] * B[j,k]",
        &inputs(&[("A", at.to_owned()), ("B", b_step.to_owned())]),
    );
    assert_close(&got["O"], &want["O"], 1e-5);
}

#[test]
fn kernels_are_send_and_sync_and_run_on_two_threads_at_once() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Kernel>();
    assert_send_sync::<Formula>();
    let k = Kernel::compile(
        "O[i,j] = A[i,k] * B[k,j]",
        &[("A", &[33, 20]), ("B", &[20, 41])],
    )
    .unwrap();
    let (a, b) = (rand(&[33, 20], 1), rand(&[20, 41], 2));
    let want = reference(
        "O[i,j] = A[i,k] * B[k,j]",
        &inputs(&[("A", a.clone()), ("B", b.clone())]),
    );
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..50 {
                    let got = k.run(&[("A", a.view()), ("B", b.view())]).unwrap();
                    assert_close(&got["O"], &want["O"], 1e-5);
                }
            });
        }
    });
}

#[test]
fn parallel_loops_split_between_threads() {
    // Large enough for the runtime to use threads.
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..30, j in 0..30";
    let (i, w) = (rand(&[1, 8, 30, 30], 1), rand(&[13, 8, 3, 3], 2));
    let want = reference(src, &inputs(&[("I", i.clone()), ("W", w.clone())]));
    for threads in [1, 2, 3] {
        let k = Kernel::compile(src, &[("I", i.shape()), ("W", w.shape())])
            .unwrap()
            .with_threads(threads);
        assert!(
            k.scheduled_ir().contains("parallel"),
            "{}",
            k.scheduled_ir()
        );
        let got = k.run(&[("I", i.view()), ("W", w.view())]).unwrap();
        assert_close(&got["O"], &want["O"], 1e-4);
        // Back to back (workers spinning) and after pauses longer than
        // their spin (asleep: the caller takes the chunks they have not
        // come for, and a task that runs late finds none left).
        for pause in [0, 1, 0, 0, 2, 1] {
            std::thread::sleep(std::time::Duration::from_millis(pause));
            let got = k.run(&[("I", i.view()), ("W", w.view())]).unwrap();
            assert_close(&got["O"], &want["O"], 1e-4);
        }
    }
}

#[test]
fn clif_is_available() {
    let k = Kernel::compile("O[i] = A[i] * 2", &[("A", &[8])]).unwrap();
    let clif = k.clif();
    assert!(clif.contains("function"), "{clif}");
    assert!(clif.contains("fmul") || clif.contains("f32x4"), "{clif}");
}

/// A random well-formed statement: random ranks, affine indices, operators.
fn random_program(seed: &[u32]) -> (String, Vec<(String, Vec<usize>)>) {
    let mut k = 0;
    let mut next = |m: u32| {
        k += 1;
        seed[k % seed.len()] % m
    };
    let vars = ["i", "j", "r"];
    let nvars = 1 + next(3) as usize;
    let op = ["=", "+=", "max=", "min="][next(4) as usize];
    let mut inputs = Vec::new();
    let mut factors = Vec::new();
    for t in 0..1 + next(3) {
        let rank = 1 + next(2) as usize;
        let mut idx = Vec::new();
        let mut shape = Vec::new();
        for _ in 0..rank {
            let v = vars[next(nvars as u32) as usize];
            let c = [1, 1, 2, -1][next(4) as usize];
            let off = next(3) as i64 - 1;
            let e = match (c, off) {
                (1, 0) => v.to_string(),
                (1, o) => format!("{v} + {o}"),
                (-1, o) => format!("{} - {v}", o + 4),
                (c, o) => format!("{c}*{v} + {o}"),
            };
            idx.push(e);
            shape.push(3 + next(5) as usize);
        }
        let name = format!("T{t}");
        factors.push(format!("{name}[{}]", idx.join(", ")));
        inputs.push((name, shape));
    }
    let rhs = match next(4) {
        0 => factors.join(" * "),
        1 => format!("relu({}) + 0.5", factors.join(" - ")),
        2 => format!("{} / 4 * 3", factors.join(" * ")),
        _ => format!("max({}, {})", factors[0], factors.join(" * ")),
    };
    let lhs_vars: Vec<&str> = vars[..nvars]
        .iter()
        .copied()
        .filter(|_| next(3) != 0)
        .collect();
    let ranges: Vec<String> = vars[..nvars]
        .iter()
        .map(|v| format!("{v} in 0..{}", 2 + next(4)))
        .collect();
    if op == "+=" {
        inputs.push(("O".into(), lhs_vars.iter().map(|_| 0).collect()));
    }
    let src = format!(
        "O[{}] {op} {rhs} where {}",
        lhs_vars.join(", "),
        ranges.join(", ")
    );
    (src, inputs)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, .. ProptestConfig::default() })]

    #[test]
    fn random_programs_match_the_reference(seed in prop::collection::vec(0u32..10_000, 24)) {
        let (src, mut shapes) = random_program(&seed);
        // `+=` needs O with the shape the statement's ranges give it.
        if let Some(pos) = shapes.iter().position(|(n, _)| n == "O") {
            let without: Vec<(String, Vec<usize>)> = shapes.iter().filter(|(n, _)| n != "O").cloned().collect();
            let list: Vec<(&str, ArrayD<f32>)> = without.iter().map(|(n, s)| (n.as_str(), rand(s, 1))).collect();
            let probe = src.replace("+=", "=");
            let shape = match einjit::check_source(&probe, &common::shapes(&inputs(&list))) {
                Ok(p) => p.tensor(p.outputs()[0]).shape.clone(),
                Err(_) => return Ok(()),
            };
            shapes[pos].1 = shape;
        }
        let list: Vec<(&str, ArrayD<f32>)> = shapes.iter().enumerate().map(|(k, (n, s))| (n.as_str(), rand(s, k as u64))).collect();
        let inp = inputs(&list);
        let program = einjit::check_source(&src, &common::shapes(&inp));
        let Ok(_) = program else { return Ok(()) };
        let want = reference(&src, &inp);
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> = list.iter().map(|(n, a)| (*n, a.view())).collect();
        let got = Formula::new(&src).unwrap().run(&views).map_err(|e| TestCaseError::fail(format!("{src}: {e}")))?;
        for (name, w) in &want {
            let g = &got[name];
            let ok = g.shape() == w.shape()
                && g.iter().zip(w.iter()).all(|(a, b)| a == b || (a - b).abs() <= 1e-4 * (1.0 + b.abs()));
            prop_assert!(ok, "{src}\ngot  {g}\nwant {w}");
        }
    }

    #[test]
    fn windows_over_short_rows_match_the_reference(
        c in 1usize..4, k in 1usize..4, h in 1usize..5, w in 5usize..18,
        kh in 1usize..4, kw in 1usize..4, pad in 0usize..2, dilation in 1usize..3,
    ) {
        // Rows of 5–17: some widened to whole vectors, some not; one and
        // two threads against the reference.
        let src = format!(
            "O[b,k,i,j] = I[b,c,i+rx-{pad},j+{dilation}*ry-{pad}] * W[k,c,rx,ry] where i in 0..{h}, j in 0..{w}"
        );
        check_compiled(&src, &[("I", &[1, c, h, w]), ("W", &[k, c, kh, kw])], |_| {});
    }

    #[test]
    fn strided_windows_match_the_reference(
        stride in 2usize..4, pad in 0usize..4, k in 1usize..6, w in 5usize..21,
        h in 1usize..4, c in 1usize..4, depthwise in any::<bool>(),
    ) {
        // Stride-2 and 3 windows over padded rows of odd and even widths,
        // dense (each input element read by many outputs: the split copy,
        // its residues aligned when the stride is 2) or depthwise; one and
        // two threads against the reference.
        prop_assume!(w + 2 * pad >= k);
        let out = (w + 2 * pad - k) / stride + 1;
        let (src, weight) = match depthwise {
            true => (
                format!("O[b,c,i,j] = I[b,c,i+rx-{pad},{stride}*j+ry-{pad}] * W[c,0,rx,ry] where i in 0..{h}, j in 0..{out}"),
                vec![c, 1, 1, k],
            ),
            false => (
                format!("O[b,o,i,j] = I[b,c,i+rx-{pad},{stride}*j+ry-{pad}] * W[o,c,rx,ry] where i in 0..{h}, j in 0..{out}"),
                vec![8, c, 1, k],
            ),
        };
        check_compiled(&src, &[("I", &[1, c, h, w]), ("W", &weight)], |_| {});
    }

    #[test]
    fn permutations_match_the_reference(
        dims in prop::collection::vec(1usize..20, 2..5), code in 0usize..24, plus in any::<bool>(),
    ) {
        // Any layout change of a 2-4D tensor (transposing ones are tiled),
        // alone or added to an operand laid out like the output; sizes of
        // 1 and partial tiles included; one and two threads.
        let n = dims.len();
        let (mut rest, mut code, mut perm) = ((0..n).collect::<Vec<_>>(), code, Vec::new());
        for k in (1..=n).rev() {
            perm.push(rest.remove(code % k));
            code /= k;
        }
        let names = ["a", "b", "c", "d"];
        let out: Vec<&str> = perm.iter().map(|&p| names[p]).collect();
        let permuted: Vec<usize> = perm.iter().map(|&p| dims[p]).collect();
        let (out, read) = (out.join(","), names[..n].join(","));
        let src = match plus {
            true => format!("O[{out}] = X[{read}] + 2*Y[{out}]"),
            false => format!("O[{out}] = X[{read}]"),
        };
        let shapes: Vec<(&str, &[usize])> = [("X", &dims[..]), ("Y", &permuted[..])][..1 + plus as usize].to_vec();
        check_compiled(&src, &shapes, |_| {});
    }

    #[test]
    fn malformed_programs_are_errors_not_panics(seed in prop::collection::vec(0u32..10_000, 24), cut in 0usize..60, junk in "[\\[\\]()*+=,;a-z0-9.-]{0,3}") {
        let (src, shapes) = random_program(&seed);
        let mut bad = src.clone();
        let at = bad.char_indices().map(|(i, _)| i).nth(cut % bad.len()).unwrap_or(0);
        bad.insert_str(at, &junk);
        let shapes: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (n.as_str(), s.as_slice())).collect();
        // Either a clean error or a kernel; never a panic.
        if let Ok(f) = Formula::new(&bad) {
            let _ = f.kernel(&shapes);
        }
    }
}

/// Max and min pooling skip NaN inputs as `f32::max`/`f32::min` do (the
/// reference evaluator's definition): vector code (shuffled stride-2 lanes,
/// `maxps`/`minps`) and scalar tails alike.
#[test]
fn pooling_skips_nan_inputs_like_f32_max() {
    let mut x = rand(&[1, 2, 6, 22], 3);
    for (k, v) in x.iter_mut().enumerate() {
        if k % 5 == 0 {
            *v = f32::NAN;
        }
    }
    for src in [
        "O[b,c,i,j] max= I[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2",
        "O[b,c,i,j] min= I[b,c,2*i+rx,2*j+ry] where rx in 0..2, ry in 0..2",
        "O[b,c,i,j] max= I[b,c,i+rx,j+ry] where rx in 0..3, ry in 0..3",
        "O[b,c] max= I[b,c,i,j]",
        // No reduction: each element is `max(-inf, I)`, so -inf for a NaN.
        "O[b,c,i,j] max= I[b,c,i,j]",
        "O[b,c,i,j] min= I[b,c,i,j+1]",
    ] {
        let want = reference(src, &inputs(&[("I", x.clone())]));
        let got = Formula::new(src).unwrap().run(&[("I", x.view())]).unwrap();
        let (w, g) = (&want["O"], &got["O"]);
        assert!(
            w.iter().all(|v| !v.is_nan()),
            "{src}: every window has a number"
        );
        assert_eq!(g, w, "{src}");
    }
}

/// One kernel run again and again on different inputs gives each run's own
/// result: intermediates' storage is reused between runs, and the nests
/// that only fill a private temporary with constants run on its first use
/// only — or, filling zeros (a padded copy's border), not at all, since
/// fresh storage is zeroed: those are not even compiled.
#[test]
fn repeated_runs_of_one_kernel_on_new_inputs() {
    let (mut run_once, mut zeroed) = (0, 0);
    for (_, src, shapes) in operations(7) {
        let formula = Formula::new(&src).unwrap();
        let dims: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (*n, s.as_slice())).collect();
        let kernel = formula.kernel(&dims).unwrap();
        let memory = kernel.memory();
        run_once += memory.once.iter().filter(|&&o| o).count();
        let left_out = memory.zeroed.iter().filter(|&&z| z).count();
        zeroed += left_out;
        assert!(memory
            .zeroed
            .iter()
            .zip(&memory.once)
            .all(|(&z, &o)| o || !z));
        let compiled = kernel.clif().matches("; nest ").count();
        assert_eq!(compiled, memory.once.len() - left_out, "{src}");
        for run in 0..3u64 {
            let list: Vec<(&str, ArrayD<f32>)> = shapes
                .iter()
                .enumerate()
                .map(|(k, (name, s))| (*name, rand(s, 100 * run + k as u64)))
                .collect();
            let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
                list.iter().map(|(name, a)| (*name, a.view())).collect();
            let got = kernel.run(&views).unwrap_or_else(|e| panic!("{src}: {e}"));
            let want = reference(&src, &inputs(&list));
            for (name, w) in &want {
                assert_close(&got[name], w, 1e-4);
            }
        }
    }
    // The padded convolutions' zero borders are filled once: by the
    // allocation.
    assert!(run_once >= 5, "{run_once} nests run once");
    assert_eq!(zeroed, run_once);
}

/// Programs that once went wrong, each run three times on one kernel (with
/// new inputs) on one and two threads against the reference: an epilogue
/// fused onto a reduction of one iteration (its identity store must stay),
/// an epilogue reading a tensor the producer packs, and `+=` into a tensor
/// the statement also reads.
#[test]
fn regressions_against_the_reference() {
    type Shapes = Vec<(&'static str, Vec<usize>)>;
    let cases: Vec<(&str, Shapes)> = vec![
        (
            "T[i,j] max= A[i,2*j+k] where k in 0..1; U[i,j] = T[i,j] * 2; O[j] = U[i,j] * D[i]",
            vec![("A", vec![1, 11]), ("D", vec![1])],
        ),
        (
            "T[i] = A[i,k] * B[k]; U[i] = T[i] * 2; O[j] = U[i] * D[i,j]",
            vec![("A", vec![3, 1]), ("B", vec![1]), ("D", vec![3, 3])],
        ),
        (
            "T[i,j] = A[i,k] * B[k,j]; U[i,j] = relu(T[i,j]); O[j] = U[i,j] * D[i]",
            vec![("A", vec![13, 1]), ("B", vec![1, 10]), ("D", vec![13])],
        ),
        (
            "T[i,j] = A[i,k] * B[k,j]; O[i,j] = T[i,j] * B[j,i]",
            vec![("A", vec![20, 20]), ("B", vec![20, 20])],
        ),
        (
            "T[i,j] = A[i,k] * B[k,j]; O[i,j] = T[i,j] + B[i,j]",
            vec![("A", vec![20, 20]), ("B", vec![20, 20])],
        ),
        ("T[i] = A[i] * 2; T[i] += T[6-i]", vec![("A", vec![7])]),
    ];
    for (src, shapes) in cases {
        let dims: Vec<(&str, &[usize])> = shapes.iter().map(|(n, s)| (*n, s.as_slice())).collect();
        for threads in [1, 2] {
            let kernel = Formula::new(src)
                .unwrap()
                .compile(&dims)
                .unwrap()
                .with_threads(threads);
            for run in 0..3u64 {
                let list: Vec<(&str, ArrayD<f32>)> = shapes
                    .iter()
                    .enumerate()
                    .map(|(k, (name, s))| (*name, rand(s, 10 * run + k as u64) - 0.5))
                    .collect();
                let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
                    list.iter().map(|(name, a)| (*name, a.view())).collect();
                let got = kernel.run(&views).unwrap();
                let want = reference(src, &inputs(&list));
                for (name, w) in &want {
                    assert_close(&got[name], w, 1e-4);
                }
            }
        }
    }
}

/// A copy split by residue of a padded copy of an input reads the input
/// through it (its zeros from the domain rule), and the padded copy goes —
/// unless another statement still reads it. Through a padding of one
/// column, residue 1 is stored one column along (`X/2[.., 1, x + 1] =
/// X[.., 2*x]`), so that both residues' rows start at column 1, where the
/// copy's loop starts: its vector tiles line up with them.
#[test]
fn split_copies_read_through_padded_copies() {
    let strided = "O[k,i,j] = I[c,2*i+rx-1,2*j+ry-1] * W[k,c,rx,ry] where i in 0..8, j in 0..8";
    let shapes: &[(&str, &[usize])] = &[("I", &[3, 16, 16]), ("W", &[8, 3, 3, 3])];
    check_compiled(strided, shapes, |dump| {
        assert!(
            dump.contains("I+pad/2[s0, s1, s2, s3] = I[s0, s1 - 1, -s2 + 2*s3 - 1]"),
            "{dump}"
        );
        assert!(dump.contains("#   s3 in 1..9  (where)"), "{dump}");
        assert!(
            dump.contains("I+pad/2[c, 2*i + rx, ryq, j + ryq + rya]"),
            "{dump}"
        );
        assert!(!dump.contains("I+pad[p0"), "{dump}");
    });
    // Through a padding of two both residues start at column 1 unshifted;
    // the copy's loop starts there too.
    let five = "O[k,i,j] = I[c,2*i+rx-2,2*j+ry-2] * W[k,c,rx,ry] where i in 0..8, j in 0..8";
    check_compiled(five, &[("I", &[3, 16, 16]), ("W", &[8, 3, 5, 5])], |dump| {
        assert!(
            dump.contains("I+pad/2[s0, s1, s2, s3] = I[s0, s1 - 2, s2 + 2*s3 - 2]"),
            "{dump}"
        );
        assert!(dump.contains("#   s3 in 1..9  (where)"), "{dump}");
    });
    let both = format!("{strided}\nP[k,i,j] = I[c,i+rx-1,j+ry-1] * W[k,c,rx,ry]");
    check_compiled(&both, shapes, |dump| {
        assert!(
            dump.contains("I+pad[p0, p1, p2] = I[p0, p1 - 1, p2 - 1]"),
            "{dump}"
        );
        assert!(dump.contains("= I[s0, s1 - 1, -s2 + 2*s3 - 1]"), "{dump}");
    });
}

/// An innermost loop around a register tile runs two iterations per back
/// edge, entering at the second half when its trip count is odd: every
/// trip count from 1 to 9 (GEMM's `k`, with partial tiles), and a window
/// whose clipped bounds give odd and even counts at run time (a 5-point
/// max, the window loop innermost around a one-vector tile).
#[test]
fn register_tiles_two_iterations_per_back_edge_any_trip_count() {
    // A 12x16 GEMM is two whole 6x8 tiles: its 12 FMAs appear twice.
    let kernel = Kernel::compile(
        "O[i,j] = A[i,k] * B[k,j]",
        &[("A", &[12, 9]), ("B", &[9, 16])],
    )
    .unwrap();
    assert_eq!(kernel.clif().matches(" = fma ").count(), 24);
    for k in 1..=9 {
        let src = "O[i,j] = A[i,k] * B[k,j]";
        let inp = inputs(&[("A", rand(&[7, k], 1)), ("B", rand(&[k, 13], 2))]);
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
            inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let got = Formula::new(src).unwrap().run(&views).unwrap();
        assert_close(&got["O"], &reference(src, &inp)["O"], 1e-5);
    }
    // A 1D convolution's 6x8 tile unrolled over its three taps runs two
    // iterations per back edge too (its 36 FMAs twice), for any number of
    // input channels (the loop's trips). (The automatic schedule gives two
    // channels and three taps, a window of short loops, one-vector rows:
    // six accumulators, too few to take two iterations.)
    let src = "O[b,k,i] = I[b,c,i+rx] * W[k,c,rx]";
    let shapes: [(&str, &[usize]); 2] = [("I", &[1, 2, 10]), ("W", &[6, 2, 3])];
    let auto = Kernel::compile(src, &shapes).unwrap();
    assert_eq!(auto.clif().matches(" = fma ").count(), 18);
    let tile = "split i 8; split ii 4; reorder b io c rx k iio iii; unroll k; unroll iio; unroll rx; vectorize iii; accumulate c";
    let conv = Formula::new(src)
        .unwrap()
        .with_schedules(vec![Some(tile.parse().unwrap())])
        .compile(&shapes)
        .unwrap();
    assert_eq!(conv.clif().matches(" = fma ").count(), 72);
    for c in 1..=5 {
        let inp = inputs(&[("I", rand(&[2, c, 13], 4)), ("W", rand(&[7, c, 3], 5))]);
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
            inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let got = Formula::new(src).unwrap().run(&views).unwrap();
        assert_close(&got["O"], &reference(src, &inp)["O"], 1e-5);
    }
    let src = "O[b,i] max= A[b,i+r-2] where r in 0..5, i in 0..21";
    let inp = inputs(&[("A", rand(&[3, 21], 3))]);
    let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
        inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
    let mut kernel = Kernel::compile(src, &shapes).unwrap();
    let schedule = kernel.schedules()[0].to_string();
    assert!(!schedule.contains("unroll r"), "{schedule}");
    for threads in [1, 2] {
        kernel = kernel.with_threads(threads);
        let got = kernel.run(&views).unwrap();
        assert_close(&got["O"], &reference(src, &inp)["O"], 0.0);
    }
}

#[test]
fn register_tiles_share_broadcasts_where_the_registers_fit() {
    // Scalar loads that differ in address or alias region (equal ones are
    // one value to Cranelift).
    let broadcasts = |clif: &str| {
        let mut loads: Vec<&str> = clif
            .lines()
            .filter_map(|l| l.split_once(" = load.f32 ").map(|(_, rest)| rest))
            .collect();
        loads.sort();
        loads.dedup();
        loads.len()
    };
    // GEMM's 6x8 tile loads two vectors of `B` and, loading each
    // broadcast of `A` afresh per FMA, 12 broadcasts per 12 FMAs: 14 loads.
    // Two rows' broadcasts shared by their two FMAs bring that to 12 (one
    // load per FMA): 2 + 8 distinct broadcast loads per iteration, 20 per
    // trip of two iterations (24 with none shared).
    let gemm = Kernel::compile(
        "O[i,j] = A[i,k] * B[k,j]",
        &[("A", &[12, 9]), ("B", &[9, 16])],
    )
    .unwrap();
    let clif = gemm.clif();
    assert_eq!(clif.matches(" = fma ").count(), 24);
    assert_eq!(broadcasts(&clif), 20, "{clif}");
    // A fused epilogue's constants are computed after the loop and do not
    // stop the sharing; a zero both the accumulators start with and the
    // epilogue uses (`max(T, 0)`) is one value, held across the loop: one
    // register too many, so there each FMA loads its broadcast.
    for (epilogue, want) in [("T[i,j] * 0.5 + 0.25", 20), ("max(T[i,j], 0)", 24)] {
        let src = format!("T[i,j] = A[i,k] * B[k,j]; O[i,j] = {epilogue}");
        let kernel = Kernel::compile(&src, &[("A", &[12, 9]), ("B", &[9, 16])]).unwrap();
        assert_eq!(broadcasts(&kernel.clif()), want, "{src}");
    }
    // A 1D convolution's tile unrolled over its three taps (two channels:
    // with more, the channels go innermost) would hold a vector per tap
    // beside the tile: there each FMA loads its broadcast.
    // (Its schedule given: the automatic one is a one-vector tile there.)
    let tile = "split i 8; split ii 4; split k 6; reorder b ko io c rx ki iio iii; unroll ki; unroll iio; unroll rx; vectorize iii; accumulate c; parallel ko";
    let conv = Formula::new("O[b,k,i] = I[b,c,i+rx] * W[k,c,rx]")
        .unwrap()
        .with_schedules(vec![Some(tile.parse().unwrap())])
        .compile(&[("I", &[1, 2, 18]), ("W", &[12, 2, 3])])
        .unwrap();
    let clif = conv.clif();
    let fmas = clif.matches(" = fma ").count();
    assert_eq!(fmas, 72, "{}", conv.schedules()[0]);
    assert_eq!(broadcasts(&clif), fmas, "{}", conv.schedules()[0]);
    // With eight channels they go innermost, one tap per iteration around
    // the tile: GEMM's loop, sharing broadcasts as GEMM does.
    let conv = Kernel::compile(
        "O[b,k,i] = I[b,c,i+rx] * W[k,c,rx]",
        &[("I", &[1, 8, 18]), ("W", &[12, 8, 3])],
    )
    .unwrap();
    let schedule = conv.schedules()[0].to_string();
    assert!(schedule.contains("reorder b ko io rx c "), "{schedule}");
    let clif = conv.clif();
    assert_eq!(clif.matches(" = fma ").count(), 24, "{schedule}");
    assert_eq!(broadcasts(&clif), 20, "{schedule}");
    // A 1x1 convolution over 7×7 pixels: its tile loop shares, and the
    // register allocator spills an accumulator there (the scalar column
    // left over from 49 pixels is computed in the same function); the nest
    // is built again without sharing: every FMA loads its broadcast.
    let conv = Kernel::compile(
        "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0]",
        &[("I", &[1, 32, 7, 7]), ("W", &[13, 32, 1, 1])],
    )
    .unwrap();
    let clif = conv.clif();
    // (Measured with x86's FMA: without it the code, and so its register
    // allocation, differs.)
    #[cfg(target_arch = "x86_64")]
    if is_x86_feature_detected!("fma") {
        assert!(
            clif.starts_with("; nest 1 (built again without shared broadcasts: sharing spilled a vector register)"),
            "{clif}"
        );
    }
    assert!(!gemm.clif().contains("built again"));
    for (src, shapes) in [
        (
            "O[b,k,i,j] = I[b,c,i,j] * W[k,c,0,0]",
            vec![("I", vec![1, 32, 7, 7]), ("W", vec![13, 32, 1, 1])],
        ),
        (
            "O[i,j] = A[i,k] * B[k,j]",
            vec![("A", vec![13, 7]), ("B", vec![7, 19])],
        ),
        (
            "T[i,j] = A[i,k] * B[k,j]; O[i,j] = T[i,j] * 0.5 + 0.25",
            vec![("A", vec![13, 7]), ("B", vec![7, 19])],
        ),
        (
            "O[b,k,i] = I[b,c,i+rx] * W[k,c,rx]",
            vec![("I", vec![1, 2, 18]), ("W", vec![12, 2, 3])],
        ),
        (
            "O[b,k,i] = I[b,c,i+rx] * W[k,c,rx]",
            vec![("I", vec![1, 8, 18]), ("W", vec![12, 8, 3])],
        ),
    ] {
        let inp = inputs(
            &shapes
                .iter()
                .enumerate()
                .map(|(n, (name, s))| (*name, rand(s, n as u64 + 1)))
                .collect::<Vec<_>>(),
        );
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
            inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let got = Formula::new(src).unwrap().run(&views).unwrap();
        assert_close(&got["O"], &reference(src, &inp)["O"], 1e-5);
    }
}

/// `min` / `max` against a constant (a ReLU6's clamp) are one `minps` /
/// `maxps`, and keep `f32::min` / `f32::max`'s answer where the other side
/// is NaN (the constant), on vectors and the scalar tail, the constant on
/// either side.
#[test]
fn min_and_max_against_a_constant_take_the_constant_over_nan() {
    let a = [
        f32::NAN,
        -f32::NAN,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -0.5,
        0.5,
        6.0,
        7.5,
        -2.0,
        3.0,
        100.0,
    ];
    for (src, f) in [
        (
            "O[i] = min(A[i], 6)",
            (|x: f32| x.min(6.0)) as fn(f32) -> f32,
        ),
        ("O[i] = min(6, A[i])", |x: f32| x.min(6.0)),
        ("O[i] = max(A[i], -1)", |x: f32| x.max(-1.0)),
        ("O[i] = max(-1, A[i])", |x: f32| x.max(-1.0)),
    ] {
        let kernel = Kernel::compile(src, &[("A", &[11])]).unwrap();
        let inp = inputs(&[("A", arr(&[11], &a))]);
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
            inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let got = kernel.run(&views).unwrap();
        for (&x, &g) in a.iter().zip(got["O"].iter()) {
            assert!(g == f(x), "{src} at {x}: {g}, want {}", f(x));
        }
    }
}

#[test]
fn vector_relu_clears_negatives_and_nans() {
    // Two vectors and a scalar tail: NaN of either sign, ±inf, ±0, a
    // denormal of either sign.
    let a = [
        f32::NAN,
        -f32::NAN,
        f32::NEG_INFINITY,
        f32::INFINITY,
        -0.0,
        0.0,
        -1.5,
        2.5,
        1e-45,
        -1e-45,
        3.0,
    ];
    let want = [
        0.0,
        0.0,
        0.0,
        f32::INFINITY,
        0.0,
        0.0,
        0.0,
        2.5,
        1e-45,
        0.0,
        3.0,
    ];
    let src = "O[i] = relu(A[i])";
    let kernel = Kernel::compile(src, &[("A", &[11])]).unwrap();
    assert!(kernel.clif().contains(" = sshr "), "{}", kernel.clif());
    let inp = inputs(&[("A", arr(&[11], &a))]);
    let views: Vec<(&str, ndarray::ArrayViewD<f32>)> =
        inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let got = kernel.run(&views).unwrap();
    for (k, (&g, &w)) in got["O"].iter().zip(&want).enumerate() {
        assert!(g == w, "relu({}) = {g}, want {w}", a[k]);
    }
    assert_close(&got["O"], &reference(src, &inp)["O"], 0.0);
}

/// Random statements over whole dimensions (no `where`: every range is its
/// dimension), which is where dimensions indexed together merge
/// (`src/collapse.rs`): products, a relu quotient and a sum with a
/// constant, `=` and `max=`, reads in and out of order, against the
/// reference on one and two threads. A fixed seed; some of them merge.
#[test]
fn random_statements_over_whole_dimensions_match_the_reference() {
    let vars = ["a", "b", "c", "d"];
    let mut state: u64 = 12345;
    let mut next = |m: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % m
    };
    let join = |idx: &[usize]| idx.iter().map(|&v| vars[v]).collect::<Vec<_>>().join(",");
    let mut merged = 0;
    for _ in 0..400 {
        let sizes: Vec<usize> = (0..4).map(|_| 1 + next(5) as usize).collect();
        let lhs: Vec<usize> = (0..4).filter(|_| next(3) != 0).collect();
        let mut reads = Vec::new();
        let mut shapes = Vec::new();
        for t in 0..1 + next(2) {
            let mut idx: Vec<usize> = (0..4).filter(|_| next(2) == 0).collect();
            if idx.is_empty() {
                idx.push(next(4) as usize);
            }
            if next(3) == 0 {
                idx.reverse();
            }
            reads.push(format!("T{t}[{}]", join(&idx)));
            shapes.push((
                format!("T{t}"),
                idx.iter().map(|&v| sizes[v]).collect::<Vec<_>>(),
            ));
        }
        let op = ["=", "max=", "="][next(3) as usize];
        let rhs = match next(3) {
            0 => reads.join(" * "),
            1 => format!("relu({}) / 4", reads.join(" - ")),
            _ => format!("{} + 1", reads.join(" * ")),
        };
        let src = format!("O[{}] {op} {rhs}", join(&lhs));
        let shapes: Vec<(&str, &[usize])> = shapes
            .iter()
            .map(|(n, s)| (n.as_str(), s.as_slice()))
            .collect();
        // (Some draws are not programs: an output variable with no range.)
        let Ok(kernel) = Kernel::compile(&src, &shapes) else {
            continue;
        };
        merged += usize::from(kernel.lowered_ir().contains("merged"));
        check_compiled(&src, &shapes, |_| {});
    }
    assert!(merged > 10, "{merged}");
}
