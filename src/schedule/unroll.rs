//! Realise `unrolled` loops: the body once per iteration, with the loop
//! variable replaced by each value. Loops without constant bounds (boundary
//! copies of peeled loops) stay loops.

use crate::affine::Affine;
use crate::ir::{Func, LoopKind, Stmt};

pub fn unroll(func: &Func) -> Func {
    Func {
        body: func.body.iter().flat_map(unroll_stmt).collect(),
        ..func.clone()
    }
}

fn unroll_stmt(s: &Stmt) -> Vec<Stmt> {
    let Stmt::Loop(l) = s else {
        return vec![s.clone()];
    };
    if l.kind == LoopKind::Unrolled {
        if let Some((lo, hi)) = l.constant_range() {
            // Outer first: substituting may make inner bounds constant.
            return (lo..hi)
                .flat_map(|i| {
                    l.body
                        .iter()
                        .map(move |b| b.substitute(l.var, &Affine::constant(i)))
                        .collect::<Vec<_>>()
                })
                .flat_map(|b| unroll_stmt(&b))
                .collect();
        }
    }
    let mut l = l.clone();
    if l.kind == LoopKind::Unrolled {
        l.kind = LoopKind::Serial;
    }
    l.body = l.body.iter().flat_map(unroll_stmt).collect();
    vec![Stmt::Loop(l)]
}
