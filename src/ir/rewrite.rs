//! Small structural rewrites shared by the schedule passes.

use super::*;

impl Stmt {
    /// The statement with loop variable `v` replaced by `by` everywhere
    /// (indices, bounds of inner loops).
    pub fn substitute(&self, v: Var, by: &Affine) -> Stmt {
        let mut s = self.clone();
        s.substitute_in_place(v, by);
        s
    }

    /// [`Stmt::substitute`] on the statement itself (the unroll pass makes
    /// one copy per iteration and rewrites it, rather than two).
    pub fn substitute_in_place(&mut self, v: Var, by: &Affine) {
        let sub = |e: &mut Affine| substitute_index(e, v, by);
        match self {
            Stmt::Loop(l) => {
                for b in l.lo.iter_mut().chain(l.hi.iter_mut()) {
                    sub(&mut b.expr);
                }
                for s in &mut l.body {
                    s.substitute_in_place(v, by);
                }
            }
            Stmt::Store { index, value, .. } => {
                index.iter_mut().for_each(sub);
                value.substitute_in_place(v, by);
            }
            Stmt::Assign { value, .. } => value.substitute_in_place(v, by),
        }
    }
}

/// `e` with `v` replaced by `by`, left alone (no copy) when `v` is absent.
fn substitute_index(e: &mut Affine, v: Var, by: &Affine) {
    if e.coeff(v) != 0 {
        *e = e
            .substitute(v, by)
            .expect("substituted index stays in range");
    }
}

/// A rewrite of one load: `(buf, index, lanes, step)` → its replacement.
pub type LoadRewrite<'a> = dyn Fn(BufId, &[Affine], u32, i64) -> Expr + 'a;

impl Expr {
    pub fn substitute(&self, v: Var, by: &Affine) -> Expr {
        let mut e = self.clone();
        e.substitute_in_place(v, by);
        e
    }

    pub fn substitute_in_place(&mut self, v: Var, by: &Affine) {
        match self {
            Expr::Load { index, .. } => index.iter_mut().for_each(|e| substitute_index(e, v, by)),
            Expr::Const(_) | Expr::Local(_) => {}
            Expr::Broadcast(x) | Expr::Reduce(_, x) | Expr::Unary(_, x) => {
                x.substitute_in_place(v, by)
            }
            Expr::Binary(_, a, b) => {
                a.substitute_in_place(v, by);
                b.substitute_in_place(v, by);
            }
        }
    }

    /// The expression with every load replaced by `f(buf, index, lanes, step)`.
    pub fn map_loads(&self, f: &LoadRewrite) -> Expr {
        match self {
            Expr::Load {
                buf,
                index,
                lanes,
                step,
            } => f(*buf, index, *lanes, *step),
            Expr::Const(_) | Expr::Local(_) => self.clone(),
            Expr::Broadcast(x) => Expr::Broadcast(Box::new(x.map_loads(f))),
            Expr::Reduce(c, x) => Expr::Reduce(*c, Box::new(x.map_loads(f))),
            Expr::Unary(op, x) => Expr::Unary(*op, Box::new(x.map_loads(f))),
            Expr::Binary(op, a, b) => {
                Expr::Binary(*op, Box::new(a.map_loads(f)), Box::new(b.map_loads(f)))
            }
        }
    }

    /// Whether any load index uses `v`.
    pub fn uses_var(&self, v: Var) -> bool {
        match self {
            Expr::Load { index, .. } => index.iter().any(|e| e.coeff(v) != 0),
            Expr::Const(_) | Expr::Local(_) => false,
            Expr::Broadcast(x) | Expr::Reduce(_, x) | Expr::Unary(_, x) => x.uses_var(v),
            Expr::Binary(_, a, b) => a.uses_var(v) || b.uses_var(v),
        }
    }

    /// Set `used[b]` for every buffer the expression loads from.
    pub fn mark_loads(&self, used: &mut [bool]) {
        self.for_each_load(&mut |buf, _, _| used[buf.index()] = true);
    }
}

impl Loop {
    /// Whether the loop provably runs no iteration: its constant bounds
    /// alone leave an empty range (whatever the other bounds say).
    pub fn is_empty(&self) -> bool {
        matches!(self.value_range(), Some((lo, hi)) if hi <= lo)
    }

    /// A half-open range containing every value of the loop's variable,
    /// from its constant bounds alone: its lower bound is the largest of its
    /// terms and its upper the smallest, so any constant term bounds it (a
    /// tail's `min(6, 256 - 6*ko)` is at most 6).
    pub fn value_range(&self) -> Option<(i64, i64)> {
        let lo = self
            .lo
            .iter()
            .filter_map(|b| b.as_constant().map(|c| crate::affine::ceil_div(c, b.div)))
            .max()?;
        let hi = self
            .hi
            .iter()
            .filter_map(|b| b.as_constant().map(|c| crate::affine::floor_div(c, b.div)))
            .min()?;
        Some((lo, hi))
    }

