//! The language's semantics, pinned down: parsing, range inference, output
//! shapes, initialisation, the domain rule, versioning. Values come from the
//! reference evaluator and are cross-checked with the IR interpreter.

mod common;
use common::*;
use einjit::check::RangeSource;
use einjit::check_source;

/// Both oracles agree; returns the outputs.
fn run(src: &str, inputs: &Inputs) -> std::collections::HashMap<String, ArrayD<f32>> {
    let want = reference(src, inputs);
    let got = interpreted(src, inputs);
    assert_eq!(want.keys().len(), got.keys().len());
    for (name, w) in &want {
        assert_close(&got[name], w, 1e-5);
    }
    want
}

fn ranges(src: &str, inputs: &Inputs) -> Vec<(String, i64, i64)> {
    let p = check_source(src, &shapes(inputs)).unwrap_or_else(|e| panic!("{e}"));
    p.statements[0]
        .vars
        .iter()
        .map(|v| (v.name.clone(), v.lo, v.hi))
        .collect()
}

fn r(name: &str, lo: i64, hi: i64) -> (String, i64, i64) {
    (name.to_string(), lo, hi)
}

// ---- syntax ----

#[test]
fn statements_separated_by_newlines_and_semicolons_with_comments() {
    let i = inputs(&[("A", arr(&[2], &[1.0, 2.0]))]);
    let src = "# doubling\nT[i] = A[i] * 2   # twice\n\n; U[i] = T[i] + 1; V[i] = -U[i]\n";
    let out = run(src, &i);
    assert_eq!(out["V"], arr(&[2], &[-3.0, -5.0]));
    assert_eq!(out.len(), 1, "intermediates T and U are not returned");
}

#[test]
fn arithmetic_precedence_unary_minus_and_numbers() {
    let i = inputs(&[("A", arr(&[1], &[3.0]))]);
    let cases = [
        ("O[i] = 1 + 2 * A[i]", 7.0),
        ("O[i] = (1 + 2) * A[i]", 9.0),
        ("O[i] = A[i] - 1 - 1", 1.0),
        ("O[i] = A[i] / 2 / 3", 0.5),
        ("O[i] = -A[i] * 2", -6.0),
        ("O[i] = - -A[i]", 3.0),
        ("O[i] = 1.5e1 + .5 + A[i]", 18.5),
        ("O[i] = max(A[i], 4) + min(A[i], -1)", 3.0),
        ("O[i] = relu(-A[i]) + abs(-A[i]) + sqrt(A[i] * 3)", 6.0),
    ];
    for (src, want) in cases {
        let out = run(src, &i);
        assert_eq!(out["O"][[0]], want, "{src}");
    }
}

#[test]
fn transcendental_functions() {
    let i = inputs(&[("A", arr(&[2], &[0.5, -1.0]))]);
    let out = run(
        "O[i] = exp(A[i]) + log(exp(A[i])) + tanh(A[i]) + sigmoid(A[i])",
        &i,
    );
    for (k, x) in [0.5f32, -1.0].into_iter().enumerate() {
        let want = x.exp() + x + x.tanh() + 1.0 / (1.0 + (-x).exp());
        assert!((out["O"][[k]] - want).abs() < 1e-5);
    }
}

#[test]
fn scalar_output_with_empty_brackets() {
    let i = inputs(&[
        ("A", arr(&[3], &[1.0, 2.0, 3.0])),
        ("B", arr(&[3], &[4.0, 5.0, 6.0])),
    ]);
    let out = run("S[] = A[i] * B[i]", &i);
    assert_eq!(out["S"].shape(), &[] as &[usize]);
    assert_eq!(out["S"].iter().copied().collect::<Vec<_>>(), vec![32.0]);
}

// ---- range inference ----

#[test]
fn where_range_wins_over_dimensions() {
    let i = inputs(&[("A", rand(&[5], 1))]);
    assert_eq!(
        ranges("O[i] = A[i] where i in 1..3", &i),
        vec![r("i", 1, 3)]
    );
    // The output still spans 0..max+1; unvisited elements hold the identity.
    let out = run("O[i] = A[i] where i in 1..3", &i);
    assert_eq!(out["O"].shape(), &[3]);
    assert_eq!(out["O"][[0]], 0.0);
    assert_eq!(out["O"][[2]], i["A"][[2]]);
}

#[test]
fn whole_index_takes_the_dimension() {
    let i = inputs(&[("A", rand(&[4, 6], 1)), ("B", rand(&[6, 5], 2))]);
    let rs = ranges("O[i, j] = A[i, k] * B[k, j]", &i);
    assert_eq!(rs, vec![r("i", 0, 4), r("j", 0, 5), r("k", 0, 6)]);
    let p = check_source("O[i, j] = A[i, k] * B[k, j]", &shapes(&i)).unwrap();
    assert_eq!(
        p.statements[0].vars[2].source,
        RangeSource::Dimension {
            tensor: "A".into(),
            dim: 1
        }
    );
    assert!(p.statements[0].vars[2].reduced);
    assert!(!p.statements[0].vars[0].reduced);
}

