//! Schedules: data that says how a statement's loop nest is shaped. A
//! [`Schedule`] is an ordered list of [`Directive`]s, printable and parseable
//! (`split i 4; reorder io jo ii ji; vectorize ji; unroll ii; parallel io`).
//! Directives edit the statement's [`Spec`] (the loop structure before it is
//! built); lowering builds the nest from it; then the IR → IR passes realise
//! the marks: [`unroll`], [`vectorize`] (to F32X4 lanes) and [`accumulate`]
//! (output tiles in registers across a reduction loop).
//!
//! Floating-point sums may be reassociated by a schedule (splitting and
//! reordering reduction loops, vector lanes): results agree with the
//! reference evaluator to rounding, not bit for bit.

mod accumulate;
mod auto;
mod fuse_nests;
mod spec;
mod unroll;
pub(crate) mod vectorize;

pub use accumulate::accumulate;
pub use auto::{auto_candidates, auto_schedule, auto_schedules, auto_schedules_apart};
pub use fuse_nests::fuse_nests;
pub use spec::{is_trivial, Constraint, Dim, Spec};
pub use unroll::unroll;
pub use vectorize::vectorize;

use crate::check::{Program, Statement};
use crate::error::{Error, ErrorKind, Result, Span};
use crate::ir::{Bound, Func, Loop, LoopKind, Stmt};
use std::fmt;
use std::str::FromStr;

/// One scheduling step, naming loops by their names in the nest.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Directive {
    /// `split i 4`: loop `i` becomes `io` (tiles) around `ii` (4 iterations);
    /// a partial last tile is handled exactly.
    Split { var: String, factor: u32 },
    /// `reorder a b c`: these loops take their slots in this order.
    Reorder(Vec<String>),
    /// `unroll ii`: repeat the body in the generated code (constant trips).
    Unroll(String),
    /// `vectorize ji`: the innermost 4-iteration loop becomes F32X4 lanes.
    Vectorize(String),
    /// `parallel io`: iterations split between worker threads.
    Parallel(String),
    /// `peel jo`: run the boundary iterations of `jo` apart, so that the
    /// loops inside carry no bound depending on it in the interior.
    Peel(String),
    /// `accumulate k`: keep the output elements written inside loop `k` in
    /// registers across it (register blocking, with `unroll`).
    Accumulate(String),
    /// `pack B`: before the nest, copy the statement's read of `B` into a
    /// scratch buffer laid out in the nest's loop order, so the nest reads it
    /// contiguously (GEMM's B panels, a 1x1 convolution's input).
    Pack(String),
}

/// An ordered list of directives for one statement.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct Schedule(pub Vec<Directive>);

impl fmt::Display for Directive {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Directive::Split { var, factor } => write!(f, "split {var} {factor}"),
            Directive::Reorder(names) => write!(f, "reorder {}", names.join(" ")),
            Directive::Unroll(v) => write!(f, "unroll {v}"),
            Directive::Vectorize(v) => write!(f, "vectorize {v}"),
            Directive::Parallel(v) => write!(f, "parallel {v}"),
            Directive::Peel(v) => write!(f, "peel {v}"),
            Directive::Accumulate(v) => write!(f, "accumulate {v}"),
            Directive::Pack(t) => write!(f, "pack {t}"),
        }
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self.0.iter().map(ToString::to_string).collect();
        f.write_str(&parts.join("; "))
    }
}

impl FromStr for Schedule {
    type Err = Error;

    /// Parse `split i 4; reorder io ii; ...` (`;` or newlines between directives).
    fn from_str(text: &str) -> Result<Schedule> {
        let err = |msg: String| Error::unspanned(ErrorKind::Schedule(msg));
        let mut out = Vec::new();
        for part in text
            .split([';', '\n'])
            .map(str::trim)
            .filter(|p| !p.is_empty())
        {
            let words: Vec<&str> = part.split_whitespace().collect();
            let one = |words: &[&str]| -> Result<String> {
                match words {
                    [_, name] => Ok(name.to_string()),
                    _ => Err(err(format!("`{part}`: expected `{} LOOP`", words[0]))),
                }
            };
            out.push(match words[0] {
                "split" => match words.as_slice() {
                    [_, var, factor] => Directive::Split {
                        var: var.to_string(),
                        factor: factor
                            .parse()
                            .map_err(|_| err(format!("`{part}`: the factor must be a positive integer")))?,
                    },
                    _ => return Err(err(format!("`{part}`: expected `split LOOP FACTOR`"))),
                },
                "reorder" if words.len() >= 3 => Directive::Reorder(words[1..].iter().map(|w| w.to_string()).collect()),
                "reorder" => return Err(err(format!("`{part}`: expected `reorder LOOP LOOP ...`"))),
                "unroll" => Directive::Unroll(one(&words)?),
                "vectorize" => Directive::Vectorize(one(&words)?),
                "parallel" => Directive::Parallel(one(&words)?),
                "peel" => Directive::Peel(one(&words)?),
                "accumulate" => Directive::Accumulate(one(&words)?),
                "pack" => Directive::Pack(one(&words)?),
                other => {
                    return Err(err(format!(
                        "unknown directive `{other}` (split, reorder, unroll, vectorize, parallel, peel, accumulate, pack)"
                    )))
                }
            });
        }
        Ok(Schedule(out))
    }
}

