//! Contraction order: a statement that multiplies three or more tensors
//! (`O[i,j] = A[i,k] * B[j,k,l] * C[i,l]`) is factored into pairwise
//! contractions through intermediates, in the order that minimises flops
//! over the inferred ranges — dynamic programming over operand subsets (as
//! opt_einsum's `optimal`) up to [`EXHAUSTIVE_LIMIT`] operands, the cheapest
//! pair first above that. Checked program → checked program.
//!
//! Only pure einsums are factored: a sum of a product of reads whose indices
//! are all plain variables, each ranging over exactly its dimensions (no
//! padding), so that every point is in bounds and regrouping the product is
//! exact up to floating-point reassociation. Anything else — affine indices
//! such as `i+rx`, where coupled variables must stay in one loop nest,
//! `max=`, padding — keeps its single loop nest.

use crate::affine::{Affine, Var};
use crate::check::{
    Access, Combine, Expr, IndexVar, Init, Origin, Program, Statement, Tensor, TensorId,
};
use crate::syntax::ast::{AssignOp, BinOp};

/// Operand counts up to this are searched exhaustively (3^n subset pairs).
pub const EXHAUSTIVE_LIMIT: usize = 10;

/// The order chosen for one statement, for the dump and for tests.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    /// Index of the statement in the original program.
    pub statement: usize,
    /// Pairwise steps in execution order: `(left, right)` name operands or
    /// earlier steps, rendered like `A·(X·W)` by [`Plan::describe`].
    pub steps: Vec<(Operand, Operand)>,
    /// Flops of the factored form (2 per multiply-add of each step).
    pub flops: u64,
    /// Flops of the single loop nest (one op per factor and point).
    pub single_nest_flops: u64,
    /// Operand names, in the statement's order.
    pub names: Vec<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operand {
    /// The n-th read of the statement.
    Read(usize),
    /// The result of the n-th step.
    Step(usize),
}

impl Plan {
    /// `(X·W)` then `A·_`: the parenthesised product, e.g. `A·(X·W)`.
    pub fn describe(&self) -> String {
        fn show(plan: &Plan, op: Operand) -> String {
            match op {
                Operand::Read(n) => plan.names[n].clone(),
                Operand::Step(s) => {
                    let (a, b) = plan.steps[s];
                    format!("({}·{})", show(plan, a), show(plan, b))
                }
            }
        }
        let last = show(self, Operand::Step(self.steps.len() - 1));
        last[1..last.len() - 1].to_string()
    }
}

/// Factor every eligible statement whose factored form is cheaper. Returns
/// the new program and the plans applied.
pub fn factor_products(program: &Program) -> (Program, Vec<Plan>) {
    let mut tensors = program.tensors.clone();
    let mut statements = Vec::new();
    let mut plans = Vec::new();
    // Original statement index → index of its (last) replacement.
    let mut new_index = Vec::new();
    for (s, st) in program.statements.iter().enumerate() {
        match plan_statement(program, s, st) {
            Some((plan, tree)) if plan.flops < plan.single_nest_flops => {
                emit(st, &tree, &mut tensors, &mut statements);
                plans.push(plan);
            }
            _ => statements.push(st.clone()),
        }
        new_index.push(statements.len() - 1);
    }
    for t in &mut tensors[..program.tensors.len()] {
        if let Origin::Statement(s) = t.origin {
            t.origin = Origin::Statement(new_index[s]);
        }
    }
    let mut notes = program.notes.clone();
    for plan in &plans {
        notes.push(format!(
            "statement {}: contraction order {}: {:.3e} flops (single loop nest: {:.3e})",
            plan.statement + 1,
            plan.describe(),
            plan.flops as f64,
            plan.single_nest_flops as f64
        ));
    }
    let factored = Program {
        tensors,
        statements,
        source: program.source.clone(),
        outputs: program.outputs.clone(),
        notes,
        views: program.views.clone(),
    };
    (factored, plans)
}

/// A contraction tree: leaves are reads, nodes keep the variables still needed.
#[derive(Clone, Debug)]
enum Tree {
    Leaf(Access),
    Node {
        left: Box<Tree>,
        right: Box<Tree>,
        /// Variables of the result (sorted by the statement's variable order).
        keep: Vec<Var>,
    },
}

/// The reads of a pure product, plus its constant factor; `None` if `e` is not one.
pub(crate) fn product_factors(e: &Expr, reads: &mut Vec<Access>, constant: &mut f32) -> Option<()> {
    match e {
        Expr::Read(a) => reads.push(a.clone()),
        Expr::Const(c) => *constant *= c,
        Expr::Binary(BinOp::Mul, a, b) => {
            product_factors(a, reads, constant)?;
            product_factors(b, reads, constant)?;
        }
        _ => return None,
    }
    Some(())
}

type Mask = u64;