#[test]
fn tensor_comprehensions_rule_matches_pytorch_output_size() {
    // floor((H - d*(K-1) - 1) / s) + 1 for every stride and dilation.
    for (h, k, s, d) in [
        (10, 3, 1, 1),
        (10, 3, 2, 1),
        (11, 3, 2, 1),
        (17, 4, 3, 2),
        (7, 7, 1, 1),
        (9, 2, 4, 3),
    ] {
        let i = inputs(&[("I", rand(&[h], 1)), ("W", rand(&[k], 2))]);
        let src = format!("O[i] = I[{s}*i + {d}*rx] * W[rx]");
        let want = (h - d * (k - 1) - 1) / s + 1;
        assert_eq!(
            ranges(&src, &i)[0],
            r("i", 0, want as i64),
            "{src} H={h} K={k}"
        );
    }
}

#[test]
fn inference_respects_negative_coefficients() {
    // O[i] = A[3 - i]: i in 0..4 keeps 3 - i inside A (size 5).
    let i = inputs(&[("A", arr(&[5], &[0.0, 1.0, 2.0, 3.0, 4.0]))]);
    assert_eq!(ranges("O[i] = A[3 - i]", &i), vec![r("i", 0, 4)]);
    assert_eq!(
        run("O[i] = A[3 - i]", &i)["O"],
        arr(&[4], &[3.0, 2.0, 1.0, 0.0])
    );
}

#[test]
fn inference_chains_through_resolved_variables() {
    // j from B; then i from A[i + j] given j.
    let i = inputs(&[("A", rand(&[6], 1)), ("B", rand(&[3], 2))]);
    assert_eq!(
        ranges("O[i, j] = A[i + j] * B[j]", &i),
        vec![r("i", 0, 4), r("j", 0, 3)]
    );
}

#[test]
fn padding_is_visible_in_ranges_and_dump() {
    let i = inputs(&[("I", rand(&[1, 1, 5, 5], 1)), ("W", rand(&[1, 1, 3, 3], 2))]);
    let src = "O[b,k,i,j] = I[b,c,i+rx-1,j+ry-1] * W[k,c,rx,ry] where i in 0..5, j in 0..5";
    let p = check_source(src, &shapes(&i)).unwrap();
    assert_eq!(
        p.statements[0].vars[2].source,
        RangeSource::Where {
            valid: Some((1, 4))
        }
    );
    let d = dump(src, &i);
    assert!(
        d.contains("i in 0..5  (where; padded: in bounds only for 1..4)"),
        "{d}"
    );
    assert!(d.contains("for rx in max(0, 1 - i)..min(3, 6 - i):"), "{d}");
}

// ---- domain rule ----

#[test]
fn zero_padding_for_sums() {
    // Same-mode 1D conv: out-of-bounds reads contribute nothing.
    let i = inputs(&[
        ("I", arr(&[3], &[1.0, 2.0, 3.0])),
        ("W", arr(&[3], &[1.0, 10.0, 100.0])),
    ]);
    let out = run("O[i] = I[i + rx - 1] * W[rx] where i in 0..3", &i);
    assert_eq!(out["O"], arr(&[3], &[210.0, 321.0, 32.0]));
}

#[test]
fn minus_infinity_padding_for_max() {
    let i = inputs(&[("I", arr(&[3], &[-5.0, -7.0, -6.0]))]);
    let out = run("O[i] max= I[i + r - 1] where i in 0..3, r in 0..3", &i);
    assert_eq!(out["O"], arr(&[3], &[-5.0, -5.0, -6.0]));
    let out = run("O[i] min= I[i + r - 1] where i in 0..3, r in 0..3", &i);
    assert_eq!(out["O"], arr(&[3], &[-7.0, -7.0, -7.0]));
}

#[test]
fn output_elements_nothing_reaches_keep_the_identity() {
    let i = inputs(&[("I", arr(&[2], &[1.0, 2.0]))]);
    let out = run("O[i] max= I[i - 3] where i in 0..4", &i);
    assert_eq!(out["O"].shape(), &[4]);
    assert_eq!(out["O"][[0]], f32::NEG_INFINITY);
    assert_eq!(out["O"][[3]], 1.0);
}

