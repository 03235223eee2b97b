//! dm-thin domain.
