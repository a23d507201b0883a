//! Producer → consumer fusion at tile granularity: two consecutive nests,
//! the first writing only a temporary `T` and the second reading it, whose
//! outer loops run the same iterations, and in which iteration `x` of the
//! consumer reads only the slice of `T` that iteration `x` of the producer
//! writes (`T[.., x, ..]` on both sides), become one nest: each iteration
//! computes its slice of `T` and consumes it while it is still in cache
//! (depthwise → pointwise: one row of every channel, a few kilobytes,
//! instead of the whole intermediate through L2 or memory).
//!
//! The fused loops keep their marks: a parallel loop stays parallel, since
//! its iterations touch disjoint slices of `T` and of the consumer's output.
//! Where nothing else touches `T` but its fills, `T` shrinks to one slice
//! in the stack frame of the nest's function, reused by every iteration
//! (see [`shrink_to_stack`]); otherwise it keeps its full size, each slice
//! written once and read in place.

use crate::affine::{Affine, Var};
use crate::ir::{BufId, BufKind, Func, Loop, Stmt};

/// The function with consecutive producer → consumer nests fused where it
/// is legal; per nest, the temporaries it passes from producer to consumer
/// inside each iteration; and a dump line per producer → consumer pair:
/// fused, or why not. Pairs are taken from the last nest back, so that a
/// consumer joins its own producer first (a pointwise convolution its
/// depthwise one, rather than the depthwise one its padded input).
pub fn fuse_nests(mut func: Func) -> (Func, Vec<Vec<BufId>>, Vec<String>) {
    // Built back to front.
    let mut body: Vec<Stmt> = Vec::new();
    let mut passed: Vec<Vec<BufId>> = Vec::new();
    let mut notes = Vec::new();
    let nests = std::mem::take(&mut func.body);
    let n = func.buffers.len();
    let mut nests: Vec<Option<Stmt>> = hoist_fills(n, nests).into_iter().map(Some).collect();
    // Per buffer, the nests touching it.
    let mut users = vec![0usize; n];
    for nest in nests.iter().flatten() {
        let mut used = vec![false; n];
        nest.mark_buffers(&mut used);
        (0..n).filter(|&b| used[b]).for_each(|b| users[b] += 1);
    }
    for k in (0..nests.len()).rev() {
        let Some(nest) = nests[k].take() else {
            continue;
        };
        let fused = match body.last() {
            Some(consumer) => fuse_pair(&func, &nest, consumer),
            None => Err(None),
        };
        match fused {
            Ok((stmt, t, loops)) => {
                let names: Vec<&str> = loops.iter().map(|&v| func.var_name(v)).collect();
                let mut note = format!(
                    "fused at tile granularity: each iteration of `{}` computes its slice of `{}` and consumes it at once",
                    names.join(", "),
                    func.buffers[t.index()].name
                );
                // Its fills, all before the producer, go with it.
                let fills: Vec<usize> = (0..k)
                    .filter(|&f| {
                        nests[f]
                            .as_ref()
                            .is_some_and(|x| x.constant_fill().is_some_and(|(b, _)| b == t))
                    })
                    .collect();
                let stmt = if users[t.index()] == 2 + fills.len() {
                    let fill_nests: Vec<&Stmt> =
                        fills.iter().filter_map(|&f| nests[f].as_ref()).collect();
                    match shrink_to_stack(&mut func, &stmt, t, &loops, &fill_nests) {
                        Some(shrunk) => {
                            fills.iter().for_each(|&f| nests[f] = None);
                            let dims: Vec<String> = func.buffers[t.index()]
                                .shape
                                .iter()
                                .map(|d| d.to_string())
                                .collect();
                            note += &format!(
                                "; `{}` shrinks to one slice, f32[{}], on each thread's stack",
                                func.buffers[t.index()].name,
                                dims.join(", ")
                            );
                            shrunk
                        }
                        None => stmt,
                    }
                } else {
                    stmt
                };
                notes.push(note);
                body.pop();
                let mut inside = passed.pop().unwrap_or_default();
                inside.push(t);
                body.push(stmt);
                passed.push(inside);
            }
            Err(why) => {
                notes.extend(why);
                body.push(nest);
                passed.push(Vec::new());
            }
        }
    }
    body.reverse();
    passed.reverse();
    notes.reverse();
    func.body = body;
    (func, passed, notes)
}

/// Bytes up to which a tile-fused temporary's slice moves onto the stack
/// (see [`shrink_to_stack`]): a depthwise 3x3's padded channel of 56×56
/// (13.5 KB) stays within L1 with the rest of the tile's data.
pub const MAX_STACK_SLICE: usize = 32 * 1024;

