//! Strided scatters become gathers, one per output phase. A transposed
//! convolution written as a scatter,
//! `O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]`, sends each input point to
//! every other output element: its output index is not a plain variable,
//! so no dimension vectorizes. Output `o = 2*q + p` of phase `p` gathers
//! from the points with `rx = 2*t + ρ` (`ρ ≡ p + 1 mod 2`) and
//! `i = q - t - e`, so each phase is an ordinary convolution into a dense
//! temporary, `O@p[b,k,i] = I[b,c,i-rx-e] * W[c,k,2*rx+ρ]`, followed by a
//! cheap strided copy `O[b,k,2*i+p] += O@p[b,k,i]`. A stride `s` in `d`
//! dimensions gives `s^d` phases. The domain rule is unchanged: a point of
//! a phase reads in bounds exactly when the original point did, because
//! both scattered variables take their ranges from a dimension they index
//! alone. Checked program → checked program.

use crate::affine::{Affine, Var};
use crate::check::{
    Access, Combine, Expr, IndexVar, Init, Origin, Program, RangeSource, Statement, Tensor,
    TensorId,
};
use crate::syntax::ast::AssignOp;

/// At most this many phases per statement (stride 2 in 3 dimensions).
const MAX_PHASES: usize = 8;

/// One scattered output dimension: index `s*x + r + offset`.
#[derive(Clone, Copy, Debug)]
struct Scatter {
    dim: usize,
    stride: i64,
    x: Var,
    r: Var,
    offset: i64,
}

pub fn split_phases(program: &Program) -> Program {
    let mut out = Program {
        statements: Vec::new(),
        ..program.clone()
    };
    let mut new_index = Vec::new();
    for st in &program.statements {
        match scatters(st) {
            Some(sc) => {
                let name = &program.tensor(st.lhs.tensor).name;
                let phases = sc.iter().map(|s| s.stride as usize).product::<usize>();
                match looped(st, &sc, &program.tensor(st.lhs.tensor).shape) {
                    Some(fits) => {
                        out.notes.push(format!(
                            "phases: {} runs as one gather over its {phases} phases into {name}@phases and one strided copy into {name}",
                            program.statement_text(st),
                        ));
                        emit_looped_phases(&mut out, st, &sc, &fits);
                    }
                    None => {
                        out.notes.push(format!(
                            "phases: {} runs as {phases} gathers into {name}@.. and strided copies into {name}",
                            program.statement_text(st),
                        ));
                        emit_phases(&mut out, st, &sc);
                    }
                }
            }
            None => out.statements.push(st.clone()),
        }
        new_index.push(out.statements.len() - 1);
    }
    for t in &mut out.tensors[..program.tensors.len()] {
        if let Origin::Statement(s) = t.origin {
            t.origin = Origin::Statement(new_index[s]);
        }
    }
    out
}

/// The scattered dimensions of `st`, if it is a strided scatter whose last
/// output index is one and every scattered variable's range is the whole
/// of a dimension it indexes alone.
fn scatters(st: &Statement) -> Option<Vec<Scatter>> {
    if st.combine != Combine::Sum || !st.epilogues.is_empty() {
        return None;
    }
    let whole = |v: Var| {
        matches!(st.vars[v.index()].source, RangeSource::Dimension { .. })
            && st.vars[v.index()].lo == 0
    };
    let used_once = |v: Var| st.lhs.index.iter().filter(|e| e.coeff(v) != 0).count() == 1;
    let mut out = Vec::new();
    for (dim, e) in st.lhs.index.iter().enumerate() {
        let [(a, ca), (b, cb)] = e.terms.as_slice() else {
            continue;
        };
        let (x, s, r) = match (*ca, *cb) {
            (s, 1) if s > 1 => (*a, s, *b),
            (1, s) if s > 1 => (*b, s, *a),
            _ => continue,
        };
        if whole(x) && whole(r) && used_once(x) && used_once(r) {
            out.push(Scatter {
                dim,
                stride: s,
                x,
                r,
                offset: e.constant,
            });
        }
    }
    let last = st.lhs.index.len().checked_sub(1)?;
    let phases: usize = out.iter().map(|s| s.stride as usize).product();
    (out.iter().any(|s| s.dim == last) && phases <= MAX_PHASES).then_some(out)
}

