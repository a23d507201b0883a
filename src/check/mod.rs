//! AST → checked program: names resolved to ids, indices made affine, every
//! index range inferred and every tensor shape known.
//!
//! Tensors are versioned: a statement with `=`, `max=` or `min=` creates a
//! new version of its output's name, so `X[i] = X[i] * 2` reads the old `X`
//! and writes a new one. `+=` accumulates into the latest version (into a
//! copy when that version is a caller's input or the statement reads it).

mod ranges;

use crate::affine::{Affine, Var};
use crate::error::{Error, ErrorKind, Result, Span};
use crate::syntax::ast::{self, AssignOp, BinOp, Func, IndexExpr};
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

/// Largest number of elements a tensor may have (4 Gi elements, 16 GiB of f32).
pub const MAX_ELEMENTS: u64 = 1 << 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TensorId(pub u32);

impl TensorId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Where a tensor's contents come from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// Given by the caller.
    Input,
    /// Written by the statement with this index.
    Statement(usize),
}

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub origin: Origin,
}

impl Tensor {
    /// Check a caller's array for this input: present (`given`: its shape)
    /// and of the compiled shape.
    pub fn check_input(&self, given: Option<&[usize]>) -> Result<()> {
        self.check_input_as(given, &self.shape)
    }

    /// [`Tensor::check_input`] against the shape the caller sees
    /// ([`Program::caller_shape`]).
    pub fn check_input_as(&self, given: Option<&[usize]>, expected: &[usize]) -> Result<()> {
        let shape =
            given.ok_or_else(|| Error::unspanned(ErrorKind::MissingInput(self.name.clone())))?;
        if shape != expected {
            return Err(Error::unspanned(ErrorKind::InputShape {
                name: self.name.clone(),
                expected: expected.to_vec(),
                got: shape.to_vec(),
            }));
        }
        Ok(())
    }
}

/// How a statement's output starts before its contributions are combined in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Init {
    /// Filled with the operator's identity (`=`, `max=`, `min=`).
    Identity,
    /// A copy of another version (`+=` into a caller's input).
    CopyOf(TensorId),
    /// Accumulate into what an earlier statement wrote (`+=`).
    Existing,
}

/// How contributions to one output element combine.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Combine {
    Sum,
    Max,
    Min,
}

impl Combine {
    pub fn identity(self) -> f32 {
        match self {
            Combine::Sum => 0.0,
            Combine::Max => f32::NEG_INFINITY,
            Combine::Min => f32::INFINITY,
        }
    }

    pub fn apply(self, acc: f32, x: f32) -> f32 {
        match self {
            Combine::Sum => acc + x,
            Combine::Max => acc.max(x),
            Combine::Min => acc.min(x),
        }
    }
}

/// How an index variable got its range; shown in dumps so that padding is visible.
#[derive(Clone, Debug, PartialEq)]
pub enum RangeSource {
    /// A `where` clause. `valid` is the range that keeps every access in
    /// bounds, when it differs: the excess is zero (identity) padding.
    Where { valid: Option<(i64, i64)> },
    /// The whole index of a tensor dimension.
    Dimension { tensor: String, dim: usize },
    /// The largest range keeping every access in bounds (Tensor Comprehensions' rule).
    Inferred,
    /// Two variables always indexing adjacent dimensions together, merged
    /// into one (see [`crate::collapse`]).
    Merged { outer: String, inner: String },
}

#[derive(Clone, Debug, PartialEq)]
pub struct IndexVar {
    pub name: String,
    pub lo: i64,
    pub hi: i64,
    /// Absent from the left-hand side, so summed (or maxed, minned) over.
    pub reduced: bool,
    pub source: RangeSource,
    pub span: Span,
}

/// `tensor[index...]` with affine indices over the statement's variables.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub tensor: TensorId,
    pub index: Vec<Affine>,
    pub span: Span,
}

impl Access {
    /// Whether some index of the access depends on variable `v`.
    pub fn uses(&self, v: Var) -> bool {
        self.index.iter().any(|e| e.coeff(v) != 0)
    }
}

