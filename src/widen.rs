//! Rows widened to whole vectors: a reduction whose output rows are a few
//! elements past a multiple of four (a convolution over 7×7 or 14×14
//! pixels) computes into a copy of its output with rows rounded up —
//! `O+wide[b, k, i, j] = ... where j in 0..8`, then `O[b, k, i, j] =
//! O+wide[b, k, i, j]` — so that every row is whole F32X4 vectors: a row of
//! 7 left three scalar columns beside one vector (3/7 of the work in scalar
//! code, 13 GFLOP/s), a row of 14 two. The extra columns read past the
//! input's edge, which the padded copy (`crate::pad`, the next pass) covers
//! with zeros; their results are never copied out. The same for a GEMM's
//! rows (its `B` padded), a grouped convolution's, and a convolution whose
//! bias and ReLU follow it (every step over the wide rows, only the last
//! copied out). Checked program → checked program.

use crate::affine::{Affine, Var};
use crate::check::{Combine, Init, Origin, Program, Statement, Tensor, TensorId};
use crate::contract::product_factors;
use crate::ir::LANES;

/// Rows this long or shorter are widened (longer ones keep a short scalar
/// tail beside many vectors).
const MAX_ROW: i64 = 16;

/// Rows this long or shorter are widened when the statement sums over
/// channels, or when they end three columns past whole vectors (see
/// [`widened_width`]): a row's partial register tile runs its scalar
/// columns lane by lane across every channel and tap.
const MAX_CHANNEL_ROW: i64 = 64;

/// Rows of the output each element of a widened contraction's padded
/// operand serves at least (see [`widened_width`]).
const MIN_CONTRACTION_REUSE: i64 = 32;

pub fn widen_rows(program: &Program) -> Program {
    let Some(wide) = widened_width(program) else {
        return program.clone();
    };
    let mut out = program.clone();
    // Every statement runs over the wide rows; the steps before the last
    // write temporaries, which simply take the wide shape.
    let last = out.statements.len() - 1;
    for st in &mut out.statements {
        let row = st.lhs.index.last().and_then(|e| e.as_var());
        st.vars[row.expect("a plain row variable").index()].hi = wide;
    }
    for st in &out.statements[..last] {
        let shape = &mut out.tensors[st.lhs.tensor.index()].shape;
        *shape.last_mut().expect("a row") = wide as usize;
    }
    let target = out.statements[last].lhs.tensor;
    let t = program.tensor(target);
    let mut shape = t.shape.clone();
    *shape.last_mut().expect("a row") = wide as usize;
    let id = TensorId(out.tensors.len() as u32);
    out.tensors.push(Tensor {
        name: format!("{}+wide", t.name),
        shape,
        origin: Origin::Statement(last),
    });
    out.tensors[target.index()].origin = Origin::Statement(last + 1);
    out.statements[last].lhs.tensor = id;
    // The copy back: every element of `O`, read in bounds.
    let index = (0..t.shape.len())
        .map(|d| Affine::var(Var(d as u32)))
        .collect();
    let span = out.statements[last].span;
    let copy = Statement::copy(target, &t.shape, "w", &|_| None, id, index, span);
    out.statements.push(copy);
    out
}

/// Whether `steps` carry `first`'s result elementwise to the program's one
/// output, each over the same rows: no reduction, a plain `=` setting every
/// element of a tensor shaped like `first`, reading the step before's
/// tensor at its own index and nothing else along the row (a bias `C[k]`,
/// not a residual `R[b, k, i, j]`, whose extra columns would fall outside
/// it), the tensors between them temporaries (`conv → + bias → relu`).
fn elementwise_to_output(program: &Program, first: &Statement, steps: &[Statement]) -> bool {
    let shape = &program.tensor(first.lhs.tensor).shape;
    let mut before = first.lhs.tensor;
    for st in steps {
        let plain: Option<Vec<Var>> = st.lhs.index.iter().map(|e| e.as_var()).collect();
        let Some(plain) = plain else {
            return false;
        };
        let spans = plain.iter().zip(shape).all(|(v, &len)| {
            let x = &st.vars[v.index()];
            (x.lo, x.hi) == (0, len as i64)
        });
        let row = *plain.last().expect("a row");
        let reads_ok = st.rhs.reads().iter().all(|a| match a.tensor == before {
            true => a.index == st.lhs.index,
            false => !a.uses(row),
        });
        if st.vars.iter().any(|v| v.reduced)
            || st.init != Init::Identity
            || st.combine != Combine::Sum
            || !st.epilogues.is_empty()
            || &program.tensor(st.lhs.tensor).shape != shape
            || plain.len() != shape.len()
            || !spans
            || !reads_ok
            || program.outputs().contains(&before)
        {
            return false;
        }
        before = st.lhs.tensor;
    }
    program.outputs() == vec![before]
}

