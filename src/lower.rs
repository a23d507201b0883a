//! Checked program → naive loop nest.
//!
//! Each statement becomes an initialisation nest over its output (identity
//! fill, or a copy for `+=` into an input) and a compute nest over all its
//! index variables: left-hand-side variables outermost in the order written,
//! then the reduced ones. The domain rule — a point contributes only if every
//! access is in bounds — is folded into the loop bounds: each bounds
//! constraint `0 <= e <= size-1` restricts the innermost loop whose variable
//! appears in `e`, exactly (with ceil/floor division when its coefficient is
//! not ±1), so the nest iterates the domain and nothing else, without guards.

use crate::affine::{Affine, Var};
use crate::check::{self, Init, Origin, Program};
use crate::ir::{self, BinOp, Bound, BufId, BufKind, Buffer, Func, Loop, LoopKind, Stmt, UnOp};
use crate::syntax::ast;

/// Lower a whole program to one function over all its tensor versions.
pub fn lower(program: &Program) -> Func {
    let outputs = program.outputs();
    let buffers = program
        .tensors
        .iter()
        .enumerate()
        .map(|(i, t)| Buffer {
            name: version_name(program, i),
            shape: t.shape.clone(),
            kind: match t.origin {
                Origin::Input => BufKind::Input,
                _ if outputs.contains(&check::TensorId(i as u32)) => BufKind::Output,
                _ => BufKind::Temp,
            },
        })
        .collect();
    let mut func = Func {
        buffers,
        var_names: Vec::new(),
        locals: Vec::new(),
        body: Vec::new(),
    };
    for st in &program.statements {
        lower_statement(&mut func, st);
    }
    func
}

/// Buffer names: the tensor's name, with `'` marks for later versions of a
/// name (`X`, `X'`, `X''`) so that dumps stay unambiguous.
fn version_name(program: &Program, i: usize) -> String {
    let name = &program.tensors[i].name;
    let earlier = program.tensors[..i]
        .iter()
        .filter(|t| &t.name == name)
        .count();
    format!("{name}{}", "'".repeat(earlier))
}

fn lower_statement(func: &mut Func, st: &check::Statement) {
    let out = BufId(st.lhs.tensor.0);
    match st.init {
        Init::Identity => {
            let value = ir::Expr::Const(st.combine.identity());
            let nest = fill_nest(func, out, |_| value.clone());
            func.body.push(nest);
        }
        Init::CopyOf(src) => {
            let src = BufId(src.0);
            let nest = fill_nest(func, out, |index| ir::Expr::load(src, index.to_vec()));
            func.body.push(nest);
        }
        Init::Existing => {}
    }

    // Fresh loop variables for this statement's index variables.
    let base = func.var_names.len() as u32;
    for v in &st.vars {
        func.var_names.push(v.name.clone());
    }
    let var = |v: Var| Var(base + v.0);
    let rename = |e: &Affine| Affine {
        terms: e.terms.iter().map(|&(v, c)| (var(v), c)).collect(),
        constant: e.constant,
    };

    // Loop order: output variables as written, then the reduced ones.
    let order: Vec<Var> = (0..st.vars.len() as u32).map(Var).collect();
    let mut lo: Vec<Vec<Bound>> = st
        .vars
        .iter()
        .map(|v| vec![Bound::constant(v.lo)])
        .collect();
    let mut hi: Vec<Vec<Bound>> = st
        .vars
        .iter()
        .map(|v| vec![Bound::constant(v.hi)])
        .collect();
    let range_of = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);

    for acc in st.accesses() {
        let shape = &func.buffers[acc.tensor.index()].shape;
        for (dim, e) in acc.index.iter().enumerate() {
            let last = shape[dim] as i64 - 1;
            let (min, max) = e
                .bounds_over(&range_of)
                .expect("the checker bounded every index");
            if min >= 0 && max <= last {
                continue; // always in bounds
            }
            let Some(&v) = order.iter().rev().find(|&&v| e.coeff(v) != 0) else {
                // A constant index outside its tensor: no point contributes.
                return;
            };
            let a = e.coeff(v);
            let rest = e.without(v);
            let neg_rest = rest.checked_scale(-1).expect("checked bounds");
            // a*v + rest >= 0 and a*v + rest <= last, solved for v.
            let (lower, upper) = if a > 0 {
                (
                    Bound {
                        expr: neg_rest.clone(),
                        div: a,
                    },
                    Bound {
                        expr: neg_rest.add_const(last + a).expect("checked bounds"),
                        div: a,
                    },
                )
            } else {
                let b = -a;
                (
                    Bound {
                        expr: rest.add_const(-last).expect("checked bounds"),
                        div: b,
                    },
                    Bound {
                        expr: rest.add_const(b).expect("checked bounds"),
                        div: b,
                    },
                )
            };
            push_bound(&mut lo[v.index()], lower, true, &range_of);
            push_bound(&mut hi[v.index()], upper, false, &range_of);
        }
    }

    let store = Stmt::Store {
        buf: BufId(st.lhs.tensor.0),
        index: st.lhs.index.iter().map(rename).collect(),
        value: lower_expr(&st.rhs, &rename),
        combine: Some(st.combine),
    };
    let nest = order.iter().rev().fold(store, |body, &v| {
        Stmt::Loop(Loop {
            var: var(v),
            lo: lo[v.index()]
                .iter()
                .map(|b| rename_bound(b, &rename))
                .collect(),
            hi: hi[v.index()]
                .iter()
                .map(|b| rename_bound(b, &rename))
                .collect(),
            kind: LoopKind::Serial,
            body: vec![body],
        })
    });
    func.body.push(nest);
}

