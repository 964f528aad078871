//! Per-request telemetry for every gRPC call: a `grpc.request` span (a child of the caller's
//! trace when the request carries a W3C `traceparent`), and the metrics
//! `patron_grpc_requests_total{method, code}` and `patron_grpc_request_duration_seconds{method,
//! code}`.
//!
//! The status of a gRPC call is known only when its response ends: in the headers for a call that
//! failed before sending anything ("trailers only"), otherwise in the trailers after the last
//! message. The response body is wrapped to find it there; a stream the client dropped before
//! its end counts as `CANCELLED`. For server streams the duration is the stream's whole life.

use std::collections::HashSet;
use std::pin::Pin;
use std::sync::{Arc, LazyLock};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use opentelemetry::propagation::Extractor;
use pin_project_lite::pin_project;
use prost::Message as _;
use tower_layer::Layer;
use tower_service::Service;
use tracing::{Instrument as _, Span};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The label of a path that names no method this server has (paths come from callers, so they
/// never become labels themselves).
const UNKNOWN: &str = "unknown";

/// Every method this server serves, as `package.Service/Method`.
static METHODS: LazyLock<HashSet<String>> = LazyLock::new(|| {
    let mut methods = HashSet::new();
    for encoded in [
        patron_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(encoded) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                for method in &service.method {
                    methods.insert(format!(
                        "{}.{}/{}",
                        file.package(),
                        service.name(),
                        method.name()
                    ));
                }
            }
        }
    }
    methods.insert("grpc.reflection.v1.ServerReflection/ServerReflectionInfo".into());
    methods.insert("grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo".into());
    methods
});

/// The metric label for a request path: the method, or [`UNKNOWN`].
fn method_label(path: &str) -> Arc<str> {
    let method = path.strip_prefix('/').unwrap_or(path);
    if METHODS.contains(method) {
        Arc::from(method)
    } else {
        Arc::from(UNKNOWN)
    }
}

/// The canonical name of a gRPC status code, as other gRPC libraries label it.
fn code_name(code: tonic::Code) -> &'static str {
    use tonic::Code;
    match code {
        Code::Ok => "OK",
        Code::Cancelled => "CANCELLED",
        Code::Unknown => "UNKNOWN",
        Code::InvalidArgument => "INVALID_ARGUMENT",
        Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
        Code::NotFound => "NOT_FOUND",
        Code::AlreadyExists => "ALREADY_EXISTS",
        Code::PermissionDenied => "PERMISSION_DENIED",
        Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
        Code::FailedPrecondition => "FAILED_PRECONDITION",
        Code::Aborted => "ABORTED",
        Code::OutOfRange => "OUT_OF_RANGE",
        Code::Unimplemented => "UNIMPLEMENTED",
        Code::Internal => "INTERNAL",
        Code::Unavailable => "UNAVAILABLE",
        Code::DataLoss => "DATA_LOSS",
        Code::Unauthenticated => "UNAUTHENTICATED",
    }
}

/// The status in a header map, if it holds one.
fn status_in(headers: &HeaderMap) -> Option<tonic::Code> {
    headers
        .get("grpc-status")
        .map(|value| tonic::Code::from_bytes(value.as_bytes()))
}

/// Reads W3C trace context from request headers.
struct HeaderExtractor<'a>(&'a HeaderMap);

impl Extractor for HeaderExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}

/// Adds [`RequestTelemetry`] around a service.
#[derive(Debug, Clone, Copy, Default)]
pub struct RequestTelemetryLayer;

impl<S> Layer<S> for RequestTelemetryLayer {
    type Service = RequestTelemetry<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RequestTelemetry { inner }
    }
}

/// Spans and metrics per gRPC request (see the module documentation).
#[derive(Debug, Clone)]
pub struct RequestTelemetry<S> {
    inner: S,
}

impl<S, B, R> Service<Request<B>> for RequestTelemetry<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
{
    type Response = Response<Observed<R>>;
    type Error = S::Error;
    type Future =
        Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send + 'static>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let method = method_label(request.uri().path());
        let span = tracing::info_span!(
            "grpc.request",
            otel.name = %method,
            otel.kind = "server",
            rpc.system = "grpc",
            rpc.method = %method,
            rpc.grpc.status_code = tracing::field::Empty,
        );
        let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
            propagator.extract(&HeaderExtractor(request.headers()))
        });
        let _ = span.set_parent(parent);
        let started = Instant::now();
        let future = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        // The span is entered only while the inner future is polled (`Instrument`), never held
        // across an await: a guard kept while the future is pending would leave the span current
        // on the worker thread, and other tasks' spans polled there (a projector page) would join
        // the caller's trace.
        let instrumented = future.instrument(span.clone());
        Box::pin(async move {
            let response = instrumented.await?;
            let early = status_in(response.headers());
            let (parts, body) = response.into_parts();
            let finish = Finish {
                method,
                started,
                span,
            };
            let body = Observed {
                inner: body,
                finish: Some(finish),
                early,
            };
            Ok(Response::from_parts(parts, body))
        })
    }
}