/// The rounded-up row of the program's first statement, where it is
/// widened: a one-statement program (or one whose later statements carry
/// its result elementwise to the output, see [`elementwise_to_output`]), a
/// sum of products (whose reads past an edge the
/// padded copy covers with zeros) with a reduction, setting every element
/// of the tensor it returns, the last index a plain variable spanning a
/// row of 5–16 elements (up to 64 for a sum over channels or a row three
/// past a multiple of four; any length for a contraction) that is not a
/// multiple of four and rounds up by at most a third, read through a
/// window of stride 1 or 2.
fn widened_width(program: &Program) -> Option<i64> {
    // One statement, as `crate::collapse` takes them, or one whose result
    // goes through elementwise steps to the output (a bias and a ReLU, see
    // `elementwise_to_output`): they run over the wide rows too, fused into
    // its nest, and only the last result is copied out. (In other pipelines
    // the steps after it fuse into its nest by slices, which a copy in
    // between would change.)
    let [st, steps @ ..] = &program.statements[..] else {
        return None;
    };
    let (mut reads, mut constant) = (Vec::new(), 1.0);
    if st.combine != Combine::Sum
        || st.init != Init::Identity
        || !st.vars.iter().any(|v| v.reduced)
        || product_factors(&st.rhs, &mut reads, &mut constant).is_none()
        || !st.epilogues.is_empty()
    {
        return None;
    }
    let target = st.lhs.tensor;
    let to_output = match steps {
        [] => program.outputs().contains(&target),
        _ => elementwise_to_output(program, st, steps),
    };
    if !to_output {
        return None;
    }
    let shape = &program.tensor(target).shape;
    // Every element set: each index a variable spanning its dimension
    // whole, or phases tiling it (a grouped convolution's `8*g + k`).
    let whole = st.lhs.index.iter().zip(shape).all(|(e, &len)| {
        crate::lower::stepping_index(st, e).is_some_and(|(_, span)| span == Some(len as i64))
    });
    // The output's variables.
    let outer: Vec<Var> = (0..st.vars.len() as u32)
        .map(Var)
        .filter(|v| !st.vars[v.index()].reduced)
        .collect();
    // A window along the row (`j + ry`, or `2*j + ry`: `crate::stride`
    // splits the widened statement's read by residue as it would the
    // original's): without one the row variable indexes like a plain
    // dimension, which `crate::collapse` may merge with the one before it
    // into long rows (a 1x1 convolution's `ij`). (Stride 2, 16 → 24
    // channels, 19 columns: 31.5 → 54.3 GFLOP/s on one thread; depthwise
    // stride 2 over 28²: +7–18%.)
    let j = st.lhs.index.last()?.as_var()?;
    let reads = st.rhs.reads();
    let stride_at_most_2 = |e: &Affine| (0..=2).contains(&e.coeff(j));
    let windowed = |e: &Affine| e.coeff(j) >= 1 && e.vars().count() > 1;
    // Or no window, but a contraction whose row no pass merges: some read
    // has the row last after another index than the output's row before it
    // (GEMM's `B[k, j]`), each such read used by at least
    // `MIN_CONTRACTION_REUSE` rows, so that its padded copy costs little
    // beside the work (not a transposed GEMV's matrix, read once).
    let n = st.lhs.index.len();
    let before = n.checked_sub(2).and_then(|d| st.lhs.index[d].as_var());
    let row_last = |a: &&crate::check::Access| match a.index.as_slice() {
        [.., x, last] => last.as_var() == Some(j) && x.as_var() != before,
        [last] => last.as_var() == Some(j),
        [] => false,
    };
    let reuse = |a: &crate::check::Access| -> i64 {
        outer
            .iter()
            .filter(|&&v| !a.uses(v))
            .map(|v| st.vars[v.index()].hi - st.vars[v.index()].lo)
            .product()
    };
    let contraction = reads.iter().any(row_last)
        && reads
            .iter()
            .filter(|a| a.uses(j))
            .all(|a| reuse(a) >= MIN_CONTRACTION_REUSE);
    let window = reads.iter().any(|a| a.index.iter().any(windowed));
    if !reads.iter().all(|a| a.index.iter().all(stride_at_most_2)) || !(window || contraction) {
        return None;
    }
    // A reduction over channels: a reduced variable that every read indexes
    // alone (`c` of `I[b,c,i+rx,j+ry]` and `W[k,c,rx,ry]`), as a dense
    // convolution has and a depthwise one does not. Widened up to
    // `MAX_CHANNEL_ROW` (alternating runs, one / two threads: 3x3 over 64
    // channels of 27² 35.9 → 56.0 / 67.8 → 100.7 GFLOP/s, 32 of 19² +72% /
    // +66%, 16 of 30² +56%, 5x5 over 48 of 23² +62%, 17 → 23 channels of
    // 31×29 44 → 50, 32 of 35² +46% / +32%, 64 of 37² and 45² +21–28%, 32
    // of 61² +14% / +2%; 128 of 17² unchanged).
    let channels = st.vars.iter().enumerate().any(|(x, var)| {
        let v = Var(x as u32);
        var.reduced && st.read_alone(v) && reads.iter().all(|a| a.uses(v))
    });
    let row = *shape.last()? as i64;
    let lanes = i64::from(LANES);
    let wide = (row + lanes - 1) / lanes * lanes;
    // Past `MAX_ROW`: a sum over channels, but not a row one column past
    // whole tiles of two vectors (57 = 7×8 + 1: widened, its one scalar
    // column becomes a partial vector tile of three wasted lanes, −5%); any
    // window's row three columns past whole vectors, whose three scalar
    // columns one vector replaces (a depthwise 3x3 over 19², 23², 27², 31²:
    // +17–29% on one thread; over 30², two columns past, the same either
    // way; over 25², one past, 13% slower).
    let longer = (channels && row % (2 * lanes) != 1) || row % lanes == 3;
    let longest = match (window, longer) {
        (_, false) => MAX_ROW,
        (true, true) => MAX_CHANNEL_ROW,
        (false, true) => i64::MAX,
    };
    let worth = row % lanes != 0 && row > lanes && row <= longest && 3 * (wide - row) <= row;
    (whole && worth).then_some(wide)
}
