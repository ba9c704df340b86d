//! What the three binaries share: the progress bar, the thread count and the one error style
//! (`BINARY: error: MESSAGE: CAUSE`, exit status 1).

#![allow(dead_code)] // each binary uses its own part

use std::process::ExitCode;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// A progress bar on stderr with `template` (hidden when `quiet`); `len` None is a spinner.
pub fn bar(quiet: bool, len: Option<u64>, template: &str) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(template) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// Use `threads` worker threads for the engine (default: all cores).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting the thread count")?;
    }
    Ok(())
}

/// The exit of a binary: nothing on success; on failure one line, the error and its causes (a cause
/// whose text the message already holds is not repeated), and status 1.
pub fn exit(binary: &str, result: Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let mut msg = e.to_string();
            for cause in e.chain().skip(1) {
                let c = cause.to_string();
                if !msg.contains(&c) {
                    msg = format!("{msg}: {c}");
                }
            }
            eprintln!("{binary}: error: {msg}");
            ExitCode::FAILURE
        }
    }
}
