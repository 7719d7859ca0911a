//! The audit log's Merkle tree (design §5), hashed as RFC 6962 (Certificate Transparency) does:
//! the leaf and node hashes, an append-only [`Tree`] that keeps only the roots of its perfect
//! subtrees, and inclusion and consistency proofs with the RFC 9162 verifiers.
//!
//! Hashing as CT does means an auditor can check our proofs with any RFC 6962 library.

use aws_lc_rs::digest;

/// A SHA-256 hash: of a leaf, an interior node or a whole tree.
pub type Hash = [u8; 32];

/// The root of the empty tree: SHA-256 of the empty string (RFC 6962 §2.1).
pub const EMPTY_ROOT: Hash = [
    0xe3, 0xb0, 0xc4, 0x42, 0x98, 0xfc, 0x1c, 0x14, 0x9a, 0xfb, 0xf4, 0xc8, 0x99, 0x6f, 0xb9, 0x24, 0x27, 0xae, 0x41,
    0xe4, 0x64, 0x9b, 0x93, 0x4c, 0xa4, 0x95, 0x99, 0x1b, 0x78, 0x52, 0xb8, 0x55,
];

// The prefixes keep a leaf from ever hashing like an interior node, so a proof cannot pass off a
// subtree as a record (the second-preimage attack RFC 6962 §2.1 guards against).
const LEAF_PREFIX: u8 = 0x00;
const NODE_PREFIX: u8 = 0x01;

/// Leaves up to this size are hashed in one call, from a copy on the stack behind their prefix.
/// Why: a streaming `digest::Context` costs an allocation and an initialisation per hash, and
/// the writer hashes every record as it is written (a record is about 450 bytes).
const ONE_SHOT_LEAF: usize = 2048;

/// The hash of a leaf: SHA-256(0x00 || `data`).
pub fn leaf_hash(data: &[u8]) -> Hash {
    if data.len() < ONE_SHOT_LEAF {
        let mut buf = [0u8; ONE_SHOT_LEAF];
        buf[0] = LEAF_PREFIX;
        buf[1..=data.len()].copy_from_slice(data);
        return one_shot(&buf[..=data.len()]);
    }
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(&[LEAF_PREFIX]);
    ctx.update(data);
    to_hash(ctx.finish().as_ref())
}

/// The hash of an interior node: SHA-256(0x01 || `left` || `right`).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut buf = [0u8; 65];
    buf[0] = NODE_PREFIX;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    one_shot(&buf)
}

fn one_shot(bytes: &[u8]) -> Hash {
    to_hash(digest::digest(&digest::SHA256, bytes).as_ref())
}

fn to_hash(digest: &[u8]) -> Hash {
    let mut out = [0u8; 32];
    // SHA-256 digests are always 32 bytes.
    out.copy_from_slice(digest);
    out
}

/// The size of the left subtree of a tree over `n >= 2` leaves: the largest power of two smaller
/// than `n` (RFC 6962 §2.1).
fn split(n: u64) -> u64 {
    debug_assert!(n >= 2);
    1 << (u64::BITS - 1 - (n - 1).leading_zeros())
}

/// An append-only Merkle tree accumulator: the log's running root.
///
/// It keeps the "compact range" of the tree, the roots of the perfect subtrees that the leaves so
/// far decompose into (one per set bit of the size, largest first). That is all the root needs,
/// so an append costs O(log n) hashes and the memory stays at most 64 hashes however long the
/// log grows. Proofs need the leaves themselves: see [`inclusion_proof`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tree {
    size: u64,
    /// Roots of the perfect subtrees, left to right; `frontier.len() == size.count_ones()`.
    frontier: Vec<Hash>,
}

impl Tree {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds a tree from its leaf hashes in order, as the log does on start when it re-reads
    /// its segments.
    pub fn from_leaf_hashes(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut tree = Self::new();
        tree.extend(leaves);
        tree
    }

    /// Rebuilds a tree from leaf hashes that may fail to be read, stopping at the first failure.
    pub fn try_from_leaf_hashes<E>(leaves: impl IntoIterator<Item = Result<Hash, E>>) -> Result<Self, E> {
        let mut tree = Self::new();
        for leaf in leaves {
            tree.push(leaf?);
        }
        Ok(tree)
    }

    /// Rebuilds the tree over the first `size` leaves of `leaves`.
    pub fn from_source<S: LeafSource + ?Sized>(leaves: &S, size: u64) -> Result<Self, S::Error> {
        Self::try_from_leaf_hashes((0..size).map(|i| leaves.leaf(i)))
    }

    /// Restores a tree from a saved [`size`](Self::size) and [`frontier`](Self::frontier), so
    /// that a log with a trusted saved state need not re-read every leaf. Refuses a frontier of
    /// the wrong length for `size`.
    pub fn from_frontier(size: u64, frontier: Vec<Hash>) -> Result<Self, FrontierError> {
        let expected = size.count_ones();
        if frontier.len() != expected as usize {
            return Err(FrontierError { size, expected, found: frontier.len() });
        }
        Ok(Self { size, frontier })
    }

