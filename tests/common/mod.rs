//! Helpers shared by the integration tests: building inputs, running a
//! program through the reference evaluator and through the IR interpreter.
#![allow(dead_code)]

pub mod ops;

use einjit::check::Program;
use einjit::{check_source, ir, lower, reference};
pub use ndarray::{ArrayD, IxDyn};

use std::collections::HashMap;

pub type Inputs = HashMap<String, ArrayD<f32>>;

/// An array from a shape and row-major values. (Every test builds its
/// inputs here: from then on, kernels' outputs start as NaN, so that an
/// element no nest writes fails the comparison.)
pub fn arr(shape: &[usize], values: &[f32]) -> ArrayD<f32> {
    einjit::runtime::poison_outputs(true);
    ArrayD::from_shape_vec(IxDyn(shape), values.to_vec()).expect("shape matches values")
}

/// Deterministic pseudo-random values in [-1, 1) (xorshift), so tests need no RNG crate.
pub fn rand(shape: &[usize], seed: u64) -> ArrayD<f32> {
    let mut x = seed.wrapping_mul(0x9E3779B97F4A7C15) | 1;
    let n = shape.iter().product();
    let values: Vec<f32> = (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect();
    arr(shape, &values)
}

pub fn inputs(list: &[(&str, ArrayD<f32>)]) -> Inputs {
    list.iter()
        .map(|(n, a)| (n.to_string(), a.clone()))
        .collect()
}

pub fn shapes(inputs: &Inputs) -> HashMap<String, Vec<usize>> {
    inputs
        .iter()
        .map(|(n, a)| (n.clone(), a.shape().to_vec()))
        .collect()
}

/// Outputs of `src` by the reference evaluator (panics with the rendered error).
pub fn reference(src: &str, inputs: &Inputs) -> HashMap<String, ArrayD<f32>> {
    let program = check_source(src, &shapes(inputs)).unwrap_or_else(|e| panic!("{e}"));
    reference::evaluate(&program, inputs).unwrap_or_else(|e| panic!("{e}"))
}

/// Outputs of `src` by lowering and interpreting the loop nest.
pub fn interpreted(src: &str, inputs: &Inputs) -> HashMap<String, ArrayD<f32>> {
    let program = check_source(src, &shapes(inputs)).unwrap_or_else(|e| panic!("{e}"));
    let func = lower::lower(&program);
    ir::verify(&func).expect("lowered IR verifies");
    interpret(&program, &func, inputs)
}

/// Run `func` (lowered from `program`) in the IR interpreter on `inputs`;
/// the program's outputs by name.
pub fn interpret(
    program: &Program,
    func: &ir::Func,
    inputs: &Inputs,
) -> HashMap<String, ArrayD<f32>> {
    let mut data: Vec<Vec<f32>> = func
        .buffers
        .iter()
        .map(|b| match b.kind {
            ir::BufKind::Input => inputs[&b.name].iter().copied().collect(),
            _ => vec![0.0; b.len()],
        })
        .collect();
    ir::interpret(func, &mut data);
    program
        .outputs()
        .into_iter()
        .map(|t| {
            let tensor = program.tensor(t);
            let values = std::mem::take(&mut data[t.index()]);
            (
                tensor.name.clone(),
                ArrayD::from_shape_vec(IxDyn(&tensor.shape), values).unwrap(),
            )
        })
        .collect()
}

/// The checker's error for `src`, rendered with its caret line.
pub fn error(src: &str, inputs: &Inputs) -> String {
    match check_source(src, &shapes(inputs)) {
        Ok(_) => panic!("expected an error for {src:?}"),
        Err(e) => e.to_string(),
    }
}

/// The dump (ranges + lowered nest) of `src`.
pub fn dump(src: &str, inputs: &Inputs) -> String {
    let program = check_source(src, &shapes(inputs)).unwrap_or_else(|e| panic!("{e}"));
    einjit::dump(&program, &lower::lower(&program))
}

/// Assert two arrays have the same shape and agree to `tol` relative to the largest magnitude.
pub fn assert_close(got: &ArrayD<f32>, want: &ArrayD<f32>, tol: f32) {
    assert_eq!(got.shape(), want.shape(), "shapes differ");
    let scale = want.iter().fold(1.0f32, |m, x| m.max(x.abs()));
    for (i, (g, w)) in got.iter().zip(want.iter()).enumerate() {
        let ok = (g - w).abs() <= tol * scale || (g == w);
        assert!(
            ok,
            "element {i}: got {g}, want {w} (tol {tol} x {scale})\ngot  {got}\nwant {want}"
        );
    }
}

/// Values in memory that borders a page the process may not touch, at
/// their start or at their end: a kernel reading one element outside them
/// faults (the test process dies) instead of reading a neighbour's bytes.
pub struct Guarded {
    map: *mut libc::c_void,
    map_len: usize,
    data: *mut f32,
    len: usize,
}

impl Guarded {
    pub fn new(values: &[f32], at_end: bool) -> Guarded {
        // SAFETY: sysconf has no preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize;
        let bytes = values.len() * 4;
        let inner = bytes.div_ceil(page).max(1) * page;
        let map_len = inner + 2 * page;
        // SAFETY: a fresh private anonymous mapping; no existing memory is
        // affected. Checked for failure below.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(map, libc::MAP_FAILED, "mmap");
        let base = map as *mut u8;
        // SAFETY: the first and last pages lie inside the mapping made above,
        // which nothing else refers to yet.
        unsafe {
            assert_eq!(libc::mprotect(map, page, libc::PROT_NONE), 0);
            let last = base.add(page + inner) as *mut libc::c_void;
            assert_eq!(libc::mprotect(last, page, libc::PROT_NONE), 0);
        }
        let start = if at_end { page + inner - bytes } else { page };
        // SAFETY: `start .. start + bytes` lies within the readable and
        // writable pages between the two guards; offsets are multiples of 4.
        let data = unsafe { base.add(start) } as *mut f32;
        let mut g = Guarded {
            map,
            map_len,
            data,
            len: values.len(),
        };
        g.slice_mut().copy_from_slice(values);
        g
    }

    fn slice_mut(&mut self) -> &mut [f32] {
        // SAFETY: `data .. data + len` is inside the mapping, owned by `self`
        // and borrowed mutably through it only.
        unsafe { std::slice::from_raw_parts_mut(self.data, self.len) }
    }

    /// The values as a writable array of `shape` (row-major).
    pub fn view_mut(&mut self, shape: &[usize]) -> ndarray::ArrayViewMutD<'_, f32> {
        ndarray::ArrayViewMutD::from_shape(IxDyn(shape), self.slice_mut())
            .expect("shape matches values")
    }

    /// The values as an array of `shape` (row-major).
    pub fn view(&self, shape: &[usize]) -> ndarray::ArrayViewD<'_, f32> {
        // SAFETY: as in `slice_mut`, borrowed shared for the view's lifetime.
        let s = unsafe { std::slice::from_raw_parts(self.data, self.len) };
        ndarray::ArrayViewD::from_shape(IxDyn(shape), s).expect("shape matches values")
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once; views borrow `self`.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}

/// Named inputs each bordering an unmapped page (see [`Guarded`]): after
/// their last element (`at_end`) or before their first.
pub struct GuardedInputs(Vec<(String, Vec<usize>, Guarded)>);

impl GuardedInputs {
    pub fn new<'a>(
        inputs: impl IntoIterator<Item = (&'a str, &'a ArrayD<f32>)>,
        at_end: bool,
    ) -> GuardedInputs {
        GuardedInputs(
            inputs
                .into_iter()
                .map(|(name, a)| {
                    let values = a.as_standard_layout();
                    let g = Guarded::new(values.as_slice().expect("standard layout"), at_end);
                    (name.to_string(), a.shape().to_vec(), g)
                })
                .collect(),
        )
    }

    pub fn views(&self) -> Vec<(&str, ndarray::ArrayViewD<'_, f32>)> {
        self.0
            .iter()
            .map(|(name, shape, g)| (name.as_str(), g.view(shape)))
            .collect()
    }
}
