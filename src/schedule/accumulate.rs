//! Realise `accumulating` loops (register blocking): each output element
//! (or vector) stored inside the loop at an index that does not change
//! across it is loaded into a register before the loop, combined in the
//! register inside, and stored once after. With the tile unrolled and
//! vectorized inside, this is the MR×NR accumulator tile of a GEMM kernel.
//! A horizontal reduction (`O[i] += hsum(vector)`, from vectorizing a
//! reduction loop) keeps the whole vector in the register instead, starting
//! from the operator's identity, and combines its lanes once after the loop.

use crate::affine::Var;
use crate::check::Combine;
use crate::ir::{BufId, Expr, Func, LocalId, Loop, LoopKind, Stmt};

pub fn accumulate(func: Func) -> Func {
    let mut out = func;
    let body = std::mem::take(&mut out.body);
    let body = body
        .into_iter()
        .flat_map(|s| rewrite(&mut out, s))
        .collect();
    out.body = forward_initial_values(&out, body);
    out
}

fn rewrite(func: &mut Func, s: Stmt) -> Vec<Stmt> {
    let Stmt::Loop(mut l) = s else {
        return vec![s];
    };
    let body = std::mem::take(&mut l.body);
    let body = body.into_iter().flat_map(|s| rewrite(func, s)).collect();
    l.body = forward_initial_values(func, body);
    if l.kind != LoopKind::Accumulating {
        return vec![Stmt::Loop(l)];
    }
    l.kind = LoopKind::Serial;
    // Variables bound inside the loop (its own included).
    let mut inner = vec![l.var];
    collect_vars(&l.body, &mut inner);
    let mut tiles: Vec<Tile> = Vec::new();
    let mut blocked = vec![false; func.buffers.len()];
    scan(func, &l.body, &inner, &mut tiles, &mut blocked);
    block_overlapping(&tiles, &mut blocked);
    tiles.retain(|t| !blocked[t.buf.index()]);
    // Registers that replace the element's value are stored before those
    // combined into it (a peeled tail's scalar and the vector of one element).
    // Within each kind, column-major (the offset in the last dimension
    // first): codegen passes registers around the loop in this order, and
    // Cranelift schedules the FMAs of one B vector together, which keeps
    // that vector's live range short (no spills at 6×8).
    tiles.sort_by_key(|t| (t.horizontal, t.index.last().map(|e| e.constant)));
    if tiles.is_empty() {
        return vec![Stmt::Loop(l)];
    }
    // A register updated several times per iteration (an unrolled
    // reduction) is a chain of dependent FMAs; with fewer registers than
    // it takes to hide their latency, its updates take turns among copies,
    // combined after the loop (reassociation, as `reorder` allows).
    // (A loop of one pass is straight-line code: nothing to overlap.)
    let one_pass = matches!(l.constant_range(), Some((lo, hi)) if hi <= lo + 1);
    let copies: Vec<usize> = tiles
        .iter()
        .map(|t| match one_pass {
            true => 1,
            false => t.updates.min(CHAINS / tiles.len()).max(1),
        })
        .collect();
    let mut new_local = |t: &Tile| {
        let name = format!("acc{}", func.locals.len());
        func.new_local(name, t.lanes)
    };
    let mut locals: Vec<Vec<LocalId>> = tiles.iter().map(|t| vec![new_local(t)]).collect();
    for ((t, &n), l) in tiles.iter().zip(&copies).zip(&mut locals) {
        l.extend((1..n).map(|_| new_local(t)));
    }
    let mut before = Vec::new();
    let mut after = Vec::new();
    for (t, registers) in tiles.iter().zip(&locals) {
        let identity = match t.lanes {
            1 => Expr::Const(t.combine.identity()),
            _ => Expr::Broadcast(Box::new(Expr::Const(t.combine.identity()))),
        };
        let (init, result, combine) = if t.horizontal {
            let lanes = Expr::Reduce(t.combine, Box::new(Expr::Local(registers[0])));
            (identity.clone(), lanes, Some(t.combine))
        } else {
            let load = Expr::Load {
                buf: t.buf,
                index: t.index.clone(),
                lanes: t.lanes,
                step: t.step,
            };
            (load, Expr::Local(registers[0]), None)
        };
        before.push(Stmt::Assign {
            local: registers[0],
            value: init,
            combine: None,
        });
        for &copy in &registers[1..] {
            before.push(Stmt::Assign {
                local: copy,
                value: identity.clone(),
                combine: None,
            });
            after.push(Stmt::Assign {
                local: registers[0],
                value: Expr::Local(copy),
                combine: Some(t.combine),
            });
        }
        after.push(Stmt::Store {
            buf: t.buf,
            index: t.index.clone(),
            value: result,
            combine,
            step: t.step,
        });
    }
    let mut turns = vec![0; tiles.len()];
    l.body = l
        .body
        .into_iter()
        .map(|s| replace(s, &tiles, &locals, &mut turns))
        .collect();
    match l.constant_range() {
        // One pass (an unrolled accumulating loop): its body, inline.
        Some((lo, hi)) if hi == lo + 1 => {
            for mut s in l.body {
                s.substitute_in_place(l.var, &crate::affine::Affine::constant(lo));
                before.push(s);
            }
        }
        _ => before.push(Stmt::Loop(l)),
    }
    before.extend(after);
    before
}

