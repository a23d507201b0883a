//! One nest → one Cranelift function (see the module doc of `codegen`).
//!
//! Loops are top-tested (`header: brif i < hi, body, exit`), which keeps
//! loads foldable into FMAs; an innermost loop around a register tile runs
//! two iterations per back edge so that its accumulators need no moves
//! (see `Emitter::two_steps`); loop counters and register locals are frontend
//! `Variable`s, and a loop header takes the registers it carries first
//! (column-major for a tile), its counter last, the order Cranelift then
//! schedules in. Addresses are strength-reduced: each loop keeps induction
//! pointers for the offsets its body uses most, bumped on the back edge, so
//! an access is a pointer plus the load's immediate offset. Reads no store
//! can change under them (see `movable_loads`) are `readonly` and
//! `can_move`, so Cranelift places them at their use and may hoist them.
//! A broadcast used by few FMAs is either shared by a row of the register
//! tile, where the registers allow (`Emitter::shared_broadcasts`), or
//! loaded afresh for each FMA, with an alias region of its own so that GVN
//! keeps the copies apart (`../shared/CRANELIFT.md` measured each of these
//! on this machine).

use super::libm::Libm;
use crate::affine::{ceil_div, floor_div, Affine, Var};
use crate::check::Combine;
use crate::error::{Error, ErrorKind, Result};
use crate::ir::{BinOp, Bound, BufId, BufKind, Expr, Func, LocalId, Loop, Stmt, UnOp, LANES};
use cranelift_codegen::ir::condcodes::{FloatCC, IntCC};
use cranelift_codegen::ir::types::{F32, F32X4, I32X4, I64, I8X16};
use cranelift_codegen::ir::{self, FuncRef, InstBuilder, MemFlagsData, Type, Value};
use cranelift_codegen::isa::TargetFrontendConfig;
use cranelift_frontend::{FunctionBuilder, FunctionBuilderContext, Variable};

#[allow(clippy::too_many_arguments)]
pub fn emit_nest(
    func: &Func,
    nest: &Stmt,
    split_parallel: bool,
    fma: bool,
    share_broadcasts: bool,
    libm: &Libm,
    frontend: TargetFrontendConfig,
    clfunc: &mut ir::Function,
    fctx: &mut FunctionBuilderContext,
) -> Result<bool> {
    let mut refs = Vec::new();
    for op in [UnOp::Exp, UnOp::Log, UnOp::Tanh, UnOp::Sigmoid] {
        refs.push((op, libm.import(op, clfunc).expect("declared")));
    }
    let strides: Vec<Vec<i64>> = func.buffers.iter().map(|x| x.strides()).collect();
    let mut b = FunctionBuilder::new(clfunc, fctx);
    let entry = b.create_block();
    b.append_block_params_for_function_params(entry);
    b.switch_to_block(entry);
    b.seal_block(entry);
    let params = b.block_params(entry).to_vec();
    let mut e = Emitter {
        b,
        func,
        fma,
        vars: vec![None; func.var_names.len()],
        known: vec![None; func.var_names.len()],
        ranges: vec![None; func.var_names.len()],
        locals: vec![None; func.locals.len()],
        bases: vec![None; func.buffers.len()],
        movable: movable_loads(func, nest, &strides),
        strides,
        bufs: params[0],
        parallel: split_parallel.then_some((params[1], params[2])),
        libm: refs,
        regions: 0,
        pointers: Vec::new(),
        carried_vectors: 0,
        broadcasts: Vec::new(),
        shared: Vec::new(),
        share_broadcasts,
        shared_any: false,
        stored_constants: stored_constants(nest),
    };
    // Base pointers of the buffers the nest touches, loaded once on entry;
    // a stack slice's is its slot in this function's frame (16-byte aligned).
    let mut used = vec![false; func.buffers.len()];
    nest.mark_buffers(&mut used);
    let flags = MemFlagsData::trusted().with_readonly().with_can_move();
    for (k, _) in used.iter().enumerate().filter(|(_, u)| **u) {
        let buffer = &func.buffers[k];
        e.bases[k] = Some(match buffer.kind {
            BufKind::Stack { zeroed } => e.stack_slice(&buffer.name, buffer.len(), zeroed)?,
            _ => e.b.ins().load(I64, flags, e.bufs, (k * 8) as i32),
        });
    }
    e.stmt(nest)?;
    e.b.ins().return_(&[]);
    e.b.seal_all_blocks();
    let shared = e.shared_any;
    e.b.finalize(frontend);
    Ok(shared)
}

struct Emitter<'a, 'f> {
    b: FunctionBuilder<'f>,
    func: &'a Func,
    fma: bool,
    vars: Vec<Option<Variable>>,
    /// Loop variables whose value is a known constant where code is being
    /// emitted (a loop's start while its induction pointers are set up), so
    /// that address arithmetic on them folds instead of becoming
    /// instructions for Cranelift to fold.
    known: Vec<Option<i64>>,
    /// A half-open range of the values of each loop variable being emitted,
    /// where its bounds give one without running (see `Loop::value_range`).
    ranges: Vec<Option<(i64, i64)>>,
    locals: Vec<Option<Variable>>,
    /// Base pointers, loaded once in the entry block.
    bases: Vec<Option<Value>>,
    strides: Vec<Vec<i64>>,
    bufs: Value,
    /// `par_lo`, `par_hi` for the nest's splittable parallel loop (taken by the first one).
    parallel: Option<(Value, Value)>,
    libm: Vec<(UnOp, FuncRef)>,
    /// Alias regions handed out so far (see `next_region`).
    regions: u32,
    /// Induction pointers of the loops being emitted, outermost first.
    pointers: Vec<Pointer>,
    /// Vector registers the innermost loop being emitted carries.
    carried_vectors: usize,
    /// Broadcast loads in the body of the innermost loop being emitted, with
    /// their number of uses.
    broadcasts: Vec<(BufId, Vec<Affine>, usize)>,
    /// Broadcasts the innermost loop being emitted loads once and keeps in
    /// a register for all their uses (see `shared_broadcasts`).
    shared: Vec<(BufId, Vec<Affine>)>,
    /// Whether broadcasts may be shared at all (see `shared_broadcasts`).
    share_broadcasts: bool,
    /// Whether some loop of the nest shares broadcasts.
    shared_any: bool,
    /// Constants the nest's stores use (see `stored_constants`).
    stored_constants: usize,
    /// Buffers whose loads Cranelift may move (see [`movable_loads`]).
    movable: Vec<bool>,
}

/// Uses of one broadcast input element in a loop body up to which each use
/// loads it again (measured in `../shared/CRANELIFT.md` for GEMM's two).
const MAX_SPLIT_BROADCAST_USES: usize = 2;

/// Combines per carried register and iteration up to which an innermost
/// loop of at least `MIN_REGISTERS_FOR_TAPS` registers runs two iterations
/// per back edge (see `Emitter::two_steps`).
const MAX_COMBINES_PER_REGISTER: usize = 3;
/// Carried vector registers from which a loop that combines several times
/// into each per iteration (a tile over its taps) runs two iterations per
/// back edge.
const MIN_REGISTERS_FOR_TAPS: usize = 10;

