//! What the `ss-coord` and `ss-top` binaries share: reading flag values and
//! the command line's error-and-usage path.

use std::process::ExitCode;

/// Parses this process's arguments with `parse`; on an error prints it (an
/// empty error means `--help`) and `usage`, and gives the exit code: 0 for
/// help, 2 for a bad command line.
pub fn args_or_usage<T>(
    tool: &str,
    usage: &str,
    parse: impl FnOnce(&[String]) -> Result<T, String>,
) -> Result<T, ExitCode> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    parse(&args).map_err(|e| {
        if !e.is_empty() {
            eprintln!("{tool}: {e}");
        }
        eprintln!("{usage}");
        if e.is_empty() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(2)
        }
    })
}

/// The value after `flag`, or an error naming the flag.
pub fn value<'a>(
    args: &mut impl Iterator<Item = &'a String>,
    flag: &str,
) -> Result<String, String> {
    args.next()
        .cloned()
        .ok_or_else(|| format!("{flag} needs a value"))
}
