//! Programs of several statements: the dataflow checks, elementwise fusion
//! (conv → bias → activation as one nest, no intermediate buffer), the
//! memory plan for intermediates — each pipeline against the reference
//! evaluator run statement by statement, unfused.

mod common;
use common::*;
use einjit::check::OutputSelection;
use einjit::Formula;

/// Run `src` through the JIT (fused and unfused) and compare both with the
/// reference; returns the fused kernel's scheduled dump.
fn check_pipeline(src: &str, inputs: &Inputs) -> String {
    let want = reference(src, inputs);
    let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
        inputs.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    for fuse in [true, false] {
        let f = Formula::new(src).unwrap().with_fusion(fuse);
        let got = f.run(&views).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(got.len(), want.len(), "outputs of {src}");
        for (name, w) in &want {
            assert_close(&got[name], w, 1e-4);
        }
    }
    let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
    Formula::new(src)
        .unwrap()
        .kernel(&shapes)
        .unwrap()
        .scheduled_ir()
}

const CONV_BIAS_RELU: &str = "T[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..H, j in 0..W\nO[b,k,i,j] = relu(T[b,k,i,j] + Bias[k])";

fn conv_inputs(b: usize, c: usize, k: usize, h: usize, w: usize) -> Inputs {
    inputs(&[
        ("I", rand(&[b, c, h, w], 1)),
        ("W", rand(&[k, c, 3, 3], 2)),
        ("Bias", rand(&[k], 3)),
    ])
}

fn sized(src: &str, h: usize, w: usize) -> String {
    src.replace("0..H", &format!("0..{h}"))
        .replace("0..W", &format!("0..{w}"))
}

#[test]
fn conv_bias_relu_fuses_into_one_nest_without_the_intermediate() {
    // (Rows of 9 widen to 12: the steps run over the wide rows into
    // `O+wide`, copied out after.)
    for (b, c, k, h, w, out) in [
        (1, 3, 8, 6, 9, "O+wide"),
        (2, 2, 7, 5, 17, "O"),
        (1, 1, 1, 1, 1, "O"),
        (1, 4, 12, 8, 16, "O"),
    ] {
        let src = sized(CONV_BIAS_RELU, h, w);
        let dump = check_pipeline(&src, &conv_inputs(b, c, k, h, w));
        let fused = format!("# fused: {out}[b, k, i, j] = relu(T[b, k, i, j] + Bias[k]) is applied to each finished element of T[b, k, i, j] = ");
        assert!(dump.contains(&fused), "{dump}");
        let signature = dump.lines().find(|l| l.starts_with("func(")).unwrap();
        assert!(!signature.contains("T:"), "{signature}");
        let epilogue = format!("then, in place on each finished element: {out}[b, k, i, j] = relu(T[b, k, i, j] + Bias[k])");
        assert!(dump.contains(&epilogue), "{dump}");
    }
    // With the 6x8 register tile (8 channels: a 4-channel window of short
    // loops gets one-vector rows): bias and relu applied to the tile right
    // after its reduction, as vectors.
    let dump = check_pipeline(&sized(CONV_BIAS_RELU, 8, 16), &conv_inputs(1, 8, 12, 8, 16));
    assert!(
        dump.contains("O[b, 6*ko, i, 8*jo]x4 = relu(O[b, 6*ko, i, 8*jo]x4 + splat(Bias[6*ko]))"),
        "{dump}"
    );
}

#[test]
fn elementwise_chains_fuse_one_after_another() {
    let src =
        "T[i,j] = A[i,k] * B[k,j]\nU[i,j] = T[i,j] + C[j]\nO[i,j] = max(U[i,j], 0.1 * U[i,j])";
    let i = inputs(&[
        ("A", rand(&[9, 5], 1)),
        ("B", rand(&[5, 13], 2)),
        ("C", rand(&[13], 3)),
    ]);
    let dump = check_pipeline(src, &i);
    assert_eq!(dump.matches("# fused:").count(), 2, "{dump}");
    let signature = dump.lines().find(|l| l.starts_with("func(")).unwrap();
    assert_eq!(
        signature,
        "func(A: in f32[9, 5], B: in f32[5, 13], C: in f32[13], O: out f32[9, 13]):"
    );
    // Elementwise producers fuse too (each element has its one value).
    let dump = check_pipeline(
        "T[i] = A[i] * 2\nO[i] = T[i] + 1",
        &inputs(&[("A", rand(&[7], 1))]),
    );
    assert!(dump.contains("# fused: O[i] = T[i] + 1"), "{dump}");
}

