//! RFC 6962 / RFC 9162 Merkle tree hashing, inclusion and consistency proofs.
//!
//! The audit log is a Merkle tree so that a reviewer holding one small signed checkpoint can check
//! that any later log still contains exactly the records it covered (consistency), and that one
//! record belongs to the log (inclusion), without trusting the host.

use sha2::{Digest, Sha256};

/// A SHA-256 hash: a leaf hash, an interior node hash or a tree root.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    sha256(&[&[]])
}

/// SHA-256 via the `sha2` crate, which uses the CPU's SHA extensions when present (ring 0.17's
/// digest does not here): hashing dominates `audit verify`, so this is its speed limit.
fn sha256(parts: &[&[u8]]) -> Hash {
    let mut c = Sha256::new();
    for p in parts {
        c.update(p);
    }
    c.finalize().into()
}

/// Leaf hash: SHA-256(0x00 || data). For the audit log, `data` is the record line without its
/// newline.
pub fn leaf_hash(data: &[u8]) -> Hash {
    sha256(&[&[0u8], data])
}

/// Interior node hash: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[1u8], left, right])
}

/// Largest power of two strictly smaller than `n` (n >= 2).
fn split_point(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1u64 << (63 - (n - 1).leading_zeros())
}

/// The Merkle tree hash (MTH) of a list of leaf hashes.
pub fn root_of(leaves: &[Hash]) -> Hash {
    match leaves.len() {
        0 => empty_root(),
        1 => leaves[0],
        n => {
            let k = split_point(n as u64) as usize;
            node_hash(&root_of(&leaves[..k]), &root_of(&leaves[k..]))
        }
    }
}

/// An append-only tree that keeps only the roots of its perfect subtrees (a "compact range"), so
/// appending and computing the root cost O(log n) without holding every leaf.
#[derive(Clone, Debug, Default)]
pub struct CompactTree {
    size: u64,
    /// Perfect-subtree roots, left to right (largest first).
    stack: Vec<Hash>,
}

impl CompactTree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a tree from its size and perfect-subtree roots (as [`CompactTree::stack`] gave
    /// them), so a writer can resume appending where a saved state left off instead of replaying
    /// every leaf. `None` when the stack cannot belong to a tree of `size` leaves (it holds one
    /// root per set bit of `size`).
    pub fn from_parts(size: u64, stack: Vec<Hash>) -> Option<Self> {
        (stack.len() == size.count_ones() as usize).then_some(CompactTree { size, stack })
    }

    /// Number of leaves appended so far.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The perfect-subtree roots, left to right (largest first): with [`CompactTree::size`],
    /// everything the tree keeps, so it can be saved and later rebuilt with
    /// [`CompactTree::from_parts`].
    pub fn stack(&self) -> &[Hash] {
        &self.stack
    }

    /// Appends one leaf hash.
    pub fn push(&mut self, leaf: Hash) {
        let mut h = leaf;
        let mut s = self.size;
        while s & 1 == 1 {
            let left = self.stack.pop().expect("stack holds one root per set bit");
            h = node_hash(&left, &h);
            s >>= 1;
        }
        self.stack.push(h);
        self.size += 1;
    }

    /// The RFC 6962 root of the leaves appended so far.
    pub fn root(&self) -> Hash {
        let mut it = self.stack.iter().rev();
        match it.next() {
            None => empty_root(),
            Some(last) => it.fold(*last, |acc, left| node_hash(left, &acc)),
        }
    }
}

/// Errors from proof checks; they say which step failed so a reviewer can tell a wrong proof from
/// a wrong root.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ProofError {
    /// Index or sizes out of range.
    #[error("invalid proof request: {0}")]
    Range(String),
    /// Proof has the wrong number of hashes.
    #[error("proof has the wrong length")]
    Length,
    /// Proof is well formed but the recomputed root differs.
    #[error("recomputed root does not match")]
    Mismatch,
}

/// RFC 6962 PATH(m, D[n]): the inclusion proof for leaf `index` in the tree of `leaves`.
pub fn inclusion_proof(index: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    if index >= leaves.len() as u64 {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of size {}",
            leaves.len()
        )));
    }
    let mut proof = Vec::new();
    path(index as usize, leaves, &mut proof);
    Ok(proof)
}

fn path(m: usize, d: &[Hash], out: &mut Vec<Hash>) {
    let n = d.len();
    if n <= 1 {
        return;
    }
    let k = split_point(n as u64) as usize;
    if m < k {
        path(m, &d[..k], out);
        out.push(root_of(&d[k..]));
    } else {
        path(m - k, &d[k..], out);
        out.push(root_of(&d[..k]));
    }
}

