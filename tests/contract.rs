//! Contraction order: the chosen order is cost-optimal (checked against a
//! brute-force enumeration of every pairing), factored programs compute the
//! same values, and statements that must keep one loop nest do.

mod common;
use common::*;
use einjit::check::Program;
use einjit::contract::{factor_products, Plan};
use einjit::{check_source, ir, lower, reference};
use std::collections::HashMap;

fn checked(src: &str, shapes: &[(&str, &[usize])]) -> Program {
    let shapes: HashMap<String, Vec<usize>> = shapes
        .iter()
        .map(|(n, s)| (n.to_string(), s.to_vec()))
        .collect();
    check_source(src, &shapes).unwrap_or_else(|e| panic!("{e}"))
}

fn plan(src: &str, shapes: &[(&str, &[usize])]) -> Option<Plan> {
    let (_, plans) = factor_products(&checked(src, shapes));
    plans.into_iter().next()
}

/// Brute force, independent of the DP: every way to pair up the operands,
/// each operand a set of (variable, size); a step costs 2 * the product of
/// the sizes of the variables of both sides; the result keeps the
/// variables still used by the other operands or the output.
fn brute_force(operands: Vec<Vec<(char, u64)>>, output: &[char]) -> u64 {
    fn go(ops: Vec<(Vec<(char, u64)>, u64)>, output: &[char]) -> u64 {
        if ops.len() == 1 {
            return ops[0].1;
        }
        let mut best = u64::MAX;
        for i in 0..ops.len() {
            for j in i + 1..ops.len() {
                let mut both = ops[i].0.clone();
                for v in &ops[j].0 {
                    if !both.contains(v) {
                        both.push(*v);
                    }
                }
                let step = 2 * both.iter().map(|v| v.1).product::<u64>();
                let rest: Vec<&(Vec<(char, u64)>, u64)> = ops
                    .iter()
                    .enumerate()
                    .filter(|(k, _)| *k != i && *k != j)
                    .map(|(_, o)| o)
                    .collect();
                let keep: Vec<(char, u64)> = both
                    .iter()
                    .copied()
                    .filter(|v| output.contains(&v.0) || rest.iter().any(|o| o.0.contains(v)))
                    .collect();
                let mut next: Vec<(Vec<(char, u64)>, u64)> = rest.into_iter().cloned().collect();
                next.push((keep, ops[i].1 + ops[j].1 + step));
                best = best.min(go(next, output));
            }
        }
        best
    }
    go(operands.into_iter().map(|o| (o, 0)).collect(), output)
}

#[test]
fn gcn_contracts_x_and_w_first() {
    // n = m = 1000, c = 64, h = 16: X·W first costs ≈3.4e7 flops, A·X first ≈1.3e8.
    let p = plan(
        "O[n,h] = A[n,m] * X[m,c] * W[c,h]",
        &[("A", &[1000, 1000]), ("X", &[1000, 64]), ("W", &[64, 16])],
    )
    .expect("factored");
    assert_eq!(p.describe(), "A·(X·W)");
    assert_eq!(p.flops, 2 * 1000 * 64 * 16 + 2 * 1000 * 1000 * 16);
    assert_eq!(p.single_nest_flops, 3 * 1000 * 1000 * 64 * 16);
}

#[test]
fn chosen_order_is_cost_optimal_on_a_table_of_cases() {
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, Vec<usize>)>,
        Vec<Vec<char>>,
        Vec<char>,
    );
    let cases: Vec<Case> = vec![
        (
            "O[i,j] = A[i,k] * B[j,k,l] * C[i,l]",
            vec![
                ("A", vec![128, 64]),
                ("B", vec![64, 64, 64]),
                ("C", vec![128, 64]),
            ],
            vec![vec!['i', 'k'], vec!['j', 'k', 'l'], vec!['i', 'l']],
            vec!['i', 'j'],
        ),
        (
            "O[n,h] = A[n,m] * X[m,c] * W[c,h]",
            vec![
                ("A", vec![1024, 1024]),
                ("X", vec![1024, 256]),
                ("W", vec![256, 64]),
            ],
            vec![vec!['n', 'm'], vec!['m', 'c'], vec!['c', 'h']],
            vec!['n', 'h'],
        ),
        (
            "O[a,e] = A[a,b] * B[b,c] * C[c,d] * D[d,e]",
            vec![
                ("A", vec![10, 100]),
                ("B", vec![100, 5]),
                ("C", vec![5, 50]),
                ("D", vec![50, 20]),
            ],
            vec![
                vec!['a', 'b'],
                vec!['b', 'c'],
                vec!['c', 'd'],
                vec!['d', 'e'],
            ],
            vec!['a', 'e'],
        ),
        (
            "O[i] = A[i,j] * B[j,k] * C[k,l] * D[l] * E[i]",
            vec![
                ("A", vec![30, 40]),
                ("B", vec![40, 7]),
                ("C", vec![7, 60]),
                ("D", vec![60]),
                ("E", vec![30]),
            ],
            vec![
                vec!['i', 'j'],
                vec!['j', 'k'],
                vec!['k', 'l'],
                vec!['l'],
                vec!['i'],
            ],
            vec!['i'],
        ),
        (
            "S[] = X[a] * Y[a,b] * Z[b]",
            vec![("X", vec![500]), ("Y", vec![500, 3]), ("Z", vec![3])],
            vec![vec!['a'], vec!['a', 'b'], vec!['b']],
            vec![],
        ),
    ];
    for (src, shapes, operands, output) in cases {
        let shape_refs: Vec<(&str, &[usize])> =
            shapes.iter().map(|(n, s)| (*n, s.as_slice())).collect();
        let program = checked(src, &shape_refs);
        let size_of = |c: char| -> u64 {
            let st = &program.statements[0];
            let v = st.vars.iter().find(|v| v.name == c.to_string()).unwrap();
            (v.hi - v.lo) as u64
        };
        let ops: Vec<Vec<(char, u64)>> = operands
            .iter()
            .map(|o| o.iter().map(|&c| (c, size_of(c))).collect())
            .collect();
        let want = brute_force(ops, &output);
        let p = plan(src, &shape_refs).expect("factored");
        assert_eq!(
            p.flops,
            want,
            "{src}: chose {} at {} flops, optimum {want}",
            p.describe(),
            p.flops
        );
    }
}