/// The vector registers Cranelift allocates on x86-64 (xmm0–xmm15).
const VECTOR_REGISTERS: usize = 16;

/// Vector registers a loop may carry for stride-2 loads to use shuffles
/// (measured: max pooling's two accumulators gain 2x; a stride-2
/// convolution's twelve lose 12% to spills).
const ROOM_FOR_SHUFFLES: usize = 8;

/// Where a load of every other element starts, relative to its buffer's
/// first element (see [`Emitter::load_lanes`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Pairing {
    /// An odd element: the pair of vectors from the even one before.
    Odd,
    /// An even element with seven more after it in the buffer: the pair of
    /// vectors from it.
    Even,
    /// An even element fewer than eight from the buffer's end.
    EvenAtEnd,
}

/// `var` holds `base(buf) + offset` (bytes) at the current iteration.
#[derive(Clone)]
struct Pointer {
    buf: BufId,
    offset: Affine,
    var: Variable,
}

/// Induction pointers per loop: enough for the operands of a register tile
/// (and its output), few enough to leave integer registers.
const MAX_POINTERS: usize = 4;

fn codegen_error(msg: String) -> Error {
    Error::unspanned(ErrorKind::Codegen(msg))
}

impl Emitter<'_, '_> {
    fn var(&mut self, v: Var) -> Variable {
        if let Some(x) = self.vars[v.index()] {
            return x;
        }
        let x = self.b.declare_var(I64);
        self.vars[v.index()] = Some(x);
        x
    }

    fn local(&mut self, l: crate::ir::LocalId) -> Variable {
        if let Some(x) = self.locals[l.index()] {
            return x;
        }
        let ty = if self.func.locals[l.index()].lanes == 1 {
            F32
        } else {
            F32X4
        };
        let x = self.b.declare_var(ty);
        self.locals[l.index()] = Some(x);
        x
    }

    /// The base pointer of `buf` (loaded in the entry block).
    fn base(&mut self, buf: BufId) -> Value {
        self.bases[buf.index()].expect("every used buffer's base is loaded on entry")
    }

    /// The address of a new stack slot for `len` floats, 16-byte aligned and
    /// rounded up to whole vectors; cleared by a loop of vector stores if
    /// `zeroed`.
    fn stack_slice(&mut self, name: &str, len: usize, zeroed: bool) -> Result<Value> {
        let vectors = len.div_ceil(LANES as usize);
        let bytes = u32::try_from(16 * vectors)
            .map_err(|_| codegen_error(format!("stack slice {name} too large")))?;
        let slot = self.b.create_sized_stack_slot(ir::StackSlotData::new(
            ir::StackSlotKind::ExplicitSlot,
            bytes,
            4,
        ));
        let base = self.b.ins().stack_addr(I64, slot, 0);
        if zeroed {
            let zero = self.f32(0.0, F32X4);
            let end = self.b.ins().iadd_imm_s(base, i64::from(bytes));
            let (body, exit) = (self.b.create_block(), self.b.create_block());
            self.b.append_block_param(body, I64);
            self.b.ins().jump(body, &[base.into()]);
            self.b.switch_to_block(body);
            let at = self.b.block_params(body)[0];
            self.b.ins().store(MemFlagsData::trusted(), zero, at, 0);
            let next = self.b.ins().iadd_imm_s(at, 16);
            let more = self.b.ins().icmp(IntCC::UnsignedLessThan, next, end);
            self.b.ins().brif(more, body, &[next.into()], exit, &[]);
            self.b.switch_to_block(exit);
        }
        Ok(base)
    }

    /// `e` with the variables of known value replaced by it.
    fn fold_known(&self, e: &Affine) -> Affine {
        let mut folded = Affine::constant(e.constant);
        for &(v, c) in &e.terms {
            match self.known[v.index()] {
                Some(x) => folded.constant += c * x,
                None => folded.terms.push((v, c)),
            }
        }
        folded
    }

    /// `Σ c·var + constant` as an i64 value.
    fn affine(&mut self, e: &Affine) -> Value {
        let e = &self.fold_known(e);
        let mut acc: Option<Value> = None;
        for &(v, c) in &e.terms {
            let x = self.var(v);
            let x = self.b.use_var(x);
            let term = if c == 1 {
                x
            } else {
                self.b.ins().imul_imm_s(x, c)
            };
            acc = Some(match acc {
                Some(a) => self.b.ins().iadd(a, term),
                None => term,
            });
        }
        match acc {
            Some(a) if e.constant == 0 => a,
            Some(a) => self.b.ins().iadd_imm_s(a, e.constant),
            None => self.b.ins().iconst(I64, e.constant),
        }
    }

    /// `floor(x / d)` for `d > 0`, exact for negative `x`.
    fn floor_div(&mut self, x: Value, d: i64) -> Value {
        if d == 1 {
            return x;
        }
        if d.count_ones() == 1 {
            return self.b.ins().sshr_imm_s(x, i64::from(d.trailing_zeros()));
        }
        let q = self.b.ins().sdiv_imm_s(x, d);
        let r = self.b.ins().srem_imm_s(x, d);
        let neg = self.b.ins().icmp_imm_s(IntCC::SignedLessThan, r, 0);
        let neg = self.b.ins().uextend(I64, neg);
        self.b.ins().isub(q, neg)
    }

    /// `max` (lower) or `min` (upper) of the bound terms, if all are constants.
    fn constant_bound(terms: &[Bound], lower: bool) -> Option<i64> {
        terms
            .iter()
            .map(|t| {
                t.as_constant().map(|c| {
                    if lower {
                        ceil_div(c, t.div)
                    } else {
                        floor_div(c, t.div)
                    }
                })
            })
            .collect::<Option<Vec<_>>>()
            .and_then(|v| {
                if lower {
                    v.into_iter().max()
                } else {
                    v.into_iter().min()
                }
            })
    }

    /// `max` (lower) or `min` (upper) of the bound terms.
    fn bounds(&mut self, terms: &[Bound], lower: bool) -> Value {
        if let Some(c) = Self::constant_bound(terms, lower) {
            return self.b.ins().iconst(I64, c);
        }
        let mut acc: Option<Value> = None;
        for t in terms {
            let v = if lower {
                // ceil(x / d) = -floor(-x / d)
                let neg = t.expr.checked_scale(-1).expect("bounded");
                let x = self.affine(&neg);
                let f = self.floor_div(x, t.div);
                self.b.ins().ineg(f)
            } else {
                let x = self.affine(&t.expr);
                self.floor_div(x, t.div)
            };
            acc = Some(match acc {
                None => v,
                Some(a) if lower => self.b.ins().smax(a, v),
                Some(a) => self.b.ins().smin(a, v),
            });
        }
        acc.expect("a loop has bounds")
    }

