//! The automatic schedule: a register-blocked, vectorized nest chosen from
//! the statement's access pattern.
//!
//! - The vector dimension `v` is the output's last index when it is a plain
//!   output variable that every read uses only in its last index, stepping
//!   forward, or not at all: those reads become 4-lane loads (gathers when
//!   strided, as in a stride-2 convolution or pooling), the rest broadcasts.
//! - The register-row dimension `u` is the output variable whose tile needs
//!   the fewest loads per FMA: a read that does not use it is loaded once
//!   for all rows (GEMM's `B[k,j]` across rows `i`, a convolution's input
//!   across output channels `k`).
//! - The tile is 6 rows × 8 lanes ([`TILE`]: twelve F32X4 accumulators,
//!   which with two B vectors and a broadcast fit x86's 16 registers),
//!   unrolled and vectorized inside all reduction loops, accumulating in
//!   registers across them; boundaries (padding, partial tiles) are peeled;
//!   a short innermost reduction loop is unrolled; operands read across
//!   rows are packed.
//! - Around a window over few channels (a 3x3 convolution over 3) the
//!   tile is one vector wide, at most 8 rows.
//! - The outermost output dimension with more than one iteration is marked
//!   parallel.
//! - A producer → consumer pair is scheduled so their nests can fuse.
//! - [`auto_candidates`] lists alternatives for an empirical search.
//!
//! When no output dimension vectorizes, a contiguous reduction is (GEMV);
//! a statement with no reduction that reads across the output's rows (a
//! transpose) is cache-tiled; the rest keep the naive nest.

use super::{Directive, Schedule, Spec};
use crate::affine::Var;
use crate::check::{Program, Statement};
use crate::ir::{LoopKind, LANES};

/// The register tile and reduction order of a candidate schedule.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Tile {
    /// Accumulator rows.
    mr: i64,
    /// Lanes per row (a multiple of the vector width).
    nr: i64,
    order: ReductionOrder,
}

/// The order of a statement's reduction loops.
#[derive(Clone, Copy, Debug, PartialEq)]
enum ReductionOrder {
    /// As written.
    Written,
    /// The longest innermost (a convolution's channels inside its taps).
    LongestInner,
    /// Longest innermost where two or more reduction loops have at least 3
    /// trips: a window of 3 or more taps beside its channels (3x3 and 3x3x3
    /// convolutions: +11-14%; a stride-2 3x3 window, its columns as residue
    /// and step: +6%, measured; a 1D window of 3 taps over 64 channels:
    /// +16-18% best times on Zen 5, where the channel loop, GEMM's inner
    /// loop, shares broadcasts and the taps unrolled around the tile could
    /// not), else as written (a transposed convolution's 2-tap phases ran
    /// 37% slower in 2D with their channels innermost; their taps unrolled
    /// around the tile win).
    Chosen,
}

/// The heuristic's choice: six rows of two F32X4 vectors, twelve
/// accumulators (with two B vectors and a broadcast they fill x86's 16
/// vector registers); reductions ordered by [`ReductionOrder::Chosen`].
const TILE: Tile = Tile {
    mr: 6,
    nr: 8,
    order: ReductionOrder::Chosen,
};

/// Alternatives an empirical search times against [`TILE`]: the longest
/// reduction innermost (a convolution's channels inside its kernel taps),
/// the reductions as written, and a 4×12 tile (also twelve accumulators,
/// fewer broadcasts per FMA).
const ALTERNATIVES: [Tile; 3] = [
    Tile {
        order: ReductionOrder::LongestInner,
        ..TILE
    },
    Tile {
        order: ReductionOrder::Written,
        ..TILE
    },
    Tile {
        mr: 4,
        nr: 12,
        ..TILE
    },
];
/// Rows of the one-vector register tile around a window over few channels
/// (two or more reduction loops, its channels — a loop alone in every
/// index it appears in — at most [`MAX_UNROLLED_REDUCTION`] trips: eight
/// accumulators, not the 6×8 tile's twelve). Around such a window the 6×8
/// tile ran at 56–70% of peak, 8×4 at 75–86%: 3x3 convolutions over 3 and
/// 4 channels (24–64 output channels; 12×4 ran at 71%), 1D ones over 2–4
/// channels, the 7x7 stride-2 stem over 3 channels (39–40 → 48–51 GFLOP/s,
/// compile 2.6 → 1.2 ms), 7x7 stride 2 over 4 (40.8 → 54); 5x5 over 3 as
/// fast either way. With 6–8 channels 6×8 stays 1–10% ahead (3x3 and 5x5
/// over 6, 1D over 8), and so it does for GEMM, one loop (K = 9: 93%
/// against 85%). Rows that are not whole vectors (a depthwise stride-2
/// window 14 wide) end in a partial vector either way: 12.2 → 16.2 GFLOP/s,
/// compile 2.35 → 1.35 ms.
const SHORT_TILE_ROWS: i64 = 8;

/// The tile for a window whose 6×8 tile would broadcast from scattered
/// streams that too few tiles read to pack (see [`scattered_broadcasts`]):
/// 8 rows of one vector, the channels outside the taps, so that a step of
/// the channel loop reads one channel's weights (9 adjacent floats per
/// row) for all its taps. A 3x3 convolution over 512 channels of 7×7
/// (the search's pick there): 47.8 → 50.3 GFLOP/s on one thread, 81 → 87
/// on two (four alternating runs), compile 1.0 → 0.85 ms.
const ONE_VECTOR_TILE: Tile = Tile {
    mr: SHORT_TILE_ROWS,
    nr: LANES as i64,
    ..TILE
};

/// Trips from which a reduction loop beside a single other (a 1D window's
/// taps) goes innermost in the chosen order: a transposed 1D convolution's
/// phases (64 channels, 2 taps each) ran 50 → 55 GFLOP/s on one thread,
/// 87–97 → 85–106 on two, channels innermost (Zen 5, runs alternating).
const LONG_CHANNEL_LOOP: i64 = 16;

/// Trips of an innermost reduction loop worth unrolling around the tile.
const MAX_UNROLLED_REDUCTION: i64 = 4;

/// Lanes of a row of a statement with no reduction unrolled whole.
const MAX_UNROLLED_ROW: i64 = 32;

/// Points of a two-loop reduction window unrolled whole.
const MAX_UNROLLED_WINDOW: i64 = 4;

/// A schedule for `st` chosen from its shapes and access strides.
/// Never an illegal schedule: a candidate the checks refuse loses its
/// `parallel`, then falls back to the naive nest.
pub fn auto_schedule(program: &Program, st: &Statement) -> Schedule {
    auto_schedule_keeping(program, st, &[], TILE)
}

/// Candidate schedules for `st` for an empirical search: the automatic one
/// first, then each distinct alternative tile or reduction order.
///
/// Where the vector tile packs a transposed operand (`A·Bᵀ`, a bilinear
/// form's second step) and every read also runs contiguously along a
/// reduction, vectorizing that reduction instead (no copy) is a candidate
/// too (and the default where the copy's panel outgrows L1, see
/// `long_transposed_panel`).
pub fn auto_candidates(program: &Program, st: &Statement) -> Vec<Schedule> {
    let mut out = vec![auto_schedule(program, st)];
    for tile in ALTERNATIVES {
        let s = auto_schedule_keeping(program, st, &[], tile);
        if !out.contains(&s) {
            out.push(s);
        }
    }
    if let Some(s) = reduction_candidate(st) {
        if !out.contains(&s) && super::plan(program, st, &s).is_ok() {
            out.push(s);
        }
    }
    out
}

