//! Every checker error: its message, and the caret under the right span.

mod common;
use common::*;

fn a3() -> Inputs {
    inputs(&[
        ("A", rand(&[3], 1)),
        ("B", rand(&[4], 2)),
        ("M", rand(&[3, 4], 3)),
    ])
}

/// The rendered error's caret line, with the source line above it.
fn caret_under(rendered: &str) -> (String, String) {
    let lines: Vec<&str> = rendered.lines().collect();
    let n = lines.len();
    (lines[n - 2].to_string(), lines[n - 1].to_string())
}

/// The text the `^` marks point at.
fn marked(rendered: &str) -> String {
    let (src, marks) = caret_under(rendered);
    let src: Vec<char> = src.chars().collect();
    marks
        .chars()
        .enumerate()
        .filter(|&(_, c)| c == '^')
        .map(|(i, _)| src[i])
        .collect()
}

#[test]
fn syntax_error_points_at_the_unexpected_token() {
    let e = error("O[i] = A[i] * ", &a3());
    assert!(e.starts_with("error: syntax error: expected"), "{e}");
    assert!(e.contains("an expression"), "{e}");
    assert!(e.contains("--> 1:15"), "{e}");
}

#[test]
fn syntax_error_names_readable_rules() {
    let e = error("O[i] A[i]", &a3());
    assert!(e.contains("`=`, `+=`, `max=` or `min=`"), "{e}");
    let e = error("O[i = A[i]", &a3());
    assert!(e.contains("syntax error"), "{e}");
    assert!(
        !e.contains("index_expr"),
        "rule names must be readable: {e}"
    );
}

#[test]
fn syntax_error_on_second_line_reports_that_line() {
    let e = error("O[i] = A[i]\nP[i] = A[i] +* 2", &a3());
    assert!(e.contains("--> 2:"), "{e}");
    assert!(e.contains("2 | P[i] = A[i] +* 2"), "{e}");
}

#[test]
fn empty_program_is_an_error() {
    let e = error("  # nothing here\n", &a3());
    assert!(e.contains("the program has no statement"), "{e}");
}

#[test]
fn unknown_tensor() {
    let e = error("O[i] = A[i] * Q[i]", &a3());
    assert!(e.contains("unknown tensor `Q`"), "{e}");
    assert_eq!(marked(&e), "Q");
}

#[test]
fn unknown_function() {
    let e = error("O[i] = gelu(A[i])", &a3());
    assert!(e.contains("unknown function `gelu`"), "{e}");
    assert_eq!(marked(&e), "gelu");
}

#[test]
fn function_arity() {
    let e = error("O[i] = max(A[i])", &a3());
    assert!(e.contains("`max` takes 2 argument(s), got 1"), "{e}");
    let e = error("O[i] = exp(A[i], A[i])", &a3());
    assert!(e.contains("`exp` takes 1 argument(s), got 2"), "{e}");
}

#[test]
fn wrong_number_of_indices() {
    let e = error("O[i] = M[i]", &a3());
    assert!(
        e.contains("`M` has 2 dimension(s) but is indexed with 1"),
        "{e}"
    );
    assert_eq!(marked(&e), "M[i]");
}

#[test]
fn non_affine_index() {
    let e = error("O[i] = M[i*j, j]", &a3());
    assert!(e.contains("non-affine index: `i*j`"), "{e}");
    assert_eq!(marked(&e), "i*j");
    let e = error("O[i] = M[(i+1)*(j-1), j]", &a3());
    assert!(e.contains("`(i + 1)*(j - 1)`"), "{e}");
    // A constant factor on either side is affine.
    check_ok("O[i] = M[i*1, 2*j - j]", &a3());
}

#[test]
fn conflicting_sizes_names_both_places() {
    let e = error("O[i] = A[i] * B[i]", &a3());
    assert!(
        e.contains("conflicting sizes for index `i`: 3 from dimension 0 of `A` but 4 from dimension 0 of `B`"),
        "{e}"
    );
    let (_, marks) = caret_under(&e);
    assert_eq!(marks.trim_end(), "  |        ----   ^^^^");
}

#[test]
fn unresolvable_range_suggests_where() {
    let e = error("O[i] = 1.0", &a3());
    assert!(
        e.contains("cannot infer the range of index `i`; give it one with `where i in lo..hi`"),
        "{e}"
    );
    // A reduced variable used only inside an affine index has no range either.
    let e = error("O[i] = A[i + r]", &a3());
    assert!(e.contains("range of index `r`"), "{e}");
    // Two output variables that only constrain each other.
    let e = error("O[i, j] = A[i + j]", &a3());
    assert!(e.contains("cannot infer the range of index `i`"), "{e}");
}

#[test]
fn empty_range_when_kernel_is_larger_than_input() {
    let i = inputs(&[("I", rand(&[3], 1)), ("W", rand(&[5], 2))]);
    let e = error("O[i] = I[i + rx] * W[rx]", &i);
    assert!(e.contains("index `i` has an empty range 0..-1"), "{e}");
    assert!(e.contains("kernel larger than the input"), "{e}");
    assert_eq!(marked(&e), "I[i + rx]");
}

