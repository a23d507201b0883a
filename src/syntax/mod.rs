//! Text → spanned AST. The only module that sees pest's types.

pub mod ast;

use crate::error::{Error, ErrorKind, Result, Span};
use ast::*;
use pest::iterators::Pair;
use pest::Parser as _;

#[derive(pest_derive::Parser)]
#[grammar = "../grammar/einjit.pest"]
struct Grammar;

/// Parse a whole program (one or more statements).
pub fn parse(src: &str) -> Result<Program> {
    let mut pairs = Grammar::parse(Rule::program, src).map_err(|e| syntax_error(e, src))?;
    let program = pairs.next().expect("pest returns the program rule");
    let statements = program
        .into_inner()
        .filter(|p| p.as_rule() == Rule::statement)
        .map(statement)
        .collect::<Result<Vec<_>>>()?;
    if statements.is_empty() {
        return Err(Error::new(
            ErrorKind::Syntax("the program has no statement".into()),
            Span::new(0, src.len()),
        ));
    }
    Ok(Program { statements })
}

/// Readable names for the grammar rules that appear in "expected ..." lists.
fn rule_name(rule: &Rule) -> String {
    match rule {
        Rule::EOI => "end of input",
        Rule::program | Rule::statement => "a statement",
        Rule::assign_op => "`=`, `+=`, `max=` or `min=`",
        Rule::where_clause => "`where`",
        Rule::range_decl => "a range `v in lo..hi`",
        Rule::access => "a tensor access `Name[...]`",
        Rule::index_expr
        | Rule::index_term
        | Rule::index_factor
        | Rule::index_neg
        | Rule::index_var => "an index expression",
        Rule::expr | Rule::term | Rule::neg | Rule::unary | Rule::primary => "an expression",
        Rule::call => "a function call",
        Rule::add_op => "`+` or `-`",
        Rule::mul_op => "`*` or `/`",
        Rule::ident => "a name",
        Rule::integer => "an integer",
        Rule::number => "a number",
        Rule::WHITESPACE | Rule::COMMENT | Rule::separator => "a separator",
    }
    .to_string()
}

fn syntax_error(e: pest::error::Error<Rule>, src: &str) -> Error {
    let span = match e.location {
        pest::error::InputLocation::Pos(p) => Span::new(p, p + 1),
        pest::error::InputLocation::Span((a, b)) => Span::new(a, b.max(a + 1)),
    };
    // A `/` inside brackets: an index divided (`A[i/2]`), which affine
    // indices cannot express.
    let before = &src[..span.start.min(src.len())];
    let in_index = before.matches('[').count() > before.matches(']').count();
    let hint = match in_index && src[before.len()..].starts_with('/') {
        true => " (an index is integer arithmetic with `+`, `-` and `*` only: no `/`)",
        false => "",
    };
    let e = e.renamed_rules(rule_name);
    let msg = match &e.variant {
        pest::error::ErrorVariant::ParsingError {
            positives,
            negatives,
        } => {
            let list = |v: &Vec<Rule>| {
                let mut names: Vec<String> = v.iter().map(rule_name).collect();
                names.dedup();
                names.join(", ")
            };
            match (positives.is_empty(), negatives.is_empty()) {
                (false, _) => format!("expected {}", list(positives)),
                (true, false) => format!("unexpected {}", list(negatives)),
                (true, true) => "unexpected input".to_string(),
            }
        }
        pest::error::ErrorVariant::CustomError { message } => message.clone(),
    };
    Error::new(ErrorKind::Syntax(format!("{msg}{hint}")), span)
}

fn span_of(p: &Pair<Rule>) -> Span {
    Span::new(p.as_span().start(), p.as_span().end())
}

fn ident(p: Pair<Rule>) -> Ident {
    Ident {
        name: p.as_str().to_string(),
        span: span_of(&p),
    }
}

fn statement(p: Pair<Rule>) -> Result<Statement> {
    let span = span_of(&p);
    let mut it = p.into_inner();
    let lhs = access(it.next().unwrap())?;
    let op = match it.next().unwrap().as_str() {
        "=" => AssignOp::Assign,
        "+=" => AssignOp::AddAssign,
        "max=" => AssignOp::MaxAssign,
        "min=" => AssignOp::MinAssign,
        other => unreachable!("grammar admits no operator {other}"),
    };
    let rhs = expr(it.next().unwrap(), 0)?;
    let mut ranges = Vec::new();
    if let Some(w) = it.next() {
        for r in w.into_inner() {
            let span = span_of(&r);
            let mut parts = r.into_inner();
            ranges.push(RangeDecl {
                var: ident(parts.next().unwrap()),
                lo: index_expr(parts.next().unwrap(), 0)?,
                hi: index_expr(parts.next().unwrap(), 0)?,
                span,
            });
        }
    }
    Ok(Statement {
        lhs,
        op,
        rhs,
        ranges,
        span,
    })
}

