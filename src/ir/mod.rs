//! The loop-nest IR: loops with affine bounds, loads and stores with affine
//! indices, scalar expressions. Lowering produces it, the scheduler rewrites
//! it (marking loops `vectorized`, `unrolled`, `parallel`), codegen compiles
//! it and the interpreter runs it.

mod interp;
mod print;
mod rewrite;
mod verify;

pub use interp::interpret;
pub use verify::verify;

use crate::affine::{Affine, Var};
use crate::check::Combine;

/// A buffer of the function; ids of tensors are their `TensorId` numbers,
/// scratch buffers the scheduler adds come after them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BufId(pub u32);

impl BufId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufKind {
    /// Read-only, given by the caller.
    Input,
    /// Written by the function and returned.
    Output,
    /// Written and read by the function, not returned.
    Temp,
    /// A temporary private to one iteration of the loops around its uses
    /// (a tile-fused slice, see `schedule::fuse_nests`): it lives in the
    /// stack frame of the nest's function, so each thread has its own;
    /// `zeroed`: all zeros on entry to that function (a padded copy's
    /// border, which no iteration overwrites).
    Stack { zeroed: bool },
}

/// A dense row-major f32 buffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Buffer {
    pub name: String,
    pub shape: Vec<usize>,
    pub kind: BufKind,
}

impl Buffer {
    pub fn len(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Row-major strides in elements.
    pub fn strides(&self) -> Vec<i64> {
        let mut strides = vec![1i64; self.shape.len()];
        for d in (0..self.shape.len().saturating_sub(1)).rev() {
            strides[d] = strides[d + 1] * self.shape[d + 1] as i64;
        }
        strides
    }
}

/// A loop bound term: `ceil(expr / div)` in a lower bound, `floor(expr / div)`
/// in an (exclusive) upper bound. `div` is 1 unless a strided access was folded.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Bound {
    pub expr: Affine,
    pub div: i64,
}

impl Bound {
    pub fn constant(c: i64) -> Bound {
        Bound {
            expr: Affine::constant(c),
            div: 1,
        }
    }

    pub fn as_constant(&self) -> Option<i64> {
        self.expr.is_constant().then_some(self.expr.constant)
    }
}

/// How a loop runs: the schedule's mark.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LoopKind {
    Serial,
    /// Iterations split between worker threads.
    Parallel,
    /// Lanes of one F32X4 vector: trip count a multiple of the width.
    Vectorized(u32),
    /// Body repeated in the generated code.
    Unrolled,
    /// Serial, with the output elements written inside kept in registers
    /// across it (realised by `schedule::accumulate`).
    Accumulating,
    /// Both: the unrolled body keeps the output elements in registers (a
    /// short reduction, such as a 3x3 window, unrolled whole).
    UnrolledAccumulating,
}

/// `for var in max(lo...)..min(hi...)`: the domain restriction lives in the bounds.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    pub var: Var,
    pub lo: Vec<Bound>,
    pub hi: Vec<Bound>,
    pub kind: LoopKind,
    pub body: Vec<Stmt>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Stmt {
    Loop(Loop),
    /// `buf[index] = value`, or `buf[index] = combine(buf[index], value)`.
    /// A vector value writes its lanes to elements of the last dimension
    /// from `index`, `step` apart (1: contiguous, one vector store; more: a
    /// scatter of scalar stores, as into a transposed convolution's phase).
    Store {
        buf: BufId,
        index: Vec<Affine>,
        value: Expr,
        combine: Option<Combine>,
        step: i64,
    },
    /// `local = value`, or `local = combine(local, value)`: a register.
    Assign {
        local: LocalId,
        value: Expr,
        combine: Option<Combine>,
    },
}

/// Width of the vectors the scheduler emits: F32X4, the widest Cranelift
/// compiles on x86.
pub const LANES: u32 = 4;

/// A function-local value held in a register (an accumulator).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct LocalId(pub u32);

