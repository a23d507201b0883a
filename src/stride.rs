//! Strided windows become unit-stride ones. A stride-`s` convolution or
//! pooling reads `X[.., s*j + r]`, `j` its output column (the vectorized
//! loop) and `r` a window tap: four lanes of `j` are `s` elements apart, a
//! gather. Reading instead a copy of `X` with its last dimension split by
//! residue, `X/s[.., q, x] = X[.., s*x + q]`, tap `r = s*a + ρ` reads
//! `X/s[.., q, j + a + t]` (with `ρ + c = s*t + q`): consecutive in `j`. The
//! statement becomes one statement per residue `ρ` of the tap, each summing
//! over its own taps `a` into the output (the first assigns, the rest
//! combine into it), and the copy costs one pass over `X`. The domain is
//! unchanged: each point of a residue's statement is one point of the
//! original, reading the same elements. Checked program → checked program.

use crate::affine::{Affine, Var};
use crate::check::{
    Access, Combine, Expr, IndexVar, Init, Origin, Program, RangeSource, Statement, Tensor,
    TensorId,
};
use crate::syntax::ast::AssignOp;
use std::cell::Cell;

/// The strided read of a statement: which read, its stride, its tap.
struct Window {
    read: usize,
    stride: i64,
    tap: Var,
    /// The constant of the read's last index (`-1` for a padding of one
    /// before the padded copy; usually 0 after it).
    offset: i64,
}

/// A copy split by residue: `X/s[.., q, x + shift*q] = X[.., s*x + q]`.
/// Residue `q` is stored `shift*q` columns along, so that every residue's
/// in-bounds columns start at the same column of the copy (see
/// [`split_copy`]).
#[derive(Clone, Copy)]
struct SplitCopy {
    tensor: TensorId,
    shift: i64,
}

pub fn split_strides(program: &Program) -> Program {
    // Copies of a caller's input, shared by the statements that read it
    // (any other tensor may change between them: `T += ..`).
    let mut copies: Vec<((TensorId, i64), SplitCopy)> = Vec::new();
    // Copies the split copies read through (padded copies).
    let mut through = Vec::new();
    let out = program.rewrite_each(|out, st| {
        let Some(w) = window(program, st) else {
            out.statements.push(st.clone());
            return;
        };
        let source = st.rhs.reads()[w.read].tensor;
        out.notes.push(format!(
            "strides: {} reads a copy of {} split by residue mod {}",
            program.statement_text(st),
            program.tensor(source).name,
            w.stride
        ));
        let copy = match copies.iter().find(|(k, _)| *k == (source, w.stride)) {
            Some((_, c)) => *c,
            None => {
                let c = split_copy(program, out, source, w.stride, st);
                if input_copy(program, source).is_some() {
                    through.push(source);
                }
                if program.tensor(source).origin == Origin::Input {
                    copies.push(((source, w.stride), c));
                }
                c
            }
        };
        if !emit_residue_loop(out, st, &w, copy) {
            emit_residues(out, st, &w, copy);
        }
    });
    out.without_unread(&through)
}

/// Points of a statement per element of the strided tensor below which the
/// copy does not pay: a 2x2 max pool reads each element once, and the copy
/// halved its speed; a stride-2 convolution reads each hundreds of times;
/// a stride-2 depthwise 3x3 reads each 2.25 times, and ran 16.8 → 22.7–23.8
/// GFLOP/s on one thread with the copy (96 channels, 56² → 28²; 32
/// channels, 112²: 17.5 → 24.0; a 5x5 window 20.8 → 22.4), once the
/// copy's rows were aligned to every residue (see [`split_copy`]).
const MIN_REUSE: f64 = 2.0;

