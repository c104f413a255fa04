//! OpenTelemetry export (feature `otel`), end to end: a collector written
//! here with the OTLP protocol's own types listens on 127.0.0.1, a map
//! runs, and its spans arrive there with their parent links and fields.

#![cfg(feature = "otel")]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hypernodes::{DiskCache, Inputs, Pipeline, node};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;

/// A span as the collector received it.
#[derive(Clone, Debug)]
struct Received {
    service: String,
    name: String,
    trace: Vec<u8>,
    id: Vec<u8>,
    parent: Vec<u8>,
    attributes: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut got = self.0.lock().unwrap();
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|kv| kv.key == "service.name")
                .map(|kv| text(kv.value.as_ref().and_then(|v| v.value.as_ref())))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                for span in scope.spans {
                    got.push(Received {
                        service: service.clone(),
                        name: span.name,
                        trace: span.trace_id,
                        id: span.span_id,
                        parent: span.parent_span_id,
                        attributes: span
                            .attributes
                            .iter()
                            .map(|kv| {
                                (
                                    kv.key.clone(),
                                    text(kv.value.as_ref().and_then(|v| v.value.as_ref())),
                                )
                            })
                            .collect(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

#[node(output = "cleaned")]
fn clean(text: &str) -> String {
    text.trim().to_lowercase()
}

#[node(output = "word_count")]
fn count(cleaned: &str) -> i64 {
    cleaned.split_whitespace().count() as i64
}

#[test]
fn spans_arrive_at_an_otlp_collector_with_parents_and_fields() {
    common::deadline(120, "OTLP export", || {
        // The collector, on a runtime of the test's own.
        let server = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let collector = Collector::default();
        let listener = server
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let addr = listener.local_addr().unwrap();
        server.spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(collector.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );

        let telemetry =
            hypernodes::observe::otel::init(&format!("http://{addr}"), "hypernodes-test").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let texts: Vec<String> = (0..100).map(|i| format!(" Text {i} ")).collect();
        for (name, engine) in common::engines() {
            Pipeline::new([clean::node(), count::node()])
                .unwrap()
                .with_name(format!("exported_{name}"))
                .with_shared_engine(engine)
                .with_cache(DiskCache::new(dir.path().join(name)))
                .map(Inputs::new().with("text", texts.clone()), ["text"])
                .unwrap();
        }
        telemetry.shutdown().unwrap();

        // Everything was sent before `shutdown` returned; wait for the
        // collector's side only as long as the deadline allows.
        let spans = loop {
            let spans = collector.0.lock().unwrap().clone();
            if spans.iter().filter(|s| s.name == "map").count() >= 3 {
                break spans;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(spans.iter().all(|s| s.service == "hypernodes-test"));
        let by_id: HashMap<&[u8], &Received> = spans.iter().map(|s| (s.id.as_slice(), s)).collect();
        let parent = |s: &Received| by_id.get(s.parent.as_slice()).copied();
        for name in ["seq", "parallel", "datafusion"] {
            if !common::engines().iter().any(|(n, _)| *n == name) {
                continue;
            }
            let pipeline = format!("exported_{name}");
            let map = spans
                .iter()
                .find(|s| s.name == "map" && s.attributes.get("pipeline") == Some(&pipeline))
                .unwrap_or_else(|| panic!("{name}: no map span"));
            assert_eq!(map.attributes["items"], "100", "{name}");
            let outer = parent(map).expect("the map's parent arrived");
            assert_eq!(outer.name, "pipeline", "{name}");
            assert_eq!(outer.attributes["pipeline"], pipeline, "{name}");
            // Node spans (per batch here: a cached map goes columnar) are
            // the map's children, in its trace, with their fields.
            let nodes: Vec<&Received> = spans
                .iter()
                .filter(|s| s.name == "node" && s.parent == map.id)
                .collect();
            for node in ["clean", "count"] {
                let rows: usize = nodes
                    .iter()
                    .filter(|s| s.attributes["node"] == node)
                    .map(|s| s.attributes["rows"].parse::<usize>().unwrap())
                    .sum();
                assert_eq!(rows, 100, "{name}: {node}");
            }
            assert!(nodes.iter().all(|s| s.trace == map.trace));
            assert!(
                nodes
                    .iter()
                    .all(|s| s.attributes["misses"] == s.attributes["rows"])
            );
            // The cache's spans, below the node spans of this map.
            let under_map = |s: &Received| {
                let mut at = parent(s);
                while let Some(p) = at {
                    if p.id == map.id {
                        return true;
                    }
                    at = parent(p);
                }
                false
            };
            let stored: usize = spans
                .iter()
                .filter(|s| s.name == "cache.store" && under_map(s))
                .map(|s| s.attributes["rows"].parse::<usize>().unwrap())
                .sum();
            assert_eq!(stored, 200, "{name}: 100 rows of each node");
            assert!(
                spans
                    .iter()
                    .any(|s| s.name == "cache.lookup" && under_map(s)),
                "{name}"
            );
            assert!(
                spans
                    .iter()
                    .any(|s| s.name == "cache.flush" && under_map(s)),
                "{name}"
            );
        }
        server.shutdown_background();
    });
}
