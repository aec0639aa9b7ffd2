//! The `wafer-scf` binary: parse the command line, run, print the error chain on failure.

fn main() -> std::process::ExitCode {
    match wafer_scf::cli::run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wafer-scf: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
