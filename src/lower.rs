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
//! A statement's fused epilogues (see [`crate::fuse`]) run in place right
//! after its outermost reduction loop, over the output loops inside it.

use crate::affine::{ceil_div, floor_div, Affine, Var};
use crate::check::{self, Combine, Init, Origin, Program};
use crate::ir::{
    self, BinOp, Bound, BufId, BufKind, Buffer, Func, Loop, LoopKind, Stmt, UnOp, LANES,
};
use crate::schedule::vectorize::{strided, vectorizes};
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
    lower_with_origins(program, specs).0
}

/// [`lower_with`], and for each nest of the function the statement it
/// comes from (to point an error in a later pass at the statement).
pub fn lower_with_origins(program: &Program, specs: &[Spec]) -> (Func, Vec<usize>) {
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
    let mut origins = Vec::new();
    for (n, (st, spec)) in program.statements.iter().zip(specs).enumerate() {
        lower_statement(&mut func, st, spec);
        origins.resize(func.body.len(), n);
    }
    (func, origins)
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
    // A vectorized statement gets a vectorized initialisation too.
    let vector = spec
        .dims
        .iter()
        .any(|d| matches!(d.kind, LoopKind::Vectorized(_)));
    let in_nest = initialised_in_nest(func, st, spec);
    let copy_in_nest = copied_in_nest(func, st);
    match st.init {
        Init::Identity if in_nest => {}
        Init::CopyOf(_) if copy_in_nest.is_some() => {}
        Init::Identity => {
            let c = st.combine.identity();
            let skip = stored_box(func, st);
            let nest = fill_nest(func, out, vector, skip.as_deref(), |_, lanes| match lanes {
                1 => ir::Expr::Const(c),
                _ => ir::Expr::Broadcast(Box::new(ir::Expr::Const(c))),
            });
            func.body.extend(nest);
        }
        Init::CopyOf(src) => {
            let src = BufId(src.0);
            let nest = fill_nest(func, out, vector, None, |index, lanes| ir::Expr::Load {
                buf: src,
                index: index.to_vec(),
                lanes,
                step: 1,
            });
            func.body.extend(nest);
        }
        Init::Existing => {}
    }

    let nest = compute_nest(func, st, spec, in_nest, copy_in_nest);
    func.body.extend(nest);
}

/// For `+=` into a caller's input whose output loops reach every element
/// once (see [`covers_output`]), the copy to add into: the nest then stores
/// `X[e] + value` once per element (with a reduction, starts each element
/// at `X[e]` before it), with no separate copy pass.
fn copied_in_nest(func: &Func, st: &check::Statement) -> Option<BufId> {
    let Init::CopyOf(src) = st.init else {
        return None;
    };
    (st.combine == Combine::Sum && covers_output(func, st)).then_some(BufId(src.0))
}

/// An output index that steps through its dimension without overlap: a
/// plain variable `v`, or `s*q + p` with `p` in `0..s` (a transposed
/// convolution's phases). Its variables, and the dimension size it spans
/// exactly when its range starts at 0.
pub(crate) fn stepping_index(st: &check::Statement, e: &Affine) -> Option<(Vec<Var>, Option<i64>)> {
    let range = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);
    if let Some(v) = e.as_var() {
        let (lo, hi) = range(v);
        return Some((vec![v], (lo == 0).then_some(hi)));
    }
    let &[(a, ca), (b, cb)] = e.terms.as_slice() else {
        return None;
    };
    let (q, s, p) = match (ca, cb) {
        (s, 1) if s > 1 => (a, s, b),
        (1, s) if s > 1 => (b, s, a),
        _ => return None,
    };
    let (q_lo, q_hi) = range(q);
    (e.constant == 0 && range(p) == (0, s)).then_some((vec![p, q], (q_lo == 0).then_some(s * q_hi)))
}

/// Whether the left-hand side is distinct output variables, each index
/// stepping through its dimension without overlap, so that with no
/// reduction each output element receives at most one point.
fn one_point_per_element(st: &check::Statement) -> bool {
    let mut seen = Vec::new();
    st.lhs.index.iter().all(|e| {
        stepping_index(st, e).is_some_and(|(vars, _)| {
            vars.into_iter().all(|v| {
                let fresh = !seen.contains(&v) && !st.vars[v.index()].reduced;
                seen.push(v);
                fresh
            })
        })
    })
}

