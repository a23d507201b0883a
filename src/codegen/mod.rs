//! Loop-nest IR → native code with Cranelift.
//!
//! Each top-level nest of a function becomes one native function
//! `extern "C" fn(bufs: *const *mut f32, par_lo: i64, par_hi: i64)`: `bufs`
//! holds the base pointer of every buffer (row-major, contiguous); the
//! nest's parallel loop, if it has one the runtime can split (see
//! [`NestInfo::parallel`]), runs only its iterations in `par_lo..par_hi`.
//! Shapes are constants of the code: strides and constant bounds are
//! immediates. The target is the host (`cranelift_native`), so F32X4 `fma`
//! is used where the CPU has it.

mod emit;
mod libm;

use crate::error::{Error, ErrorKind, Result};
use crate::ir::{Func, LoopKind, Stmt};
use cranelift_codegen::ir::types::I64;
use cranelift_codegen::ir::{self, AbiParam};
use cranelift_codegen::isa::OwnedTargetIsa;
use cranelift_codegen::settings::{self, Configurable};
use cranelift_codegen::Context;
use cranelift_frontend::FunctionBuilderContext;
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module, ModuleReloc};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// The signature of a compiled nest.
pub type NestFn = unsafe extern "C" fn(*const *mut f32, i64, i64);

/// What the runtime needs to know about one compiled nest.
#[derive(Clone, Debug)]
pub struct NestInfo {
    /// The iteration range of the nest's parallel loop, when that loop has
    /// constant bounds and everything around it is a chain of single loops,
    /// so that disjoint sub-ranges can run on different threads.
    pub parallel: Option<(i64, i64)>,
    /// An estimate of the points the nest visits (to decide whether threads pay).
    pub work: f64,
}

/// A compiled function: native code for every nest but those left out,
/// kept alive by the module.
pub struct Compiled {
    module: Option<JITModule>,
    /// Per nest, in program order; `None` for a nest left out.
    nests: Vec<Option<(NestFn, NestInfo)>>,
    /// The Cranelift IR of every compiled nest with its number and whether
    /// it was built again without shared broadcasts (see `compile_nest`),
    /// printed on demand (printing costs more than a copy, and compile
    /// time matters).
    functions: Vec<(usize, ir::Function, bool)>,
}

// SAFETY: after `finalize_definitions` the module's code and data are never
// written again; `Compiled` exposes only the finalized, immutable function
// pointers, which any thread may call at once (they touch only the buffers
// they are given). The module is dropped (and its memory freed) only when
// the `Compiled` is, by which time no call can be running.
unsafe impl Send for Compiled {}
// SAFETY: as above: shared access reads immutable code pointers only.
unsafe impl Sync for Compiled {}

impl Drop for Compiled {
    fn drop(&mut self) {
        if let Some(module) = self.module.take() {
            // SAFETY: the function pointers into this module live in `self`,
            // which is being dropped: no call can happen afterwards.
            unsafe { module.free_memory() };
        }
    }
}

impl std::fmt::Debug for Compiled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Compiled({} nests)", self.nests.len())
    }
}

impl Compiled {
    /// Every nest's code, in program order (`None`: left out).
    pub fn nests(&self) -> &[Option<(NestFn, NestInfo)>] {
        &self.nests
    }

    /// The Cranelift IR of every compiled nest.
    pub fn clif(&self) -> String {
        self.functions
            .iter()
            .map(|(n, f, rebuilt)| {
                let note = match rebuilt {
                    true => " (built again without shared broadcasts: sharing spilled a vector register)",
                    false => "",
                };
                format!("; nest {}{note}\n{}\n", n + 1, f.display())
            })
            .collect()
    }
}

/// The host ISA, built once per process.
fn isa() -> Result<OwnedTargetIsa> {
    static ISA: OnceLock<std::result::Result<OwnedTargetIsa, String>> = OnceLock::new();
    ISA.get_or_init(|| {
        let mut flags = settings::builder();
        flags.set("opt_level", "speed").map_err(|e| e.to_string())?;
        flags.set("is_pic", "false").map_err(|e| e.to_string())?;
        // A nest with a stack slice (up to `fuse_nests::MAX_STACK_SLICE`)
        // has a frame larger than a guard page: probe it page by page, so
        // that a thread near the end of its stack faults instead of
        // writing past the guard.
        flags
            .set("enable_probestack", "true")
            .map_err(|e| e.to_string())?;
        flags
            .set("probestack_strategy", "inline")
            .map_err(|e| e.to_string())?;
        // The IR verifier costs ~30% of compile time; debug builds keep it.
        let verify = if cfg!(debug_assertions) {
            "true"
        } else {
            "false"
        };
        flags
            .set("enable_verifier", verify)
            .map_err(|e| e.to_string())?;
        cranelift_native::builder()
            .map_err(|e| e.to_string())?
            .finish(settings::Flags::new(flags))
            .map_err(|e| e.to_string())
    })
    .clone()
    .map_err(|e| Error::unspanned(ErrorKind::Codegen(e)))
}

