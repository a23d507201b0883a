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
        locals: vec![Value::splat(0.0, 1); func.locals.len()],
        data,
    };
    for (b, data) in func.buffers.iter().zip(machine.data.iter_mut()) {
        if b.kind == (BufKind::Stack { zeroed: true }) {
            data.fill(0.0);
        }
    }
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

/// A scalar or a vector: `lanes` valid entries.
#[derive(Clone, Copy, Debug)]
struct Value {
    lanes: u32,
    v: [f32; LANES as usize],
}

impl Value {
    fn splat(x: f32, lanes: u32) -> Value {
        Value {
            lanes,
            v: [x; LANES as usize],
        }
    }

    fn map(self, f: impl Fn(f32) -> f32) -> Value {
        Value {
            lanes: self.lanes,
            v: self.v.map(f),
        }
    }

    fn zip(self, other: Value, f: impl Fn(f32, f32) -> f32) -> Value {
        assert_eq!(self.lanes, other.lanes, "operands of equal width");
        let mut v = self.v;
        for (x, y) in v.iter_mut().zip(other.v) {
            *x = f(*x, y);
        }
        Value {
            lanes: self.lanes,
            v,
        }
    }
}

struct Machine<'a> {
    func: &'a Func,
    strides: Vec<Vec<i64>>,
    env: Vec<i64>,
    locals: Vec<Value>,
    data: &'a mut [Vec<f32>],
}

impl Machine<'_> {
    /// Offset of the first of `lanes` elements `step` apart along the last
    /// dimension from `index`, all of which must be inside the buffer.
    fn offset(&self, buf: BufId, index: &[Affine], lanes: u32, step: i64) -> usize {
        let b = &self.func.buffers[buf.index()];
        let mut off = 0i64;
        for (d, e) in index.iter().enumerate() {
            let i = e.eval(&self.env);
            let last = if d + 1 == index.len() {
                (lanes as i64 - 1) * step
            } else {
                0
            };
            assert!(
                i >= 0 && i + last < b.shape[d] as i64,
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
                step,
            } => {
                let v = self.expr(value);
                let off = self.offset(*buf, index, v.lanes, *step);
                let slots = self.data[buf.index()][off..]
                    .iter_mut()
                    .step_by(*step as usize);
                for (slot, x) in slots.zip(&v.v[..v.lanes as usize]) {
                    let x = *x;
                    *slot = match combine {
                        None => x,
                        Some(c) => c.apply(*slot, x),
                    };
                }
            }
            Stmt::Assign {
                local,
                value,
                combine,
            } => {
                let v = self.expr(value);
                let slot = &mut self.locals[local.index()];
                *slot = match combine {
                    None => v,
                    Some(c) => slot.zip(v, |a, b| c.apply(a, b)),
                };
            }
        }
    }

    fn expr(&self, e: &Expr) -> Value {
        match e {
            Expr::Const(c) => Value::splat(*c, 1),
            Expr::Load {
                buf,
                index,
                lanes,
                step,
            } => {
                let off = self.offset(*buf, index, *lanes, *step);
                let mut v = Value::splat(0.0, *lanes);
                for (k, x) in v.v[..*lanes as usize].iter_mut().enumerate() {
                    *x = self.data[buf.index()][off + k * *step as usize];
                }
                v
            }
            Expr::Broadcast(x) => Value::splat(self.expr(x).v[0], LANES),
            Expr::Reduce(c, x) => {
                let v = self.expr(x);
                let r = v.v[1..v.lanes as usize]
                    .iter()
                    .fold(v.v[0], |a, &b| c.apply(a, b));
                Value::splat(r, 1)
            }
            Expr::Local(l) => self.locals[l.index()],
            Expr::Unary(op, x) => self.expr(x).map(|x| op.eval(x)),
            Expr::Binary(op, a, b) => self.expr(a).zip(self.expr(b), |x, y| op.eval(x, y)),
        }
    }
}