/// The spec of a statement after a schedule's directives, or the error of the
/// first illegal one (with the statement's span).
pub fn plan(program: &Program, st: &Statement, schedule: &Schedule) -> Result<Spec> {
    let shape_of = |t: usize| program.tensors[t].shape.clone();
    let name_of = |t: usize| program.tensors[t].name.clone();
    // The tensor of that name the statement reads (or writes), or else its
    // zero-bordered copy (`B+pad`) that the statement reads instead.
    let tensor_named = |name: &str| {
        let touched: Vec<usize> = st
            .rhs
            .reads()
            .iter()
            .map(|a| a.tensor.index())
            .chain([st.lhs.tensor.index()])
            .collect();
        let padded = format!("{name}+pad");
        [name, padded.as_str()].iter().find_map(|n| {
            touched
                .iter()
                .copied()
                .find(|&t| program.tensors[t].name == *n)
        })
    };
    let error = |d: String, msg: String| {
        Error::new(ErrorKind::Schedule(format!("`{d}`: {msg}")), st.span)
            .with_source(&program.source)
    };
    let mut spec = Spec::naive(st);
    for d in &schedule.0 {
        spec.apply(d, st, &shape_of, &tensor_named)
            .map_err(|msg| error(d.to_string(), msg))?;
    }
    spec.check_packs(st, &name_of)
        .map_err(|msg| error(schedule.to_string(), msg))?;
    // Unrolled loops nest: their body is copied the product of their trips.
    let unrolled: Vec<&spec::Dim> = spec
        .order
        .iter()
        .map(|&d| &spec.dims[d])
        .filter(|d| matches!(d.kind, LoopKind::Unrolled | LoopKind::UnrolledAccumulating))
        .collect();
    let copies = unrolled
        .iter()
        .fold(1i64, |n, d| n.saturating_mul(d.hi - d.lo));
    if copies > MAX_UNROLLED_COPIES {
        let names: Vec<String> = unrolled.iter().map(|d| format!("`{}`", d.name)).collect();
        return Err(error(
            schedule.to_string(),
            format!(
                "unrolling {} together copies the loop body {copies} times (at most {MAX_UNROLLED_COPIES})",
                names.join(", ")
            ),
        ));
    }
    Ok(spec)
}

/// Copies of a loop body that nested unrolled loops may make (automatic
/// schedules make tens; compile time grows faster than the copies: 8192
/// took 0.27 s, 65536 took 16 s).
const MAX_UNROLLED_COPIES: i64 = 1024;

/// Realise the marks of a built nest: unroll, then vectorize, then keep
/// accumulators in registers. Each nest of the function is compiled as one
/// function, so a nest the passes turn into several statements (registers
/// loaded before an outermost accumulating loop, stored after it) is kept
/// together in a loop of one iteration.
pub fn realise(func: &Func) -> Result<Func> {
    realise_at(func, &|_| None)
}

/// [`realise`], an error in nest `k` placed at `span_of(k)` (the statement
/// the nest comes from: a vectorized loop whose accesses do not step along
/// it is found only here, once the nest is built).
pub fn realise_at(func: &Func, span_of: &dyn Fn(usize) -> Option<Span>) -> Result<Func> {
    let mut out = func.with_body(Vec::new());
    for (k, nest) in func.body.iter().enumerate() {
        let one = Func {
            buffers: func.buffers.clone(),
            var_names: std::mem::take(&mut out.var_names),
            locals: std::mem::take(&mut out.locals),
            body: vec![nest.clone()],
        };
        let one = unroll(one);
        let one = vectorize(one).map_err(|m| match span_of(k) {
            Some(span) => Error::new(ErrorKind::Schedule(m), span),
            None => Error::unspanned(ErrorKind::Schedule(m)),
        })?;
        let mut one = accumulate(one);
        let mut body = std::mem::take(&mut one.body);
        out.var_names = one.var_names;
        out.locals = one.locals;
        let whole = match body.len() {
            0 => continue,
            1 => body.pop().expect("one statement"),
            _ => Stmt::Loop(Loop {
                var: out.new_var("once".to_string()),
                lo: vec![Bound::constant(0)],
                hi: vec![Bound::constant(1)],
                kind: LoopKind::Serial,
                body,
            }),
        };
        out.body.push(whole);
    }
    Ok(out)
}
