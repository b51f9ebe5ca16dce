//! The README's table of flags, made from the same definitions as
//! `--help` (a test keeps the README's copy the same).

use clap::{Arg, Command};

use super::file::is_switch;

/// One Markdown row per flag of `command`: flag, environment variable,
/// default, and the flag's help.
pub fn flags_table(command: &Command) -> String {
    let mut table = String::from(
        "| flag | environment | default | what it sets |\n| --- | --- | --- | --- |\n",
    );
    let flags = command.get_arguments().filter(|arg| {
        arg.get_long()
            .is_some_and(|long| !matches!(long, "help" | "version"))
    });
    for arg in flags {
        table.push_str(&format!(
            "| `{}` | `{}` | {} | {} |\n",
            usage(arg),
            arg.get_env()
                .map(|env| env.to_string_lossy())
                .unwrap_or_default(),
            default(arg),
            cell(&help(arg)),
        ));
    }
    table
}

fn usage(arg: &Arg) -> String {
    let flag = format!("--{}", arg.get_long().expect("flags are long"));
    if is_switch(arg) {
        return flag;
    }
    let choices: Vec<String> = arg
        .get_possible_values()
        .iter()
        .filter(|value| !value.is_hide_set())
        .map(|value| value.get_name().to_owned())
        .collect();
    let value = if choices.is_empty() {
        arg.get_value_names()
            .and_then(|names| names.first())
            .map_or_else(|| "VALUE".to_owned(), ToString::to_string)
    } else {
        choices.join("|")
    };
    format!("{flag} {}", value.replace('|', "\\|"))
}

fn default(arg: &Arg) -> String {
    if is_switch(arg) {
        return "off".into();
    }
    let defaults: Vec<String> = arg
        .get_default_values()
        .iter()
        .map(|value| value.to_string_lossy().into_owned())
        .collect();
    if defaults.is_empty() {
        "unset".into()
    } else {
        format!("`{}`", defaults.join(","))
    }
}

fn help(arg: &Arg) -> String {
    arg.get_long_help()
        .or_else(|| arg.get_help())
        .map(ToString::to_string)
        .unwrap_or_default()
}

/// Text for one table cell: one line, pipes escaped.
fn cell(text: &str) -> String {
    text.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;
    use crate::config::cli::Cli;

    const BEGIN: &str = "<!-- flags: made from `switchboard --help` by a test; SWITCHBOARD_BLESS=1 cargo test rewrites it -->\n";
    const END: &str = "<!-- end of flags -->\n";

    /// The README's flag table is `--help`'s, row for row.
    #[test]
    fn the_readme_flag_table_matches_the_flags() {
        let command = Cli::command();
        let table = flags_table(&command);
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md");
        let readme = std::fs::read_to_string(&path).unwrap();
        let start = readme.find(BEGIN).expect("the README marks its flag table") + BEGIN.len();
        let end = readme[start..].find(END).expect("the flag table ends") + start;
        if readme[start..end] == table {
            return;
        }
        if std::env::var_os("SWITCHBOARD_BLESS").is_some() {
            let updated = format!("{}{table}{}", &readme[..start], &readme[end..]);
            std::fs::write(&path, updated).unwrap();
            return;
        }
        panic!(
            "README.md's flag table differs from the flags: run \
             SWITCHBOARD_BLESS=1 cargo test -p switchboard-server the_readme_flag_table; \
             expected:\n{table}"
        );
    }
}