fn rename_bound(b: &Bound, rename: &dyn Fn(&Affine) -> Affine) -> Bound {
    Bound {
        expr: rename(&b.expr),
        div: b.div,
    }
}

/// Add a bound term unless the terms already there make it redundant over the
/// variables' ranges (keeps dumps readable; never changes the iterated set).
fn push_bound(list: &mut Vec<Bound>, b: Bound, lower: bool, range_of: &dyn Fn(Var) -> (i64, i64)) {
    let (min, max) = b.expr.bounds_over(range_of).expect("checked bounds");
    let (min, max) = if lower {
        (
            crate::affine::ceil_div(min, b.div),
            crate::affine::ceil_div(max, b.div),
        )
    } else {
        (
            crate::affine::floor_div(min, b.div),
            crate::affine::floor_div(max, b.div),
        )
    };
    let base = list[0].as_constant().expect("the range bound comes first");
    if (lower && max <= base) || (!lower && min >= base) || list.contains(&b) {
        return;
    }
    if b.expr.is_constant() {
        // Tighter constant bound: replace the range bound.
        list[0] = Bound::constant(if lower { base.max(min) } else { base.min(min) });
    } else {
        list.push(b);
    }
}

/// `for d0.. for d1..: buf[d0, d1, ..] = value(index)` over a whole buffer.
fn fill_nest(func: &mut Func, buf: BufId, value: impl Fn(&[Affine]) -> ir::Expr) -> Stmt {
    let shape = func.buffers[buf.index()].shape.clone();
    let vars: Vec<Var> = (0..shape.len())
        .map(|d| func.new_var(format!("d{d}")))
        .collect();
    let index: Vec<Affine> = vars.iter().map(|&v| Affine::var(v)).collect();
    let store = Stmt::Store {
        buf,
        value: value(&index),
        index,
        combine: None,
    };
    vars.iter().zip(&shape).rev().fold(store, |body, (&v, &n)| {
        Stmt::Loop(Loop {
            var: v,
            lo: vec![Bound::constant(0)],
            hi: vec![Bound::constant(n as i64)],
            kind: LoopKind::Serial,
            body: vec![body],
        })
    })
}

fn lower_expr(e: &check::Expr, rename: &dyn Fn(&Affine) -> Affine) -> ir::Expr {
    let un = |op, x: &check::Expr| ir::Expr::Unary(op, Box::new(lower_expr(x, rename)));
    match e {
        check::Expr::Const(c) => ir::Expr::Const(*c),
        check::Expr::Read(a) => {
            ir::Expr::load(BufId(a.tensor.0), a.index.iter().map(rename).collect())
        }
        check::Expr::Neg(x) => un(UnOp::Neg, x),
        check::Expr::Binary(op, a, b) => {
            let op = match op {
                ast::BinOp::Add => BinOp::Add,
                ast::BinOp::Sub => BinOp::Sub,
                ast::BinOp::Mul => BinOp::Mul,
                ast::BinOp::Div => BinOp::Div,
            };
            ir::Expr::Binary(
                op,
                Box::new(lower_expr(a, rename)),
                Box::new(lower_expr(b, rename)),
            )
        }
        check::Expr::Call(f, args) => {
            let op = match f {
                ast::Func::Relu => UnOp::Relu,
                ast::Func::Sigmoid => UnOp::Sigmoid,
                ast::Func::Tanh => UnOp::Tanh,
                ast::Func::Exp => UnOp::Exp,
                ast::Func::Log => UnOp::Log,
                ast::Func::Sqrt => UnOp::Sqrt,
                ast::Func::Abs => UnOp::Abs,
                ast::Func::Max | ast::Func::Min => {
                    let op = if *f == ast::Func::Max {
                        BinOp::Max
                    } else {
                        BinOp::Min
                    };
                    return ir::Expr::Binary(
                        op,
                        Box::new(lower_expr(&args[0], rename)),
                        Box::new(lower_expr(&args[1], rename)),
                    );
                }
            };
            un(op, &args[0])
        }
    }
}