/// The automatic schedule with the variables `keep` left whole (no register
/// tile rows over them), so they stay outer loops of their own.
fn auto_schedule_keeping(
    program: &Program,
    st: &Statement,
    keep: &[usize],
    tile: Tile,
) -> Schedule {
    if keep.is_empty() {
        if let Some(s) =
            blocked_gemm(program, st, tile).filter(|s| super::plan(program, st, s).is_ok())
        {
            return s;
        }
    }
    let mut schedule = candidate(st, keep, tile);
    if let Ok(spec) = super::plan(program, st, &schedule) {
        let mut taken = packs(program, st, &spec);
        // Scattered broadcasts read by too few tiles to pack: one-vector
        // tiles instead (see `ONE_VECTOR_TILE`), with their own packs.
        if tile == TILE && taken.starved {
            let narrow = candidate(st, keep, ONE_VECTOR_TILE);
            if let Ok(spec) = super::plan(program, st, &narrow) {
                taken = packs(program, st, &spec);
                schedule = narrow;
            }
        }
        schedule.0.extend(taken.directives);
    }
    let without_parallel = Schedule(
        schedule
            .0
            .iter()
            .filter(|d| !matches!(d, Directive::Parallel(_)))
            .cloned()
            .collect(),
    );
    [schedule, without_parallel]
        .into_iter()
        .find(|s| super::plan(program, st, s).is_ok())
        .unwrap_or_default()
}