    /// Appends a leaf given by its hash (see [`leaf_hash`]).
    pub fn push(&mut self, leaf: Hash) {
        // Each trailing one bit of the old size is a perfect subtree, just left of the new leaf,
        // that the new leaf's subtree now equals in size: merge with it, as binary carrying does.
        let mut hash = leaf;
        for _ in 0..self.size.trailing_ones() {
            if let Some(left) = self.frontier.pop() {
                hash = node_hash(&left, &hash);
            }
        }
        self.frontier.push(hash);
        self.size += 1;
    }

    /// Appends a leaf given by its data, and returns the leaf's hash.
    pub fn push_data(&mut self, data: &[u8]) -> Hash {
        let hash = leaf_hash(data);
        self.push(hash);
        hash
    }

    /// How many leaves the tree holds.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The root hash of the tree over every leaf so far (RFC 6962's MTH), in O(log n).
    pub fn root(&self) -> Hash {
        // RFC 6962 splits at the largest power of two, so the tree is the leftmost perfect
        // subtree joined to the tree of the rest: fold the frontier from the right.
        let mut subtrees = self.frontier.iter().rev();
        match subtrees.next() {
            None => EMPTY_ROOT,
            Some(last) => subtrees.fold(*last, |right, left| node_hash(left, &right)),
        }
    }

    /// The roots of the perfect subtrees the leaves decompose into, left to right, for saving
    /// alongside [`size`](Self::size).
    pub fn frontier(&self) -> &[Hash] {
        &self.frontier
    }
}

impl Extend<Hash> for Tree {
    fn extend<I: IntoIterator<Item = Hash>>(&mut self, leaves: I) {
        for leaf in leaves {
            self.push(leaf);
        }
    }
}

impl FromIterator<Hash> for Tree {
    fn from_iter<I: IntoIterator<Item = Hash>>(leaves: I) -> Self {
        Self::from_leaf_hashes(leaves)
    }
}

/// A saved frontier does not fit its tree size.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a tree of {size} leaves has {expected} frontier hashes, not {found}")]
pub struct FrontierError {
    /// The saved size.
    pub size: u64,
    /// How many hashes the frontier of that size has.
    pub expected: u32,
    /// How many were given.
    pub found: usize,
}

/// Where proofs read leaf hashes from: the log implements it over its segment files.
pub trait LeafSource {
    /// Why a leaf could not be read.
    type Error;

    /// The hash of leaf `index` (zero-based).
    fn leaf(&self, index: u64) -> Result<Hash, Self::Error>;
}

/// A leaf index past the end of an in-memory [`LeafSource`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("leaf {index} is not in the source")]
pub struct MissingLeaf {
    /// The index asked for.
    pub index: u64,
}

impl LeafSource for [Hash] {
    type Error = MissingLeaf;

    fn leaf(&self, index: u64) -> Result<Hash, MissingLeaf> {
        usize::try_from(index).ok().and_then(|i| self.get(i)).copied().ok_or(MissingLeaf { index })
    }
}

impl LeafSource for Vec<Hash> {
    type Error = MissingLeaf;

    fn leaf(&self, index: u64) -> Result<Hash, MissingLeaf> {
        self.as_slice().leaf(index)
    }
}

/// Why a proof could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ProofError<E> {
    /// The leaf is not in the tree.
    #[error("leaf {index} is not in a tree of {tree_size} leaves")]
    IndexOutOfRange {
        /// The leaf asked for.
        index: u64,
        /// The size of the tree.
        tree_size: u64,
    },
    /// The old tree is larger than the new one; a log only grows.
    #[error("no consistency proof from {old_size} leaves to fewer ({new_size}): a log only grows")]
    SizesOutOfOrder {
        /// The earlier tree's size.
        old_size: u64,
        /// The later tree's size.
        new_size: u64,
    },
    /// The leaf source failed.
    #[error("cannot read the log's leaf hashes")]
    Source(#[source] E),
}

// Proofs are made by walking down from the root and hashing each sibling subtree from its leaves.
// The siblings cover the tree at most once, so a proof reads up to `tree_size` leaves and costs
// O(n) hashes: fine for the CLI that prints a proof now and then, and it needs nothing stored
// beside the records. A server answering proofs at a high rate would keep the interior nodes, as
// CT logs do, to answer in O(log n).

/// The root of the subtree over leaves `lo..hi` (RFC 6962's MTH of `D[lo:hi]`).
fn range_root<S: LeafSource + ?Sized>(leaves: &S, lo: u64, hi: u64) -> Result<Hash, ProofError<S::Error>> {
    let tree = Tree::try_from_leaf_hashes((lo..hi).map(|i| leaves.leaf(i))).map_err(ProofError::Source)?;
    Ok(tree.root())
}

