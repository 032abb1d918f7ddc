//! The progress bar on stderr: one line rewritten in place (`\r`) on a terminal, plain lines every
//! few seconds (and at each new phase) otherwise, so that logs stay readable.

use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// Redraws on a terminal at most this often.
const TTY_EVERY: Duration = Duration::from_millis(100);
/// Lines when stderr is not a terminal come at most this often (and at each new phase).
const PLAIN_EVERY: Duration = Duration::from_secs(5);

pub struct Progress {
    tty: bool,
    last: Option<Instant>,
    phase: String,
    /// Whether a line is on screen (a terminal only), to clear before other output.
    drawn: bool,
}

impl Progress {
    pub fn new() -> Progress {
        Progress { tty: std::io::stderr().is_terminal(), last: None, phase: String::new(), drawn: false }
    }

    /// Shows `phase` with `done` resources of `total` (when known) since `since`, and a detail.
    pub fn show(&mut self, phase: &str, done: u64, total: Option<u64>, since: Instant, detail: &str) {
        let new_phase = phase != self.phase;
        let every = if self.tty { TTY_EVERY } else { PLAIN_EVERY };
        if !new_phase && self.last.is_some_and(|last| last.elapsed() < every) {
            return;
        }
        self.phase = phase.to_owned();
        self.last = Some(Instant::now());
        let line = render(phase, done, total, since.elapsed(), detail);
        let mut err = std::io::stderr().lock();
        if self.tty {
            let width = terminal_width().saturating_sub(1).max(20);
            let line: String = line.chars().take(width).collect();
            let _ = write!(err, "\r{line}\x1b[K");
            self.drawn = true;
        } else {
            let _ = writeln!(err, "{line}");
        }
        let _ = err.flush();
    }

    /// Clears the bar before other output (a terminal only).
    pub fn clear(&mut self) {
        if self.drawn {
            clear_line();
            self.drawn = false;
        }
        self.phase.clear();
    }
}

/// Clears the current line of a terminal on stderr.
pub fn clear_line() {
    let mut err = std::io::stderr();
    if err.is_terminal() {
        let _ = write!(err, "\r\x1b[K");
        let _ = err.flush();
    }
}

fn render(phase: &str, done: u64, total: Option<u64>, elapsed: Duration, detail: &str) -> String {
    let seconds = elapsed.as_secs_f64();
    let rate = if seconds > 0.0 { done as f64 / seconds } else { 0.0 };
    let mut line = match total {
        Some(total) if total > 0 => {
            let percent = (done as f64 * 100.0 / total as f64).min(100.0);
            format!("{phase}: {done}/{total} resources ({percent:.0}%), {rate:.0} resources/s")
        }
        _ => format!("{phase}: {done} resources, {rate:.0} resources/s"),
    };
    if let Some(total) = total.filter(|t| *t > done) {
        if rate > 0.0 {
            line.push_str(&format!(", ETA {}", clock((total - done) as f64 / rate)));
        }
    }
    line.push_str(&format!(", {} elapsed", clock(seconds)));
    if !detail.is_empty() {
        line.push_str(&format!(" - {detail}"));
    }
    line
}

/// `m:ss`, or `h:mm:ss` from an hour.
fn clock(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match s / 3600 {
        0 => format!("{}:{:02}", s / 60, s % 60),
        h => format!("{h}:{:02}:{:02}", s / 60 % 60, s % 60),
    }
}

fn terminal_width() -> usize {
    // SAFETY: TIOCGWINSZ fills the winsize we own; the descriptor is stderr, open for the process.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let ok = unsafe { libc::ioctl(libc::STDERR_FILENO, libc::TIOCGWINSZ, &mut size) } == 0;
    if ok && size.ws_col > 0 {
        usize::from(size.ws_col)
    } else {
        80
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rate_and_eta() {
        let line = render("exporting", 500, Some(1500), Duration::from_secs(10), "now Patient");
        assert_eq!(line, "exporting: 500/1500 resources (33%), 50 resources/s, ETA 0:20, 0:10 elapsed - now Patient");
        let line = render("importing", 10, None, Duration::from_secs(4000), "");
        assert_eq!(line, "importing: 10 resources, 0 resources/s, 1:06:40 elapsed");
    }
}