/// Whether the host ISA has fused multiply-add (else `fma` would be a libcall).
fn has_fma(isa: &OwnedTargetIsa) -> bool {
    isa.isa_flags()
        .iter()
        .any(|f| f.name == "has_fma" && f.as_bool() == Some(true))
}

/// Compile every nest of `func` but those `leave_out` marks (nests that
/// never need to run). Nests are built and compiled by Cranelift on up to
/// `COMPILE_THREADS` threads, largest first (each is its own function;
/// the JIT module only links the finished code).
pub fn compile(func: &Func, leave_out: &[bool]) -> Result<Compiled> {
    let err = |e: String| Error::unspanned(ErrorKind::Codegen(e));
    let isa = isa()?;
    let mut builder = JITBuilder::with_isa(isa.clone(), cranelift_module::default_libcall_names());
    libm::register(&mut builder);
    let mut module = JITModule::new(builder);
    let libm = libm::declare(&mut module).map_err(err)?;
    let mut sig = module.make_signature();
    sig.params
        .extend([AbiParam::new(I64), AbiParam::new(I64), AbiParam::new(I64)]);
    let mut order: Vec<usize> = (0..func.body.len())
        .filter(|&n| leave_out.get(n) != Some(&true))
        .collect();
    // Function ids by nest (the nests left out are not declared).
    let mut ids = vec![None; func.body.len()];
    for &n in &order {
        let id = module
            .declare_function(&format!("nest{n}"), Linkage::Local, &sig)
            .map_err(|e| err(e.to_string()))?;
        ids[n] = Some(id);
    }
    let id = |n: usize| ids[n].expect("declared");

    // Largest nest first, so that the threads finish together.
    order.sort_by_key(|&n| std::cmp::Reverse(func.body[n].size()));
    let next = AtomicUsize::new(0);
    let threads = COMPILE_THREADS.min(order.len()).max(1);
    let work = || {
        let mut ctx = Context::new();
        let mut fctx = FunctionBuilderContext::new();
        let mut done = Vec::new();
        while let Some(&n) = order.get(next.fetch_add(1, Ordering::Relaxed)) {
            done.push((
                n,
                compile_nest(func, n, id(n), &isa, &libm, &sig, &mut ctx, &mut fctx),
            ));
        }
        done
    };
    let mut compiled: Vec<_> = std::thread::scope(|scope| {
        let helpers: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
        let mut all = work();
        for h in helpers {
            all.extend(h.join().expect("a compile thread panicked"));
        }
        all
    });
    compiled.sort_by_key(|(n, _)| *n);

    let mut functions = Vec::new();
    for (n, nest) in compiled {
        let nest = nest?;
        module
            .define_function_bytes(id(n), nest.alignment, &nest.code, &nest.relocs)
            .map_err(|e| err(e.to_string()))?;
        functions.push((n, nest.function, nest.rebuilt));
    }
    module
        .finalize_definitions()
        .map_err(|e| err(e.to_string()))?;
    let mut nests = vec![None; func.body.len()];
    for &(n, ..) in &functions {
        let nest = &func.body[n];
        let code = module.get_finalized_function(id(n));
        // SAFETY: `code` is the finalized body of a function defined above
        // with the `NestFn` signature in the host calling convention.
        let f: NestFn = unsafe { std::mem::transmute::<*const u8, NestFn>(code) };
        let info = NestInfo {
            parallel: parallel_range(nest),
            work: work_estimate(nest),
        };
        nests[n] = Some((f, info));
    }
    Ok(Compiled {
        module: Some(module),
        nests,
        functions,
    })
}

/// Threads that build and compile nests (the machines einjit targets have two cores).
const COMPILE_THREADS: usize = 2;

/// One nest compiled to machine code, not yet placed in the JIT's memory.
struct NativeNest {
    function: ir::Function,
    code: Vec<u8>,
    alignment: u64,
    relocs: Vec<ModuleReloc>,
    /// Built again without shared broadcasts (see [`compile_nest`]).
    rebuilt: bool,
}