#[test]
fn bad_where_ranges() {
    let e = error("O[i] = A[i] where i in 3..1", &a3());
    assert!(
        e.contains("`where` range of `i` must satisfy 0 <= lo < hi, got 3..1"),
        "{e}"
    );
    assert_eq!(marked(&e), "i in 3..1");
    let e = error("O[i] = A[i] where i in -1..2", &a3());
    assert!(e.contains("got -1..2"), "{e}");
    let e = error("O[i] = A[i] where i in 2..2", &a3());
    assert!(
        e.contains("index `i` has an empty range 2..2 in the `where` clause"),
        "{e}"
    );
    let e = error("O[i] = A[i] where i in 0..j", &a3());
    assert!(
        e.contains("`where` bound must be a constant integer expression"),
        "{e}"
    );
    let e = error("O[i] = A[i] where i in 0..2, i in 0..3", &a3());
    assert!(e.contains("index `i` is given a range twice"), "{e}");
    let e = error("O[i] = A[i] where q in 0..2", &a3());
    assert!(
        e.contains("`where` gives a range to `q`, which the statement does not use"),
        "{e}"
    );
}

#[test]
fn accumulate_into_missing_tensor() {
    let e = error("O[i] += A[i]", &a3());
    assert!(e.contains("`+=` needs an existing tensor `O`"), "{e}");
    assert_eq!(marked(&e), "O");
}

#[test]
fn accumulate_with_mismatched_shape() {
    let i = inputs(&[("A", rand(&[3], 1)), ("O", rand(&[3, 3], 2))]);
    let e = error("O[i] += A[i]", &i);
    assert!(
        e.contains("`+=` into `O` of shape [3, 3]: the statement indexes it with 1 dimension(s)"),
        "{e}"
    );
    let i = inputs(&[("A", rand(&[3], 1)), ("O", rand(&[4], 2))]);
    let e = error("O[i] += A[i]", &i);
    assert!(e.contains("conflicting sizes for index `i`: 3 from dimension 0 of `A` but 4 from dimension 0 of `O`"), "{e}");
}

#[test]
fn output_too_large_is_refused_without_allocating() {
    let e = error(
        "O[i, j, k] = 1.0 where i in 0..100000, j in 0..100000, k in 0..100000",
        &a3(),
    );
    assert!(
        e.contains("`O` would have shape [100000, 100000, 100000]"),
        "{e}"
    );
    assert!(e.contains("exceed the limit"), "{e}");
    let e = error(
        "O[i, j] = 1.0 where i in 0..9223372036854775807, j in 0..9223372036854775807",
        &a3(),
    );
    assert!(e.contains("overflows") || e.contains("overflow"), "{e}");
}

#[test]
fn index_arithmetic_overflow() {
    let e = error("O[i] = A[i + 9223372036854775807 + 1]", &a3());
    assert!(e.contains("integer overflow in index arithmetic"), "{e}");
    let e = error("O[i] = A[99999999999999999999 * i]", &a3());
    assert!(
        e.contains("the integer 99999999999999999999 is too large for an index"),
        "{e}"
    );
    assert_eq!(marked(&e), "99999999999999999999", "{e}");
}

#[test]
fn output_that_never_reaches_zero() {
    let e = error("O[i - 5] = A[i]", &a3());
    assert!(e.contains("output `O` would be empty"), "{e}");
}

#[test]
fn errors_carry_spans_and_line_columns() {
    let shapes = shapes(&a3());
    let err = einjit::check_source("O[i] = A[i] * Q[i]", &shapes).unwrap_err();
    assert_eq!(err.span(), Some(einjit::Span::new(14, 15)));
    assert_eq!(err.line_col(), Some((1, 15)));
    assert!(matches!(err.kind(), einjit::ErrorKind::UnknownTensor(n) if n == "Q"));
}

#[test]
fn reading_a_later_statements_output_is_use_before_definition() {
    let e = error("O[i] = T[i]\nT[i] = A[i]", &a3());
    assert!(
        e.contains("`T` is used before it is defined: statement 2 defines it"),
        "{e}"
    );
    assert!(e.contains("--> 1:8"), "{e}");
    // The defining statement is marked too.
    assert!(e.contains("2 | T[i] = A[i]\n  | ----"), "{e}");
    // Reading a name in its own first definition is just unknown.
    let e = error("T[i] = T[i] + A[i]", &a3());
    assert!(e.contains("unknown tensor `T`"), "{e}");
}

