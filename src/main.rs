//! The `switchyard` command: run, check a config, run the demo, or run the model simulator.

#![forbid(unsafe_code)]

use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;
use switchyard::{config, demo, server, sim};

#[derive(Parser)]
#[command(
    name = "switchyard",
    version,
    about = "An edge load balancer for AI model clusters",
    args_conflicts_with_subcommands = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config file.
    #[arg(short = 'c', long = "conf", default_value = "conf/switchyard.yaml")]
    conf: PathBuf,
    /// Run in the background.
    #[arg(short, long)]
    daemon: bool,
    /// Take over the listeners of a running switchyard (graceful binary upgrade).
    #[arg(short, long)]
    upgrade: bool,
}

#[derive(Subcommand)]
enum Command {
    /// Run the balancer (the default).
    Run {
        #[arg(short = 'c', long = "conf", default_value = "conf/switchyard.yaml")]
        conf: PathBuf,
        #[arg(short, long)]
        daemon: bool,
        #[arg(short, long)]
        upgrade: bool,
    },
    /// Validate a config file and exit (like `nginx -t`).
    Check {
        #[arg(short = 'c', long = "conf", default_value = "conf/switchyard.yaml")]
        conf: PathBuf,
        /// Also resolve every peer given by DNS name; one that does not resolve is an error.
        #[arg(long)]
        resolve: bool,
    },
    /// Run the demo: simulated model clusters and the balancer on conf/demo.yaml.
    Demo {
        #[arg(short = 'c', long = "conf", default_value = "conf/demo.yaml")]
        conf: PathBuf,
    },
    /// Run one simulated OpenAI-compatible model server (for tests, demos and benchmarks).
    Sim(sim::SimArgs),
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();
    let (conf, daemon, upgrade) = match cli.command {
        Some(Command::Check { conf, resolve }) => return check(&conf, resolve),
        Some(Command::Demo { conf }) => {
            return match demo::run(&conf) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard demo: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Sim(args)) => {
            return match sim::run(args) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("switchyard sim: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Some(Command::Run {
            conf,
            daemon,
            upgrade,
        }) => (conf, daemon, upgrade),
        None => (cli.conf, cli.daemon, cli.upgrade),
    };
    let opts = server::RunOptions {
        config_path: conf,
        daemon,
        upgrade,
    };
    match server::run(&opts) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("switchyard: {e}");
            ExitCode::from(1)
        }
    }
}

fn check(path: &std::path::Path, resolve: bool) -> ExitCode {
    let c = match config::load(path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(1);
        }
    };
    if resolve {
        if let Err(errors) = resolve_names(path, &c) {
            for e in errors {
                eprintln!("{e}");
            }
            return ExitCode::from(1);
        }
    }
    println!(
        "{}: ok ({} listeners, {} clusters, {} routes)",
        path.display(),
        c.listeners.len(),
        c.clusters.len(),
        c.routes.len()
    );
    ExitCode::SUCCESS
}

/// `check --resolve`: resolve every named peer; the ones that do not resolve, as config errors
/// naming the key and line.
fn resolve_names(path: &std::path::Path, c: &config::Config) -> Result<(), Vec<String>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| vec![format!("cannot start a runtime to resolve names: {e}")])?;
    let results = runtime.block_on(switchyard::services::resolver::resolve_all(c));
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let mut errors = Vec::new();
    for (key, name, result) in results {
        let message = match result {
            Ok(addrs) if !addrs.is_empty() => {
                println!("{name}: {addrs:?}");
                continue;
            }
            Ok(_) => format!("{name:?} has no A or AAAA record"),
            Err(e) => format!("{name:?} does not resolve: {e}"),
        };
        let invalid = config::Invalid {
            file: path.display().to_string(),
            line: config::line_of(&text, &key),
            path: key,
            message,
        };
        errors.push(invalid.to_string());
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors)
    }
}
