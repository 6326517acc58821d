//! The `keytrail` binary: everything is in the library; [`keytrail::cli::main`] parses the
//! command line and maps the outcome to an exit code.
// Every worker allocates and frees many short-lived buffers (Arrow builders, parsed events);
// glibc's malloc gave a tenth of a conversion profile to malloc/free and more to faulting freed
// blocks back in. DataFusion's own CLI uses mimalloc for the same reason.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    keytrail::cli::main()
}