/// A checked right-hand side.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(f32),
    Read(Access),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Call(Func, Vec<Expr>),
}

impl Expr {
    /// The same expression with every read replaced by `f(read)`.
    pub fn map_reads(&self, f: &dyn Fn(&Access) -> Access) -> Expr {
        match self {
            Expr::Const(c) => Expr::Const(*c),
            Expr::Read(a) => Expr::Read(f(a)),
            Expr::Neg(x) => Expr::Neg(Box::new(x.map_reads(f))),
            Expr::Binary(op, a, b) => {
                Expr::Binary(*op, Box::new(a.map_reads(f)), Box::new(b.map_reads(f)))
            }
            Expr::Call(func, args) => {
                Expr::Call(*func, args.iter().map(|a| a.map_reads(f)).collect())
            }
        }
    }

    /// Every read, left to right.
    pub fn reads(&self) -> Vec<&Access> {
        let mut out = Vec::new();
        fn walk<'a>(e: &'a Expr, out: &mut Vec<&'a Access>) {
            match e {
                Expr::Const(_) => {}
                Expr::Read(a) => out.push(a),
                Expr::Neg(x) => walk(x, out),
                Expr::Binary(_, a, b) => {
                    walk(a, out);
                    walk(b, out);
                }
                Expr::Call(_, args) => args.iter().for_each(|a| walk(a, out)),
            }
        }
        walk(self, &mut out);
        out
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    /// Indexed by `Var`: variable `Var(n)` is `vars[n]`.
    pub vars: Vec<IndexVar>,
    pub lhs: Access,
    pub combine: Combine,
    pub init: Init,
    pub rhs: Expr,
    pub op: AssignOp,
    pub span: Span,
    /// Elementwise statements fused into this one (see [`crate::fuse`]),
    /// applied in order to each output element once it is complete.
    pub epilogues: Vec<Epilogue>,
}

/// An elementwise statement applied in place to each finished element of
/// the statement it is fused into: `rhs` is over that statement's
/// variables, and its reads of the statement's output are the element.
#[derive(Clone, Debug, PartialEq)]
pub struct Epilogue {
    pub rhs: Expr,
    /// The fused statement's own span and its formula, for dumps.
    pub span: Span,
    pub text: String,
}

impl Statement {
    pub fn var_name(&self, v: Var) -> String {
        self.vars[v.index()].name.clone()
    }

    /// Whether every index of every read that uses `v` is `v` alone (`c` of
    /// `I[b,c,i+rx,j+ry]` and `W[k,c,rx,ry]`: a convolution's channels, not
    /// its taps).
    pub fn read_alone(&self, v: Var) -> bool {
        self.rhs.reads().iter().all(|a| {
            a.index
                .iter()
                .all(|e| e.coeff(v) == 0 || e.as_var() == Some(v))
        })
    }

    /// `target[v0, .., vn] = source[index]`, each `vd` (named `{prefix}{d}`)
    /// over `valid(d)`, the part of `0..shape[d]` where `source` is in
    /// bounds, or the whole of it; the rest of `target` is zero (the fill of
    /// a `where` range that leaves the source). The loops start at the
    /// in-bounds part, so vector tiles line up with the source's rows (a
    /// padded copy of a 28-wide row: 7 vectors, where tiles over `0..30`
    /// needed a scalar head and tail). The copies the passes add (padded,
    /// split by residue); `index` is over the variables `Var(d)`.
    pub fn copy(
        target: TensorId,
        shape: &[usize],
        prefix: &str,
        valid: &dyn Fn(usize) -> Option<(i64, i64)>,
        source: TensorId,
        index: Vec<Affine>,
        span: Span,
    ) -> Statement {
        let vars = shape
            .iter()
            .enumerate()
            .map(|(d, &n)| IndexVar {
                name: format!("{prefix}{d}"),
                lo: valid(d).map_or(0, |v| v.0),
                hi: valid(d).map_or(n as i64, |v| v.1),
                reduced: false,
                source: RangeSource::Where { valid: valid(d) },
                span,
            })
            .collect();
        Statement {
            vars,
            lhs: Access {
                tensor: target,
                index: (0..shape.len())
                    .map(|d| Affine::var(Var(d as u32)))
                    .collect(),
                span,
            },
            combine: Combine::Sum,
            init: Init::Identity,
            rhs: Expr::Read(Access {
                tensor: source,
                index,
                span,
            }),
            op: AssignOp::Assign,
            span,
            epilogues: Vec::new(),
        }
    }

