//! `patron serve` end to end on the Kafka mock cluster and SQLite: records produced to the input
//! topic are ingested, projected into read models, their lifecycle changes relayed to the
//! lifecycle topic, the metrics (consumer lag, gRPC calls by method and code) and readiness
//! endpoints answer, spans reach an OTLP collector (an API call continuing the caller's trace),
//! and SIGTERM stops everything cleanly. Readiness fails while no broker answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue};
use patron_e2e::{patron, patron_bin};
use patron_kafka::testing::{MockKafka, TestRecord, produce, read_topic};
use patron_proto::api::v1::GetCustomerRequest;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;

/// The caller's trace an API call continues (W3C trace context).
const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_SPAN_ID: &str = "00f067aa0ba902b7";

/// A span as an OTLP collector received it, with its resource's attributes.
#[derive(Debug, Clone)]
struct Received {
    name: String,
    trace_id: String,
    parent_span_id: String,
    attributes: Vec<(String, String)>,
    resource: Vec<(String, String)>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn strings(attributes: &[KeyValue]) -> Vec<(String, String)> {
    attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v: &AnyValue| v.value.as_ref()) {
                Some(Value::StringValue(s)) => s.clone(),
                Some(other) => format!("{other:?}"),
                None => String::new(),
            };
            (kv.key.clone(), value)
        })
        .collect()
}

/// An OTLP/gRPC trace collector that keeps what it receives.
#[derive(Clone, Default)]
struct Collector {
    spans: Arc<Mutex<Vec<Received>>>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let mut spans = self.spans.lock().unwrap();
        for resource_spans in request.into_inner().resource_spans {
            let resource = resource_spans
                .resource
                .map(|r| strings(&r.attributes))
                .unwrap_or_default();
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    spans.push(Received {
                        name: span.name.clone(),
                        trace_id: hex(&span.trace_id),
                        parent_span_id: hex(&span.parent_span_id),
                        attributes: strings(&span.attributes),
                        resource: resource.clone(),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves on a loopback port; returns the endpoint.
    async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let service = TraceServiceServer::new(self.clone());
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener)),
        );
        format!("http://{address}")
    }

    fn spans(&self) -> Vec<Received> {
        self.spans.lock().unwrap().clone()
    }
}

/// The value of the exported sample whose line contains every one of `labels`.
fn sample(metrics: &str, name: &str, labels: &[&str]) -> Option<f64> {
    metrics
        .lines()
        .filter(|line| line.starts_with(&format!("{name}{{")))
        .find(|line| labels.iter().all(|label| line.contains(label)))
        .and_then(|line| line.rsplit(' ').next())
        .and_then(|value| value.parse().ok())
}