fn access(p: Pair<Rule>) -> Result<Access> {
    let span = span_of(&p);
    let mut it = p.into_inner();
    let tensor = ident(it.next().unwrap());
    let indices = it.map(|e| index_expr(e, 0)).collect::<Result<_>>()?;
    Ok(Access {
        tensor,
        indices,
        span,
    })
}

fn index_expr(p: Pair<Rule>, depth: usize) -> Result<IndexExpr> {
    let span = span_of(&p);
    too_deep(depth, span)?;
    match p.as_rule() {
        Rule::index_expr => {
            let mut it = p.into_inner();
            let mut acc = index_expr(it.next().unwrap(), depth)?;
            let mut depth = depth;
            while let Some(op) = it.next() {
                depth += 1;
                let rhs = index_expr(it.next().unwrap(), depth)?;
                let s = acc.span().to(rhs.span());
                acc = match op.as_str() {
                    "+" => IndexExpr::Add(Box::new(acc), Box::new(rhs), s),
                    _ => IndexExpr::Sub(Box::new(acc), Box::new(rhs), s),
                };
            }
            Ok(acc)
        }
        Rule::index_term => {
            let mut it = p.into_inner();
            let mut acc = index_expr(it.next().unwrap(), depth)?;
            let mut depth = depth;
            for f in it {
                depth += 1;
                let rhs = index_expr(f, depth)?;
                let s = acc.span().to(rhs.span());
                acc = IndexExpr::Mul(Box::new(acc), Box::new(rhs), s);
            }
            Ok(acc)
        }
        Rule::index_neg => Ok(IndexExpr::Neg(
            Box::new(index_expr(p.into_inner().next().unwrap(), depth + 1)?),
            span,
        )),
        Rule::index_var => Ok(IndexExpr::Var(ident(p.into_inner().next().unwrap()))),
        Rule::integer => p
            .as_str()
            .parse::<i64>()
            .map(|v| IndexExpr::Int(v, span))
            .map_err(|_| {
                let msg = format!("the integer {} is too large for an index", p.as_str());
                Error::new(ErrorKind::Syntax(msg), span)
            }),
        r => unreachable!("unexpected rule {r:?} in an index expression"),
    }
}

/// Levels an expression tree may have (a function call or negation one,
/// each operand of a chain `a + b + c` one more; parentheses none): later
/// stages walk the tree recursively, and a deeper one would exhaust the
/// stack instead of failing with an error.
const MAX_DEPTH: usize = 256;

/// The error for a tree deeper than [`MAX_DEPTH`] at `span`.
fn too_deep(depth: usize, span: Span) -> Result<()> {
    match depth > MAX_DEPTH {
        true => Err(Error::new(
            ErrorKind::Syntax(format!(
                "expression too deep: more than {MAX_DEPTH} levels of nesting or operands in a chain"
            )),
            span,
        )),
        false => Ok(()),
    }
}

fn expr(p: Pair<Rule>, depth: usize) -> Result<Expr> {
    let span = span_of(&p);
    too_deep(depth, span)?;
    match p.as_rule() {
        Rule::expr | Rule::term => {
            let mut it = p.into_inner();
            let mut acc = expr(it.next().unwrap(), depth)?;
            let mut depth = depth;
            while let Some(op) = it.next() {
                depth += 1;
                let rhs = expr(it.next().unwrap(), depth)?;
                let s = expr_span(&acc).to(expr_span(&rhs));
                let op = match op.as_str() {
                    "+" => BinOp::Add,
                    "-" => BinOp::Sub,
                    "*" => BinOp::Mul,
                    _ => BinOp::Div,
                };
                acc = Expr::Binary(op, Box::new(acc), Box::new(rhs), s);
            }
            Ok(acc)
        }
        Rule::neg => Ok(Expr::Neg(
            Box::new(expr(p.into_inner().next().unwrap(), depth + 1)?),
            span,
        )),
        Rule::number => {
            let v: f64 = p
                .as_str()
                .parse()
                .map_err(|_| Error::new(ErrorKind::Syntax("malformed number".into()), span))?;
            Ok(Expr::Num(v, span))
        }
        Rule::access => Ok(Expr::Access(access(p)?)),
        Rule::call => {
            let mut it = p.into_inner();
            let name = ident(it.next().unwrap());
            let args = it.map(|a| expr(a, depth + 1)).collect::<Result<Vec<_>>>()?;
            let func = Func::from_name(&name.name).ok_or_else(|| {
                Error::new(ErrorKind::UnknownFunction(name.name.clone()), name.span)
            })?;
            if args.len() != func.arity() {
                return Err(Error::new(
                    ErrorKind::WrongArgCount {
                        name: name.name,
                        expected: func.arity(),
                        got: args.len(),
                    },
                    span,
                ));
            }
            Ok(Expr::Call(func, args, span))
        }
        r => unreachable!("unexpected rule {r:?} in an expression"),
    }
}

pub fn expr_span(e: &Expr) -> Span {
    match e {
        Expr::Num(_, s) | Expr::Neg(_, s) | Expr::Binary(_, _, _, s) | Expr::Call(_, _, s) => *s,
        Expr::Access(a) => a.span,
    }
}