fn candidate(st: &Statement, keep: &[usize], tile: Tile) -> Schedule {
    let (mr_max, nr_max) = (tile.mr, tile.nr);
    let extent = |v: usize| st.vars[v].hi - st.vars[v].lo;
    let Some(v) = vector_dim(st) else {
        return reduction_candidate(st)
            .or_else(|| transposing_tiles(st))
            .unwrap_or_default();
    };
    if keep.is_empty() {
        if let Some(s) = row_sweep(st, v) {
            return s;
        }
    }
    if long_transposed_panel(st, v, tile.nr) {
        if let Some(s) = reduction_candidate(st) {
            return s;
        }
    }
    if extent(v) < i64::from(LANES) {
        return Schedule::default();
    }
    let name = |v: usize| st.vars[v].name.clone();
    let reads = st.rhs.reads();
    // Row dimension: the output variable whose register tile needs the
    // fewest loads per FMA — a read independent of it is loaded once for
    // all rows (GEMM's B, a convolution's input across output channels, a
    // depthwise kernel's weight across rows); none if no row saves a load.
    let uses = |a: &crate::check::Access, x: usize| a.uses(Var(x as u32));
    // Loads per FMA (×1000) of a tile of `nr` lanes whose rows run over
    // the given dimensions, `(dimension, rows)` each: a read is loaded once
    // per row of each dimension it uses, once per vector if it uses `v`.
    let lanes = i64::from(LANES);
    let loads_per_fma_over = |rows: &[(usize, i64)], nr: i64| {
        let loads: i64 = reads
            .iter()
            .map(|a| {
                let vectors = if uses(a, v) { nr / lanes } else { 1 };
                let copies: i64 = rows
                    .iter()
                    .filter(|&&(d, _)| uses(a, d))
                    .map(|&(_, r)| r)
                    .product();
                vectors * copies
            })
            .sum();
        let tile: i64 = rows.iter().map(|&(_, r)| r).product();
        (loads * 1000) / (tile * nr / lanes)
    };
    // ... with rows over `u` (as many as the tile has, at most).
    let loads_per_fma_with = |u: Option<usize>, nr: i64| {
        let rows: Vec<(usize, i64)> = u.map(|u| (u, extent(u).min(mr_max))).into_iter().collect();
        loads_per_fma_over(&rows, nr)
    };
    let loads_per_fma = |u: Option<usize>| loads_per_fma_with(u, nr_max);
    let u = (0..st.vars.len())
        .filter(|&u| u != v && !st.vars[u].reduced && extent(u) > 1 && !keep.contains(&u))
        .filter(|&u| loads_per_fma(Some(u)) < loads_per_fma(None))
        .min_by_key(|&u| {
            (
                loads_per_fma(Some(u)),
                std::cmp::Reverse(extent(u).min(mr_max)),
                u,
            )
        });

    let mut d = Vec::new();
    // Lanes: two vectors per row, or one when that leaves no partial tile
    // where two would leave over a tenth of the work, and costs at most an
    // eighth more loads per FMA (depthwise on 28×28: each row loads its own
    // input vectors either way; 7×4 tiles 34 GFLOP/s, 4×8 as fast, with
    // a partial tile). A tile
    // whose rows share the vector loads (a 28-wide 1x1 or stride-2
    // convolution) keeps two: with one its loads per FMA nearly double.
    let one_vector = extent(v) < nr_max
        || (10 * (extent(v) % nr_max) > extent(v)
            && extent(v) % lanes == 0
            && 8 * loads_per_fma_with(u, lanes) <= 9 * loads_per_fma_with(u, nr_max));
    // A deep window (three or more reduction loops around the tile) whose
    // two-vector tiles would be partial in both dimensions has four copies
    // of its kernel to compile; one-vector tiles of whole rows have one (a
    // stride-2 3x3 convolution, 28 wide with 128 channels: 8x4 tiles, 43%
    // fewer instructions to compile on the longer compile thread, and as
    // fast; a 1x1 convolution of that shape ran 11% slower so, and it
    // compiles fast either way).
    let deep = st
        .vars
        .iter()
        .filter(|x| x.reduced && x.hi - x.lo > 1)
        .count()
        >= 3;
    let whole_vectors = deep && extent(v) % nr_max != 0 && extent(v) % lanes == 0;
    let one_vector = one_vector
        || u.is_some_and(|u| {
            whole_vectors
                && extent(u) % fitted(extent(u), mr_max, 4) != 0
                && extent(u) % whole_rows(extent(u), mr_max * nr_max / lanes) == 0
        });
    // Such a window whose rows are too few to fill a one-vector tile (the
    // 32-group convolution's four output channels per group) takes a
    // second row dimension, whole too, with the fewest loads per FMA (its
    // output rows: 4 channels x 2 rows x 4 lanes): no partial tile, one
    // copy of the kernel (-26% instructions to compile) and 6-7% faster than
    // 4x8 tiles with a partial one (measured in one process, interleaved).
    // As few rows as fill two thirds of the registers' accumulators: 4x3
    // tiles ran 27% slower than 4x2 (the input rows they share spill).
    let second = u
        .filter(|&u| whole_vectors && extent(u) < least_rows(mr_max * nr_max / lanes))
        .and_then(|u| {
            let most = mr_max * nr_max / lanes;
            let loads = |w: usize, f: i64| loads_per_fma_over(&[(u, extent(u)), (w, f)], lanes);
            (0..st.vars.len())
                .filter(|&w| w != v && w != u && !st.vars[w].reduced && !keep.contains(&w))
                .filter_map(|w| {
                    let f = (least_rows(most)..=most)
                        .filter(|rows| rows % extent(u) == 0)
                        .map(|rows| rows / extent(u))
                        .find(|&f| f > 1 && extent(w) % f == 0)?;
                    Some((w, f))
                })
                .min_by_key(|&(w, f)| (loads(w, f), w))
        });
    // A window over few channels (a 3x3 convolution over 3 or 4 channels)
    // around a tile of rows: one-vector rows, at most `SHORT_TILE_ROWS`
    // of them (see there).
    // Its channels: a reduction loop that every index using it is alone in
    // (`c` of `I[b,c,i+rx,j+ry]` and `W[k,c,rx,ry]`, not the taps `rx`).
    let loops: Vec<usize> = (0..st.vars.len())
        .filter(|&x| st.vars[x].reduced && extent(x) > 1)
        .collect();
    let channel = |x: usize| st.read_alone(Var(x as u32));
    let short = second.is_none()
        && u.is_some_and(|u| extent(u) >= least_rows(SHORT_TILE_ROWS))
        && loops.len() >= 2
        && loops
            .iter()
            .all(|&x| !channel(x) || extent(x) <= MAX_UNROLLED_REDUCTION);
    let one_vector = one_vector || second.is_some() || short;
    let (vn, nr) = (name(v), if one_vector { lanes } else { nr_max });
    d.push(Directive::Split {
        var: vn.clone(),
        factor: nr as u32,
    });
    let (vo, vi) = (format!("{vn}o"), format!("{vn}i"));
    let mut inner = Vec::new();
    let vector = if nr > i64::from(LANES) {
        d.push(Directive::Split {
            var: vi.clone(),
            factor: LANES,
        });
        inner.push(format!("{vi}o"));
        format!("{vi}i")
    } else {
        vi.clone()
    };
    let mut outer: Vec<String> = Vec::new();
    // The loops over register tiles of rows, with their trips.
    let mut tile_outer: Vec<(String, i64)> = Vec::new();
    // Rows: as many accumulators as the full tile has (one vector per row:
    // up to twice the rows), fitted to the dimension. A 28×28 depthwise
    // convolution gets 7×4 tiles: seven independent accumulators hide the
    // FMA latency that limits four (31 -> 34 GFLOP/s, measured).
    let mr = u.map_or(1, |u| match one_vector {
        true if short => whole_rows(extent(u), SHORT_TILE_ROWS),
        true => whole_rows(extent(u), mr_max * nr_max / nr),
        false => fitted(extent(u), mr_max, 4),
    });
    if let Some(u) = u {
        let un = name(u);
        if mr > 1 && extent(u) > mr {
            d.push(Directive::Split {
                var: un.clone(),
                factor: mr as u32,
            });
            tile_outer.push((format!("{un}o"), (extent(u) + mr - 1) / mr));
            inner.insert(0, format!("{un}i"));
        } else {
            inner.insert(0, un);
        }
    }
    if let Some((w, f)) = second {
        let wn = name(w);
        d.push(Directive::Split {
            var: wn.clone(),
            factor: f as u32,
        });
        tile_outer.push((format!("{wn}o"), extent(w) / f));
        inner.insert(0, format!("{wn}i"));
    }
    // The other output loops, those to keep whole first (in their order).
    let others = keep.iter().copied().chain(0..st.vars.len());
    for k in others {
        let var = &st.vars[k];
        let row = Some(k) == u || second.is_some_and(|(w, _)| w == k);
        if !var.reduced && k != v && !row && !outer.contains(&var.name) {
            outer.push(var.name.clone());
        }
    }
    // A copy split by residue (`T[.., r, q] = I[.., 2*q - r]`): its residue
    // loop goes inside the vectors' loop, unrolled, so that the residues of
    // one stretch of a row are read from the same pair of vectors, loaded
    // once (see the codegen's `Pairing`; the depthwise stride-2 copy of a
    // row: 14 loads, not 28).
    if st.vars.iter().all(|x| !x.reduced) {
        let residue = |w: usize| {
            let (vw, vv) = (Var(w as u32), Var(v as u32));
            reads.iter().any(|a| {
                a.index.last().is_some_and(|e| {
                    let step = e.coeff(vv);
                    step >= 2 && e.coeff(vw) != 0 && e.coeff(vw).abs() * (extent(w) - 1) < step
                })
            })
        };
        if let Some(k) = outer.iter().position(|n| {
            st.vars
                .iter()
                .position(|x| &x.name == n)
                .is_some_and(|w| w != v && extent(w) > 1 && residue(w))
        }) {
            inner.insert(0, outer.remove(k));
        }
    }
    let mut reduced: Vec<&crate::check::IndexVar> = st.vars.iter().filter(|x| x.reduced).collect();
    let trips = |x: &crate::check::IndexVar| x.hi - x.lo;
    // A window dimension split into coupled loops (a stride-2 window's
    // residue and step) counts as one, with all its points.
    let group = |x: &crate::check::IndexVar| -> i64 {
        let partners = reduced
            .iter()
            .filter(|y| y.name != x.name && coupled(st, &x.name, &y.name));
        trips(x) * partners.map(|y| trips(y)).product::<i64>()
    };
    let groups: Vec<i64> = reduced.iter().map(|x| group(x)).collect();
    let longest_inner = match tile.order {
        ReductionOrder::Written => false,
        ReductionOrder::LongestInner => true,
        ReductionOrder::Chosen => {
            let longest = reduced.iter().map(|x| trips(x)).max().unwrap_or(0);
            let leads = |k: usize| {
                !reduced[..k]
                    .iter()
                    .any(|y| coupled(st, &y.name, &reduced[k].name))
            };
            let taps = (0..reduced.len())
                .filter(|&k| leads(k) && groups[k] >= 3)
                .count();
            // Or a long channel loop beside one short window loop (a 1D
            // transposed convolution's phase: 64 channels, 2 taps), which
            // runs as GEMM's loop with the channels innermost.
            let channels_and_taps = loops.len() == 2 && longest >= LONG_CHANNEL_LOOP;
            // Not around a one-vector tile, whose channels stay outside the
            // taps: its 8 accumulators share one input vector per tap, and
            // with the channels innermost each step loads a new row of the
            // input for 8 FMAs. Measured in alternating runs: the suite's
            // stride-2 3x3 50.1–50.9 → 53.1–54.2 GFLOP/s on one thread; a
            // 5x5 over 16 channels, 28² 38.2 → 53.0; 3x3 over 64 channels,
            // batch 8, 28² +2–3%; the 32-group conv and 3x3 / 1D over 4
            // channels within ±2%. (6×8 tiles keep the channels innermost:
            // a 5x5 over 32 channels, 14², ran 32.5 with them, 25 without.)
            (taps >= 2 || channels_and_taps)
                && reduced.iter().filter(|x| trips(x) == longest).count() == 1
                && nr > lanes
        }
    };
    if longest_inner {
        // (Loops of one trip go last: they vanish, and must not be the one
        // the tile accumulates across. Coupled loops stay together.)
        let mut keyed: Vec<(i64, &crate::check::IndexVar)> =
            groups.into_iter().zip(reduced).collect();
        keyed.sort_by_key(|&(g, x)| if trips(x) <= 1 { i64::MAX } else { g });
        reduced = keyed.into_iter().map(|(_, x)| x).collect();
    }
    // A reduction loop stepping through the same input dimension as the
    // tile's rows (a depthwise window's `rx` in `I[.., i + rx, ..]`) goes
    // innermost, to be unrolled with the rows: row `ii` at tap `rx` reads
    // what row `ii + 1` reads at `rx - 1`, so the tile loads each input row
    // once per step of the other taps (7x4 depthwise tiles: 34 -> 41
    // GFLOP/s, measured; the 32-group convolution's rows over its output
    // rows as well: 5% faster with `rx` innermost).
    let rows: Vec<usize> = u.into_iter().chain(second.map(|(w, _)| w)).collect();
    if !rows.is_empty() {
        let var_of = |x: &crate::check::IndexVar| {
            Var(st
                .vars
                .iter()
                .position(|y| y.name == x.name)
                .expect("a variable") as u32)
        };
        let shares_rows = |x: &crate::check::IndexVar| {
            reads.iter().any(|a| {
                a.index.iter().any(|e| {
                    rows.iter().any(|&r| {
                        let c = e.coeff(Var(r as u32));
                        c != 0 && c == e.coeff(var_of(x))
                    })
                })
            })
        };
        if let Some(k) = reduced.iter().rposition(|x| trips(x) > 1 && shares_rows(x)) {
            let x = reduced.remove(k);
            reduced.push(x);
        }
    }
    let mut reduced: Vec<String> = reduced.into_iter().map(|x| x.name.clone()).collect();
    let var_extent = |name: &String| {
        extent(
            st.vars
                .iter()
                .position(|x| &x.name == name)
                .expect("a variable"),
        )
    };
    // A strided window's residue loop of two trips left rolled outside its
    // step, which is unrolled (`ryq` of a 7-tap window, its `rya` 4 taps),
    // would be the innermost loop around the tile, a back edge every two
    // steps: it goes outside the loop before it (the stride-2 7x7 stem over
    // 3 channels, `c ryq rx rya` instead of `c rx ryq rya`: 34.5 → 38.5
    // GFLOP/s on one thread, 71 → 79 on two, alternating runs).
    // (Not when the loop before is the outermost, which the tile
    // accumulates across: a 5x5 stride-2 depthwise window, `rx ryq rya`,
    // ran 23 → 13.7 GFLOP/s as `ryq rx rya`.)
    if let [_, .., before, residue, step] = reduced.as_slice() {
        if var_extent(step) <= MAX_UNROLLED_REDUCTION
            && coupled(st, residue, step)
            && var_extent(residue) * var_extent(step) > MAX_UNROLLED_WINDOW
            && var_extent(residue) <= 2
            && var_extent(before) > var_extent(residue)
            && !coupled(st, before, step)
        {
            let n = reduced.len();
            reduced.swap(n - 3, n - 2);
        }
    }
    let mut order = outer.clone();
    order.extend(tile_outer.iter().map(|(n, _)| n.clone()));
    order.push(vo.clone());
    order.extend(reduced.iter().cloned());
    order.extend(inner.iter().cloned());
    order.push(vector.clone());
    d.push(Directive::Reorder(order));
    for l in &inner {
        d.push(Directive::Unroll(l.clone()));
    }
    // A short innermost reduction loop (a kernel's row: `ry` of a 3x3) is
    // unrolled too: its loop overhead is as large as its body. (Unrolling
    // the next one as well spills: 2x2 and 3x3 convolutions got slower.)
    // A whole window of at most four points (2x2 pooling) is unrolled, the
    // tile still held in registers across it (9.2 against 8.5 GFLOP/s; a
    // 3x3 depthwise window got slower).
    // (A loop of one trip does not count: a stride-2 convolution's odd
    // residue has one tap per row, `ry1 in 0..1`, and unrolls `rx`.)
    if let [_, inner @ ..] = reduced.as_slice() {
        if let Some(last) = inner.iter().rev().find(|n| var_extent(n) > 1) {
            if var_extent(last) <= MAX_UNROLLED_REDUCTION {
                d.push(Directive::Unroll(last.clone()));
                // A reduction loop indexing one dimension together with it
                // (a strided window's residue and step, `W[.., ryq +
                // 2*rya]`) bounds its range: unrolled too, so that the
                // bounds become constants and the tile sums every tap.
                for outer in inner.iter().filter(|n| *n != last) {
                    if coupled(st, outer, last)
                        && var_extent(outer) * var_extent(last) <= MAX_UNROLLED_WINDOW
                    {
                        d.push(Directive::Unroll(outer.clone()));
                    }
                }
            }
        }
    }
    if let [first, last] = reduced.as_slice() {
        if var_extent(first) * var_extent(last) <= MAX_UNROLLED_WINDOW {
            d.push(Directive::Unroll(first.clone()));
        }
    }
    d.push(Directive::Vectorize(vector));
    if let Some(r) = reduced.first() {
        d.push(Directive::Accumulate(r.clone()));
    }
    // Parallel: the outermost output loop with more than one iteration.
    let trips = |n: &String| -> i64 {
        match st.vars.iter().position(|x| &x.name == n) {
            Some(k) => extent(k),
            None => tile_outer
                .iter()
                .find(|(t, _)| t == n)
                .map_or((extent(v) + nr - 1) / nr, |&(_, trips)| trips),
        }
    };
    // A statement with no reduction (a padded copy) whose rows are a few
    // vectors long runs each row as straight-line code: a loop of one vector
    // copy per iteration spent as much on its counter and branches as on
    // the copy (depthwise 3x3 on 28x28: 49 -> 51.7 GFLOP/s, its copy of a
    // row 7 vectors). Not when the row's tiles are the only loop of more
    // than one trip: that loop is the one to run in parallel.
    let tiles_per_row = (extent(v) + nr - 1) / nr;
    if reduced.is_empty()
        && tiles_per_row * nr <= MAX_UNROLLED_ROW
        && outer.iter().any(|n| trips(n) > 1)
    {
        d.push(Directive::Unroll(vo.clone()));
    }
    if let Some(p) = outer
        .iter()
        .chain(tile_outer.iter().map(|(n, _)| n))
        .chain([&vo])
        .find(|n| trips(n) > 1)
    {
        d.push(Directive::Parallel(p.clone()));
    }
    Schedule(d)
}