/// The read of `st` that steps by `s > 1` along its last dimension with the
/// statement's vectorized variable (the last output index), plus a tap
/// `r` from 0 that indexes nothing else of it: `X[.., s*j + r + c]`, when
/// each element of `X` is read often enough for a copy to pay.
fn window(program: &Program, st: &Statement) -> Option<Window> {
    if !st.epilogues.is_empty() {
        return None;
    }
    let points: f64 = st.vars.iter().map(|v| (v.hi - v.lo) as f64).product();
    let j = st.lhs.index.last()?.as_var()?;
    for (k, a) in st.rhs.reads().into_iter().enumerate() {
        let (last, rest) = a.index.split_last()?;
        let [(x, cx), (y, cy)] = last.terms.as_slice() else {
            continue;
        };
        let (stride, tap) = match (*x == j, *y == j) {
            (true, false) if *cy == 1 => (*cx, *y),
            (false, true) if *cx == 1 => (*cy, *x),
            _ => continue,
        };
        let var = &st.vars[tap.index()];
        let shape = &program.tensor(a.tensor).shape;
        let elements = shape.iter().product::<usize>() as f64;
        // The read stays inside `X` at every point: the copy's last column
        // holds zeros past `X`'s end (when `s` does not divide its width),
        // which must not stand in for points the domain rule leaves out.
        let range = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);
        let width = *shape.last()? as i64;
        let inside = last
            .bounds_over(&range)
            .is_some_and(|(lo, hi)| lo >= 0 && hi < width);
        if stride > 1
            && inside
            && points >= MIN_REUSE * elements
            && var.reduced
            && var.lo == 0
            && rest.iter().all(|e| e.coeff(tap) == 0 && e.coeff(j) == 0)
            && width >= stride
        {
            return Some(Window {
                read: k,
                stride,
                tap,
                offset: last.constant,
            });
        }
    }
    None
}

/// `X/s[.., q, x] = X[.., s*x + q]`: the copy of `source` split by residue.
/// When `source` is itself a copy of a caller's input (the padded copy
/// `X+pad[p] = X[p - 1]`), the split copy reads the input through it
/// (`X+pad/s[.., q, x] = X[.., s*x + q - 1]`, zeros from the domain rule),
/// and the padded copy, read by nothing else, goes.
///
/// Through a padding of `p` columns, residue `q` is in bounds from column
/// `ceil((p - q) / s)`: with an odd `p` and `s = 2`, residue 0 from one
/// column later than residue 1 (`X[2*x - 1]` from `x = 1`, `X[2*x]` from
/// 0). Residue 1 is then stored one column along (`shift` 1: `X/2[.., 1,
/// x + 1] = X[.., 2*x]`), so both start at column 1, and the copy's loop
/// over columns starts there too: its vector tiles line up with every
/// residue's row, where they had a partial tile at each end of each row
/// (scalar code, the copy 2.5× slower: a depthwise stride-2 convolution
/// 12 GFLOP/s with the split copy, 17 without it, before). Through an even
/// padding every residue starts at the same column unshifted, and the loop
/// starts there as well (a 5x5 stride-2 depthwise window, padding 2: 23 →
/// 33 GFLOP/s); for larger strides, at the first column any residue has.
fn split_copy(
    program: &Program,
    out: &mut Program,
    source: TensorId,
    s: i64,
    st: &Statement,
) -> SplitCopy {
    let t = out.tensor(source).clone();
    let n = *t.shape.last().expect("a dimension") as i64;
    let rank = t.shape.len();
    let through = input_copy(program, source);
    // The padding before the source's columns, and each residue's first
    // column in bounds.
    let pad = through.map_or(0, |(_, a)| {
        let last = a.index.last().expect("a dimension");
        match last.terms.as_slice() {
            [(v, 1)] if v.index() == rank - 1 => -last.constant,
            _ => 0,
        }
    });
    let first = |q: i64| (pad - q + s - 1).div_euclid(s);
    let shift = match s == 2 && pad > 0 {
        true => first(0) - first(1),
        false => 0,
    };
    let mut shape = t.shape.clone();
    shape.pop();
    shape.extend([s as usize, ((n + s - 1) / s + shift) as usize]);
    let id = TensorId(out.tensors.len() as u32);
    out.tensors.push(Tensor {
        name: format!("{}/{s}", t.name),
        shape: shape.clone(),
        origin: Origin::Statement(out.statements.len()),
    });
    let var = |d: usize| Affine::var(Var(d as u32));
    let mut index: Vec<Affine> = (0..rank - 1).map(var).collect();
    // `s*(x - shift*q) + q`.
    index.push(Affine::sum([(&var(rank), s), (&var(rank - 1), 1 - s * shift)]).expect("small"));
    let (source, index) = match through.map(|(_, a)| a) {
        Some(Access {
            tensor, index: e, ..
        }) => {
            // `X[e(p)]` at `p = index`: each `p_d` replaced at once.
            let at = |e: &Affine| {
                let parts: Vec<(&Affine, i64)> = e
                    .terms
                    .iter()
                    .map(|&(v, c)| (&index[v.index()], c))
                    .collect();
                Affine::sum(parts)
                    .and_then(|x| x.add_const(e.constant))
                    .expect("small")
            };
            (*tensor, e.iter().map(at).collect())
        }
        None => (source, index),
    };
    // The last column may run past `X` (when `s` does not divide its
    // width) for some residues: those elements are never read, and are
    // zero (the read's bounds clip them). Through a padded copy, the
    // leading dimensions keep its in-bounds ranges, and the columns start
    // at the first in bounds (every residue's, with the shift).
    let width = *out.tensor(source).shape.last().expect("a dimension") as i64;
    let start = |q: i64| first(q) + shift * q;
    let end = |q: i64| (width - 1 + pad - q).div_euclid(s) + shift * q + 1;
    let columns = (
        (0..s).map(start).min().unwrap_or(0).max(0),
        (0..s).map(end).max().unwrap_or(0).min(shape[rank] as i64),
    );
    let valid = |d: usize| match through {
        Some((copy, _)) if d + 1 < rank => match copy.vars[d].source {
            RangeSource::Where { valid } => valid,
            _ => None,
        },
        Some(_) if d == rank => Some(columns),
        _ => None,
    };
    let copy = Statement::copy(id, &shape, "s", &valid, source, index, st.span);
    out.statements.push(copy);
    SplitCopy { tensor: id, shift }
}