    fn stmt(&mut self, s: &Stmt) -> Result<()> {
        match s {
            Stmt::Loop(l) => self.emit_loop(l),
            Stmt::Store {
                buf,
                index,
                value,
                combine,
                step,
            } => {
                let lanes = self.func.lanes(value);
                let (ptr, off) = self.address(*buf, index);
                let flags = MemFlagsData::new().with_notrap();
                let new = match combine {
                    None => self.expr(value)?,
                    Some(c) => {
                        let old = self.load_lanes(flags, ptr, off, lanes, *step, None);
                        self.combine(*c, old, value)?
                    }
                };
                if lanes == 1 || *step == 1 {
                    self.b.ins().store(flags, new, ptr, off);
                } else {
                    // A scatter: one scalar store per lane, `4*step` bytes apart.
                    for lane in 0..lanes {
                        let x = self.b.ins().extractlane(new, lane as u8);
                        let at = off + (4 * step * i64::from(lane)) as i32;
                        self.b.ins().store(flags, x, ptr, at);
                    }
                }
                Ok(())
            }
            Stmt::Assign {
                local,
                value,
                combine,
            } => {
                let var = self.local(*local);
                let new = match combine {
                    None => self.expr(value)?,
                    Some(c) => {
                        let old = self.b.use_var(var);
                        self.combine(*c, old, value)?
                    }
                };
                self.b.def_var(var, new);
                Ok(())
            }
        }
    }

    fn emit_loop(&mut self, l: &Loop) -> Result<()> {
        // A loop of one trip (a batch of one) is its body, with its
        // variable a known constant: no blocks, counter or pointers for the
        // register allocator to track through the nest.
        self.ranges[l.var.index()] = l.value_range();
        let known_lo = Self::constant_bound(&l.lo, true);
        if l.kind != crate::ir::LoopKind::Parallel
            && known_lo.is_some()
            && known_lo.map(|lo| lo + 1) == Self::constant_bound(&l.hi, false)
        {
            let (var, lo) = (self.var(l.var), self.bounds(&l.lo, true));
            self.b.def_var(var, lo);
            self.known[l.var.index()] = known_lo;
            for s in &l.body {
                self.stmt(s)?;
            }
            self.known[l.var.index()] = None;
            return Ok(());
        }
        let mut lo = self.bounds(&l.lo, true);
        let mut hi = self.bounds(&l.hi, false);
        let mut known_lo = Self::constant_bound(&l.lo, true);
        if l.kind == crate::ir::LoopKind::Parallel {
            if let Some((plo, phi)) = self.parallel.take() {
                lo = self.b.ins().smax(lo, plo);
                hi = self.b.ins().smin(hi, phi);
                known_lo = None;
            }
        }
        let var = self.var(l.var);
        self.b.def_var(var, lo);
        self.known[l.var.index()] = known_lo;
        let pointers = self.induction_pointers(l);
        self.known[l.var.index()] = None;
        let (header, body, exit) = (
            self.b.create_block(),
            self.b.create_block(),
            self.b.create_block(),
        );
        let mut carried = Vec::new();
        carried_locals(&l.body, &mut Vec::new(), &mut carried);
        let outer_carried = self.carried_vectors;
        let outer_broadcasts = std::mem::take(&mut self.broadcasts);
        let outer_shared = std::mem::take(&mut self.shared);
        for_each_broadcast(&l.body, &mut |buf, index| match self
            .broadcasts
            .iter_mut()
            .find(|(b, i, _)| *b == buf && i == index)
        {
            Some(entry) => entry.2 += 1,
            None => self.broadcasts.push((buf, index.to_vec(), 1)),
        });
        self.carried_vectors = carried
            .iter()
            .filter(|c| self.func.locals[c.index()].lanes > 1)
            .count();
        self.shared = self.shared_broadcasts(l, &carried);
        self.shared_any |= !self.shared.is_empty();
        // Registers carried around the loop: in a tile that shares
        // broadcasts, in the body's order (row by row, so each broadcast
        // lives across its row only); otherwise in their numbering
        // (column-major: each vector operand lives across its column only).
        if self.shared.is_empty() {
            carried.sort();
        }
        let second = self.two_steps(l).then(|| self.b.create_block());
        match second {
            Some(second) => {
                // An odd trip count enters at the second half (an edge that
                // also keeps the second half's parameters: see `two_steps`).
                let trips = self.b.ins().isub(hi, lo);
                let odd = self.b.ins().band_imm_s(trips, 1);
                let odd = self.b.ins().icmp_imm_s(IntCC::NotEqual, odd, 0);
                let any = self.b.ins().icmp(IntCC::SignedLessThan, lo, hi);
                let enter = self.b.ins().band(odd, any);
                self.b.ins().brif(enter, second, &[], header, &[]);
            }
            None => {
                self.b.ins().jump(header, &[]);
            }
        }
        self.b.switch_to_block(header);
        // The header's parameters are created in the order of first use:
        // registers carried around the loop first (see above), the counter
        // last. Cranelift places pure operations in the order of the back
        // edge's arguments, so this order decides the live ranges in the
        // loop.
        for &local in &carried {
            let x = self.local(local);
            self.b.use_var(x);
        }
        for p in &pointers {
            self.b.use_var(p.var);
        }
        let i = self.b.use_var(var);
        let more = self.b.ins().icmp(IntCC::SignedLessThan, i, hi);
        self.b.ins().brif(more, body, &[], exit, &[]);
        // Body and exit have the header as their one predecessor.
        self.b.seal_block(body);
        self.b.seal_block(exit);
        self.b.switch_to_block(body);
        let outer_pointers = self.pointers.len();
        self.pointers.extend(pointers.iter().cloned());
        for s in &l.body {
            self.stmt(s)?;
        }
        self.step(l, &pointers);
        if let Some(second) = second {
            self.b.ins().jump(second, &[]);
            self.b.seal_block(second);
            self.b.switch_to_block(second);
            // Its parameters, so the first half's order: the reverse.
            for &local in carried.iter().rev() {
                let x = self.local(local);
                self.b.use_var(x);
            }
            for s in &l.body {
                self.stmt(s)?;
            }
            self.step(l, &pointers);
        }
        self.pointers.truncate(outer_pointers);
        self.carried_vectors = outer_carried;
        self.broadcasts = outer_broadcasts;
        self.shared = outer_shared;
        self.b.ins().jump(header, &[]);
        self.b.seal_block(header);
        self.b.switch_to_block(exit);
        Ok(())
    }

    /// Whether loop `l` runs two iterations per trip around its back edge:
    /// an innermost loop that combines into each vector register it carries
    /// (a register tile's accumulators) once per iteration, or up to three
    /// times in a large tile (see below). x86 FMA
    /// overwrites a multiplicand, so an accumulator comes out of its FMA in
    /// the broadcast's register and one iteration per trip ends in a move
    /// per accumulator (GEMM: 12 moves per 12 FMAs). Two iterations, the
    /// first half's FMAs in the reverse order of the second's, let the
    /// register allocator rotate the tile through one spare register
    /// instead: no moves. The halves are separate blocks and the second
    /// has two predecessors (the first half, and the loop's entry when
    /// the trip count is odd), so its parameters stay: the first half's
    /// jump passes them, and Cranelift, placing pure instructions at their
    /// first use, computes the first half's FMAs there, before the second
    /// half's broadcasts (else an accumulator and the broadcast replacing
    /// it would be live at once). A tile of ten or more registers unrolled
    /// over up to three taps (conv1d's, transposed 1D and 2D phases)
    /// combines several times into each register per iteration and still
    /// ends in a move per register: two iterations made conv1d 5–8%,
    /// transposed 1D 6–7% and 2D 10% faster (Zen 3, in one process), for
    /// 17–33% more compile work. Smaller tiles over taps (GEMV's eight
    /// partial sums, depthwise, the 32-group conv, transposed 3D) ran no
    /// faster (within 3%) for 18–21% more compile work, and a tile over
    /// more taps (a depthwise tile's nine) saves a move per nine FMAs or
    /// fewer: dw-separable ran 9% slower with it. Those are left alone.
    fn two_steps(&self, l: &Loop) -> bool {
        let (registers, combines) = (self.carried_vectors, self.vector_combines(l));
        let taps_fit = registers >= MIN_REGISTERS_FOR_TAPS
            && combines <= MAX_COMBINES_PER_REGISTER * registers;
        innermost(l) && registers > 0 && (combines <= registers || taps_fit)
    }

