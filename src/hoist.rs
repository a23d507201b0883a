//! Factors constant across a reduction leave it: in `O[b,c] = I[b,c,i,j] /
//! 784` (a global average pool) or `O[i] = A[i,k] * s[i]`, the divisor
//! and `s[i]` do not change while `i`, `j` or `k` run, so the sum is taken
//! of the rest and scaled once per output element, by an epilogue that
//! runs in place when the element is final (see [`crate::fuse`]). A global
//! average pool then adds vectors instead of dividing each (0.032 → 0.007
//! ms for 256 channels of 28×28 on one thread). Checked program → checked
//! program.
//!
//! Only `=` sums whose left-hand side is distinct plain variables, and
//! factors whose reads are in bounds at every point (so they exclude no
//! point): regrouping is exact up to floating-point reassociation, except
//! that an output element no point reaches becomes `0 · factor` — `NaN`
//! rather than `0` where that factor is ±∞ or `NaN`.

use crate::affine::Var;
use crate::check::{Combine, Epilogue, Expr, Init, Program, Statement};
use crate::syntax::ast::BinOp;

/// Every statement with its reduction-invariant factors moved to an epilogue.
pub fn hoist_factors(program: &Program) -> Program {
    let mut out = program.clone();
    for k in 0..out.statements.len() {
        if let Some(st) = hoisted(&out, &out.statements[k]) {
            out.statements[k] = st;
        }
    }
    out
}

/// `st` with its sum taken of the factors that vary with the reduction and
/// the others applied by an epilogue, if it has both kinds.
fn hoisted(program: &Program, st: &Statement) -> Option<Statement> {
    let reduces = st.vars.iter().any(|v| v.reduced && v.hi - v.lo > 1);
    let mut seen: Vec<Var> = Vec::new();
    let plain_lhs = st.lhs.index.iter().all(|e| {
        e.as_var().is_some_and(|v| {
            let fresh = !st.vars[v.index()].reduced && !seen.contains(&v);
            seen.push(v);
            fresh
        })
    });
    if st.combine != Combine::Sum || st.init != Init::Identity || !reduces || !plain_lhs {
        return None;
    }
    let mut parts = Vec::new();
    factors(&st.rhs, false, &mut parts);
    let invariant = |e: &Expr| invariant(program, st, e);
    let (moved, kept): (Vec<_>, Vec<_>) = parts.into_iter().partition(|(e, _)| invariant(e));
    // Something must still vary in the numerator, and something must move.
    if moved.is_empty() || kept.iter().all(|(_, divide)| *divide) {
        return None;
    }
    let mut st = st.clone();
    st.rhs = product(kept);
    let element = Expr::Read(st.lhs.clone());
    let scale = product(std::iter::once((element, false)).chain(moved).collect());
    let text = {
        let mut shown = st.clone();
        shown.rhs = scale.clone();
        shown.epilogues.clear();
        format!(
            "{} (a factor constant across the reduction, applied once to its sum)",
            program.statement_text(&shown)
        )
    };
    st.epilogues.insert(
        0,
        Epilogue {
            rhs: scale,
            span: st.span,
            text,
        },
    );
    Some(st)
}

/// The factors of a product, each with whether it divides: `a * b / c` is
/// `a`, `b`, `/c`.
fn factors(e: &Expr, divide: bool, out: &mut Vec<(Expr, bool)>) {
    match e {
        Expr::Binary(BinOp::Mul, a, b) => {
            factors(a, divide, out);
            factors(b, divide, out);
        }
        Expr::Binary(BinOp::Div, a, b) if !divide => {
            factors(a, false, out);
            out.push(((**b).clone(), true));
        }
        _ => out.push((e.clone(), divide)),
    }
}

/// `f1 * f2 / d1 ...` in the given order (the multiplied factors first).
fn product(parts: Vec<(Expr, bool)>) -> Expr {
    let (divisors, numerator): (Vec<_>, Vec<_>) = parts.into_iter().partition(|(_, d)| *d);
    let mul = |a: Expr, b: Expr| Expr::Binary(BinOp::Mul, Box::new(a), Box::new(b));
    let div = |a: Expr, b: Expr| Expr::Binary(BinOp::Div, Box::new(a), Box::new(b));
    let top = numerator
        .into_iter()
        .map(|(e, _)| e)
        .reduce(mul)
        .unwrap_or(Expr::Const(1.0));
    divisors.into_iter().fold(top, |acc, (d, _)| div(acc, d))
}

/// Whether `e` reads no reduced variable, and every read it makes is in
/// bounds at every point of the statement (so it excludes no point).
fn invariant(program: &Program, st: &Statement, e: &Expr) -> bool {
    let range = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);
    e.reads().iter().all(|a| {
        let shape = &program.tensor(a.tensor).shape;
        a.index.iter().zip(shape).all(|(x, &n)| {
            x.vars().all(|v| !st.vars[v.index()].reduced)
                && x.bounds_over(&range)
                    .is_some_and(|(lo, hi)| lo >= 0 && hi < n as i64)
        })
    })
}
