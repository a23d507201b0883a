//! # einjit
//!
//! A tensor expression compiler: formulas in index notation, the way papers
//! write them, compiled to native code with Cranelift.
//!
//! ```text
//! O[b,k,i,j] = I[b,c,i+rx,j+ry] * W[k,c,rx,ry]
//! ```
//!
//! The pipeline, stage by stage:
//! 1. [`syntax::parse`]: text → spanned AST (grammar in `grammar/einjit.pest`);
//! 2. [`check::check`]: names → ids, affine indices, inferred ranges and shapes;
//!    [`graph::Dataflow`] checks how statements feed each other;
//!    [`contract`], [`widen`], [`pad`], [`hoist`], [`fuse`] and
//!    [`collapse`] rewrite the checked program (contraction order, short
//!    rows rounded up to whole vectors, padded copies, factors constant
//!    across a reduction, elementwise fusion, dimensions always indexed
//!    together merged);
//! 3. [`lower::lower`]: checked program → loop-nest IR ([`ir::Func`]), the
//!    domain rule folded into loop bounds; [`schedule`] shapes and realises
//!    the nests (tiles, vectors, registers, threads); [`codegen`] compiles
//!    them with Cranelift and [`runtime`] runs them;
//! 4. [`ir::interpret`] runs the IR; [`reference::evaluate`] runs the
//!    checked program directly, as the oracle.

pub mod affine;
pub mod check;
pub mod codegen;
pub mod collapse;
pub mod contract;
pub mod error;
pub mod fuse;
pub mod graph;
pub mod hoist;
pub mod ir;
pub mod lower;
pub mod pad;
pub mod phase;
pub mod reference;
pub mod runtime;
pub mod schedule;
pub mod stride;
pub mod syntax;
pub mod widen;

pub use error::{Error, ErrorKind, Result, Span};
pub use runtime::{Formula, Kernel, Outputs};

use std::collections::HashMap;
use std::sync::Arc;

/// Parse and check `src` against the shapes of its inputs. Errors carry the
/// source text, so `to_string()` renders the line with a caret under the span.
pub fn check_source(
    src: &str,
    input_shapes: &HashMap<String, Vec<usize>>,
) -> Result<check::Program> {
    let source: Arc<str> = Arc::from(src);
    let ast = syntax::parse(src).map_err(|e| e.with_source(&source))?;
    check::check(&ast, source.clone(), input_shapes).map_err(|e| e.with_source(&source))
}

/// The dump of a lowered program: each statement with its variables' ranges
/// and where they came from (padding shows here), then the loop nest.
pub fn dump(program: &check::Program, func: &ir::Func) -> String {
    let mut out = String::new();
    for note in &program.notes {
        out.push_str(&format!("# {note}\n"));
    }
    for (n, st) in program.statements.iter().enumerate() {
        let text = program.source[st.span.start..st.span.end].trim();
        let formula = program.statement_text(st);
        // Statements a pass derived show their own formula.
        let derived = program
            .statements
            .iter()
            .filter(|s| s.span == st.span)
            .count()
            > 1;
        let shown = if derived { formula } else { text.to_string() };
        out.push_str(&format!("# statement {}: {shown}\n", n + 1));
        for v in &st.vars {
            let role = if v.reduced { "reduced; " } else { "" };
            let from = match &v.source {
                check::RangeSource::Where {
                    valid: Some((a, b)),
                } if (*a, *b) != (v.lo, v.hi) => {
                    format!("where; padded: in bounds only for {a}..{b}")
                }
                check::RangeSource::Where { .. } => "where".to_string(),
                check::RangeSource::Dimension { tensor, dim } => {
                    format!("dimension {dim} of {tensor}")
                }
                check::RangeSource::Inferred => "largest in-bounds range".to_string(),
                check::RangeSource::Merged { outer, inner } => {
                    format!("{outer} and {inner} merged: always indexed together, whole")
                }
            };
            out.push_str(&format!(
                "#   {} in {}..{}  ({role}{from})\n",
                v.name, v.lo, v.hi
            ));
        }
        for e in &st.epilogues {
            out.push_str(&format!(
                "#   then, in place on each finished element: {}\n",
                e.text
            ));
        }
    }
    out.push_str(&func.to_string());
    out
}

/// The README's code examples run as doctests, so the front page can't rot.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
mod readme {}
