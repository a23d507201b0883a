//! Adjacent dimensions that a statement always indexes together, by plain
//! variables over their whole ranges (`O[b,k,i,j] = I[b,c,i,j] * W[k,c]`:
//! `i, j` at the end of both `O` and `I`), become one: the statement then
//! runs over `ij in 0..196` for 14×14 pixels, whose vector tiles cover all
//! 196 (49 vectors) where rows of 14 left two scalar columns each. The
//! tensors keep their row-major storage — `ij` is `14*i + j` — so only the
//! program's view of their shapes changes; the runtime still takes and
//! returns the caller's shapes. Checked program → checked program.
//!
//! Only a program of one statement that creates its output (`=`, `max=`,
//! `min=`; not `+=`) and has no user schedule (whose loops keep their
//! names), and only pairs that every access using either variable indexes
//! as `.., x, y, ..` with both spanning their whole dimensions.

use crate::affine::{Affine, Var};
use crate::check::{Access, Init, Program, RangeSource, Statement};

/// The program with every collapsible pair of dimensions merged (see the
/// module doc), repeatedly: `i, j, l` of a 3D volume become one.
pub fn collapse_dimensions(program: &Program) -> Program {
    let mut out = program.clone();
    let [st] = out.statements.as_slice() else {
        return out;
    };
    if st.init != Init::Identity {
        return out;
    }
    while let Some((x, y, merged)) = (0..out.statements[0].vars.len())
        .flat_map(|x| (0..out.statements[0].vars.len()).map(move |y| (x, y)))
        .find_map(|(x, y)| mergeable(&out, x, y).map(|m| (x, y, m)))
    {
        merge(&mut out, Var(x as u32), Var(y as u32), merged);
    }
    out
}

/// Every access of the program's statement: the left-hand side, the
/// right-hand side's reads and its epilogues' reads.
fn accesses(st: &Statement) -> Vec<&Access> {
    let mut all = vec![&st.lhs];
    all.extend(st.rhs.reads());
    all.extend(st.epilogues.iter().flat_map(|e| e.rhs.reads()));
    all
}

/// For variables `x` then `y` that every access using either indexes as
/// adjacent dimensions `d, d + 1` spanning them whole: each tensor's `d`.
fn mergeable(program: &Program, x: usize, y: usize) -> Option<Vec<(usize, usize)>> {
    let st = &program.statements[0];
    let (vx, vy) = (&st.vars[x], &st.vars[y]);
    if x == y || vx.reduced != vy.reduced || vx.lo != 0 || vy.lo != 0 || vx.hi < 1 || vy.hi < 1 {
        return None;
    }
    let name = format!("{}{}", vx.name, vy.name);
    if st.vars.iter().any(|v| v.name == name) {
        return None;
    }
    let (x, y) = (Var(x as u32), Var(y as u32));
    let mut at: Vec<(usize, usize)> = Vec::new();
    let mut used = false;
    for a in accesses(st) {
        if !a.uses(x) && !a.uses(y) {
            continue;
        }
        used = true;
        let shape = &program.tensor(a.tensor).shape;
        let d = a.index.iter().position(|e| e.as_var() == Some(x))?;
        let whole = a.index.get(d + 1)?.as_var() == Some(y)
            && shape[d] as i64 == vx.hi
            && shape[d + 1] as i64 == vy.hi;
        // Nowhere else, and each tensor merged at one place.
        let elsewhere = a
            .index
            .iter()
            .enumerate()
            .any(|(k, e)| k != d && k != d + 1 && (e.coeff(x) != 0 || e.coeff(y) != 0));
        let t = a.tensor.index();
        let consistent = at.iter().all(|&(u, e)| u != t || e == d);
        if !whole || elsewhere || !consistent {
            return None;
        }
        at.push((t, d));
    }
    used.then_some(at)
}

/// Merge `y` into `x` (`x` now spans both, `x * n_y + y`), at each tensor's
/// dimension `d` (`merged`: tensor and `d`); `y` leaves the statement.
fn merge(program: &mut Program, x: Var, y: Var, mut merged: Vec<(usize, usize)>) {
    merged.sort_unstable();
    merged.dedup();
    for &(t, d) in &merged {
        let id = crate::check::TensorId(t as u32);
        if !program.views.iter().any(|(v, _)| *v == id) {
            program.views.push((id, program.tensors[t].shape.clone()));
        }
        let shape = &mut program.tensors[t].shape;
        shape[d] *= shape[d + 1];
        shape.remove(d + 1);
    }
    let st = &mut program.statements[0];
    let drop_y = |a: &Access| without(a, x, y);
    st.lhs = without(&st.lhs, x, y);
    st.rhs = st.rhs.map_reads(&drop_y);
    for e in &mut st.epilogues {
        e.rhs = e.rhs.map_reads(&drop_y);
    }
    let gone = st.vars.remove(y.index());
    let kept = &mut st.vars[if y.index() < x.index() {
        x.index() - 1
    } else {
        x.index()
    }];
    kept.source = RangeSource::Merged {
        outer: kept.name.clone(),
        inner: gone.name.clone(),
    };
    kept.name = format!("{}{}", kept.name, gone.name);
    kept.hi *= gone.hi;
}

/// `a` with its index `.., x, y, ..` as `.., x, ..`, and every variable
/// after `y` one slot lower (`y` itself is gone).
fn without(a: &Access, x: Var, y: Var) -> Access {
    let mut a = a.clone();
    if let Some(d) = a.index.iter().position(|e| e.as_var() == Some(x)) {
        if a.index.get(d + 1).and_then(Affine::as_var) == Some(y) {
            a.index.remove(d + 1);
        }
    }
    for e in &mut a.index {
        *e = renumbered(e, y);
    }
    a
}

/// `e` with every variable after `y` one slot lower (`y` itself is gone).
fn renumbered(e: &Affine, y: Var) -> Affine {
    Affine {
        terms: e
            .terms
            .iter()
            .map(|&(v, c)| (if v.0 > y.0 { Var(v.0 - 1) } else { v }, c))
            .collect(),
        constant: e.constant,
    }
}
