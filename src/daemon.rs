//! Wiring: opens the store, compiles the rules, and runs the processor, the scheduler,
//! the rules watcher and the HTTP server until shutdown, then drains them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::clock::SharedClock;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::handoff::{Desk, WebhookSender};
use crate::http::{AppParts, AppState, router};
use crate::mail::message::DkimSigner;
use crate::mail::transport::Transport;
use crate::mail::{Mailer, StreamPlan, TemplateError, Templates};
use crate::process::Processor;
use crate::rules::{RuleError, Rules, Sandbox, watch};
use crate::schedule::Scheduler;
use crate::store::{Dialect, LeaseHeld, Store, StoreError};

/// Why the daemon (or a command) could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("rules do not compile; fix them (`nurtured rules check` lists all):\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Rules(Vec<RuleError>),
    #[error(transparent)]
    Lease(#[from] LeaseHeld),
    #[error(transparent)]
    Shards(#[from] crate::store::cluster::ShardsDiffer),
    #[error("mail templates have problems; fix them (`nurtured templates check` lists all):\n{}", .0.iter().map(|e| format!("  {e}")).collect::<Vec<_>>().join("\n"))]
    Templates(Vec<TemplateError>),
    #[error("mail: {0}")]
    Mail(String),
    #[error("cannot listen on {addr}: {source}; set http_addr in nurtured.toml")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} for /metrics: {source}; set [metrics] addr in nurtured.toml (\"\" for no listener of its own)"
    )]
    MetricsListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error(
        "cannot listen on {addr} for the console: {source}; set [ui] addr in nurtured.toml (\"\" to serve it only under /ui/ on http_addr)"
    )]
    UiListen {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// The parts every command shares: config, store, compiled rules, the processor.
pub struct App {
    pub config: Arc<Config>,
    pub processor: Arc<Processor>,
    pub rules: Arc<Rules>,
    pub sandbox: Arc<Sandbox>,
    pub templates: Arc<Templates>,
    pub mailer: Arc<Mailer>,
    /// Assigns handoffs to sales and escalates them.
    pub desk: Arc<Desk>,
    pub webhooks: Arc<WebhookSender>,
}

impl App {
    pub async fn build(config: Config, clock: SharedClock) -> Result<Self, StartError> {
        let config = Arc::new(config);
        let store = Store::open_tuned(
            &config.database_url,
            config.processing.memory.page_cache(),
            config.database_connections,
        )
        .await?;
        store
            .keep_sales_indexes(&config.funnel.open_sales_stages())
            .await?;
        let metrics = Arc::new(crate::metrics::Metrics::new());
        crate::metrics::keep_up(&metrics);
        let sandbox = Arc::new(
            Sandbox::new(&config.limits, Arc::new(config.thresholds.clone())).with_metrics(metrics),
        );
        // Lenient, so commands that only read work while a rule file does not compile;
        // `start` (the daemon) and whatever processes events refuse such rules.
        let rules = Arc::new(Rules::load_lenient(
            &sandbox,
            &config.rules_dir,
            &config.rules_shown,
            &config.rules_shadow,
        ));
        let templates = Arc::new(
            Templates::load(
                &config.mail.templates_dir,
                &config.mail.templates_shown,
                &config.mail.default_locale,
            )
            .map_err(StartError::Templates)?
            .with_rules(&config.rules_dir, &config.rules_shown),
        );
        let plan = StreamPlan::new(config.streams.clone(), config.mail.quarantine.clone())
            .with_topics(config.topics.clone())
            .with_sales(
                config.sales.team_names(),
                config.sales.on_stage.clone(),
                config
                    .funnel
                    .stages()
                    .iter()
                    .filter(|s| s.side == crate::domain::Side::Sales)
                    .map(|s| s.name.clone())
                    .collect(),
            )
            .with_erased_key(crate::privacy::AddressKey::for_mail(&config.mail));
        let processor = Arc::new(
            Processor::new(
                store,
                rules.clone(),
                sandbox.clone(),
                Arc::new(config.funnel.clone()),
                clock.clone(),
                config.processing.batch_size,
                config.processing.poll_interval,
                config.processing.memory,
            )
            .with_streams(plan),
        );
        let transport = Transport::new(&config.mail).map_err(StartError::Mail)?;
        let dkim = config
            .mail
            .dkim
            .as_ref()
            .map(DkimSigner::new)
            .transpose()
            .map_err(StartError::Mail)?;
        let mailer = Arc::new(Mailer::new(
            processor.clone(),
            Arc::new(config.mail.clone()),
            processor.plan.clone(),
            templates.clone(),
            transport,
            dkim,
            config.time_zone,
            clock.clone(),
        ));
        let desk = Arc::new(Desk::new(config.clone(), processor.clone(), clock));
        let webhooks = Arc::new(WebhookSender::new(desk.clone()));
        Ok(Self {
            config,
            processor,
            rules,
            sandbox,
            templates,
            mailer,
            desk,
            webhooks,
        })
    }

    pub fn store(&self) -> &Store {
        &self.processor.store
    }

    /// Refuses rules with a file that did not compile: running them would leave that
    /// file's part out of every event.
    pub fn rules_complete(&self) -> Result<(), StartError> {
        match self.rules.left_out() {
            [] => Ok(()),
            errors => Err(StartError::Rules(errors.to_vec())),
        }
    }
}

/// A running daemon.
pub struct Running {
    pub addr: SocketAddr,
    /// The `[metrics] addr` listener's address, when there is one.
    pub metrics_addr: Option<SocketAddr>,
    /// The `[ui] addr` listener's address, when there is one.
    pub ui_addr: Option<SocketAddr>,
    pub app: Arc<App>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

/// How long shutdown waits for work in progress.
pub const DRAIN: Duration = Duration::from_secs(4);

impl Running {
    /// Stops accepting requests, lets running work finish, releases the lease.
    pub async fn stop(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(DRAIN, self.tasks.wait())
            .await
            .is_err()
        {
            // Keep the lease: it expires on its own, after any write still under way.
            tracing::warn!("shutdown: some work did not finish in time");
            return;
        }
        if let Some(cluster) = self.app.processor.cluster.get()
            && let Err(e) = cluster.leave().await
        {
            tracing::warn!(error = %e, "cannot leave the cluster; the others take over once the shards expire");
        }
        if let Err(e) = self.app.processor.give_up_lease().await {
            tracing::warn!(error = %e, "cannot release the processing lease");
        }
    }
}

/// Starts the daemon on `listener` (bound by the caller, so tests can use port 0).
pub async fn start(app: App, listener: TcpListener) -> Result<Running, StartError> {
    app.rules_complete()?;
    let app = Arc::new(app);
    let addr = listener.local_addr().map_err(|source| StartError::Listen {
        addr: app.config.http_addr,
        source,
    })?;
    // Bound first: a taken address stops the start before anything runs.
    let metrics_listener = match app.config.metrics_addr {
        Some(at) => {
            let failed = |source| StartError::MetricsListen { addr: at, source };
            let listener = TcpListener::bind(at).await.map_err(failed)?;
            let bound = listener.local_addr().map_err(failed)?;
            Some((listener, bound))
        }
        None => None,
    };
    let ui_listener = match app.config.ui.addr {
        Some(at) => {
            let failed = |source| StartError::UiListen { addr: at, source };
            let listener = TcpListener::bind(at).await.map_err(failed)?;
            let bound = listener.local_addr().map_err(failed)?;
            Some((listener, bound))
        }
        None => None,
    };
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    if app.store().dialect() == Dialect::Postgres {
        // One of any number of daemons on the database: see `crate::cluster`.
        let cluster = Arc::new(Cluster::new(&app.config.cluster, app.store().clone(), addr));
        cluster.join().await??;
        app.processor.set_cluster(cluster.clone());
        cluster.tick(&app.processor).await?;
        tracing::info!(daemon = %cluster.name, shards = cluster.shards, "joined the cluster of daemons on this database");
        tasks.spawn(cluster.run(app.processor.clone(), shutdown.clone()));
    } else {
        app.processor.take_lease("daemon").await??;
    }

    tasks.spawn(app.processor.clone().run(shutdown.clone()));
    let scheduler = Arc::new(Scheduler {
        schedules: app.config.schedules.clone(),
        time_zone: app.config.time_zone,
        processor: app.processor.clone(),
        started: app.processor.clock.now(),
    });
    tasks.spawn(scheduler.run(shutdown.clone()));
    tasks.spawn(crate::privacy::retention::run(
        app.processor.clone(),
        app.config.retention,
        shutdown.clone(),
    ));
    tasks.spawn(watch::watch(
        app.rules.clone(),
        app.sandbox.clone(),
        shutdown.clone(),
    ));
    // `[rules] shadow` follows the config file.
    if let Some(file) = app.config.file.clone() {
        tasks.spawn(crate::rules::shadow::watch(
            app.rules.clone(),
            file,
            shutdown.clone(),
        ));
    }
    tasks.spawn(app.mailer.clone().run(shutdown.clone()));
    tasks.spawn(app.desk.clone().run(shutdown.clone()));
    tasks.spawn(app.webhooks.clone().run(shutdown.clone()));
    {
        let templates = app.templates.clone();
        let dir = templates.dir().to_path_buf();
        let shutdown_token = shutdown.clone();
        tasks.spawn(async move {
            let reload = move || {
                templates.reload();
            };
            watch::watch_folder(
                &dir,
                notify::RecursiveMode::Recursive,
                "templates",
                reload,
                shutdown_token,
            )
            .await;
        });
    }
    {
        // The `data` the rules pass to each mail changes with the rules (and their
        // fixtures): the templates are checked again, and a mail that no longer renders
        // shows in `template_errors` and keeps its last good version.
        let templates = app.templates.clone();
        let dir = app.rules.dir().to_path_buf();
        let shutdown_token = shutdown.clone();
        tasks.spawn(async move {
            let reload = move || {
                templates.reload();
            };
            watch::watch_folder(
                &dir,
                notify::RecursiveMode::Recursive,
                "rules (for the templates)",
                reload,
                shutdown_token,
            )
            .await;
        });
    }
    if app.processor.cluster.get().is_none() {
        // Processing writes extend the lease too; this keeps it while idle.
        let (processor, shutdown) = (app.processor.clone(), shutdown.clone());
        tasks.spawn(async move {
            let renew = crate::store::lease::LEASE_TTL / 3;
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(renew) => {
                        if let Err(e) = processor.renew_lease().await {
                            tracing::warn!(error = %e, "cannot renew the processing lease");
                        }
                    }
                }
            }
        });
    }
    // The intake writer ends after the server (which holds its last handle).
    let (intake, writer) = crate::ingest::group::Intake::start(crate::ingest::group::Writer {
        store: app.store().clone(),
        stage: app.processor.funnel.initial().to_string(),
        plan: app.processor.plan.clone(),
        clock: app.processor.clock.clone(),
        wake: app.processor.wake.clone(),
        feed: Some(app.processor.feed.clone()),
        received: app.processor.metrics.events_received.clone(),
    });
    tasks.spawn(async move {
        let _ = writer.await;
    });
    let state = AppState::new(AppParts {
        config: app.config.clone(),
        processor: app.processor.clone(),
        rules: app.rules.clone(),
        duplicates: Arc::new(AtomicU64::new(0)),
        signer: app.mailer.signer.clone(),
        templates: app.templates.clone(),
        desk: app.desk.clone(),
        intake,
    });
    // One console state for both listeners: the same sessions and sign-in throttle.
    let console = crate::console::ConsoleState::new(state.clone());
    let ui_addr = match ui_listener {
        Some((listener, bound)) => {
            let console = crate::console::own_router(console.clone());
            let server = axum::serve(
                listener,
                console.into_make_service_with_connect_info::<std::net::SocketAddr>(),
            )
            .with_graceful_shutdown({
                let s = shutdown.clone();
                async move { s.cancelled().await }
            });
            tasks.spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "console listener stopped");
                }
            });
            tracing::info!(addr = %bound, "serving the console on a listener of its own");
            Some(bound)
        }
        None => None,
    };
    let server = axum::serve(
        listener,
        router(state)
            .merge(crate::console::router(console))
            .into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown({
        let s = shutdown.clone();
        async move { s.cancelled().await }
    });
    tasks.spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "HTTP server stopped");
        }
    });
    let metrics_addr = match metrics_listener {
        Some((listener, bound)) => {
            let server = axum::serve(listener, crate::http::metrics_router(app.processor.clone()))
                .with_graceful_shutdown({
                    let s = shutdown.clone();
                    async move { s.cancelled().await }
                });
            tasks.spawn(async move {
                if let Err(e) = server.await {
                    tracing::error!(error = %e, "metrics listener stopped");
                }
            });
            tracing::info!(addr = %bound, "serving /metrics without a key");
            Some(bound)
        }
        None => None,
    };
    tracing::info!(%addr, rules = %app.config.rules_dir.display(), database = %crate::store::copy::shown(&app.config.database_url), "nurtured is running");
    Ok(Running {
        addr,
        metrics_addr,
        ui_addr,
        app,
        shutdown,
        tasks,
    })
}

/// Binds the configured address and starts.
pub async fn start_on_config_addr(app: App) -> Result<Running, StartError> {
    let addr = app.config.http_addr;
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Listen { addr, source })?;
    start(app, listener).await
}