#[test]
fn pipelines_that_cannot_fuse_say_why() {
    // Depthwise-separable: the pointwise step reduces over the channels.
    let src = "T[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * D[c,0,rx,ry] where i in 0..6, j in 0..6\nO[b,k,i,j] = T[b,c,i,j] * P[k,c,0,0]";
    let i = inputs(&[
        ("I", rand(&[1, 4, 6, 6], 1)),
        ("D", rand(&[4, 1, 3, 3], 2)),
        ("P", rand(&[5, 4, 1, 1], 3)),
    ]);
    let dump = check_pipeline(src, &i);
    assert!(
        dump.contains(
            "# not fused: O[b, k, i, j] = T[b, c, i, j] * P[k, c, 0, 0]: it reduces over `T`"
        ),
        "{dump}"
    );
    // Pooling after a convolution: relu fuses, the pool reduces.
    let src = "T[b,k,i,j] = I[b,c,i+rx,j+ry] * W[k,c,rx,ry]\nR[b,k,i,j] = relu(T[b,k,i,j])\nO[b,k,i,j] max= R[b,k,2*i+px,2*j+py] where px in 0..2, py in 0..2";
    let i = inputs(&[
        ("I", rand(&[1, 2, 9, 10], 1)),
        ("W", rand(&[3, 2, 3, 3], 2)),
    ]);
    let dump = check_pipeline(src, &i);
    assert!(
        dump.contains("# fused: R[b, k, i, j] = relu(T[b, k, i, j])"),
        "{dump}"
    );
    assert!(
        dump.contains(
            "# not fused: O[b, k, i, j] max= R[b, k, 2*i + px, 2*j + py]: it reduces over `R`"
        ),
        "{dump}"
    );
    // Spatially separable: both steps reduce.
    let src = "T[c,i,j] = I[c,i+rx,j] * K[rx]\nO[c,i,j] = T[c,i,j+ry] * K[ry]";
    let i = inputs(&[("I", rand(&[2, 7, 8], 1)), ("K", rand(&[3], 2))]);
    let dump = check_pipeline(src, &i);
    assert!(
        dump.contains("# not fused: O[c, i, j] = T[c, i, j + ry] * K[ry]: it reduces over `T`"),
        "{dump}"
    );

    let a = || inputs(&[("A", rand(&[6], 1)), ("B", rand(&[7], 2))]);
    // Shifted reads.
    let dump = check_pipeline("T[i] = A[i] * 2\nO[i] = T[i] + T[5-i]", &a());
    assert!(
        dump.contains("it reads `T` at other indices than it writes"),
        "{dump}"
    );
    // A second reader keeps T.
    let dump = check_pipeline("T[i] = A[i] * 2\nO[i] = T[i] + 1\nP[i] = T[i] * 3", &a());
    assert!(
        dump.contains("`T` is also read by another statement"),
        "{dump}"
    );
    // Padding: the zero-bordered copy of B is made after T.
    let dump = check_pipeline("T[i] = A[i] * 2\nO[i] = T[i] * B[i+2]", &a());
    assert!(
        dump.contains("it reads `B+pad`, which is written after `T`'s producer"),
        "{dump}"
    );
    // Without the copy (max does not pad), elements of O get no value.
    let dump = check_pipeline("T[i] = A[i] * 2\nO[i] = max(T[i], B[i+2])", &a());
    assert!(
        dump.contains("some of its reads fall outside their tensors (padding)"),
        "{dump}"
    );
    // A returned intermediate is kept.
    let f = Formula::new("T[i] = A[i] * 2\nO[i] = T[i] + 1")
        .unwrap()
        .with_outputs(OutputSelection::All);
    let k = f.kernel(&[("A", &[6])]).unwrap();
    assert!(
        k.scheduled_ir().contains("`T` is returned"),
        "{}",
        k.scheduled_ir()
    );
    let out = f.run(&[("A", rand(&[6], 1).view())]).unwrap();
    assert_close(&out["T"], &rand(&[6], 1).mapv(|x| x * 2.0), 1e-6);
}

