//! Writing command output to stdout (terminal-safe, see [`super::shown`]), and ending quietly
//! when its reader has gone.

/// Write command output (through `out!` and `outln!`). Rust starts programs with SIGPIPE
/// ignored, so that a socket closed under a client is an error to handle, not the end of the
/// process; a reader that has gone (`agentpool tasks logs ID | head`) then shows up here as a
/// broken pipe, and the process ends as SIGPIPE would have ended it, quietly and by that
/// signal, as `git log | head` does. `println!` would panic instead. Any other failure (a full
/// disk behind a redirect) is said on stderr and ends the command.
pub fn write_stdout(args: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let text = args.to_string();
    let Err(e) = std::io::stdout()
        .lock()
        .write_all(super::shown::for_stdout(&text).as_bytes())
    else {
        return;
    };
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        // SAFETY: SIG_DFL is a valid disposition for SIGPIPE, and raising it ends the process
        // (its default action), which is what this is for.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
            libc::raise(libc::SIGPIPE);
        }
    }
    eprintln!("agentpool: cannot write the output: {e}");
    std::process::exit(crate::exit::ExitCode::Failed as i32);
}