    /// `base`, or `base'`, `base''`..., whichever no variable of the
    /// statement is named yet (for variables a pass adds, so that a
    /// schedule names each loop unambiguously).
    pub fn fresh_name(&self, base: String) -> String {
        let mut name = base;
        while self.vars.iter().any(|v| v.name == name) {
            name.push('\'');
        }
        name
    }

    /// What the fused epilogues read besides the statement's own output
    /// (which they update in place).
    pub fn epilogue_reads(&self) -> Vec<&Access> {
        self.epilogues
            .iter()
            .flat_map(|e| e.rhs.reads())
            .filter(|a| a.tensor != self.lhs.tensor)
            .collect()
    }

    /// Every access of the statement: the write, then the reads.
    pub fn accesses(&self) -> Vec<&Access> {
        let mut all = vec![&self.lhs];
        all.extend(self.rhs.reads());
        all
    }
}

/// A checked program: every tensor version with its shape, every statement resolved.
#[derive(Clone, Debug)]
pub struct Program {
    pub tensors: Vec<Tensor>,
    pub statements: Vec<Statement>,
    pub source: Arc<str>,
    /// What a run returns; set by [`Program::select_outputs`].
    pub outputs: Vec<TensorId>,
    /// Lines for the dump from passes over the checked program (e.g. the
    /// contraction order chosen).
    pub notes: Vec<String>,
    /// Tensors whose dimensions [`crate::collapse`] merged, with the shape
    /// the caller gives (an input) or gets (an output): the same storage.
    pub views: Vec<(TensorId, Vec<usize>)>,
}