fn mask_of(vars: impl Iterator<Item = Var>) -> Mask {
    vars.fold(0, |m, v| m | (1 << v.0))
}

fn plan_statement(program: &Program, s: usize, st: &Statement) -> Option<(Plan, Tree)> {
    if st.combine != Combine::Sum || st.vars.len() > 64 {
        return None;
    }
    let (mut reads, mut constant) = (Vec::new(), 1.0);
    product_factors(&st.rhs, &mut reads, &mut constant)?;
    if reads.len() < 3 || constant != 1.0 {
        return None;
    }
    // Pure einsum: plain-variable indices spanning exactly their dimensions.
    let exact = |a: &Access| {
        let shape = &program.tensor(a.tensor).shape;
        a.index.iter().zip(shape).all(|(e, &n)| {
            e.as_var()
                .is_some_and(|v| st.vars[v.index()].lo == 0 && st.vars[v.index()].hi == n as i64)
        })
    };
    if !reads.iter().all(exact) || !st.lhs.index.iter().all(|e| e.as_var().is_some()) {
        return None;
    }

    let n = reads.len();
    let size = |m: Mask| -> u64 {
        (0..st.vars.len())
            .filter(|v| m & (1 << v) != 0)
            .map(|v| (st.vars[v].hi - st.vars[v].lo) as u64)
            .fold(1u64, |a, b| a.saturating_mul(b))
    };
    let idx: Vec<Mask> = reads
        .iter()
        .map(|a| mask_of(a.index.iter().flat_map(Affine::vars)))
        .collect();
    let lhs = mask_of(st.lhs.index.iter().flat_map(Affine::vars));
    let all: Mask = idx.iter().fold(lhs, |a, &b| a | b);
    let full = (1usize << n) - 1;
    // Variables a subset's result must keep: used outside it or on the left.
    let keep = |set: usize| -> Mask {
        let (inside, outside) = (0..n).fold((0, lhs), |(i, o), k| {
            if set & (1 << k) != 0 {
                (i | idx[k], o)
            } else {
                (i, o | idx[k])
            }
        });
        if set == full {
            lhs
        } else {
            inside & outside
        }
    };
    // Loop variables when a subset enters a step: a leaf brings all its own.
    let entering = |set: usize| -> Mask {
        if set.count_ones() == 1 {
            idx[set.trailing_zeros() as usize]
        } else {
            keep(set)
        }
    };
    let step_flops = |a: usize, b: usize| 2u64.saturating_mul(size(entering(a) | entering(b)));

    // best[set] = (flops, left part) over all subsets.
    let mut best: Vec<(u64, usize)> = vec![(0, 0); full + 1];
    if n <= EXHAUSTIVE_LIMIT {
        for set in 1..=full {
            if set.count_ones() < 2 {
                continue;
            }
            let mut choice = (u64::MAX, 0);
            // Enumerate proper subsets `a` containing the lowest member (each split once).
            let low = set & set.wrapping_neg();
            let mut a = (set - 1) & set;
            while a > 0 {
                if a & low != 0 {
                    let b = set & !a;
                    let cost = best[a]
                        .0
                        .saturating_add(best[b].0)
                        .saturating_add(step_flops(a, b));
                    if cost < choice.0 {
                        choice = (cost, a);
                    }
                }
                a = (a - 1) & set;
            }
            best[set] = choice;
        }
    } else {
        // Greedy: repeatedly contract the pair whose step is cheapest.
        let mut groups: Vec<usize> = (0..n).map(|k| 1 << k).collect();
        while groups.len() > 1 {
            let (mut bi, mut bj, mut bc) = (0, 1, u64::MAX);
            for i in 0..groups.len() {
                for j in i + 1..groups.len() {
                    let c = step_flops(groups[i], groups[j]);
                    if c < bc {
                        (bi, bj, bc) = (i, j, c);
                    }
                }
            }
            let (a, b) = (groups[bi], groups[bj]);
            best[a | b] = (best[a].0.saturating_add(best[b].0).saturating_add(bc), a);
            groups.remove(bj);
            groups[bi] = a | b;
        }
    }

    // Rebuild the tree and the plan's steps in execution order.
    let mut steps = Vec::new();
    fn build(
        set: usize,
        best: &[(u64, usize)],
        reads: &[Access],
        keep: &dyn Fn(usize) -> Vec<Var>,
        steps: &mut Vec<(Operand, Operand)>,
    ) -> (Tree, Operand) {
        if set.count_ones() == 1 {
            let k = set.trailing_zeros() as usize;
            return (Tree::Leaf(reads[k].clone()), Operand::Read(k));
        }
        let a = best[set].1;
        let (lt, lo) = build(a, best, reads, keep, steps);
        let (rt, ro) = build(set & !a, best, reads, keep, steps);
        steps.push((lo, ro));
        let tree = Tree::Node {
            left: Box::new(lt),
            right: Box::new(rt),
            keep: keep(set),
        };
        (tree, Operand::Step(steps.len() - 1))
    }
    // An intermediate's dimensions follow its operands' index order
    // (`X[m,c] * W[c,h]` gives `[m, h]`), so contractions stay row-major.
    let keep_vars = |set: usize| -> Vec<Var> {
        let m = keep(set);
        let mut order: Vec<Var> = Vec::new();
        for k in (0..n).filter(|k| set & (1 << k) != 0) {
            for v in reads[k].index.iter().flat_map(Affine::vars) {
                if m & (1 << v.0) != 0 && !order.contains(&v) {
                    order.push(v);
                }
            }
        }
        order
    };
    let (tree, _) = build(full, &best, &reads, &keep_vars, &mut steps);
    let names = reads
        .iter()
        .map(|a| program.tensor(a.tensor).name.clone())
        .collect();
    let plan = Plan {
        statement: s,
        steps,
        flops: best[full].0,
        single_nest_flops: (n as u64).saturating_mul(size(all)),
        names,
    };
    Some((plan, tree))
}

