//! The spanned syntax tree: exactly what the user wrote, nothing resolved.

use crate::error::Span;

#[derive(Clone, Debug, PartialEq)]
pub struct Program {
    pub statements: Vec<Statement>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Statement {
    pub lhs: Access,
    pub op: AssignOp,
    pub rhs: Expr,
    pub ranges: Vec<RangeDecl>,
    pub span: Span,
}

/// The statement's operator: how contributions combine, and whether the
/// output is created (`=`, `max=`, `min=`) or must exist (`+=`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AssignOp {
    Assign,
    AddAssign,
    MaxAssign,
    MinAssign,
}

impl AssignOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AssignOp::Assign => "=",
            AssignOp::AddAssign => "+=",
            AssignOp::MaxAssign => "max=",
            AssignOp::MinAssign => "min=",
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// `Name[e1, ..., en]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Access {
    pub tensor: Ident,
    pub indices: Vec<IndexExpr>,
    pub span: Span,
}

/// `v in lo..hi` of a `where` clause.
#[derive(Clone, Debug, PartialEq)]
pub struct RangeDecl {
    pub var: Ident,
    pub lo: IndexExpr,
    pub hi: IndexExpr,
    pub span: Span,
}

/// Integer arithmetic over index variables, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum IndexExpr {
    Int(i64, Span),
    Var(Ident),
    Neg(Box<IndexExpr>, Span),
    Add(Box<IndexExpr>, Box<IndexExpr>, Span),
    Sub(Box<IndexExpr>, Box<IndexExpr>, Span),
    Mul(Box<IndexExpr>, Box<IndexExpr>, Span),
}

impl IndexExpr {
    pub fn span(&self) -> Span {
        match self {
            IndexExpr::Int(_, s)
            | IndexExpr::Neg(_, s)
            | IndexExpr::Add(_, _, s)
            | IndexExpr::Sub(_, _, s)
            | IndexExpr::Mul(_, _, s) => *s,
            IndexExpr::Var(id) => id.span,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
}

/// The built-in scalar functions.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Func {
    Relu,
    Sigmoid,
    Tanh,
    Exp,
    Log,
    Sqrt,
    Abs,
    Max,
    Min,
}

impl Func {
    pub const ALL: [Func; 9] = [
        Func::Relu,
        Func::Sigmoid,
        Func::Tanh,
        Func::Exp,
        Func::Log,
        Func::Sqrt,
        Func::Abs,
        Func::Max,
        Func::Min,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Func::Relu => "relu",
            Func::Sigmoid => "sigmoid",
            Func::Tanh => "tanh",
            Func::Exp => "exp",
            Func::Log => "log",
            Func::Sqrt => "sqrt",
            Func::Abs => "abs",
            Func::Max => "max",
            Func::Min => "min",
        }
    }

    pub fn arity(self) -> usize {
        match self {
            Func::Max | Func::Min => 2,
            _ => 1,
        }
    }

    pub fn from_name(name: &str) -> Option<Func> {
        Func::ALL.into_iter().find(|f| f.name() == name)
    }
}

/// The right-hand side, as written.
#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    Num(f64, Span),
    Access(Access),
    Neg(Box<Expr>, Span),
    Binary(BinOp, Box<Expr>, Box<Expr>, Span),
    Call(Func, Vec<Expr>, Span),
}
