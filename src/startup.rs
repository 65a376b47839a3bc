//! Building the application from settings, binding its listener, and running it until a
//! signal or a `Stopper` ends it gracefully.

use std::{net::TcpListener, sync::Arc, time::Duration};

use actix_web::{
    App, HttpServer,
    dev::{Server, ServerHandle},
    middleware::from_fn,
    web,
};
use anyhow::{Context, bail};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::{
    auth::Verifier,
    bus::{
        Bus,
        local::LocalBus,
        pubsub,
        relay::{self, RelayBus},
    },
    config::{BusBackend, DEV_SECRET, Settings, StorageBackend},
    cursor::Cursors,
    domain::PhoneParser,
    hub::Hub,
    limits::RateLimits,
    metrics::Metrics,
    routes::{self, AppState, edge, input::json_error, origin::Hosts},
    session,
    store::{Store, embedded::Embedded, postgres::PgStore},
    telemetry,
};

pub struct Application {
    port: u16,
    server: Server,
    stopper: Stopper,
}

/// Stops the application gracefully: sessions are told to resume elsewhere (1001), then
/// in-flight requests finish.
#[derive(Clone)]
pub struct Stopper {
    handle: ServerHandle,
    shutdown: Arc<watch::Sender<bool>>,
    hub: Arc<Hub>,
    timeout: Duration,
}

impl Stopper {
    pub async fn stop(&self) {
        self.shutdown.send_replace(true);
        // After the flag: a session registered once this has gone past it sees the flag.
        self.hub.close_all(crate::protocol::Close::GoingAway);
        if tokio::time::timeout(self.timeout, self.hub.until_empty())
            .await
            .is_err()
        {
            warn!(open = self.hub.len(), "sessions still open at the shutdown timeout");
        }
        self.handle.stop(true).await;
    }
}

/// Queued connections the kernel holds before `accept`: a fleet of clients reconnecting at
/// once (after a deploy, say) must not see SYNs dropped, which costs them a 1 s retry.
/// std's `TcpListener::bind` uses 128. The kernel caps it at `net.core.somaxconn`.
const LISTEN_BACKLOG: i32 = 4096;

/// Refuses, before anything starts, a storage and bus pair that cannot run: the valid ones are
/// `embedded` + `local` and `postgres` + `local` (one node), and `postgres` + `redis` (several
/// nodes). The message names what to use instead, and says so for the retired Redis store.
pub fn check_backends(settings: &Settings) -> anyhow::Result<()> {
    match (settings.storage.backend, settings.bus.backend) {
        (StorageBackend::Embedded | StorageBackend::Postgres, BusBackend::Local)
        | (StorageBackend::Postgres, BusBackend::Redis) => Ok(()),
        (StorageBackend::Redis, _) => bail!(
            "storage.backend = \"redis\" is retired: the Redis store was removed. For several nodes \
             use storage.backend = \"postgres\" (postgres.url) with bus.backend = \"redis\": the state \
             lives in PostgreSQL and Redis carries live events only; for one node, \
             storage.backend = \"embedded\" with bus.backend = \"local\""
        ),
        (StorageBackend::Embedded, BusBackend::Redis) => bail!(
            "storage.backend = \"embedded\" runs one node and needs bus.backend = \"local\"; for \
             several nodes on Redis use storage.backend = \"postgres\" (postgres.url) with \
             bus.backend = \"redis\""
        ),
    }
}

/// Turns Nagle's algorithm off (`TCP_NODELAY`) on each accepted connection (actix leaves it
/// on): with it on, a frame or response written while the peer has not yet acknowledged the
/// one before waits for that acknowledgement, which a client that also sends (pings, its own
/// frames) may hold back up to 40 ms (delayed ACK), so a session sent two events in a row
/// could get the second that late.
fn without_delay(connection: &dyn std::any::Any, _: &mut actix_web::dev::Extensions) {
    if let Some(tcp) = connection.downcast_ref::<actix_web::rt::net::TcpStream>()
        && let Err(e) = tcp.set_nodelay(true)
    {
        tracing::debug!(error = %e, "could not set TCP_NODELAY on a connection");
    }
}