/// Whether the output loops visit every element of the output, each once:
/// [`one_point_per_element`], every index spanning its whole dimension, and
/// no read that leaves its tensor through output variables alone (which
/// would restrict the output loops).
fn covers_output(func: &Func, st: &check::Statement) -> bool {
    let shape = &func.buffers[st.lhs.tensor.index()].shape;
    let spans = st
        .lhs
        .index
        .iter()
        .zip(shape)
        .all(|(e, &n)| stepping_index(st, e).is_some_and(|(_, span)| span == Some(n as i64)));
    one_point_per_element(st) && spans && !clips_output(func, st)
}

/// The box (a range per output dimension) that the compute nest stores
/// to, every element of it once and directly, when that is all it writes:
/// `=` with no reduction, plain output variables, and no read that clips
/// the loops (a padded copy's interior, `P[p,q] = I[p-1,q-1] where p in
/// 0..30, q in 0..30`). A fill then needs to cover only the rest.
fn stored_box(func: &Func, st: &check::Statement) -> Option<Vec<(i64, i64)>> {
    let direct = st.combine == Combine::Sum
        && st.vars.iter().all(|v| !v.reduced)
        && one_point_per_element(st)
        && !clips_output(func, st);
    if !direct {
        return None;
    }
    st.lhs
        .index
        .iter()
        .map(|e| {
            e.as_var()
                .map(|v| (st.vars[v.index()].lo, st.vars[v.index()].hi))
        })
        .collect()
}

/// Whether the compute nest can initialise the output itself, element by
/// element right before its reduction (no separate fill over the whole
/// output): `=`, `max=`, `min=` whose points cover the output
/// ([`covers_output`]), unless the parallel loop runs inside the outermost
/// reduction loop (a GEMM's cache block of `k` around its row tiles): the
/// initialisation would then sit beside that loop, and a nest splits
/// between threads only at a loop reached through loops of one statement.
fn initialised_in_nest(func: &Func, st: &check::Statement, spec: &Spec) -> bool {
    let reduced = spec.reduced_dims(st);
    let level = |pick: &dyn Fn(usize) -> bool| spec.order.iter().position(|&d| pick(d));
    let parallel = level(&|d| spec.dims[d].kind == LoopKind::Parallel);
    let reduction = level(&|d| reduced.contains(&d));
    let parallel_inside = matches!((parallel, reduction), (Some(p), Some(r)) if p > r);
    st.init == Init::Identity && covers_output(func, st) && !parallel_inside
}

/// Whether a read that may leave its tensor, through output variables
/// alone, restricts the output loops (so some elements get no point).
fn clips_output(func: &Func, st: &check::Statement) -> bool {
    let range = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);
    st.rhs.reads().iter().any(|a| {
        let shape = &func.buffers[a.tensor.index()].shape;
        a.index.iter().zip(shape).any(|(e, &n)| {
            let c = Constraint {
                expr: e.clone(),
                lo: 0,
                hi: n as i64 - 1,
            };
            !is_trivial(&c, &range) && e.vars().all(|v| !st.vars[v.index()].reduced)
        })
    })
}