/// The copy statement writing `t` and its read of a caller's input
/// (`X+pad[p0, p1] = X[p0 - 1, p1 - 1]`), if `t` is such a copy and
/// nothing else writes it.
fn input_copy(program: &Program, t: TensorId) -> Option<(&Statement, &Access)> {
    let Origin::Statement(k) = program.tensor(t).origin else {
        return None;
    };
    let st = &program.statements[k];
    let Expr::Read(a) = &st.rhs else {
        return None;
    };
    // (Written once: a `T += ..` later changes what the copy holds.)
    let once = program
        .statements
        .iter()
        .filter(|other| other.lhs.tensor == t)
        .count()
        == 1;
    let plain = once
        && st
            .lhs
            .index
            .iter()
            .enumerate()
            .all(|(d, e)| e.as_var() == Some(Var(d as u32)));
    (plain
        && st.op == AssignOp::Assign
        && st.init == Init::Identity
        && st.epilogues.is_empty()
        && st.vars.iter().all(|v| !v.reduced)
        && program.tensor(a.tensor).origin == Origin::Input)
        .then_some((st, a))
}

/// The statement over the copy with the tap `r` as two reduced variables,
/// the copy's residue `q` and a step `a`: `r = s*(a + a0) + q - c` reads
/// `X/s[.., q, j + a + a0]` (from `X[.., s*j + r + c]`). One nest sums all
/// taps in its register tile. Some `(q, a)` pairs name no tap (`r` past
/// the window: 3 taps in steps of 2); they must read outside a tensor, so
/// this form is used only when a read indexes a dimension of the tap's
/// extent by `r` alone (a convolution's weight), or every pair is a tap.
/// Otherwise (pooling windows) it returns false.
fn emit_residue_loop(out: &mut Program, st: &Statement, w: &Window, copy: SplitCopy) -> bool {
    let (s, c) = (w.stride, w.offset);
    let taps = st.vars[w.tap.index()].hi;
    let tap = Affine::var(w.tap);
    let reads = st.rhs.reads();
    let bounded = reads.iter().enumerate().any(|(k, a)| {
        k != w.read
            && a.index
                .iter()
                .zip(&out.tensor(a.tensor).shape)
                .any(|(e, &n)| *e == tap && n as i64 == taps)
    });
    // `a` from the least step any tap needs (`r >= 0` at `q = s - 1`).
    let a0 = c.div_euclid(s);
    let a_hi = (taps - 1 + c).div_euclid(s);
    let every_pair = taps % s == 0 && c % s == 0;
    if !(bounded || every_pair) || a_hi < a0 {
        return false;
    }
    let old = &st.vars[w.tap.index()];
    let mut vars = st.vars.clone();
    let residue = IndexVar {
        name: st.fresh_name(format!("{}q", old.name)),
        lo: 0,
        hi: s,
        source: RangeSource::Where { valid: None },
        ..old.clone()
    };
    let step = IndexVar {
        name: st.fresh_name(format!("{}a", old.name)),
        hi: a_hi - a0 + 1,
        ..residue.clone()
    };
    let (q, a) = (w.tap, Var(vars.len() as u32));
    vars[q.index()] = residue;
    vars.push(step);
    // `r = s*a + q + (s*a0 - c)` in the other reads.
    let r = Affine::sum([(&Affine::var(a), s), (&Affine::var(q), 1)])
        .and_then(|x| x.add_const(s * a0 - c))
        .expect("small");
    let step_and_start = Affine::var(a).add_const(a0).expect("small");
    let rhs = split_reads(st, w, copy, &r, &Affine::var(q), &step_and_start);
    out.statements.push(Statement {
        vars,
        rhs,
        ..st.clone()
    });
    true
}