fn bind(addr: &str) -> anyhow::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let addr = std::net::ToSocketAddrs::to_socket_addrs(addr)?
        .next()
        .context("the address resolves to nothing")?;
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        check_backends(&settings)?;
        let listener = bind(&settings.server.bind).with_context(|| format!("binding {}", settings.server.bind))?;
        let addr = listener.local_addr()?;
        if settings.auth.hs256_secret == DEV_SECRET && !addr.ip().is_loopback() {
            bail!("refusing to listen on {addr} with the development secret: set auth.hs256_secret");
        }
        let hosts = Hosts::new(addr, &settings.server.trusted_proxies).map_err(anyhow::Error::msg)?;
        let settings = Arc::new(settings);
        let metrics = Arc::new(Metrics::new());
        let hub = Arc::new(Hub::new(metrics.clone()));
        let (store, bus): (Arc<dyn Store>, Arc<dyn Bus>) = match (settings.storage.backend, settings.bus.backend) {
            (StorageBackend::Embedded, BusBackend::Local) => {
                let bus = Arc::new(LocalBus::new(hub.clone()));
                let store = Embedded::open(&settings.storage.path, bus.clone(), settings.events.retention)?;
                (Arc::new(store), bus)
            }
            (StorageBackend::Postgres, bus_backend) => {
                // The store publishes through the relay bus, which reads the store's log to
                // fill holes (and, with Redis, to deliver while Redis is away). One node runs it
                // on the loopback transport, so that a commit whose publish was lost still
                // reaches the sessions from the log; several nodes on Redis or a Redis Cluster.
                let router = RelayBus::router();
                let (publisher, queue) = relay::publisher(metrics.clone());
                let store = Arc::new(
                    PgStore::connect(&settings.postgres, Arc::new(publisher), settings.events.retention).await?,
                );
                store.report_to(metrics.clone());
                let transport: Arc<dyn pubsub::PubSub> = match bus_backend {
                    BusBackend::Local => Arc::new(pubsub::Loopback::new(router.clone())),
                    BusBackend::Redis => pubsub::connect(&settings.redis, router.clone())
                        .await
                        .context("starting the bus's Redis transport")?,
                };
                let bus = Arc::new(RelayBus::start(
                    router,
                    transport,
                    store.clone(),
                    hub.clone(),
                    metrics.clone(),
                    queue,
                ));
                if bus_backend == BusBackend::Redis {
                    // Presence travels between the nodes over the same transport.
                    hub.announce_to(bus.share_presence(hub.clone(), &settings.redis.key_prefix));
                }
                (store, bus)
            }
            // `check_backends` let no other pair through.
            (storage, bus) => bail!("storage.backend = {storage:?} with bus.backend = {bus:?}"),
        };
        // Once per start: the key is fixed for the deployment's life (see `Store::cursor_key`).
        let cursors = Cursors::new(
            &store
                .cursor_key()
                .await
                .context("reading the cursor key from storage")?,
        );
        let verifier = Arc::new(Verifier::from_settings(&settings.auth)?);
        // Also loads the numbering plan's metadata, before the node listens (`PhoneParser::new`).
        let phones = PhoneParser::new(&settings.phone.default_country).map_err(anyhow::Error::msg)?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let session_deps = Arc::new(session::Deps {
            store: store.clone(),
            bus: bus.clone(),
            hub: hub.clone(),
            verifier: verifier.clone(),
            ws: settings.ws.clone(),
            leeway_secs: settings.auth.leeway_secs,
            shutdown: shutdown_rx.clone(),
        });
        let state = web::Data::new(AppState {
            store,
            bus,
            hub: hub.clone(),
            verifier,
            phones,
            settings: settings.clone(),
            metrics,
            limits: RateLimits::new(&settings.limits),
            cursors,
            dev_sign_in: settings.auth.hs256_secret == DEV_SECRET && addr.ip().is_loopback(),
            hosts,
            session_deps,
            shutdown: shutdown_rx,
        });
        // The access log counts responses on it (`telemetry::access_log`).
        let counted = web::Data::from(state.metrics.clone());
        let limit = settings.server.max_body_bytes;
        let static_dir = settings.server.static_dir.clone();
        let static_dir = (!static_dir.as_os_str().is_empty()).then_some(static_dir);
        let mut server = HttpServer::new(move || {
            App::new()
                .app_data(state.clone())
                .app_data(counted.clone())
                .app_data(
                    web::JsonConfig::default()
                        .limit(limit)
                        .error_handler(move |e, _| json_error(e, limit).into()),
                )
                .app_data(web::PayloadConfig::new(limit))
                .wrap(from_fn(edge::problems))
                .wrap(edge::headers())
                .wrap(from_fn(telemetry::access_log))
                .configure(routes::configure)
                .service(edge::static_client(static_dir.as_deref()))
                .default_service(web::to(edge::unknown_path))
        })
        .on_connect(without_delay)
        .disable_signals()
        .shutdown_timeout(settings.server.shutdown_timeout_secs);
        if settings.server.workers > 0 {
            server = server.workers(settings.server.workers);
        }
        let server = server.listen(listener)?.run();
        info!(%addr, storage = ?settings.storage.backend, bus = ?settings.bus.backend, "switchboard listening");
        let stopper = Stopper {
            handle: server.handle(),
            shutdown: Arc::new(shutdown_tx),
            hub,
            timeout: Duration::from_secs(settings.server.shutdown_timeout_secs),
        };
        Ok(Application {
            port: addr.port(),
            server,
            stopper,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Runs until stopped by SIGTERM/SIGINT (when `signals`) or a `Stopper`.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }

    /// Like `run_until_stopped`, also stopping gracefully on SIGTERM or SIGINT. The stop is
    /// bounded: should the server not have ended a while after the sessions' and the
    /// requests' own time limits (once seen in CI: a node whose HTTP workers had all ended
    /// but whose server never said so, left running), this returns anyway, and the process
    /// exits.
    pub async fn run_with_signals(self) -> std::io::Result<()> {
        let stopper = self.stopper.clone();
        // The sessions' drain, then actix's graceful stop, each up to `timeout`; then slack.
        let bound = 2 * stopper.timeout + Duration::from_secs(5);
        let (signalled, on_signal) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            wait_for_signal().await;
            info!("signal received: closing sessions (1001), finishing requests");
            let _ = signalled.send(());
            stopper.stop().await;
        });
        let overdue = async {
            match on_signal.await {
                Ok(()) => tokio::time::sleep(bound).await,
                // The task ended without a signal: no bound to keep.
                Err(_) => std::future::pending().await,
            }
        };
        tokio::select! {
            ended = self.server => ended,
            () = overdue => {
                warn!(?bound, "the server did not end within its bound after the signal: exiting anyway");
                Ok(())
            }
        }
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use actix_web::{dev::Extensions, rt::net::TcpStream};

    #[actix_web::test]
    async fn accepted_connections_send_without_delay() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
        let (_client, (accepted, _)) = (client.unwrap(), accepted.unwrap());
        // The kernel's default, which the hook must change.
        assert!(!accepted.nodelay().unwrap());
        super::without_delay(&accepted, &mut Extensions::new());
        assert!(accepted.nodelay().unwrap());
    }
}