/// Reduction points per cache block of a blocked GEMM ([`blocked_gemm`]).
const KC: i64 = 256;
/// Columns per cache block of a blocked GEMM.
const NC: i64 = 512;
/// Row blocks of a blocked GEMM: one per worker thread of this machine
/// kind (two cores).
const ROW_BLOCKS: i64 = 2;
/// Bytes of the packed operand from which a GEMM is cache-blocked.
const BLOCKED_FROM: i64 = 512 * 1024;

/// A GEMM (`O[i,j] = A[i,k] * B[k,j]`, either operand possibly
/// transposed) or a contraction shaped like one — one reduction, two reads
/// indexed by plain variables, the one read along the vector index `j` (`B`)
/// packed, other output loops on `A`'s side, `B`'s side or both (a batch)
/// — whose packed `B` is at least [`BLOCKED_FROM`] bytes per batch,
/// cache-blocked as BLAS libraries do: `ROW_BLOCKS` blocks of `A`'s rows,
/// one per thread (the parallel loop, inside the batch loops), then blocks
/// of [`NC`] columns and [`KC`] reduction points, so that each `KC × NC`
/// block of the packed `B` (512 KB) stays in L2 while every row tile of the
/// block streams through it, and each tile's `KC` rows of `A` stay in L1.
/// The tile's accumulators are loaded from and stored to `O` once per `KC`
/// block; fused epilogues (bias, activation, a hoisted factor) run after
/// the last. Measured on Zen 5 (bench --interleave, 1 / 2 threads,
/// against the unblocked schedule): GEMM 2048² 24 → 61 / 61 → 120 GFLOP/s
/// (its 16 MB `B` was streamed from memory for every row tile), 1024² 57 →
/// 61 / 107 → 95–121, 512² 60 → 62 / 108 → 112–119, 256×4096×256 55 → 59
/// / 80 → 116; batched, 8 × 512³ 40 → 57 / 83 → 112, 2 × 1024³ 53 → 58 /
/// 86 → 117.
fn blocked_gemm(program: &Program, st: &Statement, tile: Tile) -> Option<Schedule> {
    let extent = |x: usize| st.vars[x].hi - st.vars[x].lo;
    let loops: Vec<usize> = (0..st.vars.len()).filter(|&x| extent(x) > 1).collect();
    let reduced: Vec<usize> = loops
        .iter()
        .copied()
        .filter(|&x| st.vars[x].reduced)
        .collect();
    let &[k] = reduced.as_slice() else {
        return None;
    };
    let v = vector_dim(st)?;
    let reads = st.rhs.reads();
    let uses = |a: &crate::check::Access, x: usize| a.uses(Var(x as u32));
    let [a, b] = reads.as_slice() else {
        return None;
    };
    let (a, b) = if uses(a, v) { (b, a) } else { (a, b) };
    // (A 1x1 convolution, `W[k,c,0,0]`, is left as it is: 1x1 shapes
    // with 56² and 28² pixels ran 2-3% slower blocked.)
    let plain = |r: &crate::check::Access| r.index.iter().all(|e| e.as_var().is_some());
    if !(uses(a, k) && !uses(a, v) && uses(b, k) && plain(a) && plain(b)) || a.tensor == b.tensor {
        return None;
    }
    // Output loops by the reads that use them: `A`'s rows (the tile's row
    // dimension `u` the longest), `B`'s columns, and batches (both).
    let outputs = loops
        .iter()
        .copied()
        .filter(|&x| x != v && !st.vars[x].reduced);
    let rows: Vec<usize> = outputs
        .clone()
        .filter(|&x| uses(a, x) && !uses(b, x))
        .collect();
    let columns: Vec<usize> = outputs
        .clone()
        .filter(|&x| !uses(a, x) && uses(b, x))
        .collect();
    let batches: Vec<usize> = outputs.filter(|&x| uses(a, x) && uses(b, x)).collect();
    let &u = rows
        .iter()
        .max_by_key(|&&x| (extent(x), std::cmp::Reverse(x)))?;
    let (m, n, depth) = (extent(u), extent(v), extent(k));
    let b_columns: i64 = n * columns.iter().map(|&x| extent(x)).product::<i64>();
    let lanes = i64::from(LANES);
    // Rows that do not split evenly into ROW_BLOCKS (an odd count) would
    // leave a partial block, peeled, and the blocks would then run one
    // after the other: the blocks of columns run in parallel instead, if
    // there are several (GEMM 2047×2048²: 22 → 51 GFLOP/s on one thread).
    let even_rows = m % ROW_BLOCKS == 0 && m / ROW_BLOCKS >= 4 * tile.mr;
    if depth * b_columns * 4 < BLOCKED_FROM || m < 4 * tile.mr || !(even_rows || n > NC) {
        return None;
    }
    let name = |x: usize| st.vars[x].name.clone();
    let split = |var: &str, factor: i64| Directive::Split {
        var: var.to_string(),
        factor: factor as u32,
    };
    let (un, vn, kn) = (name(u), name(v), name(k));
    let mut d = Vec::new();
    let mut order: Vec<String> = batches.iter().map(|&x| name(x)).collect();
    // The row tiles' loop and the tile's rows.
    let (row_tiles, tile_rows) = if even_rows {
        d.push(split(&un, m / ROW_BLOCKS));
        d.push(split(&format!("{un}i"), tile.mr));
        order.push(format!("{un}o"));
        (format!("{un}io"), format!("{un}ii"))
    } else {
        d.push(split(&un, tile.mr));
        (format!("{un}o"), format!("{un}i"))
    };
    // Columns: blocks of NC (if wider), then tiles of nr in vectors.
    let vector_columns = cache_block(&mut d, &mut order, &vn, n, NC, tile.nr);
    let parallel = match even_rows {
        true => format!("{un}o"),
        false => format!("{vn}o"),
    };
    let depth_loop = cache_block(&mut d, &mut order, &kn, depth, KC, 1);
    d.push(split(&vector_columns, tile.nr));
    d.push(split(&format!("{vector_columns}i"), lanes));
    let (col_vectors, col_lanes) = (format!("{vector_columns}io"), format!("{vector_columns}ii"));
    order.extend(rows.iter().filter(|&&x| x != u).map(|&x| name(x)));
    order.push(row_tiles);
    order.extend(columns.iter().map(|&x| name(x)));
    order.extend([
        format!("{vector_columns}o"),
        depth_loop.clone(),
        tile_rows.clone(),
        col_vectors.clone(),
        col_lanes.clone(),
    ]);
    d.extend([
        Directive::Reorder(order),
        Directive::Unroll(tile_rows),
        Directive::Unroll(col_vectors),
        Directive::Vectorize(col_lanes),
        Directive::Accumulate(depth_loop),
        Directive::Parallel(parallel),
        Directive::Pack(program.tensor(b.tensor).name.clone()),
    ]);
    Some(Schedule(d))
}

