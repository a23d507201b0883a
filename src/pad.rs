//! Padded copies: a read that leaves its tensor at the edges of a sum of
//! products (a padded convolution's input) is replaced by a read of a copy
//! of the tensor with a zero border wide enough that it never leaves it.
//! The copy is itself a statement — `P[p0, p1] = I[p0 - 1, p1 - 1] where
//! p0 in 0..H+2, p1 in 0..W+2` — whose zeros come from the domain rule.
//! A point that read outside `I` contributed nothing; it now contributes a
//! product with zero, so results are unchanged (for finite values), and the
//! main nest loses its boundary cases: no peeled copies, no clipped bounds.
//! Checked program → checked program.

use crate::affine::{Affine, Var};
use crate::check::{Combine, Expr, Origin, Program, Statement, Tensor, TensorId};
use crate::contract::product_factors;

/// A padded copy may hold at most this many times the original's elements (plus a little).
const MAX_GROWTH: usize = 4;

pub fn pad_reads(program: &Program) -> Program {
    let mut tensors = program.tensors.clone();
    let mut statements = Vec::new();
    let mut new_index = Vec::new();
    // A caller's input never changes: one copy, with the widest border any
    // statement needs, serves them all (the phases of a transposed conv).
    let needed: Vec<_> = program
        .statements
        .iter()
        .map(|st| padded_reads(program, st))
        .collect();
    let mut widest: Vec<Option<Vec<(i64, i64)>>> = vec![None; program.tensors.len()];
    for (st, needed) in program.statements.iter().zip(&needed) {
        for (path, pads) in needed {
            let t = st.rhs.reads()[*path].tensor;
            if program.tensor(t).origin == Origin::Input {
                let w = widest[t.index()].get_or_insert_with(|| pads.clone());
                for (a, b) in w.iter_mut().zip(pads) {
                    *a = (a.0.max(b.0), a.1.max(b.1));
                }
            }
        }
    }
    let mut copies: Vec<Option<TensorId>> = vec![None; program.tensors.len()];
    for (st, needed) in program.statements.iter().zip(needed) {
        let mut st = st.clone();
        for (path, pads) in needed {
            let t = st.rhs.reads()[path].tensor;
            let pads = widest[t.index()].clone().unwrap_or(pads);
            let id = match copies[t.index()] {
                Some(id) => id,
                None => {
                    let copy = pad_statement(&mut tensors, &st, &path, &pads, statements.len());
                    let id = copy.lhs.tensor;
                    statements.push(copy);
                    if widest[t.index()].is_some() {
                        copies[t.index()] = Some(id);
                    }
                    id
                }
            };
            rewrite_read(&mut st.rhs, &path, id, &pads);
        }
        statements.push(st);
        new_index.push(statements.len() - 1);
    }
    for t in &mut tensors[..program.tensors.len()] {
        if let Origin::Statement(s) = t.origin {
            t.origin = Origin::Statement(new_index[s]);
        }
    }
    Program {
        tensors,
        statements,
        source: program.source.clone(),
        outputs: program.outputs.clone(),
        notes: program.notes.clone(),
        views: program.views.clone(),
    }
}

/// The reads of `st` to pad: (position among the reads, (low, high) pad per dimension).
fn padded_reads(program: &Program, st: &Statement) -> Vec<(usize, Vec<(i64, i64)>)> {
    let (mut reads, mut constant) = (Vec::new(), 1.0);
    if st.combine != Combine::Sum || product_factors(&st.rhs, &mut reads, &mut constant).is_none() {
        return Vec::new();
    }
    let range = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);
    let mut out = Vec::new();
    for (k, a) in st.rhs.reads().into_iter().enumerate() {
        let shape = &program.tensor(a.tensor).shape;
        let pads: Vec<(i64, i64)> = a
            .index
            .iter()
            .zip(shape)
            .map(|(e, &n)| match e.bounds_over(&range) {
                Some((min, max)) => ((-min).max(0), (max - (n as i64 - 1)).max(0)),
                None => (0, 0),
            })
            .collect();
        if pads.iter().all(|&p| p == (0, 0)) {
            continue;
        }
        let padded: usize = shape
            .iter()
            .zip(&pads)
            .map(|(&n, &(l, h))| n + (l + h) as usize)
            .product();
        let original: usize = shape.iter().product();
        if padded <= MAX_GROWTH * original + 4096 {
            out.push((k, pads));
        }
    }
    out
}

/// `P[p...] = I[p - low...] where p in 0..n+low+high`.
fn pad_statement(
    tensors: &mut Vec<Tensor>,
    st: &Statement,
    read: &usize,
    pads: &[(i64, i64)],
    index: usize,
) -> Statement {
    let source = st.rhs.reads()[*read].clone();
    let t = &tensors[source.tensor.index()];
    let shape: Vec<usize> = t
        .shape
        .iter()
        .zip(pads)
        .map(|(&n, &(l, h))| n + (l + h) as usize)
        .collect();
    let name = format!("{}+pad", t.name);
    let id = TensorId(tensors.len() as u32);
    tensors.push(Tensor {
        name,
        shape: shape.clone(),
        origin: Origin::Statement(index),
    });
    let index = (0..shape.len())
        .map(|d| {
            Affine::var(Var(d as u32))
                .add_const(-pads[d].0)
                .expect("small")
        })
        .collect();
    let valid = |d: usize| Some((pads[d].0, shape[d] as i64 - pads[d].1));
    Statement::copy(id, &shape, "p", &valid, source.tensor, index, st.span)
}

/// Point the `target`-th read of `e` at the padded copy.
fn rewrite_read(e: &mut Expr, target: &usize, padded: TensorId, pads: &[(i64, i64)]) {
    fn walk(e: &mut Expr, k: &mut usize, target: usize, padded: TensorId, pads: &[(i64, i64)]) {
        match e {
            Expr::Read(a) => {
                if *k == target {
                    a.tensor = padded;
                    for (x, &(low, _)) in a.index.iter_mut().zip(pads) {
                        *x = x.add_const(low).expect("small");
                    }
                }
                *k += 1;
            }
            Expr::Const(_) => {}
            Expr::Neg(x) => walk(x, k, target, padded, pads),
            Expr::Binary(_, a, b) => {
                walk(a, k, target, padded, pads);
                walk(b, k, target, padded, pads);
            }
            Expr::Call(_, args) => args
                .iter_mut()
                .for_each(|a| walk(a, k, target, padded, pads)),
        }
    }
    walk(e, &mut 0, *target, padded, pads);
}