    /// Combines into vector registers per iteration of loop `l` (a register
    /// tile's FMAs).
    fn vector_combines(&self, l: &Loop) -> usize {
        l.body
            .iter()
            .filter(|s| {
                matches!(s, Stmt::Assign { local, combine: Some(_), .. }
                    if self.func.locals[local.index()].lanes > 1)
            })
            .count()
    }

    /// The broadcasts innermost loop `l` loads once and shares between
    /// their uses rather than loading afresh for each (see
    /// `loaded_per_use`): as few as keep the loop's vector loads at one per
    /// FMA. Either way each FMA overwrites one multiplicand: a broadcast per
    /// use is a `vbroadcastss m32` per FMA, a shared one a scalar load and a
    /// `vbroadcastss` per row plus a register copy per FMA but the row's
    /// last. The copy needs no execution unit (the renamer eliminates it)
    /// but is one more instruction to issue; the loads need load ports, and
    /// Zen 3 loads at most two vector registers per cycle, one per FMA at
    /// the FMA peak. GEMM's 6x2 tile loads 14 times per 12 FMAs with every
    /// broadcast per use (a loop of just that mix reached 85% of the peak
    /// loop), 8 times with all shared but then issues six instructions per
    /// cycle at the peak (Zen 3's limit), and 12 times with two rows shared:
    /// measured in one process (Zen 3, GEMM 512), all per use 70.8%, all
    /// shared 75.6%, every third row 80.8%, every second 78.8% of the
    /// peak loop; two rows shared against all, across the suite: GEMM −3%,
    /// 1x1 −4%, gcn −5%, dw-separable −11%, the 3x3 conv +2.6%, the rest
    /// within 1%. Sharing needs the body's operands, each live from its
    /// first statement to its last, to fit in the sixteen vector registers
    /// beside the tile and a copy: a row of GEMM's tile holds its broadcast
    /// and the two vectors of `B` (12 + 3 + 1), but a convolution unrolled
    /// over its taps holds a vector per tap, and one whose broadcasts
    /// serve rows far apart holds many at once: those spilled (conv1d 13%,
    /// transposed 1D 42% slower). A constant both the tile starts with and
    /// its epilogue uses holds a register across the loop too.
    fn shared_broadcasts(&self, l: &Loop, carried: &[LocalId]) -> Vec<(BufId, Vec<Affine>)> {
        let fits = || {
            self.carried_vectors + 1 + most_operands_live(&l.body, carried) + self.stored_constants
                <= VECTOR_REGISTERS
        };
        if !innermost(l) || self.carried_vectors == 0 || !self.share_broadcasts {
            return Vec::new();
        }
        // Broadcasts loaded per use unless shared, in the body's order.
        let candidates: Vec<&(BufId, Vec<Affine>, usize)> = self
            .broadcasts
            .iter()
            .filter(|(buf, _, uses)| {
                self.movable[buf.index()] && (2..=MAX_SPLIT_BROADCAST_USES).contains(uses)
            })
            .collect();
        let fmas = self.vector_combines(l);
        let mut vectors: Vec<(BufId, Vec<Affine>)> = Vec::new();
        for s in &l.body {
            s.for_each_access(&mut |buf, index, store| {
                let vector = !store
                    && !self
                        .broadcasts
                        .iter()
                        .any(|(b, i, _)| *b == buf && i == index)
                    && !vectors.iter().any(|(b, i)| *b == buf && i == index);
                if vector {
                    vectors.push((buf, index.to_vec()));
                }
            });
        }
        let others = self.broadcasts.len() - candidates.len();
        let per_use: usize = candidates.iter().map(|c| c.2).sum();
        // Sharing `n` of them, spread over the rows, saves `uses - 1` loads each.
        let spread = |n: usize| -> Vec<&(BufId, Vec<Affine>, usize)> {
            (0..n)
                .map(|k| candidates[k * candidates.len() / n])
                .collect()
        };
        let loads = |shared: &[&(BufId, Vec<Affine>, usize)]| {
            vectors.len() + others + per_use - shared.iter().map(|c| c.2 - 1).sum::<usize>()
        };
        if loads(&[]) <= fmas || !fits() {
            return Vec::new();
        }
        let n = (1..=candidates.len())
            .find(|&n| loads(&spread(n)) <= fmas)
            .unwrap_or(candidates.len());
        spread(n)
            .into_iter()
            .map(|(b, i, _)| (*b, i.clone()))
            .collect()
    }

    /// Advance loop `l`'s counter and induction pointers by one iteration.
    fn step(&mut self, l: &Loop, pointers: &[Pointer]) {
        for p in pointers {
            let x = self.b.use_var(p.var);
            let next = self.b.ins().iadd_imm_s(x, p.offset.coeff(l.var));
            self.b.def_var(p.var, next);
        }
        let var = self.var(l.var);
        let i = self.b.use_var(var);
        let next = self.b.ins().iadd_imm_s(i, 1);
        self.b.def_var(var, next);
    }

    /// The byte offset of `buf[index]` from the buffer's base.
    fn byte_offset(&self, buf: BufId, index: &[Affine]) -> Affine {
        Affine::sum(
            index
                .iter()
                .zip(self.strides[buf.index()].iter().map(|s| 4 * s)),
        )
        .expect("in bounds")
    }

    /// Pointer and constant byte offset of `buf[index]`.
    fn address(&mut self, buf: BufId, index: &[Affine]) -> (Value, i32) {
        let offset = self.byte_offset(buf, index);
        let ptr = self.pointer(
            buf,
            &Affine {
                terms: offset.terms,
                constant: 0,
            },
        );
        match i32::try_from(offset.constant) {
            Ok(off) => (ptr, off),
            Err(_) => (self.b.ins().iadd_imm_s(ptr, offset.constant), 0),
        }
    }