/// The compute nest of `st` shaped by `spec`: one loop per dimension in
/// order, each constraint folded into the bounds of its innermost loop,
/// peeled loops split into boundary and interior copies.
///
/// With `init` (see [`initialised_in_nest`]) the nest starts each output
/// element at the operator's identity itself: right before the outermost
/// reduction loop, over the output loops inside it (or, with no reduction,
/// by storing the value directly); with `copy_from` (see
/// [`copied_in_nest`]) at that element of the copied tensor.
fn compute_nest(
    func: &mut Func,
    st: &check::Statement,
    spec: &Spec,
    init: bool,
    copy_from: Option<BufId>,
) -> Vec<Stmt> {
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
    let innermost: Vec<usize> = constraints
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
    let builder = NestBuilder {
        spec,
        constraints,
        dim_var: &dim_var,
    };
    // Packed reads: a copy nest each, before the compute nest.
    let mut copies = Vec::new();
    let mut packed: Vec<(check::TensorId, ir::Expr)> = Vec::new();
    for &t in &spec.packs {
        let read = spec.packed_read(st, t).expect("checked by the schedule");
        let (copy, load) = pack_nest(func, &builder, read, &rename);
        copies.extend(copy);
        packed.push((t, load));
    }
    let plain_read =
        |a: &check::Access| ir::Expr::load(BufId(a.tensor.0), a.index.iter().map(rename).collect());
    let read = |a: &check::Access| match packed.iter().find(|(t, _)| *t == a.tensor) {
        Some((_, load)) => load.clone(),
        None => plain_read(a),
    };
    let constraints = &builder.constraints;
    let out = BufId(st.lhs.tensor.0);
    let out_index: Vec<Affine> = st.lhs.index.iter().map(rename).collect();
    let reduced = spec.reduced_dims(st);
    let first_reduced = spec.order.iter().position(|d| reduced.contains(d));
    // With no reduction each element gets one value, stored directly: `0 +
    // v` is `v`; `max(-inf, v)` is not when `v` is NaN, so `max=`/`min=`
    // keep the identity in the expression (or combine with a fill).
    let value = match copy_from {
        Some(src) if first_reduced.is_none() => ir::Expr::Binary(
            BinOp::Add,
            Box::new(ir::Expr::load(src, out_index.clone())),
            Box::new(lower_expr(&st.rhs, &read)),
        ),
        _ => lower_expr(&st.rhs, &read),
    };
    let direct = first_reduced.is_none()
        && (copy_from.is_some()
            || st.init == Init::Identity
                && one_point_per_element(st)
                && (init || st.combine == Combine::Sum));
    let store = Stmt::Store {
        buf: out,
        index: out_index.clone(),
        value: match st.combine {
            Combine::Max if direct => max_min(BinOp::Max, st.combine.identity(), value),
            Combine::Min if direct => max_min(BinOp::Min, st.combine.identity(), value),
            _ => value,
        },
        combine: (!direct).then_some(st.combine),
        step: 1,
    };
    // (A scalar: the vectorize pass broadcasts it in vector loops.)
    let start = match copy_from {
        Some(src) => Some(ir::Expr::load(src, out_index.clone())),
        None => init.then_some(ir::Expr::Const(st.combine.identity())),
    };
    let prologue: Vec<Stmt> = match (first_reduced, start) {
        (Some(_), Some(value)) => vec![Stmt::Store {
            buf: out,
            index: out_index.clone(),
            value,
            combine: None,
            step: 1,
        }],
        _ => Vec::new(),
    };
    // Fused elementwise statements: in place, once each element is final.
    let epilogue: Vec<Stmt> = st
        .epilogues
        .iter()
        .map(|e| Stmt::Store {
            buf: out,
            index: out_index.clone(),
            // After the reduction loops: the packed copies' indices (the
            // loops' variables) mean nothing there, so reads are plain.
            value: lower_expr(&e.rhs, &plain_read),
            combine: None,
            step: 1,
        })
        .collect();
    let all = |order: &[usize]| Nest {
        kinds: order.iter().map(|&d| spec.dims[d].kind).collect(),
        order: order.to_vec(),
        innermost: innermost.iter().map(|&l| Some(l)).collect(),
        body: Vec::new(),
        before: None,
        then: None,
    };
    // The output loops inside the outermost reduction loop, running `body`
    // (the elements that loop covers, before it starts or once it is done).
    let around_reduction = |first: usize, body: Vec<Stmt>| {
        let inside: Vec<usize> = spec.order[first + 1..]
            .iter()
            .copied()
            .filter(|d| !reduced.contains(d))
            .collect();
        let mut nest = all(&inside);
        nest.body = body;
        // Only constraints on output loops inside: the others either
        // hold already (outer loops) or involve the reduction.
        nest.innermost = constraints
            .iter()
            .map(|c| {
                if c.expr.vars().any(|v| reduced.contains(&v.index())) {
                    return None;
                }
                let deepest = c.expr.vars().max_by_key(|&v| level_of(v))?;
                inside.iter().position(|&d| d == deepest.index())
            })
            .collect();
        for (k, &d) in inside.iter().enumerate() {
            nest.kinds[k] = match spec.dims[d].kind {
                LoopKind::Vectorized(n) if vectorizes(func, &nest.body, dim_var[d]) => {
                    LoopKind::Vectorized(n)
                }
                LoopKind::Vectorized(_) | LoopKind::Unrolled => LoopKind::Unrolled,
                _ => LoopKind::Serial,
            };
        }
        Box::new(nest)
    };
    let mut nest = all(&spec.order);
    nest.body = vec![store];
    match first_reduced {
        // No reduction: each element is final right after its one store.
        None => nest.body.extend(epilogue),
        // After the outermost reduction loop, the elements it covered are
        // final: the epilogue runs over the output loops inside it.
        Some(first) => {
            if !prologue.is_empty() {
                nest.before = Some((first, around_reduction(first, prologue)));
            }
            if !epilogue.is_empty() {
                nest.then = Some((first, around_reduction(first, epilogue)));
            }
        }
    }
    let built = builder.build(&nest, 0, &vec![false; builder.constraints.len()]);
    copies.extend(built.into_iter().flat_map(unwrap_single_trip));
    copies
}