    /// The loop's trip range when its bounds are constants.
    pub fn constant_range(&self) -> Option<(i64, i64)> {
        let lo = self
            .lo
            .iter()
            .map(|b| b.as_constant().map(|c| crate::affine::ceil_div(c, b.div)))
            .collect::<Option<Vec<_>>>()?;
        let hi = self
            .hi
            .iter()
            .map(|b| b.as_constant().map(|c| crate::affine::floor_div(c, b.div)))
            .collect::<Option<Vec<_>>>()?;
        Some((lo.into_iter().max()?, hi.into_iter().min()?))
    }
}

impl Stmt {
    /// Set `used[b]` for every buffer the statement loads or stores.
    pub fn mark_buffers(&self, used: &mut [bool]) {
        match self {
            Stmt::Loop(l) => l.body.iter().for_each(|s| s.mark_buffers(used)),
            Stmt::Store { buf, value, .. } => {
                used[buf.index()] = true;
                value.mark_loads(used);
            }
            Stmt::Assign { value, .. } => value.mark_loads(used),
        }
    }
}

impl Stmt {
    /// Statements in the tree, loops included: a measure of the code it
    /// becomes.
    pub fn size(&self) -> usize {
        match self {
            Stmt::Loop(l) => 1 + l.body.iter().map(Stmt::size).sum::<usize>(),
            _ => 1,
        }
    }

    /// Every load and store in the statement, in the order they happen (a
    /// store's loads before it): buffer, index, and whether it is a store.
    pub fn for_each_access(&self, f: &mut dyn FnMut(BufId, &[Affine], bool)) {
        match self {
            Stmt::Loop(l) => l.body.iter().for_each(|s| s.for_each_access(f)),
            Stmt::Store {
                buf, index, value, ..
            } => {
                value.for_each_load(f);
                f(*buf, index, true);
            }
            Stmt::Assign { value, .. } => value.for_each_load(f),
        }
    }
}

impl Expr {
    pub(crate) fn for_each_load(&self, f: &mut dyn FnMut(BufId, &[Affine], bool)) {
        match self {
            Expr::Load { buf, index, .. } => f(*buf, index, false),
            Expr::Const(_) | Expr::Local(_) => {}
            Expr::Broadcast(x) | Expr::Reduce(_, x) | Expr::Unary(_, x) => x.for_each_load(f),
            Expr::Binary(_, a, b) => {
                a.for_each_load(f);
                b.for_each_load(f);
            }
        }
    }
}

impl Stmt {
    /// The buffer a nest fills with constants, if that is all it does:
    /// plain stores of constants (`O[..] = 0.0`, `splat(-inf)`) into one
    /// buffer, no loads, no registers; and whether every constant is `+0.0`.
    pub fn constant_fill(&self) -> Option<(BufId, bool)> {
        let mut target = None;
        let mut fill = true;
        let mut zeros = true;
        self.visit(&mut |s| match s {
            Stmt::Store {
                buf,
                value,
                combine: None,
                ..
            } if target.is_none_or(|t| t == *buf) => match value.constant() {
                Some(c) => {
                    target = Some(*buf);
                    zeros &= c.to_bits() == 0;
                }
                None => fill = false,
            },
            Stmt::Loop(_) => {}
            _ => fill = false,
        });
        target.filter(|_| fill).map(|t| (t, zeros))
    }

    /// `f` on this statement and every statement inside it.
    fn visit(&self, f: &mut dyn FnMut(&Stmt)) {
        f(self);
        if let Stmt::Loop(l) = self {
            l.body.iter().for_each(|s| s.visit(f));
        }
    }
}

impl Expr {
    /// The value of a constant, or of a constant in every lane.
    pub fn constant(&self) -> Option<f32> {
        match self {
            Expr::Const(c) => Some(*c),
            Expr::Broadcast(x) => match **x {
                Expr::Const(c) => Some(c),
                _ => None,
            },
            _ => None,
        }
    }
}

impl Stmt {
    /// The statement with every index of `buf` (loads and stores) replaced
    /// by `f(index)`.
    pub fn map_indices(&self, buf: BufId, f: &dyn Fn(&[Affine]) -> Vec<Affine>) -> Stmt {
        let mut s = self.clone();
        s.map_indices_in_place(buf, f);
        s
    }

    fn map_indices_in_place(&mut self, buf: BufId, f: &dyn Fn(&[Affine]) -> Vec<Affine>) {
        match self {
            Stmt::Loop(l) => l
                .body
                .iter_mut()
                .for_each(|s| s.map_indices_in_place(buf, f)),
            Stmt::Store {
                buf: b,
                index,
                value,
                ..
            } => {
                if *b == buf {
                    *index = f(index);
                }
                *value = value.map_indices(buf, f);
            }
            Stmt::Assign { value, .. } => *value = value.map_indices(buf, f),
        }
    }
}

impl Expr {
    fn map_indices(&self, buf: BufId, f: &dyn Fn(&[Affine]) -> Vec<Affine>) -> Expr {
        self.map_loads(&|b, index, lanes, step| Expr::Load {
            buf: b,
            index: if b == buf { f(index) } else { index.to_vec() },
            lanes,
            step,
        })
    }
}