/// Each phase's gather into a temporary, then its strided copy into the output.
fn emit_phases(out: &mut Program, st: &Statement, sc: &[Scatter]) {
    let name = out.tensor(st.lhs.tensor).name.clone();
    let shape = out.tensor(st.lhs.tensor).shape.clone();
    let mut first_copy = true;
    for phase in phases(sc) {
        // Per scattered dimension: output positions `s*q + p`, kernel taps
        // `r = s*t + rho`, input `x = q - t - e`.
        let mut q_extent = Vec::new();
        let mut t_extent = Vec::new();
        let mut rho_e = Vec::new();
        for (s, &p) in sc.iter().zip(&phase) {
            let rho = (p - s.offset).rem_euclid(s.stride);
            let e = (rho + s.offset - p) / s.stride;
            let n = shape[s.dim] as i64;
            let r_extent = st.vars[s.r.index()].hi;
            q_extent.push((n - p + s.stride - 1) / s.stride);
            t_extent.push((r_extent - rho + s.stride - 1) / s.stride);
            rho_e.push((rho, e));
        }
        if q_extent.iter().chain(&t_extent).any(|&n| n <= 0) {
            continue; // no output element, or no tap reaches this phase
        }
        // New variables: the old ones with each `x` now the phase's output
        // coordinate `q` and each `r` the tap index `t` (reduced, moved last).
        let is_r = |v: usize| sc.iter().position(|s| s.r.index() == v);
        let is_x = |v: usize| sc.iter().position(|s| s.x.index() == v);
        let order: Vec<usize> = (0..st.vars.len())
            .filter(|&v| is_r(v).is_none() && !st.vars[v].reduced)
            .chain((0..st.vars.len()).filter(|&v| is_r(v).is_none() && st.vars[v].reduced))
            .chain((0..st.vars.len()).filter(|&v| is_r(v).is_some()))
            .collect();
        let new_of = |v: Var| Var(order.iter().position(|&o| o == v.index()).expect("kept") as u32);
        let vars: Vec<IndexVar> = order
            .iter()
            .map(|&v| {
                let old = &st.vars[v];
                let (hi, reduced, source) = match (is_x(v), is_r(v)) {
                    (Some(k), _) => (q_extent[k], false, RangeSource::Where { valid: None }),
                    (_, Some(k)) => (t_extent[k], true, RangeSource::Where { valid: None }),
                    _ => (old.hi, old.reduced, old.source.clone()),
                };
                IndexVar {
                    lo: 0,
                    hi,
                    reduced,
                    source,
                    ..old.clone()
                }
            })
            .collect();
        // Old variable → affine expression over the new ones.
        let subst = |v: Var| -> Affine {
            if let Some(k) = is_x(v.index()) {
                let (q, t) = (new_of(sc[k].x), new_of(sc[k].r));
                Affine::var(q)
                    .add_scaled(&Affine::var(t), -1)
                    .and_then(|a| a.add_const(-rho_e[k].1))
                    .expect("small")
            } else if let Some(k) = is_r(v.index()) {
                Affine::constant(rho_e[k].0)
                    .add_scaled(&Affine::var(new_of(sc[k].r)), sc[k].stride)
                    .expect("small")
            } else {
                Affine::var(new_of(v))
            }
        };
        let rewrite = |e: &Affine| {
            e.terms
                .iter()
                .fold(Affine::constant(e.constant), |acc, &(v, c)| {
                    acc.add_scaled(&subst(v), c).expect("small")
                })
        };
        // The phase's dense temporary: the output's index with each
        // scattered dimension replaced by its `q`.
        let temp_shape: Vec<usize> = shape
            .iter()
            .enumerate()
            .map(|(d, &n)| match sc.iter().position(|s| s.dim == d) {
                Some(k) => q_extent[k] as usize,
                None => n,
            })
            .collect();
        // The output's index with scattered dimension `k` replaced by `f(k)`.
        let lhs_with = |f: &dyn Fn(usize) -> Affine| -> Vec<Affine> {
            st.lhs
                .index
                .iter()
                .enumerate()
                .map(|(d, e)| match sc.iter().position(|s| s.dim == d) {
                    Some(k) => f(k),
                    None => rewrite(e),
                })
                .collect()
        };
        let temp_index = lhs_with(&|k| Affine::var(new_of(sc[k].x)));
        let suffix: String = phase.iter().map(|p| p.to_string()).collect();
        let temp = TensorId(out.tensors.len() as u32);
        out.tensors.push(Tensor {
            name: format!("{name}@{suffix}"),
            shape: temp_shape,
            origin: Origin::Statement(out.statements.len()),
        });
        out.statements.push(Statement {
            vars: vars.clone(),
            lhs: Access {
                tensor: temp,
                index: temp_index.clone(),
                span: st.lhs.span,
            },
            combine: Combine::Sum,
            init: Init::Identity,
            rhs: st.rhs.map_reads(&|a: &Access| Access {
                index: a.index.iter().map(rewrite).collect(),
                ..a.clone()
            }),
            op: AssignOp::Assign,
            span: st.span,
            epilogues: Vec::new(),
        });
        // `O[.., s*q + p, ..] += O@p[.., q, ..]` over the output variables.
        let out_vars: Vec<IndexVar> = vars.iter().filter(|v| !v.reduced).cloned().collect();
        let out_index = lhs_with(&|k| {
            Affine::var(new_of(sc[k].x))
                .checked_scale(sc[k].stride)
                .and_then(|a| a.add_const(phase[k]))
                .expect("small")
        });
        out.statements.push(Statement {
            vars: out_vars,
            lhs: Access {
                tensor: st.lhs.tensor,
                index: out_index,
                span: st.lhs.span,
            },
            combine: Combine::Sum,
            init: if first_copy { st.init } else { Init::Existing },
            rhs: Expr::Read(Access {
                tensor: temp,
                index: temp_index,
                span: st.lhs.span,
            }),
            op: AssignOp::AddAssign,
            span: st.span,
            epilogues: Vec::new(),
        });
        first_copy = false;
    }
    if first_copy {
        // No phase has any tap: the statement adds nothing, but its output
        // must still exist as it would have.
        out.statements.push(st.clone());
    }
}