/// Independent accumulator chains that hide the FMA's latency (two FMA
/// units, four cycles each).
const CHAINS: usize = 8;

/// An output element (or vector) kept in a register.
struct Tile {
    buf: BufId,
    index: Vec<crate::affine::Affine>,
    lanes: u32,
    /// Elements apart in the last dimension (see [`Stmt::Store`]).
    step: i64,
    combine: Combine,
    /// The stores are `Reduce(combine, vector)`: the register holds the vector.
    horizontal: bool,
    /// Stores into it in the loop's body.
    updates: usize,
}

fn collect_vars(body: &[Stmt], out: &mut Vec<Var>) {
    for s in body {
        if let Stmt::Loop(Loop { var, body, .. }) = s {
            out.push(*var);
            collect_vars(body, out);
        }
    }
}

/// Find the invariant accumulating stores; a buffer also read, or stored
/// to in any other way inside the loop, is `blocked` (kept in memory).
fn scan(func: &Func, body: &[Stmt], inner: &[Var], tiles: &mut Vec<Tile>, blocked: &mut [bool]) {
    for s in body {
        match s {
            Stmt::Loop(l) => scan(func, &l.body, inner, tiles, blocked),
            Stmt::Store {
                buf,
                index,
                value,
                combine,
                step,
            } => {
                value.mark_loads(blocked);
                let invariant = index.iter().all(|e| e.vars().all(|v| !inner.contains(&v)));
                let (lanes, horizontal) = match value {
                    Expr::Reduce(r, vector) if Some(*r) == *combine => (func.lanes(vector), true),
                    _ => (func.lanes(value), false),
                };
                match combine {
                    Some(c) if invariant => {
                        let same = |t: &Tile| {
                            t.buf == *buf && &t.index == index && t.horizontal == horizontal
                        };
                        let tile = Tile {
                            buf: *buf,
                            index: index.clone(),
                            lanes,
                            step: *step,
                            combine: *c,
                            horizontal,
                            updates: 1,
                        };
                        match tiles.iter_mut().find(|t| same(t)) {
                            Some(t)
                                if (t.combine, t.lanes, t.step)
                                    != (tile.combine, tile.lanes, tile.step) =>
                            {
                                blocked[buf.index()] = true
                            }
                            Some(t) => t.updates += 1,
                            None => tiles.push(tile),
                        }
                    }
                    _ => blocked[buf.index()] = true,
                }
            }
            Stmt::Assign { value, .. } => value.mark_loads(blocked),
        }
    }
}

impl Tile {
    /// Elements of the buffer the register stands for.
    fn width(&self) -> u32 {
        if self.horizontal {
            1
        } else {
            self.lanes
        }
    }
}

/// Registers of one buffer must hold disjoint elements, or a later store
/// after the loop would overwrite an earlier one: tiles at different
/// indices must differ by constants, in a leading dimension, or in the
/// last by at least a vector's span or (same step) in residue. (A scalar
/// and a horizontal register of the same element are fine: both combine
/// into it.)
fn block_overlapping(tiles: &[Tile], blocked: &mut [bool]) {
    for (k, a) in tiles.iter().enumerate() {
        for b in &tiles[k + 1..] {
            if a.buf != b.buf || a.index == b.index {
                continue;
            }
            let delta: Option<Vec<i64>> = a
                .index
                .iter()
                .zip(&b.index)
                .map(|(x, y)| {
                    x.add_scaled(y, -1)
                        .filter(|d| d.is_constant())
                        .map(|d| d.constant)
                })
                .collect();
            let step = a.step.max(b.step);
            let disjoint = delta.is_some_and(|d| {
                let (last, lead) = d.split_last().expect("tiles index a tensor");
                lead.iter().any(|&x| x != 0)
                    || last.unsigned_abs()
                        >= u64::from(a.width().max(b.width())) * step.unsigned_abs()
                    || (a.step == b.step && last % a.step != 0)
            });
            if !disjoint {
                blocked[a.buf.index()] = true;
            }
        }
    }
}

/// Each store into a tile becomes an update of one of its registers, in
/// turn (`turns` counts the tile's stores so far).
fn replace(s: Stmt, tiles: &[Tile], locals: &[Vec<LocalId>], turns: &mut [usize]) -> Stmt {
    match s {
        Stmt::Loop(mut l) => {
            l.body = l
                .body
                .into_iter()
                .map(|s| replace(s, tiles, locals, turns))
                .collect();
            Stmt::Loop(l)
        }
        Stmt::Store {
            buf,
            index,
            value,
            combine,
            step,
        } => {
            let horizontal = matches!(&value, Expr::Reduce(r, _) if Some(*r) == combine);
            match tiles.iter().position(|t| {
                t.buf == buf && t.index == index && t.horizontal == horizontal && t.step == step
            }) {
                Some(k) => Stmt::Assign {
                    local: {
                        turns[k] += 1;
                        locals[k][(turns[k] - 1) % locals[k].len()]
                    },
                    value: match value {
                        Expr::Reduce(_, vector) if horizontal => *vector,
                        value => value,
                    },
                    combine,
                },
                None => Stmt::Store {
                    buf,
                    index,
                    value,
                    combine,
                    step,
                },
            }
        }
        other => other,
    }
}

