//! TLS and mutual TLS: with a client CA configured, only clients presenting a certificate signed
//! by it get through (and still need a bearer token); others cannot even connect.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use async_trait::async_trait;
use patron_api::model::{
    CustomerDetail, CustomerPage, CustomerQuery, KpiQuery, KpiRows, OutboxRow, Snapshot,
};
use patron_api::{ApiConfig, ApiError, ReadModels, TlsConfig};
use patron_domain::CustomerId;
use patron_lifecycle::Rules;
use patron_proto::api::v1 as pb;
use patron_proto::api::v1::customer_service_client::CustomerServiceClient;
use patron_store::RecordedEvent;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

/// Read models with no customers at all.
struct Empty;

#[async_trait]
impl ReadModels for Empty {
    async fn customer(&self, _: &str) -> Result<Option<CustomerDetail>, ApiError> {
        Ok(None)
    }
    async fn customers(&self, _: &CustomerQuery) -> Result<CustomerPage, ApiError> {
        Err(ApiError::Unavailable("not used".into()))
    }
    async fn ping(&self) -> Result<(), ApiError> {
        Ok(())
    }
    async fn kpis(&self, _: &KpiQuery) -> Result<KpiRows, ApiError> {
        Err(ApiError::Unavailable("not used".into()))
    }
    async fn position(&self) -> Result<u64, ApiError> {
        Ok(0)
    }
    async fn outbox(&self, _: i64, _: u32) -> Result<Vec<OutboxRow>, ApiError> {
        Ok(Vec::new())
    }
    async fn active(&self) -> Result<Option<(Snapshot, Rules)>, ApiError> {
        Ok(None)
    }
    async fn stream(
        &self,
        _: &CustomerId,
        _: u64,
        _: usize,
    ) -> Result<Vec<RecordedEvent>, ApiError> {
        Ok(Vec::new())
    }
    fn event_store(&self) -> Option<Arc<dyn patron_store::EventStore>> {
        None
    }
}

/// A CA, and certificates it signs.
struct Authority {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let issuer = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        Self { issuer }
    }

    fn pem(&self) -> String {
        self.issuer.pem()
    }

    /// A certificate for `names`, and its key, both PEM.
    fn sign(&self, names: &[&str]) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let params =
            CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>())
                .unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate.pem(), key.serialize_pem())
    }
}

/// Serves over TLS with `ca` signing the server certificate, requiring client certificates from
/// `client_ca` when given; returns the port.
async fn serve(ca: &Authority, client_ca: Option<&Authority>) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let (certificate, key) = ca.sign(&["localhost"]);
    let mut config = ApiConfig::new(address, vec!["t0ken".into()]);
    config.tls = Some(TlsConfig {
        certificate: certificate.into_bytes(),
        key: key.into_bytes(),
        client_ca: client_ca.map(|ca| ca.pem().into_bytes()),
    });
    tokio::spawn(patron_api::serve_on(
        listener,
        config,
        Arc::new(Empty),
        std::future::pending(),
    ));
    address.port()
}

/// A channel trusting `ca`, presenting `identity` when given.
async fn connect(
    port: u16,
    ca: &Authority,
    identity: Option<(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca.pem()))
        .domain_name("localhost");
    if let Some((certificate, key)) = identity {
        tls = tls.identity(Identity::from_pem(certificate, key));
    }
    Endpoint::from_shared(format!("https://127.0.0.1:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
}

async fn get_customer(channel: Channel, token: Option<&str>) -> Result<(), tonic::Status> {
    let mut request = tonic::Request::new(pb::GetCustomerRequest {
        customer_id: "nobody".into(),
        min_position: 0,
    });
    if let Some(token) = token {
        request
            .metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    CustomerServiceClient::new(channel)
        .get_customer(request)
        .await
        .map(|_| ())
}

#[tokio::test]
async fn mutual_tls_admits_only_clients_with_a_certificate_from_the_client_ca() {
    let server_ca = Authority::new("server CA");
    let client_ca = Authority::new("client CA");
    let stranger_ca = Authority::new("some other CA");
    let port = serve(&server_ca, Some(&client_ca)).await;

    // A certificate from the client CA and a token: the call reaches the service.
    let channel = connect(port, &server_ca, Some(client_ca.sign(&["client"])))
        .await
        .expect("a client with a certificate from the client CA connects");
    let status = get_customer(channel.clone(), Some("t0ken"))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");
    // The certificate does not replace the token.
    let status = get_customer(channel, None).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");

    // No certificate, or one from another CA: the handshake fails, nothing is served.
    for identity in [None, Some(stranger_ca.sign(&["client"]))] {
        let presented = identity.is_some();
        let outcome = match connect(port, &server_ca, identity).await {
            Err(error) => Err(format!("connect: {error}")),
            Ok(channel) => get_customer(channel, Some("t0ken"))
                .await
                .map_err(|status| format!("{status:?}")),
        };
        let error = outcome.expect_err("refused");
        assert!(
            !error.contains("NotFound"),
            "certificate presented: {presented}: the call must not reach the service: {error}"
        );
    }

    // A plaintext client gets nowhere either.
    let plaintext = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plaintext {
        let status = get_customer(channel, Some("t0ken")).await.unwrap_err();
        assert_ne!(status.code(), tonic::Code::NotFound, "{status:?}");
    }
}

#[tokio::test]
async fn tls_without_a_client_ca_serves_any_client_that_trusts_the_server() {
    let server_ca = Authority::new("server CA");
    let port = serve(&server_ca, None).await;
    let channel = connect(port, &server_ca, None).await.expect("connects");
    let status = get_customer(channel, Some("t0ken")).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::NotFound, "{status:?}");

    // A client that does not trust the server's CA refuses the server.
    let other = Authority::new("not the server's CA");
    let outcome = match connect(port, &other, None).await {
        Err(error) => Err(format!("connect: {error}")),
        Ok(channel) => get_customer(channel, Some("t0ken"))
            .await
            .map_err(|status| format!("{status:?}")),
    };
    assert!(
        outcome.is_err(),
        "an untrusted server certificate is refused"
    );
}
