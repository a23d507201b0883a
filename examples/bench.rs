//! The benchmark: runs the suite in `../shared/bench/workloads.json` through
//! einjit and reports, per workload and thread count, the median time,
//! GFLOP/s (flops as the workloads file defines them), % of this machine's
//! 128-bit FMA peak (measured here with a Cranelift-JIT'd FMA loop: the
//! ceiling this backend can reach) and the compile time.
//!
//! ```text
//! cargo run --release --example bench -- [--only NAME[,NAME]] [--threads N[,M]]
//!     [--json FILE] [--workloads PATH] [--budget SECONDS] [--schedule S] [--search]
//!     [--interleave] [--no-huge-pages]
//! ```
//!
//! `--interleave` times a workload's thread counts in alternation, in
//! blocks of 5 ms, with a 1 ms run of the peak loop in each round, so that
//! the neighbours on a shared machine slow them alike: the two-thread
//! speedup and the % of peak then compare figures from the same seconds
//! (each workload's peak is the median of its own rounds).
//!
//! Inputs of 4 MiB or more are allocated as numpy allocates them: advised
//! into transparent huge pages (`madvise(MADV_HUGEPAGE)`), so einjit and the
//! peers read the same kind of memory (it matters for GEMV, which streams
//! 64 MiB; the others read their inputs from cache). `--no-huge-pages`
//! allocates them as ordinary vectors instead.
//!
//! `--search` compiles with `Formula::with_search(true)`: a bounded empirical
//! search among the automatic schedule's alternatives (its time is part of
//! the compile time reported).
//!
//! `--schedule S` times the schedule `S` (for every statement) instead of the
//! automatic one, to compare candidates on the real shapes:
//!
//! ```text
//! cargo run --release --example bench -- --only gemm_512 --schedule 'split j 8; ...'
//! ```

use cranelift_codegen::ir::types::{F32, F32X4, I64};
use cranelift_codegen::ir::{AbiParam, BlockArg, InstBuilder};
use cranelift_codegen::settings::{self, Configurable};
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{Linkage, Module};
use einjit::Formula;
use ndarray::{ArrayViewD, IxDyn};
use serde_json::{json, Value};
use std::time::{Duration, Instant};

struct Args {
    only: Option<Vec<String>>,
    threads: Vec<usize>,
    json: Option<String>,
    workloads: String,
    budget: Duration,
    /// A manual schedule for every statement (instead of the automatic one).
    schedule: Option<einjit::schedule::Schedule>,
    /// Time alternative automatic schedules while compiling (`Formula::with_search`).
    search: bool,
    /// Time a workload's thread counts and the peak loop in alternation.
    interleave: bool,
    /// Allocate every input as a plain vector (no huge-page advice).
    no_huge_pages: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        only: None,
        threads: vec![1],
        json: None,
        workloads: "../shared/bench/workloads.json".into(),
        budget: Duration::from_secs_f64(1.0),
        schedule: None,
        search: false,
        interleave: false,
        no_huge_pages: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--only" => args.only = Some(value()?.split(',').map(str::to_string).collect()),
            "--threads" => {
                args.threads = value()?
                    .split(',')
                    .map(|t| t.parse().map_err(|_| format!("bad thread count {t}")))
                    .collect::<Result<_, _>>()?
            }
            "--json" => args.json = Some(value()?),
            "--workloads" => args.workloads = value()?,
            "--search" => args.search = true,
            "--interleave" => args.interleave = true,
            "--no-huge-pages" => args.no_huge_pages = true,
            "--schedule" => {
                args.schedule = Some(value()?.parse().map_err(|e: einjit::Error| e.to_string())?)
            }
            "--budget" => {
                let s: f64 = value()?.parse().map_err(|_| "bad --budget".to_string())?;
                args.budget = Duration::from_secs_f64(s);
            }
            "-h" | "--help" => {
                println!("usage: bench [--only NAME[,NAME]] [--threads N[,M]] [--json FILE] [--workloads PATH] [--budget SECONDS] [--schedule S] [--search] [--interleave] [--no-huge-pages]");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other} (try --help)")),
        }
    }
    Ok(args)
}