    /// `base(buf) + offset` (bytes, no constant part): from the induction
    /// pointer of an enclosing loop covering the most of its terms, plus the
    /// rest; from the base pointer if none does.
    fn pointer(&mut self, buf: BufId, offset: &Affine) -> Value {
        let covers =
            |p: &Pointer| p.buf == buf && p.offset.terms.iter().all(|t| offset.terms.contains(t));
        let best = self
            .pointers
            .iter()
            .filter(|p| covers(p))
            .max_by_key(|p| p.offset.terms.len())
            .map(|p| (p.var, p.offset.clone()));
        let (from, rest) = match best {
            Some((var, covered)) => (
                self.b.use_var(var),
                offset.add_scaled(&covered, -1).expect("in bounds"),
            ),
            None => (self.base(buf), offset.clone()),
        };
        let rest = self.fold_known(&rest);
        let from = match rest.constant {
            0 => from,
            c => self.b.ins().iadd_imm_s(from, c),
        };
        if rest.terms.is_empty() {
            from
        } else {
            let terms = Affine {
                terms: rest.terms,
                constant: 0,
            };
            let x = self.affine(&terms);
            self.b.ins().iadd(from, x)
        }
    }

    /// Induction pointers for loop `l` (strength reduction): one per buffer
    /// and offset its body addresses, with the terms of loops nested inside
    /// left out, for at most [`MAX_POINTERS`] of the most used. Each starts at
    /// the loop's first iteration (its variable is defined already) and is
    /// bumped by its stride on the back edge, so an address in the body is
    /// the pointer plus a constant (plus the inner loops' terms).
    fn induction_pointers(&mut self, l: &Loop) -> Vec<Pointer> {
        let mut inner = Vec::new();
        nested_vars(&l.body, &mut inner);
        let mut found: Vec<(BufId, Affine, usize)> = Vec::new();
        let mut visit = |buf: BufId, index: &[Affine], _store: bool| {
            if index.iter().all(|e| e.coeff(l.var) == 0) {
                return;
            }
            let offset = self.byte_offset(buf, index);
            if offset.coeff(l.var) == 0 {
                return;
            }
            let outer = Affine {
                terms: offset
                    .terms
                    .iter()
                    .filter(|(v, _)| !inner.contains(v))
                    .copied()
                    .collect(),
                constant: 0,
            };
            match found.iter_mut().find(|(b, o, _)| *b == buf && *o == outer) {
                Some(f) => f.2 += 1,
                None => found.push((buf, outer, 1)),
            }
        };
        l.body.iter().for_each(|s| s.for_each_access(&mut visit));
        found.sort_by_key(|f| std::cmp::Reverse(f.2));
        found.truncate(MAX_POINTERS);
        found
            .into_iter()
            .map(|(buf, offset, _)| {
                let start = self.pointer(buf, &offset);
                let var = self.b.declare_var(I64);
                self.b.def_var(var, start);
                Pointer { buf, offset, var }
            })
            .collect()
    }

    /// Uses of the broadcast of `buf[index]` in the innermost loop's body.
    fn broadcast_uses(&self, buf: BufId, index: &[Affine]) -> usize {
        self.broadcasts
            .iter()
            .find(|(b, i, _)| *b == buf && i == index)
            .map_or(1, |e| e.2)
    }

    /// Loads of a buffer no store can change under them (see
    /// [`movable_loads`]): pure, so Cranelift may move them (to their use,
    /// out of loops).
    fn read_only_flags(&self) -> MemFlagsData {
        MemFlagsData::new()
            .with_notrap()
            .with_readonly()
            .with_can_move()
    }

    /// A fresh alias region (from a small cycle: regions only need to differ
    /// between neighbouring loads, and the function's flag table is small).
    fn next_region(&mut self) -> ir::AliasRegion {
        self.regions += 1;
        let user_id = self.regions % 64;
        self.b.func.dfg.alias_regions.insert(ir::AliasRegionData {
            user_id,
            description: std::borrow::Cow::Borrowed("broadcast operand"),
        })
    }

    fn splat_if(&mut self, x: Value, ty: Type) -> Value {
        if ty == F32X4 {
            self.b.ins().splat(F32X4, x)
        } else {
            x
        }
    }

    fn f32(&mut self, c: f32, ty: Type) -> Value {
        let x = self.b.ins().f32const(c);
        self.splat_if(x, ty)
    }

    /// Whether `x`, broadcast, is loaded afresh for each use: a scalar of
    /// a buffer no store can change, used by few FMAs of the loop.
    fn loaded_per_use(&self, x: &Expr) -> bool {
        matches!(x, Expr::Load { buf, index, lanes: 1, .. }
            if self.movable[buf.index()]
                && self.broadcast_uses(*buf, index) <= MAX_SPLIT_BROADCAST_USES
                && !self.is_shared(x))
    }

    /// Whether `x`, broadcast, is one of the innermost loop's shared ones.
    fn is_shared(&self, x: &Expr) -> bool {
        matches!(x, Expr::Load { buf, index, .. }
            if self.shared.iter().any(|(b, i)| b == buf && i == index))
    }

    /// `x * y + z` as one `fma`. x64's FMA overwrites its first
    /// multiplicand, so that is a broadcast (loaded afresh for each use, or
    /// shared by a row of the tile and copied for all but its last use)
    /// rather than a vector a column of the tile shares (a convolution's
    /// input), which would be copied for all but the column's last row.
    fn fma(&mut self, x: &Expr, y: &Expr, z: Value) -> Result<Value> {
        let (x, y) = match (x, y) {
            (x, Expr::Broadcast(b))
                if (self.is_shared(b) || self.loaded_per_use(b))
                    && !matches!(x, Expr::Broadcast(_)) =>
            {
                (y, x)
            }
            _ => (x, y),
        };
        let (x, y) = (self.expr(x)?, self.expr(y)?);
        Ok(self.b.ins().fma(x, y, z))
    }

    /// `old` combined with `value`: `fma` for a sum of a product when the CPU has it.
    fn combine(&mut self, c: Combine, old: Value, value: &Expr) -> Result<Value> {
        match (c, value) {
            (Combine::Sum, Expr::Binary(BinOp::Mul, x, y)) if self.fma => self.fma(x, y, old),
            (Combine::Sum, _) => {
                let v = self.expr(value)?;
                Ok(self.b.ins().fadd(old, v))
            }
            (Combine::Max, _) => {
                let v = self.expr(value)?;
                Ok(self.combine_max_min(old, v, true))
            }
            (Combine::Min, _) => {
                let v = self.expr(value)?;
                Ok(self.combine_max_min(old, v, false))
            }
        }
    }

    /// `f32::max(old, new)` (or `min`) where `old` is never NaN — it starts
    /// at the operator's identity and only ever takes values chosen here —
    /// so `new` wins only when it compares greater (less): a NaN `new` keeps
    /// `old`, as `f32::max` does. On vectors this is one `maxps`/`minps`.
    fn combine_max_min(&mut self, old: Value, new: Value, max: bool) -> Value {
        let (a, b) = if max { (old, new) } else { (new, old) };
        let wins = self.b.ins().fcmp(FloatCC::LessThan, a, b);
        self.select(wins, new, old)
    }

    /// `f32::max`/`f32::min`: the other operand when one is NaN.
    fn max_min(&mut self, a: Value, b: Value, max: bool) -> Value {
        let cc = if max {
            FloatCC::GreaterThanOrEqual
        } else {
            FloatCC::LessThanOrEqual
        };
        let wins = self.b.ins().fcmp(cc, a, b);
        let b_nan = self.b.ins().fcmp(FloatCC::Unordered, b, b);
        let take_a = self.b.ins().bor(wins, b_nan);
        self.select(take_a, a, b)
    }