impl LocalId {
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Local {
    pub name: String,
    /// 1 for a scalar, [`LANES`] for a vector.
    pub lanes: u32,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UnOp {
    Neg,
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Abs,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
}

/// A scalar or vector value. Operands of an operation have equal widths.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Const(f32),
    /// `lanes` elements of the last dimension from `index`, `step` apart
    /// (1: contiguous, one vector load; more: a gather of scalar loads).
    Load {
        buf: BufId,
        index: Vec<Affine>,
        lanes: u32,
        step: i64,
    },
    /// A scalar repeated in every lane of a vector.
    Broadcast(Box<Expr>),
    /// A vector's lanes combined into one scalar (a horizontal sum, max or min).
    Reduce(Combine, Box<Expr>),
    Local(LocalId),
    Unary(UnOp, Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
}

impl Expr {
    /// A scalar load.
    pub fn load(buf: BufId, index: Vec<Affine>) -> Expr {
        Expr::Load {
            buf,
            index,
            lanes: 1,
            step: 1,
        }
    }
}

/// A whole program as one function over its buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Func {
    pub buffers: Vec<Buffer>,
    /// Loop variable names, indexed by `Var` (names may repeat across nests).
    pub var_names: Vec<String>,
    /// Registers, indexed by `LocalId`.
    pub locals: Vec<Local>,
    pub body: Vec<Stmt>,
}

impl Func {
    /// The same function (buffers, names, registers) with another body,
    /// without copying the old one.
    pub fn with_body(&self, body: Vec<Stmt>) -> Func {
        Func {
            buffers: self.buffers.clone(),
            var_names: self.var_names.clone(),
            locals: self.locals.clone(),
            body,
        }
    }

    pub fn var_name(&self, v: Var) -> &str {
        &self.var_names[v.index()]
    }

    pub fn new_var(&mut self, name: String) -> Var {
        self.var_names.push(name);
        Var(self.var_names.len() as u32 - 1)
    }

    pub fn new_local(&mut self, name: String, lanes: u32) -> LocalId {
        self.locals.push(Local { name, lanes });
        LocalId(self.locals.len() as u32 - 1)
    }

    /// The width of a value: 1 (scalar) or [`LANES`].
    pub fn lanes(&self, e: &Expr) -> u32 {
        match e {
            Expr::Const(_) => 1,
            Expr::Load { lanes, .. } => *lanes,
            Expr::Broadcast(_) => LANES,
            Expr::Reduce(..) => 1,
            Expr::Local(l) => self.locals[l.index()].lanes,
            Expr::Unary(_, x) => self.lanes(x),
            Expr::Binary(_, a, _) => self.lanes(a),
        }
    }
}

impl UnOp {
    pub fn name(self) -> &'static str {
        match self {
            UnOp::Neg => "-",
            UnOp::Relu => "relu",
            UnOp::Sigmoid => "sigmoid",
            UnOp::Tanh => "tanh",
            UnOp::Exp => "exp",
            UnOp::Log => "log",
            UnOp::Sqrt => "sqrt",
            UnOp::Abs => "abs",
        }
    }

    /// The operation on one f32 value: the one definition the interpreter
    /// and the reference evaluator share with codegen's libcalls.
    pub fn eval(self, x: f32) -> f32 {
        match self {
            UnOp::Neg => -x,
            UnOp::Relu => x.max(0.0),
            UnOp::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            UnOp::Tanh => x.tanh(),
            UnOp::Exp => x.exp(),
            UnOp::Log => x.ln(),
            UnOp::Sqrt => x.sqrt(),
            UnOp::Abs => x.abs(),
        }
    }
}

impl BinOp {
    pub fn eval(self, a: f32, b: f32) -> f32 {
        match self {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            BinOp::Div => a / b,
            BinOp::Max => a.max(b),
            BinOp::Min => a.min(b),
        }
    }
}