/// One statement per residue `ρ` of the tap, over its taps `a` (`r = s*a + ρ`).
fn emit_residues(out: &mut Program, st: &Statement, w: &Window, copy: SplitCopy) {
    let s = w.stride;
    let taps = st.vars[w.tap.index()].hi;
    let mut first = true;
    for rho in 0..s.min(taps) {
        let mut vars = st.vars.clone();
        vars[w.tap.index()] = IndexVar {
            name: st.fresh_name(format!("{}{rho}", st.vars[w.tap.index()].name)),
            lo: 0,
            hi: (taps - rho + s - 1) / s,
            source: RangeSource::Where { valid: None },
            ..st.vars[w.tap.index()].clone()
        };
        // `r` in the other reads: `s*a + ρ`.
        let tap = Affine::var(w.tap)
            .checked_scale(s)
            .and_then(|x| x.add_const(rho))
            .expect("small");
        let (t, q) = (
            (rho + w.offset).div_euclid(s),
            (rho + w.offset).rem_euclid(s),
        );
        let step_and_start = Affine::var(w.tap).add_const(t).expect("small");
        let rhs = split_reads(st, w, copy, &tap, &Affine::constant(q), &step_and_start);
        out.statements.push(Statement {
            vars,
            rhs,
            init: if first { st.init } else { Init::Existing },
            op: if first { st.op } else { combine_op(st.combine) },
            ..st.clone()
        });
        first = false;
    }
}

/// The statement's right-hand side over the split copy: the tap replaced
/// by `tap` in the other reads, and the strided read `X[.., s*j + r + c]`
/// by `X/s[.., residue, j + step + shift*residue]`.
fn split_reads(
    st: &Statement,
    w: &Window,
    copy: SplitCopy,
    tap: &Affine,
    residue: &Affine,
    step: &Affine,
) -> Expr {
    let k = Cell::new(0);
    st.rhs.map_reads(&|a: &Access| {
        let this = k.get();
        k.set(this + 1);
        if this != w.read {
            return Access {
                index: a
                    .index
                    .iter()
                    .map(|e| e.substitute(w.tap, tap).expect("small"))
                    .collect(),
                ..a.clone()
            };
        }
        let (last, rest) = a.index.split_last().expect("a dimension");
        let j = last.vars().find(|&v| v != w.tap).expect("the column");
        let mut index = rest.to_vec();
        index.push(residue.clone());
        index.push(
            Affine::sum([(&Affine::var(j), 1), (step, 1), (residue, copy.shift)]).expect("small"),
        );
        Access {
            tensor: copy.tensor,
            index,
            span: a.span,
        }
    })
}

/// The operator that combines a later residue's part into the output.
fn combine_op(c: Combine) -> AssignOp {
    match c {
        Combine::Sum => AssignOp::AddAssign,
        Combine::Max => AssignOp::MaxAssign,
        Combine::Min => AssignOp::MinAssign,
    }
}
