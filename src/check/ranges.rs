//! Range inference for a statement's index variables (README, "Semantics" 4):
//! a `where` range wins; else a variable that is the whole index of a tensor
//! dimension takes that dimension's size; else a left-hand-side variable gets
//! the largest `0..n` keeping every access in bounds for all values of the
//! other variables (Tensor Comprehensions' rule).

use super::{constant, RangeSource, Tensor, TensorId, VarTable};
use crate::affine::{ceil_div, floor_div, Affine, Var};
use crate::check::Access;
use crate::error::{Error, ErrorKind, Result};
use crate::syntax::ast;

type Range = (i64, i64, RangeSource);

/// The ranges of all variables of `st`, indexed by `Var`. `constraints` are
/// the accesses that must stay in bounds: every read, plus the existing
/// output of a `+=`.
pub(super) fn infer(
    st: &ast::Statement,
    vars: &VarTable,
    n_lhs_vars: usize,
    constraints: &[Access],
    shape_of: &dyn Fn(TensorId) -> Vec<usize>,
    tensors: &[Tensor],
) -> Result<Vec<Range>> {
    let n = vars.names.len();
    let mut ranges: Vec<Option<Range>> = vec![None; n];

    // 1. `where` clauses.
    for decl in &st.ranges {
        let v = vars.find(&decl.var.name).ok_or_else(|| {
            Error::new(ErrorKind::UnusedRange(decl.var.name.clone()), decl.var.span)
        })?;
        if ranges[v.index()].is_some() {
            return Err(Error::new(
                ErrorKind::DuplicateRange(decl.var.name.clone()),
                decl.var.span,
            ));
        }
        let (lo, hi) = (constant(&decl.lo)?, constant(&decl.hi)?);
        if lo < 0 || hi < lo {
            return Err(Error::new(
                ErrorKind::BadWhereRange {
                    var: decl.var.name.clone(),
                    lo,
                    hi,
                },
                decl.span,
            ));
        }
        if lo == hi {
            return Err(Error::new(
                ErrorKind::EmptyRange {
                    var: decl.var.name.clone(),
                    lo,
                    hi,
                    why: " in the `where` clause".into(),
                },
                decl.span,
            ));
        }
        ranges[v.index()] = Some((lo, hi, RangeSource::Where { valid: None }));
    }

    // 2. Whole-index occurrences: `A[.., v, ..]` gives `v` the size of that dimension.
    let mut first_seen: Vec<Option<(usize, &Access, usize)>> = vec![None; n];
    for acc in constraints {
        let shape = shape_of(acc.tensor);
        for (dim, e) in acc.index.iter().enumerate() {
            let Some(v) = e.as_var() else { continue };
            if matches!(ranges[v.index()], Some((_, _, RangeSource::Where { .. }))) {
                continue;
            }
            let size = shape[dim];
            let name = &vars.names[v.index()];
            let tensor = &tensors[acc.tensor.index()].name;
            if let Some((first, first_acc, first_dim)) = first_seen[v.index()] {
                if first != size {
                    let first_name = &tensors[first_acc.tensor.index()].name;
                    return Err(Error::new(
                        ErrorKind::ConflictingSizes {
                            var: name.clone(),
                            first,
                            first_at: format!("dimension {first_dim} of `{first_name}`"),
                            second: size,
                            second_at: format!("dimension {dim} of `{tensor}`"),
                        },
                        acc.span,
                    )
                    .with_secondary(first_acc.span));
                }
                continue;
            }
            if size == 0 {
                return Err(Error::new(
                    ErrorKind::EmptyRange {
                        var: name.clone(),
                        lo: 0,
                        hi: 0,
                        why: format!(": dimension {dim} of `{tensor}` has size 0"),
                    },
                    acc.span,
                ));
            }
            first_seen[v.index()] = Some((size, acc, dim));
            ranges[v.index()] = Some((
                0,
                size as i64,
                RangeSource::Dimension {
                    tensor: tensor.clone(),
                    dim,
                },
            ));
        }
    }

    // 3. Left-hand-side variables: the largest `0..n` keeping every access in
    //    bounds. A constraint is usable once all its other variables are known.
    loop {
        let mut progress = false;
        for v in (0..n_lhs_vars).map(|i| Var(i as u32)) {
            if ranges[v.index()].is_some() {
                continue;
            }
            let known = |u: Var| ranges[u.index()].as_ref().map(|r| (r.0, r.1));
            let mut hi: Option<(i64, &Access, usize)> = None;
            let mut blocked = false;
            for acc in constraints {
                let shape = shape_of(acc.tensor);
                for (dim, e) in acc.index.iter().enumerate() {
                    if e.coeff(v) == 0 {
                        continue;
                    }
                    if e.vars().any(|u| u != v && known(u).is_none()) {
                        blocked = true;
                        continue;
                    }
                    let (_, upper) = in_bounds_range(e, v, shape[dim], &|u| known(u).unwrap())
                        .ok_or_else(|| Error::new(ErrorKind::IndexOverflow, acc.span))?;
                    let end = upper.saturating_add(1);
                    if hi.is_none_or(|(h, _, _)| end < h) {
                        hi = Some((end, acc, dim));
                    }
                }
            }
            if blocked {
                continue;
            }
            if let Some((end, acc, dim)) = hi {
                if end <= 0 {
                    let tensor = &tensors[acc.tensor.index()];
                    return Err(Error::new(
                        ErrorKind::EmptyRange {
                            var: vars.names[v.index()].clone(),
                            lo: 0,
                            hi: end,
                            why: format!(
                                ": no value keeps dimension {dim} of `{}` (size {}) in bounds; is the kernel larger than the input?",
                                tensor.name, tensor.shape[dim]
                            ),
                        },
                        acc.span,
                    ));
                }
                ranges[v.index()] = Some((0, end, RangeSource::Inferred));
                progress = true;
            }
        }
        if !progress {
            break;
        }
    }

    // Report a reduced variable first: no rule can give it a range, and it
    // may be what blocks the output variables.
    let unresolved = (n_lhs_vars..n)
        .chain(0..n_lhs_vars)
        .find(|&v| ranges[v].is_none());
    if let Some(v) = unresolved {
        return Err(Error::new(
            ErrorKind::UnresolvedRange(vars.names[v].clone()),
            vars.spans[v],
        ));
    }
    let mut ranges: Vec<Range> = ranges.into_iter().map(Option::unwrap).collect();

    // Record, for `where` ranges, the sub-range that keeps every access in
    // bounds: the rest is padding, shown in the dumps.
    let snapshot: Vec<(i64, i64)> = ranges.iter().map(|r| (r.0, r.1)).collect();
    for (i, r) in ranges.iter_mut().enumerate() {
        let RangeSource::Where { valid } = &mut r.2 else {
            continue;
        };
        let v = Var(i as u32);
        let (mut lo, mut hi) = (r.0, r.1 - 1);
        for acc in constraints {
            let shape = shape_of(acc.tensor);
            for (dim, e) in acc.index.iter().enumerate() {
                if e.coeff(v) != 0 {
                    if let Some((a, b)) =
                        in_bounds_range(e, v, shape[dim], &|u| snapshot[u.index()])
                    {
                        lo = lo.max(a);
                        hi = hi.min(b);
                    }
                }
            }
        }
        if (lo, hi + 1) != (r.0, r.1) {
            *valid = Some((lo, (hi + 1).max(lo)));
        }
    }
    Ok(ranges)
}

/// The inclusive range of `v` for which `0 <= e <= size-1` holds for every
/// value of the other variables in their ranges, or `None` on overflow.
/// `e` must have a non-zero coefficient on `v`.
pub(crate) fn in_bounds_range(
    e: &Affine,
    v: Var,
    size: usize,
    range_of: &dyn Fn(Var) -> (i64, i64),
) -> Option<(i64, i64)> {
    let a = e.coeff(v);
    let (rmin, rmax) = e.without(v).bounds_over(range_of)?;
    let last = i64::try_from(size).ok()?.checked_sub(1)?;
    Some(if a > 0 {
        (
            ceil_div(rmin.checked_neg()?, a),
            floor_div(last.checked_sub(rmax)?, a),
        )
    } else {
        let b = a.checked_neg()?;
        (ceil_div(rmax.checked_sub(last)?, b), floor_div(rmin, b))
    })
}