/// The inclusion proof (RFC 6962 §2.1.1 audit path) of leaf `index` in the tree over the first
/// `tree_size` leaves of `leaves`: the sibling hashes from the leaf up to the root.
///
/// Reads up to `tree_size` leaves (O(n)); see the note above on why that is acceptable.
pub fn inclusion_proof<S: LeafSource + ?Sized>(
    index: u64,
    tree_size: u64,
    leaves: &S,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if index >= tree_size {
        return Err(ProofError::IndexOutOfRange { index, tree_size });
    }
    let (mut lo, mut hi) = (0, tree_size);
    let mut path = Vec::new();
    while hi - lo > 1 {
        let mid = lo + split(hi - lo);
        if index < mid {
            path.push(range_root(leaves, mid, hi)?);
            hi = mid;
        } else {
            path.push(range_root(leaves, lo, mid)?);
            lo = mid;
        }
    }
    // Collected root first; RFC 6962 lists the path leaf first.
    path.reverse();
    Ok(path)
}

/// The consistency proof (RFC 6962 §2.1.2) that the tree over the first `old_size` leaves is a
/// prefix of the tree over the first `new_size`. Empty when `old_size` is 0 or equals `new_size`.
///
/// Reads up to `new_size` leaves (O(n)); see the note above on why that is acceptable.
pub fn consistency_proof<S: LeafSource + ?Sized>(
    old_size: u64,
    new_size: u64,
    leaves: &S,
) -> Result<Vec<Hash>, ProofError<S::Error>> {
    if old_size > new_size {
        return Err(ProofError::SizesOutOfOrder { old_size, new_size });
    }
    consistency_ranges(old_size, new_size).into_iter().map(|(lo, hi)| range_root(leaves, lo, hi)).collect()
}

/// The leaf ranges `lo..hi` whose subtree roots make the consistency proof from `old_size` to
/// `new_size`, in the proof's order; disjoint. Empty when `old_size` is 0, equals `new_size` or
/// exceeds it.
pub fn consistency_ranges(old_size: u64, new_size: u64) -> Vec<(u64, u64)> {
    if old_size == 0 || old_size >= new_size {
        return Vec::new();
    }
    // RFC 6962's SUBPROOF(m, D[lo:hi], b), unrolled: `whole_old_subtree` is b, true while the
    // subtree we are in is one the old tree also had, whose root the verifier therefore knows.
    let (mut lo, mut hi) = (0, new_size);
    let mut whole_old_subtree = true;
    let mut ranges = Vec::new();
    // The old tree always ends inside (lo, hi], so this stops at hi - lo == 1 at the latest.
    while old_size != hi {
        let mid = lo + split(hi - lo);
        if old_size <= mid {
            ranges.push((mid, hi));
            hi = mid;
        } else {
            ranges.push((lo, mid));
            lo = mid;
            whole_old_subtree = false;
        }
    }
    if !whole_old_subtree {
        ranges.push((lo, hi));
    }
    ranges.reverse();
    ranges
}

/// The roots of given disjoint leaf ranges, computed from leaves pushed in order from leaf 0, so
/// that a proof over a log of any size is made in one streaming pass with O(log n) memory.
#[derive(Debug)]
pub struct RangeRoots {
    /// The ranges as asked, with their roots once complete.
    ranges: Vec<((u64, u64), Option<Hash>)>,
    /// Indexes into `ranges` by ascending start.
    order: Vec<usize>,
    /// Position in `order` of the range being filled or next to come.
    next: usize,
    acc: Tree,
    seen: u64,
}

impl RangeRoots {
    /// Starts computing the roots of `ranges` (disjoint, each non-empty).
    pub fn new(ranges: &[(u64, u64)]) -> Self {
        let mut order: Vec<usize> = (0..ranges.len()).collect();
        order.sort_unstable_by_key(|&i| ranges[i].0);
        Self { ranges: ranges.iter().map(|r| (*r, None)).collect(), order, next: 0, acc: Tree::new(), seen: 0 }
    }

