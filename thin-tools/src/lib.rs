//! dm-thin metadata tools built on `thin-core`. Tools are added by the thin-tools issue.
#![forbid(unsafe_code)]
