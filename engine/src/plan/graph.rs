//! The plan graph: nodes, conditioned edges, levels, cycles.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;

use perry_policies::Code;

/// A node's index in its [`Graph`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NodeId(usize);

impl NodeId {
    /// The index, in insertion order.
    pub fn index(self) -> usize {
        self.0
    }
}

/// What a dependent waits for before it starts (compose's `depends_on.condition`; workload
/// graphs use the same set).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Condition {
    /// The dependency was started (ordering only).
    Started,
    /// The dependency's healthcheck passed (our own runner; a dependency without one fails).
    Healthy,
    /// The dependency ran to completion and exited 0.
    CompletedSuccessfully,
}

impl Condition {
    /// The compose spelling (`service_started`, …).
    pub fn as_compose(self) -> &'static str {
        match self {
            Condition::Started => "service_started",
            Condition::Healthy => "service_healthy",
            Condition::CompletedSuccessfully => "service_completed_successfully",
        }
    }
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_compose())
    }
}

/// `dependent` waits for `dependency` to satisfy `condition`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Edge {
    /// The node that waits.
    pub dependent: NodeId,
    /// The node waited for.
    pub dependency: NodeId,
    /// What is waited for.
    pub condition: Condition,
    /// False: a failure of the condition is a warning, and the dependent starts anyway.
    pub required: bool,
    /// True: the dependent is restarted when the dependency is recreated.
    pub restart: bool,
}

/// Why a plan cannot be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    /// Two nodes with one name.
    #[error("`{0}` is defined twice")]
    DuplicateNode(String),
    /// An edge names a node the graph does not have.
    #[error("`{dependent}` depends on `{dependency}`, which is not defined")]
    UnknownNode {
        /// The node that names it.
        dependent: String,
        /// The missing name.
        dependency: String,
    },
    /// The dependencies form a cycle; the names in cycle order, first repeated at the end.
    #[error("dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

impl PlanError {
    /// The error's code in the one table.
    pub fn code(&self) -> Code {
        match self {
            PlanError::Cycle(_) => Code::DependencyCycle,
            PlanError::DuplicateNode(_) | PlanError::UnknownNode { .. } => Code::InvalidConfig,
        }
    }
}

/// Named nodes of type `N` joined by conditioned edges.
#[derive(Clone, Debug)]
pub struct Graph<N> {
    nodes: Vec<(String, N)>,
    by_name: BTreeMap<String, NodeId>,
    edges: Vec<Edge>,
}

impl<N> Default for Graph<N> {
    fn default() -> Self {
        Self {
            nodes: Vec::new(),
            by_name: BTreeMap::new(),
            edges: Vec::new(),
        }
    }
}

impl<N> Graph<N> {
    /// An empty graph.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a node; names are unique.
    pub fn add_node(&mut self, name: impl Into<String>, node: N) -> Result<NodeId, PlanError> {
        let name = name.into();
        if self.by_name.contains_key(&name) {
            return Err(PlanError::DuplicateNode(name));
        }
        let id = NodeId(self.nodes.len());
        self.by_name.insert(name.clone(), id);
        self.nodes.push((name, node));
        Ok(id)
    }

    /// Adds an edge: `dependent` waits for `dependency` to satisfy `condition`.
    pub fn add_edge(
        &mut self,
        dependent: &str,
        dependency: &str,
        condition: Condition,
        required: bool,
        restart: bool,
    ) -> Result<(), PlanError> {
        let unknown = || PlanError::UnknownNode {
            dependent: dependent.to_string(),
            dependency: dependency.to_string(),
        };
        let d = self.id(dependent).ok_or_else(unknown)?;
        let on = self.id(dependency).ok_or_else(unknown)?;
        self.edges.push(Edge {
            dependent: d,
            dependency: on,
            condition,
            required,
            restart,
        });
        Ok(())
    }

    /// The node called `name`.
    pub fn id(&self, name: &str) -> Option<NodeId> {
        self.by_name.get(name).copied()
    }

