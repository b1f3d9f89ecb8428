//! `check`: the engine's consistency check, with a progress bar.

use std::io::{IsTerminal, Write};
use std::process::ExitCode;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Mutex;

use ext4_engine::fsck::{CheckOptions, CheckSummary, Checker, DEFAULT_MEMORY};
use ext4_engine::Error;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::json;

use crate::util::error_json;
use crate::{out_err, CmdResult, Fail, Vol};

/// Where problems go: stdout, as text lines or as a streamed JSON array.
struct Out {
    json: bool,
    count: u64,
    failed: Option<std::io::Error>,
}

impl Out {
    fn put(&mut self, e: &Error, pb: &ProgressBar) {
        self.count += 1;
        let line = if self.json {
            let sep = if self.count == 1 { "\n" } else { ",\n" };
            format!("{sep}{}", error_json(e))
        } else {
            format!("problem: {e}\n")
        };
        let r = pb.suspend(|| std::io::stdout().lock().write_all(line.as_bytes()));
        if let Err(e) = r {
            self.failed.get_or_insert(e);
        }
    }
}

pub fn bar(len: u64, what: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::new(len);
    let style = ProgressStyle::with_template(&format!(
        "{{spinner}} {what} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    pb.set_style(style);
    pb
}

pub fn run(vol: &Vol, data: bool, jobs: Option<usize>, json_out: bool) -> CmdResult {
    let opts = CheckOptions { data };
    let total = vol.sb().group_count;
    let pb = bar(total as u64, "checking groups");
    let out = Mutex::new(Out {
        json: json_out,
        count: 0,
        failed: None,
    });
    if json_out {
        print!("{{\"problems\": [");
    }
    let put = |e: &Error| out.lock().unwrap_or_else(|p| p.into_inner()).put(e, &pb);
    let jobs = jobs
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
                .min(4)
        })
        .max(1);
    // Each pass walks every group (spread over worker threads, each
    // taking the next unchecked group), then compares what it gathered.
    // Only a filesystem too large for the memory budget needs more than
    // one pass.
    let mut chk = Checker::new(vol, &opts, DEFAULT_MEMORY);
    pb.set_length(total as u64 * chk.passes() as u64);
    let mut sum = CheckSummary::default();
    while let Some(s) = chk.begin_pass(&mut |e| put(e)) {
        // A pass to name the owners of multiply-claimed blocks may follow.
        pb.set_length(total as u64 * chk.passes() as u64);
        sum.add(&s);
        let next = AtomicU32::new(0);
        let c = &chk;
        let work = || {
            let mut part = CheckSummary::default();
            loop {
                let g = next.fetch_add(1, Ordering::Relaxed);
                if g >= total {
                    break;
                }
                part.add(&c.check_group(g, &mut |e| put(e)));
                pb.inc(1);
            }
            part
        };
        let parts: Vec<CheckSummary> = if jobs == 1 {
            vec![work()]
        } else {
            std::thread::scope(|s| {
                let workers: Vec<_> = (0..jobs).map(|_| s.spawn(work)).collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_default())
                    .collect()
            })
        };
        for p in &parts {
            sum.add(p);
        }
        sum.add(&chk.end_pass(&mut |e| put(e)));
    }
    // Damage the engine skipped while answering the check's own lookups.
    for r in vol.take_reports() {
        put(&r);
    }
    pb.finish_and_clear();
    let mut o = out.into_inner().unwrap_or_else(|p| p.into_inner());
    if let Some(e) = o.failed.take() {
        return Err(out_err(e));
    }
    let problems = o.count;
    let mut stdout = std::io::stdout().lock();
    if json_out {
        let s = json!({
            "groups": sum.groups,
            "inodes": sum.inodes,
            "directories": sum.directories,
            "regular_files": sum.regular_files,
            "data_bytes": sum.data_bytes,
            "problems": problems,
        });
        writeln!(
            stdout,
            "{}],\n\"summary\": {s},\n\"clean\": {}}}",
            if problems == 0 { "" } else { "\n" },
            problems == 0
        )
        .map_err(out_err)?;
    } else {
        let mut line = format!(
            "{} groups, {} inodes ({} directories, {} regular files) checked",
            sum.groups, sum.inodes, sum.directories, sum.regular_files
        );
        if data {
            line += &format!(", {} bytes of file data read", sum.data_bytes);
        }
        if problems == 0 {
            line += ": clean";
        } else {
            line += &format!(
                ": {problems} problem{} found",
                if problems == 1 { "" } else { "s" }
            );
        }
        writeln!(stdout, "{line}").map_err(out_err)?;
    }
    let _ = Fail::Reported;
    Ok(if problems == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