    /// Starts computing the roots of `ranges` after the leaves of `before`, when those leaves
    /// are not at hand but the tree's frontier is (an export archive's manifest, a log that
    /// retention trimmed): the next leaf pushed is leaf `before.size()`. A range that starts
    /// before it is made from the frontier's perfect subtrees, which serves every range that
    /// starts on one of their edges, as every range of a consistency proof from a tree at least
    /// as large as `before` does (its left ranges are the perfect subtrees of the older tree).
    /// Returns the first range that would need a leaf before `before.size()` by itself.
    pub fn resuming(ranges: &[(u64, u64)], before: &Tree) -> Result<Self, (u64, u64)> {
        let mut this = Self::new(ranges);
        let first = before.size();
        this.seen = first;
        // Where each perfect subtree of the frontier starts, and its size: largest first.
        let mut subtrees = Vec::with_capacity(before.frontier.len());
        let mut start = 0;
        for bit in (0..u64::BITS).rev().map(|b| 1_u64 << b).filter(|b| first & b != 0) {
            subtrees.push((start, bit));
            start += bit;
        }
        while let Some(&i) = this.order.get(this.next) {
            let (lo, hi) = this.ranges[i].0;
            if lo >= first {
                break;
            }
            // The subtrees from `lo` up to `hi` or the frontier's end: they must start at `lo`
            // and be those a tree over their leaves alone would have.
            let from = subtrees.iter().position(|&(s, _)| s == lo).ok_or((lo, hi))?;
            let end = hi.min(first);
            let upto = subtrees[from..].iter().take_while(|&&(s, size)| s + size <= end).count();
            let taken = &subtrees[from..from + upto];
            let covered: u64 = taken.iter().map(|&(_, size)| size).sum();
            if covered != end - lo {
                return Err((lo, hi));
            }
            // Powers of two, each smaller than the one before, summing to `covered`: the subtrees
            // of a tree over those leaves alone.
            let hashes = before.frontier[from..from + upto].to_vec();
            let acc = Tree::from_frontier(covered, hashes).map_err(|_| (lo, hi))?;
            if hi <= first {
                this.ranges[i].1 = Some(acc.root());
                this.next += 1;
            } else {
                this.acc = acc;
                break;
            }
        }
        Ok(this)
    }

    /// Takes the next leaf (leaf number [`leaves_seen`](Self::leaves_seen)).
    pub fn push(&mut self, leaf: Hash) {
        let seq = self.seen;
        self.seen += 1;
        let Some(&i) = self.order.get(self.next) else { return };
        let (lo, hi) = self.ranges[i].0;
        if seq < lo {
            return;
        }
        self.acc.push(leaf);
        if seq + 1 == hi {
            self.ranges[i].1 = Some(std::mem::take(&mut self.acc).root());
            self.next += 1;
        }
    }

    /// The number of the next leaf: how many have been pushed, from the start.
    pub fn leaves_seen(&self) -> u64 {
        self.seen
    }

    /// Whether every range's root is known, so no more leaves are needed.
    pub fn is_complete(&self) -> bool {
        self.next == self.order.len()
    }

    /// The roots in the order the ranges were given, or `None` while a range is incomplete.
    pub fn finish(self) -> Option<Vec<Hash>> {
        self.ranges.into_iter().map(|(_, root)| root).collect()
    }
}

