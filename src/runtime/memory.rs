//! Storage for intermediates: a temporary is live from the first nest that
//! touches it to the last; one whose life has ended lends its memory to a
//! temporary created later (the largest size wins). Inputs and outputs
//! keep their own storage; a stack slice (`BufKind::Stack`) needs none.

use crate::ir::{BufId, BufKind, Func, Stmt};

#[derive(Clone, Debug, PartialEq)]
pub struct MemoryPlan {
    /// Per buffer: the buffer whose allocation it uses (itself if it owns one).
    pub owner: Vec<usize>,
    /// Per buffer: elements to allocate (0 for the caller's inputs and for
    /// buffers using another's storage).
    pub len: Vec<usize>,
    /// Per nest: it only stores constants into a temporary whose values
    /// persist from one run to the next (see `runs_once`), so a run on
    /// reused storage skips it (the zero border of a padded copy).
    pub once: Vec<bool>,
    /// Per nest: run once, and its constants are all `+0.0`, which fresh
    /// storage already holds (temporaries are allocated zeroed): it is
    /// never compiled nor run.
    pub zeroed: Vec<bool>,
}

impl MemoryPlan {
    /// The plan for `func`; `passed[k]`: the temporaries nest `k` writes
    /// and reads back slice by slice (a fused producer → consumer nest).
    pub fn new(func: &Func, passed: &[Vec<BufId>]) -> MemoryPlan {
        let n = func.buffers.len();
        let mut first = vec![usize::MAX; n];
        let mut last = vec![0; n];
        for (k, nest) in func.body.iter().enumerate() {
            let mut used = vec![false; n];
            nest.mark_buffers(&mut used);
            for b in (0..n).filter(|&b| used[b]) {
                first[b] = first[b].min(k);
                last[b] = k;
            }
        }
        let mut owner: Vec<usize> = (0..n).collect();
        let mut len: Vec<usize> = func
            .buffers
            .iter()
            .map(|b| match b.kind {
                BufKind::Input | BufKind::Stack { .. } => 0,
                _ => b.len(),
            })
            .collect();
        // Temporaries by first use; `slots`: (owning buffer, last nest of its current tenant).
        let mut temps: Vec<usize> = (0..n)
            .filter(|&b| func.buffers[b].kind == BufKind::Temp)
            .collect();
        temps.sort_by_key(|&b| first[b]);
        let mut slots: Vec<(usize, usize)> = Vec::new();
        for b in temps {
            if first[b] == usize::MAX {
                len[b] = 0; // never touched
                continue;
            }
            let need = len[b];
            // A free slot: the smallest that fits, else the largest (grown).
            let free = |&(_, end): &(usize, usize)| end < first[b];
            let pick = slots
                .iter()
                .enumerate()
                .filter(|(_, s)| free(s))
                .min_by_key(|(_, &(o, _))| {
                    let size = len[o];
                    (
                        size < need,
                        if size >= need {
                            size
                        } else {
                            usize::MAX - size
                        },
                    )
                })
                .map(|(k, _)| k);
            match pick {
                Some(k) => {
                    let o = slots[k].0;
                    len[o] = len[o].max(need);
                    len[b] = 0;
                    owner[b] = o;
                    slots[k].1 = last[b];
                }
                None => slots.push((b, last[b])),
            }
        }
        let fills: Vec<_> = func.body.iter().map(Stmt::constant_fill).collect();
        let once: Vec<bool> = (0..func.body.len())
            .map(|k| fills[k].is_some_and(|(b, _)| runs_once(func, &owner, passed, k, b)))
            .collect();
        let zeroed = (0..func.body.len())
            .map(|k| once[k] && fills[k].is_some_and(|(_, zeros)| zeros))
            .collect();
        MemoryPlan {
            owner,
            len,
            once,
            zeroed,
        }
    }

    /// Dump lines: which temporary uses whose storage.
    pub fn describe(&self, func: &Func) -> Vec<String> {
        (0..self.owner.len())
            .filter(|&b| self.owner[b] != b)
            .map(|b| {
                format!(
                    "memory: {} reuses the storage of {} (dead by then)",
                    func.buffers[b].name, func.buffers[self.owner[b]].name
                )
            })
            .collect()
    }
}

/// Whether nest `k` need run only on fresh storage: it stores only
/// constants (plain stores) into one temporary `b` that has its storage to
/// itself, and every other nest that writes `b` only overwrites elements
/// (plain stores) and reads none before writing it (no reads of `b`, or,
/// in a fused nest passing `b`, reads of the slice just written). The
/// elements those nests write are the same in every run (bounds depend on
/// shapes only), so the others keep the constants from the first run.
fn runs_once(func: &Func, owner: &[usize], passed: &[Vec<BufId>], k: usize, b: BufId) -> bool {
    let private = func.buffers[b.index()].kind == BufKind::Temp
        && owner
            .iter()
            .enumerate()
            .all(|(x, &o)| (o == b.index()) == (x == b.index()));
    let overwritten_only = func.body.iter().enumerate().all(|(m, nest)| {
        if m == k {
            return true;
        }
        let (mut writes, mut loads) = (false, false);
        nest.for_each_access(&mut |buf, _, store| {
            writes |= buf == b && store;
            loads |= buf == b && !store;
        });
        !writes || (!combines_into(nest, b) && (!loads || passed[m].contains(&b)))
    });
    private && overwritten_only
}

/// Whether `s` has a store that combines into `b` (reads it back).
fn combines_into(s: &Stmt, b: BufId) -> bool {
    match s {
        Stmt::Loop(l) => l.body.iter().any(|s| combines_into(s, b)),
        Stmt::Store { buf, combine, .. } => *buf == b && combine.is_some(),
        Stmt::Assign { .. } => false,
    }
}
