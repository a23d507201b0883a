//! Realise `unrolled` loops: the body once per iteration, with the loop
//! variable replaced by each value. Loops without constant bounds (boundary
//! copies of peeled loops) stay loops. Any serial loop of exactly one
//! iteration is replaced by its body too, and one of none dropped: in the
//! boundary copy of a peeled loop (a partial last tile) that makes the
//! inner bounds constant, so the tile's vector loops stay vectors.

use crate::affine::Affine;
use crate::ir::{Bound, Func, Loop, LoopKind, Stmt};

pub fn unroll(func: &Func) -> Func {
    func.with_body(
        func.body
            .iter()
            .flat_map(|s| unroll_stmt(s, true))
            .collect(),
    )
}

/// `top`: the root loop of a nest, kept even with one iteration so that the
/// nest keeps its shape (and its parallel loop stays the one the runtime
/// splits).
fn unroll_stmt(s: &Stmt, top: bool) -> Vec<Stmt> {
    let Stmt::Loop(l) = s else {
        return vec![s.clone()];
    };
    let inlined = matches!(
        l.kind,
        LoopKind::Serial | LoopKind::Unrolled | LoopKind::Accumulating
    );
    if l.kind != LoopKind::Parallel && l.is_empty() {
        return Vec::new();
    }
    match l.constant_range() {
        Some((lo, hi)) if hi == lo + 1 && inlined && !top => {
            return l
                .body
                .iter()
                .map(|b| b.substitute(l.var, &Affine::constant(lo)))
                .flat_map(|b| unroll_stmt(&b, false))
                .collect();
        }
        _ => {}
    }
    if matches!(l.kind, LoopKind::Unrolled | LoopKind::UnrolledAccumulating) {
        if let Some((lo, hi)) = l.constant_range() {
            // Outer first: substituting may make inner bounds constant.
            let body: Vec<Stmt> = (lo..hi)
                .flat_map(|i| {
                    l.body
                        .iter()
                        .map(move |b| b.substitute(l.var, &Affine::constant(i)))
                        .collect::<Vec<_>>()
                })
                .flat_map(|b| unroll_stmt(&b, false))
                .collect();
            if l.kind == LoopKind::Unrolled {
                return body;
            }
            // One pass of an accumulating loop around the unrolled body:
            // `accumulate` keeps its output elements in registers, then
            // inlines it.
            return vec![Stmt::Loop(Loop {
                var: l.var,
                lo: vec![Bound::constant(0)],
                hi: vec![Bound::constant(1)],
                kind: LoopKind::Accumulating,
                body,
            })];
        }
    }
    vec![Stmt::Loop(Loop {
        var: l.var,
        lo: l.lo.clone(),
        hi: l.hi.clone(),
        kind: match l.kind {
            LoopKind::Unrolled => LoopKind::Serial,
            LoopKind::UnrolledAccumulating => LoopKind::Accumulating,
            kind => kind,
        },
        body: l.body.iter().flat_map(|s| unroll_stmt(s, false)).collect(),
    })]
}