/// A loopback port nothing listens on right now.
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP/1.1 GET; returns the status line and the body.
fn get(port: u16, path: &str) -> Option<(String, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let status = response.lines().next()?.to_owned();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// Purchases by 20 customers, three each, a week apart, as CloudEvents JSON.
fn records() -> Vec<TestRecord> {
    let mut out = Vec::new();
    for week in 0..3 {
        for c in 0..20 {
            let customer = format!("s-{c:02}");
            let body = serde_json::json!({
                "specversion": "1.0", "id": uuid::Uuid::new_v4().to_string(), "source": "shop",
                "type": "patron.purchase.v1", "subject": customer,
                "time": format!("2026-10-{:02}T10:00:00Z", 1 + 7 * week),
                "data": {"order_id": format!("o-{c}-{week}"), "amount": {"minor_units": 5000, "currency": "USD"}}
            });
            out.push(TestRecord {
                key: Some(customer.into_bytes()),
                headers: vec![(
                    "content-type".into(),
                    b"application/cloudevents+json".to_vec(),
                )],
                payload: body.to_string().into_bytes(),
            });
        }
    }
    out
}

async fn customers(url: &str) -> i64 {
    let Ok(pool) = sqlx::SqlitePool::connect(url).await else {
        return 0;
    };
    let count = sqlx::query_scalar(
        "SELECT count(*) FROM customers WHERE generation = (SELECT generation FROM projection_active)",
    )
    .fetch_one(&pool)
    .await
    .unwrap_or(0);
    pool.close().await;
    count
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_runs_every_service_and_stops_cleanly() {
    let kafka = MockKafka::start_for_test(1);
    kafka.create_topic("customer-events", 2).unwrap();
    kafka.create_topic("customer-events.dlq", 1).unwrap();
    kafka.create_topic("patron.lifecycle.v1", 2).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    patron(&url, &["migrate"]).success();
    produce(&kafka.bootstrap(), "customer-events", &records()).await;

    let collector = Collector::default();
    let otlp = collector.start().await;
    let (api, metrics) = (free_port(), free_port());
    let mut child = Command::new(patron_bin())
        .args([
            "--otlp-endpoint",
            &otlp,
            "serve",
            "--kafka-brokers",
            &kafka.bootstrap(),
            "--group",
            &format!("serve-{}", std::process::id()),
            "--api-listen",
            &format!("127.0.0.1:{api}"),
            "--api-token",
            "t0ken",
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ])
        .env("PATRON_DATABASE_URL", &url)
        .env("PATRON_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let started = Instant::now();
    while customers(&url).await < 20 {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("patron serve exited early: {status}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "20 customers were not projected"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let changes = read_topic(
        &kafka.bootstrap(),
        "patron.lifecycle.v1",
        40,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        changes.len() >= 40,
        "prospect and new for each of 20 customers: {}",
        changes.len()
    );

    let (status, body) = get(metrics, "/readyz").expect("readiness answers");
    assert!(status.contains("200"), "{status}: {body}");
    let (status, _) = get(metrics, "/livez").expect("liveness answers");
    assert!(status.contains("200"), "{status}");
    let (_, body) = get(metrics, "/metrics").expect("metrics answer");
    for metric in [
        "patron_ingest_events_total",
        "patron_projection_checkpoint",
        "patron_relay_published_total",
    ] {
        assert!(body.contains(metric), "{metric} is exported:\n{body}");
    }

    // Consumer lag per partition, from librdkafka's statistics (every 5 s): once everything is
    // ingested and committed, both partitions of the input topic are reported with no lag.
    let started = Instant::now();
    loop {
        let (_, body) = get(metrics, "/metrics").expect("metrics answer");
        let lags: Vec<Option<f64>> = ["0", "1"]
            .iter()
            .map(|p| {
                sample(
                    &body,
                    "patron_ingest_consumer_lag",
                    &["topic=\"customer-events\"", &format!("partition=\"{p}\"")],
                )
            })
            .collect();
        if lags.iter().all(|lag| *lag == Some(0.0)) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "consumer lag per partition reaches 0 once all is committed: {lags:?}\n{body}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // API calls, counted by method and status code; one continues the caller's trace.
    let channel = tonic::transport::Channel::from_shared(format!("http://127.0.0.1:{api}"))
        .unwrap()
        .connect()
        .await
        .expect("the API listens");
    let mut client = CustomerServiceClient::new(channel);
    let mut request = tonic::Request::new(GetCustomerRequest {
        customer_id: "nobody".into(),
        min_position: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{TRACE_ID}-{PARENT_SPAN_ID}-01")
            .parse()
            .unwrap(),
    );
    let status = client.get_customer(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound);
    for _ in 0..2 {
        let status = client
            .get_customer(GetCustomerRequest {
                customer_id: "s-01".into(),
                min_position: 0,
            })
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated);
    }
    let mut request = tonic::Request::new(GetCustomerRequest {
        customer_id: "s-01".into(),
        min_position: 0,
    });
    request
        .metadata_mut()
        .insert("authorization", "Bearer t0ken".parse().unwrap());
    client
        .get_customer(request)
        .await
        .expect("a known customer");
    let (_, body) = get(metrics, "/metrics").expect("metrics answer");
    let method = "method=\"patron.api.v1.CustomerService/GetCustomer\"";
    for (code, calls) in [("NOT_FOUND", 1.0), ("UNAUTHENTICATED", 2.0), ("OK", 1.0)] {
        let code = format!("code=\"{code}\"");
        assert_eq!(
            sample(&body, "patron_grpc_requests_total", &[method, &code]),
            Some(calls),
            "{code} calls counted:\n{body}"
        );
        assert_eq!(
            sample(
                &body,
                "patron_grpc_request_duration_seconds_count",
                &[method, &code]
            ),
            Some(calls),
            "{code} call latencies recorded:\n{body}"
        );
    }

    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "SIGTERM stops every service cleanly: {}",
        String::from_utf8_lossy(&output.stderr)
    );

    // Shutdown flushed the spans: every stage of the flow is there, and the API call is a child
    // of the caller's span.
    let spans = collector.spans();
    let names: std::collections::BTreeSet<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    for stage in [
        "ingest.decode",
        "ingest.batch",
        "ingest.commit",
        "projector.page",
        "relay.publish",
    ] {
        assert!(names.contains(stage), "{stage} exported: {names:?}");
    }
    let call = spans
        .iter()
        .find(|s| s.trace_id == TRACE_ID)
        .unwrap_or_else(|| panic!("the API call continues the caller's trace: {spans:#?}"));
    assert_eq!(call.name, "patron.api.v1.CustomerService/GetCustomer");
    assert_eq!(call.parent_span_id, PARENT_SPAN_ID);
    assert!(
        call.attributes
            .contains(&("rpc.grpc.status_code".into(), "NOT_FOUND".into())),
        "{call:?}"
    );
    assert!(
        call.resource
            .contains(&("service.name".into(), "patron".into()))
            && call
                .resource
                .contains(&("patron.command".into(), "serve".into())),
        "{call:?}"
    );
}

/// Readiness is false while no Kafka broker answers, even though the database does.
#[test]
fn readiness_fails_while_no_broker_answers() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("patron.db").display());
    patron(&url, &["migrate"]).success();
    let (nothing, metrics) = (free_port(), free_port());
    let mut child = Command::new(patron_bin())
        .args([
            "ingest",
            "--kafka-brokers",
            &format!("127.0.0.1:{nothing}"),
            "--metrics-listen",
            &format!("127.0.0.1:{metrics}"),
        ])
        .env("PATRON_DATABASE_URL", &url)
        .env("PATRON_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let answer = loop {
        if let Some(answer) = get(metrics, "/readyz") {
            break answer;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "readiness never answered"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    let (status, body) = answer;
    assert!(status.contains("503"), "{status}: {body}");
    assert!(body.contains("kafka unavailable"), "{body}");
}
