//! Process bootstrap: turn a config into a Pingora server with the proxy service on every
//! listener, the admin service, and the background services, then run it.

use crate::admin::Admin;
use crate::app::App;
use crate::config::Http1Server;
use crate::config::{self, Config};
use crate::listen::front::Front;
use crate::listen::{self, ConnLimit};
use crate::proxy::{PingoraApp, Switchyard};
use crate::reload::triggers::ReloadTriggers;
use crate::services::health::HealthChecker;
use crate::services::key_probe::KeyProber;
use crate::services::key_sync::KeySync;
use crate::services::load_report::LoadReporter;
use crate::services::resolver::NameResolver;
use crate::services::sampler::Sampler;
use crate::services::warm::Warmer;
use pingora::apps::http_app::HttpServer;
use pingora::apps::HttpServerOptions;
use pingora::proxy::http_proxy;
use pingora::server::configuration::{Opt, ServerConf};
use pingora::server::Server;
use pingora::services::background::background_service;
use pingora::services::listening::Service;
use std::path::PathBuf;
use std::sync::Arc;

/// How to run the process (from the command line).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub config_path: PathBuf,
    /// Detach into the background (Pingora's `--daemon`).
    pub daemon: bool,
    /// Take over the listening sockets of a running instance (Pingora's `--upgrade`).
    pub upgrade: bool,
}

/// Pingora's process settings from ours.
fn server_conf(cfg: &Config, daemon: bool) -> ServerConf {
    let s = &cfg.server;
    ServerConf {
        threads: s.threads,
        daemon,
        pid_file: s.pid_file.clone(),
        upgrade_sock: s.upgrade_sock.clone(),
        grace_period_seconds: Some(s.grace_period.as_secs_f64().ceil() as u64),
        graceful_shutdown_timeout_seconds: Some(
            s.graceful_shutdown_timeout.as_secs_f64().ceil() as u64
        ),
        ..ServerConf::default()
    }
}

/// Make the directory of a process file when it is missing, readable by this user only; warn
/// when it is the shared temporary directory's (see `config::runtime_dir`).
fn process_file_dir(file: &std::path::Path) {
    let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) else {
        return;
    };
    if !dir.exists() {
        use std::os::unix::fs::DirBuilderExt;
        if let Err(e) = std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            log::warn!("cannot create {}: {e}", dir.display());
        }
    }
    if dir.starts_with(std::env::temp_dir()) {
        log::warn!(
            "process file {} is under the temporary directory: set server.pid_file and \
             server.upgrade_sock to a private directory such as /run/switchyard",
            file.display()
        );
    }
}

