//! Realise `unrolled` loops: the body once per iteration, with the loop
//! variable replaced by each value. Loops without constant bounds (boundary
//! copies of peeled loops) stay loops. Any serial loop of exactly one
//! iteration is replaced by its body too, and one of none dropped: in the
//! boundary copy of a peeled loop (a partial last tile) that makes the
//! inner bounds constant, so the tile's vector loops stay vectors.

use crate::affine::{Affine, Var};
use crate::ir::{Bound, Func, Loop, LoopKind, Stmt, LANES};

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
            let mut body = match i + 1 == hi {
                true if i > lo => overlapping_last_tile(var, i, &source)
                    .unwrap_or_else(|| std::mem::take(&mut source)),
                true => std::mem::take(&mut source),
                false => source.clone(),
            };
            for b in &mut body {
                b.substitute_in_place(var, &Affine::constant(i));
            }
            overlap_peeled_last_tiles(&mut body);
            out.extend(body.into_iter().flat_map(|b| unroll_stmt(b, false)));
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
    let mut body = std::mem::take(&mut l.body);
    overlap_peeled_last_tiles(&mut body);
    l.body = body
        .into_iter()
        .flat_map(|s| unroll_stmt(s, false))
        .collect();
    vec![Stmt::Loop(l)]
}

/// A loop's last iteration peeled off the loop before it (`for jo in 0..1`
/// then `for jo in 1..2`) whose vector tile is partial: the overlapping
/// whole tile of [`overlapping_last_tile`], the tile before being the
/// first loop's last iteration.
fn overlap_peeled_last_tiles(body: &mut [Stmt]) {
    for k in 1..body.len() {
        let (before, rest) = body.split_at_mut(k);
        let (Stmt::Loop(a), Stmt::Loop(b)) = (&before[k - 1], &mut rest[0]) else {
            continue;
        };
        let (Some((a_lo, a_hi)), Some((b_lo, b_hi))) = (a.constant_range(), b.constant_range())
        else {
            continue;
        };
        // The same tile (the peeled copy of one loop) in both.
        let same_tile = match (a.body.as_slice(), b.body.as_slice()) {
            ([Stmt::Loop(x)], [Stmt::Loop(y)]) => x.var == y.var && x.body == y.body,
            _ => false,
        };
        if same_tile && a.var == b.var && a_lo < a_hi && b_lo == a_hi && b_hi == b_lo + 1 {
            if let Some(whole) = overlapping_last_tile(b.var, b_lo, &b.body) {
                b.body = whole;
            }
        }
    }
}

/// The last copy of an unrolled loop of vector tiles whose last tile is
/// partial (`for ji in 0..min(4, 7 - 4*jo)`: a row of 7 is a vector and 3
/// scalars) as a whole vector that ends where the row ends and overlaps
/// the tile before (`ji` from -1: elements 3..7), so no scalar code is left.
/// Iteration (`jo`, `ji`) is (`jo - 1`, `ji + 4`) — every access indexes
/// `4*jo + ji` only — so the extra lanes are elements the tile before
/// stores, and they store the same values again: plain stores whose values
/// read no buffer the tile stores. `None` where that does not hold (or
/// the last tile is whole).
fn overlapping_last_tile(var: Var, last: i64, body: &[Stmt]) -> Option<Vec<Stmt>> {
    let [Stmt::Loop(tile)] = body else {
        return None;
    };
    let width = i64::from(LANES);
    if tile.kind != LoopKind::Vectorized(LANES) {
        return None;
    }
    let at = |jo: i64| {
        let mut l = tile.clone();
        for b in l.lo.iter_mut().chain(l.hi.iter_mut()) {
            b.expr = b.expr.substitute(var, &Affine::constant(jo))?;
        }
        l.constant_range()
    };
    let (Some((0, rest)), Some((0, full))) = (at(last), at(last - 1)) else {
        return None;
    };
    if full != width || !(1..width).contains(&rest) {
        return None;
    }
    let mut stored = Vec::new();
    let mut loaded = Vec::new();
    let mut together = true;
    for s in &tile.body {
        let Stmt::Store {
            buf,
            combine: None,
            value,
            ..
        } = s
        else {
            return None;
        };
        stored.push(*buf);
        value.for_each_load(&mut |b, _, _| loaded.push(b));
        s.for_each_access(&mut |_, index, _| {
            together &= index
                .iter()
                .all(|e| e.coeff(var) == width * e.coeff(tile.var));
        });
    }
    if !together || loaded.iter().any(|b| stored.contains(b)) {
        return None;
    }
    let shift = Affine::var(tile.var).add_const(rest - width)?;
    let mut whole = tile.clone();
    whole.lo = vec![Bound::constant(0)];
    whole.hi = vec![Bound::constant(width)];
    for s in &mut whole.body {
        s.substitute_in_place(var, &Affine::constant(last));
        s.substitute_in_place(tile.var, &shift);
    }
    Some(vec![Stmt::Loop(whole)])
}