/// A nest whose outermost loop runs once (a batch of one) around several
/// statements, one of them holding a parallel loop (row tiles beside
/// their peeled partial tile), as those statements, each its own nest: a
/// nest splits between threads only through loops of one statement, so
/// the batch loop would keep the tiles on one thread (a 1x1 convolution
/// over 512 channels, 14×14 pixels merged: 1.0× on two threads, 1.9× so).
fn unwrap_single_trip(nest: Stmt) -> Vec<Stmt> {
    match nest {
        Stmt::Loop(l)
            if l.body.len() > 1
                && l.constant_range().is_some_and(|(a, b)| b - a == 1)
                && l.body.iter().any(has_parallel_loop) =>
        {
            let at = Affine::constant(l.constant_range().map_or(0, |(a, _)| a));
            l.body
                .iter()
                .map(|s| s.substitute(l.var, &at))
                .flat_map(unwrap_single_trip)
                .collect()
        }
        nest => vec![nest],
    }
}

/// Whether `s` is or holds a parallel loop.
fn has_parallel_loop(s: &Stmt) -> bool {
    match s {
        Stmt::Loop(l) => l.kind == LoopKind::Parallel || l.body.iter().any(has_parallel_loop),
        _ => false,
    }
}

/// The copy nest of a packed read and the load that replaces the read: the
/// copy `X+pack[d1, .., dn] = X[index]` loops over the dimensions the index
/// depends on, in the compute nest's order, with the bounds among them (so
/// it copies every element the compute nest reads, and reads only inside
/// `X`); its innermost loop stays vectorized if it is in the compute nest.
fn pack_nest(
    func: &mut Func,
    builder: &NestBuilder,
    read: &check::Access,
    rename: &dyn Fn(&Affine) -> Affine,
) -> (Vec<Stmt>, ir::Expr) {
    let spec = builder.spec;
    let dims = spec.pack_dims(read);
    let source = BufId(read.tensor.0);
    func.buffers.push(Buffer {
        name: format!("{}+pack", func.buffers[source.index()].name),
        shape: dims
            .iter()
            .map(|&d| (spec.dims[d].hi - spec.dims[d].lo) as usize)
            .collect(),
        kind: BufKind::Temp,
    });
    let packed = BufId(func.buffers.len() as u32 - 1);
    let index: Vec<Affine> = dims
        .iter()
        .map(|&d| {
            Affine::var(builder.dim_var[d])
                .add_const(-spec.dims[d].lo)
                .expect("small range")
        })
        .collect();
    let level = |v: Var| dims.iter().position(|&d| d == v.index());
    let source_index: Vec<Affine> = read.index.iter().map(rename).collect();
    // The copy's innermost loop is vectorized with the compute nest's if
    // the source steps along its last dimension with it; a transposing
    // pack (GEMM's `B[j,k]` vectorized along `j`) copies those lanes one
    // by one, unrolled, so that the compute nest reads whole vectors. Its
    // outermost loop is parallel when the compute nest has a parallel loop
    // (each iteration writes its own slice of the copy).
    let parallel = spec.dims.iter().any(|d| d.kind == LoopKind::Parallel);
    let kinds = dims
        .iter()
        .enumerate()
        .map(|(k, &d)| match spec.dims[d].kind {
            _ if k == 0 && parallel && k + 1 < dims.len() => LoopKind::Parallel,
            LoopKind::Vectorized(n) if k + 1 == dims.len() => {
                match strided(&source_index, builder.dim_var[d]) {
                    Some(_) => LoopKind::Vectorized(n),
                    None => LoopKind::Unrolled,
                }
            }
            _ => LoopKind::Serial,
        })
        .collect();
    let copy = Nest {
        order: dims.clone(),
        kinds,
        innermost: builder
            .constraints
            .iter()
            .map(|c| {
                c.expr
                    .vars()
                    .map(level)
                    .collect::<Option<Vec<_>>>()?
                    .into_iter()
                    .max()
            })
            .collect(),
        body: vec![Stmt::Store {
            buf: packed,
            index: index.clone(),
            value: ir::Expr::load(source, source_index),
            combine: None,
            step: 1,
        }],
        before: None,
        then: None,
    };
    let nest = builder.build(&copy, 0, &vec![false; builder.constraints.len()]);
    (nest, ir::Expr::load(packed, index))
}

