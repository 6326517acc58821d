//! The `keytrail` binary: everything is in the library; [`keytrail::cli::main`] parses the
//! command line and maps the outcome to an exit code.
// Every worker allocates and frees many short-lived buffers (Arrow builders, parsed events);
// glibc's malloc gave a tenth of a conversion profile to malloc/free and more to faulting freed
// blocks back in. DataFusion's own CLI uses mimalloc for the same reason.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    disable_transparent_huge_pages();
    keytrail::cli::main()
}

/// mimalloc asks for transparent huge pages on its arenas, and each first touch of one then
/// zeroes 2 MiB: on this project's machine a third of a small conversion's time and half the
/// system time of a 1M-event one went to those faults (and peak RSS was 80 MiB higher), while
/// the TLB misses huge pages save never showed in a profile. The process opts out, whatever the
/// system's THP mode (`always` would ignore mimalloc's own `no_thp` build option).
fn disable_transparent_huge_pages() {
    #[cfg(target_os = "linux")]
    // SAFETY: PR_SET_THP_DISABLE takes plain integers and changes only this process's flags.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}