    /// How a load of every other element from `buf[index]` lines up with the
    /// pairs of vectors an even element starts (see `load_lanes`), if the
    /// first element's parity is the same at every iteration.
    fn pairing(&self, buf: BufId, index: &[Affine]) -> Option<Pairing> {
        let bytes = self.fold_known(&self.byte_offset(buf, index));
        if bytes.terms.iter().any(|&(_, c)| c % 8 != 0) {
            return None;
        }
        if bytes.constant.rem_euclid(8) != 0 {
            return Some(Pairing::Odd);
        }
        let ranges: Option<Vec<(Var, (i64, i64))>> = bytes
            .terms
            .iter()
            .map(|&(v, _)| Some((v, self.ranges[v.index()]?)))
            .collect();
        let ranges = ranges?;
        let range = |v: Var| ranges.iter().find(|(x, _)| *x == v).expect("ranged").1;
        let (_, last) = bytes.bounds_over(&range)?;
        let len = self.func.buffers[buf.index()].len() as i64;
        Some(match last / 4 + 2 * i64::from(LANES) <= len {
            true => Pairing::Even,
            false => Pairing::EvenAtEnd,
        })
    }

    /// The vector of lanes `lanes` of `a` (0–3) and `b` (4–7): one `shufps`.
    fn pick_lanes(&mut self, a: Value, b: Value, lanes: [u8; 4]) -> Value {
        let bytes: Vec<u8> = lanes.iter().flat_map(|&l| 4 * l..4 * l + 4).collect();
        let mask = self.b.func.dfg.immediates.push(bytes.into());
        let le = MemFlagsData::new().with_endianness(ir::Endianness::Little);
        let a = self.b.ins().bitcast(I8X16, le, a);
        let b = self.b.ins().bitcast(I8X16, le, b);
        let picked = self.b.ins().shuffle(a, b, mask);
        self.b.ins().bitcast(F32X4, le, picked)
    }

    /// Lane-wise `mask ? x : y` for a comparison result `mask`.
    fn select(&mut self, mask: Value, x: Value, y: Value) -> Value {
        if self.b.func.dfg.value_type(x) == F32X4 {
            let mask = self.b.ins().bitcast(F32X4, MemFlagsData::new(), mask);
            self.b.ins().bitselect(mask, x, y)
        } else {
            self.b.ins().select(mask, x, y)
        }
    }

    /// `lanes` elements `step` apart from `ptr + off`: a scalar, a vector,
    /// or a gather.
    fn load_lanes(
        &mut self,
        flags: MemFlagsData,
        ptr: Value,
        off: i32,
        lanes: u32,
        step: i64,
        pairing: Option<Pairing>,
    ) -> Value {
        match (lanes, step) {
            (1, _) => self.b.ins().load(F32, flags, ptr, off),
            (_, 1) => self.b.ins().load(F32X4, flags, ptr, off),
            (4, 2)
                if self.carried_vectors <= ROOM_FOR_SHUFFLES
                    && off.checked_sub(4).is_some()
                    && off.checked_add(16).is_some() =>
            {
                // Every other element (pooling, a stride-2 window, a copy
                // split by residue): two vector loads and one shuffle. From
                // the even element at or before the first lane's, loads of
                // whole pairs, which the odd lanes' and the even lanes'
                // loads of one place share (Cranelift merges equal pure
                // loads): the two residues of a copy's row cost a load per
                // vector, not two. An even start too near the buffer's end
                // for its pair (or of unknown parity) loads exactly the
                // seven elements from the first lane's to the last's. It
                // needs two registers at once, so a large register tile (a
                // stride-2 convolution's) gathers lane by lane.
                let (from, second, lanes) = match pairing {
                    Some(Pairing::Even) => (off, off + 16, [0, 2, 4, 6]),
                    Some(Pairing::Odd) => (off - 4, off + 12, [1, 3, 5, 7]),
                    Some(Pairing::EvenAtEnd) | None => (off, off + 12, [0, 2, 5, 7]),
                };
                let first = self.b.ins().load(F32X4, flags, ptr, from);
                let second = self.b.ins().load(F32X4, flags, ptr, second);
                self.pick_lanes(first, second, lanes)
            }
            (n, s) => {
                // A gather: one scalar load per lane, `4*s` bytes apart.
                let first = self.b.ins().load(F32, flags, ptr, off);
                let mut v = self.b.ins().splat(F32X4, first);
                for lane in 1..n {
                    let at = off + (4 * s * i64::from(lane)) as i32;
                    let x = self.b.ins().load(F32, flags, ptr, at);
                    v = self.b.ins().insertlane(v, x, lane as u8);
                }
                v
            }
        }
    }

    fn expr(&mut self, e: &Expr) -> Result<Value> {
        Ok(match e {
            Expr::Const(c) => self.b.ins().f32const(*c),
            Expr::Load {
                buf,
                index,
                lanes,
                step,
            } => {
                let (ptr, off) = self.address(*buf, index);
                let flags = if self.movable[buf.index()] {
                    self.read_only_flags()
                } else {
                    MemFlagsData::new().with_notrap()
                };
                let pairing = match (*lanes, *step) {
                    (4, 2) => self.pairing(*buf, index),
                    _ => None,
                };
                self.load_lanes(flags, ptr, off, *lanes, *step, pairing)
            }
            Expr::Reduce(c, x) => {
                let v = self.expr(x)?;
                let mut acc = self.b.ins().extractlane(v, 0);
                for lane in 1..LANES as u8 {
                    let y = self.b.ins().extractlane(v, lane);
                    acc = match c {
                        Combine::Sum => self.b.ins().fadd(acc, y),
                        Combine::Max => self.max_min(acc, y, true),
                        Combine::Min => self.max_min(acc, y, false),
                    };
                }
                acc
            }
            Expr::Broadcast(x) => {
                // A broadcast load of an input used by few FMAs of the loop
                // (GEMM's `A[i, k]`: two) gets its own alias region per use,
                // so that GVN keeps the copies apart: each then folds into
                // its own `vbroadcastss m32` at its use, instead of one
                // vector held live across a row of the register tile. One
                // used by many (a depthwise weight: twelve) stays shared.
                let x = match &**x {
                    Expr::Load { buf, index, .. } if self.loaded_per_use(x) => {
                        let (ptr, off) = self.address(*buf, index);
                        let flags = self
                            .read_only_flags()
                            .with_alias_region(Some(self.next_region()));
                        self.b.ins().load(F32, flags, ptr, off)
                    }
                    x => self.expr(x)?,
                };
                self.b.ins().splat(F32X4, x)
            }
            Expr::Local(l) => {
                let var = self.local(*l);
                self.b.use_var(var)
            }
            Expr::Unary(op, x) => {
                let x = self.expr(x)?;
                self.unary(*op, x)?
            }
            Expr::Binary(BinOp::Add, a, b) if self.fma => match (&**a, &**b) {
                (Expr::Binary(BinOp::Mul, x, y), z) | (z, Expr::Binary(BinOp::Mul, x, y)) => {
                    let z = self.expr(z)?;
                    self.fma(x, y, z)?
                }
                _ => {
                    let (a, b) = (self.expr(a)?, self.expr(b)?);
                    self.b.ins().fadd(a, b)
                }
            },
            // `x / 2^k` is `x * 2^-k` exactly (both round the same exact
            // value), and a multiply is several times cheaper than a divide.
            Expr::Binary(BinOp::Div, a, d) if exact_reciprocal(d).is_some() => {
                let r = exact_reciprocal(d).expect("matched");
                let (a, r) = (self.expr(a)?, self.expr(&r)?);
                self.b.ins().fmul(a, r)
            }
            // `f32::max(x, c)` / `f32::min(x, c)` with a constant `c` that is
            // not NaN is one `maxps` / `minps`, which returns `c` where `x`
            // is NaN, as they do (a ReLU6's `min(.., 6)`: 6 instructions
            // per vector fewer; MobileNet's depthwise 3x3 + bias + ReLU6 over
            // 14×14 ran 22.7 GFLOP/s, 38.8 without the clamp).
            Expr::Binary(op @ (BinOp::Max | BinOp::Min), a, b)
                if [a, b]
                    .iter()
                    .any(|x| x.constant().is_some_and(|c| !c.is_nan())) =>
            {
                let (x, c) = match b.constant().is_some_and(|c| !c.is_nan()) {
                    true => (a, b),
                    false => (b, a),
                };
                let (x, c) = (self.expr(x)?, self.expr(c)?);
                let wins = match op {
                    BinOp::Max => self.b.ins().fcmp(FloatCC::LessThan, c, x),
                    _ => self.b.ins().fcmp(FloatCC::LessThan, x, c),
                };
                self.select(wins, x, c)
            }
            Expr::Binary(op, a, b) => {
                let (a, b) = (self.expr(a)?, self.expr(b)?);
                match op {
                    BinOp::Add => self.b.ins().fadd(a, b),
                    BinOp::Sub => self.b.ins().fsub(a, b),
                    BinOp::Mul => self.b.ins().fmul(a, b),
                    BinOp::Div => self.b.ins().fdiv(a, b),
                    BinOp::Max => self.max_min(a, b, true),
                    BinOp::Min => self.max_min(a, b, false),
                }
            }
        })
    }