/// What to record when a response ends.
struct Finish {
    method: Arc<str>,
    started: Instant,
    span: Span,
}

impl Finish {
    fn record(self, code: tonic::Code) {
        let code = code_name(code);
        self.span.record("rpc.grpc.status_code", code);
        let labels = [
            ("method", self.method.to_string()),
            ("code", code.to_owned()),
        ];
        metrics::counter!("patron_grpc_requests_total", &labels).increment(1);
        metrics::histogram!("patron_grpc_request_duration_seconds", &labels)
            .record(self.started.elapsed().as_secs_f64());
    }
}

pin_project! {
    /// A response body that records the call's status when it ends (or is dropped).
    pub struct Observed<B> {
        #[pin]
        inner: B,
        finish: Option<Finish>,
        early: Option<tonic::Code>,
    }

    impl<B> PinnedDrop for Observed<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(finish) = this.finish.take() {
                // Ended without a status: the client went away (or the stream was cut).
                finish.record(this.early.unwrap_or(tonic::Code::Cancelled));
            }
        }
    }
}

impl<B: Body> Body for Observed<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in)
                    && let Some(finish) = this.finish.take()
                {
                    finish.record(code);
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(finish) = this.finish.take() {
                    finish.record(tonic::Code::Internal);
                }
            }
            Poll::Ready(None) => {
                if let Some(finish) = this.finish.take() {
                    // A trailers-only response has its status in the headers; a body that ends
                    // with no status at all is a protocol error.
                    finish.record(this.early.unwrap_or(tonic::Code::Unknown));
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_only_the_methods_served() {
        assert_eq!(
            &*method_label("/patron.api.v1.CustomerService/GetCustomer"),
            "patron.api.v1.CustomerService/GetCustomer"
        );
        assert_eq!(
            &*method_label("/grpc.health.v1.Health/Check"),
            "grpc.health.v1.Health/Check"
        );
        assert_eq!(
            &*method_label("/patron.api.v1.CustomerService/Anything"),
            UNKNOWN
        );
        assert_eq!(&*method_label("/evil/../x"), UNKNOWN);
    }

    /// A request whose handler is pending leaves no span current on the thread that polled it:
    /// otherwise the next task polled there (a projector page) would join the caller's trace.
    #[test]
    fn a_pending_request_leaves_no_span_current() {
        use std::sync::Mutex;
        use tracing_subscriber::layer::SubscriberExt as _;

        #[derive(Clone, Default)]
        struct Pending {
            seen: Arc<Mutex<Vec<Option<String>>>>,
        }
        impl Service<Request<()>> for Pending {
            type Response = Response<()>;
            type Error = std::convert::Infallible;
            type Future = Pin<Box<dyn Future<Output = Result<Response<()>, Self::Error>> + Send>>;
            fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
                Poll::Ready(Ok(()))
            }
            fn call(&mut self, _: Request<()>) -> Self::Future {
                let seen = self.seen.clone();
                let mut polls = 0;
                Box::pin(futures::future::poll_fn(move |cx| {
                    let current = Span::current().metadata().map(|m| m.name().to_owned());
                    seen.lock().expect("not poisoned").push(current);
                    polls += 1;
                    if polls == 1 {
                        cx.waker().wake_by_ref();
                        Poll::Pending
                    } else {
                        Poll::Ready(Ok(Response::new(())))
                    }
                }))
            }
        }

        let subscriber = tracing_subscriber::registry().with(tracing_opentelemetry::layer());
        let _default = tracing::subscriber::set_default(subscriber);
        let inner = Pending::default();
        let mut service = RequestTelemetryLayer.layer(inner.clone());
        let request = Request::builder()
            .uri("/patron.api.v1.CustomerService/GetCustomer")
            .body(())
            .expect("a valid request");
        let mut future = service.call(request);
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(future.as_mut().poll(&mut cx).is_pending());
        assert_eq!(
            Span::current().metadata().map(|m| m.name()),
            None,
            "no span stays entered while the request is pending"
        );
        assert!(future.as_mut().poll(&mut cx).is_ready());
        let seen = inner.seen.lock().expect("not poisoned").clone();
        assert_eq!(
            seen,
            vec![
                Some("grpc.request".to_owned()),
                Some("grpc.request".to_owned())
            ],
            "the handler runs inside the request's span on every poll"
        );
    }

    #[test]
    fn status_codes_use_the_canonical_names() {
        assert_eq!(code_name(tonic::Code::NotFound), "NOT_FOUND");
        assert_eq!(code_name(tonic::Code::Ok), "OK");
        let mut headers = HeaderMap::new();
        assert_eq!(status_in(&headers), None);
        headers.insert("grpc-status", http::HeaderValue::from_static("16"));
        assert_eq!(status_in(&headers), Some(tonic::Code::Unauthenticated));
    }
}
