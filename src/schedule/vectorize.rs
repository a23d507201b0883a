//! Realise `vectorized(4)` loops as F32X4 lanes: a loop of exactly four
//! iterations whose body is stores becomes those stores on vectors. A load
//! stepping forward with the loop variable in its last index (`c*v + ...`,
//! `v` nowhere else) becomes a 4-lane load (a gather when `c > 1`); a value
//! not depending on `v` is broadcast. A store stepping forward likewise stores the
//! vector (a scatter when strided: a transposed convolution's phase); a
//! store not depending on `v` (a reduction over it) combines the vector's
//! lanes into its element. Loops without constant bounds (boundary
//! copies of peeled loops) stay scalar.

use crate::affine::{Affine, Var};
use crate::ir::{Expr, Func, Loop, LoopKind, Stmt, LANES};

pub fn vectorize(mut func: Func) -> Result<Func, String> {
    let body = std::mem::take(&mut func.body);
    let mut out = Vec::with_capacity(body.len());
    for s in body {
        out.extend(vectorize_stmt(&func, s)?);
    }
    func.body = out;
    Ok(func)
}

/// `s` with its vectorized loops realised, rewritten in place.
fn vectorize_stmt(func: &Func, s: Stmt) -> Result<Vec<Stmt>, String> {
    let Stmt::Loop(mut l) = s else {
        return Ok(vec![s]);
    };
    if let LoopKind::Vectorized(w) = l.kind {
        match l.constant_range() {
            Some((lo, hi)) if hi - lo == i64::from(w) && w == LANES => return lanes(func, l, lo),
            _ => {}
        }
    }
    let body = std::mem::take(&mut l.body);
    for s in body {
        l.body.extend(vectorize_stmt(func, s)?);
    }
    if let LoopKind::Vectorized(_) = l.kind {
        l.kind = LoopKind::Serial;
    }
    Ok(vec![Stmt::Loop(l)])
}

/// The lane step of an access: `v` only in the last index, with a positive coefficient.
pub(crate) fn strided(index: &[Affine], v: Var) -> Option<i64> {
    let n = index.len();
    let c = index.get(n.checked_sub(1)?)?.coeff(v);
    (c > 0 && index[..n - 1].iter().all(|e| e.coeff(v) == 0)).then_some(c)
}

fn lanes(func: &Func, l: Loop, first: i64) -> Result<Vec<Stmt>, String> {
    let name = func.var_name(l.var);
    let at_first = |e: &Affine| {
        e.substitute(l.var, &Affine::constant(first))
            .expect("in range")
    };
    let var = l.var;
    l.body
        .into_iter()
        .map(|s| match s {
            Stmt::Store {
                buf,
                index,
                value,
                combine,
                ..
            } => {
                let vector = vector_value(func, &value, var, first, name)?;
                match combine {
                    // Lanes stepping forward: a vector store (or a scatter).
                    _ if strided(&index, var).is_some() => Ok(Stmt::Store {
                        buf,
                        step: strided(&index, var).expect("checked"),
                        index: index.iter().map(at_first).collect(),
                        value: vector,
                        combine,
                    }),
                    // A reduction over the loop: its lanes combine into the one element.
                    Some(c) if index.iter().all(|e| e.coeff(var) == 0) => Ok(Stmt::Store {
                        buf,
                        index,
                        value: Expr::Reduce(c, Box::new(vector)),
                        combine,
                        step: 1,
                    }),
                    _ => Err(format!(
                        "cannot vectorize `{name}`: the store to {} neither steps forward along its last dimension with it nor is a reduction over it",
                        func.buffers[buf.index()].name
                    )),
                }
            }
            _ => Err(format!(
                "cannot vectorize `{name}`: it is not the innermost loop"
            )),
        })
        .collect()
}

/// Whether every statement of `body` is a store whose value can become a
/// vector along `v` (vector or gathered loads, broadcasts).
pub(crate) fn vectorizes(func: &Func, body: &[Stmt], v: Var) -> bool {
    body.iter().all(|s| match s {
        Stmt::Store { value, .. } => vector_value(func, value, v, 0, "").is_ok(),
        _ => false,
    })
}

fn vector_value(func: &Func, e: &Expr, v: Var, first: i64, name: &str) -> Result<Expr, String> {
    if !e.uses_var(v) {
        return Ok(Expr::Broadcast(Box::new(e.clone())));
    }
    Ok(match e {
        Expr::Load {
            buf,
            index,
            lanes: 1,
            ..
        } if strided(index, v).is_some() => Expr::Load {
            buf: *buf,
            index: index
                .iter()
                .map(|x| x.substitute(v, &Affine::constant(first)).expect("in range"))
                .collect(),
            lanes: LANES,
            step: strided(index, v).expect("checked"),
        },
        Expr::Load { buf, .. } => {
            return Err(format!(
                "cannot vectorize `{name}`: the load from {} does not step forward along its last dimension with it",
                func.buffers[buf.index()].name
            ))
        }
        Expr::Unary(op, x) => Expr::Unary(*op, Box::new(vector_value(func, x, v, first, name)?)),
        Expr::Binary(op, a, b) => Expr::Binary(
            *op,
            Box::new(vector_value(func, a, v, first, name)?),
            Box::new(vector_value(func, b, v, first, name)?),
        ),
        Expr::Const(_) | Expr::Local(_) | Expr::Broadcast(_) | Expr::Reduce(..) => {
            unreachable!("does not use the variable")
        }
    })
}
