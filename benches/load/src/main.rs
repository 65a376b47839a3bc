//! `switchboard-load`: drives Switchboard and the hubs users would pick instead with the
//! same websocket clients and the same messages, measures them side by side, and writes
//! BENCHMARKS.md.
//!
//! ```sh
//! scripts/bench.sh quick          # build everything, run every workload, write BENCHMARKS.md
//! switchboard-load suite --scale tiny --systems switchboard --no-report   # CI's smoke run
//! ```
//! Servers are pinned to one core (`--server-core`, default 0) and the load tool with its
//! worker processes to the other (`--client-core`, default 1).

mod backends;
mod proc;
mod report;
mod results;
mod systems;
mod worker;
mod workers;
mod workloads;

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use crate::{
    results::{Measured, Run, Suite},
    systems::{Env, System},
    workloads::Scale,
};

#[derive(Parser)]
#[command(version, about = "Load tool and benchmark suite for Switchboard and its peers")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs workloads against systems and records the results.
    Suite {
        /// tiny (CI smoke), quick (a few minutes) or full.
        #[arg(long, default_value = "quick")]
        scale: String,
        /// Comma-separated systems (default: all).
        #[arg(long, value_delimiter = ',')]
        systems: Vec<String>,
        /// Comma-separated workloads W1..W4 (default: all).
        #[arg(long, value_delimiter = ',')]
        workloads: Vec<String>,
        /// Repeats of each run (default: the scale's).
        #[arg(long)]
        repeats: Option<u32>,
        #[arg(long, default_value_t = 0)]
        server_core: usize,
        #[arg(long, default_value_t = 1)]
        client_core: usize,
        /// Where results.json goes.
        #[arg(long, default_value = "target/bench")]
        out: PathBuf,
        /// Do not write BENCHMARKS.md and its plots.
        #[arg(long)]
        no_report: bool,
        /// Keep the runs of other systems from an earlier results.json (to re-measure one
        /// system after a change without re-running the rest).
        #[arg(long)]
        merge: Option<PathBuf>,
        /// With --merge: keep the re-measured systems' earlier runs too, and number the new
        /// repeats after them (adds repeats to an earlier suite).
        #[arg(long, requires = "merge")]
        append: bool,
        /// W4's PostgreSQL: a URL of an existing database on a server where the load tool may
        /// create a database of its own (e.g. postgres://postgres@127.0.0.1:5432/postgres).
        /// Without it W4 starts a private server (initdb), whose every process is counted.
        #[arg(long)]
        postgres_url: Option<String>,
        /// W4's offered rate in messages per second (default: the scale's). Below the rate at
        /// which the server core saturates, W4's latency is the path's, not a queue's.
        #[arg(long)]
        w4_rate: Option<f64>,
    },
    /// Rewrites BENCHMARKS.md from a results.json.
    Report {
        #[arg(default_value = "target/bench/results.json")]
        results: PathBuf,
    },
    /// Internal: one client process, driven over stdin/stdout.
    #[command(hide = true)]
    Worker,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Worker => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(worker::run()),
        Command::Report { results } => {
            let suite: Suite = serde_json::from_slice(&std::fs::read(&results).context("results.json")?)?;
            report::write(&suite, &systems::repo_root())
        }
        Command::Suite {
            scale,
            systems,
            workloads,
            repeats,
            server_core,
            client_core,
            out,
            no_report,
            merge,
            append,
            postgres_url,
            w4_rate,
        } => {
            let mut scale = Scale::named(&scale)?;
            if let Some(r) = repeats {
                scale.repeats = r;
            }
            if let Some(rate) = w4_rate {
                anyhow::ensure!(rate.is_finite() && rate > 0.0, "--w4-rate must be a positive rate");
                scale.w4_rate = rate;
            }
            let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
            let pin = cores > 1;
            if pin {
                pin_self(client_core)?;
            }
            let env = Env {
                repo: systems::repo_root(),
                bin_dir: std::env::current_exe()?.parent().context("bin dir")?.to_path_buf(),
                server_core: pin.then_some(server_core),
                postgres_url,
            };
            let systems: Vec<System> = if systems.is_empty() {
                System::ALL.to_vec()
            } else {
                systems.iter().map(|s| System::parse(s)).collect::<Result<_>>()?
            };
            let workloads = if workloads.is_empty() {
                results::WORKLOADS.iter().map(|w| w.to_string()).collect()
            } else {
                workloads
            };
            let command = std::env::args().collect::<Vec<_>>().join(" ");
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()?
                .block_on(suite(
                    env, scale, systems, workloads, out, !no_report, command, merge, append,
                ))
        }
    }
}

