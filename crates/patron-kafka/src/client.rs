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
