//! `recover`: replay the journal into the image, as `e2fsck -E
//! journal_only` does (see the engine's `journal::replay`).

use std::io::Write;
use std::process::ExitCode;
use std::time::Instant;

use ext4_engine::journal::{self, Policy};
use ext4_engine::{BlockDevice, DEFAULT_REPLAY_BUDGET};
use serde_json::json;

use crate::{open_error, open_journal, out_err, Cli, CmdResult, Fail};

pub fn run(cli: &Cli, json_out: bool) -> CmdResult {
    let img = cli.image.display();
    if cli.norecovery {
        return Err(Fail::Open(
            "recover and --norecovery contradict each other".into(),
        ));
    }
    let dev = crate::open_device(cli, true)?;
    let jdev = open_journal(cli, true)?;
    let budget = cli.replay_budget.map_or(DEFAULT_REPLAY_BUDGET, |b| {
        usize::try_from(b).unwrap_or(usize::MAX)
    });
    let t0 = Instant::now();
    let r = journal::recover(
        &dev,
        jdev.as_ref().map(|d| d as &dyn BlockDevice),
        Policy::E2fsck,
        budget,
    )
    .map_err(|e| open_error(cli, e))?;
    let secs = t0.elapsed().as_secs_f64();
    let mut out = std::io::stdout().lock();
    let Some(r) = r else {
        if json_out {
            writeln!(out, "{}", json!({"needed": false})).map_err(out_err)?;
        } else {
            writeln!(out, "{img}: the journal needs no recovery").map_err(out_err)?;
        }
        return Ok(ExitCode::SUCCESS);
    };
    let s = &r.stats;
    let problem = r.problem.as_ref().map(|p| p.to_string());
    if json_out {
        let mut v = crate::util::replay_json(s);
        v["needed"] = json!(true);
        v["problem"] = json!(problem);
        v["marked_for_check"] = json!(r.marked);
        v["seconds"] = json!(secs);
        writeln!(out, "{v}").map_err(out_err)?;
    } else {
        writeln!(
            out,
            "{img}: recovered {} ({secs:.3} s)",
            crate::util::replay_text(s)
        )
        .map_err(out_err)?;
        if let Some(p) = &problem {
            writeln!(out, "{img}: {p}").map_err(out_err)?;
        }
        if r.marked {
            writeln!(
                out,
                "{img}: the filesystem is marked for a full check: run e2fsck -f"
            )
            .map_err(out_err)?;
        }
    }
    Ok(if r.marked {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
