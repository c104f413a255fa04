//! Describing and validating a pipeline: nodes wired by name into a DAG,
//! checked once (cycles, duplicate names and producers, type mismatches,
//! input type conflicts), with the pipeline's inputs found.

use std::collections::{HashMap, HashSet};

use petgraph::graph::{DiGraph, NodeIndex};

use super::InputInfo;
use crate::error::Error;
use crate::node::Node;
use crate::value::{Value, ValueType};

pub(crate) struct Graph {
    pub nodes: Vec<Node>,
    /// Node indices in topological order.
    pub order: Vec<usize>,
    /// Output name -> (node, output port).
    pub producers: HashMap<String, (usize, usize)>,
    pub inputs: Vec<InputInfo>,
}

pub(crate) fn check_type(name: &str, ty: ValueType, value: &Value) -> Result<(), Error> {
    if ty.matches(value) {
        Ok(())
    } else {
        Err(Error::InputType {
            name: name.to_string(),
            expected: ty.name(),
            actual: value.type_name(),
        })
    }
}

pub(crate) fn build_graph(nodes: Vec<Node>) -> Result<Graph, Error> {
    let mut names: HashSet<&str> = HashSet::new();
    for n in &nodes {
        if !names.insert(&n.name) {
            return Err(Error::DuplicateNode {
                name: n.name.clone(),
            });
        }
    }
    let mut producers: HashMap<String, (usize, usize)> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for (o, p) in n.outputs.iter().enumerate() {
            if let Some(&(j, _)) = producers.get(&p.name) {
                return Err(Error::DuplicateOutput {
                    output: p.name.clone(),
                    first: nodes[j].name.clone(),
                    second: n.name.clone(),
                });
            }
            producers.insert(p.name.clone(), (i, o));
        }
    }
    let mut dag: DiGraph<usize, ()> = DiGraph::new();
    let ids: Vec<NodeIndex> = (0..nodes.len()).map(|i| dag.add_node(i)).collect();
    let mut inputs: Vec<InputInfo> = Vec::new();
    // (input name, first consumer index, type)
    let mut input_first: HashMap<String, (usize, ValueType)> = HashMap::new();
    for (i, n) in nodes.iter().enumerate() {
        for p in &n.inputs {
            if let Some(&(j, o)) = producers.get(&p.name) {
                let made = nodes[j].outputs[o].ty;
                if made != p.ty {
                    return Err(Error::TypeMismatch {
                        name: p.name.clone(),
                        producer: nodes[j].name.clone(),
                        producer_type: made.name(),
                        consumer: n.name.clone(),
                        consumer_type: p.ty.name(),
                    });
                }
                dag.update_edge(ids[j], ids[i], ());
            } else if let Some(&(first, ty)) = input_first.get(&p.name) {
                if ty != p.ty {
                    return Err(Error::InputTypeConflict {
                        name: p.name.clone(),
                        first: nodes[first].name.clone(),
                        first_type: ty.name(),
                        second: n.name.clone(),
                        second_type: p.ty.name(),
                    });
                }
                let info = inputs
                    .iter_mut()
                    .find(|x| x.name == p.name)
                    .expect("seen input");
                if !info.consumers.contains(&n.name) {
                    info.consumers.push(n.name.clone());
                }
            } else {
                input_first.insert(p.name.clone(), (i, p.ty));
                inputs.push(InputInfo {
                    name: p.name.clone(),
                    ty: p.ty,
                    consumers: vec![n.name.clone()],
                });
            }
        }
    }
    let order = match stable_toposort(&dag) {
        Some(order) => order,
        None => {
            let cycle = petgraph::algo::tarjan_scc(&dag)
                .into_iter()
                .find(|scc| scc.len() > 1 || dag.contains_edge(scc[0], scc[0]))
                .unwrap_or_default();
            let mut names: Vec<String> = cycle
                .iter()
                .map(|&ix| nodes[dag[ix]].name.clone())
                .collect();
            names.sort();
            return Err(Error::Cycle { nodes: names });
        }
    };
    // Inputs listed in topological order of their first consumer.
    let rank: HashMap<&str, usize> = order
        .iter()
        .enumerate()
        .map(|(r, &i)| (nodes[i].name.as_str(), r))
        .collect();
    inputs.sort_by_key(|info| info.consumers.iter().map(|c| rank[c.as_str()]).min());
    Ok(Graph {
        nodes,
        order,
        producers,
        inputs,
    })
}

/// Topological order that, among ready nodes, keeps the order nodes were
/// given in (Kahn's algorithm with a min-heap); `None` on a cycle.
fn stable_toposort(dag: &DiGraph<usize, ()>) -> Option<Vec<usize>> {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    let mut indegree: Vec<usize> = dag
        .node_indices()
        .map(|ix| {
            dag.neighbors_directed(ix, petgraph::Direction::Incoming)
                .count()
        })
        .collect();
    let mut ready: BinaryHeap<Reverse<usize>> = indegree
        .iter()
        .enumerate()
        .filter(|(_, d)| **d == 0)
        .map(|(i, _)| Reverse(i))
        .collect();
    let mut order = Vec::with_capacity(indegree.len());
    while let Some(Reverse(i)) = ready.pop() {
        order.push(dag[NodeIndex::new(i)]);
        for next in dag.neighbors(NodeIndex::new(i)) {
            indegree[next.index()] -= 1;
            if indegree[next.index()] == 0 {
                ready.push(Reverse(next.index()));
            }
        }
    }
    (order.len() == indegree.len()).then_some(order)
}