impl Program {
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.index()]
    }

    /// The shape of tensor `id` as the caller sees it (see [`Program::views`]).
    pub fn caller_shape(&self, id: TensorId) -> &[usize] {
        self.views
            .iter()
            .find(|(t, _)| *t == id)
            .map_or(self.tensor(id).shape.as_slice(), |(_, s)| s.as_slice())
    }

    /// The input tensors, in order of first use.
    pub fn inputs(&self) -> impl Iterator<Item = TensorId> + '_ {
        (0..self.tensors.len())
            .map(|i| TensorId(i as u32))
            .filter(|&t| self.tensor(t).origin == Origin::Input)
    }

    /// The tensors a run returns (by default, see [`OutputSelection::Unread`]).
    pub fn outputs(&self) -> Vec<TensorId> {
        self.outputs.clone()
    }

    /// The final version of every name a statement writes, in order of first write.
    pub fn written(&self) -> Vec<TensorId> {
        let mut last: Vec<(String, TensorId)> = Vec::new();
        for st in &self.statements {
            let name = &self.tensor(st.lhs.tensor).name;
            match last.iter_mut().find(|(n, _)| n == name) {
                Some(entry) => entry.1 = st.lhs.tensor,
                None => last.push((name.clone(), st.lhs.tensor)),
            }
        }
        last.into_iter().map(|(_, t)| t).collect()
    }

    /// The program without the statements writing those of `tensors`
    /// nothing reads and a run does not return (a padded copy that a later
    /// copy reads through instead), and without those tensors.
    pub fn without_unread(&self, tensors: &[TensorId]) -> Program {
        let mut read = vec![false; self.tensors.len()];
        for st in &self.statements {
            let epilogues = st.epilogues.iter().flat_map(|e| e.rhs.reads());
            for a in st.rhs.reads().into_iter().chain(epilogues) {
                read[a.tensor.index()] = true;
            }
            match st.init {
                Init::CopyOf(t) => read[t.index()] = true,
                Init::Existing => read[st.lhs.tensor.index()] = true,
                Init::Identity => {}
            }
        }
        for t in &self.outputs {
            read[t.index()] = true;
        }
        let gone = |t: TensorId| tensors.contains(&t) && !read[t.index()];
        if !tensors.iter().any(|&t| gone(t)) {
            return self.clone();
        }
        // Old → new numbers of the tensors and statements kept.
        let mut tensor_of = Vec::new();
        let mut next = 0u32;
        for k in 0..self.tensors.len() {
            let keep = !gone(TensorId(k as u32));
            tensor_of.push(keep.then_some(TensorId(next)));
            next += u32::from(keep);
        }
        let mut statement_of = Vec::new();
        let mut next = 0;
        for st in &self.statements {
            let keep = !gone(st.lhs.tensor);
            statement_of.push(next);
            next += usize::from(keep);
        }
        let new = |t: TensorId| tensor_of[t.index()].expect("a kept tensor");
        let renumber = |a: &Access| Access {
            tensor: new(a.tensor),
            ..a.clone()
        };
        let statements = self
            .statements
            .iter()
            .filter(|st| !gone(st.lhs.tensor))
            .map(|st| Statement {
                lhs: renumber(&st.lhs),
                rhs: st.rhs.map_reads(&renumber),
                init: match st.init {
                    Init::CopyOf(t) => Init::CopyOf(new(t)),
                    init => init,
                },
                epilogues: st
                    .epilogues
                    .iter()
                    .map(|e| Epilogue {
                        rhs: e.rhs.map_reads(&renumber),
                        ..e.clone()
                    })
                    .collect(),
                ..st.clone()
            })
            .collect();
        let tensors = self
            .tensors
            .iter()
            .enumerate()
            .filter(|(k, _)| tensor_of[*k].is_some())
            .map(|(_, t)| Tensor {
                origin: match t.origin {
                    Origin::Statement(k) => Origin::Statement(statement_of[k]),
                    Origin::Input => Origin::Input,
                },
                ..t.clone()
            })
            .collect();
        Program {
            tensors,
            statements,
            outputs: self.outputs.iter().map(|&t| new(t)).collect(),
            ..self.clone()
        }
    }

    /// The program with each statement replaced by those `f` pushes for it
    /// onto `out` (at least one, the last writing the statement's output
    /// version), the tensors' origins following: how the rewriting passes
    /// (phases, strides) are built.
    pub fn rewrite_each(&self, mut f: impl FnMut(&mut Program, &Statement)) -> Program {
        let mut out = Program {
            statements: Vec::new(),
            ..self.clone()
        };
        let mut new_index = Vec::new();
        for st in &self.statements {
            f(&mut out, st);
            new_index.push(out.statements.len() - 1);
        }
        for t in &mut out.tensors[..self.tensors.len()] {
            if let Origin::Statement(s) = t.origin {
                t.origin = Origin::Statement(new_index[s]);
            }
        }
        out
    }

    /// A statement as a formula, e.g. `O[i, j] = A[i, k] * B[k, j]`.
    pub fn statement_text(&self, st: &Statement) -> String {
        let name = |v: Var| st.vars[v.index()].name.clone();
        let access = |a: &Access| {
            let idx: Vec<String> = a
                .index
                .iter()
                .map(|e| e.display(&name).to_string())
                .collect();
            format!("{}[{}]", self.tensor(a.tensor).name, idx.join(", "))
        };
        fn expr(e: &Expr, prec: u8, access: &dyn Fn(&Access) -> String) -> String {
            match e {
                Expr::Const(c) => format!("{c}"),
                Expr::Read(a) => access(a),
                Expr::Neg(x) => format!("-{}", expr(x, 3, access)),
                Expr::Call(f, args) => {
                    let args: Vec<String> = args.iter().map(|a| expr(a, 0, access)).collect();
                    format!("{}({})", f.name(), args.join(", "))
                }
                Expr::Binary(op, a, b) => {
                    let (p, sym) = match op {
                        BinOp::Add => (1, "+"),
                        BinOp::Sub => (1, "-"),
                        BinOp::Mul => (2, "*"),
                        BinOp::Div => (2, "/"),
                    };
                    let text = format!("{} {sym} {}", expr(a, p, access), expr(b, p + 1, access));
                    if p < prec {
                        format!("({text})")
                    } else {
                        text
                    }
                }
            }
        }
        format!(
            "{} {} {}",
            access(&st.lhs),
            st.op.as_str(),
            expr(&st.rhs, 0, &access)
        )
    }

    /// Choose which tensors a run returns.
    pub fn select_outputs(&mut self, selection: &OutputSelection) -> Result<()> {
        let written = self.written();
        self.outputs = match selection {
            OutputSelection::Unread => {
                let read: Vec<TensorId> = self
                    .statements
                    .iter()
                    .flat_map(|st| st.rhs.reads().into_iter().map(|a| a.tensor))
                    .collect();
                written.into_iter().filter(|t| !read.contains(t)).collect()
            }
            OutputSelection::All => written,
            OutputSelection::Named(names) => names
                .iter()
                .map(|name| {
                    written
                        .iter()
                        .copied()
                        .find(|&t| &self.tensor(t).name == name)
                        .ok_or_else(|| Error::unspanned(ErrorKind::NotAnOutput(name.clone())))
                })
                .collect::<Result<_>>()?,
        };
        Ok(())
    }
}