    fn unary(&mut self, op: UnOp, x: Value) -> Result<Value> {
        let ty = self.b.func.dfg.value_type(x);
        Ok(match op {
            UnOp::Neg => self.b.ins().fneg(x),
            UnOp::Abs => self.b.ins().fabs(x),
            UnOp::Sqrt => self.b.ins().sqrt(x),
            UnOp::Relu if ty == F32X4 => {
                // x > 0 ? x : 0 without a zero vector, which Cranelift
                // would share with the tile's zero accumulators and so
                // hold in a register across the tile's loop (see
                // `stored_constants`): lanes with the sign bit set (negative,
                // -0, -NaN) are cleared, then the NaN lanes (x != x).
                let none = MemFlagsData::new();
                let bits = self.b.ins().bitcast(I32X4, none, x);
                let sign = self.b.ins().sshr_imm_u(bits, 31);
                let sign = self.b.ins().bitcast(F32X4, none, sign);
                let kept = self.b.ins().band_not(x, sign);
                let ordered = self.b.ins().fcmp(FloatCC::Equal, x, x);
                let ordered = self.b.ins().bitcast(F32X4, none, ordered);
                self.b.ins().band(kept, ordered)
            }
            UnOp::Relu => {
                // x > 0 ? x : 0, so that relu(NaN) = 0 as in `f32::max(x, 0)`.
                let zero = self.f32(0.0, ty);
                let pos = self.b.ins().fcmp(FloatCC::GreaterThan, x, zero);
                self.select(pos, x, zero)
            }
            UnOp::Exp | UnOp::Log | UnOp::Tanh | UnOp::Sigmoid => {
                let f = self
                    .libm
                    .iter()
                    .find(|(o, _)| *o == op)
                    .map(|(_, f)| *f)
                    .ok_or_else(|| codegen_error(format!("no libcall for {}", op.name())))?;
                if ty == F32 {
                    let call = self.b.ins().call(f, &[x]);
                    self.b.inst_results(call)[0]
                } else {
                    let mut v = x;
                    for lane in 0..LANES as u8 {
                        let xi = self.b.ins().extractlane(x, lane);
                        let call = self.b.ins().call(f, &[xi]);
                        let r = self.b.inst_results(call)[0];
                        v = self.b.ins().insertlane(v, r, lane);
                    }
                    v
                }
            }
        })
    }
}

/// Registers a loop carries from one iteration to the next: those its body
/// combines into (reads) before it assigns them. `assigned` collects the
/// registers given a fresh value earlier in the body.
fn carried_locals(body: &[Stmt], assigned: &mut Vec<LocalId>, out: &mut Vec<LocalId>) {
    for s in body {
        match s {
            Stmt::Loop(l) => carried_locals(&l.body, assigned, out),
            Stmt::Assign { local, combine, .. } => {
                if combine.is_some() && !assigned.contains(local) && !out.contains(local) {
                    out.push(*local);
                } else if combine.is_none() {
                    assigned.push(*local);
                }
            }
            Stmt::Store { .. } => {}
        }
    }
}

/// Per buffer, whether the nest's loads of it may be marked `readonly` and
/// `can_move`, which lets Cranelift place each at its use and hoist it out
/// of loops it does not depend on (without it, loads keep program order:
/// an unrolled body loads everything first and spills). True for a buffer
/// the nest does not store to (an input, a panel packed by an earlier nest)
/// and for one it produces and then consumes (a tile-fused temporary) when
/// moving a load cannot cross a store to it:
/// - in program order every store to it comes before every load of it, so
///   a load placed at its use has only loads of it in between;
/// - for each loop around it that also stores to the buffer, each load's
///   address depends on that loop or on a loop inside it that stores
///   nothing to the buffer (a stack slice, the same few kilobytes in every
///   iteration, is read in the tile loops after its copy), so it cannot be
///   hoisted (or merged with another load) past an iteration's stores:
///   Cranelift hoists an instruction only out of loops its operands do not
///   depend on, to just before that loop.
fn movable_loads(func: &Func, nest: &Stmt, strides: &[Vec<i64>]) -> Vec<bool> {
    let n = func.buffers.len();
    let mut movable = vec![true; n];
    // Per buffer, the loops around any store to it; a load before a store
    // keeps the buffer's loads in place.
    let mut storing: Vec<Vec<Var>> = vec![Vec::new(); n];
    let mut loaded = vec![false; n];
    walk_with_loops(nest, &mut Vec::new(), &mut |around, buf, _, store| {
        let b = buf.index();
        if store {
            movable[b] &= !loaded[b];
            for &v in around {
                if !storing[b].contains(&v) {
                    storing[b].push(v);
                }
            }
        } else {
            loaded[b] = true;
        }
    });
    // Each load's address must move with every loop around it that stores.
    walk_with_loops(nest, &mut Vec::new(), &mut |around, buf, index, store| {
        let b = buf.index();
        let depends = |v: Var| {
            index
                .iter()
                .zip(&strides[b])
                .map(|(e, s)| e.coeff(v) * s)
                .sum::<i64>()
                != 0
        };
        // (The load cannot leave such an inner loop, which comes after the
        // stores of the same iteration.)
        let pinned = |k: usize| {
            around[k + 1..]
                .iter()
                .any(|&w| !storing[b].contains(&w) && depends(w))
        };
        if !store
            && around
                .iter()
                .enumerate()
                .any(|(k, &v)| storing[b].contains(&v) && !depends(v) && !pinned(k))
        {
            movable[b] = false;
        }
    });
    movable
}