fn main() {
    let args = parse_args().unwrap_or_else(|e| {
        eprintln!("bench: {e}");
        std::process::exit(2)
    });
    let text = std::fs::read_to_string(&args.workloads).unwrap_or_else(|e| {
        eprintln!("bench: cannot read {}: {e}", args.workloads);
        std::process::exit(2)
    });
    let suite: Value = serde_json::from_str(&text).expect("workloads file is JSON");
    let workloads = suite["workloads"].as_array().expect("a `workloads` list");

    let peak = PeakLoop::new();
    let start_peak = peak.median_of(7);
    println!("128-bit FMA peak (Cranelift F32X4 FMA loop, 1 thread): {start_peak:.1} GFLOP/s");
    println!(
        "{:<16} {:>3} {:>10} {:>9} {:>9} {:>7} {:>11}",
        "workload", "thr", "ms", "GFLOP/s", "best", "%peak", "compile ms"
    );
    let mut results = Vec::new();
    for w in workloads {
        let name = w["name"].as_str().expect("name");
        if let Some(only) = &args.only {
            if !only.iter().any(|o| o == name) {
                continue;
            }
        }
        match run_workload(w, &args, &peak) {
            Ok(measured) => {
                for r in measured {
                    let threads = r.threads;
                    let gflops = flops(w) / r.median.as_secs_f64() / 1e9;
                    let best = flops(w) / r.best.as_secs_f64() / 1e9;
                    let ms = r.median.as_secs_f64() * 1e3;
                    let peak = r.peak.unwrap_or(start_peak);
                    let pct = 100.0 * gflops / (peak * threads as f64);
                    println!(
                        "{name:<16} {threads:>3} {ms:>10.3} {gflops:>9.2} {best:>9.2} {pct:>6.1}% {:>11.3}",
                        r.compile_ms
                    );
                    results.push(json!({
                        "name": name, "threads": threads, "ms": ms, "gflops": gflops,
                        "best_gflops": best, "compile_ms": r.compile_ms, "pct_peak": pct,
                        "peak_gflops": peak,
                    }));
                }
            }
            Err(e) => println!("{name:<16}     failed: {e}"),
        }
    }
    if let Some(path) = &args.json {
        let out = serde_json::to_string_pretty(&Value::Array(results)).expect("serialisable");
        std::fs::write(path, out).unwrap_or_else(|e| eprintln!("bench: cannot write {path}: {e}"));
    }
}

/// One workload at one thread count.
struct Measured {
    threads: usize,
    median: Duration,
    best: Duration,
    compile_ms: f64,
    /// With `--interleave`: the peak loop's median over the same rounds.
    peak: Option<f64>,
}

/// With `--interleave`: each kernel's calls per round, back to back.
const INTERLEAVED_BLOCK: Duration = Duration::from_millis(5);

/// Compiles timed per workload and thread count (the median is reported).
const COMPILES: usize = 7;

