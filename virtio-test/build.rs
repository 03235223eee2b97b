//! Picks the board's linker script and turns firmware capacities into constants.
//!
//! Capacities (environment variables read at build time, with defaults):
//! - `FW_HEAP_KIB` (4096): the global allocator's fixed heap;
//! - `FW_CACHE_BLOCKS` (16): thin-core's metadata cache, in 4 KiB blocks (small on purpose:
//!   the workload's metadata outgrows it, so eviction and write-back are exercised);
//! - `FW_DMA_KIB` (128): the virtio DMA pool (virtqueues), never freed.
use std::{env, fs, path::PathBuf};

fn num(var: &str, default: u64) -> u64 {
    println!("cargo:rerun-if-env-changed={var}");
    match env::var(var) {
        Ok(v) => v
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v} is not a number")),
        Err(_) => default,
    }
}

fn main() {
    let arch = env::var("CARGO_CFG_TARGET_ARCH").expect("cargo sets CARGO_CFG_TARGET_ARCH");
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let board = match arch.as_str() {
        "x86_64" | "riscv64" => manifest.join("..").join("boards").join(&arch),
        other => panic!("virtio-test has no board for target arch {other}"),
    };
    let script = board.join("link.ld");
    println!("cargo:rerun-if-changed={}", script.display());
    println!("cargo:rustc-link-arg-bins=-T{}", script.display());

    let heap_kib = num("FW_HEAP_KIB", 4096);
    let cache_blocks = num("FW_CACHE_BLOCKS", 16);
    let dma_kib = num("FW_DMA_KIB", 128);
    assert!(heap_kib <= 8192, "FW_HEAP_KIB above 8 MiB");
    assert!(
        cache_blocks * 4 < heap_kib,
        "the metadata cache must fit in the heap"
    );
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    fs::write(
        out.join("config.rs"),
        format!(
            "/// Heap size in bytes (`FW_HEAP_KIB`).\n\
             pub const HEAP_BYTES: usize = {};\n\
             /// Metadata cache capacity in blocks (`FW_CACHE_BLOCKS`).\n\
             pub const CACHE_BLOCKS: usize = {cache_blocks};\n\
             /// DMA pool size in bytes (`FW_DMA_KIB`).\n\
             pub const DMA_BYTES: usize = {};\n",
            heap_kib * 1024,
            dma_kib * 1024
        ),
    )
    .expect("writing config.rs");
}