/// Which tensors a run returns.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub enum OutputSelection {
    /// Every tensor a statement writes and no statement reads (the results
    /// of a pipeline, not its intermediates).
    #[default]
    Unread,
    /// The final version of every tensor a statement writes.
    All,
    /// These names, in this order.
    Named(Vec<String>),
}

/// Check a parsed program against the shapes of its inputs.
pub fn check(
    program: &ast::Program,
    source: Arc<str>,
    input_shapes: &HashMap<String, Vec<usize>>,
) -> Result<Program> {
    let mut checker = Checker {
        tensors: Vec::new(),
        latest: HashMap::new(),
        input_shapes,
        statements: &program.statements,
        current: 0,
    };
    let mut statements = Vec::new();
    for (n, st) in program.statements.iter().enumerate() {
        checker.current = n;
        statements.push(checker.statement(st, n)?);
    }
    let mut program = Program {
        tensors: checker.tensors,
        statements,
        source,
        outputs: Vec::new(),
        notes: Vec::new(),
        views: Vec::new(),
    };
    program.select_outputs(&OutputSelection::default())?;
    crate::graph::Dataflow::checked(&program)?;
    Ok(program)
}

struct Checker<'a> {
    tensors: Vec<Tensor>,
    /// Name → its latest version.
    latest: HashMap<String, TensorId>,
    input_shapes: &'a HashMap<String, Vec<usize>>,
    statements: &'a [ast::Statement],
    /// The statement being checked.
    current: usize,
}