/// Compile the workload for each thread count (timed, median of
/// [`COMPILES`]), then time runs until the budget is spent (at least 3
/// samples each): each thread count in turn, or with `--interleave` all of
/// them and the peak loop round by round.
fn run_workload(w: &Value, args: &Args, peak: &PeakLoop) -> Result<Vec<Measured>, String> {
    let (budget, schedule) = (args.budget, args.schedule.as_ref());
    let formula = w["formula"].as_str().ok_or("no formula")?;
    let huge = !args.no_huge_pages;
    let mut inputs: Vec<Input> = Vec::new();
    for (k, (name, shape)) in w["inputs"]
        .as_object()
        .ok_or("no inputs")?
        .iter()
        .enumerate()
    {
        let shape = dims(shape);
        let values = random(&shape, k as u64 + 1);
        inputs.push(Input::new(name, shape, values, huge));
    }
    // Scatter-form workloads accumulate into a zero output of the given shape.
    if formula.contains("+=") {
        let out_name = formula.split('[').next().unwrap_or("O").trim();
        let shape = dims(&w["output"]);
        let zeros = vec![0.0; shape.iter().product()];
        inputs.push(Input::new(out_name, shape, zeros, huge));
    }
    let views: Vec<(&str, ArrayViewD<f32>)> =
        inputs.iter().map(|a| (a.name.as_str(), a.view())).collect();
    let shapes: Vec<(&str, &[usize])> = inputs
        .iter()
        .map(|a| (a.name.as_str(), a.shape.as_slice()))
        .collect();

    // Compile time: the median of several compiles (the first in a process
    // also pays for building the ISA), formula text -> callable.
    let compile = || {
        let start = Instant::now();
        let kernel = Formula::new(formula)
            .map(|f| match schedule {
                Some(s) => f.with_schedules(vec![Some(s.clone()); 64]),
                None => f,
            })
            .map(|f| f.with_search(args.search))
            .and_then(|f| f.compile(&shapes))
            .map_err(|e| e.to_string());
        (kernel, start.elapsed())
    };
    let mut kernels = Vec::new();
    for &threads in &args.threads {
        let (kernel, first) = compile();
        let kernel = kernel?.with_threads(threads);
        let mut compiles = vec![first];
        while compiles.len() < COMPILES {
            compiles.push(compile().1);
        }
        compiles.sort();
        let compile_ms = compiles[compiles.len() / 2].as_secs_f64() * 1e3;
        kernel.run(&views).map_err(|e| e.to_string())?; // warm-up
        kernels.push((threads, kernel, compile_ms));
    }
    let time = |kernel: &einjit::Kernel| -> Result<Duration, String> {
        let t = Instant::now();
        std::hint::black_box(kernel.run(&views).map_err(|e| e.to_string())?);
        Ok(t.elapsed())
    };
    let mut samples: Vec<Vec<Duration>> = vec![Vec::new(); kernels.len()];
    let mut peaks: Vec<f64> = Vec::new();
    if args.interleave {
        let started = Instant::now();
        let total = budget * kernels.len() as u32;
        while peaks.len() < 3 || (started.elapsed() < total && peaks.len() < 200) {
            // Calls in blocks of a few milliseconds: a worker thread left
            // idle between single calls sleeps, and waking it costs as
            // much as a small kernel runs.
            for ((_, kernel, _), s) in kernels.iter().zip(&mut samples) {
                let block = Instant::now();
                while block.elapsed() < INTERLEAVED_BLOCK {
                    s.push(time(kernel)?);
                }
            }
            peaks.push(peak.sample());
        }
    } else {
        for ((_, kernel, _), s) in kernels.iter().zip(&mut samples) {
            let started = Instant::now();
            while s.len() < 3 || (started.elapsed() < budget && s.len() < 1000) {
                s.push(time(kernel)?);
            }
        }
    }
    peaks.sort_by(f64::total_cmp);
    let window_peak = (!peaks.is_empty()).then(|| peaks[peaks.len() / 2]);
    Ok(kernels
        .into_iter()
        .zip(samples)
        .map(|((threads, _, compile_ms), mut s)| {
            s.sort();
            Measured {
                threads,
                median: s[s.len() / 2],
                best: s[0],
                compile_ms,
                peak: window_peak,
            }
        })
        .collect())
}

fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|d| d.as_u64())
                .map(|d| d as usize)
                .collect()
        })
        .unwrap_or_default()
}

/// Inputs of this many bytes or more go into huge pages, as numpy's do
/// (its `madvise_hugepage`, on by default on Linux, applies from 4 MiB).
const HUGE_PAGES_FROM: usize = 4 << 20;

/// An input tensor and its storage.
struct Input {
    name: String,
    shape: Vec<usize>,
    storage: Storage,
}

enum Storage {
    /// An anonymous mapping advised into transparent huge pages before its
    /// first touch (the kernel then backs it with 2 MiB pages where it can).
    HugePages(memmap2::MmapMut),
    Vector(Vec<f32>),
}

impl Input {
    fn new(name: &str, shape: Vec<usize>, values: Vec<f32>, huge: bool) -> Input {
        let bytes = std::mem::size_of_val(values.as_slice());
        let mapped = (huge && bytes >= HUGE_PAGES_FROM)
            .then(|| memmap2::MmapMut::map_anon(bytes).ok())
            .flatten()
            .map(|mut m| {
                // Advice only: without it the mapping still works, in 4 KiB pages.
                let _ = m.advise(memmap2::Advice::HugePage);
                bytemuck::cast_slice_mut::<u8, f32>(&mut m).copy_from_slice(&values);
                m
            });
        Input {
            name: name.to_string(),
            shape,
            storage: mapped.map_or(Storage::Vector(values), Storage::HugePages),
        }
    }