/// RFC 9162 section 2.1.3.2: checks that `leaf` is at `index` in the tree of `size` with `root`.
pub fn verify_inclusion(
    index: u64,
    size: u64,
    leaf: &Hash,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::Range(format!(
            "leaf {index} is not in a tree of size {size}"
        )));
    }
    let (mut fnode, mut snode) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if snode == 0 {
            return Err(ProofError::Length);
        }
        if fnode & 1 == 1 || fnode == snode {
            r = node_hash(p, &r);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            r = node_hash(&r, p);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Length);
    }
    if &r != root {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

/// RFC 6962 PROOF(m, D[n]): the consistency proof from the first `m` leaves to all of `leaves`.
pub fn consistency_proof(m: u64, leaves: &[Hash]) -> Result<Vec<Hash>, ProofError> {
    let n = leaves.len() as u64;
    if m > n {
        return Err(ProofError::Range(format!(
            "old size {m} is larger than new size {n}"
        )));
    }
    let mut out = Vec::new();
    if m == 0 || m == n {
        return Ok(out);
    }
    subproof(m as usize, leaves, true, &mut out);
    Ok(out)
}

fn subproof(m: usize, d: &[Hash], b: bool, out: &mut Vec<Hash>) {
    let n = d.len();
    if m == n {
        if !b {
            out.push(root_of(d));
        }
        return;
    }
    let k = split_point(n as u64) as usize;
    if m <= k {
        subproof(m, &d[..k], b, out);
        out.push(root_of(&d[k..]));
    } else {
        subproof(m - k, &d[k..], false, out);
        out.push(root_of(&d[..k]));
    }
}

/// RFC 9162 section 2.1.4.2: checks that the tree (`size1`, `root1`) is a prefix of
/// (`size2`, `root2`).
pub fn verify_consistency(
    size1: u64,
    size2: u64,
    proof: &[Hash],
    root1: &Hash,
    root2: &Hash,
) -> Result<(), ProofError> {
    if size1 > size2 {
        return Err(ProofError::Range(format!(
            "old size {size1} is larger than new size {size2}"
        )));
    }
    if size1 == size2 {
        if !proof.is_empty() {
            return Err(ProofError::Length);
        }
        return if root1 == root2 {
            Ok(())
        } else {
            Err(ProofError::Mismatch)
        };
    }
    if size1 == 0 {
        return if proof.is_empty() {
            Ok(())
        } else {
            Err(ProofError::Length)
        };
    }
    if proof.is_empty() {
        return Err(ProofError::Length);
    }
    let mut path: Vec<Hash> = Vec::with_capacity(proof.len() + 1);
    if size1.is_power_of_two() {
        path.push(*root1);
    }
    path.extend_from_slice(proof);
    let (mut fnode, mut snode) = (size1 - 1, size2 - 1);
    while fnode & 1 == 1 {
        fnode >>= 1;
        snode >>= 1;
    }
    let (mut fr, mut sr) = (path[0], path[0]);
    for c in &path[1..] {
        if snode == 0 {
            return Err(ProofError::Length);
        }
        if fnode & 1 == 1 || fnode == snode {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            if fnode & 1 == 0 {
                while fnode & 1 == 0 && fnode != 0 {
                    fnode >>= 1;
                    snode >>= 1;
                }
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fnode >>= 1;
        snode >>= 1;
    }
    if snode != 0 {
        return Err(ProofError::Length);
    }
    if &fr != root1 || &sr != root2 {
        return Err(ProofError::Mismatch);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: usize) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    #[test]
    fn compact_tree_matches_recursive_root() {
        let l = leaves(70);
        let mut t = CompactTree::new();
        assert_eq!(t.root(), empty_root());
        for (i, h) in l.iter().enumerate() {
            t.push(*h);
            assert_eq!(t.root(), root_of(&l[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn compact_tree_rebuilds_from_its_parts() {
        let l = leaves(70);
        let mut t = CompactTree::new();
        for (i, h) in l.iter().enumerate() {
            let mut back = CompactTree::from_parts(t.size(), t.stack().to_vec()).unwrap();
            assert_eq!(back.root(), t.root());
            back.push(*h);
            t.push(*h);
            assert_eq!(back.root(), root_of(&l[..=i]), "size {}", i + 1);
        }
        // One root per set bit of the size, no more, no fewer.
        assert!(CompactTree::from_parts(0, vec![[0; 32]]).is_none());
        assert!(CompactTree::from_parts(3, vec![[0; 32]]).is_none());
        assert!(CompactTree::from_parts(4, vec![[0; 32]; 2]).is_none());
        assert!(CompactTree::from_parts(u64::MAX, vec![[0; 32]; 63]).is_none());
        assert!(CompactTree::from_parts(u64::MAX, vec![[0; 32]; 64]).is_some());
    }

    proptest! {
        #[test]
        fn proofs_round_trip(n in 1usize..70, a in 0usize..70, b in 0usize..70) {
            let l = leaves(n);
            let i = (a % n) as u64;
            let root = root_of(&l);
            let p = inclusion_proof(i, &l).unwrap();
            prop_assert!(verify_inclusion(i, n as u64, &l[i as usize], &p, &root).is_ok());
            let mut bad = l[i as usize];
            bad[0] ^= 1;
            prop_assert!(verify_inclusion(i, n as u64, &bad, &p, &root).is_err());
            let m = (b % (n + 1)) as u64;
            let c = consistency_proof(m, &l).unwrap();
            let r1 = root_of(&l[..m as usize]);
            prop_assert!(verify_consistency(m, n as u64, &c, &r1, &root).is_ok());
            if m > 0 && m < n as u64 {
                let mut r1b = r1;
                r1b[5] ^= 0x80;
                prop_assert!(verify_consistency(m, n as u64, &c, &r1b, &root).is_err());
            }
        }

        #[test]
        fn verifiers_never_panic(i in 0u64..100, s1 in 0u64..100, s2 in 0u64..100, k in 0usize..12) {
            let p: Vec<Hash> = (0..k).map(|j| [j as u8; 32]).collect();
            let _ = verify_inclusion(i, s1, &[0; 32], &p, &[1; 32]);
            let _ = verify_consistency(s1, s2, &p, &[0; 32], &[1; 32]);
        }
    }
}
