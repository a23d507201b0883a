//! Checked program → loop nest.
//!
//! Each statement becomes an initialisation nest over its output (identity
//! fill, or a copy for `+=` into an input) and a compute nest shaped by its
//! [`Spec`]: by default one loop per index variable, left-hand-side variables
//! outermost in the order written, then the reduced ones. The domain rule — a point contributes only if every
//! access is in bounds — is folded into the loop bounds: each bounds
//! constraint `0 <= e <= size-1` restricts the innermost loop whose variable
//! appears in `e`, exactly (with ceil/floor division when its coefficient is
//! not ±1), so the nest iterates the domain and nothing else, without guards.

use crate::affine::{ceil_div, floor_div, Affine, Var};
use crate::check::{self, Init, Origin, Program};
use crate::ir::{self, BinOp, Bound, BufId, BufKind, Buffer, Func, Loop, LoopKind, Stmt, UnOp};
use crate::schedule::{is_trivial, Constraint, Spec};
use crate::syntax::ast;

/// Lower a whole program to one function over all its tensor versions, with
/// the naive loop order.
pub fn lower(program: &Program) -> Func {
    let specs: Vec<Spec> = program.statements.iter().map(Spec::naive).collect();
    lower_with(program, &specs)
}

/// Lower with each statement's compute nest shaped by its spec.
pub fn lower_with(program: &Program, specs: &[Spec]) -> Func {
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
    for (st, spec) in program.statements.iter().zip(specs) {
        lower_statement(&mut func, st, spec);
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

fn lower_statement(func: &mut Func, st: &check::Statement, spec: &Spec) {
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

    let nest = compute_nest(func, st, spec);
    func.body.extend(nest);
}

/// The compute nest of `st` shaped by `spec`: one loop per dimension in
/// order, each constraint folded into the bounds of its innermost loop,
/// peeled loops split into boundary and interior copies.
fn compute_nest(func: &mut Func, st: &check::Statement, spec: &Spec) -> Vec<Stmt> {
    let shapes: Vec<Vec<usize>> = func.buffers.iter().map(|b| b.shape.clone()).collect();
    let range = |v: Var| spec.dim_range(v);
    let mut constraints = spec.constraints(st, &|t| shapes[t].clone());
    constraints.retain(|c| !is_trivial(c, &range));
    if constraints.iter().any(|c| c.expr.is_constant()) {
        return Vec::new(); // a constant index outside its tensor: no point contributes
    }
    let mut dim_var = vec![Var(u32::MAX); spec.dims.len()];
    for &d in &spec.order {
        dim_var[d] = func.new_var(spec.dims[d].name.clone());
    }
    let level_of = |v: Var| {
        spec.order
            .iter()
            .position(|&d| d == v.index())
            .expect("dimension in order")
    };
    let innermost = constraints
        .iter()
        .map(|c| c.expr.vars().map(level_of).max().expect("non-constant"))
        .collect();
    let to_func = |e: &Affine| Affine {
        terms: e
            .terms
            .iter()
            .map(|&(v, c)| (dim_var[v.index()], c))
            .collect(),
        constant: e.constant,
    };
    let rename = |e: &Affine| to_func(&spec.substitute(e));
    let store = Stmt::Store {
        buf: BufId(st.lhs.tensor.0),
        index: st.lhs.index.iter().map(rename).collect(),
        value: lower_expr(&st.rhs, &rename),
        combine: Some(st.combine),
    };
    let builder = NestBuilder {
        spec,
        constraints,
        innermost,
        dim_var: &dim_var,
        store,
    };
    builder.build(0, &vec![false; builder.constraints.len()])
}

struct NestBuilder<'a> {
    spec: &'a Spec,
    constraints: Vec<Constraint>,
    /// Level (position in the loop order) each constraint folds into.
    innermost: Vec<usize>,
    dim_var: &'a [Var],
    store: Stmt,
}

impl NestBuilder<'_> {
    fn func_bound(&self, b: &Bound) -> Bound {
        Bound {
            expr: Affine {
                terms: b
                    .expr
                    .terms
                    .iter()
                    .map(|&(v, c)| (self.dim_var[v.index()], c))
                    .collect(),
                constant: b.expr.constant,
            },
            div: b.div,
        }
    }

    /// The loops from `level` inwards; `satisfied[k]`: constraint `k` is known
    /// to hold here (inside the interior copy of a peeled loop).
    fn build(&self, level: usize, satisfied: &[bool]) -> Vec<Stmt> {
        let Some(&d) = self.spec.order.get(level) else {
            return vec![self.store.clone()];
        };
        let dim = &self.spec.dims[d];
        let dvar = Var(d as u32);
        let range = |v: Var| self.spec.dim_range(v);
        let mut lo = vec![Bound::constant(dim.lo)];
        let mut hi = vec![Bound::constant(dim.hi)];
        for (k, c) in self.constraints.iter().enumerate() {
            if !satisfied[k] && self.innermost[k] == level {
                let (lower, upper) = solve(c, dvar);
                push_bound(&mut lo, lower, true, &range);
                push_bound(&mut hi, upper, false, &range);
            }
        }
        // Peeling: the interior where every deeper constraint on `d` holds
        // for all values of the other dimensions.
        let deeper: Vec<usize> = (0..self.constraints.len())
            .filter(|&k| {
                !satisfied[k]
                    && self.innermost[k] > level
                    && self.constraints[k].expr.coeff(dvar) != 0
            })
            .collect();
        let mut segments = vec![(dim.lo, dim.hi, false)];
        if dim.peel && !deeper.is_empty() {
            let (mut a, mut b) = (dim.lo, dim.hi - 1);
            for &k in &deeper {
                let (x, y) = solve_for_all(&self.constraints[k], dvar, &range);
                a = a.max(x);
                b = b.min(y);
            }
            if a <= b {
                segments = vec![(dim.lo, a, false), (a, b + 1, true), (b + 1, dim.hi, false)];
                segments.retain(|s| s.0 < s.1);
            }
        }
        let peeled = segments.len() > 1 || segments[0].2;
        segments
            .into_iter()
            .map(|(s_lo, s_hi, interior)| {
                let mut inner_ok = satisfied.to_vec();
                if interior {
                    for &k in &deeper {
                        inner_ok[k] = true;
                    }
                }
                let (mut lo, mut hi) = (lo.clone(), hi.clone());
                lo[0] = Bound::constant(s_lo.max(lo[0].as_constant().expect("range bound")));
                hi[0] = Bound::constant(s_hi.min(hi[0].as_constant().expect("range bound")));
                // Boundary copies of a peeled loop run plainly.
                let kind = if peeled && !interior {
                    LoopKind::Serial
                } else {
                    dim.kind
                };
                Stmt::Loop(Loop {
                    var: self.dim_var[d],
                    lo: lo.iter().map(|b| self.func_bound(b)).collect(),
                    hi: hi.iter().map(|b| self.func_bound(b)).collect(),
                    kind,
                    body: self.build(level + 1, &inner_ok),
                })
            })
            .collect()
    }
}

