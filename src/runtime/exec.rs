//! Calling compiled nests: buffers bound to pointers, nests run in order,
//! a nest's parallel loop split between threads.

use super::pool;
use crate::codegen::{Compiled, NestFn};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

/// Below this many visited points a nest runs on one thread: handing work
/// to a worker costs about a microsecond when it is spinning (calls back
/// to back), a few when it sleeps and must be woken. Measured on two
/// threads, calls back to back: GEMM 48 61 → 93 GFLOP/s, GEMM 64 54 →
/// 81, depthwise 3x3 over 32 channels of 28×28 53 → 90 (200 000 before);
/// a call after a millisecond's pause (the worker asleep): GEMM 64 9.9 µs
/// on one thread, 12 on two.
const PARALLEL_MIN_WORK: f64 = 20_000.0;

/// Where a buffer's elements live during a run.
pub enum Storage<'a> {
    /// A caller's input, row-major contiguous: read in place.
    Borrowed(&'a [f32]),
    /// Memory of the run: an input copied to row-major order, an
    /// intermediate, or an output returned to the caller.
    Owned(Vec<f32>),
    /// A caller's output array, row-major contiguous: written in place
    /// ([`super::Kernel::run_into`]).
    Caller(&'a mut [f32]),
}

/// One buffer's storage for a run.
pub struct Bound<'a> {
    pub data: Storage<'a>,
    /// For an output: its length. Its storage is then the spare capacity
    /// of `data` (an empty vector), which the nests write whole: every
    /// output version's statement sets each element first (a fill, or an
    /// initialising nest that covers it), so no zeroing pass is needed.
    pub output: Option<usize>,
}

impl<'a> Bound<'a> {
    /// Storage for an output of `len` elements, not yet written; `None`
    /// if the memory cannot be had.
    pub fn output(len: usize) -> Option<Bound<'static>> {
        let mut v = Vec::new();
        v.try_reserve_exact(len).ok()?;
        if poisoned() {
            v.resize(len, f32::NAN);
            v.clear();
        }
        Some(Bound {
            data: Storage::Owned(v),
            output: Some(len),
        })
    }

    /// The caller's array as an output's storage (written whole, like
    /// [`Bound::output`]'s).
    pub fn caller(target: &'a mut [f32]) -> Bound<'a> {
        if poisoned() {
            target.fill(f32::NAN);
        }
        Bound {
            data: Storage::Caller(target),
            output: None,
        }
    }
}

fn poisoned() -> bool {
    POISON_OUTPUTS.load(Ordering::Relaxed)
}

/// See [`super::poison_outputs`].
pub(super) static POISON_OUTPUTS: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// The buffers' base pointers, shared by the threads of a parallel nest.
#[derive(Clone, Copy)]
struct Pointers(*const *mut f32);

// SAFETY: the pointers are used only while the run's buffers live: a
// worker's task calls a nest only for a chunk it claims, and `run_split`
// returns only when every chunk is done (a task running later claims none
// and reads no pointer). Threads of one parallel nest write disjoint output
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
            Storage::Borrowed(s) => s.as_ptr() as *mut f32,
            // (An output's pointer is to its spare capacity.)
            Storage::Owned(v) => v.as_mut_ptr(),
            Storage::Caller(s) => s.as_mut_ptr(),
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
                run_split(*f, p, lo, hi, threads.min((hi - lo) as usize));
            }
            _ => call(*f, p, i64::MIN, i64::MAX),
        }
    }
    for b in buffers.iter_mut() {
        if let (Some(len), Storage::Owned(v)) = (b.output, &mut b.data) {
            assert!(v.capacity() >= len, "an output's storage");
            // SAFETY: the nests just run wrote every one of the output's
            // `len` elements (see `Bound::output`) into this capacity, and
            // any bit pattern is an `f32`.
            unsafe { v.set_len(len) };
        }
    }
}

/// Run a nest's parallel loop `lo..hi` as `threads` near-equal chunks,
/// each taken by whichever thread comes for it first: the caller takes
/// the first, workers the others, and the caller takes any a worker has
/// not come for by then (a worker that slept wakes in tens of
/// microseconds, longer than a small nest runs), then waits until every
/// chunk is done. A worker's task that runs after that finds nothing left
/// and touches no buffer.
fn run_split(f: NestFn, p: Pointers, lo: i64, hi: i64, threads: usize) {
    let size = (hi - lo + threads as i64 - 1) / threads as i64;
    let next = Arc::new(AtomicI64::new(lo));
    let done = Arc::new(AtomicI64::new(0));
    let take = {
        let done = done.clone();
        move || loop {
            let a = next.fetch_add(size, Ordering::Relaxed);
            if a >= hi {
                break;
            }
            let b = (a + size).min(hi);
            call(f, p, a, b);
            done.fetch_add(b - a, Ordering::Release);
        }
    };
    pool::hand_out(
        (1..threads)
            .map(|_| Box::new(take.clone()) as pool::Task)
            .collect(),
    );
    take();
    let mut spins = 0u32;
    while done.load(Ordering::Acquire) < hi - lo {
        spins += 1;
        if spins < 10_000 {
            std::hint::spin_loop();
        } else {
            std::thread::yield_now();
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