impl Checker<'_> {
    fn add_tensor(&mut self, name: &str, shape: Vec<usize>, origin: Origin) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(Tensor {
            name: name.to_string(),
            shape,
            origin,
        });
        self.latest.insert(name.to_string(), id);
        id
    }

    /// The latest version of `name`, registering it as an input on first use.
    fn lookup(&mut self, name: &ast::Ident) -> Result<TensorId> {
        if let Some(&id) = self.latest.get(&name.name) {
            return Ok(id);
        }
        let Some(shape) = self.input_shapes.get(&name.name).cloned() else {
            // Not an input: maybe a later statement defines it.
            let later = self.statements[self.current + 1..]
                .iter()
                .position(|s| s.lhs.tensor.name == name.name)
                .map(|k| k + self.current + 1);
            return Err(match later {
                Some(k) => Error::new(
                    ErrorKind::UsedBeforeDefinition {
                        tensor: name.name.clone(),
                        defined_at: k + 1,
                    },
                    name.span,
                )
                .with_secondary(self.statements[k].lhs.span),
                None => Error::new(ErrorKind::UnknownTensor(name.name.clone()), name.span),
            });
        };
        check_size(&name.name, &shape, name.span)?;
        Ok(self.add_tensor(&name.name, shape, Origin::Input))
    }

    fn statement(&mut self, st: &ast::Statement, index: usize) -> Result<Statement> {
        let mut vars = VarTable::default();
        // Variables in order of first appearance: left-hand side first.
        let lhs_index = st
            .lhs
            .indices
            .iter()
            .map(|e| affine(e, &mut vars))
            .collect::<Result<Vec<_>>>()?;
        let n_lhs_vars = vars.names.len();
        let rhs = self.expr(&st.rhs, &mut vars)?;
        let mut reads: Vec<Access> = rhs.reads().into_iter().cloned().collect();

        // The output: `+=` needs the existing tensor; the others make a new version.
        let lhs_span = st.lhs.span;
        let existing = match st.op {
            AssignOp::AddAssign => {
                let id = self.latest.get(&st.lhs.tensor.name).copied();
                let id = match id {
                    Some(id) => id,
                    None if self.input_shapes.contains_key(&st.lhs.tensor.name) => {
                        self.lookup(&st.lhs.tensor)?
                    }
                    None => {
                        return Err(Error::new(
                            ErrorKind::AccumulateMissing(st.lhs.tensor.name.clone()),
                            st.lhs.tensor.span,
                        ))
                    }
                };
                let shape = &self.tensors[id.index()].shape;
                if shape.len() != lhs_index.len() {
                    return Err(Error::new(
                        ErrorKind::AccumulateShape {
                            tensor: st.lhs.tensor.name.clone(),
                            existing: shape.clone(),
                            got: lhs_index.len(),
                        },
                        lhs_span,
                    ));
                }
                Some(id)
            }
            _ => None,
        };
        // For range inference the existing output of `+=` constrains like an input.
        if let Some(id) = existing {
            reads.push(Access {
                tensor: id,
                index: lhs_index.clone(),
                span: lhs_span,
            });
        }
        let shape_of = |t: TensorId| self.tensors[t.index()].shape.clone();
        let ranges = ranges::infer(st, &vars, n_lhs_vars, &reads, &shape_of, &self.tensors)?;

        let index_vars: Vec<IndexVar> = vars
            .names
            .iter()
            .zip(vars.spans.iter())
            .zip(ranges)
            .enumerate()
            .map(|(n, ((name, &span), (lo, hi, source)))| IndexVar {
                name: name.clone(),
                lo,
                hi,
                reduced: n >= n_lhs_vars,
                source,
                span,
            })
            .collect();

        // `+=` into a caller's input, or into a tensor the statement also
        // reads (`T[i] += T[6-i]`: reads see the values before it), writes
        // a new version that starts as a copy.
        let reads_itself = |id: TensorId| rhs.reads().iter().any(|a| a.tensor == id);
        let (lhs_tensor, init) = match existing {
            Some(id) if self.tensors[id.index()].origin == Origin::Input || reads_itself(id) => {
                let shape = shape_of(id);
                let copy = self.add_tensor(&st.lhs.tensor.name, shape, Origin::Statement(index));
                (copy, Init::CopyOf(id))
            }
            Some(id) => (id, Init::Existing),
            None => {
                let shape = output_shape(&st.lhs.tensor.name, &lhs_index, &index_vars, lhs_span)?;
                let id = self.add_tensor(&st.lhs.tensor.name, shape, Origin::Statement(index));
                (id, Init::Identity)
            }
        };
        let lhs = Access {
            tensor: lhs_tensor,
            index: lhs_index,
            span: lhs_span,
        };
        for a in rhs.reads().into_iter().chain([&lhs]) {
            self.check_index_magnitude(a, &index_vars)?;
        }
        let combine = match st.op {
            AssignOp::Assign | AssignOp::AddAssign => Combine::Sum,
            AssignOp::MaxAssign => Combine::Max,
            AssignOp::MinAssign => Combine::Min,
        };
        Ok(Statement {
            vars: index_vars,
            lhs,
            combine,
            init,
            rhs,
            op: st.op,
            span: st.span,
            epilogues: Vec::new(),
        })
    }

    /// Refuse an access whose coefficients, offsets or values, counted in
    /// elements of its tensor, go beyond [`MAX_ELEMENTS`]: meaningful indices
    /// never do (a variable stepping that far leaves the tensor at once),
    /// and the address arithmetic of later stages must not overflow
    /// (`B[4611686018427387904*i]` with `i` only 0).
    fn check_index_magnitude(&self, a: &Access, vars: &[IndexVar]) -> Result<()> {
        let shape = &self.tensors[a.tensor.index()].shape;
        let too_large = || {
            let name = self.tensors[a.tensor.index()].name.clone();
            Error::new(ErrorKind::IndexTooLarge(name), a.span)
        };
        let mut stride: u128 = 1;
        for (e, &n) in a.index.iter().zip(shape).rev() {
            let (lo, hi) = e
                .bounds_over(&|v| (vars[v.index()].lo, vars[v.index()].hi))
                .ok_or_else(too_large)?;
            let reach = e
                .terms
                .iter()
                .map(|&(_, k)| k)
                .chain([e.constant, lo, hi])
                .map(|x| u128::from(x.unsigned_abs()) * stride)
                .max()
                .unwrap_or(0);
            if reach > u128::from(MAX_ELEMENTS) {
                return Err(too_large());
            }
            stride *= n.max(1) as u128;
        }
        Ok(())
    }

    fn expr(&mut self, e: &ast::Expr, vars: &mut VarTable) -> Result<Expr> {
        Ok(match e {
            ast::Expr::Num(v, _) => Expr::Const(*v as f32),
            ast::Expr::Access(a) => {
                let tensor = self.lookup(&a.tensor)?;
                let rank = self.tensors[tensor.index()].shape.len();
                if rank != a.indices.len() {
                    return Err(Error::new(
                        ErrorKind::WrongIndexCount {
                            tensor: a.tensor.name.clone(),
                            expected: rank,
                            got: a.indices.len(),
                        },
                        a.span,
                    ));
                }
                let index = a
                    .indices
                    .iter()
                    .map(|e| affine(e, vars))
                    .collect::<Result<Vec<_>>>()?;
                Expr::Read(Access {
                    tensor,
                    index,
                    span: a.span,
                })
            }
            ast::Expr::Neg(x, _) => Expr::Neg(Box::new(self.expr(x, vars)?)),
            ast::Expr::Binary(op, a, b, _) => Expr::Binary(
                *op,
                Box::new(self.expr(a, vars)?),
                Box::new(self.expr(b, vars)?),
            ),
            ast::Expr::Call(f, args, _) => Expr::Call(
                *f,
                args.iter()
                    .map(|a| self.expr(a, vars))
                    .collect::<Result<_>>()?,
            ),
        })
    }
}

