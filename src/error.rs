//! Errors with source spans. Every user-facing failure — syntax, checking,
//! scheduling, running — is an [`Error`]: a typed [`ErrorKind`] plus the span
//! of the program text it is about, rendered with a caret line under it.

use std::fmt;
use std::sync::Arc;

/// A half-open byte range `[start, end)` of the program text.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(start: usize, end: usize) -> Span {
        Span { start, end }
    }

    /// The smallest span covering both.
    pub fn to(self, other: Span) -> Span {
        Span::new(self.start.min(other.start), self.end.max(other.end))
    }
}

/// What went wrong. The messages are complete sentences about the user's
/// program; where a second place is involved it is named in the message and
/// marked in the rendering.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ErrorKind {
    #[error("syntax error: {0}")]
    Syntax(String),
    #[error("unknown tensor `{0}`: no input of that name was given, and no earlier statement produces it")]
    UnknownTensor(String),
    #[error("`{tensor}` is used before it is defined: statement {defined_at} defines it (move that statement first, or pass `{tensor}` as an input)")]
    UsedBeforeDefinition { tensor: String, defined_at: usize },
    #[error("`{tensor}` written by statement {first} is replaced by statement {second} before anything reads it (`{op}` starts a new tensor; use `+=` to add to it, or another name)")]
    OverwrittenUnread {
        tensor: String,
        first: usize,
        second: usize,
        op: String,
    },
    #[error("the statements depend on each other in a cycle through `{0}`")]
    Cycle(String),
    #[error("unknown function `{0}` (known: relu, sigmoid, tanh, exp, log, sqrt, abs, max, min)")]
    UnknownFunction(String),
    #[error("function `{name}` takes {expected} argument(s), got {got}")]
    WrongArgCount {
        name: String,
        expected: usize,
        got: usize,
    },
    #[error("`{tensor}` has {expected} dimension(s) but is indexed with {got}")]
    WrongIndexCount {
        tensor: String,
        expected: usize,
        got: usize,
    },
    #[error(
        "non-affine index: `{0}` multiplies two expressions that both depend on index variables"
    )]
    NonAffine(String),
    #[error("integer overflow in index arithmetic")]
    IndexOverflow,
    #[error("an index of `{0}` reaches beyond 2³² elements (a coefficient or offset too large)")]
    IndexTooLarge(String),
    #[error("conflicting sizes for index `{var}`: {first} from {first_at} but {second} from {second_at}")]
    ConflictingSizes {
        var: String,
        first: usize,
        first_at: String,
        second: usize,
        second_at: String,
    },
    #[error("cannot infer the range of index `{0}`; give it one with `where {0} in lo..hi`")]
    UnresolvedRange(String),
    #[error("index `{var}` has an empty range {lo}..{hi}{why}")]
    EmptyRange {
        var: String,
        lo: i64,
        hi: i64,
        why: String,
    },
    #[error("`where` range of `{var}` must satisfy 0 <= lo < hi, got {lo}..{hi}")]
    BadWhereRange { var: String, lo: i64, hi: i64 },
    #[error("`where` bound must be a constant integer expression")]
    NonConstantBound,
    #[error("index `{0}` is given a range twice")]
    DuplicateRange(String),
    #[error("`where` gives a range to `{0}`, which the statement does not use")]
    UnusedRange(String),
    #[error("`+=` needs an existing tensor `{0}` (pass it as an input or define it in an earlier statement)")]
    AccumulateMissing(String),
    #[error("`+=` into `{tensor}` of shape {existing:?}: the statement indexes it with {got} dimension(s)")]
    AccumulateShape {
        tensor: String,
        existing: Vec<usize>,
        got: usize,
    },
    #[error("`{tensor}` would have shape {shape:?}: {why}")]
    TooLarge {
        tensor: String,
        shape: Vec<usize>,
        why: String,
    },
    #[error(
        "output `{0}` would be empty: its index never reaches 0 over the ranges of its variables"
    )]
    EmptyOutput(String),
    #[error("`{0}` is an input of the program and cannot be redefined with `=`, `max=` or `min=`; use `+=` or another name")]
    RedefinesInput(String),
    #[error("missing input `{0}`")]
    MissingInput(String),
    #[error("input `{name}` has shape {got:?}, but the program was compiled for {expected:?}")]
    InputShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("`{0}` is not written by any statement, so it cannot be an output")]
    NotAnOutput(String),
    #[error(
        "output `{name}` has shape {expected:?}, but the array given for it has shape {got:?}"
    )]
    OutputShape {
        name: String,
        expected: Vec<usize>,
        got: Vec<usize>,
    },
    #[error("`{0}` is given twice")]
    GivenTwice(String),
    #[error("cannot allocate {bytes} bytes for `{name}`")]
    OutOfMemory { name: String, bytes: usize },
    #[error("input `{0}` is not used by the program")]
    UnexpectedInput(String),
    #[error("schedule error: {0}")]
    Schedule(String),
    #[error("code generation failed: {0}")]
    Codegen(String),
}