/// Build nest `n` of `func` as Cranelift IR and compile it. A nest whose
/// register tile shares broadcasts (see `emit`'s `shared_broadcasts`) and
/// whose code then spills vector registers is built again without
/// sharing: the estimate of the registers sharing needs is not the
/// register allocator's, and a spill in a tile loop costs more than
/// sharing saves (a 1x1 convolution over 7×7 pixels: 43 GFLOP/s sharing
/// with one accumulator spilled, 50.5 without sharing).
#[allow(clippy::too_many_arguments)]
fn compile_nest(
    func: &Func,
    n: usize,
    id: FuncId,
    isa: &OwnedTargetIsa,
    libm: &libm::Libm,
    sig: &ir::Signature,
    ctx: &mut Context,
    fctx: &mut FunctionBuilderContext,
) -> Result<NativeNest> {
    let err = |e: String| Error::unspanned(ErrorKind::Codegen(e));
    let nest = &func.body[n];
    // The nest compiled, sharing broadcasts where they fit or not at all;
    // and whether it shares any.
    let mut build = |share_broadcasts: bool| -> Result<(NativeNest, bool)> {
        ctx.clear();
        ctx.func.signature = sig.clone();
        let shares = emit::emit_nest(
            func,
            nest,
            parallel_range(nest).is_some(),
            has_fma(isa),
            share_broadcasts,
            libm,
            isa.frontend_config(),
            &mut ctx.func,
            fctx,
        )?;
        let function = ctx.func.clone();
        let compiled = ctx
            .compile(&**isa, &mut Default::default())
            .map_err(|e| err(format!("{:?}", e.inner)))?;
        let relocs = compiled
            .buffer
            .relocs()
            .iter()
            .map(|r| ModuleReloc::from_mach_reloc(r, &function, id))
            .collect();
        let native = NativeNest {
            alignment: u64::from(compiled.buffer.alignment),
            code: compiled.code_buffer().to_vec(),
            function,
            relocs,
            rebuilt: false,
        };
        Ok((native, shares))
    };
    let (native, shares) = build(true)?;
    if !(shares && spills_vector_registers(&native.code)) {
        return Ok(native);
    }
    Ok(NativeNest {
        rebuilt: true,
        ..build(false)?.0
    })
}

/// Whether x64 machine code moves a vector register to or from the stack:
/// `movdqu` (`F3 [REX] 0F 6F/7F`) with a memory operand based on `rsp`
/// (ModRM r/m 100, SIB `0x24`), the instruction Cranelift's x64 backend
/// spills and reloads vector registers with; the nests keep nothing else
/// on the stack. Reading the bytes costs microseconds, where asking
/// Cranelift for the disassembly added 20% to the compile time, and
/// comparing stack frames needs a second compile: most nests spill an
/// integer register or two in their outer loops, which costs little.
/// (A false match would only cost the nest its shared broadcasts.)
fn spills_vector_registers(code: &[u8]) -> bool {
    let movdqu_rsp = |op: &[u8]| match op {
        [0x0F, 0x6F | 0x7F, modrm, 0x24, ..] => modrm >> 6 != 0b11 && modrm & 0b111 == 0b100,
        _ => false,
    };
    cfg!(target_arch = "x86_64")
        && (0..code.len()).any(|k| match &code[k..] {
            [0xF3, 0x40..=0x4F, rest @ ..] | [0xF3, rest @ ..] => movdqu_rsp(rest),
            _ => false,
        })
}

/// The constant range of the nest's splittable parallel loop: reached from
/// the nest's root through loops that each hold exactly one statement.
pub(crate) fn parallel_range(nest: &Stmt) -> Option<(i64, i64)> {
    let mut s = nest;
    loop {
        let Stmt::Loop(l) = s else { return None };
        if l.kind == LoopKind::Parallel {
            return l.constant_range();
        }
        match l.body.as_slice() {
            [one] => s = one,
            _ => return None,
        }
    }
}

/// Points the nest visits, bounded by its loops' constant ranges.
fn work_estimate(s: &Stmt) -> f64 {
    match s {
        Stmt::Loop(l) => {
            let trips = l
                .constant_range()
                .map_or(16.0, |(a, b)| (b - a).max(0) as f64);
            trips * l.body.iter().map(work_estimate).sum::<f64>()
        }
        _ => 1.0,
    }
}
