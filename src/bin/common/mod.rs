//! What the binaries share: the progress bar, the thread count and the one error style
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

/// Keep freed heap memory in the process. A network forward allocates and frees tens of megabytes of
/// activations per batch; glibc's defaults hand the top of the heap back to the kernel at every free
/// (trim threshold 128 KiB, raised only as far as the largest freed mapping) and take it back as
/// zeroed pages at the next layer: measured 12% of a small U-Net's forward (whole-process wall time,
/// batch 64). The peak memory is unchanged; it is just not returned until exit. Elsewhere than glibc
/// this does nothing.
pub fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
    }
}

/// Use `threads` worker threads for the engine (default: all cores).
pub fn set_threads(threads: Option<usize>) -> Result<()> {
    if let Some(t) = threads {
        anyhow::ensure!(t > 0, "--threads must be at least 1");
        rayon::ThreadPoolBuilder::new().num_threads(t).build_global().context("setting the thread count")?;
    }
    Ok(())
}

/// The memory a run may plan for: the machine's available memory (`MemAvailable` in /proc/meminfo),
/// or the library's absolute limit where that cannot be read.
pub fn available_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| m.lines().find(|l| l.starts_with("MemAvailable:")).and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok()))
        .map_or(wfrmix::limits::MAX_RUN_BYTES, |kib| kib.saturating_mul(1024))
}

/// The binary's flags; a bad command line gets one line, `BINARY: error: MESSAGE (see --help)`, and
/// status 2 (help and version are printed as clap prints them, status 0).
pub fn parse<T: clap::Parser>(binary: &str) -> std::result::Result<T, ExitCode> {
    use clap::error::ErrorKind;
    match T::try_parse() {
        Ok(args) => Ok(args),
        Err(e) if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand) => {
            let _ = e.print();
            Err(if e.use_stderr() { ExitCode::from(2) } else { ExitCode::SUCCESS })
        }
        Err(e) => {
            let text = e.render().to_string();
            let parts: Vec<&str> = text
                .lines()
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more information"))
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let msg = parts.join(" ");
            eprintln!("{binary}: error: {} (see --help)", msg.strip_prefix("error: ").unwrap_or(&msg));
            Err(ExitCode::from(2))
        }
    }
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