#[test]
fn dead_intermediates_lend_their_storage() {
    // A chain of three matrix products: `X·W`'s storage is free once the
    // second product has read it.
    let src = "T[i,j] = A[i,k] * B[k,j]\nU[i,j] = T[i,k] * B[k,j]\nV[i,j] = U[i,k] * B[k,j]\nO[i,j] = V[i,k] * B[k,j]";
    let i = inputs(&[("A", rand(&[8, 8], 1)), ("B", rand(&[8, 8], 2))]);
    let dump = check_pipeline(src, &i);
    assert!(
        dump.contains("# memory: V reuses the storage of T (dead by then)"),
        "{dump}"
    );
    let k = Formula::new(src)
        .unwrap()
        .kernel(&[("A", &[8, 8]), ("B", &[8, 8])])
        .unwrap();
    let allocated: usize = k.memory().len.iter().sum();
    // A, B are the caller's; O, T, U own storage; V shares T's.
    assert_eq!(allocated, 3 * 64);
}

#[test]
fn fused_epilogues_follow_any_schedule_of_their_producer() {
    use einjit::schedule::Schedule;
    let src = "T[b,k,i,j] = I[b,c,i+rx,j+ry] * W[k,c,rx,ry]\nO[b,k,i,j] = max(T[b,k,i,j] + Bias[k], 0.5 * T[b,k,i,j])";
    let i = inputs(&[
        ("I", rand(&[2, 3, 7, 11], 1)),
        ("W", rand(&[5, 3, 3, 3], 2)),
        ("Bias", rand(&[5], 3)),
    ]);
    let want = reference(src, &i);
    for sched in [
        "reorder c rx ry b k i j",
        "split j 4; reorder b k i jo c rx ry ji; vectorize ji; accumulate c",
        "split k 2; reorder ko c b ki i rx ry j; unroll ki",
        "reorder b i k c j rx ry; parallel i",
        "split j 4; reorder c b k i jo rx ry ji; vectorize ji; parallel b",
    ] {
        let f = Formula::new(src)
            .unwrap()
            .with_schedules(vec![Some(sched.parse::<Schedule>().unwrap())]);
        let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
            i.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let got = f.run(&views).unwrap_or_else(|e| panic!("{sched}: {e}"));
        assert_close(&got["O"], &want["O"], 1e-4);
        let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
        let dump = f.kernel(&shapes).unwrap().scheduled_ir();
        assert!(dump.contains("# fused:"), "{sched}\n{dump}");
    }
    // A schedule for the consumer keeps it a nest of its own (it used to
    // be fused and its schedule dropped, even one naming no loop).
    let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
        i.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
    let consumer = |sched: &str| {
        Formula::new(src)
            .unwrap()
            .with_schedules(vec![None, Some(sched.parse::<Schedule>().unwrap())])
    };
    let e = consumer("split zz 4").run(&views).unwrap_err().to_string();
    assert!(e.contains("no loop `zz`"), "{e}");
    let f = consumer("split j 4; reorder b k i jo ji; vectorize ji; parallel k");
    assert_close(&f.run(&views).unwrap()["O"], &want["O"], 1e-4);
    let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
    let dump = f.kernel(&shapes).unwrap().scheduled_ir();
    assert!(dump.contains("it has a schedule of its own"), "{dump}");
    assert!(dump.contains("vectorize ji; parallel k"), "{dump}");
}

