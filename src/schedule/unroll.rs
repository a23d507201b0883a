//! Realise `unrolled` loops: the body once per iteration, with the loop
//! variable replaced by each value. Loops without constant bounds (boundary
//! copies of peeled loops) stay loops. Any serial loop of exactly one
//! iteration is replaced by its body too, and one of none dropped: in the
//! boundary copy of a peeled loop (a partial last tile) that makes the
//! inner bounds constant, so the tile's vector loops stay vectors.

use crate::affine::Affine;
use crate::ir::{Bound, Func, Loop, LoopKind, Stmt};

pub fn unroll(mut func: Func) -> Func {
    let body = std::mem::take(&mut func.body);
    func.body = body
        .into_iter()
        .flat_map(|s| unroll_stmt(s, true))
        .collect();
    func
}

/// `top`: the root loop of a nest, kept even with one iteration so that the
/// nest keeps its shape (and its parallel loop stays the one the runtime
/// splits).
fn unroll_stmt(s: Stmt, top: bool) -> Vec<Stmt> {
    let Stmt::Loop(mut l) = s else {
        return vec![s];
    };
    let inlined = matches!(
        l.kind,
        LoopKind::Serial | LoopKind::Unrolled | LoopKind::Accumulating
    );
    if l.kind != LoopKind::Parallel && l.is_empty() {
        return Vec::new();
    }
    // Each iteration's copy of the body, its variable replaced by the
    // iteration's value, then unrolled inside (outer first: substituting
    // may make inner bounds constant).
    let copies = |l: Loop, lo: i64, hi: i64| -> Vec<Stmt> {
        let (var, mut source) = (l.var, l.body);
        let mut out = Vec::new();
        for i in lo..hi {
            // The last iteration takes the body itself.
            let body = match i + 1 == hi {
                true => std::mem::take(&mut source),
                false => source.clone(),
            };
            for mut b in body {
                b.substitute_in_place(var, &Affine::constant(i));
                out.extend(unroll_stmt(b, false));
            }
        }
        out
    };
    match l.constant_range() {
        Some((lo, hi)) if hi == lo + 1 && inlined && !top => return copies(l, lo, hi),
        _ => {}
    }
    // A vector loop's partial tile of constant trips (a padded copy's
    // first columns) becomes straight-line scalar code.
    let partial_vector = matches!(l.kind, LoopKind::Vectorized(w) if l
        .constant_range()
        .is_some_and(|(lo, hi)| hi - lo < i64::from(w)));
    if partial_vector {
        l.kind = LoopKind::Unrolled;
    }
    if matches!(l.kind, LoopKind::Unrolled | LoopKind::UnrolledAccumulating) {
        if let Some((lo, hi)) = l.constant_range() {
            let (var, kind) = (l.var, l.kind);
            let body = copies(l, lo, hi);
            if kind == LoopKind::Unrolled {
                return body;
            }
            // One pass of an accumulating loop around the unrolled body:
            // `accumulate` keeps its output elements in registers, then
            // inlines it.
            return vec![Stmt::Loop(Loop {
                var,
                lo: vec![Bound::constant(0)],
                hi: vec![Bound::constant(1)],
                kind: LoopKind::Accumulating,
                body,
            })];
        }
    }
    l.kind = match l.kind {
        LoopKind::Unrolled => LoopKind::Serial,
        LoopKind::UnrolledAccumulating => LoopKind::Accumulating,
        kind => kind,
    };
    let body = std::mem::take(&mut l.body);
    l.body = body
        .into_iter()
        .flat_map(|s| unroll_stmt(s, false))
        .collect();
    vec![Stmt::Loop(l)]
}