/// `c` solved for `v` given the other dimensions: (lower, exclusive upper).
fn solve(c: &Constraint, v: Var) -> (Bound, Bound) {
    let a = c.expr.coeff(v);
    let rest = c.expr.without(v);
    let neg_rest = rest.checked_scale(-1).expect("checked bounds");
    let bound = |expr: Affine, div: i64| Bound { expr, div };
    if a > 0 {
        // a*v + rest >= lo  and  a*v + rest <= hi
        (
            bound(neg_rest.add_const(c.lo).expect("checked bounds"), a),
            bound(neg_rest.add_const(c.hi + a).expect("checked bounds"), a),
        )
    } else {
        // -b*v + rest <= hi gives the lower bound, -b*v + rest >= lo the upper.
        let b = -a;
        (
            bound(rest.add_const(-c.hi).expect("checked bounds"), b),
            bound(rest.add_const(b - c.lo).expect("checked bounds"), b),
        )
    }
}

/// The inclusive range of `v` on which `c` holds for every value of the
/// other dimensions in their ranges.
fn solve_for_all(c: &Constraint, v: Var, range: &dyn Fn(Var) -> (i64, i64)) -> (i64, i64) {
    let a = c.expr.coeff(v);
    let (rmin, rmax) = c
        .expr
        .without(v)
        .bounds_over(range)
        .expect("checked bounds");
    if a > 0 {
        (ceil_div(c.lo - rmin, a), floor_div(c.hi - rmax, a))
    } else {
        let b = -a;
        (ceil_div(rmax - c.hi, b), floor_div(rmin - c.lo, b))
    }
}

/// Add a bound term unless the terms already there make it redundant over the
/// variables' ranges (keeps dumps readable; never changes the iterated set).
fn push_bound(list: &mut Vec<Bound>, b: Bound, lower: bool, range_of: &dyn Fn(Var) -> (i64, i64)) {
    let (min, max) = b.expr.bounds_over(range_of).expect("checked bounds");
    let (min, max) = if lower {
        (ceil_div(min, b.div), ceil_div(max, b.div))
    } else {
        (floor_div(min, b.div), floor_div(max, b.div))
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
