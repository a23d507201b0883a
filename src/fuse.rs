//! Elementwise fusion: `T[b,k,i,j] = <conv>` followed by
//! `O[b,k,i,j] = relu(T[b,k,i,j] + Bias[k])` becomes one statement that
//! computes the convolution into `O` and applies `relu(· + Bias[k])` in
//! place to each element as soon as its reduction is finished (in the loop
//! nest: right after the reduction loops, on the register tile just
//! stored). `T` is never stored.
//!
//! A consumer fuses into the producer of a tensor `T` when
//! - it is elementwise: `=`, no reduced variable, its left-hand side plain
//!   variables, and it reads `T` only at exactly those indices, with `T`'s
//!   shape;
//! - every read of it is in bounds at every point (no padding: each output
//!   element gets exactly one value), and its other operands exist before
//!   the producer runs;
//! - `T` is read by no other statement (an epilogue fused into a statement
//!   reads for it), is not returned, and is written only by its producer,
//!   whose left-hand side is plain variables and which visits every element
//!   of `T` (no padding on output indices only);
//! - the consumer's own fused epilogues, which go along, do not read `T`;
//! - the user gave no schedule for the consumer (it keeps its own nest).
//!
//! Otherwise the pair stays apart, and the dump says why.

use crate::affine::{Affine, Var};
use crate::check::{self, Access, Epilogue, Init, Origin, Program, Statement, TensorId};
use crate::error::Span;
use crate::graph::Dataflow;
use crate::syntax::ast::AssignOp;

/// Fuse every elementwise consumer it can into its producer, repeatedly
/// (chains such as bias, then activation, fuse one after the other).
pub fn fuse_elementwise(program: &Program, scheduled: &[Span]) -> Program {
    let mut program = program.clone();
    let mut fused = Vec::new();
    let refused = 'again: loop {
        let flow = Dataflow::new(&program);
        let mut refused = Vec::new();
        for c in 0..program.statements.len() {
            for t in operands(&program, c) {
                let Origin::Statement(p) = program.tensor(t).origin else {
                    continue;
                };
                let (prod, cons) = (&program.statements[p], &program.statements[c]);
                let consumer = program.statement_text(cons);
                let verdict = match scheduled.contains(&cons.span) {
                    true => Err("it has a schedule of its own".to_string()),
                    false => fusable(&program, &flow, p, c, t),
                };
                match verdict {
                    Ok(()) => {
                        fused.push(format!(
                            "fused: {consumer} is applied to each finished element of {} (no `{}` buffer)",
                            program.statement_text(prod),
                            program.tensor(t).name
                        ));
                        program = fuse(&program, p, c, t);
                        continue 'again;
                    }
                    // Pairs a pass derived from one statement (padding
                    // copies, contraction steps) are not the user's pipeline.
                    Err(_) if prod.span == cons.span => {}
                    Err(why) => refused.push(format!("not fused: {consumer}: {why}")),
                }
            }
        }
        break refused;
    };
    program.notes.extend(fused);
    program.notes.extend(refused);
    program
}

/// Tensors statement `c` reads that a statement produced, in order.
fn operands(program: &Program, c: usize) -> Vec<TensorId> {
    let mut out: Vec<TensorId> = Vec::new();
    for a in program.statements[c].rhs.reads() {
        if !out.contains(&a.tensor) && program.tensor(a.tensor).origin != Origin::Input {
            out.push(a.tensor);
        }
    }
    out
}

/// The variables of a left-hand side made only of distinct plain variables.
fn plain_vars(lhs: &Access) -> Option<Vec<Var>> {
    let vars: Vec<Var> = lhs
        .index
        .iter()
        .map(Affine::as_var)
        .collect::<Option<_>>()?;
    let mut sorted = vars.clone();
    sorted.sort();
    sorted.dedup();
    (sorted.len() == vars.len()).then_some(vars)
}

/// Every index of every access of `st` that uses only output variables
/// stays inside its tensor over the variables' ranges.
fn output_indices_in_bounds(program: &Program, st: &Statement) -> bool {
    let range = |v: Var| (st.vars[v.index()].lo, st.vars[v.index()].hi);
    st.accesses().iter().all(|a| {
        a.index
            .iter()
            .zip(&program.tensor(a.tensor).shape)
            .all(|(e, &n)| {
                e.vars().any(|v| st.vars[v.index()].reduced)
                    || e.bounds_over(&range)
                        .is_some_and(|(lo, hi)| lo >= 0 && hi < n as i64)
            })
    })
}