/// Append the statements computing `tree` for `st`: one per step, the last
/// one writing `st`'s own output with `st`'s operator.
fn emit(st: &Statement, tree: &Tree, tensors: &mut Vec<Tensor>, out: &mut Vec<Statement>) {
    let Tree::Node { left, right, .. } = tree else {
        unreachable!("a factored statement has at least one step")
    };
    let left = operand(st, left, tensors, out);
    let right = operand(st, right, tensors, out);
    out.push(step_statement(
        st,
        left,
        right,
        st.lhs.clone(),
        st.init,
        st.op,
    ));
}

/// The access reading `tree`'s value: a leaf's own read, or a new intermediate.
fn operand(
    st: &Statement,
    tree: &Tree,
    tensors: &mut Vec<Tensor>,
    out: &mut Vec<Statement>,
) -> Access {
    match tree {
        Tree::Leaf(a) => a.clone(),
        Tree::Node { left, right, keep } => {
            let left = operand(st, left, tensors, out);
            let right = operand(st, right, tensors, out);
            let id = TensorId(tensors.len() as u32);
            let shape = keep
                .iter()
                .map(|v| (st.vars[v.index()].hi) as usize)
                .collect();
            // Named for what it holds; `·` keeps it apart from user names.
            let part = |a: &Access| {
                let n = &tensors[a.tensor.index()].name;
                if n.contains('·') {
                    format!("({n})")
                } else {
                    n.clone()
                }
            };
            let name = format!("{}·{}", part(&left), part(&right));
            tensors.push(Tensor {
                name,
                shape,
                origin: Origin::Statement(out.len()),
            });
            let lhs = Access {
                tensor: id,
                index: keep.iter().map(|&v| Affine::var(v)).collect(),
                span: st.span,
            };
            out.push(step_statement(
                st,
                left,
                right,
                lhs.clone(),
                Init::Identity,
                AssignOp::Assign,
            ));
            lhs
        }
    }
}

/// `lhs op= left * right` over the variables the three accesses use,
/// renumbered in the original statement's order.
fn step_statement(
    st: &Statement,
    left: Access,
    right: Access,
    lhs: Access,
    init: Init,
    op: AssignOp,
) -> Statement {
    let used = mask_of(
        [&lhs, &left, &right]
            .iter()
            .flat_map(|a| a.index.iter().flat_map(Affine::vars)),
    );
    let lhs_vars = mask_of(lhs.index.iter().flat_map(Affine::vars));
    // Output variables first (as written), then the reduced ones.
    let mut order: Vec<Var> = Vec::new();
    for v in lhs.index.iter().flat_map(Affine::vars) {
        if !order.contains(&v) {
            order.push(v);
        }
    }
    order.extend(
        (0..st.vars.len() as u32)
            .map(Var)
            .filter(|v| used & (1 << v.0) != 0 && lhs_vars & (1 << v.0) == 0),
    );
    let renumber = |a: &Access| Access {
        tensor: a.tensor,
        index: a
            .index
            .iter()
            .map(|e| {
                let v = e.as_var().expect("factored accesses are plain variables");
                Affine::var(Var(order.iter().position(|&u| u == v).expect("used") as u32))
            })
            .collect(),
        span: a.span,
    };
    let vars: Vec<IndexVar> = order
        .iter()
        .map(|&v| IndexVar {
            reduced: lhs_vars & (1 << v.0) == 0,
            ..st.vars[v.index()].clone()
        })
        .collect();
    Statement {
        vars,
        lhs: renumber(&lhs),
        combine: Combine::Sum,
        init,
        rhs: Expr::Binary(
            BinOp::Mul,
            Box::new(Expr::Read(renumber(&left))),
            Box::new(Expr::Read(renumber(&right))),
        ),
        op,
        span: st.span,
        epilogues: Vec::new(),
    }
}