/// The fused nest `nest` with the temporary `t` it passes shrunk to the
/// slice one iteration of the fused `loops` writes and reads: their
/// dimensions dropped from `t`'s indices, `t` a [`BufKind::Stack`] buffer.
/// Every iteration then reuses the same few kilobytes, in L1 and in the
/// thread's own stack frame, instead of writing a slice of its own (a
/// depthwise 3x3 over 256 channels of 28×28 wrote 921 KB of padded copy
/// per call, its lines allocated and written back). `t`'s fills, which
/// must all store zeros (a padded copy's border), give way to the slot's
/// clearing on entry (`zeroed`); so the producer must then store to the
/// same elements of the slice in every iteration, leaving the border alone.
/// `None` (nothing changed) if a fill stores other constants, the
/// producer's stores move with the fused loops, or the slice exceeds
/// [`MAX_STACK_SLICE`].
fn shrink_to_stack(
    func: &mut Func,
    nest: &Stmt,
    t: BufId,
    loops: &[Var],
    fills: &[&Stmt],
) -> Option<Stmt> {
    let shape = func.buffers[t.index()].shape.clone();
    // The dimensions each iteration slices: indexed by a fused variable in
    // every store and load.
    let mut dropped: Vec<usize> = loops
        .iter()
        .flat_map(|&x| {
            let loads = slices(nest, t, x, false);
            slices(nest, t, x, true)
                .into_iter()
                .filter(move |d| loads.contains(d))
        })
        .collect();
    dropped.sort_unstable();
    dropped.dedup();
    let kept: Vec<usize> = (0..shape.len()).filter(|d| !dropped.contains(d)).collect();
    let slice: usize = kept.iter().map(|&d| shape[d]).product();
    let zeros = fills
        .iter()
        .all(|f| f.constant_fill().is_some_and(|(_, zeros)| zeros));
    if dropped.is_empty() || 4 * slice > MAX_STACK_SLICE || !zeros {
        return None;
    }
    let keep =
        |index: &[Affine]| -> Vec<Affine> { kept.iter().map(|&d| index[d].clone()).collect() };
    let mut shrunk = nest.map_indices(t, &keep);
    let innermost = innermost_fused(&mut shrunk, loops)?;
    // (With no fills, each iteration reads only what it wrote.)
    if !fills.is_empty() && !innermost.body.iter().all(|s| writes_alike(s, t, loops)) {
        return None;
    }
    let buffer = &mut func.buffers[t.index()];
    buffer.shape = kept.iter().map(|&d| shape[d]).collect();
    buffer.kind = BufKind::Stack {
        zeroed: !fills.is_empty(),
    };
    Some(shrunk)
}

/// Whether the elements of `t` that `s` stores to are the same whatever
/// the values of `vars`: no store index into `t` and no loop bound uses them.
fn writes_alike(s: &Stmt, t: BufId, vars: &[Var]) -> bool {
    let uses = |e: &Affine| vars.iter().any(|&v| e.coeff(v) != 0);
    match s {
        Stmt::Loop(l) => {
            !l.lo.iter().chain(&l.hi).any(|b| uses(&b.expr))
                && l.body.iter().all(|s| writes_alike(s, t, vars))
        }
        Stmt::Store { buf, index, .. } => *buf != t || !index.iter().any(uses),
        Stmt::Assign { .. } => true,
    }
}

/// The innermost of the fused `loops`, reached through the loops that
/// enclose it in `nest`.
fn innermost_fused<'s>(nest: &'s mut Stmt, loops: &[Var]) -> Option<&'s mut Loop> {
    let Stmt::Loop(l) = nest else { return None };
    if loops.last() == Some(&l.var) {
        return Some(l);
    }
    match l.body.as_mut_slice() {
        [one] => innermost_fused(one, loops),
        _ => None,
    }
}

/// `nests` (over `n` buffers) with each fill (a nest storing only constants,
/// into a buffer no earlier nest touches) moved to the front, so that it
/// does not stand between a producer and its consumer (a padded copy's
/// zero border).
fn hoist_fills(n: usize, nests: Vec<Stmt>) -> Vec<Stmt> {
    let (mut fills, mut rest): (Vec<Stmt>, Vec<Stmt>) = (Vec::new(), Vec::new());
    let mut touched = vec![false; n];
    for nest in nests {
        let fill = matches!(nest.constant_fill(), Some((t, _)) if !touched[t.index()]);
        nest.mark_buffers(&mut touched);
        if fill {
            fills.push(nest);
        } else {
            rest.push(nest);
        }
    }
    fills.extend(rest);
    fills
}

/// Buffers a nest stores to and loads from.
fn accesses(s: &Stmt, n: usize) -> (Vec<bool>, Vec<bool>) {
    let (mut stores, mut loads) = (vec![false; n], vec![false; n]);
    s.for_each_access(&mut |buf, _, store| {
        if store {
            stores[buf.index()] = true;
        } else {
            loads[buf.index()] = true;
        }
    });
    (stores, loads)
}