/// Whether `proof` shows that the leaf with hash `leaf_hash` is leaf `index` of the tree of
/// `tree_size` leaves whose root is `root` (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf_hash: &Hash, index: u64, tree_size: u64, proof: &[Hash], root: &Hash) -> bool {
    if index >= tree_size {
        return false;
    }
    // fn and sn of the RFC: the node's index and the last node's index at the current level.
    let (mut node, mut last) = (index, tree_size - 1);
    let mut hash = *leaf_hash;
    for sibling in proof {
        if last == 0 {
            return false;
        }
        if node & 1 == 1 || node == last {
            hash = node_hash(sibling, &hash);
            // A rightmost node without a right sibling moves up unchanged until it is a right child.
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            hash = node_hash(&hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    last == 0 && hash == *root
}

/// Whether `proof` shows that the tree of `old_size` leaves with root `old_root` is a prefix of
/// the tree of `new_size` leaves with root `new_root` (RFC 9162 §2.1.4.2).
///
/// Equal sizes need an empty proof and equal roots; the empty tree needs an empty proof and
/// [`EMPTY_ROOT`] as its root (stricter than RFC 9162, which leaves that case to the caller).
pub fn verify_consistency(old_size: u64, new_size: u64, old_root: &Hash, new_root: &Hash, proof: &[Hash]) -> bool {
    if old_size > new_size {
        return false;
    }
    if old_size == new_size {
        return proof.is_empty() && old_root == new_root;
    }
    if old_size == 0 {
        return proof.is_empty() && *old_root == EMPTY_ROOT;
    }
    let Some((first, rest)) = proof.split_first() else {
        return false;
    };
    // An old tree that is a perfect subtree of the new one is not repeated in the proof: the
    // verifier knows its root already.
    let (start, path) = if old_size.is_power_of_two() { (*old_root, proof) } else { (*first, rest) };
    let (mut node, mut last) = (old_size - 1, new_size - 1);
    while node & 1 == 1 {
        node >>= 1;
        last >>= 1;
    }
    let (mut old_hash, mut new_hash) = (start, start);
    for sibling in path {
        if last == 0 {
            return false;
        }
        if node & 1 == 1 || node == last {
            old_hash = node_hash(sibling, &old_hash);
            new_hash = node_hash(sibling, &new_hash);
            while node & 1 == 0 && node != 0 {
                node >>= 1;
                last >>= 1;
            }
        } else {
            new_hash = node_hash(&new_hash, sibling);
        }
        node >>= 1;
        last >>= 1;
    }
    last == 0 && old_hash == *old_root && new_hash == *new_root
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// RFC 6962 written out as recursion over slices, straight from the RFC's text, to check the
    /// iterative code against.
    mod naive {
        use super::super::{Hash, node_hash};

        fn split(n: usize) -> usize {
            let mut k = 1;
            while k * 2 < n {
                k *= 2;
            }
            k
        }

        pub(super) fn mth(d: &[Hash]) -> Hash {
            match d.len() {
                0 => aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, b"").as_ref().try_into().unwrap(),
                1 => d[0],
                n => {
                    let k = split(n);
                    node_hash(&mth(&d[..k]), &mth(&d[k..]))
                }
            }
        }

        pub(super) fn path(m: usize, d: &[Hash]) -> Vec<Hash> {
            let n = d.len();
            if n <= 1 {
                return Vec::new();
            }
            let k = split(n);
            let (mut p, sibling) =
                if m < k { (path(m, &d[..k]), mth(&d[k..])) } else { (path(m - k, &d[k..]), mth(&d[..k])) };
            p.push(sibling);
            p
        }

        pub(super) fn proof(m: usize, d: &[Hash]) -> Vec<Hash> {
            if m == 0 { Vec::new() } else { subproof(m, d, true) }
        }

        fn subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
            let n = d.len();
            if m == n {
                return if b { Vec::new() } else { vec![mth(d)] };
            }
            let k = split(n);
            let (mut p, sibling) = if m <= k {
                (subproof(m, &d[..k], b), mth(&d[k..]))
            } else {
                (subproof(m - k, &d[k..], false), mth(&d[..k]))
            };
            p.push(sibling);
            p
        }
    }

    fn h(s: &str) -> Hash {
        let mut out = [0u8; 32];
        hex::decode_to_slice(s, &mut out).unwrap();
        out
    }

    fn flip(hash: &Hash) -> Hash {
        let mut out = *hash;
        out[31] ^= 1;
        out
    }

    /// Distinct leaves for the exhaustive tests.
    fn leaves(n: u64, seed: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&[seed.to_be_bytes(), i.to_be_bytes()].concat())).collect()
    }

    /// The leaves of the CT test vectors (certificate-transparency's merkle tests).
    const CT_LEAVES: [&[u8]; 8] = [
        b"",
        b"\x00",
        b"\x10",
        b"\x20\x21",
        b"\x30\x31",
        b"\x40\x41\x42\x43",
        b"\x50\x51\x52\x53\x54\x55\x56\x57",
        b"\x60\x61\x62\x63\x64\x65\x66\x67\x68\x69\x6a\x6b\x6c\x6d\x6e\x6f",
    ];

    /// The roots of the CT test vectors for sizes 1 to 8.
    const CT_ROOTS: [&str; 8] = [
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
        "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
        "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
        "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
        "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
        "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
        "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
    ];

    fn ct_leaves() -> Vec<Hash> {
        CT_LEAVES.iter().map(|d| leaf_hash(d)).collect()
    }

    #[test]
    fn the_empty_tree_hashes_to_sha256_of_nothing() {
        assert_eq!(EMPTY_ROOT, h("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"));
        assert_eq!(EMPTY_ROOT.as_slice(), digest::digest(&digest::SHA256, b"").as_ref());
        assert_eq!(Tree::new().root(), EMPTY_ROOT);
        assert_eq!(Tree::new().size(), 0);
    }

    #[test]
    fn leaf_and_node_hashes_carry_their_domain_prefixes() {
        let sha = |b: &[u8]| -> Hash { digest::digest(&digest::SHA256, b).as_ref().try_into().unwrap() };
        assert_eq!(leaf_hash(b""), h("6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"));
        assert_eq!(leaf_hash(b"abc"), sha(b"\x00abc"));
        let (l, r) = ([1u8; 32], [2u8; 32]);
        assert_eq!(node_hash(&l, &r), sha(&[&[1u8][..], &l, &r].concat()));
        assert_ne!(node_hash(&l, &r), node_hash(&r, &l));
    }

    #[test]
    fn leaves_hash_the_same_on_either_side_of_the_one_shot_size() {
        let sha = |b: &[u8]| -> Hash { digest::digest(&digest::SHA256, b).as_ref().try_into().unwrap() };
        for len in [ONE_SHOT_LEAF - 2, ONE_SHOT_LEAF - 1, ONE_SHOT_LEAF, ONE_SHOT_LEAF + 1, 100_000] {
            let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            assert_eq!(leaf_hash(&data), sha(&[&[0u8][..], &data].concat()), "a leaf of {len} bytes");
        }
    }

    #[test]
    fn roots_match_the_ct_test_vectors() {
        let mut tree = Tree::new();
        for (data, root) in CT_LEAVES.iter().zip(CT_ROOTS) {
            tree.push_data(data);
            assert_eq!(tree.root(), h(root), "size {}", tree.size());
        }
        assert_eq!(tree.size(), 8);
    }

    #[test]
    fn inclusion_proofs_match_the_ct_test_vectors() {
        let d = ct_leaves();
        let cases: [(u64, u64, &[&str]); 5] = [
            (0, 1, &[]),
            (
                0,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                5,
                8,
                &[
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (2, 3, &["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
            (
                1,
                5,
                &[
                    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (index, size, expected) in cases {
            let proof = inclusion_proof(index, size, &d).unwrap();
            assert_eq!(proof, expected.iter().map(|s| h(s)).collect::<Vec<_>>(), "leaf {index} of {size}");
            let root = h(CT_ROOTS[size as usize - 1]);
            assert!(verify_inclusion(&d[index as usize], index, size, &proof, &root));
        }
    }

    #[test]
    fn consistency_proofs_match_the_ct_test_vectors() {
        let d = ct_leaves();
        let cases: [(u64, u64, &[&str]); 4] = [
            (1, 1, &[]),
            (
                1,
                8,
                &[
                    "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
                ],
            ),
            (
                6,
                8,
                &[
                    "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
                    "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
                    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
                ],
            ),
            (
                2,
                5,
                &[
                    "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
                    "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
                ],
            ),
        ];
        for (old, new, expected) in cases {
            let proof = consistency_proof(old, new, &d).unwrap();
            assert_eq!(proof, expected.iter().map(|s| h(s)).collect::<Vec<_>>(), "{old} to {new}");
            let (old_root, new_root) = (h(CT_ROOTS[old as usize - 1]), h(CT_ROOTS[new as usize - 1]));
            assert!(verify_consistency(old, new, &old_root, &new_root, &proof));
        }
    }

    #[test]
    fn incremental_root_equals_the_recursive_definition_for_every_size_to_300() {
        let d = leaves(300, 1);
        let mut tree = Tree::new();
        assert_eq!(tree.root(), naive::mth(&[]));
        for (i, leaf) in d.iter().enumerate() {
            tree.push(*leaf);
            assert_eq!(tree.size(), i as u64 + 1);
            assert_eq!(tree.frontier().len(), tree.size().count_ones() as usize);
            assert_eq!(tree.root(), naive::mth(&d[..=i]), "size {}", i + 1);
        }
    }

    #[test]
    fn a_tree_rebuilds_from_leaves_a_source_or_its_frontier() {
        let d = leaves(77, 2);
        let mut pushed = Tree::new();
        pushed.extend(d.iter().copied());
        assert_eq!(Tree::from_leaf_hashes(d.iter().copied()), pushed);
        assert_eq!(d.iter().copied().collect::<Tree>(), pushed);
        assert_eq!(Tree::from_source(&d, 77).unwrap(), pushed);
        assert_eq!(Tree::from_source(&d, 78), Err(MissingLeaf { index: 77 }));
        let failing = d.iter().map(|l| Ok(*l)).chain([Err("disk")]);
        assert_eq!(Tree::try_from_leaf_hashes(failing), Err("disk"));

        let mut restored = Tree::from_frontier(pushed.size(), pushed.frontier().to_vec()).unwrap();
        assert_eq!(restored.root(), pushed.root());
        restored.push(d[0]);
        pushed.push(d[0]);
        assert_eq!(restored, pushed);
        let err = Tree::from_frontier(77, vec![EMPTY_ROOT; 3]).unwrap_err();
        assert_eq!(err, FrontierError { size: 77, expected: 4, found: 3 });
    }

    #[test]
    fn proofs_refuse_impossible_requests() {
        let d = leaves(10, 3);
        assert!(matches!(inclusion_proof(10, 10, &d), Err(ProofError::IndexOutOfRange { index: 10, tree_size: 10 })));
        assert!(matches!(inclusion_proof(0, 0, &d), Err(ProofError::IndexOutOfRange { .. })));
        assert!(matches!(inclusion_proof(0, 11, &d), Err(ProofError::Source(MissingLeaf { index: 10 }))));
        assert!(matches!(consistency_proof(5, 4, &d), Err(ProofError::SizesOutOfOrder { old_size: 5, new_size: 4 })));
        assert!(matches!(consistency_proof(5, 11, &d), Err(ProofError::Source(_))));
        assert_eq!(consistency_proof(0, 10, &d).unwrap(), Vec::<Hash>::new());
        assert_eq!(consistency_proof(10, 10, &d).unwrap(), Vec::<Hash>::new());
    }

    /// Every way of tampering with a valid inclusion proof that must make it fail.
    fn assert_inclusion_tampering_fails(d: &[Hash], roots: &[Hash], proofs: &[Vec<Vec<Hash>>], index: u64, size: u64) {
        let (i, s) = (index as usize, size as usize);
        let proof = &proofs[s][i];
        let root = &roots[s];
        let leaf = &d[i];
        assert!(verify_inclusion(leaf, index, size, proof, root), "leaf {index} of {size}");

        assert!(!verify_inclusion(&flip(leaf), index, size, proof, root));
        assert!(!verify_inclusion(leaf, index, size, proof, &flip(root)));
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k]);
            assert!(!verify_inclusion(leaf, index, size, &bad, root), "element {k} of leaf {index} of {size}");
        }
        let mut longer = proof.clone();
        longer.push(*root);
        assert!(!verify_inclusion(leaf, index, size, &longer, root));
        let mut prefixed = proof.clone();
        prefixed.insert(0, *leaf);
        assert!(!verify_inclusion(leaf, index, size, &prefixed, root));
        if !proof.is_empty() {
            assert!(!verify_inclusion(leaf, index, size, &proof[..proof.len() - 1], root));
            assert!(!verify_inclusion(leaf, index, size, &proof[1..], root));
        }
        // Another position in the same tree: the hashing order differs, so the root does.
        for other in (0..size + 2).filter(|&j| j != index) {
            assert!(!verify_inclusion(leaf, other, size, proof, root), "leaf {index} of {size} claimed at {other}");
        }
        // Another size, checked against that size's root (a checkpoint binds size and root):
        // the proof passes exactly when the two trees share this leaf's path.
        for other in (index + 1..roots.len() as u64).filter(|&t| t != size) {
            let same_path = proofs[other as usize][i] == *proof;
            assert_eq!(
                verify_inclusion(leaf, index, other, proof, &roots[other as usize]),
                same_path,
                "leaf {index} of {size} claimed in {other}"
            );
        }
    }

    #[test]
    fn every_inclusion_proof_to_64_verifies_and_fails_when_altered() {
        const MAX: u64 = 64;
        let d = leaves(MAX, 4);
        let roots: Vec<Hash> = (0..=MAX as usize).map(|s| naive::mth(&d[..s])).collect();
        let proofs: Vec<Vec<Vec<Hash>>> =
            (0..=MAX).map(|s| (0..s).map(|i| inclusion_proof(i, s, &d).unwrap()).collect()).collect();
        for size in 1..=MAX {
            for index in 0..size {
                let proof = &proofs[size as usize][index as usize];
                assert_eq!(*proof, naive::path(index as usize, &d[..size as usize]), "leaf {index} of {size}");
                assert_inclusion_tampering_fails(&d, &roots, &proofs, index, size);
            }
        }
    }

    /// Every way of tampering with a valid consistency proof that must make it fail.
    fn assert_consistency_tampering_fails(roots: &[Hash], proofs: &[Vec<Vec<Hash>>], old: u64, new: u64) {
        let (o, n) = (old as usize, new as usize);
        let proof = &proofs[n][o];
        let (old_root, new_root) = (&roots[o], &roots[n]);
        assert!(verify_consistency(old, new, old_root, new_root, proof), "{old} to {new}");

        assert!(!verify_consistency(old, new, &flip(old_root), new_root, proof));
        // Every tree extends the empty one, whatever its root.
        assert_eq!(verify_consistency(old, new, old_root, &flip(new_root), proof), old == 0 && old != new);
        if old != new {
            assert!(!verify_consistency(old, new, new_root, old_root, proof));
            assert!(!verify_consistency(new, old, new_root, old_root, proof));
        }
        for k in 0..proof.len() {
            let mut bad = proof.clone();
            bad[k] = flip(&bad[k]);
            assert!(!verify_consistency(old, new, old_root, new_root, &bad), "element {k} of {old} to {new}");
        }
        let mut longer = proof.clone();
        longer.push(*old_root);
        assert!(!verify_consistency(old, new, old_root, new_root, &longer));
        let mut prefixed = proof.clone();
        prefixed.insert(0, *old_root);
        assert!(!verify_consistency(old, new, old_root, new_root, &prefixed));
        if !proof.is_empty() {
            assert!(!verify_consistency(old, new, old_root, new_root, &proof[..proof.len() - 1]));
            assert!(!verify_consistency(old, new, old_root, new_root, &proof[1..]));
        }
        // Other sizes, each with its true root: the proof passes exactly when it is also the
        // proof for those sizes.
        for other in 0..=new {
            let same = proofs[n][other as usize] == *proof;
            let claimed = verify_consistency(other, new, &roots[other as usize], new_root, proof);
            assert_eq!(claimed, same, "{old} to {new} claimed from {other}");
        }
        for other in old..roots.len() as u64 {
            let same = proofs[other as usize][o] == *proof;
            let claimed = verify_consistency(old, other, old_root, &roots[other as usize], proof);
            assert_eq!(claimed, same, "{old} to {new} claimed to {other}");
        }
    }

    #[test]
    fn every_consistency_proof_to_64_verifies_and_fails_when_altered() {
        const MAX: u64 = 64;
        let d = leaves(MAX, 5);
        let roots: Vec<Hash> = (0..=MAX as usize).map(|s| naive::mth(&d[..s])).collect();
        // proofs[new][old]
        let proofs: Vec<Vec<Vec<Hash>>> =
            (0..=MAX).map(|new| (0..=new).map(|old| consistency_proof(old, new, &d).unwrap()).collect()).collect();
        for new in 0..=MAX {
            for old in 0..=new {
                let proof = &proofs[new as usize][old as usize];
                assert_eq!(*proof, naive::proof(old as usize, &d[..new as usize]), "{old} to {new}");
                assert_consistency_tampering_fails(&roots, &proofs, old, new);
            }
        }
    }

    #[test]
    fn trivial_consistency_needs_an_empty_proof_and_matching_roots() {
        let root = leaf_hash(b"x");
        assert!(verify_consistency(0, 0, &EMPTY_ROOT, &EMPTY_ROOT, &[]));
        assert!(verify_consistency(0, 5, &EMPTY_ROOT, &root, &[]));
        assert!(!verify_consistency(0, 5, &root, &root, &[]));
        assert!(!verify_consistency(0, 5, &EMPTY_ROOT, &root, &[root]));
        assert!(verify_consistency(3, 3, &root, &root, &[]));
        assert!(!verify_consistency(3, 3, &root, &flip(&root), &[]));
        assert!(!verify_consistency(3, 3, &root, &root, &[root]));
        assert!(!verify_consistency(1, 2, &root, &root, &[]));
        assert!(!verify_consistency(2, 1, &root, &root, &[root]));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn proofs_in_large_trees_match_the_rfc_and_verify(
            (size, index, old) in (1u64..3000).prop_flat_map(|n| (Just(n), 0..n, 0..=n)),
            seed in any::<u64>(),
        ) {
            let d = leaves(size, seed);
            let (s, i, o) = (size as usize, index as usize, old as usize);
            let tree = Tree::from_leaf_hashes(d.iter().copied());
            let root = naive::mth(&d);
            prop_assert_eq!(tree.root(), root);

            let path = inclusion_proof(index, size, &d).unwrap();
            prop_assert_eq!(&path, &naive::path(i, &d));
            prop_assert!(verify_inclusion(&d[i], index, size, &path, &root));
            prop_assert!(!verify_inclusion(&d[(i + 1) % s], index, size, &path, &root) || s == 1);

            let old_root = naive::mth(&d[..o]);
            let proof = consistency_proof(old, size, &d).unwrap();
            prop_assert_eq!(&proof, &naive::proof(o, &d));
            prop_assert!(verify_consistency(old, size, &old_root, &root, &proof));
            if let Some(first) = proof.first() {
                let mut bad = proof.clone();
                bad[0] = flip(first);
                prop_assert!(!verify_consistency(old, size, &old_root, &root, &bad));
            }
        }

        #[test]
        fn verifiers_never_panic_on_arbitrary_input(
            index in any::<u64>(),
            sizes in (any::<u64>(), any::<u64>()),
            proof in proptest::collection::vec(any::<[u8; 32]>(), 0..70),
            roots in any::<([u8; 32], [u8; 32])>(),
        ) {
            let _ = verify_inclusion(&roots.0, index, sizes.0, &proof, &roots.1);
            let _ = verify_consistency(sizes.0, sizes.1, &roots.0, &roots.1, &proof);
            let _ = verify_consistency(sizes.0.min(sizes.1), sizes.0.max(sizes.1), &roots.0, &roots.1, &proof);
        }
    }

    #[test]
    fn range_roots_resumed_from_a_frontier_make_the_same_consistency_proofs() {
        let leaves: Vec<Hash> = (0..40u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for new in 1..=40u64 {
            for old in 1..=new {
                let ranges = consistency_ranges(old, new);
                let expected = consistency_proof(old, new, leaves.as_slice()).unwrap();
                for first in 0..=new {
                    let before = Tree::from_leaf_hashes(leaves[..first as usize].iter().copied());
                    match RangeRoots::resuming(&ranges, &before) {
                        Ok(mut roots) => {
                            assert_eq!(roots.leaves_seen(), first);
                            for leaf in &leaves[first as usize..new as usize] {
                                roots.push(*leaf);
                            }
                            assert_eq!(roots.finish().as_ref(), Some(&expected), "{old} -> {new} from {first}");
                        }
                        // Only a proof from a tree smaller than the frontier's can need a leaf
                        // before it, and the range named does start before it.
                        Err((lo, _)) => assert!(first > old && lo < first, "{old} -> {new} from {first}"),
                    }
                }
            }
        }
    }

    #[test]
    fn streamed_range_roots_make_the_same_consistency_proofs() {
        let leaves: Vec<Hash> = (0..70u64).map(|i| leaf_hash(&i.to_le_bytes())).collect();
        for new in 1..=70u64 {
            for old in 1..=new {
                let ranges = consistency_ranges(old, new);
                let mut roots = RangeRoots::new(&ranges);
                for leaf in &leaves[..new as usize] {
                    roots.push(*leaf);
                }
                assert!(roots.is_complete(), "{old} -> {new}");
                assert_eq!(
                    roots.finish().unwrap(),
                    consistency_proof(old, new, leaves.as_slice()).unwrap(),
                    "{old} -> {new}"
                );
            }
        }
    }
}
