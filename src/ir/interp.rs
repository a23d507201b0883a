//! A direct interpreter of the IR: the oracle that lowering and every
//! schedule are checked against before and besides native code.

use super::*;
use crate::affine::{ceil_div, floor_div};

/// Run `func` over `data` (one row-major vector per buffer, inputs filled).
///
/// Panics if an access leaves its buffer: the IR's bounds are meant to make
/// that impossible, so it is a compiler bug, not a user error.
pub fn interpret(func: &Func, data: &mut [Vec<f32>]) {
    assert_eq!(data.len(), func.buffers.len(), "one vector per buffer");
    let strides: Vec<Vec<i64>> = func.buffers.iter().map(Buffer::strides).collect();
    let mut machine = Machine {
        func,
        strides,
        env: vec![0; func.var_names.len()],
        data,
    };
    for s in &func.body {
        machine.stmt(s);
    }
}

/// The first and one-past-last value of a loop at the current environment.
pub(crate) fn loop_range(l: &Loop, env: &[i64]) -> (i64, i64) {
    let lo =
        l.lo.iter()
            .map(|b| ceil_div(b.expr.eval(env), b.div))
            .max()
            .expect("a loop has a lower bound");
    let hi =
        l.hi.iter()
            .map(|b| floor_div(b.expr.eval(env), b.div))
            .min()
            .expect("a loop has an upper bound");
    (lo, hi)
}

struct Machine<'a> {
    func: &'a Func,
    strides: Vec<Vec<i64>>,
    env: Vec<i64>,
    data: &'a mut [Vec<f32>],
}

impl Machine<'_> {
    fn offset(&self, buf: BufId, index: &[Affine]) -> usize {
        let b = &self.func.buffers[buf.index()];
        let mut off = 0i64;
        for (d, e) in index.iter().enumerate() {
            let i = e.eval(&self.env);
            assert!(
                (0..b.shape[d] as i64).contains(&i),
                "out-of-bounds access {}[.., {i}, ..] (dimension {d} of size {})",
                b.name,
                b.shape[d]
            );
            off += i * self.strides[buf.index()][d];
        }
        off as usize
    }

    fn stmt(&mut self, s: &Stmt) {
        match s {
            Stmt::Loop(l) => {
                let (lo, hi) = loop_range(l, &self.env);
                for i in lo..hi {
                    self.env[l.var.index()] = i;
                    for s in &l.body {
                        self.stmt(s);
                    }
                }
            }
            Stmt::Store {
                buf,
                index,
                value,
                combine,
            } => {
                let v = self.expr(value);
                let off = self.offset(*buf, index);
                let slot = &mut self.data[buf.index()][off];
                *slot = match combine {
                    None => v,
                    Some(c) => c.apply(*slot, v),
                };
            }
        }
    }

    fn expr(&self, e: &Expr) -> f32 {
        match e {
            Expr::Const(c) => *c,
            Expr::Load { buf, index } => self.data[buf.index()][self.offset(*buf, index)],
            Expr::Unary(op, x) => op.eval(self.expr(x)),
            Expr::Binary(op, a, b) => op.eval(self.expr(a), self.expr(b)),
        }
    }
}