/// What a store sets its elements to before a register takes them over:
/// a constant (a nest that initialises its output itself: `O[..] =
/// splat(0.0)`), or the same elements of another buffer (`O'[e] = O[e]`,
/// a `+=` into a caller's tensor).
#[derive(Clone, Copy, PartialEq)]
enum Initial {
    Const(u32),
    Copy(BufId),
}

impl Initial {
    fn of(s: &Stmt) -> Option<Initial> {
        let Stmt::Store {
            buf,
            index,
            value,
            combine: None,
            step,
        } = s
        else {
            return None;
        };
        match value {
            Expr::Const(c) => Some(Initial::Const(c.to_bits())),
            Expr::Broadcast(x) => match **x {
                Expr::Const(c) => Some(Initial::Const(c.to_bits())),
                _ => None,
            },
            Expr::Load {
                buf: src,
                index: i,
                step: st,
                ..
            } if src != buf && i == index && st == step => Some(Initial::Copy(*src)),
            _ => None,
        }
    }
}

/// A register loaded from elements that the same body set just before
/// ([`Initial`]: `O[..] = splat(0.0)` or `O'[..] = O[..]`, then `acc =
/// O[..]`) starts from that value instead, and the setting store goes when
/// the register's final store overwrites it with nothing reading it in
/// between.
fn forward_initial_values(func: &Func, mut body: Vec<Stmt>) -> Vec<Stmt> {
    let reads = |s: &Stmt, b: BufId| {
        let mut used = vec![false; func.buffers.len()];
        match s {
            Stmt::Store { value, .. } | Stmt::Assign { value, .. } => value.mark_loads(&mut used),
            Stmt::Loop(_) => s.mark_buffers(&mut used),
        }
        used[b.index()]
    };
    for p in 0..body.len() {
        let Stmt::Assign {
            value:
                Expr::Load {
                    buf,
                    index,
                    lanes,
                    step,
                },
            combine: None,
            ..
        } = &body[p]
        else {
            continue;
        };
        let (buf, index, lanes, step) = (*buf, index.clone(), *lanes, *step);
        // The nearest earlier statement touching `buf` must set this very
        // element (register loads of the buffer, and stores setting other
        // elements the same way, may come between; nothing may store to
        // the buffer a copy reads).
        let mut found = None;
        let mut between = Vec::new();
        let mut stored = vec![false; func.buffers.len()];
        for q in (0..p).rev() {
            match (&body[q], Initial::of(&body[q])) {
                (
                    Stmt::Store {
                        buf: b,
                        index: i,
                        value,
                        step: s,
                        ..
                    },
                    Some(initial),
                ) if *b == buf => {
                    if *i == index && (*s == step || lanes == 1) {
                        let copy_intact = match initial {
                            Initial::Copy(src) => !stored[src.index()],
                            Initial::Const(_) => true,
                        };
                        if func.lanes(value) == lanes
                            && copy_intact
                            && between.iter().all(|b| *b == initial)
                        {
                            found = Some(value.clone());
                        }
                        break;
                    }
                    between.push(initial);
                }
                (
                    Stmt::Assign {
                        value: Expr::Load { .. },
                        ..
                    },
                    _,
                ) => {}
                (other, _) if reads(other, buf) || matches!(other, Stmt::Loop(_)) => break,
                (Stmt::Store { buf: b, .. }, _) if *b == buf => break,
                (Stmt::Store { buf: b, .. }, _) => stored[b.index()] = true,
                _ => {}
            }
        }
        if let (Some(value), Stmt::Assign { value: v, .. }) = (found, &mut body[p]) {
            *v = value;
        }
    }
    // Setting stores overwritten later with no read of the buffer between.
    let mut keep = vec![true; body.len()];
    for q in 0..body.len() {
        if Initial::of(&body[q]).is_none() {
            continue;
        }
        let Stmt::Store {
            buf,
            index,
            value,
            step,
            ..
        } = &body[q]
        else {
            continue;
        };
        for later in &body[q + 1..] {
            // A read of the buffer — by a value, or by a store combining
            // into it — keeps the setting store.
            let combines =
                matches!(later, Stmt::Store { buf: b, combine: Some(_), .. } if b == buf);
            if combines || reads(later, *buf) {
                break;
            }
            match later {
                Stmt::Store {
                    buf: b,
                    index: i,
                    value: v,
                    combine: None,
                    step: s,
                } if b == buf && i == index && func.lanes(v) == func.lanes(value) && s == step => {
                    keep[q] = false;
                    break;
                }
                _ => {}
            }
        }
    }
    body.into_iter()
        .zip(keep)
        .filter_map(|(s, k)| k.then_some(s))
        .collect()
}