    /// The name of `id`.
    pub fn name(&self, id: NodeId) -> &str {
        &self.nodes[id.0].0
    }

    /// The node `id`.
    pub fn node(&self, id: NodeId) -> &N {
        &self.nodes[id.0].1
    }

    /// Every node, in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = (NodeId, &str, &N)> {
        self.nodes
            .iter()
            .enumerate()
            .map(|(i, (name, n))| (NodeId(i), name.as_str(), n))
    }

    /// How many nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// True without nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The edges `id` waits on.
    pub fn dependencies(&self, id: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.dependent == id)
    }

    /// The edges that wait on `id`.
    pub fn dependents(&self, id: NodeId) -> impl Iterator<Item = &Edge> {
        self.edges.iter().filter(move |e| e.dependency == id)
    }

    /// Kahn's algorithm: levels of nodes whose dependencies all lie in earlier levels, each
    /// level in insertion order. A cycle is refused, naming its nodes in order.
    pub fn levels(&self) -> Result<Vec<Vec<NodeId>>, PlanError> {
        let n = self.nodes.len();
        let mut waiting = vec![0usize; n];
        for e in &self.edges {
            waiting[e.dependent.0] += 1;
        }
        let mut ready: VecDeque<usize> = (0..n).filter(|&i| waiting[i] == 0).collect();
        let mut levels = Vec::new();
        let mut placed = 0;
        while !ready.is_empty() {
            let mut level: Vec<usize> = ready.drain(..).collect();
            level.sort_unstable();
            for &i in &level {
                for e in self.edges.iter().filter(|e| e.dependency.0 == i) {
                    waiting[e.dependent.0] -= 1;
                    if waiting[e.dependent.0] == 0 {
                        ready.push_back(e.dependent.0);
                    }
                }
            }
            placed += level.len();
            levels.push(level.into_iter().map(NodeId).collect());
        }
        if placed < n {
            return Err(PlanError::Cycle(self.find_cycle(&waiting)));
        }
        Ok(levels)
    }

    /// The reverse of [`Graph::levels`]: the order to stop or remove in.
    pub fn teardown_levels(&self) -> Result<Vec<Vec<NodeId>>, PlanError> {
        let mut levels = self.levels()?;
        levels.reverse();
        Ok(levels)
    }

    /// One cycle among the nodes Kahn could not place (`waiting > 0`), as names, the first
    /// repeated at the end. Follows dependency edges from the lowest such node until a node
    /// repeats: every unplaced node has an unplaced dependency, so the walk must close.
    fn find_cycle(&self, waiting: &[usize]) -> Vec<String> {
        let unplaced = |i: usize| waiting[i] > 0;
        let Some(start) = (0..waiting.len()).find(|&i| unplaced(i)) else {
            return Vec::new();
        };
        let mut path = vec![start];
        let mut at = start;
        loop {
            let next = self
                .edges
                .iter()
                .filter(|e| e.dependent.0 == at && unplaced(e.dependency.0))
                .map(|e| e.dependency.0)
                .min();
            let Some(next) = next else {
                return path.iter().map(|&i| self.nodes[i].0.clone()).collect();
            };
            if let Some(pos) = path.iter().position(|&p| p == next) {
                let mut cycle: Vec<String> = path[pos..]
                    .iter()
                    .map(|&i| self.nodes[i].0.clone())
                    .collect();
                cycle.push(self.nodes[next].0.clone());
                return cycle;
            }
            path.push(next);
            at = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn graph(names: &[&str], edges: &[(&str, &str)]) -> Graph<()> {
        let mut g = Graph::new();
        for n in names {
            g.add_node(*n, ()).unwrap();
        }
        for (a, b) in edges {
            g.add_edge(a, b, Condition::Started, true, false).unwrap();
        }
        g
    }

    fn names(g: &Graph<()>, levels: &[Vec<NodeId>]) -> Vec<Vec<String>> {
        levels
            .iter()
            .map(|l| l.iter().map(|&i| g.name(i).to_string()).collect())
            .collect()
    }

    #[test]
    fn a_three_tier_stack_levels_datastore_first_and_parallel_peers_together() {
        let g = graph(
            &["proxy", "app", "worker", "db", "cache"],
            &[
                ("proxy", "app"),
                ("app", "db"),
                ("app", "cache"),
                ("worker", "db"),
            ],
        );
        let levels = g.levels().unwrap();
        assert_eq!(
            names(&g, &levels),
            [vec!["db", "cache"], vec!["app", "worker"], vec!["proxy"]]
        );
        let down = g.teardown_levels().unwrap();
        assert_eq!(names(&g, &down)[0], ["proxy"]);
    }

    #[test]
    fn a_cycle_is_refused_naming_the_nodes_in_it_and_nothing_else() {
        let g = graph(
            &["web", "a", "b", "c", "ok"],
            &[("web", "a"), ("a", "b"), ("b", "c"), ("c", "a")],
        );
        let e = g.levels().unwrap_err();
        assert_eq!(
            e,
            PlanError::Cycle(vec!["a".into(), "b".into(), "c".into(), "a".into()])
        );
        assert_eq!(e.code(), Code::DependencyCycle);
        assert_eq!(e.code().status(), 422);
        assert_eq!(e.to_string(), "dependency cycle: a -> b -> c -> a");
        let selfloop = graph(&["x"], &[("x", "x")]);
        assert_eq!(
            selfloop.levels().unwrap_err(),
            PlanError::Cycle(vec!["x".into(), "x".into()])
        );
    }

    #[test]
    fn unknown_and_duplicate_nodes_are_named() {
        let mut g = graph(&["a"], &[]);
        assert_eq!(
            g.add_edge("a", "nope", Condition::Healthy, true, false),
            Err(PlanError::UnknownNode {
                dependent: "a".into(),
                dependency: "nope".into()
            })
        );
        assert_eq!(
            g.add_node("a", ()),
            Err(PlanError::DuplicateNode("a".into()))
        );
    }

    proptest! {
        /// Any acyclic graph levels so that every dependency sits in an earlier level than its
        /// dependent, and every node appears exactly once.
        #[test]
        fn levels_respect_every_edge(n in 1usize..20, raw in proptest::collection::vec((0usize..20, 0usize..20), 0..60)) {
            let mut g: Graph<()> = Graph::new();
            for i in 0..n { g.add_node(format!("n{i}"), ()).unwrap(); }
            for (a, b) in raw {
                let (a, b) = (a % n, b % n);
                if a > b { g.add_edge(&format!("n{a}"), &format!("n{b}"), Condition::Started, true, false).unwrap(); }
            }
            let levels = g.levels().unwrap();
            let mut level_of = vec![usize::MAX; n];
            for (l, ids) in levels.iter().enumerate() { for id in ids { prop_assert_eq!(level_of[id.index()], usize::MAX); level_of[id.index()] = l; } }
            prop_assert!(level_of.iter().all(|&l| l != usize::MAX));
            for e in &g.edges { prop_assert!(level_of[e.dependency.index()] < level_of[e.dependent.index()]); }
        }

        /// A back edge closing any path makes a cycle that is reported with real edges only.
        #[test]
        fn a_reported_cycle_is_made_of_real_edges(n in 2usize..12) {
            let mut g: Graph<()> = Graph::new();
            for i in 0..n { g.add_node(format!("n{i}"), ()).unwrap(); }
            for i in 1..n { g.add_edge(&format!("n{i}"), &format!("n{}", i - 1), Condition::Started, true, false).unwrap(); }
            g.add_edge("n0", &format!("n{}", n - 1), Condition::Started, true, false).unwrap();
            let PlanError::Cycle(c) = g.levels().unwrap_err() else { panic!() };
            prop_assert_eq!(c.first(), c.last());
            for w in c.windows(2) {
                let (a, b) = (g.id(&w[0]).unwrap(), g.id(&w[1]).unwrap());
                prop_assert!(g.dependencies(a).any(|e| e.dependency == b));
            }
        }
    }
}