/// Index variable names → ids, in order of first appearance.
#[derive(Default)]
pub(crate) struct VarTable {
    pub names: Vec<String>,
    pub spans: Vec<Span>,
}

impl VarTable {
    fn get_or_add(&mut self, id: &ast::Ident) -> Var {
        match self.names.iter().position(|n| *n == id.name) {
            Some(p) => Var(p as u32),
            None => {
                self.names.push(id.name.clone());
                self.spans.push(id.span);
                Var(self.names.len() as u32 - 1)
            }
        }
    }

    pub fn find(&self, name: &str) -> Option<Var> {
        self.names
            .iter()
            .position(|n| n == name)
            .map(|p| Var(p as u32))
    }
}

/// An index expression as an affine form, or a non-affine / overflow error.
fn affine(e: &IndexExpr, vars: &mut VarTable) -> Result<Affine> {
    let overflow = || Error::new(ErrorKind::IndexOverflow, e.span());
    Ok(match e {
        IndexExpr::Int(v, _) => Affine::constant(*v),
        IndexExpr::Var(id) => Affine::var(vars.get_or_add(id)),
        IndexExpr::Neg(x, _) => affine(x, vars)?.checked_scale(-1).ok_or_else(overflow)?,
        IndexExpr::Add(a, b, _) => affine(a, vars)?
            .checked_add(&affine(b, vars)?)
            .ok_or_else(overflow)?,
        IndexExpr::Sub(a, b, _) => affine(a, vars)?
            .add_scaled(&affine(b, vars)?, -1)
            .ok_or_else(overflow)?,
        IndexExpr::Mul(a, b, span) => {
            let (x, y) = (affine(a, vars)?, affine(b, vars)?);
            let (k, other) = match (x.is_constant(), y.is_constant()) {
                (true, _) => (x.constant, y),
                (_, true) => (y.constant, x),
                _ => return Err(Error::new(ErrorKind::NonAffine(describe_index(e)), *span)),
            };
            other.checked_scale(k).ok_or_else(overflow)?
        }
    })
}

