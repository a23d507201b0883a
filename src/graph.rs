//! The dataflow graph of a checked program: a node per statement, an edge
//! from each statement that writes a tensor version to each later statement
//! that reads it or accumulates into it (`+=`), labelled with the version.
//!
//! Versions make the program single-assignment per name, so a cycle cannot
//! arise from the text; the graph is still checked for one, and for a
//! version that is written and then replaced before anything reads it
//! (`O = A; O max= B` does not combine: the second starts a new `O`). The
//! fusion pass asks it who reads and writes what. Edges only go forward, so
//! the statements' own order is a topological order, and runs follow it.

use crate::check::{Init, Origin, Program, TensorId};
use crate::error::{Error, ErrorKind, Result};
use petgraph::algo::toposort;
use petgraph::graph::{DiGraph, NodeIndex};

#[derive(Debug)]
pub struct Dataflow {
    /// Node weight: the statement's index; edge weight: the tensor version.
    pub graph: DiGraph<usize, TensorId>,
    /// For each tensor version, the statements that write it (its creator,
    /// then each `+=` into it).
    writers: Vec<Vec<usize>>,
    /// For each tensor version, the statements that read it.
    readers: Vec<Vec<usize>>,
}

impl Dataflow {
    pub fn new(program: &Program) -> Dataflow {
        let mut graph = DiGraph::new();
        let nodes: Vec<NodeIndex> = (0..program.statements.len())
            .map(|n| graph.add_node(n))
            .collect();
        let mut writers = vec![Vec::new(); program.tensors.len()];
        let mut readers = vec![Vec::new(); program.tensors.len()];
        for (n, st) in program.statements.iter().enumerate() {
            // (A fused epilogue's reads are the statement's too.)
            let mut used: Vec<TensorId> = st
                .rhs
                .reads()
                .into_iter()
                .chain(st.epilogue_reads())
                .map(|a| a.tensor)
                .collect();
            if let Init::CopyOf(src) = st.init {
                used.push(src);
            }
            for &t in &used {
                if !readers[t.index()].contains(&n) {
                    readers[t.index()].push(n);
                }
            }
            if st.init == Init::Existing {
                used.push(st.lhs.tensor);
            }
            used.dedup();
            for t in used {
                for &w in &writers[t.index()] {
                    if w != n {
                        graph.update_edge(nodes[w], nodes[n], t);
                    }
                }
            }
            writers[st.lhs.tensor.index()].push(n);
        }
        Dataflow {
            graph,
            writers,
            readers,
        }
    }

    /// Build the graph and check it: no cycle, no version replaced unread.
    pub fn checked(program: &Program) -> Result<Dataflow> {
        let flow = Dataflow::new(program);
        if let Err(cycle) = toposort(&flow.graph, None) {
            let st = &program.statements[flow.graph[cycle.node_id()]];
            let name = program.tensor(st.lhs.tensor).name.clone();
            return Err(Error::new(ErrorKind::Cycle(name), st.span));
        }
        flow.check_overwrites(program)?;
        Ok(flow)
    }

    /// The statements that read version `t`.
    pub fn readers(&self, t: TensorId) -> &[usize] {
        &self.readers[t.index()]
    }

    /// The statements that write version `t`.
    pub fn writers(&self, t: TensorId) -> &[usize] {
        &self.writers[t.index()]
    }

    /// A version a statement wrote that the next version of its name
    /// replaces before any statement read it is almost surely a mistake:
    /// `max=` and `=` start afresh, they do not combine with what was there.
    fn check_overwrites(&self, program: &Program) -> Result<()> {
        for (n, st) in program.statements.iter().enumerate() {
            if st.init != Init::Identity {
                continue;
            }
            let name = &program.tensor(st.lhs.tensor).name;
            // The previous version of the same name, if a statement made it.
            let previous = (0..st.lhs.tensor.index())
                .rev()
                .map(|i| TensorId(i as u32))
                .find(|&t| &program.tensor(t).name == name);
            let Some(prev) = previous else { continue };
            if program.tensor(prev).origin == Origin::Input || !self.readers(prev).is_empty() {
                continue;
            }
            let last_writer = *self.writers(prev).last().expect("a statement made it");
            return Err(Error::new(
                ErrorKind::OverwrittenUnread {
                    tensor: name.clone(),
                    first: last_writer + 1,
                    second: n + 1,
                    op: st.op.as_str().to_string(),
                },
                st.lhs.span,
            )
            .with_secondary(program.statements[last_writer].lhs.span));
        }
        Ok(())
    }
}