/// A visitor of accesses: the loops around it, buffer, index, whether a store.
type AccessInLoops<'a> = dyn FnMut(&[Var], BufId, &[Affine], bool) + 'a;

/// Every access of `s` in program order, with the variables of the loops
/// around it.
fn walk_with_loops(s: &Stmt, around: &mut Vec<Var>, f: &mut AccessInLoops) {
    match s {
        Stmt::Loop(l) => {
            around.push(l.var);
            l.body.iter().for_each(|b| walk_with_loops(b, around, f));
            around.pop();
        }
        _ => s.for_each_access(&mut |buf, index, store| f(around, buf, index, store)),
    }
}

/// Whether loop `l` has no loop inside.
fn innermost(l: &Loop) -> bool {
    l.body.iter().all(|s| !matches!(s, Stmt::Loop(_)))
}

/// Variables of the loops inside `body`.
fn nested_vars(body: &[Stmt], out: &mut Vec<Var>) {
    for s in body {
        if let Stmt::Loop(l) = s {
            out.push(l.var);
            nested_vars(&l.body, out);
        }
    }
}

/// The most operands (distinct loads) live at once in innermost body
/// `body` whose registers `carried` go around the loop in that order:
/// Cranelift computes each carried register's chain of statements where
/// the back edge passes it, register by register, so that is the order
/// the statements run in, and each operand is live from the first
/// statement that reads it to the last.
fn most_operands_live(body: &[Stmt], carried: &[LocalId]) -> usize {
    let target = |s: &Stmt| match s {
        Stmt::Assign { local, .. } => carried.iter().position(|c| c == local),
        _ => None,
    };
    let mut order: Vec<&Stmt> = Vec::new();
    for n in 0..carried.len() {
        order.extend(body.iter().filter(|s| target(s) == Some(n)));
    }
    order.extend(body.iter().filter(|s| target(s).is_none()));
    let mut spans: Vec<(BufId, Vec<Affine>, usize, usize)> = Vec::new();
    for (n, s) in order.iter().enumerate() {
        s.for_each_access(&mut |buf, index, store| {
            if store {
                return;
            }
            match spans.iter_mut().find(|(b, i, ..)| *b == buf && i == index) {
                Some(span) => span.3 = n,
                None => spans.push((buf, index.to_vec(), n, n)),
            }
        });
    }
    (0..order.len())
        .map(|n| spans.iter().filter(|s| s.2 <= n && n <= s.3).count())
        .max()
        .unwrap_or(0)
}

/// The constants `nest` both starts registers with and stores (a zero
/// accumulator and `max(T, 0)` after the loop): Cranelift computes one
/// value per constant, placed at its first use, so such a constant is
/// computed before a register tile's loop and held in a register across
/// it. (A constant only an epilogue uses is computed there.)
fn stored_constants(nest: &Stmt) -> usize {
    fn constants(e: &Expr, out: &mut Vec<u32>) {
        match e {
            Expr::Const(c) => {
                if !out.contains(&c.to_bits()) {
                    out.push(c.to_bits());
                }
            }
            Expr::Load { .. } | Expr::Local(_) => {}
            Expr::Broadcast(x) | Expr::Reduce(_, x) | Expr::Unary(_, x) => constants(x, out),
            Expr::Binary(_, a, b) => {
                constants(a, out);
                constants(b, out);
            }
        }
    }
    fn walk(s: &Stmt, starts: &mut Vec<u32>, stores: &mut Vec<u32>) {
        match s {
            Stmt::Loop(l) => l.body.iter().for_each(|s| walk(s, starts, stores)),
            Stmt::Store { value, .. } => constants(value, stores),
            Stmt::Assign {
                value,
                combine: None,
                ..
            } => constants(value, starts),
            Stmt::Assign { .. } => {}
        }
    }
    let (mut starts, mut stores) = (Vec::new(), Vec::new());
    walk(nest, &mut starts, &mut stores);
    stores.iter().filter(|c| starts.contains(c)).count()
}

/// Every broadcast of a scalar load in `body`: its buffer and index.
fn for_each_broadcast(body: &[Stmt], f: &mut dyn FnMut(BufId, &[Affine])) {
    fn expr(e: &Expr, f: &mut dyn FnMut(BufId, &[Affine])) {
        match e {
            Expr::Broadcast(x) => match &**x {
                Expr::Load { buf, index, .. } => f(*buf, index),
                x => expr(x, f),
            },
            Expr::Const(_) | Expr::Local(_) | Expr::Load { .. } => {}
            Expr::Reduce(_, x) | Expr::Unary(_, x) => expr(x, f),
            Expr::Binary(_, a, b) => {
                expr(a, f);
                expr(b, f);
            }
        }
    }
    for s in body {
        match s {
            Stmt::Loop(l) => for_each_broadcast(&l.body, f),
            Stmt::Store { value, .. } | Stmt::Assign { value, .. } => expr(value, f),
        }
    }
}

/// `1 / d` for a constant divisor `d` (or its broadcast) that is a power of
/// two whose reciprocal is a normal number: dividing by it and multiplying
/// by the reciprocal give the same result for every input.
fn exact_reciprocal(d: &Expr) -> Option<Expr> {
    match d {
        Expr::Const(c) => {
            let r = 1.0 / c;
            let power_of_two = c.is_normal() && c.to_bits() & 0x007f_ffff == 0;
            (power_of_two && r.is_normal()).then_some(Expr::Const(r))
        }
        Expr::Broadcast(x) => exact_reciprocal(x).map(|r| Expr::Broadcast(Box::new(r))),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_powers_of_two_with_normal_reciprocals_become_multiplies() {
        let r = |c: f32| match exact_reciprocal(&Expr::Const(c)) {
            Some(Expr::Const(r)) => Some(r),
            _ => None,
        };
        assert_eq!(r(4.0), Some(0.25));
        assert_eq!(r(-0.5), Some(-2.0));
        assert_eq!(r(2f32.powi(126)), Some(2f32.powi(-126)));
        for c in [
            3.0,
            0.1,
            0.0,
            -0.0,
            f32::INFINITY,
            f32::NAN,
            2f32.powi(127),
            f32::MIN_POSITIVE / 2.0,
        ] {
            assert_eq!(r(c), None, "{c}");
        }
        let splat = Expr::Broadcast(Box::new(Expr::Const(8.0)));
        assert_eq!(
            exact_reciprocal(&splat),
            Some(Expr::Broadcast(Box::new(Expr::Const(0.125))))
        );
    }
}