/// Why consumer `c` cannot be fused into producer `p` of `t`, if it can't.
fn fusable(
    program: &Program,
    flow: &Dataflow,
    p: usize,
    c: usize,
    t: TensorId,
) -> Result<(), String> {
    let (prod, cons) = (&program.statements[p], &program.statements[c]);
    let name = &program.tensor(t).name;
    if cons.vars.iter().any(|v| v.reduced) {
        return Err(format!(
            "it reduces over `{name}`, so it is no elementwise epilogue (`{name}` is stored; see `fused at tile granularity` for whether the two nests run as one)"
        ));
    }
    if cons.op != AssignOp::Assign || cons.init != Init::Identity {
        return Err(format!("`{}` is not a plain `=`", cons.op.as_str()));
    }
    let Some(_) = plain_vars(&cons.lhs) else {
        return Err("its left-hand side is not distinct plain variables".into());
    };
    if cons
        .rhs
        .reads()
        .iter()
        .any(|a| a.tensor == t && a.index != cons.lhs.index)
    {
        return Err(format!("it reads `{name}` at other indices than it writes"));
    }
    if program.tensor(cons.lhs.tensor).shape != program.tensor(t).shape {
        return Err(format!("its output's shape differs from `{name}`'s"));
    }
    if !output_indices_in_bounds(program, cons) {
        return Err("some of its reads fall outside their tensors (padding)".into());
    }
    // (Its own fused epilogues go along: they run after it, in place on its
    // output, so they must not need `T`, which is no longer stored.)
    let epilogue_reads = cons.epilogue_reads();
    if epilogue_reads.iter().any(|a| a.tensor == t) {
        return Err(format!(
            "an elementwise statement fused into it reads `{name}` too"
        ));
    }
    for a in cons.rhs.reads().into_iter().chain(epilogue_reads) {
        if a.tensor != t && flow.writers(a.tensor).iter().any(|&w| w >= p) {
            return Err(format!(
                "it reads `{}`, which is written after `{name}`'s producer",
                program.tensor(a.tensor).name
            ));
        }
    }
    if flow.readers(t) != [c] {
        return Err(format!("`{name}` is also read by another statement"));
    }
    if program.outputs.contains(&t) {
        return Err(format!("`{name}` is returned, so it must be stored"));
    }
    if flow.writers(t) != [p] || prod.init != Init::Identity {
        return Err(format!("`{name}` is written by more than one statement"));
    }
    if plain_vars(&prod.lhs).is_none() {
        return Err(format!(
            "`{name}`'s producer writes affine indices (elements complete only at the end)"
        ));
    }
    if !output_indices_in_bounds(program, prod) {
        return Err(format!(
            "`{name}`'s producer skips some of its elements (padding on output indices)"
        ));
    }
    Ok(())
}

/// Statement `c` (reading `t`) becomes an epilogue of `p`, which now writes
/// `c`'s output; `c` and `t` leave the program.
fn fuse(program: &Program, p: usize, c: usize, t: TensorId) -> Program {
    let mut out = program.clone();
    let cons = out.statements.remove(c);
    let o = cons.lhs.tensor;
    let prod = &mut out.statements[p];
    // Consumer variables → producer variables, by output position.
    let map: Vec<(Var, Var)> = plain_vars(&cons.lhs)
        .expect("checked")
        .into_iter()
        .zip(plain_vars(&prod.lhs).expect("checked"))
        .collect();
    let rename = |e: &Affine| Affine {
        terms: e
            .terms
            .iter()
            .map(|&(v, k)| (map.iter().find(|m| m.0 == v).expect("output variable").1, k))
            .collect(),
        constant: e.constant,
    };
    let text = program.statement_text(&cons);
    let renamed = |a: &Access| Access {
        tensor: if a.tensor == t { o } else { a.tensor },
        index: a.index.iter().map(rename).collect(),
        span: a.span,
    };
    let rhs = cons.rhs.map_reads(&renamed);
    for e in &mut prod.epilogues {
        e.rhs = e.rhs.map_reads(&|a: &Access| Access {
            tensor: if a.tensor == t { o } else { a.tensor },
            ..a.clone()
        });
    }
    // A consumer that only renames `T` (`O[i,j] = T[i,j]`, such as a
    // padding statement's copy into its own padded input) adds no work:
    // the producer now writes `O`, and that is all.
    let renames =
        matches!(&rhs, check::Expr::Read(a) if a.tensor == o && a.index == prod.lhs.index);
    if !renames {
        prod.epilogues.push(Epilogue {
            rhs,
            span: cons.span,
            text,
        });
    }
    prod.epilogues
        .extend(cons.epilogues.iter().map(|e| Epilogue {
            rhs: e.rhs.map_reads(&renamed),
            ..e.clone()
        }));
    prod.lhs.tensor = o;
    out.tensors[o.index()].origin = Origin::Statement(p);
    for tensor in &mut out.tensors {
        if let Origin::Statement(k) = &mut tensor.origin {
            if *k > c {
                *k -= 1;
            }
        }
    }
    remove_tensor(&mut out, t);
    out
}

/// Drop an unreferenced tensor version, renumbering the later ones.
fn remove_tensor(program: &mut Program, t: TensorId) {
    program.tensors.remove(t.index());
    let shift = |id: TensorId| {
        assert_ne!(id, t, "removed tensor still referenced");
        if id > t {
            TensorId(id.0 - 1)
        } else {
            id
        }
    };
    let access = |a: &Access| Access {
        tensor: shift(a.tensor),
        ..a.clone()
    };
    for st in &mut program.statements {
        st.lhs = access(&st.lhs);
        st.rhs = st.rhs.map_reads(&access);
        if let Init::CopyOf(src) = &mut st.init {
            *src = shift(*src);
        }
        for e in &mut st.epilogues {
            e.rhs = e.rhs.map_reads(&access);
        }
    }
    for o in &mut program.outputs {
        *o = shift(*o);
    }
}
