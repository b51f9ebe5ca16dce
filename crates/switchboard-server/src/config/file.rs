//! The TOML settings file (`--config PATH`): one top-level key per flag,
//! named as the flag without its dashes (`max-connections = 50000`).
//!
//! A value from the file is checked by the flag's own parser, so the file
//! takes exactly what the command line takes, and a mistake names its key
//! and line. It counts only for settings given neither as a flag nor in
//! the environment: flag > environment > file > default.

use std::collections::BTreeMap;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};

use clap::parser::ValueSource;
use clap::{Arg, ArgAction, ArgMatches, Command};
use toml::{Spanned, Value};

/// Why the settings could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("--config {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}:{line}: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        message: String,
    },
    #[error("{}:{line}: unknown key `{key}`{hint}", path.display())]
    UnknownKey {
        path: PathBuf,
        line: usize,
        key: String,
        /// A near key, as ` (did you mean …?)`, or nothing.
        hint: String,
    },
    #[error("{}:{line}: `{key}`: {message}", path.display())]
    BadValue {
        path: PathBuf,
        line: usize,
        key: String,
        message: String,
    },
    #[error(transparent)]
    Command(#[from] clap::Error),
}

/// A settings file, read and checked against the flags of `command`.
#[derive(Debug)]
pub struct SettingsFile {
    pub path: PathBuf,
    /// Each key's value as command-line words, by the flag's id.
    values: BTreeMap<String, Vec<OsString>>,
}

impl SettingsFile {
    /// Reads `path`: every key must name a flag of `command` and carry a
    /// value that flag takes.
    pub fn read(path: &Path, command: &Command) -> Result<SettingsFile, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        SettingsFile::parse(path, &text, command)
    }

    pub fn parse(path: &Path, text: &str, command: &Command) -> Result<SettingsFile, ConfigError> {
        let line_of = |offset: usize| text[..offset.min(text.len())].matches('\n').count() + 1;
        let table: BTreeMap<Spanned<String>, Spanned<Value>> =
            toml::from_str(text).map_err(|e| ConfigError::Syntax {
                path: path.to_owned(),
                line: e.span().map_or(1, |span| line_of(span.start)),
                message: e.message().to_owned(),
            })?;
        let mut values = BTreeMap::new();
        for (key, value) in table {
            let line = line_of(key.span().start);
            let name = key.into_inner();
            let Some(arg) = settable(command).find(|arg| arg.get_long() == Some(name.as_str()))
            else {
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    line,
                    hint: nearest(&name, command)
                        .map(|near| format!(" (did you mean `{near}`?)"))
                        .unwrap_or_default(),
                    key: name,
                });
            };
            let bad = |message: String| ConfigError::BadValue {
                path: path.to_owned(),
                line: line_of(value.span().start),
                key: name.clone(),
                message,
            };
            let words = words(arg, value.get_ref()).map_err(bad)?;
            if !is_switch(arg) {
                for word in &words {
                    check(arg, word).map_err(bad)?;
                }
            }
            values.insert(arg.get_id().to_string(), words);
        }
        Ok(SettingsFile {
            path: path.to_owned(),
            values,
        })
    }

    /// Whether the file sets the flag `id`.
    pub fn sets(&self, id: &str) -> bool {
        self.values.contains_key(id)
    }

    /// Command-line words for the file's settings that `matches` (parsed
    /// from the flags and environment) did not already take from there.
    pub fn as_arguments(&self, command: &Command, matches: &ArgMatches) -> Vec<OsString> {
        let mut arguments = Vec::new();
        for arg in settable(command) {
            let id = arg.get_id().as_str();
            let Some(words) = self.values.get(id) else {
                continue;
            };
            if matches!(
                matches.value_source(id),
                Some(ValueSource::CommandLine | ValueSource::EnvVariable)
            ) {
                continue;
            }
            let flag = format!("--{}", arg.get_long().expect("settable flags are long"));
            if is_switch(arg) {
                arguments.extend(words.iter().map(|_| OsString::from(&flag)));
                continue;
            }
            for word in words {
                let mut argument = OsString::from(format!("{flag}="));
                argument.push(word);
                arguments.push(argument);
            }
        }
        arguments
    }
}

/// The flags a file may set: every long flag but `--config` itself and
/// clap's own.
pub fn settable(command: &Command) -> impl Iterator<Item = &Arg> {
    command.get_arguments().filter(|arg| {
        arg.get_long()
            .is_some_and(|long| !matches!(long, "config" | "help" | "version"))
    })
}

/// An on/off flag (`--no-deflate`): `true` in the file, or left out.
pub fn is_switch(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::SetTrue)
}

/// Takes more than one value (a TOML array).
fn takes_many(arg: &Arg) -> bool {
    matches!(arg.get_action(), ArgAction::Append) || arg.get_value_delimiter().is_some()
}

/// A TOML value as the words the flag would be given; an empty list for a
/// switch set to `false`.
fn words(arg: &Arg, value: &Value) -> Result<Vec<OsString>, String> {
    if is_switch(arg) {
        return match value {
            Value::Boolean(true) => Ok(vec![OsString::from("true")]),
            Value::Boolean(false) => Ok(Vec::new()),
            _ => Err("expected true or false".into()),
        };
    }
    match value {
        Value::Array(items) if takes_many(arg) => items.iter().map(word).collect(),
        Value::Array(_) => Err("expected one value, not a list".into()),
        single => Ok(vec![word(single)?]),
    }
}

fn word(value: &Value) -> Result<OsString, String> {
    match value {
        Value::String(text) => Ok(text.into()),
        Value::Integer(n) => Ok(n.to_string().into()),
        Value::Float(x) => Ok(x.to_string().into()),
        Value::Boolean(b) => Ok(b.to_string().into()),
        Value::Datetime(_) | Value::Array(_) | Value::Table(_) => {
            Err("expected a string or a number".into())
        }
    }
}

/// Runs `word` through the flag's own parser: the flag alone, on a
/// command of its own, free of what ties it to others.
fn check(arg: &Arg, word: &OsStr) -> Result<(), String> {
    let lone = arg
        .clone()
        .env(None::<&str>)
        .requires(clap::builder::Resettable::<clap::Id>::Reset)
        .conflicts_with(clap::builder::Resettable::<clap::Id>::Reset)
        .required(false);
    let flag = format!("--{}", arg.get_long().expect("settable flags are long"));
    let mut argument = OsString::from(format!("{flag}="));
    argument.push(word);
    Command::new("switchboard")
        .arg(lone)
        .try_get_matches_from([OsString::from("switchboard"), argument])
        .map(drop)
        .map_err(|e| clap_reason(&e))
}

/// The reason in a clap error, without its `error:` prefix and usage.
fn clap_reason(error: &clap::Error) -> String {
    let rendered = error.render().to_string();
    let first = rendered.lines().next().unwrap_or_default();
    first.strip_prefix("error: ").unwrap_or(first).to_owned()
}

/// The settable key closest to `name`, if one is close.
fn nearest<'a>(name: &str, command: &'a Command) -> Option<&'a str> {
    settable(command)
        .filter_map(Arg::get_long)
        .map(|long| (strsim::levenshtein(name, long), long))
        .filter(|(distance, _)| *distance <= 3)
        .min()
        .map(|(_, long)| long)
}