/// Loop `var` (of `extent`) split into blocks of at most `size`, the
/// blocks' loop next in `order`, if it is longer than that; the loop left
/// inside. The blocks are as even as whole multiples of `align` (the
/// register tile's width) allow, so that no block ends in a partial tile
/// (whose scalar lanes are more code to compile and slow to run): 1000
/// columns in blocks of 504 and 496, not 512 and 488 (61 tiles and half
/// of one); 1000 reduction points in 4 × 250, not 3 × 256 and 232.
fn cache_block(
    d: &mut Vec<Directive>,
    order: &mut Vec<String>,
    var: &str,
    extent: i64,
    size: i64,
    align: i64,
) -> String {
    if extent <= size {
        return var.to_string();
    }
    let blocks = (extent + size - 1) / size;
    let even = (extent + blocks - 1) / blocks;
    let block = ((even + align - 1) / align * align).min(size);
    d.push(Directive::Split {
        var: var.to_string(),
        factor: block as u32,
    });
    order.push(format!("{var}o"));
    format!("{var}i")
}

/// Whether variables `a` and `b` appear together in one index of a read.
fn coupled(st: &Statement, a: &str, b: &str) -> bool {
    let var = |n: &str| {
        Var(st
            .vars
            .iter()
            .position(|x| x.name == n)
            .expect("a variable") as u32)
    };
    let (a, b) = (var(a), var(b));
    st.rhs
        .reads()
        .iter()
        .any(|r| r.index.iter().any(|e| e.coeff(a) != 0 && e.coeff(b) != 0))
}

/// Rows of a one-vector tile (up to `max`): a divisor of the extent in the
/// top third of the range when there is one (no partial tile, whose
/// unrolled kernel would be one more to compile), else as [`fitted`].
fn whole_rows(extent: i64, max: i64) -> i64 {
    (least_rows(max)..=max)
        .rev()
        .find(|t| extent % t == 0)
        .unwrap_or_else(|| fitted(extent, max, 4))
}

/// The fewest rows of a one-vector tile of up to `max`: two thirds of it
/// (8 of 12 accumulators hide the FMA latency).
fn least_rows(max: i64) -> i64 {
    (2 * max + 2) / 3
}

/// The register tile's rows along a dimension of `extent`: `max`, unless
/// its partial last tile would be more than a tenth of the work (28 rows in
/// tiles of 6) and a smaller count down to `min` divides it exactly (the
/// partial tiles' code is slower: depthwise 3x3 on 28×28 ran 16 GFLOP/s in
/// 6-row tiles, 18.5 in 4-row ones).
fn fitted(extent: i64, max: i64, min: i64) -> i64 {
    if extent < max || 10 * (extent % max) <= extent {
        return extent.min(max);
    }
    (min..max).rev().find(|t| extent % t == 0).unwrap_or(max)
}

/// Schedules for every statement: `given` ones as they are, the automatic
/// one for the rest, except that a producer → consumer pair which can run
/// as one nest (see [`super::fuse_nests`]: the consumer's outer loops each
/// read one slice of the producer's temporary) is scheduled so that both
/// nests start with those loops: the producer keeps them whole, the
/// consumer does not pack the temporary.
pub fn auto_schedules(program: &Program, given: &[Option<Schedule>]) -> Vec<Schedule> {
    let mut out = auto_schedules_apart(program, given);
    for c in 1..program.statements.len() {
        let p = c - 1;
        if given[p].is_some() || given[c].is_some() {
            continue;
        }
        if let Some((producer, consumer)) = aligned_pair(program, p, c, &out[c]) {
            out[p] = producer;
            out[c] = consumer;
        }
    }
    out
}

/// Schedules for every statement: `given` ones as they are, the automatic
/// one for the rest, each on its own.
pub fn auto_schedules_apart(program: &Program, given: &[Option<Schedule>]) -> Vec<Schedule> {
    program
        .statements
        .iter()
        .zip(given)
        .map(|(st, g)| g.clone().unwrap_or_else(|| auto_schedule(program, st)))
        .collect()
}

