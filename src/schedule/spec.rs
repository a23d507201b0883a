//! The loop structure of one statement's compute nest, before it is built:
//! its loop dimensions (after splits) in order, with their marks, and each
//! index variable as an affine function of the dimensions. Directives edit a
//! `Spec`; lowering builds the nest from it, folding every constraint — the
//! variables' ranges, each access's bounds — into the loop bounds.

use super::Directive;
use crate::affine::{Affine, Var};
use crate::check::{Access, Statement, TensorId};
use crate::ir::{LoopKind, LANES};

/// One loop of the nest: `name in lo..hi`.
#[derive(Clone, Debug, PartialEq)]
pub struct Dim {
    pub name: String,
    pub lo: i64,
    pub hi: i64,
    pub kind: LoopKind,
    /// Split this loop's range so that the loops inside carry no bound
    /// that depends on it in the interior (boundary iterations run apart).
    pub peel: bool,
}

impl Dim {
    /// Iterations of the loop.
    pub fn trips(&self) -> i64 {
        self.hi - self.lo
    }
}

/// `lo <= expr <= hi` over dimension ids (`Var(d)` is `dims[d]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Constraint {
    pub expr: Affine,
    pub lo: i64,
    pub hi: i64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Indexed by dimension id; split dimensions stay (with no place in `order`).
    pub dims: Vec<Dim>,
    /// Loop order, outermost first.
    pub order: Vec<usize>,
    /// Each index variable of the statement as a function of dimensions.
    pub subst: Vec<Affine>,
    /// Ranges of split dimensions whose factor does not divide them: the
    /// partial last tile must stop at the dimension's end.
    pub tails: Vec<Constraint>,
    /// Tensors whose one read is packed (see [`Spec::pack_dims`]).
    pub packs: Vec<TensorId>,
}

impl Spec {
    /// The naive nest: one loop per index variable, in the statement's order
    /// (output variables as written, then the reduced ones).
    pub fn naive(st: &Statement) -> Spec {
        Spec {
            dims: st
                .vars
                .iter()
                .map(|v| Dim {
                    name: v.name.clone(),
                    lo: v.lo,
                    hi: v.hi,
                    kind: LoopKind::Serial,
                    peel: false,
                })
                .collect(),
            order: (0..st.vars.len()).collect(),
            subst: (0..st.vars.len() as u32)
                .map(|v| Affine::var(Var(v)))
                .collect(),
            tails: Vec::new(),
            packs: Vec::new(),
        }
    }

    /// The dimensions a packed read's index depends on, in loop order: the
    /// packed copy is indexed by them (each from 0), so the compute nest
    /// reads it with unit stride along its innermost loop and each step of
    /// an outer loop moves by the size of the block inside it.
    pub fn pack_dims(&self, read: &Access) -> Vec<usize> {
        let used: Vec<usize> = read
            .index
            .iter()
            .flat_map(|e| {
                self.substitute(e)
                    .vars()
                    .map(Var::index)
                    .collect::<Vec<_>>()
            })
            .collect();
        self.order
            .iter()
            .copied()
            .filter(|d| used.contains(d))
            .collect()
    }

    /// Elements of the packed copy of `read`.
    pub fn pack_len(&self, read: &Access) -> i64 {
        self.pack_dims(read)
            .iter()
            .map(|&d| self.dims[d].trips())
            .product()
    }

    /// `pack X`: the statement's one read of tensor `t` (`name`).
    fn pack(&mut self, name: &str, t: Option<usize>, st: &Statement) -> Result<(), String> {
        let t = t.ok_or_else(|| format!("the statement reads no tensor `{name}`"))?;
        if st.lhs.tensor.index() == t {
            return Err(format!(
                "cannot pack `{name}`: it is the statement's output"
            ));
        }
        let reads = st.rhs.reads();
        let mut of_t = reads.iter().filter(|a| a.tensor.index() == t);
        let Some(first) = of_t.next() else {
            return Err(format!(
                "cannot pack `{name}`: the statement does not read it"
            ));
        };
        if of_t.any(|a| a.index != first.index) {
            return Err(format!(
                "cannot pack `{name}`: it is read at more than one index"
            ));
        }
        if !self.packs.contains(&TensorId(t as u32)) {
            self.packs.push(TensorId(t as u32));
        }
        Ok(())
    }