#[test]
fn a_version_replaced_before_it_is_read_is_an_error() {
    let b = inputs(&[("A", rand(&[3], 1)), ("B", rand(&[3], 2))]);
    let e = error("O[i] = A[i]\nO[i] max= B[i]", &b);
    assert!(
        e.contains("`O` written by statement 1 is replaced by statement 2 before anything reads it (`max=` starts a new tensor; use `+=` to add to it, or another name)"),
        "{e}"
    );
    assert!(e.contains("--> 2:1"), "{e}");
    // Reading it first, or accumulating into it, is fine.
    check_ok("O[i] = A[i]\nO[i] = O[i] * B[i]", &b);
    check_ok("O[i] = A[i]\nO[i] += B[i]", &b);
    // Replacing an input is fine: the caller's array is not lost.
    check_ok("A[i] = B[i] * 2", &b);
}

fn check_ok(src: &str, inputs: &Inputs) {
    if let Err(e) = einjit::check_source(src, &shapes(inputs)) {
        panic!("{e}");
    }
}

#[test]
fn errors_render_around_multi_byte_characters() {
    // Spans ending inside `é`, `Ω`, `ι`, `ß` or a zero-width space render
    // with the caret on the character.
    for src in [
        "O[i] = A[i]é",
        "Ω[i] = A[i]",
        "O[ι] = A[ι] * 2 + ",
        "O[i] = A[i] + ß",
        "O[i] = A[i]\u{200b}",
    ] {
        let e = error(src, &a3());
        assert!(e.starts_with("error: "), "{src}: {e}");
        assert!(e.contains("--> 1:"), "{src}: {e}");
    }
    let e = error("O[i] = A[i]é", &a3());
    assert_eq!(marked(&e), "é", "{e}");
}

#[test]
fn huge_index_coefficients_are_refused_with_their_access() {
    let big = "4611686018427387904";
    let cases: Vec<(String, Inputs, &str)> = vec![
        (
            format!("O[i] = B[{big}*i]"),
            inputs(&[("B", rand(&[5], 1))]),
            "B",
        ),
        (
            format!("O[i] = A[{big}*i] + B[i]"),
            inputs(&[("A", rand(&[12], 1)), ("B", rand(&[5], 2))]),
            "A",
        ),
        (
            format!("O[b,c,i] = I[b,c,i+{big}*rx-1] * W[c,0,rx] where i in 0..5"),
            inputs(&[("I", rand(&[1, 1, 7], 1)), ("W", rand(&[1, 1, 3], 2))]),
            "I",
        ),
        (
            format!("O[b,k,{big}*i+rx] += I[b,c,i] * W[c,k,rx]"),
            inputs(&[
                ("I", rand(&[2, 4, 7], 1)),
                ("W", rand(&[4, 2, 1], 2)),
                ("O", rand(&[2, 2, 13], 3)),
            ]),
            "O",
        ),
    ];
    for (src, i, tensor) in cases {
        let e = error(&src, &i);
        assert!(
            e.contains(&format!(
                "an index of `{tensor}` reaches beyond 2³² elements"
            )) || e.contains("integer overflow in index arithmetic"),
            "{src}: {e}"
        );
        assert!(e.contains("--> 1:"), "{e}");
    }
    // Large but meaningful strides stay legal.
    let ok = inputs(&[("A", rand(&[3, 70000], 1))]);
    einjit::check_source("O[i] = A[0, 65536*i] where i in 0..2", &shapes(&ok)).unwrap();
}

#[test]
fn overly_deep_expressions_are_errors_not_stack_overflows() {
    let i = inputs(&[("A", rand(&[3, 2], 1))]);
    let nested = |n: usize| format!("O[i] = {}A[i,0]{}", "relu(".repeat(n), ")".repeat(n));
    let chain = |n: usize| format!("O[i] = A[i,0]{}", " + A[i,1]".repeat(n));
    let index_chain = |n: usize| format!("O[i] = A[i{},0]", " + 0".repeat(n));
    for src in [nested(3000), chain(20000), index_chain(20000), nested(300)] {
        let e = error(&src, &i);
        assert!(
            e.contains("expression too deep: more than 256 levels"),
            "{e}"
        );
        assert!(e.contains("--> 1:"), "{e}");
    }
    // Parentheses add no level; pest refuses them first when too deep.
    for n in [1000, 20000] {
        let src = format!("O[i] = {}A[i,0]{}", "(".repeat(n), ")".repeat(n));
        if let Ok(p) = einjit::check_source(&src, &shapes(&i)) {
            assert_eq!(p.statements.len(), 1);
        }
    }
    // Within the limit they check and run.
    for src in [nested(200), chain(200), index_chain(200)] {
        let want = reference(&src, &i);
        let views = [("A", i["A"].view())];
        let got = einjit::Formula::new(&src).unwrap().run(&views).unwrap();
        assert_close(&got["O"], &want["O"], 1e-4);
    }
}

#[test]
fn division_in_an_index_says_so() {
    let e = error("O[i] = M[i/2, 0]", &a3());
    assert!(
        e.contains("an index is integer arithmetic with `+`, `-` and `*` only: no `/`"),
        "{e}"
    );
    assert_eq!(marked(&e), "/", "{e}");
    // A `/` between values is division, as before.
    let i = a3();
    einjit::check_source("O[i] = M[i, 0] / 2", &shapes(&i)).unwrap();
}
