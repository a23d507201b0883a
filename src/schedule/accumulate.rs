//! Realise `accumulating` loops (register blocking): each output element
//! (or vector) stored inside the loop at an index that does not change
//! across it is loaded into a register before the loop, combined in the
//! register inside, and stored once after. With the tile unrolled and
//! vectorized inside, this is the MR×NR accumulator tile of a GEMM kernel.

use crate::affine::Var;
use crate::check::Combine;
use crate::ir::{BufId, Expr, Func, LocalId, Loop, LoopKind, Stmt};

pub fn accumulate(func: &Func) -> Func {
    let mut out = func.clone();
    let body = std::mem::take(&mut out.body);
    out.body = body
        .into_iter()
        .flat_map(|s| rewrite(&mut out, s))
        .collect();
    out
}

fn rewrite(func: &mut Func, s: Stmt) -> Vec<Stmt> {
    let Stmt::Loop(mut l) = s else {
        return vec![s];
    };
    let body = std::mem::take(&mut l.body);
    l.body = body.into_iter().flat_map(|s| rewrite(func, s)).collect();
    if l.kind != LoopKind::Accumulating {
        return vec![Stmt::Loop(l)];
    }
    l.kind = LoopKind::Serial;
    // Variables bound inside the loop (its own included).
    let mut inner = vec![l.var];
    collect_vars(&l.body, &mut inner);
    let mut tiles: Vec<Tile> = Vec::new();
    let mut blocked: Vec<BufId> = Vec::new();
    scan(func, &l.body, &inner, &mut tiles, &mut blocked);
    tiles.retain(|t| !blocked.contains(&t.buf));
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
        before.push(Stmt::Assign {
            local,
            value: Expr::Load {
                buf: t.buf,
                index: t.index.clone(),
                lanes: t.lanes,
                step: 1,
            },
            combine: None,
        });
        after.push(Stmt::Store {
            buf: t.buf,
            index: t.index.clone(),
            value: Expr::Local(local),
            combine: None,
        });
    }
    l.body = l
        .body
        .into_iter()
        .map(|s| replace(s, &tiles, &locals))
        .collect();
    before.push(Stmt::Loop(l));
    before.extend(after);
    before
}

/// An output element (or vector) kept in a register.
struct Tile {
    buf: BufId,
    index: Vec<crate::affine::Affine>,
    lanes: u32,
    combine: Combine,
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
fn scan(
    func: &Func,
    body: &[Stmt],
    inner: &[Var],
    tiles: &mut Vec<Tile>,
    blocked: &mut Vec<BufId>,
) {
    for s in body {
        match s {
            Stmt::Loop(l) => scan(func, &l.body, inner, tiles, blocked),
            Stmt::Store {
                buf,
                index,
                value,
                combine,
            } => {
                for b in 0..func.buffers.len() {
                    if value.reads(BufId(b as u32)) {
                        blocked.push(BufId(b as u32));
                    }
                }
                let invariant = index.iter().all(|e| e.vars().all(|v| !inner.contains(&v)));
                let lanes = func.lanes(value);
                match combine {
                    Some(c) if invariant => {
                        let same = |t: &Tile| t.buf == *buf && &t.index == index;
                        match tiles.iter().find(|t| same(t)) {
                            Some(t) if t.combine != *c || t.lanes != lanes => blocked.push(*buf),
                            Some(_) => {}
                            None => tiles.push(Tile {
                                buf: *buf,
                                index: index.clone(),
                                lanes,
                                combine: *c,
                            }),
                        }
                    }
                    _ => blocked.push(*buf),
                }
            }
            Stmt::Assign { value, .. } => {
                for b in 0..func.buffers.len() {
                    if value.reads(BufId(b as u32)) {
                        blocked.push(BufId(b as u32));
                    }
                }
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
        } => match tiles.iter().position(|t| t.buf == buf && t.index == index) {
            Some(k) => Stmt::Assign {
                local: locals[k],
                value,
                combine,
            },
            None => Stmt::Store {
                buf,
                index,
                value,
                combine,
            },
        },
        other => other,
    }
}