    /// The packed read of tensor `t`, if it is packed.
    pub fn packed_read<'s>(&self, st: &'s Statement, t: TensorId) -> Option<&'s Access> {
        if !self.packs.contains(&t) {
            return None;
        }
        st.rhs.reads().into_iter().find(|a| a.tensor == t)
    }

    /// Elements of the box the packed read's index spans (over whole tiles).
    fn pack_span(&self, read: &Access) -> i64 {
        read.index
            .iter()
            .map(|e| {
                let (lo, hi) = self
                    .substitute(e)
                    .bounds_over(&|v| self.dim_range(v))
                    .unwrap_or((0, 0));
                hi - lo + 1
            })
            .product()
    }

    /// Packed copies must not blow up memory: a copy holding more than
    /// twice the elements its read spans — the same element at several
    /// places, as an im2col of a convolution's input — is refused.
    pub fn check_packs(
        &self,
        st: &Statement,
        name_of: &dyn Fn(usize) -> String,
    ) -> Result<(), String> {
        for &t in &self.packs {
            let read = self.packed_read(st, t).expect("checked when added");
            let (len, span) = (self.pack_len(read), self.pack_span(read));
            if len > 2 * span {
                return Err(format!(
                    "cannot pack `{}`: its packed copy would hold {len} elements, more than twice the {span} it reads",
                    name_of(t.index())
                ));
            }
        }
        Ok(())
    }

    /// Every constraint a point of the nest must meet to contribute: each
    /// variable within its range, each access within its tensor.
    pub fn constraints(
        &self,
        st: &Statement,
        shape_of: &dyn Fn(usize) -> Vec<usize>,
    ) -> Vec<Constraint> {
        let mut out = self.tails.clone();
        for (v, var) in st.vars.iter().enumerate() {
            let e = &self.subst[v];
            let exact = e.as_var().is_some_and(|d| {
                self.dims[d.index()].lo == var.lo && self.dims[d.index()].hi == var.hi
            });
            if !exact {
                out.push(Constraint {
                    expr: e.clone(),
                    lo: var.lo,
                    hi: var.hi - 1,
                });
            }
        }
        for acc in st.accesses() {
            let shape = shape_of(acc.tensor.index());
            for (e, &n) in acc.index.iter().zip(&shape) {
                out.push(Constraint {
                    expr: self.substitute(e),
                    lo: 0,
                    hi: n as i64 - 1,
                });
            }
        }
        // (The tails come first and stay.)
        let tails = self.tails.len();
        let mut k = 0;
        out.retain(|c| {
            k += 1;
            k <= tails || !self.implied_by_tails(c)
        });
        out
    }

    /// Whether a split's tail bounds `c` already: `c` is the tail's
    /// expression plus terms whose range, added to the tail's, stays within
    /// `c`'s (`512*io + 6*iio + iii <= 1023` given `6*iio + iii <= 511`
    /// and `io <= 1`: a statement's range after `split i 512; split ii 6`,
    /// which would otherwise peel the last `io` as a boundary).
    fn implied_by_tails(&self, c: &Constraint) -> bool {
        let range = |v: Var| self.dim_range(v);
        self.tails.iter().any(|t| {
            let within = t.expr.terms.iter().all(|term| c.expr.terms.contains(term));
            let outside = Affine {
                terms: c
                    .expr
                    .terms
                    .iter()
                    .copied()
                    .filter(|term| !t.expr.terms.contains(term))
                    .collect(),
                constant: c.expr.constant - t.expr.constant,
            };
            within
                && !t.expr.terms.is_empty()
                && outside.bounds_over(&range).is_some_and(|(lo, hi)| {
                    lo.checked_add(t.lo).is_some_and(|x| x >= c.lo)
                        && hi.checked_add(t.hi).is_some_and(|x| x <= c.hi)
                })
        })
    }

    /// An index expression over the statement's variables, over dimensions.
    pub fn substitute(&self, e: &Affine) -> Affine {
        e.terms
            .iter()
            .fold(Affine::constant(e.constant), |acc, &(v, c)| {
                acc.add_scaled(&self.subst[v.index()], c)
                    .expect("the checker bounded every index")
            })
    }

    pub fn dim_range(&self, d: Var) -> (i64, i64) {
        let dim = &self.dims[d.index()];
        (dim.lo, dim.hi)
    }

    fn find(&self, name: &str) -> Result<usize, String> {
        self.order
            .iter()
            .copied()
            .find(|&d| self.dims[d].name == name)
            .ok_or_else(|| {
                let names: Vec<&str> = self
                    .order
                    .iter()
                    .map(|&d| self.dims[d].name.as_str())
                    .collect();
                format!("no loop `{name}` (loops: {})", names.join(", "))
            })
    }

    /// Dimensions that some reduced variable depends on.
    pub(crate) fn reduced_dims(&self, st: &Statement) -> Vec<usize> {
        st.vars
            .iter()
            .enumerate()
            .filter(|(_, v)| v.reduced)
            .flat_map(|(v, _)| self.subst[v].vars().map(Var::index).collect::<Vec<_>>())
            .collect()
    }

    /// Apply one directive, or say why it is illegal (naming the loop).
    pub fn apply(
        &mut self,
        d: &Directive,
        st: &Statement,
        shape_of: &dyn Fn(usize) -> Vec<usize>,
        tensor_named: &dyn Fn(&str) -> Option<usize>,
    ) -> Result<(), String> {
        match d {
            Directive::Pack(name) => self.pack(name, tensor_named(name), st),
            Directive::Split { var, factor } => {
                let d = self.find(var)?;
                let f = i64::from(*factor);
                if f < 2 {
                    return Err(format!(
                        "cannot split `{var}` by {factor}: the factor must be at least 2"
                    ));
                }
                let (outer, inner) = (format!("{var}o"), format!("{var}i"));
                for name in [&outer, &inner] {
                    if self.dims.iter().any(|x| &x.name == name) {
                        return Err(format!(
                            "cannot split `{var}`: a loop `{name}` exists already"
                        ));
                    }
                }
                let Dim { lo, hi, kind, .. } = self.dims[d].clone();
                let trips = (hi - lo + f - 1) / f;
                let o = self.push_dim(outer, 0, trips, kind);
                let i = self.push_dim(inner, 0, f.min(hi - lo), LoopKind::Serial);
                // d = lo + f*o + i; a partial last tile stops at d's end.
                let value = Affine::var(Var(i as u32))
                    .add_scaled(&Affine::var(Var(o as u32)), f)
                    .and_then(|a| a.add_const(lo))
                    .ok_or("overflow")?;
                for s in &mut self.subst {
                    *s = s.substitute(Var(d as u32), &value).ok_or("overflow")?;
                }
                for c in &mut self.tails {
                    c.expr = c.expr.substitute(Var(d as u32), &value).ok_or("overflow")?;
                }
                if (hi - lo) % f != 0 {
                    self.tails.push(Constraint {
                        expr: value,
                        lo,
                        hi: hi - 1,
                    });
                }
                let at = self.order.iter().position(|&x| x == d).expect("found");
                self.order.splice(at..=at, [o, i]);
                Ok(())
            }
            Directive::Reorder(names) => {
                let ids = names
                    .iter()
                    .map(|n| self.find(n))
                    .collect::<Result<Vec<_>, _>>()?;
                for (k, a) in ids.iter().enumerate() {
                    if ids[..k].contains(a) {
                        return Err(format!(
                            "`{}` is named twice in reorder",
                            self.dims[*a].name
                        ));
                    }
                }
                // The named loops take their own slots, in the order given.
                let mut slots: Vec<usize> = ids
                    .iter()
                    .map(|d| self.order.iter().position(|x| x == d).expect("found"))
                    .collect();
                slots.sort_unstable();
                for (slot, d) in slots.into_iter().zip(ids) {
                    self.order[slot] = d;
                }
                Ok(())
            }
            Directive::Unroll(name) => {
                let d = self.find(name)?;
                let trips = self.dims[d].trips();
                if trips > 64 {
                    return Err(format!(
                        "cannot unroll `{name}`: {trips} iterations (at most 64)"
                    ));
                }
                self.dims[d].kind = match self.dims[d].kind {
                    LoopKind::Accumulating => LoopKind::UnrolledAccumulating,
                    _ => LoopKind::Unrolled,
                };
                self.peel_around(d, st, shape_of);
                Ok(())
            }
            Directive::Vectorize(name) => {
                let d = self.find(name)?;
                if self.order.last() != Some(&d) {
                    return Err(format!(
                        "cannot vectorize `{name}`: only the innermost loop can be"
                    ));
                }
                let trips = self.dims[d].trips();
                if trips != i64::from(LANES) {
                    return Err(format!(
                        "cannot vectorize `{name}`: it has {trips} iterations, a vector {LANES} lanes (split it by {LANES} first)"
                    ));
                }
                self.dims[d].kind = LoopKind::Vectorized(LANES);
                self.peel_around(d, st, shape_of);
                Ok(())
            }
            Directive::Parallel(name) => {
                let d = self.find(name)?;
                if self.reduced_dims(st).contains(&d) {
                    return Err(format!("cannot parallelize `{name}`: it is a reduction loop, threads would race on each output element"));
                }
                if !self.injective_in(st, d) {
                    return Err(format!(
                        "cannot parallelize `{name}`: different iterations write the same output elements (a scatter), threads would race"
                    ));
                }
                if self.dims.iter().any(|x| x.kind == LoopKind::Parallel) {
                    return Err(format!(
                        "cannot parallelize `{name}`: another loop is parallel already"
                    ));
                }
                self.dims[d].kind = LoopKind::Parallel;
                Ok(())
            }
            Directive::Peel(name) => {
                let d = self.find(name)?;
                self.dims[d].peel = true;
                Ok(())
            }
            Directive::Accumulate(name) => {
                let d = self.find(name)?;
                self.dims[d].kind = match self.dims[d].kind {
                    LoopKind::Serial => LoopKind::Accumulating,
                    LoopKind::Unrolled => LoopKind::UnrolledAccumulating,
                    kind => {
                        let what = match kind {
                            LoopKind::Parallel => "parallel",
                            LoopKind::Vectorized(_) => "vectorized",
                            _ => "already accumulating",
                        };
                        return Err(format!("cannot accumulate across `{name}`: it is {what}"));
                    }
                };
                Ok(())
            }
        }
    }

    fn push_dim(&mut self, name: String, lo: i64, hi: i64, kind: LoopKind) -> usize {
        self.dims.push(Dim {
            name,
            lo,
            hi,
            kind,
            peel: false,
        });
        self.dims.len() - 1
    }

    /// Whether distinct values of dimension `d` always write distinct output
    /// elements: in some output index, `d`'s step either exceeds everything
    /// the other dimensions can add (`8*io + ii`), or is finer than their
    /// common step over `d`'s whole range (`4*g + k`), or the index is a
    /// mixed-radix number of its dimensions, each step beyond what the finer
    /// ones add (`8*io + 4*iio + iii`, in `iio`). What the others add is
    /// bounded by a split's tail too (`512*io + 6*iio + iii`, the tiles of
    /// `6*iio + iii` stopping at 512).
    fn injective_in(&self, st: &Statement, d: usize) -> bool {
        let extent = |v: Var| self.dims[v.index()].trips();
        st.lhs.index.iter().any(|e| {
            let e = self.substitute(e);
            let a = e.coeff(Var(d as u32)).abs();
            let others = e.terms.iter().filter(|(v, _)| v.index() != d);
            // A split tile's partial last tile stops at its dimension's
            // end: `1024*io + 6*iio + iii` with `6*iio + iii` in 0..1024.
            let rest = e.without(Var(d as u32));
            let bounded = self
                .tails
                .iter()
                .filter(|c| c.expr.terms == rest.terms)
                .map(|c| c.hi - c.lo)
                .min();
            let summed: i64 = others
                .clone()
                .map(|&(v, c)| c.abs() * (extent(v) - 1))
                .sum();
            let span = bounded.map_or(summed, |b| b.min(summed));
            let step = others.fold(0, |g, &(_, c)| gcd(g, c.abs()));
            let mut digits: Vec<(i64, i64)> = e
                .terms
                .iter()
                .map(|&(v, c)| (c.abs(), c.abs() * (extent(v) - 1)))
                .collect();
            digits.sort_unstable();
            let mixed_radix = digits
                .iter()
                .try_fold(0i64, |finer, &(c, span)| {
                    (c > finer).then_some(finer + span)
                })
                .is_some();
            a > 0
                && (a > span || (step > 0 && a * (extent(Var(d as u32)) - 1) < step) || mixed_radix)
        })
    }

    /// Mark for peeling every loop outside `d` that shares a constraint with
    /// it, so that `d` has constant bounds in the interior copies.
    fn peel_around(&mut self, d: usize, st: &Statement, shape_of: &dyn Fn(usize) -> Vec<usize>) {
        let pos = |x: usize| self.order.iter().position(|&y| y == x);
        let Some(at) = pos(d) else { return };
        let range = |v: Var| self.dim_range(v);
        let mut peel = Vec::new();
        for c in self.constraints(st, shape_of) {
            if c.expr.coeff(Var(d as u32)) == 0 || is_trivial(&c, &range) {
                continue;
            }
            // Only constraints folded into `d` (it is their innermost loop) bind it.
            let inner_most = c.expr.vars().filter_map(|v| pos(v.index())).max();
            if inner_most != Some(at) {
                continue;
            }
            for v in c.expr.vars() {
                if let Some(p) = pos(v.index()) {
                    if p < at {
                        peel.push(v.index());
                    }
                }
            }
        }
        for x in peel {
            self.dims[x].peel = true;
        }
    }
}

/// Whether a constraint holds over the whole box of dimension ranges.
pub fn is_trivial(c: &Constraint, range: &dyn Fn(Var) -> (i64, i64)) -> bool {
    match c.expr.bounds_over(range) {
        Some((min, max)) => min >= c.lo && max <= c.hi,
        None => false,
    }
}

fn gcd(a: i64, b: i64) -> i64 {
    if b == 0 {
        a
    } else {
        gcd(b, a % b)
    }
}