/// Pins this process (and the workers it spawns) to `core`.
fn pin_self(core: usize) -> Result<()> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; we pass its size and our own pid (0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(core, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            bail!("cannot pin the load tool to core {core}");
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
async fn suite(
    env: Env,
    scale: Scale,
    systems: Vec<System>,
    workloads: Vec<String>,
    out: PathBuf,
    write_report: bool,
    command: String,
    merge: Option<PathBuf>,
    append: bool,
) -> Result<()> {
    // A run is re-measured when both its system and its workload are; the others are kept,
    // each with the machine and command it was measured by.
    let names: Vec<&str> = systems.iter().map(|s| s.name()).collect();
    let kept = match merge {
        Some(path) => {
            let old: Suite = serde_json::from_slice(&std::fs::read(&path).context("--merge results")?)?;
            old.runs
                .into_iter()
                .filter(|r| append || !(names.contains(&r.system.as_str()) && workloads.contains(&r.workload)))
                .collect()
        }
        None => Vec::new(),
    };
    let measured = Measured {
        command,
        scale: scale.name.to_string(),
        machine: proc::machine(),
    };
    let mut suite = Suite { runs: kept };
    let mut earlier = std::collections::HashMap::<(String, String), u32>::new();
    for r in &suite.runs {
        let n = earlier.entry((r.system.clone(), r.workload.clone())).or_default();
        *n = (*n).max(r.repeat);
    }
    std::fs::create_dir_all(&out)?;
    eprintln!("scale {:?}", scale);
    let mut failures = 0;
    for repeat in 1..=scale.repeats {
        for w in &workloads {
            for &system in &systems {
                if (w == "W4" && !system.clusters()) || (w != "W4" && system.w4_only()) {
                    continue;
                }
                eprintln!("== {w} {} (repeat {repeat})", system.name());
                let result = match w.as_str() {
                    "W1" => workloads::w1(&env, system, &scale, repeat).await,
                    "W2" => workloads::w2(&env, system, &scale, repeat).await,
                    "W3" => workloads::w3(&env, system, &scale, repeat).await,
                    "W4" => workloads::w4(&env, system, &scale, repeat).await,
                    other => bail!("unknown workload {other:?}"),
                };
                match result {
                    Ok(mut run) => {
                        run.measured = measured.clone();
                        // After the repeats an appended-to suite holds already.
                        run.repeat += earlier
                            .get(&(run.system.clone(), run.workload.clone()))
                            .copied()
                            .unwrap_or(0);
                        print_run(&run);
                        suite.runs.push(run);
                    }
                    Err(e) => {
                        failures += 1;
                        eprintln!("   FAILED: {e:#}");
                    }
                }
                std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&suite)?)?;
            }
        }
    }
    if write_report {
        report::write(&suite, &env.repo)?;
        eprintln!("wrote {}", env.repo.join("BENCHMARKS.md").display());
    }
    if failures > 0 {
        bail!("{failures} run(s) failed");
    }
    Ok(())
}

fn print_run(run: &Run) {
    let params: Vec<String> = run.params.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let metrics: Vec<String> = run.metrics.iter().map(|(k, v)| format!("{k}={v:.3}")).collect();
    println!(
        "{} {} #{} [{}]\n    {}{}",
        run.workload,
        run.system,
        run.repeat,
        params.join(", "),
        metrics.join(" "),
        if run.client_limited { " (client-limited)" } else { "" }
    );
    for n in &run.notes {
        println!("    note: {n}");
    }
}