/// Loops to build: dimensions in order with their kinds, the body inside
/// them, and optionally a nest run after the loop at one level.
struct Nest {
    order: Vec<usize>,
    kinds: Vec<LoopKind>,
    /// Per constraint: the level of this nest whose bounds it restricts
    /// (`None`: not this nest's concern).
    innermost: Vec<Option<usize>>,
    body: Vec<Stmt>,
    before: Option<(usize, Box<Nest>)>,
    then: Option<(usize, Box<Nest>)>,
}

struct NestBuilder<'a> {
    spec: &'a Spec,
    constraints: Vec<Constraint>,
    dim_var: &'a [Var],
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
    fn build(&self, nest: &Nest, level: usize, satisfied: &[bool]) -> Vec<Stmt> {
        let Some(&d) = nest.order.get(level) else {
            return nest.body.clone();
        };
        let dim = &self.spec.dims[d];
        let dvar = Var(d as u32);
        let range = |v: Var| self.spec.dim_range(v);
        let mut lo = vec![Bound::constant(dim.lo)];
        let mut hi = vec![Bound::constant(dim.hi)];
        for (k, c) in self.constraints.iter().enumerate() {
            if !satisfied[k] && nest.innermost[k] == Some(level) {
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
                    && nest.innermost[k].is_some_and(|l| l > level)
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
        let mut loops: Vec<Stmt> = segments
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
                    nest.kinds[level]
                };
                Stmt::Loop(Loop {
                    var: self.dim_var[d],
                    lo: lo.iter().map(|b| self.func_bound(b)).collect(),
                    hi: hi.iter().map(|b| self.func_bound(b)).collect(),
                    kind,
                    body: self.build(nest, level + 1, &inner_ok),
                })
            })
            .collect();
        if let Some((at, then)) = &nest.then {
            if *at == level {
                loops.extend(self.build(then, 0, satisfied));
            }
        }
        if let Some((at, before)) = &nest.before {
            if *at == level {
                loops.splice(0..0, self.build(before, 0, satisfied));
            }
        }
        loops
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

/// `buf[d0, d1, ..] = value(index)` over the whole buffer, or, given
/// `skip` (a range per dimension: the box the statement's own nest stores
/// to, see [`stored_box`]), over the rest of it only; with `vector`, rows
/// in F32X4 steps (`value(index, 4)`) and a scalar tail.
fn fill_nest(
    func: &mut Func,
    buf: BufId,
    vector: bool,
    skip: Option<&[(i64, i64)]>,
    value: impl Fn(&[Affine], u32) -> ir::Expr,
) -> Vec<Stmt> {
    let shape: Vec<i64> = func.buffers[buf.index()]
        .shape
        .iter()
        .map(|&n| n as i64)
        .collect();
    let vars: Vec<Var> = (0..shape.len())
        .map(|d| func.new_var(format!("d{d}")))
        .collect();
    let vector_var = shape
        .len()
        .checked_sub(1)
        .filter(|_| vector)
        .map(|last| func.new_var(format!("d{last}v")));
    let fill = Fill {
        buf,
        shape,
        vars,
        vector_var,
        value: &value,
    };
    match skip {
        Some(skip) => fill.outside(0, skip),
        None => fill.whole(0),
    }
}

