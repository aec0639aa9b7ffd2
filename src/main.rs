//! The `wafer-scf` binary: parse the command line, run, print the error chain on failure.

/// mimalloc: per-thread free lists instead of glibc's arenas (malloc/free were ~6 % of the server's CPU on the
/// hot paths, with `malloc_consolidate` among them).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    match wafer_scf::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            let text = format!("{e:#}");
            eprintln!("wafer-scf: {text}");
            if text.contains("doesn't exist")
                || text.contains("no such table")
                || text.contains("Unknown column")
            {
                eprintln!("wafer-scf: the database schema is missing or behind: run `wafer-scf migrate`");
            }
            std::process::ExitCode::FAILURE
        }
    }
}