/// Load the config at `opts.config_path` and build the server (not yet running).
pub fn build(opts: &RunOptions) -> Result<(Server, Arc<App>), config::ConfigError> {
    let file = opts.config_path.display().to_string();
    let (cfg, digests) = crate::reload::read(&opts.config_path)?;
    for f in [&cfg.server.pid_file, &cfg.server.upgrade_sock] {
        process_file_dir(std::path::Path::new(f));
    }
    let conf = server_conf(&cfg, opts.daemon);
    let pingora_opt = Opt {
        upgrade: opts.upgrade,
        daemon: opts.daemon,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(pingora_opt, conf);
    server.bootstrap();

    let listeners = cfg.listeners.clone();
    let http1 = cfg.server.http1;
    let admin_addr = cfg.admin.addr;
    let limits = cfg.limits.clone();
    let access_log = cfg.access_log.clone();
    let app = App::new(cfg, digests, Some(opts.config_path.clone()));

    let mut server_options = HttpServerOptions::default();
    server_options.h2c = true;
    // Fixed at start (Pingora reads them per connection from here, not from our snapshot).
    // Pingora counts reuses: N requests on a connection are N - 1 reuses.
    server_options.keepalive_request_limit = Some(limits.keepalive_requests - 1);
    server_options.h2_idle_timeout = Some(limits.keepalive_timeout);
    let switchyard = Arc::new(Switchyard::new(
        app.current.clone(),
        app.metrics.clone(),
        app.access_log.clone(),
        app.slots.clone(),
    ));
    let mut proxy_app = http_proxy(&server.configuration, PingoraApp(switchyard.clone()));
    proxy_app.server_options = Some(server_options);
    let lean = http1 == Http1Server::Lean;
    let front = Front::new(
        proxy_app,
        lean.then_some(switchyard),
        app.current.clone(),
        app.metrics.clone(),
    );
    let mut proxy = Service::new(
        "switchyard".to_string(),
        ConnLimit::new(front, app.current.clone(), app.metrics.clone()),
    );
    listen::add_listeners(&mut proxy, &listeners, &app.tls, lean).map_err(|(i, e)| {
        let key = if e.is_key() { "key" } else { "cert" };
        invalid(&file, format!("listeners[{i}].tls.{key}"), e.to_string())
    })?;
    app.access_log
        .apply(access_log.as_ref(), app.metrics.access_log_dropped.clone())
        .map_err(|e| invalid(&file, "access_log.path".into(), format!("cannot open: {e}")))?;
    let mut admin = Service::new(
        "switchyard admin".to_string(),
        HttpServer::new_app(Admin {
            current: app.current.clone(),
            metrics: app.metrics.clone(),
            reloader: app.reloader.clone(),
            probe_round: app.probe_round.clone(),
            slots: app.slots.clone(),
            samples: app.samples.clone(),
        }),
    );
    admin.threads = Some(1);
    admin.add_tcp(&admin_addr.to_string());

    server.add_service(proxy);
    server.add_service(admin);
    add_background_services(&mut server, &app, opts);
    Ok((server, app))
}

/// The background services: probes, load reports, DNS, key probes and sync, reload triggers,
/// dashboard samples, cache warm-up. Each gets only the parts of `app` it uses.
fn add_background_services(server: &mut Server, app: &Arc<App>, opts: &RunOptions) {
    let upgrade_sock = PathBuf::from(&server.configuration.upgrade_sock);
    server.add_service(background_service(
        "health checks",
        HealthChecker {
            current: app.current.clone(),
            metrics: app.metrics.clone(),
            probe_round: app.probe_round.clone(),
        },
    ));
    server.add_service(background_service(
        "load reports",
        LoadReporter {
            current: app.current.clone(),
            metrics: app.metrics.clone(),
        },
    ));
    server.add_service(background_service(
        "dns resolver",
        NameResolver {
            current: app.current.clone(),
            state: app.state.clone(),
            metrics: app.metrics.clone(),
        },
    ));
    server.add_service(background_service(
        "api key probes",
        KeyProber {
            current: app.current.clone(),
            metrics: app.metrics.clone(),
            state: app.state.clone(),
        },
    ));
    server.add_service(background_service(
        "api key sync",
        KeySync {
            current: app.current.clone(),
            metrics: app.metrics.clone(),
            state: app.state.clone(),
        },
    ));
    server.add_service(background_service(
        "reload triggers",
        ReloadTriggers {
            reloader: app.reloader.clone(),
            successor: successor_command(opts),
            upgrade_sock,
        },
    ));
    server.add_service(background_service(
        "dashboard samples",
        Sampler {
            current: app.current.clone(),
            metrics: app.metrics.clone(),
            samples: app.samples.clone(),
        },
    ));
    server.add_service(background_service(
        "cache warm-up",
        Warmer {
            current: app.current.clone(),
            probe_round: app.probe_round.clone(),
        },
    ));
}

/// The command that starts this binary again as a successor (`--upgrade`), from the path this
/// process was started with (so a binary replaced on disk is the one that starts).
fn successor_command(opts: &RunOptions) -> Vec<std::ffi::OsString> {
    let cwd = std::env::current_dir().unwrap_or_default();
    let program = std::env::args_os()
        .next()
        .map(PathBuf::from)
        .filter(|p| p.components().count() > 1)
        .map(|p| cwd.join(p))
        .or_else(|| {
            // A binary replaced on disk reads as "/path (deleted)": start the new one there.
            let exe = std::env::current_exe().ok()?;
            let text = exe.to_string_lossy();
            Some(PathBuf::from(
                text.strip_suffix(" (deleted)").unwrap_or(&text),
            ))
        })
        .unwrap_or_else(|| PathBuf::from("switchyard"));
    let mut cmd = vec![
        program.into_os_string(),
        "-c".into(),
        cwd.join(&opts.config_path).into_os_string(),
        "--upgrade".into(),
    ];
    if opts.daemon {
        cmd.push("--daemon".into());
    }
    cmd
}

/// A config error found while building the server (a file that changed since it was checked).
fn invalid(file: &str, path: String, message: String) -> config::ConfigError {
    config::ConfigError::Invalid(config::Invalid {
        file: file.to_string(),
        line: None,
        path,
        message,
    })
}

/// Build and run until the process is told to stop. Returns only on a config error.
pub fn run(opts: &RunOptions) -> Result<(), config::ConfigError> {
    let (server, app) = build(opts)?;
    let snap = app.snapshot();
    log::info!(
        "switchyard starting: {} routes, {} clusters, listeners {:?}, admin {}",
        snap.routes.len(),
        snap.clusters.len(),
        snap.config
            .listeners
            .iter()
            .map(|l| l.addr)
            .collect::<Vec<_>>(),
        snap.config.admin.addr
    );
    drop(snap);
    server.run_forever()
}
