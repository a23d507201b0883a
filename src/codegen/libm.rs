//! The transcendental functions generated code calls: Rust's own, through
//! `UnOp::eval`, so native code and the interpreter agree exactly.

use crate::ir::UnOp;
use cranelift_codegen::ir::types::F32;
use cranelift_codegen::ir::{self, AbiParam, Signature};
use cranelift_jit::{JITBuilder, JITModule};
use cranelift_module::{FuncId, Linkage, Module};

extern "C" fn einjit_exp(x: f32) -> f32 {
    UnOp::Exp.eval(x)
}
extern "C" fn einjit_log(x: f32) -> f32 {
    UnOp::Log.eval(x)
}
extern "C" fn einjit_tanh(x: f32) -> f32 {
    UnOp::Tanh.eval(x)
}
extern "C" fn einjit_sigmoid(x: f32) -> f32 {
    UnOp::Sigmoid.eval(x)
}

const FUNCTIONS: [(UnOp, &str, extern "C" fn(f32) -> f32); 4] = [
    (UnOp::Exp, "einjit_exp", einjit_exp),
    (UnOp::Log, "einjit_log", einjit_log),
    (UnOp::Tanh, "einjit_tanh", einjit_tanh),
    (UnOp::Sigmoid, "einjit_sigmoid", einjit_sigmoid),
];

/// Make the functions' addresses known to the JIT linker.
pub fn register(builder: &mut JITBuilder) {
    for (_, name, f) in FUNCTIONS {
        builder.symbol(name, f as *const u8);
    }
}

/// The declared functions, by operation, with their common signature.
pub struct Libm {
    ids: Vec<(UnOp, FuncId)>,
    signature: Signature,
}

impl Libm {
    /// Make `op`'s function callable from `func` (what
    /// `Module::declare_func_in_func` does, without the module, so that
    /// nests can be built on several threads).
    pub fn import(&self, op: UnOp, func: &mut ir::Function) -> Option<ir::FuncRef> {
        let id = self.ids.iter().find(|(o, _)| *o == op)?.1;
        let signature = func.import_signature(self.signature.clone());
        let name = func.declare_imported_user_function(ir::UserExternalName {
            namespace: 0,
            index: id.as_u32(),
        });
        Some(func.import_function(ir::ExtFuncData {
            name: ir::ExternalName::user(name),
            signature,
            colocated: false,
            patchable: false,
        }))
    }
}

pub fn declare(module: &mut JITModule) -> Result<Libm, String> {
    let mut sig = module.make_signature();
    sig.params.push(AbiParam::new(F32));
    sig.returns.push(AbiParam::new(F32));
    let ids = FUNCTIONS
        .iter()
        .map(|(op, name, _)| {
            let id = module
                .declare_function(name, Linkage::Import, &sig)
                .map_err(|e| e.to_string())?;
            Ok((*op, id))
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Libm {
        ids,
        signature: sig,
    })
}