#[test]
fn strided_scatters_run_as_one_gather_per_output_phase() {
    let src = "O[b,k,2*i+rx-1,2*j+ry-1] += I[b,c,i,j] * W[c,k,rx,ry]";
    let i = inputs(&[
        ("I", rand(&[2, 3, 5, 7], 1)),
        ("W", rand(&[3, 4, 4, 4], 2)),
        ("O", rand(&[2, 4, 10, 14], 3)),
    ]);
    let dump = check_pipeline(src, &i);
    // Stride 2 and an even kernel: every phase has two taps per dimension,
    // and its taps and offsets are affine in the phase, so the phases are
    // loops (`pi`, `pj`) of one gather that stores into every other element.
    assert!(
        dump.contains("# phases: O[b, k, 2*i + rx - 1, 2*j + ry - 1] += I[b, c, i, j] * W[c, k, rx, ry] runs as one gather over its 4 phases, each storing into O with a stride of 2"),
        "{dump}"
    );
    assert!(
        dump.contains(
            "O[b, k, pi + 2*i, pj + 2*j] += I+pad[b, c, pi + i - rx + 1, pj + j - ry + 1] * W[c, k, 1 - pi + 2*rx, 1 - pj + 2*ry]"
        ),
        "{dump}"
    );
    // The gather is register-blocked and vectorized like any convolution:
    // its registers start from `O`'s elements (no copy pass into `O'`) and
    // scatter into every other element once.
    assert!(dump.contains("acc0 = O[b, 0, pi + 2*i, pj]x4/2"), "{dump}");
    assert!(dump.contains("O'[b, 0, pi + 2*i, pj]x4/2 = acc0"), "{dump}");
    assert!(
        !dump.contains("O'[d0, d1, d2, d3] = O[d0, d1, d2, d3]"),
        "{dump}"
    );
    // An odd kernel gives phases different tap counts: one gather each,
    // into its own quarter of the output, vectorized as a scatter.
    let odd = "O[b,k,2*i+rx-1,2*j+ry-1] += I[b,c,i,j] * W[c,k,rx,ry]";
    let i = inputs(&[
        ("I", rand(&[2, 3, 5, 7], 1)),
        ("W", rand(&[3, 4, 3, 3], 2)),
        ("O", rand(&[2, 4, 9, 13], 3)),
    ]);
    let dump = check_pipeline(odd, &i);
    assert!(
        dump.contains("runs as 4 gathers, one per phase of O"),
        "{dump}"
    );
    assert!(
        dump.contains("O[b, k, 2*i, 2*j] += I[b, c, i - rx, j - ry] * W[c, k, 2*rx + 1, 2*ry + 1]"),
        "{dump}"
    );
    assert!(
        dump.contains(
            "O[b, k, 2*i + 1, 2*j + 1] += I[b, c, i - rx + 1, j - ry + 1] * W[c, k, 2*rx, 2*ry]"
        ),
        "{dump}"
    );
    assert!(dump.contains("]x4/2 = acc"), "{dump}");
    // Stride 3 with output cropping, 1D and 3D, and a kernel too short to
    // reach every phase (those outputs get nothing, as in the scatter).
    type Shapes<'a> = &'a [(&'a str, &'a [usize])];
    let cases: [(&str, Shapes); 3] = [
        (
            "O[k,3*i+rx-2] += I[c,i] * W[c,k,rx]",
            &[("I", &[2, 6]), ("W", &[2, 3, 5]), ("O", &[3, 17])],
        ),
        (
            "O[2*i+rx,2*j+ry,2*l+rz] += I[i,j,l] * W[rx,ry,rz]",
            &[("I", &[3, 2, 4]), ("W", &[3, 2, 3]), ("O", &[7, 5, 9])],
        ),
        (
            "O[k,2*i+rx] += I[c,i] * W[c,k,rx]",
            &[("I", &[2, 5]), ("W", &[2, 3, 1]), ("O", &[3, 10])],
        ),
    ];
    for (n, (src, shapes)) in cases.iter().enumerate() {
        let i: Inputs = shapes
            .iter()
            .enumerate()
            .map(|(k, (name, s))| (name.to_string(), rand(s, (10 * n + k) as u64)))
            .collect();
        let dump = check_pipeline(src, &i);
        assert!(dump.contains("# phases:"), "{dump}");
    }
}