/// Schedules for statements `p` (producing a temporary `T`) and `c` (its
/// one reader) whose outer loops match, if the consumer's schedule starts
/// with whole loops over variables that index `T` the way the producer's
/// left-hand side does.
fn aligned_pair(
    program: &Program,
    p: usize,
    c: usize,
    consumer: &Schedule,
) -> Option<(Schedule, Schedule)> {
    let (prod, cons) = (&program.statements[p], &program.statements[c]);
    let t = prod.lhs.tensor;
    let readers = program
        .statements
        .iter()
        .filter(|s| s.rhs.reads().iter().any(|a| a.tensor == t))
        .count();
    let reads: Vec<_> = cons
        .rhs
        .reads()
        .into_iter()
        .filter(|a| a.tensor == t)
        .collect();
    if program.outputs().contains(&t) || readers != 1 || reads.len() != 1 {
        return None;
    }
    // A copy of a reduction's result (rows widened to whole vectors, see
    // `crate::widen`) costs little either way; the reduction keeps its
    // register tile (aligned, a 3x3 convolution over 14×14 pixels lost
    // its rows of output channels: 30 → 14.5 GFLOP/s).
    if matches!(cons.rhs, crate::check::Expr::Read(_)) && prod.vars.iter().any(|v| v.reduced) {
        return None;
    }
    let order = consumer.0.iter().find_map(|d| match d {
        Directive::Reorder(names) => Some(names.clone()),
        _ => None,
    })?;
    // The consumer's leading whole output loops, as producer variables.
    let mut keep = Vec::new();
    for name in &order {
        let Some(x) = cons.vars.iter().position(|v| &v.name == name && !v.reduced) else {
            break;
        };
        let dim = reads[0]
            .index
            .iter()
            .position(|e| e.as_var() == Some(Var(x as u32)));
        match dim.and_then(|d| prod.lhs.index.get(d)?.as_var()) {
            Some(v) => keep.push(v.index()),
            None => break,
        }
    }
    if !keep.iter().any(|&v| prod.vars[v].hi - prod.vars[v].lo > 1) {
        return None;
    }
    let producer = auto_schedule_keeping(program, prod, &keep, TILE);
    let starts: Vec<String> = keep.iter().map(|&v| prod.vars[v].name.clone()).collect();
    let aligned = producer
        .0
        .iter()
        .any(|d| matches!(d, Directive::Reorder(names) if names.starts_with(&starts)));
    let t_name = &program.tensor(t).name;
    let consumer = Schedule(
        consumer
            .0
            .iter()
            .filter(|d| !matches!(d, Directive::Pack(x) if x == t_name))
            .cloned()
            .collect(),
    );
    aligned.then_some((producer, consumer))
}

/// Reads that must be packed: those [`transposed`] along the vector
/// dimension (the copy's lanes come one by one, once; the tile then loads
/// whole vectors). Reads worth packing (`pack B`): read with vectors, stepping across
/// rows (more than a cache line) in the innermost reduction loop — GEMM's
/// `B[k, j]`, a 1x1 convolution's input — which strains the cache and TLB
/// with one new line or page per step; reused across an output loop, so
/// the copy is paid once for many reads; with no duplication in the
/// copy (at most a quarter more than the tensor: partial tiles); and too
/// large to sit in L1 beside the other operand anyway (GEMM 64: its 16 KB
/// `B` packed ran 8% slower, 47.5-49.6 against 52.7-53.5 GFLOP/s).
/// Broadcast reads are worth packing too when they come from
/// [`scattered_broadcasts`] that enough tiles read.
fn packs(program: &Program, st: &Statement, spec: &Spec) -> Packs {
    let mut out = Packs {
        directives: Vec::new(),
        starved: false,
    };
    let Some(&vector) = spec
        .order
        .last()
        .filter(|&&d| matches!(spec.dims[d].kind, LoopKind::Vectorized(_)))
    else {
        return out;
    };
    let reduced = spec.reduced_dims(st);
    let Some(&step) = spec.order.iter().rev().find(|d| reduced.contains(d)) else {
        return out;
    };
    for read in st.rhs.reads() {
        let tensor = &program.tensors[read.tensor.index()];
        let strides = crate::ir::Buffer {
            name: String::new(),
            shape: tensor.shape.clone(),
            kind: crate::ir::BufKind::Input,
        }
        .strides();
        let stride_of = |d: usize| -> i64 {
            read.index
                .iter()
                .zip(&strides)
                .map(|(e, s)| spec.substitute(e).coeff(Var(d as u32)) * s)
                .sum()
        };
        let dims = spec.pack_dims(read);
        let size: i64 = tensor.shape.iter().map(|&n| n as i64).product();
        let reused = spec
            .order
            .iter()
            .any(|&d| !dims.contains(&d) && !reduced.contains(&d) && spec.dims[d].trips() > 1);
        // No duplication in the copy (at most a quarter more: partial tiles).
        let compact = 4 * spec.pack_len(read) <= 5 * size;
        let named = out
            .directives
            .iter()
            .any(|p| *p == Directive::Pack(tensor.name.clone()));
        let worth = stride_of(vector) == 1
            && stride_of(step).abs() > 16
            && reused
            && compact
            && size * 4 > L1_BYTES / 2;
        let scattered = match stride_of(vector) {
            0 => scattered_broadcasts(spec, &dims, &reduced, step, &stride_of),
            _ => None,
        };
        let pays = scattered.is_some_and(|tiles| tiles >= MIN_BROADCAST_REUSE);
        out.starved |= scattered.is_some() && !pays;
        let worth = worth || (pays && compact);
        if !named && (worth || transposed(spec, read, vector)) {
            out.directives.push(Directive::Pack(tensor.name.clone()));
        }
    }
    out
}

/// The packs a schedule takes, and whether a broadcast read is scattered
/// but read by too few tiles to pack (see [`scattered_broadcasts`]).
struct Packs {
    directives: Vec<Directive>,
    starved: bool,
}

/// Tile iterations that must read a packed broadcast operand for its copy
/// to pay (see [`scattered_broadcasts`]): a 3x3 convolution from 256 to 256
/// channels over 14×14 reads its weights 28 times (14 rows, 2 column
/// tiles) and ran 41 → 48 GFLOP/s with them packed; from 512 over 7×7, 7
/// times, and ran 43 → 31 (the copy of 9.4 MB costs more than it saves).
const MIN_BROADCAST_REUSE: i64 = 16;

/// If a broadcast operand (a convolution's weights `W[k, c, rx, ry]` under
/// a tile of output channels) reaches its register tile as one stream per
/// tile row — rows more than a cache line apart — each stepping through
/// memory in the innermost reduction loop with gaps (`c` steps 9
/// elements), so that the streams' lines for one sweep of that loop
/// outgrow L1 and each sweep (one per tap) fetches them again from L2: the
/// tiles that would read a copy. Packed in loop order (`W+pack[ko, rx, ry,
/// c, ki]`) when [`MIN_BROADCAST_REUSE`] or more do, the tile's broadcasts
/// for one step are adjacent and each sweep reads one contiguous run;
/// fewer take [`ONE_VECTOR_TILE`].
fn scattered_broadcasts(
    spec: &Spec,
    dims: &[usize],
    reduced: &[usize],
    step: usize,
    stride_of: &dyn Fn(usize) -> i64,
) -> Option<i64> {
    let trips = |d: usize| spec.dims[d].trips();
    let at = spec.order.iter().position(|&d| d == step)?;
    let streams: i64 = spec.order[at + 1..]
        .iter()
        .filter(|&&d| stride_of(d).abs() > 16)
        .map(|&d| trips(d))
        .product();
    let gap = stride_of(step).abs();
    let swept = streams * trips(step) * (4 * gap).min(64);
    let reuse: i64 = spec.order[..at]
        .iter()
        .filter(|d| !dims.contains(d) && !reduced.contains(d))
        .map(|&d| trips(d))
        .product();
    (streams > 1 && gap > 1 && swept > L1_BYTES).then_some(reuse)
}

/// Rows of a horizontal-reduction tile (GEMV's `O[i]`): independent vector
/// accumulators, each reused across `RK` vectors of the reduction.
const ROWS: i64 = 8;
/// Reduction elements per row and iteration (two F32X4 vectors).
const RK: i64 = 8;
/// Reduction elements per iteration of a streamed row: eight F32X4
/// vectors, each its own partial sum (see `accumulate`'s copies), two
/// cache lines per step of one stream.
const STREAMED_RK: i64 = 32;

