//! Structural checks of a function: every variable used is bound by an
//! enclosing loop, every access has its buffer's rank, loop variables are not
//! rebound, operands and targets have matching widths. Run after lowering
//! and after every schedule pass.

use super::*;

/// `Err` with a description of the first malformed place (an internal error).
pub fn verify(func: &Func) -> Result<(), String> {
    let mut bound = Vec::new();
    func.body.iter().try_for_each(|s| stmt(func, s, &mut bound))
}

fn affine_ok(func: &Func, e: &Affine, bound: &[Var], what: &str) -> Result<(), String> {
    match e.vars().find(|v| !bound.contains(v)) {
        Some(v) => Err(format!(
            "{what} uses `{}` outside its loop",
            func.var_name(v)
        )),
        None => Ok(()),
    }
}

fn access_ok(func: &Func, buf: BufId, index: &[Affine], bound: &[Var]) -> Result<(), String> {
    let b = func
        .buffers
        .get(buf.index())
        .ok_or_else(|| format!("unknown buffer {}", buf.0))?;
    if b.shape.len() != index.len() {
        return Err(format!(
            "{} has rank {} but {} indices",
            b.name,
            b.shape.len(),
            index.len()
        ));
    }
    index
        .iter()
        .try_for_each(|e| affine_ok(func, e, bound, &b.name))
}

fn expr(func: &Func, e: &Expr, bound: &[Var]) -> Result<(), String> {
    match e {
        Expr::Const(_) => Ok(()),
        Expr::Load {
            buf,
            index,
            lanes,
            step,
        } => {
            if *lanes != 1 && *lanes != LANES {
                return Err(format!("load of {lanes} lanes"));
            }
            if *step < 1 {
                return Err(format!("load with lane step {step}"));
            }
            access_ok(func, *buf, index, bound)
        }
        Expr::Reduce(_, x) => match func.lanes(x) {
            LANES => expr(func, x, bound),
            n => Err(format!("horizontal reduction of a {n}-lane value")),
        },
        Expr::Broadcast(x) => match func.lanes(x) {
            1 => expr(func, x, bound),
            n => Err(format!("broadcast of a {n}-lane value")),
        },
        Expr::Local(l) if l.index() >= func.locals.len() => Err(format!("unknown local {}", l.0)),
        Expr::Local(_) => Ok(()),
        Expr::Unary(_, x) => expr(func, x, bound),
        Expr::Binary(_, a, b) => {
            if func.lanes(a) != func.lanes(b) {
                return Err(format!("operands of different widths in {}", func.expr(e)));
            }
            expr(func, a, bound).and(expr(func, b, bound))
        }
    }
}

fn stmt(func: &Func, s: &Stmt, bound: &mut Vec<Var>) -> Result<(), String> {
    match s {
        Stmt::Loop(l) => {
            let name = func.var_name(l.var);
            if bound.contains(&l.var) {
                return Err(format!("loop variable `{name}` bound twice"));
            }
            if l.lo.is_empty() || l.hi.is_empty() {
                return Err(format!("loop `{name}` lacks a bound"));
            }
            for b in l.lo.iter().chain(&l.hi) {
                if b.div < 1 {
                    return Err(format!("loop `{name}` has divisor {}", b.div));
                }
                affine_ok(func, &b.expr, bound, &format!("bound of `{name}`"))?;
            }
            bound.push(l.var);
            let r = l.body.iter().try_for_each(|s| stmt(func, s, bound));
            bound.pop();
            r
        }
        Stmt::Store {
            buf,
            index,
            value,
            step,
            ..
        } => {
            if *step < 1 {
                return Err(format!("store with lane step {step}"));
            }
            access_ok(func, *buf, index, bound)?;
            expr(func, value, bound)
        }
        Stmt::Assign { local, value, .. } => {
            let l = func
                .locals
                .get(local.index())
                .ok_or_else(|| format!("unknown local {}", local.0))?;
            if l.lanes != func.lanes(value) {
                return Err(format!(
                    "{} has {} lanes, assigned {}",
                    l.name,
                    l.lanes,
                    func.expr(value)
                ));
            }
            expr(func, value, bound)
        }
    }
}