    fn view(&self) -> ArrayViewD<'_, f32> {
        let data: &[f32] = match &self.storage {
            Storage::HugePages(m) => bytemuck::cast_slice(m),
            Storage::Vector(v) => v,
        };
        ArrayViewD::from_shape(IxDyn(&self.shape), data).expect("the shape's element count")
    }
}

/// Deterministic values in [-1, 1).
fn random(shape: &[usize], seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let n: usize = shape.iter().product();
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            ((x >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

/// Flops of a workload, as `workloads.json`'s `_doc` (and peers.py) define them.
fn flops(w: &Value) -> f64 {
    let g = |k: &str| w[k].as_f64().unwrap_or(1.0);
    let list = |k: &str| -> Vec<f64> {
        w[k].as_array()
            .map(|a| a.iter().filter_map(Value::as_f64).collect())
            .unwrap_or_default()
    };
    let op = w["op"].as_str().unwrap_or("");
    match op {
        "gemv" => 2.0 * g("M") * g("K"),
        "gemm" => 2.0 * g("M") * g("N") * g("K"),
        "bilinear" => 3.0 * g("I") * g("J") * g("K") * g("L"),
        "gcn" => 3.0 * g("N") * g("N") * g("C") * g("H"),
        // A layout change (benches/shapes.json): one per element moved.
        "permute" => w["inputs"]
            .as_object()
            .and_then(|m| m.values().next())
            .and_then(Value::as_array)
            .map_or(f64::NAN, |s| s.iter().filter_map(Value::as_f64).product()),
        _ => {
            let sp = list("spatial");
            let k = list("kernel");
            let nd = sp.len();
            let per_dim = |key: &str, default: f64| -> Vec<f64> {
                match &w[key] {
                    Value::Array(a) => a.iter().filter_map(Value::as_f64).collect(),
                    v => vec![v.as_f64().unwrap_or(default); nd],
                }
            };
            let (s, p, d, op_pad) = (
                per_dim("stride", 1.0),
                per_dim("pad", 0.0),
                per_dim("dilation", 1.0),
                per_dim("output_padding", 0.0),
            );
            let groups = w["groups"].as_f64().unwrap_or(1.0);
            let (b, c) = (g("B"), g("C"));
            let kk = w["K"].as_f64().unwrap_or(c);
            let out: Vec<f64> = (0..nd)
                .map(|i| match op {
                    "conv_transpose" => {
                        (sp[i] - 1.0) * s[i] - 2.0 * p[i] + d[i] * (k[i] - 1.0) + op_pad[i] + 1.0
                    }
                    "maxpool" => ((sp[i] + 2.0 * p[i] - k[i]) / s[i]).floor() + 1.0,
                    _ => ((sp[i] + 2.0 * p[i] - d[i] * (k[i] - 1.0) - 1.0) / s[i]).floor() + 1.0,
                })
                .collect();
            let (po, pk, pi): (f64, f64, f64) = (
                out.iter().product(),
                k.iter().product(),
                sp.iter().product(),
            );
            match op {
                "conv" => 2.0 * b * kk * (c / groups) * po * pk,
                "conv_transpose" => 2.0 * b * c * (kk / groups) * pi * pk,
                "maxpool" => b * c * po * pk,
                "conv_bias_relu" => 2.0 * b * kk * c * po * pk + 2.0 * b * kk * po,
                "dw_separable" => 2.0 * b * c * po * pk + 2.0 * b * kk * c * po,
                _ => f64::NAN,
            }
        }
    }
}

/// 12 independent F32X4 FMA chains in a Cranelift-compiled loop: the
/// 128-bit peak this backend can reach on one core.
struct PeakLoop {
    f: extern "C" fn(i64) -> f32,
    /// Owns the code `f` points into.
    _module: JITModule,
}

/// FMA chains of the peak loop.
const CHAINS: usize = 12;

impl PeakLoop {
    /// GFLOP/s of one run of about a millisecond.
    fn sample(&self) -> f64 {
        self.rate(1_000_000)
    }

    /// The median GFLOP/s of `n` runs of about 20 ms.
    fn median_of(&self, n: usize) -> f64 {
        let mut rates: Vec<f64> = (0..n).map(|_| self.rate(20_000_000)).collect();
        rates.sort_by(f64::total_cmp);
        rates[rates.len() / 2]
    }

    fn rate(&self, iters: i64) -> f64 {
        let t = Instant::now();
        std::hint::black_box((self.f)(std::hint::black_box(iters)));
        (iters as f64 * CHAINS as f64 * 8.0) / t.elapsed().as_secs_f64() / 1e9
    }

    fn new() -> PeakLoop {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").expect("flag");
        flags.set("is_pic", "false").expect("flag");
        let isa = cranelift_native::builder()
            .expect("host ISA")
            .finish(settings::Flags::new(flags))
            .expect("ISA");
        let frontend_config = isa.frontend_config();
        let mut module = JITModule::new(JITBuilder::with_isa(
            isa,
            cranelift_module::default_libcall_names(),
        ));
        let mut ctx = module.make_context();
        let mut sig = module.make_signature();
        sig.params.push(AbiParam::new(I64));
        sig.returns.push(AbiParam::new(F32));
        ctx.func.signature = sig.clone();
        let mut fctx = FunctionBuilderContext::new();
        {
            let mut b = FunctionBuilder::new(&mut ctx.func, &mut fctx);
            let (entry, header, body, exit) = (
                b.create_block(),
                b.create_block(),
                b.create_block(),
                b.create_block(),
            );
            b.append_block_params_for_function_params(entry);
            for block in [header, body] {
                for _ in 0..CHAINS {
                    b.append_block_param(block, F32X4);
                }
                b.append_block_param(block, I64);
            }
            for _ in 0..CHAINS {
                b.append_block_param(exit, F32X4);
            }
            b.switch_to_block(entry);
            let n = b.block_params(entry)[0];
            let x = b.ins().f32const(1.000_000_1);
            let x = b.ins().splat(F32X4, x);
            let y = b.ins().f32const(1e-7);
            let y = b.ins().splat(F32X4, y);
            let mut start: Vec<BlockArg> = (0..CHAINS)
                .map(|k| {
                    let c = b.ins().f32const(k as f32 * 1e-3);
                    BlockArg::Value(b.ins().splat(F32X4, c))
                })
                .collect();
            start.push(BlockArg::Value(n));
            b.ins().jump(header, &start);

            // Top-tested loop: header branches to the body or out.
            b.switch_to_block(header);
            let params = b.block_params(header).to_vec();
            let args: Vec<BlockArg> = params.iter().map(|&v| BlockArg::Value(v)).collect();
            b.ins()
                .brif(params[CHAINS], body, &args, exit, &args[..CHAINS]);

            b.switch_to_block(body);
            let params = b.block_params(body).to_vec();
            let mut next: Vec<BlockArg> = params[..CHAINS]
                .iter()
                .map(|&acc| BlockArg::Value(b.ins().fma(acc, x, y)))
                .collect();
            next.push(BlockArg::Value(b.ins().iadd_imm_s(params[CHAINS], -1)));
            b.ins().jump(header, &next);

            b.switch_to_block(exit);
            let accs = b.block_params(exit).to_vec();
            let mut sum = b.ins().extractlane(accs[0], 0);
            for &a in &accs[1..] {
                let lane = b.ins().extractlane(a, 0);
                sum = b.ins().fadd(sum, lane);
            }
            b.ins().return_(&[sum]);
            b.seal_all_blocks();
            b.finalize(frontend_config);
        }
        let id = module
            .declare_function("fma_peak", Linkage::Local, &sig)
            .expect("declare");
        module.define_function(id, &mut ctx).expect("define");
        module.finalize_definitions().expect("finalize");
        let code = module.get_finalized_function(id);
        // SAFETY: `code` is the finalized body of the function just defined with
        // signature (i64) -> f32 in the host calling convention; it touches no
        // memory, and `module` outlives every call below.
        let f: extern "C" fn(i64) -> f32 = unsafe { std::mem::transmute(code) };
        PeakLoop { f, _module: module }
    }
}