/// A constant integer expression (a `where` bound).
pub(crate) fn constant(e: &IndexExpr) -> Result<i64> {
    let mut no_vars = VarTable::default();
    let a = affine(e, &mut no_vars)?;
    if !a.is_constant() {
        return Err(Error::new(ErrorKind::NonConstantBound, e.span()));
    }
    Ok(a.constant)
}

fn describe_index(e: &IndexExpr) -> String {
    match e {
        IndexExpr::Int(v, _) => v.to_string(),
        IndexExpr::Var(id) => id.name.clone(),
        IndexExpr::Neg(x, _) => format!("-{}", describe_index(x)),
        IndexExpr::Add(a, b, _) => format!("{} + {}", describe_index(a), describe_index(b)),
        IndexExpr::Sub(a, b, _) => format!("{} - {}", describe_index(a), describe_index(b)),
        IndexExpr::Mul(a, b, _) => {
            let wrap = |x: &IndexExpr| match x {
                IndexExpr::Add(..) | IndexExpr::Sub(..) => format!("({})", describe_index(x)),
                _ => describe_index(x),
            };
            format!("{}*{}", wrap(a), wrap(b))
        }
    }
}

/// The shape an `=` statement creates: each dimension `0..max+1` of its index
/// over the variables' ranges.
fn output_shape(name: &str, index: &[Affine], vars: &[IndexVar], span: Span) -> Result<Vec<usize>> {
    let mut shape = Vec::new();
    for e in index {
        let (_, max) = e
            .bounds_over(&|v| (vars[v.index()].lo, vars[v.index()].hi))
            .ok_or_else(|| Error::new(ErrorKind::IndexOverflow, span))?;
        if max < 0 {
            return Err(Error::new(ErrorKind::EmptyOutput(name.to_string()), span));
        }
        let extent = usize::try_from(max as u64 + 1)
            .map_err(|_| Error::new(ErrorKind::IndexOverflow, span))?;
        shape.push(extent);
    }
    check_size(name, &shape, span)?;
    Ok(shape)
}

/// Refuse shapes whose element count overflows or exceeds [`MAX_ELEMENTS`].
pub(crate) fn check_size(name: &str, shape: &[usize], span: Span) -> Result<()> {
    let count = shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let why = match count {
        None => "its element count overflows".to_string(),
        Some(n) if n > MAX_ELEMENTS => {
            format!("{n} elements exceed the limit of {MAX_ELEMENTS}")
        }
        Some(_) => return Ok(()),
    };
    Err(Error::new(
        ErrorKind::TooLarge {
            tensor: name.to_string(),
            shape: shape.to_vec(),
            why,
        },
        span,
    ))
}

impl fmt::Display for Combine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Combine::Sum => "+",
            Combine::Max => "max",
            Combine::Min => "min",
        })
    }
}
