//! Strided scatters become gathers, one per output phase. A transposed
//! convolution written as a scatter,
//! `O[b,k,2*i+rx-1] += I[b,c,i] * W[c,k,rx]`, sends each input point to
//! every other output element: its output index is not a plain variable,
//! so no dimension vectorizes. Output `o = 2*q + p` of phase `p` gathers
//! from the points with `rx = 2*t + ρ` (`ρ ≡ p + 1 mod 2`) and
//! `i = q - t - e`, so each phase is an ordinary convolution storing into
//! every other output element, `O[b,k,2*i+p] += I[b,c,i-rx-e] *
//! W[c,k,2*rx+ρ]`: its register tile reduces over the taps and channels,
//! then scatters its lanes once. A stride `s` in `d` dimensions gives `s^d`
//! phases, as one statement looping over them when their taps and offsets
//! are affine in the phase, else one statement each. The domain rule is unchanged: a point of
//! a phase reads in bounds exactly when the original point did, because
//! both scattered variables take their ranges from a dimension they index
//! alone. Checked program → checked program.

use crate::affine::{Affine, Var};
use crate::check::{Access, Combine, IndexVar, Init, Program, RangeSource, Statement};
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
    program.rewrite_each(|out, st| {
        let Some(sc) = scatters(st) else {
            out.statements.push(st.clone());
            return;
        };
        let name = &program.tensor(st.lhs.tensor).name;
        let phases = sc.iter().map(|s| s.stride as usize).product::<usize>();
        let text = program.statement_text(st);
        match looped(st, &sc, &program.tensor(st.lhs.tensor).shape) {
            Some(fits) => {
                out.notes.push(format!(
                    "phases: {text} runs as one gather over its {phases} phases, each storing into {name} with a stride of {}",
                    sc[0].stride,
                ));
                let looped = vec![Phase::Looped; sc.len()];
                emit_gather(out, st, &sc, &looped, &fits, true);
            }
            None => {
                out.notes.push(format!(
                    "phases: {text} runs as {phases} gathers, one per phase of {name}",

                ));
                emit_phases(out, st, &sc);
            }
        }
    })
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

/// How phase `p` of one scattered dimension enters its gather: tap
/// `r = s*t + rho0 + drho*p`, input `x = q - t - (e0 + de*p)`, with `q` in
/// `0..q_extent` and `t` in `0..t_extent`.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Fit {
    rho0: i64,
    drho: i64,
    e0: i64,
    de: i64,
    q_extent: i64,
    t_extent: i64,
}

impl Scatter {
    /// The fit of phase `p` alone (`drho = de = 0`), for an output extent `n`
    /// and a kernel extent `taps`.
    fn fit_at(&self, p: i64, n: i64, taps: i64) -> Fit {
        let s = self.stride;
        let rho = (p - self.offset).rem_euclid(s);
        Fit {
            rho0: rho,
            drho: 0,
            e0: (rho + self.offset - p) / s,
            de: 0,
            q_extent: (n - p + s - 1) / s,
            t_extent: (taps - rho + s - 1) / s,
        }
    }
}

/// Which phase a gather computes, per scattered dimension.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// One phase: this one.
    At(i64),
    /// All of them, as a loop variable of the gather.
    Looped,
}

/// One gather per phase with taps, the first initialising the output as
/// the statement would, the others adding to it.
fn emit_phases(out: &mut Program, st: &Statement, sc: &[Scatter]) {
    let shape = out.tensor(st.lhs.tensor).shape.clone();
    let mut first = true;
    for phase in phases(sc) {
        let fits: Vec<Fit> = sc
            .iter()
            .zip(&phase)
            .map(|(s, &p)| s.fit_at(p, shape[s.dim] as i64, st.vars[s.r.index()].hi))
            .collect();
        if fits.iter().any(|f| f.q_extent <= 0 || f.t_extent <= 0) {
            continue; // no output element, or no tap reaches this phase
        }
        let at: Vec<Phase> = phase.iter().map(|&p| Phase::At(p)).collect();
        emit_gather(out, st, sc, &at, &fits, first);
        first = false;
    }
    if first {
        // No phase has any tap: the statement adds nothing, but its output
        // must still exist as it would have.
        out.statements.push(st.clone());
    }
}

