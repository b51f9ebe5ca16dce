//! `switchboard config`: the effective settings as a TOML file that
//! `--config` takes back, each value followed by where it came from.

use std::fmt::Write as _;

use clap::parser::ValueSource;
use clap::{Arg, ArgMatches, Command};

use super::file::{SettingsFile, is_switch, settable};

/// Where the values came from, before the file was added.
pub struct Sources<'a> {
    /// Flags and environment alone.
    pub given: &'a ArgMatches,
    pub file: Option<&'a SettingsFile>,
}

const REDACTED: &str = "<redacted>";

/// Every setting of `command` as `key = value  # source`.
pub fn render(command: &Command, effective: &ArgMatches, sources: &Sources<'_>) -> String {
    let mut out = String::from(
        "# switchboard's effective configuration: each value's source follows it.\n\
         # Secrets are redacted. Unset settings are commented out.\n",
    );
    for arg in settable(command) {
        let key = arg.get_long().expect("settable flags are long");
        let source = source_of(arg, sources);
        match value_of(arg, effective) {
            Some(value) => writeln!(out, "{key} = {value}  # {source}"),
            None => writeln!(out, "# {key} = (unset)  # {source}"),
        }
        .expect("writing to a String");
    }
    out
}

fn source_of(arg: &Arg, sources: &Sources<'_>) -> String {
    let id = arg.get_id().as_str();
    match sources.given.value_source(id) {
        Some(ValueSource::CommandLine) => "flag".into(),
        Some(ValueSource::EnvVariable) => format!(
            "environment {}",
            arg.get_env()
                .map(|e| e.to_string_lossy())
                .unwrap_or_default()
        ),
        _ => match sources.file {
            Some(file) if file.sets(id) => format!("file {}", file.path.display()),
            _ => "default".into(),
        },
    }
}

/// The value as TOML, or `None` if unset.
fn value_of(arg: &Arg, matches: &ArgMatches) -> Option<String> {
    let id = arg.get_id().as_str();
    if is_switch(arg) {
        return Some(matches.get_flag(id).to_string());
    }
    let raw: Vec<String> = matches
        .get_raw(id)?
        .map(|word| word.to_string_lossy().into_owned())
        .collect();
    let secret = arg.is_hide_env_values_set();
    let shown = |word: &String| {
        if secret {
            toml_string(REDACTED)
        } else if id == "redis_url" {
            toml_string(&without_password(word))
        } else {
            toml_scalar(word)
        }
    };
    let many = matches!(arg.get_action(), clap::ArgAction::Append);
    Some(if many {
        let items: Vec<String> = raw.iter().map(shown).collect();
        format!("[{}]", items.join(", "))
    } else {
        raw.first().map(shown).unwrap_or_default()
    })
}

/// A number as itself, anything else as a TOML string: the file reads
/// both back as the same words.
fn toml_scalar(word: &str) -> String {
    // Only numbers that print back as written: not `007`, `+5` or `inf`.
    let plain_number = word.parse::<i64>().is_ok_and(|n| n.to_string() == word)
        || word
            .parse::<f64>()
            .is_ok_and(|x| x.is_finite() && x.to_string() == word);
    if plain_number {
        word.to_owned()
    } else {
        toml_string(word)
    }
}

fn toml_string(text: &str) -> String {
    toml::Value::String(text.to_owned()).to_string()
}

/// `redis://user:PASSWORD@host` with the password redacted.
fn without_password(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let Some(at) = url[scheme_end..].find('@').map(|i| i + scheme_end) else {
        return url.to_owned();
    };
    match url[scheme_end..at].find(':').map(|i| i + scheme_end) {
        Some(colon) => format!("{}:{REDACTED}{}", &url[..colon], &url[at..]),
        None => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_stay_numbers_and_the_rest_are_strings() {
        assert_eq!(toml_scalar("100"), "100");
        assert_eq!(toml_scalar("0.5"), "0.5");
        assert_eq!(toml_scalar("25s"), "\"25s\"");
        assert_eq!(toml_scalar("127.0.0.1:8080"), "\"127.0.0.1:8080\"");
        assert_eq!(toml_scalar("007"), "\"007\"");
        assert_eq!(toml_scalar("inf"), "\"inf\"");
    }

    #[test]
    fn a_redis_password_is_redacted() {
        assert_eq!(
            without_password("redis://:hunter2@db:6379/0"),
            "redis://:<redacted>@db:6379/0"
        );
        assert_eq!(
            without_password("rediss://app:hunter2@db/1"),
            "rediss://app:<redacted>@db/1"
        );
        assert_eq!(without_password("redis://db:6379/0"), "redis://db:6379/0");
    }
}
