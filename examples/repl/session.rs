//! The REPL's session: named tensors, the commands that act on them, and
//! the printing of results. Shared by `examples/repl.rs` and `tests/repl.rs`.

use einjit::check::OutputSelection;
use einjit::schedule::Schedule;
use einjit::{Formula, Kernel};
use ndarray::{ArrayD, IxDyn};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const HELP: &str = "\
Statements of the language run at once on the session's tensors:
  O[i,j] = A[i,k] * B[k,j]                 (`;` separates statements on a line)
Tensors:
  X = [[1,2,3],[4,5,6]]    a literal array        X = zeros(2, 3)   X = ones(2, 3)
  X = rand(2, 3)           seeded uniform [0, 1)  X = load(\"x.npy\")  save(X, \"x.npy\")
  X                        print a tensor
Commands:
  :ir        lowered and scheduled loop nests of the last statement
  :clif      Cranelift IR of the last statement
  :time      compile and run time of the last statement
  :schedule S  schedule for the following statements (`:schedule auto` to reset)
  :search on|off  time alternative automatic schedules when compiling (off)
  :tensors   every tensor with its shape
  :help      this text
  :quit      leave (also Ctrl-D)";

/// What a line did: its printed output, and whether it failed.
pub struct Outcome {
    pub output: String,
    pub ok: bool,
    pub quit: bool,
}

impl Outcome {
    fn ok(output: String) -> Outcome {
        Outcome {
            output,
            ok: true,
            quit: false,
        }
    }

    fn err(output: String) -> Outcome {
        Outcome {
            output,
            ok: false,
            quit: false,
        }
    }
}

/// The last statement run: for `:ir`, `:clif`, `:time`.
struct Last {
    kernel: Arc<Kernel>,
    compile: Duration,
    run: Duration,
}

#[derive(Default)]
pub struct Session {
    pub tensors: BTreeMap<String, ArrayD<f32>>,
    last: Option<Last>,
    schedule: Option<Schedule>,
    /// Compile with the empirical schedule search (`:search on`).
    search: bool,
    seed: u64,
}

/// A REPL-command error: message, the line, and a caret under `start..end`.
fn caret(line: &str, start: usize, end: usize, msg: &str) -> String {
    // Byte offsets, moved back to whole characters.
    let start = einjit::error::char_boundary(line, start);
    let end = einjit::error::char_boundary(line, end.max(start));
    let width = line[start..end].chars().count().max(1);
    let pad = line[..start].chars().count();
    format!(
        "error: {msg}\n  |\n1 | {line}\n  | {}{}",
        " ".repeat(pad),
        "^".repeat(width)
    )
}

fn is_ident(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(ch) if ch.is_ascii_alphabetic() || ch == '_')
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
}

