//! The reference evaluator: the language's semantics implemented directly
//! from the checked program, with no loop nest, no bounds folding and no
//! scheduling. Every point of the box of variable ranges is visited; it
//! contributes only if every access (the write and each read) is inside its
//! tensor; contributions combine with the statement's operator. Arithmetic
//! is f64, results are rounded to f32 at the end. Slow and obviously right:
//! it is the oracle for the interpreter, the JIT and every schedule.

use crate::check::{Access, Combine, Expr, Init, Program, TensorId};
use crate::error::Result;
use crate::syntax::ast::{BinOp, Func};
use ndarray::{ArrayD, IxDyn};
use std::collections::HashMap;

/// Run `program` on named inputs; returns its outputs by name.
pub fn evaluate(
    program: &Program,
    inputs: &HashMap<String, ArrayD<f32>>,
) -> Result<HashMap<String, ArrayD<f32>>> {
    let mut values: Vec<Option<ArrayD<f64>>> = vec![None; program.tensors.len()];
    for id in program.inputs() {
        let t = program.tensor(id);
        let a = inputs.get(&t.name);
        t.check_input(a.map(|a| a.shape()))?;
        values[id.index()] = Some(a.expect("checked").mapv(f64::from));
    }

    for st in &program.statements {
        let out = st.lhs.tensor;
        let mut acc = match st.init {
            Init::Identity => ArrayD::from_elem(
                IxDyn(&program.tensor(out).shape),
                f64::from(st.combine.identity()),
            ),
            Init::CopyOf(src) => values[src.index()].clone().expect("input present"),
            Init::Existing => values[out.index()].take().expect("written earlier"),
        };
        let ranges: Vec<(i64, i64)> = st.vars.iter().map(|v| (v.lo, v.hi)).collect();
        for_each_point(&ranges, |point| {
            if let Some(target) = locate(&st.lhs, point, &acc) {
                if let Some(x) = eval(&st.rhs, point, &values) {
                    let slot = &mut acc[target.as_slice()];
                    *slot = match st.combine {
                        Combine::Sum => *slot + x,
                        Combine::Max => slot.max(x),
                        Combine::Min => slot.min(x),
                    };
                }
            }
        });
        values[out.index()] = Some(acc);
        // Fused elementwise statements, each over every output element.
        for epilogue in &st.epilogues {
            let mut next = values[out.index()].clone().expect("just written");
            let outer: Vec<(i64, i64)> = st
                .vars
                .iter()
                .map(|v| {
                    if v.reduced {
                        (v.lo, v.lo + 1)
                    } else {
                        (v.lo, v.hi)
                    }
                })
                .collect();
            for_each_point(&outer, |point| {
                if let (Some(target), Some(x)) = (
                    locate(&st.lhs, point, &next),
                    eval(&epilogue.rhs, point, &values),
                ) {
                    next[target.as_slice()] = x;
                }
            });
            values[out.index()] = Some(next);
        }
    }

    Ok(program
        .outputs()
        .into_iter()
        .map(|t: TensorId| {
            let v = values[t.index()].as_ref().expect("outputs are written");
            (program.tensor(t).name.clone(), v.mapv(|x| x as f32))
        })
        .collect())
}

/// Call `f` at every point of the box of `ranges`, last variable fastest.
fn for_each_point(ranges: &[(i64, i64)], mut f: impl FnMut(&[i64])) {
    if ranges.iter().any(|r| r.0 >= r.1) {
        return;
    }
    let mut point: Vec<i64> = ranges.iter().map(|r| r.0).collect();
    'points: loop {
        f(&point);
        for d in (0..point.len()).rev() {
            point[d] += 1;
            if point[d] < ranges[d].1 {
                continue 'points;
            }
            point[d] = ranges[d].0;
        }
        return;
    }
}

/// The element `access` names at `point`, if it lies inside `array`.
fn locate(access: &Access, point: &[i64], array: &ArrayD<f64>) -> Option<Vec<usize>> {
    access
        .index
        .iter()
        .zip(array.shape())
        .map(|(e, &n)| {
            let i = e.eval(point);
            (0..n as i64).contains(&i).then_some(i as usize)
        })
        .collect()
}

/// The right-hand side at `point`, or `None` if some read is out of bounds.
fn eval(e: &Expr, point: &[i64], values: &[Option<ArrayD<f64>>]) -> Option<f64> {
    Some(match e {
        Expr::Const(c) => f64::from(*c),
        Expr::Read(a) => {
            let array = values[a.tensor.index()].as_ref().expect("read after write");
            array[locate(a, point, array)?.as_slice()]
        }
        Expr::Neg(x) => -eval(x, point, values)?,
        Expr::Binary(op, a, b) => {
            let (x, y) = (eval(a, point, values)?, eval(b, point, values)?);
            match op {
                BinOp::Add => x + y,
                BinOp::Sub => x - y,
                BinOp::Mul => x * y,
                BinOp::Div => x / y,
            }
        }
        Expr::Call(f, args) => {
            let x = eval(&args[0], point, values)?;
            match f {
                Func::Relu => x.max(0.0),
                Func::Sigmoid => 1.0 / (1.0 + (-x).exp()),
                Func::Tanh => x.tanh(),
                Func::Exp => x.exp(),
                Func::Log => x.ln(),
                Func::Sqrt => x.sqrt(),
                Func::Abs => x.abs(),
                Func::Max => x.max(eval(&args[1], point, values)?),
                Func::Min => x.min(eval(&args[1], point, values)?),
            }
        }
    })
}