/// Per scattered dimension, how its phase `p` enters the gather when the
/// phases can be one loop: tap `r = s*t + rho0 + drho*p`, input
/// `x = q - t - (e0 + de*p)`, with the same `q` and `t` extents for every
/// phase.
struct Fit {
    rho0: i64,
    drho: i64,
    e0: i64,
    de: i64,
    q_extent: i64,
    t_extent: i64,
}

/// Whether every scattered dimension's phases have equal extents and taps
/// and offsets affine in the phase (always so for stride 2 when the output
/// and kernel extents are even, as in a 4x4 transposed convolution).
fn looped(st: &Statement, sc: &[Scatter], shape: &[usize]) -> Option<Vec<Fit>> {
    sc.iter()
        .map(|s| {
            let n = shape[s.dim] as i64;
            let r_extent = st.vars[s.r.index()].hi;
            let at = |p: i64| {
                let rho = (p - s.offset).rem_euclid(s.stride);
                let e = (rho + s.offset - p) / s.stride;
                let q = (n - p + s.stride - 1) / s.stride;
                let t = (r_extent - rho + s.stride - 1) / s.stride;
                (rho, e, q, t)
            };
            let (rho0, e0, q_extent, t_extent) = at(0);
            let (rho1, e1, _, _) = at(1);
            let fit = Fit {
                rho0,
                drho: rho1 - rho0,
                e0,
                de: e1 - e0,
                q_extent,
                t_extent,
            };
            let fits = (0..s.stride)
                .all(|p| at(p) == (rho0 + fit.drho * p, e0 + fit.de * p, q_extent, t_extent));
            (fits && q_extent > 0 && t_extent > 0).then_some(fit)
        })
        .collect()
}

