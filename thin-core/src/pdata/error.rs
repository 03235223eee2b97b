//! Errors of the persistent-data layer; each names the block where it happened.

use crate::block::BlockError;
use crate::checksum::BlockKind;
use core::fmt;

/// What went wrong in the persistent-data layer.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum PdError {
    /// The device failed.
    Io(BlockError),
    /// A block's checksum does not match its expected type.
    Checksum { block: u64, kind: BlockKind },
    /// A block does not carry its own location.
    BlockNr {
        block: u64,
        kind: BlockKind,
        found: u64,
    },
    /// A B-tree node header or body breaks the format.
    BadNode { block: u64, reason: &'static str },
    /// A node's value size is not the tree's.
    ValueSize {
        block: u64,
        expected: u32,
        found: u32,
    },
    /// A tree is deeper than any valid tree can be (or loops).
    TooDeep { block: u64 },
    /// Reference counts are inconsistent (e.g. decrementing a free block).
    RefCount { block: u64, reason: &'static str },
    /// A bitmap or index structure of a space map is inconsistent.
    SpaceMap { block: u64, reason: &'static str },
    /// No free metadata block is left.
    NoMetadataSpace,
    /// No free data block is left.
    NoDataSpace,
    /// A block was requested as two different types in one transaction.
    KindMismatch {
        block: u64,
        wanted: BlockKind,
        held: BlockKind,
    },
}

impl From<BlockError> for PdError {
    fn from(e: BlockError) -> Self {
        PdError::Io(e)
    }
}

impl fmt::Display for PdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PdError::Io(e) => write!(f, "{e}"),
            PdError::Checksum { block, kind } => {
                write!(f, "bad checksum in {} (block {block})", kind.name())
            }
            PdError::BlockNr { block, kind, found } => {
                write!(
                    f,
                    "bad block nr in {} (block {block} says {found})",
                    kind.name()
                )
            }
            PdError::BadNode { block, reason } => {
                write!(f, "bad btree node (block {block}): {reason}")
            }
            PdError::ValueSize {
                block,
                expected,
                found,
            } => write!(
                f,
                "btree node (block {block}) has value size {found}, expected {expected}"
            ),
            PdError::TooDeep { block } => {
                write!(f, "btree too deep or cyclic at block {block}")
            }
            PdError::RefCount { block, reason } => {
                write!(f, "reference count error for block {block}: {reason}")
            }
            PdError::SpaceMap { block, reason } => {
                write!(f, "space map error at block {block}: {reason}")
            }
            PdError::NoMetadataSpace => write!(f, "out of metadata space"),
            PdError::NoDataSpace => write!(f, "out of data space"),
            PdError::KindMismatch {
                block,
                wanted,
                held,
            } => write!(
                f,
                "block {block} used as {} while it holds a {}",
                wanted.name(),
                held.name()
            ),
        }
    }
}
