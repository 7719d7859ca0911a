//! How the process holds memory. The `splpd` binary allocates with mimalloc; this module keeps
//! the memory an idle connection holds down to what it actually touches.

/// Keeps the process on 4 KiB pages: no transparent huge pages, whatever the system's setting.
///
/// mimalloc asks the kernel for huge pages on its arenas, and a 2 MiB page is resident as soon as
/// one byte of it is touched. Every connection keeps buffers that a small exchange hardly touches
/// (hyper reserves 8 KiB to read and 8 KiB to write); with huge pages all of that became resident,
/// about 7 KiB more per idle mTLS connection (`benches/RESULTS.md`). The gateway's working set is
/// small, so what huge pages save in TLB misses did not show in CPU per request.
///
/// Call it first thing in `main`. The flag is the process's, and its children inherit it.
pub fn use_small_pages() {
    #[cfg(target_os = "linux")]
    {
        // Only a kernel older than 3.15 (or a seccomp filter) refuses it; memory is then held as
        // before.
        let _ = rustix::thread::disable_transparent_huge_pages(true);
    }
}