/// The phases as loops of one gather, `O@phases[p.., .., q, ..]`, then one
/// strided copy `O[.., s*q + p, ..] += O@phases[p.., .., q, ..]`.
fn emit_looped_phases(out: &mut Program, st: &Statement, sc: &[Scatter], fits: &[Fit]) {
    let name = out.tensor(st.lhs.tensor).name.clone();
    let shape = out.tensor(st.lhs.tensor).shape.clone();
    let d = sc.len();
    let is_r = |v: usize| sc.iter().position(|s| s.r.index() == v);
    let is_x = |v: usize| sc.iter().position(|s| s.x.index() == v);
    // Phase variables first, then the old ones (each `x` now `q`, each `r`
    // now `t`, reduced and moved last).
    let order: Vec<usize> = (0..st.vars.len())
        .filter(|&v| is_r(v).is_none() && !st.vars[v].reduced)
        .chain((0..st.vars.len()).filter(|&v| is_r(v).is_none() && st.vars[v].reduced))
        .chain((0..st.vars.len()).filter(|&v| is_r(v).is_some()))
        .collect();
    let new_of =
        |v: Var| Var((d + order.iter().position(|&o| o == v.index()).expect("kept")) as u32);
    let phase = |k: usize| Var(k as u32);
    let mut vars: Vec<IndexVar> = sc
        .iter()
        .map(|s| IndexVar {
            name: format!("p{}", st.vars[s.x.index()].name),
            lo: 0,
            hi: s.stride,
            reduced: false,
            source: RangeSource::Where { valid: None },
            ..st.vars[s.x.index()].clone()
        })
        .collect();
    vars.extend(order.iter().map(|&v| {
        let old = &st.vars[v];
        let (hi, reduced, source) = match (is_x(v), is_r(v)) {
            (Some(k), _) => (fits[k].q_extent, false, RangeSource::Where { valid: None }),
            (_, Some(k)) => (fits[k].t_extent, true, RangeSource::Where { valid: None }),
            _ => (old.hi, old.reduced, old.source.clone()),
        };
        IndexVar {
            lo: 0,
            hi,
            reduced,
            source,
            ..old.clone()
        }
    }));
    let affine = |terms: &[(Var, i64)], c: i64| {
        terms.iter().fold(Affine::constant(c), |acc, &(v, k)| {
            acc.add_scaled(&Affine::var(v), k).expect("small")
        })
    };
    let subst = |v: Var| -> Affine {
        if let Some(k) = is_x(v.index()) {
            let (q, t, f) = (new_of(sc[k].x), new_of(sc[k].r), &fits[k]);
            affine(&[(q, 1), (t, -1), (phase(k), -f.de)], -f.e0)
        } else if let Some(k) = is_r(v.index()) {
            let f = &fits[k];
            affine(
                &[(new_of(sc[k].r), sc[k].stride), (phase(k), f.drho)],
                f.rho0,
            )
        } else {
            Affine::var(new_of(v))
        }
    };
    let rewrite = |e: &Affine| {
        e.terms
            .iter()
            .fold(Affine::constant(e.constant), |acc, &(v, c)| {
                acc.add_scaled(&subst(v), c).expect("small")
            })
    };
    let lhs_with = |f: &dyn Fn(usize) -> Affine| -> Vec<Affine> {
        st.lhs
            .index
            .iter()
            .enumerate()
            .map(|(dim, e)| match sc.iter().position(|s| s.dim == dim) {
                Some(k) => f(k),
                None => rewrite(e),
            })
            .collect()
    };
    let mut temp_shape: Vec<usize> = sc.iter().map(|s| s.stride as usize).collect();
    temp_shape.extend(shape.iter().enumerate().map(|(dim, &n)| {
        match sc.iter().position(|s| s.dim == dim) {
            Some(k) => fits[k].q_extent as usize,
            None => n,
        }
    }));
    let mut temp_index: Vec<Affine> = (0..d).map(|k| Affine::var(phase(k))).collect();
    temp_index.extend(lhs_with(&|k| Affine::var(new_of(sc[k].x))));
    let temp = TensorId(out.tensors.len() as u32);
    out.tensors.push(Tensor {
        name: format!("{name}@phases"),
        shape: temp_shape,
        origin: Origin::Statement(out.statements.len()),
    });
    out.statements.push(Statement {
        vars: vars.clone(),
        lhs: Access {
            tensor: temp,
            index: temp_index.clone(),
            span: st.lhs.span,
        },
        combine: Combine::Sum,
        init: Init::Identity,
        rhs: st.rhs.map_reads(&|a: &Access| Access {
            index: a.index.iter().map(rewrite).collect(),
            ..a.clone()
        }),
        op: AssignOp::Assign,
        span: st.span,
        epilogues: Vec::new(),
    });
    // `O[.., s*q + p, ..] += O@phases[p.., .., q, ..]` over the output variables.
    let out_index = lhs_with(&|k| {
        Affine::var(new_of(sc[k].x))
            .checked_scale(sc[k].stride)
            .and_then(|a| a.checked_add(&Affine::var(phase(k))))
            .expect("small")
    });
    out.statements.push(Statement {
        vars: vars.iter().filter(|v| !v.reduced).cloned().collect(),
        lhs: Access {
            tensor: st.lhs.tensor,
            index: out_index,
            span: st.lhs.span,
        },
        combine: Combine::Sum,
        init: st.init,
        rhs: Expr::Read(Access {
            tensor: temp,
            index: temp_index,
            span: st.lhs.span,
        }),
        op: AssignOp::AddAssign,
        span: st.span,
        epilogues: Vec::new(),
    });
}

/// Every combination of phases, one value in `0..stride` per scattered dimension.
fn phases(sc: &[Scatter]) -> Vec<Vec<i64>> {
    sc.iter().fold(vec![Vec::new()], |acc, s| {
        acc.into_iter()
            .flat_map(|prefix| {
                (0..s.stride).map(move |p| {
                    let mut v = prefix.clone();
                    v.push(p);
                    v
                })
            })
            .collect()
    })
}