/// The phases of every scattered dimension as one fit affine in the phase,
/// when all phases have the same extents (always so for stride 2 with even
/// output and kernel extents, as in a 4x4 transposed convolution).
fn looped(st: &Statement, sc: &[Scatter], shape: &[usize]) -> Option<Vec<Fit>> {
    sc.iter()
        .map(|s| {
            let at = |p| s.fit_at(p, shape[s.dim] as i64, st.vars[s.r.index()].hi);
            let (f0, f1) = (at(0), at(1));
            let fit = Fit {
                drho: f1.rho0 - f0.rho0,
                de: f1.e0 - f0.e0,
                ..f0
            };
            let fits = (0..s.stride).all(|p| {
                at(p)
                    == Fit {
                        rho0: fit.rho0 + fit.drho * p,
                        e0: fit.e0 + fit.de * p,
                        drho: 0,
                        de: 0,
                        ..fit
                    }
            });
            (fits && fit.q_extent > 0 && fit.t_extent > 0).then_some(fit)
        })
        .collect()
}

/// One gather `O[.., s*q + p, ..] += ...` (the statement's own `=` or
/// `+=` if it `initialises` the output, else `+=`). Each scattered dimension's phase `p` is
/// fixed or a loop variable (the gather's first); its output coordinate `x`
/// becomes `q` and its tap `r` becomes `t` (reduced, moved last).
fn emit_gather(
    out: &mut Program,
    st: &Statement,
    sc: &[Scatter],
    phase: &[Phase],
    fits: &[Fit],
    initialises: bool,
) {
    let is_r = |v: usize| sc.iter().position(|s| s.r.index() == v);
    let is_x = |v: usize| sc.iter().position(|s| s.x.index() == v);
    // Looped phases' variables first, then the old ones.
    let looped: Vec<usize> = (0..sc.len())
        .filter(|&k| matches!(phase[k], Phase::Looped))
        .collect();
    let order: Vec<usize> = (0..st.vars.len())
        .filter(|&v| is_r(v).is_none() && !st.vars[v].reduced)
        .chain((0..st.vars.len()).filter(|&v| is_r(v).is_none() && st.vars[v].reduced))
        .chain((0..st.vars.len()).filter(|&v| is_r(v).is_some()))
        .collect();
    let first = looped.len();
    let new_of =
        |v: Var| Var((first + order.iter().position(|&o| o == v.index()).expect("kept")) as u32);
    // Phase `p` of dimension `k`: its variable, or its value.
    let p_of = |k: usize| match phase[k] {
        Phase::At(p) => Affine::constant(p),
        Phase::Looped => Affine::var(Var(
            looped.iter().position(|&l| l == k).expect("looped") as u32
        )),
    };
    let mut vars: Vec<IndexVar> = looped
        .iter()
        .map(|&k| IndexVar {
            name: st.fresh_name(format!("p{}", st.vars[sc[k].x.index()].name)),
            lo: 0,
            hi: sc[k].stride,
            reduced: false,
            source: RangeSource::Where { valid: None },
            ..st.vars[sc[k].x.index()].clone()
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
    // Old variable → affine expression over the new ones.
    let subst = |v: Var| -> Affine {
        let sum = |parts: &[(&Affine, i64)]| Affine::sum(parts.iter().copied()).expect("small");
        if let Some(k) = is_x(v.index()) {
            let (q, t, f) = (new_of(sc[k].x), new_of(sc[k].r), &fits[k]);
            sum(&[
                (&Affine::var(q), 1),
                (&Affine::var(t), -1),
                (&p_of(k), -f.de),
                (&Affine::constant(f.e0), -1),
            ])
        } else if let Some(k) = is_r(v.index()) {
            let f = &fits[k];
            sum(&[
                (&Affine::var(new_of(sc[k].r)), sc[k].stride),
                (&p_of(k), f.drho),
                (&Affine::constant(f.rho0), 1),
            ])
        } else {
            Affine::var(new_of(v))
        }
    };
    let rewrite = |e: &Affine| {
        let parts: Vec<(Affine, i64)> = e.terms.iter().map(|&(v, c)| (subst(v), c)).collect();
        Affine::sum(parts.iter().map(|(a, c)| (a, *c)))
            .and_then(|a| a.add_const(e.constant))
            .expect("small")
    };
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
    // `O[.., s*q + p, ..] += ...`: each phase's points straight into
    // every `s`-th element of the output (a vector of `q` is a scatter).
    let out_index = lhs_with(&|k| {
        Affine::sum([(&Affine::var(new_of(sc[k].x)), sc[k].stride), (&p_of(k), 1)]).expect("small")
    });
    out.statements.push(Statement {
        vars,
        lhs: Access {
            tensor: st.lhs.tensor,
            index: out_index,
            span: st.lhs.span,
        },
        combine: Combine::Sum,
        init: if initialises { st.init } else { Init::Existing },
        rhs: st.rhs.map_reads(&|a: &Access| Access {
            index: a.index.iter().map(rewrite).collect(),
            ..a.clone()
        }),
        op: if initialises {
            st.op
        } else {
            AssignOp::AddAssign
        },
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
