//! Affine integer expressions `c0 + a1*v1 + ... + an*vn` over index (loop)
//! variables: the form of every tensor index and every loop bound.

use smallvec::{smallvec, SmallVec};
use std::fmt;

/// An index or loop variable. In a checked statement the ids number the
/// statement's index variables; lowering keeps them as loop variables and
/// the scheduler adds fresh ones.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Var(pub u32);

impl Var {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// `constant + Σ coeff * var`, terms sorted by variable with no zero
/// coefficient. Indices have few terms; keeping them inline spares the
/// compiler's passes, which build and drop affine expressions by the
/// thousand, most of their allocations.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Affine {
    pub terms: Terms,
    pub constant: i64,
}

/// The terms of an [`Affine`].
pub type Terms = SmallVec<[(Var, i64); 4]>;

impl Affine {
    pub fn constant(c: i64) -> Affine {
        Affine {
            terms: Terms::new(),
            constant: c,
        }
    }

    pub fn var(v: Var) -> Affine {
        Affine {
            terms: smallvec![(v, 1)],
            constant: 0,
        }
    }

    pub fn coeff(&self, v: Var) -> i64 {
        self.terms
            .iter()
            .find(|(u, _)| *u == v)
            .map_or(0, |(_, c)| *c)
    }

    pub fn is_constant(&self) -> bool {
        self.terms.is_empty()
    }

    /// `Some(v)` if the expression is exactly the variable `v`.
    pub fn as_var(&self) -> Option<Var> {
        match self.terms.as_slice() {
            [(v, 1)] if self.constant == 0 => Some(*v),
            _ => None,
        }
    }

    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        self.terms.iter().map(|(v, _)| *v)
    }

    /// `self + k * other`, or `None` on overflow.
    pub fn add_scaled(&self, other: &Affine, k: i64) -> Option<Affine> {
        Affine::sum([(self, 1), (other, k)])
    }

    /// `Σ k * e` over the pairs, or `None` on overflow: one expression built
    /// for the lot (an address sums one scaled index per dimension).
    pub fn sum<'a>(parts: impl IntoIterator<Item = (&'a Affine, i64)>) -> Option<Affine> {
        let mut terms = Terms::new();
        let mut constant = 0i64;
        for (e, k) in parts {
            constant = constant.checked_add(e.constant.checked_mul(k)?)?;
            for &(v, c) in &e.terms {
                let c = c.checked_mul(k)?;
                match terms.iter_mut().find(|(u, _)| *u == v) {
                    Some((_, a)) => *a = a.checked_add(c)?,
                    None => terms.push((v, c)),
                }
            }
        }
        terms.retain(|(_, c)| *c != 0);
        terms.sort_unstable_by_key(|(v, _)| *v);
        Some(Affine { terms, constant })
    }

    pub fn checked_add(&self, other: &Affine) -> Option<Affine> {
        self.add_scaled(other, 1)
    }

    pub fn checked_scale(&self, k: i64) -> Option<Affine> {
        Affine::constant(0).add_scaled(self, k)
    }

    pub fn add_const(&self, k: i64) -> Option<Affine> {
        self.checked_add(&Affine::constant(k))
    }

    /// The expression without its `v` term.
    pub fn without(&self, v: Var) -> Affine {
        Affine {
            terms: self
                .terms
                .iter()
                .copied()
                .filter(|(u, _)| *u != v)
                .collect(),
            constant: self.constant,
        }
    }

    /// Replace `v` by `by` (used when a loop is split: `i = 32*io + ii`).
    pub fn substitute(&self, v: Var, by: &Affine) -> Option<Affine> {
        let c = self.coeff(v);
        if c == 0 {
            return Some(self.clone());
        }
        self.without(v).add_scaled(by, c)
    }

    pub fn eval(&self, env: &[i64]) -> i64 {
        self.terms
            .iter()
            .fold(self.constant, |acc, &(v, c)| acc + c * env[v.index()])
    }

    /// The least and greatest values over a box of half-open variable ranges
    /// `ranges[v] = (lo, hi)` (non-empty), or `None` on overflow.
    pub fn bounds_over(&self, ranges: &dyn Fn(Var) -> (i64, i64)) -> Option<(i64, i64)> {
        let (mut lo, mut hi) = (self.constant, self.constant);
        for &(v, c) in &self.terms {
            let (a, b) = ranges(v);
            let (x, y) = (c.checked_mul(a)?, c.checked_mul(b - 1)?);
            lo = lo.checked_add(x.min(y))?;
            hi = hi.checked_add(x.max(y))?;
        }
        Some((lo, hi))
    }

    /// Print with variable names given by `name`.
    pub fn display<'a>(&'a self, name: &'a dyn Fn(Var) -> String) -> impl fmt::Display + 'a {
        AffineDisplay { e: self, name }
    }
}

struct AffineDisplay<'a> {
    e: &'a Affine,
    name: &'a dyn Fn(Var) -> String,
}

impl fmt::Display for AffineDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let c = self.e.constant;
        // `1 - j` reads better than `-j + 1`: a positive constant leads when
        // the first term is negative.
        let constant_first = c > 0 && self.e.terms.first().is_some_and(|t| t.1 < 0);
        let mut first = true;
        if constant_first || self.e.terms.is_empty() {
            write!(f, "{c}")?;
            first = false;
        }
        for &(v, k) in &self.e.terms {
            let n = (self.name)(v);
            match (first, k < 0) {
                (true, true) => write!(f, "-")?,
                (true, false) => {}
                (false, true) => write!(f, " - ")?,
                (false, false) => write!(f, " + ")?,
            }
            match k.unsigned_abs() {
                1 => write!(f, "{n}")?,
                m => write!(f, "{m}*{n}")?,
            }
            first = false;
        }
        if !constant_first && !self.e.terms.is_empty() && c != 0 {
            let sign = if c < 0 { '-' } else { '+' };
            write!(f, " {sign} {}", c.unsigned_abs())?;
        }
        Ok(())
    }
}

/// Floor division (rounds toward −∞), for loop bounds.
pub fn floor_div(a: i64, b: i64) -> i64 {
    debug_assert!(b > 0);
    a.div_euclid(b)
}

/// Ceiling division (rounds toward +∞), for loop bounds.
pub fn ceil_div(a: i64, b: i64) -> i64 {
    debug_assert!(b > 0);
    -(-a).div_euclid(b)
}
