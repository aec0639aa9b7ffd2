//! Which store a command acts on: `--server` only for the commands that go over the wire, and no read of an
//! embedded store that is not there (a command run in the wrong directory says so instead of creating one).

use super::{AgentCommand, AppCommand, Command, CosCommand, KeyCommand};
use crate::config::Config;
use anyhow::Result;

/// Refuse a command that would act on another store than the one the user named: `--server` given to a command
/// that works on a database, or a command that only reads the embedded store run where there is none (it would
/// create an empty one in the working directory and report nothing).
pub(super) fn check(config: &Config, command: &Command) -> Result<()> {
    let remote = config.server.as_deref().is_some_and(|s| !s.trim().is_empty());
    if remote && !over_the_wire(command) {
        let hint = match command {
            Command::Migrate => {
                "a deployed server migrates its own schema at start (WAFER_AUTO_MIGRATE=1); to migrate a database \
                 directly, unset --server / WAFER_SERVER and set WAFER_DATABASE_URL"
            }
            Command::PurgeSessions => {
                "a deployed server purges expired sessions itself (the timer trigger, WAFER_PURGE_INTERVAL_SECS); \
                 to purge a database directly, unset --server / WAFER_SERVER and set WAFER_DATABASE_URL"
            }
            _ => "this command works on WAFER_DATABASE_URL; unset --server / WAFER_SERVER",
        };
        anyhow::bail!("--server is not used by `wafer-scf {}`: {hint}", command_name(command));
    }
    let creates = matches!(
        command,
        Command::Serve
            | Command::Runtime { .. }
            | Command::Replay { .. }
            | Command::Migrate
            | Command::Import { .. }
            | Command::App(AppCommand::Add(_))
            | Command::Agent(AgentCommand::Add { .. })
            | Command::Cos(CosCommand::Add { .. })
            | Command::Key(KeyCommand::Add { .. })
    );
    if let (false, false, crate::store::DatabaseUrl::Sqlite(path)) = (remote, creates, &config.database_url) {
        let file = std::path::Path::new(path);
        if path != ":memory:" && !file.exists() {
            let shown = std::env::current_dir().map(|d| d.join(file)).unwrap_or_else(|_| file.to_path_buf());
            anyhow::bail!(
                "no embedded store at {} (WAFER_DATABASE_URL=sqlite:{path}{}): run this where the server keeps its \
                 store, set WAFER_DATABASE_URL=sqlite:/full/path/wafer.db or a mysql:// URL, or use --server URL for \
                 a deployed server. Only serve, migrate, import and the add commands create a store",
                shown.display(),
                if file.is_relative() { ", relative to the working directory" } else { "" },
            );
        }
    }
    Ok(())
}

/// The registry commands and `status`: the ones that may go through a deployed server's admin interfaces.
pub(super) fn over_the_wire(command: &Command) -> bool {
    matches!(
        command,
        Command::App(_) | Command::Agent(_) | Command::Cos(_) | Command::Key(_) | Command::Status { .. }
    )
}

/// The subcommand as typed.
fn command_name(command: &Command) -> &'static str {
    match command {
        Command::Serve => "serve",
        Command::Runtime { .. } => "runtime",
        Command::Invoke { .. } => "invoke",
        Command::Replay { .. } => "replay",
        Command::Migrate => "migrate",
        Command::App(_) => "app",
        Command::Agent(_) => "agent",
        Command::Cos(_) => "cos",
        Command::Key(_) => "key",
        Command::Status { .. } => "status",
        Command::Import { .. } => "import",
        Command::Reencrypt => "reencrypt",
        Command::PurgeSessions => "purge-sessions",
    }
}