/// The line without its `#` comment (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, ch) in line.char_indices() {
        match ch {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Run one line.
    pub fn execute(&mut self, raw: &str) -> Outcome {
        let line = strip_comment(raw).trim_end();
        let text = line.trim();
        if text.is_empty() {
            return Outcome::ok(String::new());
        }
        if let Some(cmd) = text.strip_prefix(':') {
            return self.command(cmd.trim(), line);
        }
        if is_ident(text) {
            return match self.tensors.get(text) {
                Some(a) => Outcome::ok(format!("{text}: {}\n{}", shape_text(a), format_array(a))),
                None => Outcome::err(caret(
                    line,
                    line.find(text).unwrap_or(0),
                    line.len(),
                    &format!("no tensor `{text}` (see :tensors)"),
                )),
            };
        }
        if let Some(args) = text.strip_prefix("save(") {
            return self.save(args, line);
        }
        // `X = builtin(...)` or `X = [[...]]`: a left side without brackets.
        if let Some((lhs, rhs)) = text.split_once('=') {
            let name = lhs.trim();
            let rhs_t = rhs.trim();
            if is_ident(name) && !rhs.starts_with('=') && !name.is_empty() {
                let at = line.len() - rhs.trim_start().len();
                return match self.builtin(rhs_t, line, at) {
                    Ok(a) => {
                        let out = format!("{name}: {}", shape_text(&a));
                        self.tensors.insert(name.to_string(), a);
                        Outcome::ok(out)
                    }
                    Err(e) => Outcome::err(e),
                };
            }
        }
        self.statement(line)
    }

    fn command(&mut self, cmd: &str, line: &str) -> Outcome {
        let (name, rest) = cmd.split_once(char::is_whitespace).unwrap_or((cmd, ""));
        let need_last = |s: &Session| s.last.is_none();
        match name {
            "help" => Outcome::ok(HELP.to_string()),
            "quit" | "q" | "exit" => Outcome {
                output: String::new(),
                ok: true,
                quit: true,
            },
            "tensors" => {
                let lines: Vec<String> = self
                    .tensors
                    .iter()
                    .map(|(n, a)| format!("{n}: {}", shape_text(a)))
                    .collect();
                Outcome::ok(if lines.is_empty() {
                    "(no tensors)".into()
                } else {
                    lines.join("\n")
                })
            }
            "search" => match rest.trim() {
                "on" | "off" => {
                    self.search = rest.trim() == "on";
                    Outcome::ok(format!("schedule search: {}", rest.trim()))
                }
                _ => Outcome::err(caret(
                    line,
                    0,
                    line.len(),
                    "expected `:search on` or `:search off`",
                )),
            },
            "schedule" => match rest.trim() {
                "" => Outcome::ok(match &self.schedule {
                    Some(s) => format!("schedule: {s}"),
                    None => "schedule: automatic".into(),
                }),
                "auto" => {
                    self.schedule = None;
                    Outcome::ok("schedule: automatic".into())
                }
                text => match text.parse::<Schedule>() {
                    Ok(s) => {
                        let out = format!("schedule for the following statements: {s}");
                        self.schedule = Some(s);
                        Outcome::ok(out)
                    }
                    Err(e) => Outcome::err(caret(
                        line,
                        line.find(text).unwrap_or(0),
                        line.len(),
                        &e.message(),
                    )),
                },
            },
            "ir" | "clif" | "time" if need_last(self) => {
                Outcome::err("error: no statement has run yet".into())
            }
            "ir" => {
                let last = self.last.as_ref().expect("checked");
                Outcome::ok(format!(
                    "## lowered\n{}\n## scheduled\n{}",
                    last.kernel.lowered_ir().trim_end(),
                    last.kernel.scheduled_ir().trim_end()
                ))
            }
            "clif" => Outcome::ok(
                self.last
                    .as_ref()
                    .expect("checked")
                    .kernel
                    .clif()
                    .trim_end()
                    .to_string(),
            ),
            "time" => {
                let last = self.last.as_ref().expect("checked");
                Outcome::ok(format!(
                    "compile {:.3} ms, run {:.3} ms",
                    last.compile.as_secs_f64() * 1e3,
                    last.run.as_secs_f64() * 1e3
                ))
            }
            other => Outcome::err(caret(
                line,
                line.find(other).unwrap_or(0),
                line.find(other).unwrap_or(0) + other.len(),
                &format!(
                    "unknown command `:{other}` (:ir :clif :time :schedule :search :tensors :help :quit)"
                ),
            )),
        }
    }

    /// A statement (or several, `;`-separated) of the language.
    fn statement(&mut self, line: &str) -> Outcome {
        let started = Instant::now();
        let formula = match Formula::new(line) {
            Ok(f) => f.with_outputs(OutputSelection::All),
            Err(e) => return Outcome::err(e.to_string()),
        };
        let formula = match &self.schedule {
            Some(s) => formula.with_schedules(vec![Some(s.clone()); 64]),
            None => formula,
        }
        .with_search(self.search);
        let shapes: Vec<(&str, &[usize])> = formula
            .input_names()
            .iter()
            .filter_map(|n| self.tensors.get_key_value(n))
            .map(|(n, a)| (n.as_str(), a.shape()))
            .collect();
        let kernel = match formula.kernel(&shapes) {
            Ok(k) => k,
            Err(e) => return Outcome::err(e.to_string()),
        };
        let compile = started.elapsed();
        let views: Vec<(&str, ndarray::ArrayViewD<f32>)> = formula
            .input_names()
            .iter()
            .filter_map(|n| self.tensors.get_key_value(n))
            .map(|(n, a)| (n.as_str(), a.view()))
            .collect();
        let started = Instant::now();
        let outputs = match kernel.run(&views) {
            Ok(o) => o,
            Err(e) => return Outcome::err(e.to_string()),
        };
        let run = started.elapsed();
        let mut out = Vec::new();
        for (name, _) in kernel.outputs() {
            let a = outputs[&name].clone();
            out.push(format!("{name}: {}", shape_text(&a)));
            if a.len() <= 64 {
                out.push(format_array(&a));
            }
            self.tensors.insert(name, a);
        }
        self.last = Some(Last {
            kernel,
            compile,
            run,
        });
        Outcome::ok(out.join("\n"))
    }

    /// `zeros(..)`, `ones(..)`, `rand(..)`, `load("..")`, or a literal `[[..]]`.
    fn builtin(&mut self, rhs: &str, line: &str, at: usize) -> Result<ArrayD<f32>, String> {
        let err = |msg: &str| caret(line, at, line.len(), msg);
        if rhs.starts_with('[') {
            return parse_literal(rhs)
                .map_err(|(pos, msg)| caret(line, at + pos, at + pos + 1, &msg));
        }
        let (func, args) = rhs
            .split_once('(')
            .and_then(|(f, a)| Some((f.trim(), a.strip_suffix(')')?)))
            .ok_or_else(|| err("expected a statement `X[...] = ...`, `zeros(...)`, `ones(...)`, `rand(...)`, `load(\"file.npy\")` or a literal array"))?;
        match func {
            "zeros" | "ones" | "rand" => {
                let dims = args
                    .split(',')
                    .map(|d| {
                        d.trim()
                            .parse::<usize>()
                            .map_err(|_| err(&format!("`{}` is not a dimension size", d.trim())))
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                // (Zero-length axes aside: ndarray bounds the others' product too.)
                let count = dims
                    .iter()
                    .try_fold(1u64, |n, &d| n.checked_mul(d.max(1) as u64));
                match count {
                    Some(n) if n <= einjit::check::MAX_ELEMENTS => {}
                    _ => return Err(err(&format!("shape {dims:?} is too large"))),
                }
                // Storage first, so that too little memory is an error.
                let n: usize = dims.iter().product();
                let mut values: Vec<f32> = Vec::new();
                values
                    .try_reserve_exact(n)
                    .map_err(|_| err(&format!("cannot allocate {} bytes", 4 * n as u64)))?;
                match func {
                    "zeros" => values.resize(n, 0.0),
                    "ones" => values.resize(n, 1.0),
                    _ => {
                        self.seed += 1;
                        let mut x = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                        values.extend((0..n).map(|_| {
                            x ^= x << 13;
                            x ^= x >> 7;
                            x ^= x << 17;
                            (x >> 40) as f32 / (1u64 << 24) as f32
                        }));
                    }
                }
                Ok(ArrayD::from_shape_vec(IxDyn(&dims), values).expect("n elements"))
            }
            "load" => {
                let path = args.trim().trim_matches('"');
                load_npy(path).map_err(|e| err(&e))
            }
            other => Err(err(&format!(
                "unknown function `{other}` (zeros, ones, rand, load)"
            ))),
        }
    }

    /// `save(X, "file.npy")`.
    fn save(&mut self, args: &str, line: &str) -> Outcome {
        let at = line.find("save(").unwrap_or(0);
        let parsed = args
            .strip_suffix(')')
            .and_then(|a| a.split_once(','))
            .map(|(n, p)| (n.trim(), p.trim().trim_matches('"')));
        let Some((name, path)) = parsed else {
            return Outcome::err(caret(
                line,
                at,
                line.len(),
                "expected save(X, \"file.npy\")",
            ));
        };
        let Some(a) = self.tensors.get(name) else {
            return Outcome::err(caret(line, at, line.len(), &format!("no tensor `{name}`")));
        };
        match ndarray_npy::write_npy(path, a) {
            Ok(()) => Outcome::ok(format!("saved {name} to {path}")),
            Err(e) => Outcome::err(caret(
                line,
                at,
                line.len(),
                &format!("cannot write {path}: {e}"),
            )),
        }
    }
}

fn load_npy(path: &str) -> Result<ArrayD<f32>, String> {
    match ndarray_npy::read_npy::<_, ArrayD<f32>>(path) {
        Ok(a) => Ok(a),
        Err(first) => match ndarray_npy::read_npy::<_, ArrayD<f64>>(path) {
            Ok(a) => Ok(a.mapv(|x| x as f32)),
            Err(_) => Err(format!("cannot load {path} as f32 or f64 .npy: {first}")),
        },
    }
}

/// A nested literal `[[1, 2], [3, 4]]` → array, or (byte position, message).
pub fn parse_literal(text: &str) -> Result<ArrayD<f32>, (usize, String)> {
    enum Node {
        Num(f32),
        List(Vec<Node>, usize),
    }
    fn skip(b: &[u8], mut i: usize) -> usize {
        while i < b.len() && b[i].is_ascii_whitespace() {
            i += 1;
        }
        i
    }
    /// Lists nest at most this deep (a tensor of rank 32 is already far
    /// beyond any use; the parser recurses once per level).
    const MAX_DEPTH: usize = 32;
    fn node(s: &str, i: usize, depth: usize) -> Result<(Node, usize), (usize, String)> {
        let b = s.as_bytes();
        let i = skip(b, i);
        if i < b.len() && b[i] == b'[' {
            if depth == MAX_DEPTH {
                return Err((i, format!("lists nested more than {MAX_DEPTH} deep")));
            }
            let mut items = Vec::new();
            let mut j = skip(b, i + 1);
            if j < b.len() && b[j] == b']' {
                return Err((j, "empty list".into()));
            }
            loop {
                let (n, k) = node(s, j, depth + 1)?;
                items.push(n);
                let k = skip(b, k);
                match b.get(k) {
                    Some(b',') => j = k + 1,
                    Some(b']') => return Ok((Node::List(items, i), k + 1)),
                    _ => return Err((k, "expected `,` or `]`".into())),
                }
            }
        }
        let end = s[i..]
            .find(|c: char| c == ',' || c == ']' || c.is_whitespace())
            .map_or(s.len(), |e| i + e);
        s[i..end]
            .parse::<f32>()
            .map(|v| (Node::Num(v), end))
            .map_err(|_| (i, format!("`{}` is not a number", &s[i..end])))
    }
    fn shape(n: &Node, out: &mut Vec<usize>) {
        if let Node::List(items, _) = n {
            out.push(items.len());
            shape(&items[0], out);
        }
    }
    fn flatten(
        n: &Node,
        depth: usize,
        shape: &[usize],
        out: &mut Vec<f32>,
    ) -> Result<(), (usize, String)> {
        match n {
            Node::Num(v) if depth == shape.len() => out.push(*v),
            Node::List(items, at) if depth < shape.len() && items.len() == shape[depth] => {
                for item in items {
                    flatten(item, depth + 1, shape, out)?;
                }
            }
            Node::List(_, at) => {
                return Err((
                    *at,
                    "ragged array: rows of different lengths or depths".into(),
                ))
            }
            Node::Num(_) => {
                return Err((0, "ragged array: a number where a list was expected".into()))
            }
        }
        Ok(())
    }
    let (root, end) = node(text, 0, 0)?;
    if skip(text.as_bytes(), end) != text.len() {
        return Err((end, "unexpected text after the array".into()));
    }
    let mut dims = Vec::new();
    shape(&root, &mut dims);
    let mut values = Vec::new();
    flatten(&root, 0, &dims, &mut values)?;
    Ok(ArrayD::from_shape_vec(IxDyn(&dims), values).expect("flattened to the shape"))
}

pub fn shape_text(a: &ArrayD<f32>) -> String {
    let dims: Vec<String> = a.shape().iter().map(|d| d.to_string()).collect();
    format!("f32[{}]", dims.join(", "))
}

/// One value: shortest readable decimal, at least one digit after the point.
pub fn format_value(x: f32) -> String {
    if x.is_nan() || x.is_infinite() {
        return format!("{x}");
    }
    let a = x.abs();
    if a != 0.0 && !(1e-4..1e7).contains(&a) {
        return format!("{x:.4e}");
    }
    let s = format!("{x:.6}");
    let s = s.trim_end_matches('0');
    if s.ends_with('.') {
        format!("{s}0")
    } else {
        s.to_string()
    }
}

/// Numpy-style nested lists, eliding the middle of long axes.
pub fn format_array(a: &ArrayD<f32>) -> String {
    const EDGE: usize = 3;
    let summarise = a.len() > 1000;
    fn rec(a: &ndarray::ArrayViewD<f32>, summarise: bool, indent: usize) -> String {
        if a.ndim() == 0 {
            return format_value(a[IxDyn(&[])]);
        }
        let n = a.shape()[0];
        let idx: Vec<Option<usize>> = if summarise && n > 2 * EDGE {
            (0..EDGE)
                .map(Some)
                .chain([None])
                .chain((n - EDGE..n).map(Some))
                .collect()
        } else {
            (0..n).map(Some).collect()
        };
        let parts: Vec<String> = idx
            .iter()
            .map(|i| match i {
                Some(i) => rec(&a.index_axis(ndarray::Axis(0), *i), summarise, indent + 1),
                None => "...".to_string(),
            })
            .collect();
        if a.ndim() == 1 {
            format!("[{}]", parts.join(", "))
        } else {
            let sep = format!(",\n{}", " ".repeat(indent + 1));
            format!("[{}]", parts.join(&sep))
        }
    }
    rec(&a.view(), summarise, 0)
}
