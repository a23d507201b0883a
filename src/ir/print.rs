//! The one printer of the IR. Deterministic: it is the snapshot format.

use super::*;
use std::fmt::{self, Display, Formatter, Write};

impl Display for Func {
    fn fmt(&self, f: &mut Formatter<'_>) -> fmt::Result {
        let params: Vec<String> = self
            .buffers
            .iter()
            .map(|b| {
                let kind = match b.kind {
                    BufKind::Input => "in",
                    BufKind::Output => "out",
                    BufKind::Temp => "temp",
                    BufKind::Stack { zeroed: false } => "stack",
                    BufKind::Stack { zeroed: true } => "stack zeroed",
                };
                let dims: Vec<String> = b.shape.iter().map(|d| d.to_string()).collect();
                format!("{}: {kind} f32[{}]", b.name, dims.join(", "))
            })
            .collect();
        writeln!(f, "func({}):", params.join(", "))?;
        for s in &self.body {
            self.fmt_stmt(s, 1, f)?;
        }
        Ok(())
    }
}

impl Func {
    fn affine(&self, e: &Affine) -> String {
        let name = |v: Var| self.var_name(v).to_string();
        let text = e.display(&name).to_string();
        text
    }

    fn bound(&self, b: &Bound, lower: bool) -> String {
        if b.div == 1 {
            return self.affine(&b.expr);
        }
        let f = if lower { "ceildiv" } else { "floordiv" };
        format!("{f}({}, {})", self.affine(&b.expr), b.div)
    }

    /// `max(a, b)` / `min(a, b)` of a bound list.
    pub(crate) fn bounds(&self, bs: &[Bound], lower: bool) -> String {
        let items: Vec<String> = bs.iter().map(|b| self.bound(b, lower)).collect();
        match items.len() {
            1 => items[0].clone(),
            _ => format!(
                "{}({})",
                if lower { "max" } else { "min" },
                items.join(", ")
            ),
        }
    }

    fn access(&self, buf: BufId, index: &[Affine]) -> String {
        let idx: Vec<String> = index.iter().map(|e| self.affine(e)).collect();
        format!("{}[{}]", self.buffers[buf.index()].name, idx.join(", "))
    }

    /// An access of `lanes` elements `step` apart: `X[i]x4` (contiguous),
    /// `X[i]x4/2` (every other element), `X[i]` (one).
    fn lanes_access(&self, buf: BufId, index: &[Affine], lanes: u32, step: i64) -> String {
        let access = self.access(buf, index);
        match (lanes, step) {
            (1, _) => access,
            (n, 1) => format!("{access}x{n}"),
            (n, s) => format!("{access}x{n}/{s}"),
        }
    }

    pub(crate) fn expr(&self, e: &Expr) -> String {
        let mut s = String::new();
        self.write_expr(e, 0, &mut s);
        s
    }

    /// Writes `e`, parenthesised when its precedence is below `prec`.
    fn write_expr(&self, e: &Expr, prec: u8, out: &mut String) {
        match e {
            Expr::Const(c) => {
                if *c < 0.0 && prec > 0 {
                    let _ = write!(out, "({c:?})");
                } else {
                    let _ = write!(out, "{c:?}");
                }
            }
            Expr::Load {
                buf,
                index,
                lanes,
                step,
            } => out.push_str(&self.lanes_access(*buf, index, *lanes, *step)),
            Expr::Reduce(c, x) => {
                out.push_str(match c {
                    Combine::Sum => "hsum(",
                    Combine::Max => "hmax(",
                    Combine::Min => "hmin(",
                });
                self.write_expr(x, 0, out);
                out.push(')');
            }
            Expr::Broadcast(x) => {
                out.push_str("splat(");
                self.write_expr(x, 0, out);
                out.push(')');
            }
            Expr::Local(l) => out.push_str(&self.locals[l.index()].name),
            Expr::Unary(UnOp::Neg, x) => {
                out.push('-');
                self.write_expr(x, 3, out);
            }
            Expr::Unary(op, x) => {
                out.push_str(op.name());
                out.push('(');
                self.write_expr(x, 0, out);
                out.push(')');
            }
            Expr::Binary(op @ (BinOp::Max | BinOp::Min), a, b) => {
                out.push_str(if *op == BinOp::Max { "max(" } else { "min(" });
                self.write_expr(a, 0, out);
                out.push_str(", ");
                self.write_expr(b, 0, out);
                out.push(')');
            }
            Expr::Binary(op, a, b) => {
                let (p, sym) = match op {
                    BinOp::Add => (1, "+"),
                    BinOp::Sub => (1, "-"),
                    BinOp::Mul => (2, "*"),
                    _ => (2, "/"),
                };
                if p < prec {
                    out.push('(');
                }
                self.write_expr(a, p, out);
                let _ = write!(out, " {sym} ");
                // Right operands of `-` and `/` bind tighter.
                self.write_expr(b, p + 1, out);
                if p < prec {
                    out.push(')');
                }
            }
        }
    }

    fn fmt_stmt(&self, s: &Stmt, depth: usize, f: &mut Formatter<'_>) -> fmt::Result {
        let pad = "  ".repeat(depth);
        match s {
            Stmt::Loop(l) => {
                let mark = match l.kind {
                    LoopKind::Serial => String::new(),
                    LoopKind::Parallel => " parallel".into(),
                    LoopKind::Vectorized(w) => format!(" vectorized({w})"),
                    LoopKind::Unrolled => " unrolled".into(),
                    LoopKind::Accumulating => " accumulating".into(),
                    LoopKind::UnrolledAccumulating => " unrolled accumulating".into(),
                };
                writeln!(
                    f,
                    "{pad}for {} in {}..{}{mark}:",
                    self.var_name(l.var),
                    self.bounds(&l.lo, true),
                    self.bounds(&l.hi, false)
                )?;
                for s in &l.body {
                    self.fmt_stmt(s, depth + 1, f)?;
                }
                Ok(())
            }
            Stmt::Store {
                buf,
                index,
                value,
                combine,
                step,
            } => {
                let target = self.lanes_access(*buf, index, self.lanes(value), *step);
                let value = self.expr(value);
                match combine {
                    None => writeln!(f, "{pad}{target} = {value}"),
                    Some(Combine::Sum) => writeln!(f, "{pad}{target} += {value}"),
                    Some(Combine::Max) => writeln!(f, "{pad}{target} max= {value}"),
                    Some(Combine::Min) => writeln!(f, "{pad}{target} min= {value}"),
                }
            }
            Stmt::Assign {
                local,
                value,
                combine,
            } => {
                let target = &self.locals[local.index()].name;
                let op = match combine {
                    None => "=",
                    Some(Combine::Sum) => "+=",
                    Some(Combine::Max) => "max=",
                    Some(Combine::Min) => "min=",
                };
                writeln!(f, "{pad}{target} {op} {}", self.expr(value))
            }
        }
    }
}
