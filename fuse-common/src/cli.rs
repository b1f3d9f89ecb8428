//! The conventions every mount program follows (`ext4-fuse`,
//! `ext4-fuse-mount`, `ext4-fuse-bsd`): exit status 0 on success, 1 when
//! mounting or serving failed, 2 for a usage error (a bad argument or
//! option, refused before anything is touched); every error is one line,
//! `PROGRAM: what is wrong`.

use std::process::ExitCode;

/// Mounting or serving failed.
pub const EXIT_FAILURE: u8 = 1;
/// The command line is wrong.
pub const EXIT_USAGE: u8 = 2;

/// Print `PROGRAM: msg` and return the usage status.
pub fn usage_error(program: &str, msg: &str) -> ExitCode {
    eprintln!("{program}: {msg}");
    ExitCode::from(EXIT_USAGE)
}

/// Print `PROGRAM: msg` and return the failure status.
pub fn failure(program: &str, msg: &str) -> ExitCode {
    eprintln!("{program}: {msg}");
    ExitCode::from(EXIT_FAILURE)
}

/// A clap error as one line: clap spreads "the following required
/// arguments were not provided" and the argument over several lines and
/// adds a usage block; a terminal showing only the first line would cut
/// the message off.
pub fn one_line(e: &clap::Error) -> String {
    let text = e.to_string();
    let mut parts: Vec<&str> = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with("Usage:") || line.starts_with("For more information") {
            break;
        }
        if !line.is_empty() {
            parts.push(line.trim_start_matches("error: "));
        }
    }
    let mut msg = parts.join(" ");
    if msg.is_empty() {
        msg = "invalid arguments".into();
    }
    format!("{msg} (see --help)")
}

/// Parse a command line with clap, `options_help` (the shared mount
/// options' list) put before the program's own `after_help`: `Err` is the
/// status to exit with after help or version (0, printed) or a usage error
/// (2, one line printed).
pub fn parse_with_help<T: clap::Parser>(
    program: &str,
    args: impl IntoIterator<Item = String>,
    options_help: &str,
) -> Result<T, ExitCode> {
    let r = try_parse_with_help::<T>(program, args, options_help);
    match r {
        Ok(t) => Ok(t),
        Err(e) if is_help(&e) => {
            let _ = e.print();
            Err(ExitCode::SUCCESS)
        }
        Err(e) => Err(usage_error(program, &one_line(&e))),
    }
}

/// [`parse_with_help`] without printing: clap's own error.
pub fn try_parse_with_help<T: clap::Parser>(
    program: &str,
    args: impl IntoIterator<Item = String>,
    options_help: &str,
) -> Result<T, clap::Error> {
    let mut cmd = T::command();
    let own = cmd
        .get_after_help()
        .map(|h| h.to_string())
        .unwrap_or_default();
    cmd = cmd.after_help(format!("{options_help}{own}"));
    let m = cmd.try_get_matches_from(std::iter::once(program.to_string()).chain(args))?;
    T::from_arg_matches(&m)
}

pub fn is_help(e: &clap::Error) -> bool {
    matches!(
        e.kind(),
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser, Debug)]
    struct Cli {
        source: String,
        mountpoint: String,
    }

    #[test]
    fn missing_argument_is_one_whole_line() {
        let e = Cli::try_parse_from(["x", "img"]).unwrap_err();
        let l = one_line(&e);
        assert!(!l.contains('\n'), "{l}");
        assert!(
            l.contains("<MOUNTPOINT>") && l.contains("not provided"),
            "{l}"
        );
    }
}
