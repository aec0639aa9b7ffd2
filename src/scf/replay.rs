//! `wafer-scf replay`: run a bootstrap under the local runtime API emulator, feed it event files in order, and print
//! each reply with its time — what SCF would do with the same events.

use super::emulator::{Emulator, Outcome, Supervisor};
use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};

/// Replay `events` through `bootstrap`; fails when any event got no reply.
pub async fn replay(
    bootstrap: &Path,
    time_limit_ms: u64,
    init_timeout_ms: u64,
    events: &[PathBuf],
) -> Result<()> {
    let emulator =
        Emulator::start(time_limit_ms).await.context("could not start the runtime API emulator")?;
    let mut sup =
        Supervisor::new(emulator, bootstrap.to_path_buf(), std::time::Duration::from_millis(init_timeout_ms));
    let cold = sup.start().await.with_context(|| format!("could not start {}", bootstrap.display()))?;
    eprintln!("== {} ready after {:.1} ms", bootstrap.display(), cold.as_secs_f64() * 1000.0);
    let mut failed = 0;
    for file in events {
        let event = std::fs::read(file).with_context(|| format!("could not read {}", file.display()))?;
        let started = std::time::Instant::now();
        let outcome = sup.invoke(event).await.context("the instance could not be restarted")?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        match outcome {
            Outcome::Response(body) => {
                println!("== {} ({ms:.1} ms)\n{}", file.display(), String::from_utf8_lossy(&body))
            }
            Outcome::Error(e) => {
                failed += 1;
                println!("== {} ({ms:.1} ms) invocation error\n{e}", file.display());
            }
            Outcome::Timeout => {
                failed += 1;
                println!("== {} timed out after {time_limit_ms} ms (instance restarted)", file.display());
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} events failed", events.len());
    }
    Ok(())
}