/// An error, with the program text it points into (when there is one).
/// Boxed so that `Result`s stay small on the happy path.
#[derive(Clone, Debug, PartialEq)]
pub struct Error(Box<Inner>);

#[derive(Clone, Debug, PartialEq)]
struct Inner {
    kind: ErrorKind,
    span: Option<Span>,
    secondary: Option<Span>,
    source_text: Option<Arc<str>>,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub fn new(kind: ErrorKind, span: Span) -> Error {
        Error(Box::new(Inner {
            kind,
            span: Some(span),
            secondary: None,
            source_text: None,
        }))
    }

    /// An error that is about no place in the program text (e.g. a missing input).
    pub fn unspanned(kind: ErrorKind) -> Error {
        Error(Box::new(Inner {
            kind,
            span: None,
            secondary: None,
            source_text: None,
        }))
    }

    /// Mark a second place involved (the other side of a conflict).
    pub fn with_secondary(mut self, span: Span) -> Error {
        self.0.secondary = Some(span);
        self
    }

    /// Attach the program text so that `Display` can show the line and caret.
    pub fn with_source(mut self, source: &Arc<str>) -> Error {
        if self.0.source_text.is_none() {
            self.0.source_text = Some(source.clone());
        }
        self
    }

    pub fn kind(&self) -> &ErrorKind {
        &self.0.kind
    }

    /// Where the problem is, if it is about a place in the program text.
    pub fn span(&self) -> Option<Span> {
        self.0.span
    }

    /// The other place involved, if any.
    pub fn secondary(&self) -> Option<Span> {
        self.0.secondary
    }

    /// The message alone, without location or caret lines.
    pub fn message(&self) -> String {
        self.0.kind.to_string()
    }

    /// 1-based (line, column) of the primary span, if known.
    pub fn line_col(&self) -> Option<(usize, usize)> {
        let (src, span) = (self.0.source_text.as_deref()?, self.0.span?);
        let (line, col, _) = locate(src, span.start);
        Some((line, col))
    }
}

/// `offset` moved back to the start of the character it falls in (a span
/// may end inside a multi-byte character: `é` after a complete formula).
pub fn char_boundary(src: &str, offset: usize) -> usize {
    let mut p = offset.min(src.len());
    while !src.is_char_boundary(p) {
        p -= 1;
    }
    p
}

/// (1-based line, 1-based column, byte offset of the line start) of `offset`.
fn locate(src: &str, offset: usize) -> (usize, usize, usize) {
    let offset = char_boundary(src, offset);
    let line_start = src[..offset].rfind('\n').map_or(0, |p| p + 1);
    let line = src[..offset].matches('\n').count() + 1;
    let col = src[line_start..offset].chars().count() + 1;
    (line, col, line_start)
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.0.kind)?;
        let (Some(src), Some(span)) = (self.0.source_text.as_deref(), self.0.span) else {
            return Ok(());
        };
        let (line, col, _) = locate(src, span.start);
        // The lines to show: the primary span's, and the secondary span's
        // when it is elsewhere, in source order.
        let mut lines = vec![line];
        if let Some(sec) = self.0.secondary {
            let (l, _, _) = locate(src, sec.start);
            if l != line {
                lines.push(l);
                lines.sort();
            }
        }
        let gutter = lines.iter().max().expect("one line").to_string().len();
        writeln!(f)?;
        writeln!(f, "{:gutter$}--> {line}:{col}", "")?;
        write!(f, "{:gutter$} |", "")?;
        for (k, &l) in lines.iter().enumerate() {
            if k > 0 && l > lines[k - 1] + 1 {
                write!(f, "\n{:gutter$} ...", "")?;
            }
            let line_start = src
                .split_inclusive('\n')
                .take(l - 1)
                .map(str::len)
                .sum::<usize>();
            let line_end = src[line_start..]
                .find('\n')
                .map_or(src.len(), |p| line_start + p);
            let text = &src[line_start..line_end];
            write!(f, "\n{l:>gutter$} | {text}")?;
            // `^` under the primary span, `-` under the secondary one.
            let width = text.chars().count() + 1;
            let mut marks = vec![' '; width];
            let mut mark = |s: Span, c: char| {
                if s.start < line_start || s.start > line_end {
                    return;
                }
                let from = src[line_start..char_boundary(src, s.start)].chars().count();
                let to = src[line_start..char_boundary(src, s.end.clamp(s.start, line_end))]
                    .chars()
                    .count()
                    .max(from + 1);
                for m in &mut marks[from.min(width - 1)..to.min(width)] {
                    *m = c;
                }
            };
            if let Some(sec) = self.0.secondary {
                mark(sec, '-');
            }
            mark(span, '^');
            let marks: String = marks.into_iter().collect();
            if !marks.trim().is_empty() {
                write!(f, "\n{:gutter$} | {}", "", marks.trim_end())?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for Error {}
