//! A stand-in OpenTelemetry collector: the OTLP/gRPC trace and metrics services (generated from
//! the OTLP protocol by `opentelemetry-proto`), served over h2c on loopback, keeping every
//! request it receives so that tests can read what the gateway sent.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{ExportMetricsServiceRequest, ExportMetricsServiceResponse};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::metrics::v1::Metric;
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tonic::{Request, Response, Status};

#[derive(Debug, Default)]
struct Received {
    traces: Mutex<Vec<ExportTraceServiceRequest>>,
    metrics: Mutex<Vec<ExportMetricsServiceRequest>>,
}

#[derive(Debug, Clone, Default)]
struct Collector(Arc<Received>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        self.0.traces.lock().unwrap_or_else(PoisonError::into_inner).push(request.into_inner());
        Ok(Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Collector {
    async fn export(
        &self,
        request: Request<ExportMetricsServiceRequest>,
    ) -> Result<Response<ExportMetricsServiceResponse>, Status> {
        self.0.metrics.lock().unwrap_or_else(PoisonError::into_inner).push(request.into_inner());
        Ok(Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running stand-in collector.
#[derive(Debug)]
pub struct OtlpCollector {
    addr: std::net::SocketAddr,
    received: Arc<Received>,
    task: JoinHandle<()>,
}

impl OtlpCollector {
    /// Binds `127.0.0.1:0` and serves OTLP/gRPC.
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind collector");
        let addr = listener.local_addr().expect("collector address");
        let collector = Collector::default();
        let received = Arc::clone(&collector.0);
        let routes = tonic::service::Routes::new(TraceServiceServer::new(collector.clone()))
            .add_service(MetricsServiceServer::new(collector));
        let task = tokio::spawn(async move {
            // The connections are the accept loop's own, so that stopping it closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((tcp, _)) = listener.accept().await else { continue };
                let routes = routes.clone();
                connections.spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new()).http2_only();
                    let _ = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(routes)).await;
                });
            }
        });
        Self { addr, received, task }
    }

    /// The `otlp_endpoint` to configure.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received, with the resource it came under.
    pub fn spans(&self) -> Vec<(Resource, Span)> {
        let traces = self.received.traces.lock().unwrap_or_else(PoisonError::into_inner);
        traces
            .iter()
            .flat_map(|t| &t.resource_spans)
            .flat_map(|rs| {
                let resource = rs.resource.clone().unwrap_or_default();
                rs.scope_spans.iter().flat_map(move |ss| {
                    ss.spans.iter().map({
                        let resource = resource.clone();
                        move |s| (resource.clone(), s.clone())
                    })
                })
            })
            .collect()
    }

    /// The metrics of the latest metrics export, if any arrived.
    pub fn latest_metrics(&self) -> Option<Vec<Metric>> {
        let metrics = self.received.metrics.lock().unwrap_or_else(PoisonError::into_inner);
        let last = metrics.last()?;
        Some(last.resource_metrics.iter().flat_map(|rm| &rm.scope_metrics).flat_map(|sm| sm.metrics.clone()).collect())
    }

    /// Metric exports received so far.
    pub fn metric_exports(&self) -> usize {
        self.received.metrics.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Waits (at most 10 s) until `done` holds of the collector.
    pub async fn wait_for(&self, what: &str, done: impl Fn(&Self) -> bool) {
        for _ in 0..1000 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the collector never received {what}");
    }

    /// Stops serving: its connections are closed, and new ones refused.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for OtlpCollector {
    fn drop(&mut self) {
        self.task.abort();
    }
}