/// When no output dimension vectorizes (`O[i] = A[i,k] * x[k]`), vectorize
/// a reduction dimension read contiguously instead: each of `ROWS` output
/// elements keeps a vector of partial sums across the reduction, combining
/// its lanes once at the end.
/// `split i 8; split k 8; split ki 4; reorder io ko ii kio kii; unroll ii;
/// unroll kio; vectorize kii; accumulate ko; parallel io`.
///
/// A read indexed by every output variable (GEMV's `A`) is streamed from
/// memory once, and several rows at a time are several streams: one row at
/// a time, `STREAMED_RK` elements per step, runs 20–40% faster (one
/// stream per core is what the hardware prefetcher follows best).
fn reduction_candidate(st: &Statement) -> Option<Schedule> {
    let extent = |v: usize| st.vars[v].hi - st.vars[v].lo;
    let reads = st.rhs.reads();
    let streamed = reads.iter().any(|a| {
        (0..st.vars.len()).all(|x| st.vars[x].reduced || extent(x) == 1 || a.uses(Var(x as u32)))
    });
    // The innermost-read reduction variable: last index, step 1, nowhere else.
    let r = (0..st.vars.len()).rev().find(|&r| {
        let var = Var(r as u32);
        st.vars[r].reduced
            && extent(r) >= RK
            && reads.iter().any(|a| a.uses(var))
            && reads.iter().all(|a| {
                !a.uses(var) || crate::schedule::vectorize::strided(&a.index, var) == Some(1)
            })
    })?;
    let (rows, rk) = match streamed {
        true if extent(r) >= STREAMED_RK => (1, STREAMED_RK),
        true => (1, RK),
        false => (ROWS, RK),
    };
    let name = |v: usize| st.vars[v].name.clone();
    let rn = name(r);
    let mut d = vec![
        Directive::Split {
            var: rn.clone(),
            factor: rk as u32,
        },
        Directive::Split {
            var: format!("{rn}i"),
            factor: LANES,
        },
    ];
    // Rows: the output's last variable with more than one value.
    let u = (rows > 1)
        .then(|| {
            st.lhs
                .index
                .iter()
                .rev()
                .filter_map(|e| e.as_var())
                .map(|v| v.index())
                .find(|&u| extent(u) > 1)
        })
        .flatten();
    let mut outer: Vec<String> = st
        .vars
        .iter()
        .enumerate()
        .filter(|&(k, x)| !x.reduced && Some(k) != u)
        .map(|(_, x)| x.name.clone())
        .collect();
    let mut inner = Vec::new();
    if let Some(u) = u {
        let un = name(u);
        if extent(u) > rows {
            d.push(Directive::Split {
                var: un.clone(),
                factor: rows as u32,
            });
            outer.push(format!("{un}o"));
            inner.push(format!("{un}i"));
        } else {
            inner.push(un);
        }
    }
    let reduced: Vec<String> = st
        .vars
        .iter()
        .enumerate()
        .filter(|&(k, x)| x.reduced && k != r)
        .map(|(_, x)| x.name.clone())
        .chain([format!("{rn}o")])
        .collect();
    let mut order = outer.clone();
    order.extend(reduced.iter().cloned());
    order.extend(inner.iter().cloned());
    order.push(format!("{rn}io"));
    order.push(format!("{rn}ii"));
    d.push(Directive::Reorder(order));
    for l in inner.iter().chain([&format!("{rn}io")]) {
        d.push(Directive::Unroll(l.clone()));
    }
    d.push(Directive::Vectorize(format!("{rn}ii")));
    // Keep the partial sums in registers across every reduction loop.
    d.push(Directive::Accumulate(reduced[0].clone()));
    let row_tiles = u.map_or(1, |u| (extent(u) + rows - 1) / rows);
    d.extend(parallel_outer(st, &outer, row_tiles));
    Some(Schedule(d))
}

/// `parallel` on the first of the `outer` loops with more than one
/// iteration: a statement variable by its extent, the one split loop among
/// them by `split_trips`.
fn parallel_outer(st: &Statement, outer: &[String], split_trips: i64) -> Option<Directive> {
    let trips = |n: &String| match st.vars.iter().find(|x| &x.name == n) {
        Some(x) => x.hi - x.lo,
        None => split_trips,
    };
    outer
        .iter()
        .find(|n| trips(n) > 1)
        .map(|p| Directive::Parallel(p.clone()))
}

/// Tile of a transposing statement ([`transposing_tiles`]): output
/// elements along its last index per tile (64 bytes, a cache line of each
/// output row), and elements along the read's last index (its innermost
/// loop, unrolled: a run of each row of the read, read in order).
const TRANSPOSE_WRITE_RUN: i64 = 16;
const TRANSPOSE_READ_RUN: i64 = 8;

/// A statement with no reduction that reads some tensor across the
/// output's rows (`O[i,j] = X[j,i]`, a layout change such as NCHW → NHWC,
/// an elementwise sum with a transposed operand): no vector dimension,
/// and as written each output row walks a column of the read, a cache
/// line for every element. In tiles of `TRANSPOSE_WRITE_RUN` ×
/// `TRANSPOSE_READ_RUN` both sides use whole lines while they are in L1;
/// the innermost loop steps along the read's rows, unrolled, and the
/// outermost loop runs in parallel. Measured with inputs in huge pages
/// (as the bench's and numpy's), processes alternating, one / two
/// threads: 2000² 3.6 → 2.6–2.9 / 3.5 → 1.3–2.3 ms (numpy's
/// `copyto(o, x.T)`: 3.0), 3001×1999 9.5 → 7.0 / 4.8 → 3.4, 16 × 512² 5.1
/// → 2.8 / 1.4; NCHW → NHWC 8×64×56×56 1.2 → 0.7–1.3 / 0.2. The inner
/// loop along the output instead (the first version) ran 2000² at 3.8–4.1
/// on one thread, slower than the lowered nest; 32 elements of each read
/// row per tile 2000² at 2.3–2.8 but 16 × 512² at 8.5 (32 output rows
/// 2 KB apart share two L1 sets); 16, 3001×1999 at 4.1–4.6 but 2000² at
/// 3.1 and 16 × 512² at 3.6–3.7.
/// `split i 8; split j 16; reorder io jo ji ii; unroll ii; parallel io`.
fn transposing_tiles(st: &Statement) -> Option<Schedule> {
    let extent = |x: usize| st.vars[x].hi - st.vars[x].lo;
    if st.vars.iter().any(|x| x.reduced && x.hi - x.lo > 1) {
        return None;
    }
    let v = st.lhs.index.last()?.as_var()?;
    // A read whose own last index `t` is another variable, using `v` before.
    let t = st.rhs.reads().into_iter().find_map(|a| {
        let (last, before) = a.index.split_last()?;
        let t = last.as_var()?;
        (t != v && before.iter().any(|e| e.coeff(v) != 0)).then_some(t)
    })?;
    if extent(v.index()) < 2 || extent(t.index()) < 2 {
        return None;
    }
    let name = |x: Var| st.vars[x.index()].name.clone();
    let (vn, tn) = (name(v), name(t));
    let mut d = vec![
        Directive::Split {
            var: tn.clone(),
            factor: TRANSPOSE_READ_RUN as u32,
        },
        Directive::Split {
            var: vn.clone(),
            factor: TRANSPOSE_WRITE_RUN as u32,
        },
    ];
    let mut outer: Vec<String> = (0..st.vars.len())
        .map(|x| Var(x as u32))
        .filter(|&x| x != v && x != t && !st.vars[x.index()].reduced)
        .map(name)
        .collect();
    outer.extend([format!("{tn}o"), format!("{vn}o")]);
    let mut order = outer.clone();
    order.extend([format!("{vn}i"), format!("{tn}i")]);
    d.push(Directive::Reorder(order));
    d.push(Directive::Unroll(format!("{tn}i")));
    let t_tiles = (extent(t.index()) + TRANSPOSE_READ_RUN - 1) / TRANSPOSE_READ_RUN;
    d.extend(parallel_outer(st, &outer, t_tiles));
    Some(Schedule(d))
}