#[test]
fn depthwise_then_pointwise_fuse_at_tile_granularity() {
    // Each row `i` of every channel of `T` is computed and then consumed by
    // the pointwise convolution while it is in cache; results as unfused.
    let src = "T[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * D[c,0,rx,ry] where i in 0..H, j in 0..W\nO[b,k,i,j] = T[b,c,i,j] * P[k,c,0,0]";
    for (c, k, h, w) in [(5, 7, 6, 11), (8, 16, 9, 20), (1, 3, 1, 4)] {
        let src = sized(src, h, w);
        let inp = inputs(&[
            ("I", rand(&[2, c, h, w], 1)),
            ("D", rand(&[c, 1, 3, 3], 2)),
            ("P", rand(&[k, c, 1, 1], 3)),
        ]);
        let dump = check_pipeline(&src, &inp);
        if h > 1 {
            assert!(
                dump.contains("# fused at tile granularity: each iteration of `b, i` computes its slice of `T` and consumes it at once"),
                "{dump}"
            );
        }
        // Two threads split the fused loop's rows.
        let views: Vec<(&str, ndarray::ArrayViewD<'_, f32>)> =
            inp.iter().map(|(n, a)| (n.as_str(), a.view())).collect();
        let shapes: Vec<(&str, &[usize])> = views.iter().map(|(n, a)| (*n, a.shape())).collect();
        let kernel = Formula::new(&src)
            .unwrap()
            .compile(&shapes)
            .unwrap()
            .with_threads(2);
        let want = reference(&src, &inp);
        assert_close(&kernel.run(&views).unwrap()["O"], &want["O"], 1e-4);
    }
}

#[test]
fn chains_fuse_by_the_slices_they_share_and_others_say_why() {
    // Two depthwise convolutions in a row: channel `c` of the second reads
    // only channel `c` of `T` (through its padded copy), so all three nests
    // run channel by channel.
    let dw2 = sized(
        "T[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * D[c,0,rx,ry] where i in 0..H, j in 0..W\nO[b,c,i,j] = T[b,c,i+rx-1,j+ry-1] * E[c,0,rx,ry] where i in 0..H, j in 0..W",
        8,
        9,
    );
    let inp = inputs(&[
        ("I", rand(&[1, 3, 8, 9], 1)),
        ("D", rand(&[3, 1, 3, 3], 2)),
        ("E", rand(&[3, 1, 3, 3], 3)),
    ]);
    let dump = check_pipeline(&dw2, &inp);
    assert!(
        dump.contains("# fused at tile granularity: each iteration of `b, c` computes its slice of `T` and consumes it at once"),
        "{dump}"
    );
    // Nothing else touches the three passed temporaries: each shrinks to
    // one channel's slice on the stack, the padded copies' zeroed on entry.
    for buffer in [
        "I+pad: stack zeroed f32[10, 11]",
        "T: stack f32[8, 9]",
        "T+pad: stack zeroed f32[10, 11]",
    ] {
        assert!(dump.contains(buffer), "{dump}");
    }
    // A full convolution reads every channel and rows i-1..i+1 of `T`: no
    // outer loop of it reads one slice that one iteration of the producer
    // writes.
    let conv2 = sized(
        "T[b,c,i,j] = I[b,c,i+rx-1,j+ry-1] * D[c,0,rx,ry] where i in 0..H, j in 0..W\nO[b,k,i,j] = T[b,c,i+rx-1,j+ry-1] * E[k,c,rx,ry] where i in 0..H, j in 0..W",
        8,
        9,
    );
    let inp = inputs(&[
        ("I", rand(&[1, 3, 8, 9], 1)),
        ("D", rand(&[3, 1, 3, 3], 2)),
        ("E", rand(&[4, 3, 3, 3], 3)),
    ]);
    let dump = check_pipeline(&conv2, &inp);
    assert!(
        dump.contains(
            "# not fused at tile granularity: `T+pad`'s producer and consumer share no outer loop"
        ),
        "{dump}"
    );
}

#[test]
fn intermediates_read_again_after_a_fused_consumer_stay_correct() {
    // `O = U + T` fuses into `U`'s producer, so `T` is then read by that
    // statement's epilogue: `T`'s own producer must not absorb the statement
    // (dropping the epilogue gave `-A`), nor lose `T` while the epilogue
    // reads it (a panic when an unfusable statement sat between them).
    let a = || inputs(&[("A", rand(&[5], 1))]);
    let dump = check_pipeline("T[i] = A[i] * 1\nU[i] = -T[i]\nO[i] = U[i] + T[i]", &a());
    assert!(dump.contains("reads `T` too"), "{dump}");
    check_pipeline("T[i] = A[i] * 1\nU[i] = -T[i]\nO[i] = U[i] + T[4-i]", &a());
    check_pipeline(
        "T[i] = A[i] * 1\nU[i] = T[i] * 2\nV[i] = U[4-i] * 1\nW[i] = V[i] + T[i]",
        &a(),
    );
    let ab = inputs(&[("A", rand(&[4, 3], 1)), ("B", rand(&[3, 5], 2))]);
    check_pipeline(
        "T[i,j] = A[i,k] * B[k,j]\nU[i,j] = relu(T[i,j])\nO[i,j] = U[i,j] * 2 + T[i,j]",
        &ab,
    );
    // A consumer's own epilogues that do not need `T` go along with it.
    let dump = check_pipeline(
        "T[i] = A[i] * 3\nU[i] = T[i] + 1\nV[i] = relu(U[i])\nO[i] = V[i] * 2",
        &a(),
    );
    assert_eq!(dump.matches("# fused:").count(), 3, "{dump}");
    assert!(!dump.contains("T:"), "{dump}");
}
