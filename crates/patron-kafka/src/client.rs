//! Client configuration shared by consumers and producers.

use rdkafka::ClientConfig;

/// How to reach the brokers.
#[derive(Debug, Clone)]
pub struct KafkaSettings {
    /// `bootstrap.servers`, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Extra librdkafka properties (security, timeouts, ...) applied to every client, last.
    pub options: Vec<(String, String)>,
}

impl KafkaSettings {
    /// Settings for a broker list with no extra options.
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            options: Vec::new(),
        }
    }

    /// A client configuration with the brokers, `base` properties, then the user's options.
    pub(crate) fn config(&self, base: &[(&str, &str)]) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        for (key, value) in base {
            config.set(*key, *value);
        }
        for (key, value) in &self.options {
            config.set(key, value);
        }
        config
    }
}

/// A client kept for readiness checks: it asks the cluster for its metadata.
#[derive(Clone)]
pub struct BrokerProbe {
    client: std::sync::Arc<rdkafka::consumer::BaseConsumer>,
}

impl std::fmt::Debug for BrokerProbe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerProbe").finish_non_exhaustive()
    }
}

impl BrokerProbe {
    /// A probe for the brokers of `settings` (no connection is made until [`BrokerProbe::check`]).
    pub fn new(settings: &KafkaSettings) -> Result<Self, crate::KafkaError> {
        let client = settings.config(&[]).create()?;
        Ok(Self {
            client: std::sync::Arc::new(client),
        })
    }

    /// How many brokers the cluster has, if one of them answers within `timeout`.
    pub async fn check(&self, timeout: std::time::Duration) -> Result<usize, crate::KafkaError> {
        use rdkafka::consumer::Consumer as _;
        let client = std::sync::Arc::clone(&self.client);
        tokio::task::spawn_blocking(move || {
            client
                .fetch_metadata(None, timeout)
                .map(|metadata| metadata.brokers().len())
        })
        .await
        .map_err(|error| crate::KafkaError::Config(format!("broker check did not run: {error}")))?
        .map_err(crate::KafkaError::from)
    }
}