/// Rows swept together by [`row_sweep`], and the output's elements per
/// block (its registers and the block in L1 across the sweep).
const SWEPT_ROWS: i64 = 8;
const SWEEP_BLOCK: i64 = 2048;

/// `O[i] = A[k,i] * x[k]` (GEMV with `A` transposed), `O[j] = A[i,j]`
/// (column sums): a read that visits each of its elements once, its
/// reduction stepping across its rows. The usual tile, the reduction
/// innermost around registers, jumps a row per step (16 KB for 4096
/// columns: 2.4 GFLOP/s); swept `SWEPT_ROWS` rows at a time instead, the
/// output's vectors in registers across them and in L1 between, the read
/// streams row by row: 12 GFLOP/s on one thread, 18 on two (as GEMV).
/// The output is blocked by up to `SWEEP_BLOCK` elements (two blocks at
/// least, for the threads, where it has 128 or more).
/// `split i 2048; split ii 8; split iii 4; split k 8; reorder io ko iio ki
/// iiio iiii; unroll ki; unroll iiio; vectorize iiii; accumulate ki;
/// parallel io`.
fn row_sweep(st: &Statement, v: usize) -> Option<Schedule> {
    let extent = |x: usize| st.vars[x].hi - st.vars[x].lo;
    let reduced: Vec<usize> = (0..st.vars.len()).filter(|&x| st.vars[x].reduced).collect();
    let [r] = reduced[..] else { return None };
    if extent(v) < 2 * i64::from(LANES) || extent(r) < SWEPT_ROWS {
        return None;
    }
    // Each element read once: every index a single variable, every
    // variable of more than one value in some index, `v` last, `r` before.
    let read_once = |a: &crate::check::Access| {
        let vars: Option<Vec<Var>> = a.index.iter().map(|e| e.as_var()).collect();
        vars.is_some_and(|vars| {
            (0..st.vars.len()).all(|x| extent(x) == 1 || vars.contains(&Var(x as u32)))
                && vars.last() == Some(&Var(v as u32))
                && vars[..vars.len() - 1].contains(&Var(r as u32))
        })
    };
    if !st.rhs.reads().iter().any(|a| read_once(a)) {
        return None;
    }
    let name = |x: usize| st.vars[x].name.clone();
    let (vn, rn) = (name(v), name(r));
    let half = (extent(v) + 1) / 2;
    let block = match extent(v) >= 16 * i64::from(LANES) {
        true => ((half + 7) / 8 * 8).min(SWEEP_BLOCK),
        false => extent(v),
    };
    let mut d = Vec::new();
    let mut split = |var: String, factor: i64| {
        d.push(Directive::Split {
            var,
            factor: factor as u32,
        })
    };
    let blocked = block < extent(v);
    let v0 = match blocked {
        true => {
            split(vn.clone(), block);
            format!("{vn}i")
        }
        false => vn.clone(),
    };
    split(v0.clone(), 2 * i64::from(LANES));
    split(format!("{v0}i"), i64::from(LANES));
    split(rn.clone(), SWEPT_ROWS);
    let outer: Vec<String> = (0..st.vars.len())
        .filter(|&x| x != v && x != r)
        .map(name)
        .chain(blocked.then(|| format!("{vn}o")))
        .collect();
    let mut order = outer.clone();
    order.extend([
        format!("{rn}o"),
        format!("{v0}o"),
        format!("{rn}i"),
        format!("{v0}io"),
        format!("{v0}ii"),
    ]);
    d.push(Directive::Reorder(order));
    d.push(Directive::Unroll(format!("{rn}i")));
    d.push(Directive::Unroll(format!("{v0}io")));
    d.push(Directive::Vectorize(format!("{v0}ii")));
    d.push(Directive::Accumulate(format!("{rn}i")));
    d.extend(parallel_outer(st, &outer, (extent(v) + block - 1) / block));
    Some(Schedule(d))
}

/// The output's last index variable (`j`, or `q` of a phase's `s*q + p`
/// or `s*q + 1`: its stores then scatter), if every read uses it in its
/// last index only, stepping forward (1: contiguous; more: gathered), or
/// not at all.
fn vector_dim(st: &Statement) -> Option<usize> {
    let e = st.lhs.index.last()?;
    let last = match e.terms.as_slice() {
        &[(v, c)] if c >= 1 => v,
        _ => *crate::lower::stepping_index(st, e)?.0.last()?,
    };
    if st.lhs.index[..st.lhs.index.len() - 1]
        .iter()
        .any(|e| e.coeff(last) != 0)
    {
        return None;
    }
    // Contiguous, or strided (a gather, still worth it for the FMAs it feeds),
    // in the fused epilogues' reads too; or, in a reduction, a read that
    // steps along another of its dimensions and is reused across an output
    // loop (GEMM's `B[j,k]` in `A[k,i] * B[j,k]`, across `i`): packed once,
    // see [`packs`]. (GEMV's `A[i,k]` and a global pool's input are read
    // once: a transposing copy would double their memory traffic.)
    let along_last = |a: &crate::check::Access| steps_along_last(&a.index, last);
    let loop_over = |x: &crate::check::IndexVar| x.hi - x.lo > 1;
    let reduction = st.vars.iter().any(|x| x.reduced && loop_over(x));
    let reused = |a: &crate::check::Access| {
        (0..st.vars.len())
            .any(|x| !st.vars[x].reduced && loop_over(&st.vars[x]) && !a.uses(Var(x as u32)))
    };
    let reads = st.rhs.reads();
    let vectorizes = st.epilogue_reads().into_iter().all(along_last)
        && reads.iter().all(|&a| {
            along_last(a)
                || reduction
                    && reused(a)
                    && a.tensor != st.lhs.tensor
                    && reads
                        .iter()
                        .all(|b| b.tensor != a.tensor || b.index == a.index)
        });
    vectorizes.then_some(last.index())
}

/// Bytes of L1 data cache a register tile's packed panel should fit in:
/// the smallest of the machines measured (Zen 3: 32 KiB; Zen 5 and
/// Sapphire Rapids have 48).
const L1_BYTES: i64 = 32 * 1024;

/// Whether vectorizing `v` packs a transposed read (see [`vector_dim`])
/// whose panel for one column of tiles (`nr` lanes over the whole
/// reduction) outgrows L1, so that each row tile reads it back from L2.
/// Where every read also runs contiguously along a reduction, vectorizing
/// that (no copy) is then faster: a bilinear form's second step, a
/// 4096-long reduction beside 64 columns, ran 7% slower on two threads
/// with the copy (best calls, four runs), the same with its operand
/// already transposed (so not the copy itself); A·Bᵀ at 512 (a 16 KB
/// panel) ran 17-19% faster with it on one and two threads.
fn long_transposed_panel(st: &Statement, v: usize, nr: i64) -> bool {
    let transposed = st
        .rhs
        .reads()
        .into_iter()
        .any(|a| !steps_along_last(&a.index, Var(v as u32)));
    let points: i64 = st
        .vars
        .iter()
        .filter(|x| x.reduced)
        .map(|x| x.hi - x.lo)
        .product();
    transposed && points * nr * 4 > L1_BYTES
}

/// Whether `read` uses the vector dimension in an index other than its
/// last (or backwards): its lanes are not one load (nor a gather), and it
/// must be packed.
fn transposed(spec: &Spec, read: &crate::check::Access, vector: usize) -> bool {
    let index: Vec<crate::affine::Affine> = read.index.iter().map(|e| spec.substitute(e)).collect();
    !steps_along_last(&index, Var(vector as u32))
}

/// Whether `index` uses `v` only in its last position, stepping forward
/// (a vector load, or a gather), or not at all.
fn steps_along_last(index: &[crate::affine::Affine], v: Var) -> bool {
    index.iter().all(|e| e.coeff(v) == 0) || crate::schedule::vectorize::strided(index, v).is_some()
}