/// The pieces of a fill nest (see [`fill_nest`]).
struct Fill<'a> {
    buf: BufId,
    shape: Vec<i64>,
    vars: Vec<Var>,
    /// The loop over a row's vectors, if the fill is vectorized.
    vector_var: Option<Var>,
    value: &'a dyn Fn(&[Affine], u32) -> ir::Expr,
}

impl Fill<'_> {
    fn store(&self, index: Vec<Affine>, lanes: u32) -> Stmt {
        Stmt::Store {
            buf: self.buf,
            value: (self.value)(&index, lanes),
            index,
            combine: None,
            step: 1,
        }
    }

    /// Every element at the enclosing loops' indices, dimensions `d..` whole.
    fn whole(&self, d: usize) -> Vec<Stmt> {
        match self.shape.len() {
            0 => vec![self.store(Vec::new(), 1)],
            rank if d + 1 == rank => self.row(0, self.shape[d]),
            _ => looped(self.vars[d], 0, self.shape[d], self.whole(d + 1)),
        }
    }

    /// The elements outside `skip` at the enclosing loops' indices (which
    /// lie inside it along dimensions `..d`).
    fn outside(&self, d: usize, skip: &[(i64, i64)]) -> Vec<Stmt> {
        let Some(&n) = self.shape.get(d) else {
            return Vec::new(); // inside the box
        };
        let (lo, hi) = (skip[d].0.clamp(0, n), skip[d].1.clamp(0, n));
        if lo >= hi {
            return self.whole(d);
        }
        if d + 1 == self.shape.len() {
            return [self.row(0, lo), self.row(hi, n)].concat();
        }
        [
            looped(self.vars[d], 0, lo, self.whole(d + 1)),
            looped(self.vars[d], lo, hi, self.outside(d + 1, skip)),
            looped(self.vars[d], hi, n, self.whole(d + 1)),
        ]
        .concat()
    }

    /// Elements `lo..hi` of the last dimension: whole vectors from `lo`,
    /// then single elements.
    fn row(&self, lo: i64, hi: i64) -> Vec<Stmt> {
        let last = self.shape.len() - 1;
        let index: Vec<Affine> = self.vars.iter().map(|&v| Affine::var(v)).collect();
        let lanes = i64::from(LANES);
        let vectors = match self.vector_var {
            Some(_) => (hi - lo).max(0) / lanes,
            None => 0,
        };
        let mut out = Vec::new();
        if let (Some(v), true) = (self.vector_var, vectors > 0) {
            let mut at = index.clone();
            at[last] = Affine::var(v)
                .checked_scale(lanes)
                .and_then(|x| x.add_const(lo))
                .expect("small");
            out.extend(looped(v, 0, vectors, vec![self.store(at, LANES)]));
        }
        out.extend(looped(
            self.vars[last],
            lo + vectors * lanes,
            hi,
            vec![self.store(index, 1)],
        ));
        out
    }
}

/// `for var in lo..hi: body`, or nothing for an empty range or body.
fn looped(var: Var, lo: i64, hi: i64, body: Vec<Stmt>) -> Vec<Stmt> {
    if lo >= hi || body.is_empty() {
        return Vec::new();
    }
    vec![Stmt::Loop(Loop {
        var,
        lo: vec![Bound::constant(lo)],
        hi: vec![Bound::constant(hi)],
        kind: LoopKind::Serial,
        body,
    })]
}

/// `op(identity, value)`: `max=`'s first value, with `f32::max`'s NaN rule.
fn max_min(op: BinOp, identity: f32, value: ir::Expr) -> ir::Expr {
    ir::Expr::Binary(op, Box::new(ir::Expr::Const(identity)), Box::new(value))
}

/// `e` with each read lowered by `read`.
fn lower_expr(e: &check::Expr, read: &dyn Fn(&check::Access) -> ir::Expr) -> ir::Expr {
    let un = |op, x: &check::Expr| ir::Expr::Unary(op, Box::new(lower_expr(x, read)));
    match e {
        check::Expr::Const(c) => ir::Expr::Const(*c),
        check::Expr::Read(a) => read(a),
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
                Box::new(lower_expr(a, read)),
                Box::new(lower_expr(b, read)),
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
                        Box::new(lower_expr(&args[0], read)),
                        Box::new(lower_expr(&args[1], read)),
                    );
                }
            };
            un(op, &args[0])
        }
    }
}
