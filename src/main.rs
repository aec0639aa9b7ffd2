//! The `wafer-scf` binary: parse the command line, run, print the error chain on failure.

/// mimalloc: per-thread free lists instead of glibc's arenas (malloc/free were ~6 % of the server's CPU on the
/// hot paths, with `malloc_consolidate` among them).
#[global_allocator]
static ALLOC: wafer_scf::alloc::Allocator = wafer_scf::alloc::Allocator;

fn main() -> std::process::ExitCode {
    match wafer_scf::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wafer-scf: {e:#}");
            let cause =
                e.chain().find_map(|c| c.downcast_ref::<wafer_scf::store::StoreError>()).map(|s| s.cause);
            if cause == Some(wafer_scf::store::Cause::Schema) {
                eprintln!("wafer-scf: {}", wafer_scf::store::Cause::Schema.describe());
            }
            std::process::ExitCode::FAILURE
        }
    }
}