/// Factored program through lowering and the interpreter == reference of the original.
fn assert_factored_matches(src: &str, inputs: &Inputs) -> Vec<Plan> {
    let program = check_source(src, &shapes(inputs)).unwrap();
    let want = reference::evaluate(&program, inputs).unwrap();
    let (factored, plans) = factor_products(&program);
    // The factored program is still a valid program for the reference evaluator.
    let again = reference::evaluate(&factored, inputs).unwrap();
    let func = lower::lower(&factored);
    ir::verify(&func).unwrap();
    let got = interpret(&factored, &func, inputs);
    for t in factored.outputs() {
        let name = &factored.tensor(t).name;
        assert_close(&got[name], &want[name], 1e-4);
        assert_close(&again[name], &want[name], 1e-4);
    }
    assert_eq!(
        want.len(),
        factored.outputs().len(),
        "intermediates are not outputs"
    );
    plans
}

#[test]
fn factored_programs_compute_the_same_values() {
    let bilinear = inputs(&[
        ("A", rand(&[7, 5], 1)),
        ("B", rand(&[3, 5, 4], 2)),
        ("C", rand(&[7, 4], 3)),
    ]);
    assert_eq!(
        assert_factored_matches("O[i,j] = A[i,k] * B[j,k,l] * C[i,l]", &bilinear).len(),
        1
    );
    let gcn = inputs(&[
        ("A", rand(&[17, 17], 4)),
        ("X", rand(&[17, 6], 5)),
        ("W", rand(&[6, 3], 6)),
    ]);
    let plans = assert_factored_matches("O[n,h] = A[n,m] * X[m,c] * W[c,h]", &gcn);
    assert_eq!(plans[0].describe(), "A·(X·W)");
    // Accumulating into an input, and a pipeline around the product.
    let acc = inputs(&[
        ("A", rand(&[3, 4], 7)),
        ("B", rand(&[4, 5], 8)),
        ("C", rand(&[5, 2], 9)),
        ("O", rand(&[3, 2], 10)),
    ]);
    assert_factored_matches("O[i,l] += A[i,j] * B[j,k] * C[k,l]", &acc);
    assert_factored_matches(
        "T[i,l] = A[i,j] * B[j,k] * C[k,l]\nU[i,l] = relu(T[i,l])",
        &acc,
    );
}

#[test]
fn many_operands_use_the_greedy_search() {
    let names: Vec<String> = (0..12).map(|k| format!("M{k}")).collect();
    let vars: Vec<String> = (0..13).map(|k| format!("v{k}")).collect();
    let factors: Vec<String> = (0..12)
        .map(|k| format!("{}[{},{}]", names[k], vars[k], vars[k + 1]))
        .collect();
    let src = format!("O[v0,v12] = {}", factors.join(" * "));
    let list: Vec<(&str, ArrayD<f32>)> = names
        .iter()
        .enumerate()
        .map(|(k, n)| (n.as_str(), rand(&[2 + k % 3, 2 + (k + 1) % 3], k as u64)))
        .collect();
    let plans = assert_factored_matches(&src, &inputs(&list));
    assert_eq!(plans[0].steps.len(), 11);
}

#[test]
fn statements_that_must_stay_one_nest_are_not_factored() {
    let shapes: &[(&str, &[usize])] = &[
        ("I", &[1, 4, 9]),
        ("W", &[4, 4, 3]),
        ("S", &[4]),
        ("A", &[5, 5]),
        ("B", &[5, 5]),
    ];
    // Affine (coupled) indices.
    assert!(plan("O[b,k,i] = I[b,c,i+rx] * W[k,c,rx] * S[k]", shapes).is_none());
    // Padding (a widened range).
    assert!(plan("O[i,j] = A[i,k] * B[k,j] * A[k,j] where i in 0..7", shapes).is_none());
    // Only two operands, max=, non-product right-hand sides.
    assert!(plan("O[i,j] = A[i,k] * B[k,j]", shapes).is_none());
    assert!(plan("O[i,j] max= A[i,k] * B[k,j] * A[k,j]", shapes).is_none());
    assert!(plan("O[i,j] = A[i,k] * B[k,j] * A[k,j] + 1", shapes).is_none());
}

#[test]
fn the_dump_shows_the_order_and_its_cost() {
    let program = checked(
        "O[n,h] = A[n,m] * X[m,c] * W[c,h]",
        &[("A", &[4, 4]), ("X", &[4, 3]), ("W", &[3, 2])],
    );
    let (factored, _) = factor_products(&program);
    let d = einjit::dump(&factored, &lower::lower(&factored));
    assert!(
        d.contains(
            "# statement 1: contraction order A·(X·W): 1.120e2 flops (single loop nest: 2.880e2)"
        ),
        "{d}"
    );
    assert!(
        d.contains("# statement 1: X·W[m, h] = X[m, c] * W[c, h]"),
        "{d}"
    );
    assert!(
        d.contains("# statement 2: O[n, h] = A[n, m] * X·W[m, h]"),
        "{d}"
    );
}
