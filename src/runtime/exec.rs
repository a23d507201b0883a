//! Calling compiled nests: buffers bound to pointers, nests run in order,
//! a nest's parallel loop split between threads.

use super::pool;
use crate::codegen::{Compiled, NestFn};
use std::borrow::Cow;

/// Below this many visited points a nest runs on one thread: handing work
/// to a worker and waiting for it costs microseconds.
const PARALLEL_MIN_WORK: f64 = 200_000.0;

/// One buffer's storage for a run: borrowed input data or owned memory.
pub struct Bound<'a> {
    pub data: Cow<'a, [f32]>,
    /// For an output: its length. Its storage is then the spare capacity
    /// of `data` (an empty vector), which the nests write whole: every
    /// output version's statement sets each element first (a fill, or an
    /// initialising nest that covers it), so no zeroing pass is needed.
    pub output: Option<usize>,
}

impl Bound<'_> {
    /// Storage for an output of `len` elements, not yet written; `None`
    /// if the memory cannot be had.
    pub fn output(len: usize) -> Option<Bound<'static>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).ok()?;
        if POISON_OUTPUTS.load(std::sync::atomic::Ordering::Relaxed) {
            v.resize(len, f32::NAN);
            v.clear();
        }
        Some(Bound {
            data: Cow::Owned(v),
            output: Some(len),
        })
    }
}

/// See [`super::poison_outputs`].
pub(super) static POISON_OUTPUTS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The buffers' base pointers, shared by the threads of a parallel nest.
#[derive(Clone, Copy)]
struct Pointers(*const *mut f32);

// SAFETY: the pointers stay valid for the whole run (the buffers outlive the
// workers' tasks: `run_parallel` returns only when they are done); threads of one parallel nest write disjoint output
// elements — the scheduler only marks loops parallel that are neither
// reduced nor scattered — and only read the rest.
unsafe impl Send for Pointers {}
// SAFETY: as above.
unsafe impl Sync for Pointers {}

/// Run every nest of `compiled` over `buffers` with up to `threads` threads,
/// except the nests `skip` marks; buffer `b` lives in the storage of
/// `buffers[owner[b]]`.
pub fn run(
    compiled: &Compiled,
    buffers: &mut [Bound<'_>],
    owner: &[usize],
    threads: usize,
    skip: &[bool],
) {
    // Inputs are read-only to the generated code; the `*mut` is the ABI's.
    let own: Vec<*mut f32> = buffers
        .iter_mut()
        .map(|b| match &mut b.data {
            Cow::Borrowed(s) => s.as_ptr() as *mut f32,
            // (An output's pointer is to its spare capacity.)
            Cow::Owned(v) => v.as_mut_ptr(),
        })
        .collect();
    let ptrs: Vec<*mut f32> = owner.iter().map(|&o| own[o]).collect();
    let p = Pointers(ptrs.as_ptr());
    for (n, nest) in compiled.nests().iter().enumerate() {
        let Some((f, info)) = nest.as_ref().filter(|_| skip.get(n) != Some(&true)) else {
            continue;
        };
        match info.parallel {
            Some((lo, hi)) if threads > 1 && hi - lo > 1 && info.work >= PARALLEL_MIN_WORK => {
                let n = threads.min((hi - lo) as usize) as i64;
                let chunk = (hi - lo + n - 1) / n;
                let f = *f;
                let tasks = (1..n)
                    .map(|t| {
                        let (a, b) = (lo + t * chunk, (lo + (t + 1) * chunk).min(hi));
                        Box::new(move || call(f, p, a, b)) as pool::Task
                    })
                    .collect();
                // Returns once every task has run: the buffers outlive them.
                pool::run_parallel(tasks, || call(f, p, lo, (lo + chunk).min(hi)));
            }
            _ => call(*f, p, i64::MIN, i64::MAX),
        }
    }
    for b in buffers.iter_mut() {
        if let (Some(len), Cow::Owned(v)) = (b.output, &mut b.data) {
            assert!(v.capacity() >= len, "an output's storage");
            // SAFETY: the nests just run wrote every one of the output's
            // `len` elements (see `Bound::output`) into this capacity, and
            // any bit pattern is an `f32`.
            unsafe { v.set_len(len) };
        }
    }
}

fn call(f: NestFn, p: Pointers, lo: i64, hi: i64) {
    // SAFETY: `f` was compiled for exactly these buffers (one pointer per
    // buffer of the function, in order, each to row-major contiguous storage
    // of at least the buffer's size, checked by the runtime before the call;
    // buffers sharing storage are never used by the same nest); the
    // code's loop bounds keep every access inside its buffer; `lo..hi`
    // restricts only the parallel loop's iterations.
    unsafe { f(p.0, lo, hi) }
}
