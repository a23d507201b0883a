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

pub fn accumulate(func: &Func) -> Func {
    let mut out = func.clone();
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
    let locals: Vec<LocalId> = tiles
        .iter()
        .map(|t| {
            let name = format!("acc{}", func.locals.len());
            func.new_local(name, t.lanes)
        })
        .collect();
    let mut before = Vec::new();
    let mut after = Vec::new();
    for (t, &local) in tiles.iter().zip(&locals) {
        let (init, result, combine) = if t.horizontal {
            let identity = Expr::Broadcast(Box::new(Expr::Const(t.combine.identity())));
            let lanes = Expr::Reduce(t.combine, Box::new(Expr::Local(local)));
            (identity, lanes, Some(t.combine))
        } else {
            let load = Expr::Load {
                buf: t.buf,
                index: t.index.clone(),
                lanes: t.lanes,
                step: 1,
            };
            (load, Expr::Local(local), None)
        };
        before.push(Stmt::Assign {
            local,
            value: init,
            combine: None,
        });
        after.push(Stmt::Store {
            buf: t.buf,
            index: t.index.clone(),
            value: result,
            combine,
        });
    }
    l.body = l
        .body
        .into_iter()
        .map(|s| replace(s, &tiles, &locals))
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

/// An output element (or vector) kept in a register.
struct Tile {
    buf: BufId,
    index: Vec<crate::affine::Affine>,
    lanes: u32,
    combine: Combine,
    /// The stores are `Reduce(combine, vector)`: the register holds the vector.
    horizontal: bool,
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
                            combine: *c,
                            horizontal,
                        };
                        match tiles.iter().find(|t| same(t)) {
                            Some(t) if (t.combine, t.lanes) != (tile.combine, tile.lanes) => {
                                blocked[buf.index()] = true
                            }
                            Some(_) => {}
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
/// indices must differ by constants, in a leading dimension or by at least
/// a vector in the last. (A scalar and a horizontal register of the same
/// element are fine: both combine into it.)
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
            let disjoint = delta.is_some_and(|d| {
                let (last, lead) = d.split_last().expect("tiles index a tensor");
                lead.iter().any(|&x| x != 0)
                    || last.unsigned_abs() >= u64::from(a.width().max(b.width()))
            });
            if !disjoint {
                blocked[a.buf.index()] = true;
            }
        }
    }
}

fn replace(s: Stmt, tiles: &[Tile], locals: &[LocalId]) -> Stmt {
    match s {
        Stmt::Loop(mut l) => {
            l.body = l
                .body
                .into_iter()
                .map(|s| replace(s, tiles, locals))
                .collect();
            Stmt::Loop(l)
        }
        Stmt::Store {
            buf,
            index,
            value,
            combine,
        } => {
            let horizontal = matches!(&value, Expr::Reduce(r, _) if Some(*r) == combine);
            match tiles
                .iter()
                .position(|t| t.buf == buf && t.index == index && t.horizontal == horizontal)
            {
                Some(k) => Stmt::Assign {
                    local: locals[k],
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
                },
            }
        }
        other => other,
    }
}

/// A register loaded from an element that the same body set to a constant
/// just before (a nest that initialises its output itself: `O[..] =
/// splat(0.0)`, then `acc = O[..]`) starts from the constant instead, and
/// the constant's store goes when the register's final store overwrites it
/// with nothing reading it in between.
fn forward_initial_values(func: &Func, mut body: Vec<Stmt>) -> Vec<Stmt> {
    let scalar = |e: &Expr| match e {
        Expr::Const(c) => Some(c.to_bits()),
        Expr::Broadcast(x) => match **x {
            Expr::Const(c) => Some(c.to_bits()),
            _ => None,
        },
        _ => None,
    };
    let constant = |e: &Expr| scalar(e).is_some();
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
                    step: 1,
                },
            combine: None,
            ..
        } = &body[p]
        else {
            continue;
        };
        let (buf, index, lanes) = (*buf, index.clone(), *lanes);
        // The nearest earlier statement touching `buf` must be a constant
        // store to this very element (register loads of the buffer and
        // stores of the same constant elsewhere in between are fine).
        let mut found = None;
        let mut between = Vec::new();
        for q in (0..p).rev() {
            match &body[q] {
                Stmt::Store {
                    buf: b,
                    index: i,
                    value,
                    combine: None,
                } if *b == buf && constant(value) => {
                    if *i == index {
                        if func.lanes(value) == lanes
                            && between.iter().all(|c| Some(*c) == scalar(value))
                        {
                            found = Some(value.clone());
                        }
                        break;
                    }
                    between.extend(scalar(value));
                }
                Stmt::Assign {
                    value: Expr::Load { .. },
                    ..
                } => {}
                other if reads(other, buf) || matches!(other, Stmt::Loop(_)) => break,
                Stmt::Store { buf: b, .. } if *b == buf => break,
                _ => {}
            }
        }
        if let (Some(value), Stmt::Assign { value: v, .. }) = (found, &mut body[p]) {
            *v = value;
        }
    }
    // Constant stores overwritten later with no read of the buffer between.
    let mut keep = vec![true; body.len()];
    for q in 0..body.len() {
        let Stmt::Store {
            buf,
            index,
            value,
            combine: None,
        } = &body[q]
        else {
            continue;
        };
        if !constant(value) {
            continue;
        }
        for later in &body[q + 1..] {
            // A read of the buffer — by a value, or by a store combining
            // into it — keeps the constant.
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
                } if b == buf && i == index && func.lanes(v) == func.lanes(value) => {
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
