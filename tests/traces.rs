//! One trace across services: a real OTLP/gRPC receiver (opentelemetry-proto's tonic
//! service) collects the spans of `skylark api`, `skylark sfu` and `skylark signaling`
//! running as separate processes; one WHIP publish must be one trace spanning the three,
//! with the api's and the sfu's spans children of signaling's request span.

mod common;

use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone)]
struct Span {
    service: String,
    name: String,
    trace_id: Vec<u8>,
    span_id: Vec<u8>,
    parent: Vec<u8>,
    attrs: HashMap<String, String>,
}

#[derive(Clone, Default)]
struct Collector(Arc<Mutex<Vec<Span>>>);

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut out = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| r.attributes.iter())
                .find(|a| a.key == "service.name")
                .and_then(|a| match a.value.as_ref()?.value.as_ref()? {
                    AnyValue::StringValue(s) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    let attrs = s
                        .attributes
                        .iter()
                        .filter_map(|a| {
                            let v = match a.value.as_ref()?.value.as_ref()? {
                                AnyValue::StringValue(s) => s.clone(),
                                AnyValue::IntValue(i) => i.to_string(),
                                other => format!("{other:?}"),
                            };
                            Some((a.key.clone(), v))
                        })
                        .collect();
                    out.push(Span {
                        service: service.clone(),
                        name: s.name,
                        trace_id: s.trace_id,
                        span_id: s.span_id,
                        parent: s.parent_span_id,
                        attrs,
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_publish_is_one_trace_across_three_services() {
    let collector = Collector::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let otlp = format!("http://{}", listener.local_addr().unwrap());
    let server = TraceServiceServer::new(collector.clone());
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(server)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let dir = tempfile::tempdir().unwrap();
    let api_grpc = free_port();
    // In-process bus per target would split state: the three share Redis or nothing.
    let Some(redis) = redis_url() else { return };
    let env = scale_out_env(
        &redis,
        api_grpc,
        dir.path(),
        &[("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.clone())],
    );
    let mut api = start_api(&env, api_grpc, dir.path()).await;
    let mut sfu = start_sfu(&env, dir.path()).await;
    let mut sig = start_target("signaling", env(&[]), dir.path(), "sig").await;

    let (_, room, key) = creator_with_room(&api.base, "public").await;
    let (_engine, p) = publish(&sig.base, &room, &key).await;
    let _ = p.stop().await;

    // SIGTERM flushes each process's span batch.
    for s in [&mut sig, &mut sfu, &mut api] {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &s.child.id().to_string()])
            .status();
    }
    for s in [&mut sig, &mut sfu, &mut api] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while s.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "process did not exit");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let spans = collector.0.lock().unwrap().clone();
    let post = spans
        .iter()
        .find(|s| {
            s.service == "skylark-signaling"
                && s.attrs.get("http.route").map(String::as_str) == Some("/whip/{room}")
        })
        .unwrap_or_else(|| {
            panic!(
                "no WHIP request span; got {:#?}",
                spans
                    .iter()
                    .map(|s| (&s.service, &s.name))
                    .collect::<Vec<_>>()
            )
        });
    assert_eq!(
        post.attrs.get("http.request.method").map(String::as_str),
        Some("POST")
    );
    let trace: Vec<&Span> = spans
        .iter()
        .filter(|s| s.trace_id == post.trace_id)
        .collect();
    // The span of `service`'s gRPC `method` in the same trace.
    let rpc = |service: &str, method: &str| {
        *trace
            .iter()
            .find(|s| {
                s.service == service
                    && s.attrs.get("rpc.method").map(String::as_str) == Some(method)
            })
            .unwrap_or_else(|| panic!("{service}'s {method} span in the same trace"))
    };
    let authorize = rpc("skylark-api", "AuthorizePublish");
    let publish = rpc("skylark-sfu", "Publish");
    assert_eq!(
        authorize.parent, post.span_id,
        "AuthorizePublish is a child of the WHIP request"
    );
    assert_eq!(
        publish.parent, post.span_id,
        "Publish is a child of the WHIP request"
    );
    assert_eq!(
        authorize.attrs.get("rpc.system").map(String::as_str),
        Some("grpc")
    );
    // Secrets never become attributes.
    for s in &spans {
        for v in s.attrs.values() {
            assert!(
                !v.contains(&key),
                "the stream key leaked into span {}",
                s.name
            );
        }
    }
}
