//! `vmatrace serve`: a Prometheus exporter of every process's VMA count,
//! splits and ENOMEMs. Nothing per call crosses to userspace: the kernel
//! keeps the counters, a scrape reads them (hyper, HTTP/1.1).

use std::{cell::RefCell, convert::Infallible, net::SocketAddr, rc::Rc, time::Duration};

use anyhow::{Context, anyhow};
use clap::Args;
use http_body_util::Full;
use hyper::{
    Request, Response, StatusCode, body::Bytes, header, server::conn::http1, service::service_fn,
};
use hyper_util::rt::TokioIo;
use tokio::{
    net::TcpListener,
    signal::unix::{SignalKind, signal},
    task::LocalSet,
};

use super::{
    collector::{Collector, CollectorConfig, Scope},
    metrics::{Exposition, registry, render},
};
use crate::{
    error::{Failure, exit_code},
    kernel::probes::{CountModeChoice, require_privileges},
};

/// Options of `vmatrace serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to serve the metrics on (GET /metrics).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    pub listen: SocketAddr,

    /// Export only these processes (repeat for several); default: every
    /// process.
    #[arg(
        short = 'p',
        long = "pid",
        value_name = "PID",
        conflicts_with = "cgroups"
    )]
    pub pids: Vec<u32>,

    /// Export only the processes in this cgroup or below it (repeat for
    /// several), a path as /proc/PID/cgroup shows it, e.g.
    /// /system.slice/mariadb.service.
    #[arg(long = "cgroup", value_name = "PATH")]
    pub cgroups: Vec<String>,

    /// Export at most N processes, those with the most VMAs; the rest are
    /// summed under comm="other".
    #[arg(long, value_name = "N", default_value_t = 100)]
    pub max_series: usize,

    /// NEAR-LIMIT threshold, in percent of vm.max_map_count.
    #[arg(long, value_name = "PERCENT", default_value_t = 90.0)]
    pub warn_at: f64,

    /// Seconds between readings of the counters (for growth and the time
    /// to the limit; a scrape always reads them afresh).
    #[arg(short = 'i', long, value_name = "SECONDS", default_value_t = 1.0)]
    pub interval: f64,

    /// Read kernel type information from this BTF file.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/sys/kernel/btf/vmlinux",
        hide = true
    )]
    pub btf: std::path::PathBuf,

    #[arg(long, value_name = "MODE", value_enum, default_value_t = CountModeChoice::Auto, hide = true)]
    pub count_mode: CountModeChoice,
}

pub fn run(args: ServeArgs) -> Result<i32, Failure> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::environment(anyhow!(e).context("starting the runtime")))?;
    LocalSet::new().block_on(&runtime, serve(args))
}

async fn serve(args: ServeArgs) -> Result<i32, Failure> {
    require_privileges()?;
    if args.max_series == 0 {
        return Err(Failure::usage(anyhow!("--max-series must be at least 1")));
    }
    let scope = if !args.cgroups.is_empty() {
        Scope::Cgroups(args.cgroups.clone())
    } else if args.pids.is_empty() {
        Scope::All
    } else {
        Scope::Pids(args.pids.clone())
    };
    let listener = TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))
        .map_err(Failure::environment)?;
    let collector = Collector::start(&CollectorConfig {
        scope,
        warn_fraction: args.warn_at / 100.0,
        btf_path: args.btf.clone(),
        count_mode: args.count_mode,
    })?;
    let cost = collector.seed_cost;
    eprintln!(
        "vmatrace: serving http://{}/metrics; vm.max_map_count {}; start counts of {} processes \
         ({} VMAs) read from /proc in {:.1} ms ({} without an address space or unreadable)",
        args.listen,
        collector.limit,
        cost.processes,
        cost.vmas,
        cost.elapsed.as_secs_f64() * 1e3,
        cost.unreadable
    );
    let collector = Rc::new(RefCell::new(collector));
    let max_series = args.max_series;
    let mut interrupt = signal(SignalKind::interrupt()).context("SIGINT handler")?;
    let mut terminate = signal(SignalKind::terminate()).context("SIGTERM handler")?;
    let mut tick = tokio::time::interval(Duration::from_secs_f64(args.interval.max(0.1)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let collector = collector.clone();
                tokio::task::spawn_local(async move {
                    let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                        let response = respond(&collector, &request, max_series);
                        async move { Ok::<_, Infallible>(response) }
                    });
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            _ = tick.tick() => {
                collector.borrow_mut().sample();
            }
            _ = interrupt.recv() => break,
            _ = terminate.recv() => break,
        }
    }
    Ok(exit_code::OK)
}

fn respond<B>(
    collector: &RefCell<Collector>,
    request: &Request<B>,
    max_series: usize,
) -> Response<Full<Bytes>> {
    let reply = |status: StatusCode, kind: &'static str, body: String| {
        Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, kind)
            .body(Full::new(Bytes::from(body)))
            .expect("a valid response")
    };
    match (request.method(), request.uri().path()) {
        (&hyper::Method::GET, "/metrics") => {
            let accept = request
                .headers()
                .get(header::ACCEPT)
                .and_then(|v| v.to_str().ok());
            let format = Exposition::from_accept(accept);
            let mut collector = collector.borrow_mut();
            let rows = collector.sample();
            let lost = collector.lost();
            let limit = collector.limit;
            drop(collector);
            let registry = registry(rows, max_series, &lost, limit);
            match render(&registry, format) {
                Ok(body) => reply(StatusCode::OK, format.content_type(), body),
                Err(_) => reply(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "text/plain",
                    "encoding failed\n".into(),
                ),
            }
        }
        (&hyper::Method::GET, "/") => reply(
            StatusCode::OK,
            "text/html; charset=utf-8",
            "<html><head><title>vmatrace</title></head><body><h1>vmatrace</h1>\
             <p><a href=\"/metrics\">Metrics</a></p></body></html>\n"
                .into(),
        ),
        _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}