#[test]
fn scatter_crops_writes_outside_the_output() {
    // Transposed conv with padding 1: writes to index -1 and 4 are dropped.
    let i = inputs(&[
        ("I", arr(&[2], &[1.0, 2.0])),
        ("W", arr(&[3], &[1.0, 10.0, 100.0])),
        ("O", arr(&[3], &[0.0, 0.0, 0.0])),
    ]);
    let out = run("O[2*i + rx - 1] += I[i] * W[rx]", &i);
    // i=0: O[-1]+=1, O[0]+=10, O[1]+=100; i=1: O[1]+=2, O[2]+=20, O[3]+=200.
    assert_eq!(out["O"], arr(&[3], &[10.0, 102.0, 20.0]));
}

#[test]
fn affine_output_shape_is_max_plus_one_and_combines_collisions() {
    let i = inputs(&[
        ("I", arr(&[2], &[1.0, 2.0])),
        ("W", arr(&[3], &[1.0, 10.0, 100.0])),
    ]);
    let out = run("O[2*i + rx] = I[i] * W[rx]", &i);
    assert_eq!(out["O"], arr(&[5], &[1.0, 10.0, 102.0, 20.0, 200.0]));
}

#[test]
fn additive_term_without_reduction_variables_is_summed_over_the_domain() {
    // Semantics rule 6: `+ Bias[k]` is added once per (c) point, i.e. C times.
    let i = inputs(&[
        ("A", arr(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        ("Bias", arr(&[2], &[10.0, 20.0])),
    ]);
    let out = run("O[k] = A[k, c] + Bias[k]", &i);
    assert_eq!(out["O"], arr(&[2], &[6.0 + 30.0, 15.0 + 60.0]));
    // The intended bias goes in a second statement.
    let out = run("T[k] = A[k, c]\nO[k] = T[k] + Bias[k]", &i);
    assert_eq!(out["O"], arr(&[2], &[16.0, 35.0]));
}

// ---- initialisation and versions ----

#[test]
fn accumulate_adds_to_the_existing_tensor() {
    let i = inputs(&[
        ("A", arr(&[2], &[1.0, 2.0])),
        ("O", arr(&[2], &[10.0, 20.0])),
    ]);
    assert_eq!(run("O[i] += A[i]", &i)["O"], arr(&[2], &[11.0, 22.0]));
    // Into a tensor an earlier statement made.
    assert_eq!(
        run("T[i] = A[i]\nT[i] += A[i] * 3", &i)["T"],
        arr(&[2], &[4.0, 8.0])
    );
}

#[test]
fn assignment_replaces_and_reads_the_previous_version() {
    let i = inputs(&[("X", arr(&[3], &[1.0, 2.0, 3.0]))]);
    let out = run("X[i] = X[i] * 2\nX[i] = X[i] + 1", &i);
    assert_eq!(out["X"], arr(&[3], &[3.0, 5.0, 7.0]));
    assert_eq!(out.len(), 1, "one output per name: the last version");
    // Reversal reads the old version throughout.
    assert_eq!(run("X[i] = X[2 - i]", &i)["X"], arr(&[3], &[3.0, 2.0, 1.0]));
}

#[test]
fn max_and_min_assign_start_from_infinities() {
    let i = inputs(&[("A", arr(&[2, 3], &[1.0, -2.0, 3.0, -4.0, 5.0, -6.0]))]);
    assert_eq!(run("O[i] max= A[i, j]", &i)["O"], arr(&[2], &[3.0, 5.0]));
    assert_eq!(
        run("O[j] min= A[i, j]", &i)["O"],
        arr(&[3], &[-4.0, -2.0, -6.0])
    );
}

#[test]
fn constant_index_outside_the_tensor_contributes_nothing() {
    let i = inputs(&[("A", arr(&[2], &[1.0, 2.0]))]);
    let out = run("O[i] = A[i] * A[5] where i in 0..2", &i);
    assert_eq!(out["O"], arr(&[2], &[0.0, 0.0]));
}

#[test]
fn outputs_default_to_the_tensors_no_statement_reads() {
    use einjit::check::OutputSelection;
    let i = inputs(&[("A", arr(&[2], &[1.0, 2.0]))]);
    let mut p = check_source("T[i] = A[i]\nU[i] = T[i]\nV[i] = A[i]", &shapes(&i)).unwrap();
    let names = |p: &einjit::check::Program| -> Vec<String> {
        p.outputs()
            .iter()
            .map(|&t| p.tensor(t).name.clone())
            .collect()
    };
    assert_eq!(names(&p), ["U", "V"]);
    p.select_outputs(&OutputSelection::All).unwrap();
    assert_eq!(names(&p), ["T", "U", "V"]);
    p.select_outputs(&OutputSelection::Named(vec!["V".into(), "T".into()]))
        .unwrap();
    assert_eq!(names(&p), ["V", "T"]);
    let e = p
        .select_outputs(&OutputSelection::Named(vec!["A".into()]))
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("`A` is not written by any statement"),
        "{e}"
    );
}
