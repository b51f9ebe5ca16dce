//! The `switchboard` command line: `serve` (the default) and `config`,
//! which prints the settings `serve` would run with and where each came
//! from. Both read flags, then `SWITCHBOARD_*` variables, then the
//! `--config` file, then the defaults.

use std::ffi::OsString;

use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};

use super::Config;
use super::file::{ConfigError, SettingsFile};
use super::show;

/// switchboard: real-time messaging over WebSocket, SSE and Socket.IO.
#[derive(Debug, Parser)]
#[command(
    name = "switchboard",
    version,
    about,
    args_conflicts_with_subcommands = true
)]
pub struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// `serve` is the default: its flags work without the subcommand too.
    #[command(flatten)]
    serve: Config,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (the default).
    Serve(Config),
    /// Print the effective configuration as TOML, each value with its
    /// source (flag, environment, file or default), secrets redacted.
    Config(Config),
}

/// What the command line asks for.
#[derive(Debug)]
pub enum Action {
    Serve(Box<Config>),
    /// The text `switchboard config` prints.
    ShowConfig(String),
}

/// Reads the command line `args` (the program's name first), the
/// environment and the `--config` file.
pub fn load<I, T>(args: I) -> Result<Action, ConfigError>
where
    I: IntoIterator<Item = T>,
    T: Into<OsString> + Clone,
{
    let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
    let command = Cli::command();
    let given = command.clone().try_get_matches_from(&args)?;
    let (name, given_settings) = settings_of(&given);
    let settings_command = match name {
        Some(name) => command
            .find_subcommand(name)
            .expect("a parsed subcommand exists"),
        None => &command,
    };
    let file = given_settings
        .get_one::<std::path::PathBuf>("config")
        .map(|path| SettingsFile::read(path, settings_command))
        .transpose()?;
    let matches = match &file {
        Some(file) => {
            let mut all = args.clone();
            all.extend(file.as_arguments(settings_command, given_settings));
            command.clone().try_get_matches_from(all)?
        }
        None => given.clone(),
    };
    let cli = Cli::from_arg_matches(&matches)?;
    Ok(match cli.command {
        None => Action::Serve(Box::new(cli.serve)),
        Some(Command::Serve(config)) => Action::Serve(Box::new(config)),
        Some(Command::Config(_)) => {
            let (_, effective) = settings_of(&matches);
            let sources = show::Sources {
                given: given_settings,
                file: file.as_ref(),
            };
            Action::ShowConfig(show::render(settings_command, effective, &sources))
        }
    })
}

/// The matches that hold the settings: the subcommand's, if one was named.
fn settings_of(matches: &ArgMatches) -> (Option<&str>, &ArgMatches) {
    match matches.subcommand() {
        Some((name, settings)) => (Some(name), settings),
        None => (None, matches),
    }
}
