//! The `scopegate` binary; everything lives in the library.

/// mimalloc instead of glibc's malloc: the request path's allocations (hyper's heads and
/// buffers, header maps) cost about 6% of a proxied request under glibc (perf), and its
/// per-thread free lists keep that flat under load. See README, Performance.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    scopegate::cli::main()
}