/// Whether every load of `t` in `s` reads the element the store around it
/// writes (an epilogue's `T[e] = relu(T[e] + bias)`): the producer then
/// reads nothing of `T` beyond what it writes in the same iteration.
fn updates_in_place(s: &Stmt, t: BufId) -> bool {
    match s {
        Stmt::Loop(l) => l.body.iter().all(|x| updates_in_place(x, t)),
        Stmt::Store {
            buf, index, value, ..
        } => {
            let mut ok = true;
            value.for_each_load(&mut |b, at, _| ok &= b != t || (*buf == t && at == &index[..]));
            ok
        }
        Stmt::Assign { value, .. } => {
            let mut ok = true;
            value.for_each_load(&mut |b, _, _| ok &= b != t);
            ok
        }
    }
}

/// The fused nest, the temporary it passes, and the producer's loop
/// variables fused, if `consumer` can run inside `producer`'s outer loops;
/// else why not (nothing if the nests are no producer → consumer pair).
fn fuse_pair(
    func: &Func,
    producer: &Stmt,
    consumer: &Stmt,
) -> Result<(Stmt, BufId, Vec<Var>), Option<String>> {
    let n = func.buffers.len();
    let (p_stores, p_loads) = accesses(producer, n);
    let (c_stores, c_loads) = accesses(consumer, n);
    // The producer writes one temporary and nothing else; the consumer
    // reads it and writes nothing the producer touches.
    let mut written = (0..n).filter(|&b| p_stores[b]);
    let t = written.next().ok_or(None)?;
    if written.next().is_some()
        || func.buffers[t].kind != BufKind::Temp
        || !c_loads[t]
        || (p_loads[t] && !updates_in_place(producer, BufId(t as u32)))
        || (0..n).any(|b| c_stores[b] && (p_stores[b] || p_loads[b]))
    {
        return Err(None);
    }
    let name = &func.buffers[t].name;
    let t = BufId(t as u32);
    // Descend both nests while their loops match and slice `T` alike.
    let (mut p, mut c) = (producer, consumer);
    let mut pairs: Vec<(&Loop, &Loop)> = Vec::new();
    while let (Stmt::Loop(a), Stmt::Loop(b)) = (p, c) {
        let same = a.kind == b.kind
            && a.constant_range().is_some()
            && a.constant_range() == b.constant_range();
        let sliced = slices(producer, t, a.var, true)
            .iter()
            .any(|d| slices(consumer, t, b.var, false).contains(d));
        if !same || !sliced {
            break;
        }
        pairs.push((a, b));
        match (a.body.as_slice(), b.body.as_slice()) {
            ([x], [y]) => (p, c) = (x, y),
            _ => break,
        }
    }
    // Fusing only loops of one iteration gains nothing.
    if pairs
        .iter()
        .all(|(a, _)| a.constant_range().is_some_and(|(lo, hi)| hi - lo <= 1))
    {
        return Err(Some(format!(
            "not fused at tile granularity: `{name}`'s producer and consumer share no outer loop (of more than one iteration) in which each iteration reads only the slice of `{name}` it writes"
        )));
    }
    let (innermost_p, innermost_c) = *pairs.last().ok_or(None)?;
    // The producer's body with its fused variables renamed to the
    // consumer's, then the consumer's, inside the consumer's loops.
    let mut body: Vec<Stmt> = innermost_p.body.clone();
    for (a, b) in &pairs {
        let by = Affine::var(b.var);
        body = body.iter().map(|s| s.substitute(a.var, &by)).collect();
    }
    body.extend(innermost_c.body.iter().cloned());
    let fused = pairs.iter().rev().fold(body, |body, (_, b)| {
        vec![Stmt::Loop(Loop {
            body,
            ..(*b).clone()
        })]
    });
    let vars = pairs.iter().map(|(_, b)| b.var).collect();
    let nest = fused.into_iter().next().ok_or(None)?;
    Ok((nest, t, vars))
}

/// The dimensions of `t` that every store (`store`) or load of `t` in
/// `nest` indexes by exactly `x`: iteration `x` touches only the slice
/// `t[.., x, ..]` along each.
fn slices(nest: &Stmt, t: BufId, x: Var, store: bool) -> Vec<usize> {
    let mut dims: Option<Vec<usize>> = None;
    nest.for_each_access(&mut |buf, index, is_store| {
        if buf != t || is_store != store {
            return;
        }
        let here: Vec<usize> = (0..index.len())
            .filter(|&d| index[d].as_var() == Some(x))
            .collect();
        dims = Some(match dims.take() {
            None => here,
            Some(before) => before.into_iter().filter(|d| here.contains(d)).collect(),
        });
    });
    dims.unwrap_or_default()
}
